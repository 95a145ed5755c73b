"""`synth loop RECIPE --seeds N`: the same closed loop with N round seeds, to see the real spread.

Run i sets ``loop.seed`` = the loop's seed + i (the rounds' sampling and training; the shared data stages
keep the recipe's seed, so every run trains and scores on the same rows) into its own run folder
``RUNS/NAME-seed-S``. ``RUNS/NAME-seeds.json`` holds, per round, each run's score with its 95% interval
and its change's McNemar p, and mean ± sd across the runs. Each run resumes like a plain loop.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from synth.errors import SynthError


def seeds_path(runs_dir: Path, name: str) -> Path:
    return Path(runs_dir) / f"{name}-seeds.json"


def run_loop_seeds(path: str | os.PathLike, overrides: list[str] | None, options, seeds: int, console=None):
    """Run the loop once per seed; return (the runs' LoopResults, the summary written to NAME-seeds.json)."""
    from synth.run.loop import run_loop
    from synth.run.manifest import write_json_atomic
    from synth.run.runner import prepare

    plan = prepare(path, overrides)
    if plan.recipe.loop is None:
        raise SynthError(f"{path}: no 'loop:' block; --seeds repeats a closed loop")
    name = options.name or plan.recipe.name or Path(path).stem
    first = plan.recipe.loop.seed if plan.recipe.loop.seed is not None else plan.recipe.seed
    results = []
    for i in range(seeds):
        seed = first + i
        if console is not None:
            console.print(f"[bold]loop seed {seed}[/] ({i + 1} of {seeds}): {name}-seed-{seed}")
        run_options = dataclasses.replace(options, name=f"{name}-seed-{seed}")
        results.append((seed, run_loop(path, [*(overrides or []), f"loop.seed={seed}"], run_options, console)))
    summary = seeds_summary(name, results, plan.recipe.loop.stop.metric)
    write_json_atomic(seeds_path(options.runs_dir, name), summary)
    return results, summary


def _row(metrics: dict | None, metric: str, test: dict | None = None) -> dict[str, Any]:
    metrics = metrics or {}
    return {"score": metrics.get(metric), "interval": (metrics.get("intervals") or {}).get(metric),
            "p_value": (test or {}).get("p_value"), "distinguishable": (test or {}).get("distinguishable")}


def seeds_summary(name: str, results: list, metric: str) -> dict[str, Any]:
    """Per round (base first): each run's score, interval and change test; mean ± sd across the runs."""
    from synth.train.stats import mean_sd

    runs = []
    for seed, result in results:
        manifest = result.manifest
        rounds = [{"round": "base", **_row(manifest.get("base_eval"), metric)}] if manifest.get("base_eval") else []
        for row in manifest.get("rounds") or []:
            test = (row.get("change_test") or {}).get(metric)
            rounds.append({"round": row.get("round"), **_row(row.get("eval"), metric, test),
                           "change": (row.get("change") or {}).get(metric)})
        runs.append({"seed": seed, "run_dir": str(result.run_dir), "rounds": rounds})
    labels = []
    for run in runs:
        for row in run["rounds"]:
            if row["round"] not in labels:
                labels.append(row["round"])
    across = []
    for label in labels:
        rows = [next((r for r in run["rounds"] if r["round"] == label), None) for run in runs]
        across.append({"round": label, metric: mean_sd([r["score"] if r else None for r in rows]),
                       "change": mean_sd([r.get("change") if r else None for r in rows])})
    return {"name": name, "metric": metric, "seeds": [s for s, _ in results], "runs": runs, "across_seeds": across}


def seeds_table(summary: dict[str, Any]) -> Table:
    """Rounds × runs: each run's score [95% interval], then mean ± sd across the runs and of the change."""
    metric = summary["metric"]
    table = Table(title=f"loop {summary['name']}: {metric} over {len(summary['seeds'])} seeds", title_justify="left",
                  header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    table.add_column("round", no_wrap=True)
    for seed in summary["seeds"]:
        table.add_column(f"seed {seed}", justify="right", no_wrap=True)
    table.add_column("mean ± sd", justify="right", no_wrap=True)
    table.add_column("Δ mean ± sd", justify="right", no_wrap=True)
    share = metric != "mean_logprob_per_token"

    def value(v) -> str:
        return "-" if v is None else (f"{100 * v:.1f}%" if share else f"{v:.3f}")

    def spread(s, signed: bool = False) -> str:
        if not s:
            return ""
        scale = 100 if share else 1
        mean = f"{scale * s['mean']:+.1f}" if signed and share else (
            f"{s['mean']:+.3f}" if signed else value(s["mean"]))
        return mean + ("" if s["sd"] is None else (f" ± {scale * s['sd']:.1f}" if share else f" ± {s['sd']:.3f}"))

    for across in summary["across_seeds"]:
        cells = [str(across["round"])]
        for run in summary["runs"]:
            row = next((r for r in run["rounds"] if r["round"] == across["round"]), None)
            if row is None:
                cells.append("-")
                continue
            text = value(row["score"])
            if row["interval"] and share:
                text += f" [{100 * row['interval'][0]:.0f}-{100 * row['interval'][1]:.0f}]"
            if row.get("distinguishable") is False:
                text += " n.s."
            cells.append(text)
        cells += [spread(across[metric]), spread(across["change"], signed=True)]
        table.add_row(*cells)
    table.caption = ("\\[a-b]: 95% interval of one run; n.s.: that run's change from the model before is not "
                     "distinguishable from zero (McNemar, same rows); sd: across seeds")
    table.caption_justify = "left"
    return table
