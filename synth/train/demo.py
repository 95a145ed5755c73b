"""The demo's training step: does synth's data make the embedded model better? Measured, on CPU.

1. Training data: the demo images adapted with ``scene_qa_text`` (each image described in text, so the
   text-only Gemma 3 270M base can answer questions about it).
2. Held-out data: a second demo set drawn with another seed (images never seen in training), adapted
   the same way.
3. LoRA SFT of the embedded model with ``recipes/train/sft_gemma_scene_text.yaml``.
4. Optional DPO from that adapter on a preference set (e.g. `synth prefs ... --method perturb`).
5. ``synth eval embedded HELDOUT --compare base SFT [DPO]``: exact match and the other metrics,
   side by side, each with its 95% interval, and each model's change from the base with its paired test
   (McNemar's exact test on the same rows), in ``DEMO/train/eval.json``.

With ``--seeds N`` the SFT step trains N seeds (``synth train sft --seeds N``) and the table shows each
run beside mean ± sd across them (no DPO step then: it would need one per seed).

    python -m synth.train.demo demo [--prefs demo/prefs] [--seeds 3]

The same steps as CLI commands are in docs/training.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from synth.paths import recipes_dir
from synth.train.progress import console

SFT_RECIPE = "train/sft_gemma_scene_text.yaml"
DPO_RECIPE = "train/dpo_gemma_scene_text.yaml"


def prepare_data(demo: Path, *, images: int = 200, heldout_images: int = 50) -> tuple[Path, Path]:
    """(train, held-out) scene-QA text sets; the demo images are drawn first when missing."""
    from synth.adapt import adapt
    from synth.demo_data import write_demo_data

    shapes, heldout = demo / "shapes", demo / "shapes_heldout"
    if not (shapes / "dataset_info.json").exists():
        write_demo_data(shapes, count=images, seed=0, show_progress=False)
    write_demo_data(heldout, count=heldout_images, seed=1, overwrite=True, show_progress=False)
    train_set, heldout_set = demo / "scene_qa_train", demo / "scene_qa_heldout"
    adapt(shapes, "scene_qa_text", train_set, overwrite=True)
    adapt(heldout, "scene_qa_text", heldout_set, overwrite=True)
    return train_set, heldout_set


def run_train_demo(
    demo: str | Path = "demo",
    *,
    prefs: str | Path | None = None,
    eval_rows: int = 100,
    sft_overrides: list[str] | None = None,
    seeds: int | None = None,
) -> dict[str, Any]:
    """Data → SFT (→ DPO) → eval --compare; returns eval.json's content."""
    from synth.errors import SynthError
    from synth.train import load_recipe, run_stage
    from synth.train.evaluate import evaluate, render_table, resolve_specs, write_report

    if seeds and prefs is not None:
        raise SynthError("--seeds with --prefs: the DPO step would need one run per seed; leave one of them out")
    demo = Path(demo)
    train_set, heldout_set = prepare_data(demo)
    out = demo / "train"
    sft_recipe = load_recipe(
        recipes_dir() / SFT_RECIPE,
        "sft",
        [f"dataset={train_set}", f"output_dir={out / 'sft'}", "overwrite=true", *(sft_overrides or [])],
    )
    if seeds:
        from synth.train.seeds import run_seeds

        run_seeds("sft", sft_recipe, seeds)
        compare = ["base", f"sft={out / 'sft'}"]
    else:
        run_stage("sft", sft_recipe)
        compare = ["base", str(out / "sft")]
    if prefs is not None:
        dpo_recipe = load_recipe(
            recipes_dir() / DPO_RECIPE,
            "dpo",
            [f"dataset={prefs}", f"adapter={out / 'sft'}", f"output_dir={out / 'sft_dpo'}", "overwrite=true"],
        )
        run_stage("dpo", dpo_recipe)
        compare.append(str(out / "sft_dpo"))
    specs = resolve_specs("embedded", None, compare)
    report = evaluate(
        specs, str(heldout_set), limit=eval_rows, max_new_tokens=8, batch_size=16,
        announce=lambda m: console.print(f"[dim]{m}[/]"),
    )
    console.print(render_table(report))
    path, _ = write_report(report, out / "eval.json")
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the embedded model on demo data and compare it with the base.")
    parser.add_argument("demo", nargs="?", default="demo", help="demo folder (default: demo)")
    parser.add_argument("--prefs", default=None, help="preference set for an extra DPO step (e.g. from synth prefs)")
    parser.add_argument("--eval-rows", type=int, default=100)
    parser.add_argument("-s", "--set", dest="overrides", action="append", default=[], help="override an SFT recipe key")
    parser.add_argument("--seeds", type=int, default=None, help="train the SFT step with N seeds (mean ± sd)")
    args = parser.parse_args(argv)
    from synth.console import Console, debug
    from synth.errors import SynthError

    try:
        run_train_demo(args.demo, prefs=args.prefs, eval_rows=args.eval_rows, sft_overrides=args.overrides,
                       seeds=args.seeds)
    except SynthError as e:
        if debug():
            raise
        Console(stderr=True).print(f"[bold red]error:[/] [red]{e}[/]", soft_wrap=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
