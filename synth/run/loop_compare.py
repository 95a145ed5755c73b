"""`synth loop-compare TREATMENT CONTROL`: did one arm of a loop beat another, beyond noise?

An arm is a loop run with `--seeds N` (folders ``RUNS/NAME-seed-S``) or a single loop run (``RUNS/NAME``).
The two arms are paired by seed and scored on the same held-out rows (the shared data stages keep the
recipe's seed), so each round is compared row by row: per seed, the difference and McNemar's exact test;
across seeds, the mean difference with two 95% intervals, one across the seeds (another training run)
and one over the rows (other held-out questions). An effect is called established only when both leave
zero out. The result is printed and written to ``RUNS/TREATMENT-vs-CONTROL.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from synth.errors import SynthError


def arm_runs(runs_dir: Path, name: str) -> dict[str, Path]:
    """The run folders of one arm by seed: NAME-seed-S for every S, else NAME itself (seed '-')."""
    pattern = re.compile(re.escape(name) + r"-seed-(-?\d+)$")
    runs = {}
    for folder in sorted(Path(runs_dir).glob(f"{name}-seed-*")):
        match = pattern.match(folder.name)
        if match and (folder / "manifest.json").is_file():
            runs[match.group(1)] = folder
    if runs:
        return dict(sorted(runs.items(), key=lambda item: int(item[0])))
    if (Path(runs_dir) / name / "manifest.json").is_file():
        return {"-": Path(runs_dir) / name}
    raise SynthError(f"loop-compare: no loop run '{name}' in {runs_dir}/ (neither {name}-seed-S/ nor {name}/ "
                     "with a manifest.json); run it first with synth loop RECIPE --name NAME [--seeds N]")


def round_predictions(run_dir: Path) -> dict[str, Path]:
    """Each scored round's eval_predictions.jsonl by round label ('base', '0', '1', ...)."""
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SynthError(f"loop-compare: cannot read {run_dir / 'manifest.json'}: {e}; run that loop again "
                         "(synth loop RECIPE --name NAME) to rewrite it") from e
    found = {}
    rows = ([{"round": "base", "eval": manifest["base_eval"]}] if manifest.get("base_eval") else []) + list(
        manifest.get("rounds") or [])
    for row in rows:
        path = (row.get("eval") or {}).get("predictions")
        if path and (run_dir / path).is_file():
            found[str(row["round"])] = run_dir / path
    return found


def compare_loop_arms(runs_dir: Path, treatment: str, control: str, metric: str = "exact_match") -> dict[str, Any]:
    """Every round both arms scored, for the seeds both ran: see the module docs."""
    from synth.train.evaluate import PREDICTION_FIELDS, read_predictions
    from synth.train.stats import compare_arms, compare_shares, mean_sd

    if metric not in PREDICTION_FIELDS:
        raise SynthError(f"loop-compare: --metric must be one of {', '.join(PREDICTION_FIELDS)} (got '{metric}')")
    key = PREDICTION_FIELDS[metric]
    first, second = arm_runs(runs_dir, treatment), arm_runs(runs_dir, control)
    pairs = [(seed, first[seed], second[seed]) for seed in first if seed in second]
    if not pairs and len(first) == len(second) == 1:  # two single runs: compared as they are
        pairs = [("-", *first.values(), *second.values())]
    if not pairs:
        raise SynthError(f"loop-compare: '{treatment}' (seeds {', '.join(first)}) and '{control}' (seeds "
                         f"{', '.join(second)}) share no seed; run both with the same --seeds")
    seeds = [seed for seed, _, _ in pairs]
    files = [(seed, round_predictions(a), round_predictions(b)) for seed, a, b in pairs]
    labels = [label for label in files[0][1] if all(label in fa and label in fb for _, fa, fb in files)]
    rounds = []
    for label in labels:
        predictions = [(read_predictions(fa[label]), read_predictions(fb[label])) for _, fa, fb in files]
        ids = [i for i, row in predictions[0][0].items()
               if all(key in a.get(i, {}) and key in b.get(i, {}) for a, b in predictions)]
        if not ids:
            continue
        treated = [[bool(a[i][key]) for i in ids] for a, _ in predictions]
        controls = [[bool(b[i][key]) for i in ids] for _, b in predictions]
        per_seed = []
        for (seed, _, _), t, c in zip(files, treated, controls):
            test = compare_shares(c, t)
            per_seed.append({"seed": seed, "treatment": sum(t) / len(t), "control": sum(c) / len(c),
                             "difference": test["difference"], "p_value": test["p_value"]})
        rounds.append({
            "round": label, "rows": len(ids),
            "treatment": mean_sd([s["treatment"] for s in per_seed]),
            "control": mean_sd([s["control"] for s in per_seed]),
            "seeds": per_seed,
            **{k: v for k, v in compare_arms(controls, treated).items() if k != "per_seed"},
        })
    if not rounds:
        raise SynthError(f"loop-compare: '{treatment}' and '{control}' have no scored round in common "
                         "(each round's eval_predictions.jsonl on the same held-out rows)")
    return {"treatment": treatment, "control": control, "metric": metric, "seeds": seeds,
            "runs": {"treatment": [str(a) for _, a, _ in pairs], "control": [str(b) for _, _, b in pairs]},
            "rounds": rounds}


def comparison_path(runs_dir: Path, treatment: str, control: str) -> Path:
    return Path(runs_dir) / f"{treatment}-vs-{control}.json"


def verdict(row: dict, seeds: int) -> str:
    if not row["distinguishable"]:
        return "n.s."
    return "[bold]established[/]" if seeds > 1 else "on these rows (1 seed: run --seeds 3)"


def comparison_table(result: dict[str, Any]) -> Table:
    """Rounds: each arm's mean ± sd, each seed's difference (McNemar p), the mean difference, both intervals."""
    table = Table(title=f"{result['treatment']} vs {result['control']}: {result['metric']}, "
                        f"{len(result['seeds'])} seed(s)", title_justify="left", header_style="bold",
                  box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for column in ("round", "rows", result["treatment"], result["control"], "Δ per seed (p)", "Δ mean ± sd",
                   "95% seeds", "95% rows", ""):
        table.add_column(column, justify="left" if column in ("round", "") else "right", no_wrap=True)

    def pct(s) -> str:
        return "-" if not s else f"{100 * s['mean']:.1f}%" + ("" if s["sd"] is None else f" ± {100 * s['sd']:.1f}")

    def span(interval) -> str:
        return "-" if not interval else f"{100 * interval[0]:+.1f} to {100 * interval[1]:+.1f}"

    for row in result["rounds"]:
        seeds = ", ".join(f"{100 * s['difference']:+.1f} ({s['p_value']:.2g})" for s in row["seeds"])
        mean = f"{100 * row['difference']:+.1f}" + ("" if row["sd"] is None else f" ± {100 * row['sd']:.1f}")
        table.add_row(str(row["round"]), f"{row['rows']:,}", pct(row["treatment"]), pct(row["control"]), seeds,
                      mean, span(row["seed_interval"]), span(row["row_interval"]),
                      verdict(row, len(result["seeds"])))
    table.caption = ("Δ: treatment − control in points on the same rows; p: McNemar's exact test of that seed; "
                     "95% seeds: t interval across the seeds; 95% rows: bootstrap over the held-out rows; "
                     "established: both intervals leave zero out")
    table.caption_justify = "left"
    return table
