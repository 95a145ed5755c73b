"""Command: loop (a recipe's closed loop: per round data with model k → train model k+1 → held-out eval)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from synth.cli.common import command, console


@command("loop", out_option="--runs-dir")
def loop(
    recipe: Path = typer.Argument(..., help="Recipe YAML with a loop: block (see recipes/loop_shapes.yaml)."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a recipe value: path.to.key=value (repeatable)."),
    rounds: Optional[int] = typer.Option(None, "--rounds", min=1, help="Override loop.rounds."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name (folder RUNS_DIR/NAME); default: the recipe's name."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where run folders live."),
    executor: str = typer.Option("local", "--executor", help="local (processes) or ray, for the data stages."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (local) or CPUs for a local Ray."),
    no_retry_failed: bool = typer.Option(False, "--no-retry-failed", help="Keep stages whose LLM requests partly failed as they are."),
    seeds: Optional[int] = typer.Option(
        None, "--seeds", min=1, help="Run the loop N times with round seeds loop.seed, +1, ... (folders NAME-seed-S, "
        "same data) and report mean ± sd across them (RUNS_DIR/NAME-seeds.json)."),
) -> None:
    """Run a recipe's closed loop (same as synth run on it); the same command resumes a killed loop."""
    from synth.console import Console
    from synth.run import RunOptions
    from synth.run.loop import run_loop
    from synth.run.loop_report import loop_tables
    from synth.run.progress import summary_table

    overrides = list(set_) + ([f"loop.rounds={rounds}"] if rounds else [])
    options = RunOptions(name=name, runs_dir=runs_dir, executor=executor, workers=workers,
                         retry_failed=not no_retry_failed)
    if seeds:
        from synth.run.loop_seeds import run_loop_seeds, seeds_path, seeds_table

        results, summary = run_loop_seeds(recipe, overrides, options, seeds, console=Console(stderr=True))
        for _, result in results:
            console.print(loop_tables(result.manifest))
        console.print(seeds_table(summary))
        console.print(f"runs in [bold]{runs_dir}/[/]: {', '.join(r.name for _, r in results)}; summary: "
                      f"{seeds_path(runs_dir, summary['name'])}", soft_wrap=True)
        return
    result = run_loop(recipe, overrides, options, console=Console(stderr=True))
    entries = [{"name": n, **result.manifest["stages"][n]} for n in result.manifest["order"]]
    if entries:
        console.print(summary_table(entries, title=f"run {result.name}: shared stages"))
    console.print(loop_tables(result.manifest))
    console.print(f"outputs in [bold]{result.run_dir}/[/] (manifest: {result.run_dir / 'manifest.json'}, "
                  f"best model: {result.run_dir / 'best.json'})", soft_wrap=True)


@command("loop-compare", out_option="--runs-dir")
def loop_compare(
    treatment: str = typer.Argument(..., help="The arm to test: a loop run's name (its NAME-seed-S folders, or NAME)."),
    control: str = typer.Argument(..., help="The arm to compare it with, run with the same seeds (e.g. labelled rows only)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where run folders live."),
    metric: str = typer.Option("exact_match", "--metric", help="exact_match, normalized_accuracy or contains_accuracy."),
) -> None:
    """Compare two arms of a loop round by round on the same held-out rows, paired by seed: the mean
    difference, its 95% intervals across seeds and over rows, and whether it is established."""
    from synth.io import atomic_write_json
    from synth.run.loop_compare import compare_loop_arms, comparison_path, comparison_table

    result = compare_loop_arms(runs_dir, treatment, control, metric)
    path = comparison_path(runs_dir, treatment, control)
    atomic_write_json(path, result)
    console.print(comparison_table(result))
    console.print(f"written: {path}", soft_wrap=True)
