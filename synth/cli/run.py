"""Commands: run (a recipe end to end, resumable; see synth/run) and runs (list run folders)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from synth.cli.common import command, console


@command("run", out_option="--runs-dir")
def run(
    recipe: Optional[Path] = typer.Argument(None, help="Recipe YAML (see recipes/quickstart.yaml)."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a recipe value: path.to.key=value (repeatable)."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name (folder RUNS_DIR/NAME); default: the recipe's name."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where run folders live."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate, render a few prompts, estimate; send and write nothing."),
    executor: str = typer.Option("local", "--executor", help="local (processes) or ray."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (local) or CPUs for a local Ray."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster: auto or HOST:PORT (default: start a local Ray)."),
    rerun: list[str] = typer.Option([], "--rerun", help="Run this stage (and everything after it) again even if unchanged."),
    no_retry_failed: bool = typer.Option(False, "--no-retry-failed", help="Keep stages whose LLM requests partly failed as they are."),
    status: Optional[str] = typer.Option(None, "--status", help="Show run NAME's state and stage table instead of running."),
) -> None:
    """Run a recipe from its sources to its finished datasets; the same command resumes a killed run."""
    from synth.errors import SynthError

    if status is not None:
        from synth.run.status import run_status

        manifest, state, table = run_status(runs_dir, status)
        console.print(table)
        if manifest.get("rounds") is not None:
            from synth.run.loop_report import loop_tables

            console.print(loop_tables({**manifest, "state": state}))
        if manifest.get("error"):
            from rich.markup import escape

            from synth.errors import redact

            console.print(f"[red]error:[/] {escape(redact(str(manifest['error'])))}", soft_wrap=True)
        console.print(f"run folder: {runs_dir / status}   manifest: {runs_dir / status / 'manifest.json'}")
        return
    if recipe is None:
        raise SynthError("give a recipe: synth run RECIPE.yaml (or --status NAME; list runs with synth runs)")
    if dry_run:
        from synth.run.dry import dry_run as run_dry

        run_dry(recipe, set_, console=console, runs_dir=runs_dir, name=name)
        return
    from synth.run import RunOptions, run_recipe
    from synth.run.progress import summary_table

    options = RunOptions(name=name, runs_dir=runs_dir, executor=executor, workers=workers, ray_address=ray_address,
                         retry_failed=not no_retry_failed, rerun=list(rerun))
    result = run_recipe(recipe, set_, options)
    entries = [{"name": n, **result.manifest["stages"][n]} for n in result.manifest["order"]]
    console.print(summary_table(entries, title=f"run {result.name}: done"))
    if result.manifest.get("rounds") is not None:
        from synth.run.loop_report import loop_tables

        console.print(loop_tables(result.manifest))
    console.print(f"outputs in [bold]{result.run_dir}/[/] (manifest: {result.run_dir / 'manifest.json'})",
                  soft_wrap=True)


@command("runs")
def runs(runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where run folders live.")) -> None:
    """List the runs in RUNS_DIR and their state (done, running, interrupted, failed)."""
    from synth.run.status import list_runs, runs_table

    found = list_runs(runs_dir)
    if not found:
        console.print(f"no runs in {runs_dir}/; start one with: synth run RECIPE.yaml")
        return
    console.print(runs_table(found, runs_dir))
