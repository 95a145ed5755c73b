"""``synth runs`` and ``synth run --status NAME``: what the run folders say."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.table import Table

from synth.errors import SynthError
from synth.run.manifest import MANIFEST, load_manifest, run_state
from synth.run.progress import _duration, summary_table


def _when(stamp: float | None) -> str:
    return time.strftime("%m-%d %H:%M", time.localtime(stamp)) if stamp else "-"


def list_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """One entry per run folder under `runs_dir`, newest first."""
    runs = []
    if not Path(runs_dir).is_dir():
        return runs
    for path in sorted(Path(runs_dir).iterdir()):
        if not (path / MANIFEST).is_file():
            continue
        manifest = load_manifest(path) or {}
        stages = manifest.get("stages", {})
        finished = sum(1 for s in stages.values() if s.get("state") in ("ran", "reused", "source"))
        started, ended = manifest.get("started"), manifest.get("finished")
        runs.append({
            "name": path.name, "path": path, "state": run_state(path, manifest), "stages": len(stages),
            "finished_stages": finished, "started": started,
            "seconds": (ended or time.time()) - started if started else None,
            "recipe": manifest.get("recipe"), "error": manifest.get("error"),
        })
    runs.sort(key=lambda r: r["started"] or 0, reverse=True)
    return runs


def runs_table(runs: list[dict[str, Any]], runs_dir: Path) -> Table:
    from rich import box

    table = Table(title=f"runs in {runs_dir}/", title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                  show_edge=False, padding=(0, 1, 0, 0))
    for column in ("run", "state", "stages", "started", "time", "recipe"):
        table.add_column(column, justify="right" if column in ("stages", "time") else "left",
                         no_wrap=column != "recipe")
    styles = {"done": "green", "running": "yellow", "interrupted": "red", "failed": "red"}
    for run in runs:
        table.add_row(run["name"], f"[{styles.get(run['state'], '')}]{run['state']}[/]",
                      f"{run['finished_stages']}/{run['stages']}", _when(run["started"]),
                      _duration(run["seconds"]) if run["seconds"] is not None else "-",
                      Path(run["recipe"]).name if run["recipe"] else "-")
    return table


def run_status(runs_dir: Path, name: str) -> tuple[dict[str, Any], str, Table]:
    """The manifest of run NAME, its state, and its stage table."""
    path = Path(runs_dir) / name
    manifest = load_manifest(path)
    if manifest is None:
        known = [r["name"] for r in list_runs(runs_dir)]
        hint = f" (runs: {', '.join(known)})" if known else ""
        raise SynthError(f"no run '{name}' in {runs_dir}/{hint}; start one with: synth run RECIPE.yaml")
    state = run_state(path, manifest)
    entries = []
    for stage in manifest.get("order", list(manifest.get("stages", {}))):
        entry = dict(manifest.get("stages", {}).get(stage, {}))
        entry["name"] = stage
        if entry.get("state") == "running":
            done = sum(1 for _ in (path / "shards" / stage).glob("*/*.done"))
            entry["state"] = f"{'running' if state == 'running' else 'killed'} ({done} shards done)"
        entries.append(entry)
    title = f"run {name}: {state}"
    return manifest, state, summary_table(entries, title=title)
