"""Commands: train align|sft|dpo|merge (see synth/train/) and eval (synth/train/evaluate.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from synth.cli.common import app, command, console, handle_errors

train_app = typer.Typer(
    name="train",
    help="Fine-tune on synth's datasets: align (connector), sft (LoRA), dpo, merge. Recipes are YAML.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(train_app, name="train")

_RECIPE = typer.Argument(..., help="training recipe (YAML); see recipes/train/")
_SET = typer.Option(None, "--set", "-s", help="override a recipe key: -s learning_rate=1e-4 -s lora.r=8 (repeatable)")


_SEEDS = typer.Option(
    None, "--seeds", min=1, help="train N times, with seeds seed, seed+1, ... into OUTPUT_DIR/seed-S, and write "
    "mean ± sd across them to OUTPUT_DIR/seeds.json (then: synth eval ... --compare base LABEL=OUTPUT_DIR)"
)


def _run(stage: str, recipe_path: Path, overrides: list[str] | None, seeds: int | None = None) -> None:
    from synth.train import load_recipe, run_stage

    recipe = load_recipe(recipe_path, stage, overrides)  # type: ignore[arg-type]
    if seeds:
        from synth.train.seeds import run_seeds

        run_seeds(stage, recipe, seeds)
    else:
        run_stage(stage, recipe)


def _stage(stage: str, help_text: str):
    if stage == "merge":
        def run(recipe: Path = _RECIPE, overrides: Optional[list[str]] = _SET) -> None:
            _run(stage, recipe, overrides)
    else:
        def run(recipe: Path = _RECIPE, overrides: Optional[list[str]] = _SET, seeds: Optional[int] = _SEEDS) -> None:
            _run(stage, recipe, overrides, seeds)

    run.__doc__ = help_text
    train_app.command(stage)(handle_errors(run, "output_dir (-s output_dir=...)"))


_stage("align", "Image-text stage 1: train only the connector (LLaVA's multi_modal_projector, Qwen-VL's "
       "visual.merger, ...) on image-caption rows.")
_stage("sft", "Supervised fine-tuning (LoRA by default), loss on assistant tokens; text rows packed.")
_stage("dpo", "DPO with PEFT; the reference is the base with the new adapter disabled (or the SFT adapter).")
_stage("merge", "Merge a LoRA adapter into its base model and save it (safetensors + tokenizer + template).")


def _require_eval_packages(adapters: bool) -> None:
    from synth.optional import require_all

    require_all(("torch", "peft") if adapters else ("torch",), "synth eval", extra="train")


@command("eval")
def eval_command(
    model: str = typer.Argument(..., help="base model: 'embedded', a folder, a Hub id (or an adapter folder)"),
    dataset: str = typer.Argument(..., help="held-out SFT or preference dataset"),
    entries: Optional[list[str]] = typer.Argument(None, help="with --compare: the models to compare", show_default=False),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="LoRA adapter folder to apply to MODEL"),
    compare: bool = typer.Option(
        False, "--compare", help="compare models side by side: --compare base DIR ... ('base' = MODEL alone, an "
        "adapter folder = MODEL + adapter, or another model; LABEL=ENTRY names a column)"
    ),
    split: Optional[str] = typer.Option(None, "--split", help="split of DATASET (default: train, or its only split)"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="evaluate the first N rows"),
    max_new_tokens: int = typer.Option(16, "--max-new-tokens", min=1, help="greedy tokens per answer"),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="rows per forward pass"),
    beta: float = typer.Option(0.1, "--beta", help="DPO beta for the reward metrics"),
    short_answer_words: int = typer.Option(5, "--short-answer-words", min=1, help="references this short get exact match"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    precision: str = typer.Option(
        "auto", "--precision", help="auto (bf16 autocast where the hardware has it), fp32, bf16"
    ),
    out: Path = typer.Option(Path("eval.json"), "--out", "-o", help="eval.json path (or a folder for it)"),
) -> None:
    """Held-out exact match, reference log-likelihood and DPO reward accuracy; a table and eval.json."""
    from synth.errors import SynthError
    from synth.train.evaluate import collapse_notes, evaluate, render_table, resolve_specs, write_report
    from synth.train.models import adapter_base, is_adapter_dir

    if entries and not compare:
        raise SynthError(f"unexpected argument(s) {' '.join(entries)}: pass --compare to compare several models")
    if compare and not entries:
        raise SynthError("--compare needs the models to compare, e.g. --compare base demo/train/sft")
    if is_adapter_dir(model) and not adapter and not compare:
        # `synth eval ADAPTER DATASET`: the adapter knows its base.
        adapter, model = model, adapter_base(model) or model
    _require_eval_packages(bool(adapter) or compare)
    specs = resolve_specs(model, adapter, entries if compare else None)
    report = evaluate(
        specs, dataset, split, limit=limit, max_new_tokens=max_new_tokens, batch_size=batch_size, beta=beta,
        short_answer_words=short_answer_words, device=device, precision=precision, announce=lambda m: console.print(f"[dim]{m}[/]"),
    )
    console.print(render_table(report))
    for note in collapse_notes(report):
        console.print(f"[yellow]note:[/] {note}")
    path, predictions = write_report(report, out)
    console.print(f"wrote {path} and {predictions}")
