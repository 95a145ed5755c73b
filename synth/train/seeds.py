"""`synth train STAGE RECIPE --seeds N`: the same recipe trained with N seeds, to see the real spread.

Seed s = the recipe's seed + i (i < N) decides LoRA init, data order and dropout (see
`runner.reproducibility`). Output::

    OUT/seed-S/      one run's output, as a plain `synth train` writes it (resume works per seed)
    OUT/seeds.json   the runs and, across them, mean ± sd of the final train loss, eval loss and DPO rewards

`synth eval MODEL DATA --compare base LABEL=OUT` scores every run on the same rows: per-run intervals,
paired tests, and mean ± sd across the seeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synth.errors import SynthError
from synth.io import atomic_write_json
from synth.ownership import MARKER, mark

SEEDS_FILE = "seeds.json"
#: train_summary.json values summarised across seeds
SUMMARISED = ("final_train_loss", "mean_train_loss", "eval_loss", "eval_rewards_accuracies", "eval_rewards_margins")


def seed_folder(seed: int) -> str:
    return f"seed-{seed}"


def _check_seeds_output(recipe, out: Path) -> None:
    """OUT may hold only what --seeds writes there (seed-S folders, seeds.json, the marker); with
    `overwrite: true`, a single run synth wrote there (e.g. an earlier plain `synth train`) is replaced."""
    import shutil

    from synth.ownership import check_replaceable
    from synth.train.runner import TRAIN_OUTPUTS, recipe_inputs

    if out.exists() and not out.is_dir():
        raise SynthError(f"{out} is a file; --seeds writes a folder of runs there: set output_dir to a new folder")
    if not out.is_dir():
        return
    others = [e.name for e in out.iterdir()
              if e.name not in (SEEDS_FILE, MARKER) and not (e.is_dir() and e.name.startswith("seed-"))]
    if not others:
        return
    if recipe.overwrite and (out / "train_summary.json").is_file():
        check_replaceable(out, recipe_inputs(recipe), also=TRAIN_OUTPUTS, choose="set output_dir to a new folder")
        shutil.rmtree(out)
        return
    raise SynthError(
        f"{out} holds {', '.join(sorted(others)[:3])}, not runs of --seeds; set output_dir to a new folder"
    )


def run_seeds(stage: str, recipe, seeds: int) -> dict[str, Any]:
    """Train `recipe` once per seed into OUT/seed-S; write and return OUT/seeds.json's content."""
    from synth.train import run_stage
    from synth.train.progress import console
    from synth.train.stats import mean_sd

    if stage == "merge":
        raise SynthError("--seeds repeats training; merge draws no random numbers")
    out = Path(recipe.output_dir)
    _check_seeds_output(recipe, out)
    runs = []
    for i in range(seeds):
        seed = recipe.seed + i
        console.print(f"[bold]seed {seed}[/] ({i + 1} of {seeds})")
        one = recipe.model_copy(update={"seed": seed, "output_dir": str(out / seed_folder(seed))})
        if i == 0:
            out.mkdir(parents=True, exist_ok=True)
            mark(out, "train")
        summary = run_stage(stage, one).summary
        runs.append({"seed": seed, "output_dir": one.output_dir, **{k: summary.get(k) for k in SUMMARISED}})
    across = {k: mean_sd([r[k] for r in runs]) for k in SUMMARISED if any(r[k] is not None for r in runs)}
    result = {"stage": stage, "seeds": [r["seed"] for r in runs], "runs": runs, "across_seeds": across}
    atomic_write_json(out / SEEDS_FILE, result)
    parts = [f"{k.replace('_', ' ')} {v['mean']:.4f} ± {v['sd']:.4f}" if v["sd"] is not None
             else f"{k.replace('_', ' ')} {v['mean']:.4f}" for k, v in across.items()]
    console.print(f"[bold green]{seeds} seeds[/] ({out / SEEDS_FILE}): " + "; ".join(parts) + " (mean ± sd)")
    return result


def seed_runs(folder: str | Path) -> list[tuple[int, str]] | None:
    """(seed, run folder) of a --seeds output folder; None when `folder` is not one."""
    path = Path(folder) / SEEDS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        runs = [(int(r["seed"]), str(Path(folder) / seed_folder(int(r["seed"])))) for r in data["runs"]]
    except (ValueError, KeyError, TypeError):
        raise SynthError(f"{path}: not a seeds.json written by `synth train --seeds`") from None
    return runs
