"""Command: evolve (Evol-Instruct for text, MMEvol for image-text; see synth/generate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from synth.cli.common import command, console

# Options that only one method understands (the other would reject them as unknown keys).
_MMEVOL_ONLY = ("interaction_forms", "image_column", "caption_column", "boxes_column", "qa_column", "question_column", "image_input")
_EVOL_ONLY = ("instruction_column",)


@command("evolve")
def evolve(
    dataset: str = typer.Argument(..., help="Seed dataset: folder, Parquet, JSONL, CSV or Hub id."),
    method: str = typer.Option("evol-instruct", "--method", "-m", help="evol-instruct (text) or mmevol (image-text)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (an SFT dataset, save_to_disk layout)."),
    rounds: int = typer.Option(3, "--rounds", min=1, max=20, help="Evolution rounds per seed."),
    operators: Optional[str] = typer.Option(
        None,
        "--operators",
        help="Operator weights NAME=W,NAME=W (a name alone weighs 1). evol-instruct: add_constraints, deepen, "
        "concretize, increase_reasoning, complicate_input, in_breadth. mmevol: perception, reasoning, interaction.",
    ),
    forms: Optional[str] = typer.Option(
        None,
        "--forms",
        help="mmevol interaction forms NAME=W,...: multiple_choice, fill_in_the_blank, region_selection, "
        "text_image_matching, object_region_matching, rationale, true_false.",
    ),
    backend: Optional[str] = typer.Option(None, "--backend", help="openai or local (default: local, or openai with --base-url)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model name or path (default local: the embedded Gemma 3 270M)."),
    base_url: Optional[list[str]] = typer.Option(None, "--base-url", help="OpenAI-compatible server URL (repeat for replicas)."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", min=1, help="Requests in flight."),
    seed: int = typer.Option(0, "--seed", help="Fixes operator choice per sample and round, and request seeds."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Evolve only the first N seeds."),
    judge: bool = typer.Option(True, "--judge/--no-judge", help="Ask the LLM judge (off: rule-based elimination only)."),
    judge_batch_size: int = typer.Option(4, "--judge-batch-size", min=1, max=32, help="Items judged per request."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=16, help="Token limit of each evolution reply (default 1024)."),
    judge_max_tokens: Optional[int] = typer.Option(None, "--judge-max-tokens", min=16, help="Token limit of each judge reply (default 512)."),
    output: str = typer.Option("all", "--output", help="all: every kept evolution; final: the last version per seed."),
    include_seeds: bool = typer.Option(False, "--include-seeds", help="Also write the unevolved seeds."),
    image_input: str = typer.Option("auto", "--image-input", help="mmevol: auto, image (send it) or text (caption + boxes)."),
    instruction_column: Optional[str] = typer.Option(None, "--instruction-column", help="evol-instruct: column of the instructions."),
    answer_column: Optional[str] = typer.Option(None, "--answer-column", help="Column of the existing answers."),
    image_column: Optional[str] = typer.Option(None, "--image-column", help="mmevol: image column (default: image/images)."),
    caption_column: Optional[str] = typer.Option(None, "--caption-column", help="mmevol: caption column (default: detailed_caption/caption)."),
    boxes_column: Optional[str] = typer.Option(None, "--boxes-column", help="mmevol: objects with label + box (default: objects)."),
    qa_column: Optional[str] = typer.Option(None, "--qa-column", help="mmevol: list of {question, answer} (default: qa)."),
    question_column: Optional[str] = typer.Option(None, "--question-column", help="mmevol: question column (with --answer-column)."),
    split: Optional[str] = typer.Option(None, "--split", help="Split to read when the source has several."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not use the LLM request cache."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Evolve instructions (Evol-Instruct) or visual QA (MMEvol) over several rounds, keeping only the
    evolutions that pass elimination; writes OUT, OUT.report.json and OUT.rejects.jsonl."""
    from synth.errors import SynthError
    from synth.generate.elimination import evolve_dataset, parse_weights, report_path
    from synth.io import check_output, rejects_path
    from synth.llm.factory import make_backend, report_usage
    from synth.progress import progress

    config: dict[str, Any] = {
        "rounds": rounds,
        "seed": seed,
        "judge": judge,
        "judge_batch_size": judge_batch_size,
        "max_tokens": max_tokens,
        "judge_max_tokens": judge_max_tokens,
        "output": output,
        "include_seeds": include_seeds,
        "operators": parse_weights(operators, "--operators"),
        "interaction_forms": parse_weights(forms, "--forms"),
        "image_input": None if image_input == "auto" else image_input,
        "instruction_column": instruction_column,
        "answer_column": answer_column,
        "image_column": image_column,
        "caption_column": caption_column,
        "boxes_column": boxes_column,
        "qa_column": qa_column,
        "question_column": question_column,
    }
    config = {k: v for k, v in config.items() if v is not None}
    not_for_method = _EVOL_ONLY if method == "mmevol" else _MMEVOL_ONLY
    misplaced = [k for k in not_for_method if k in config]
    if misplaced:
        flags = ", ".join("--" + ("forms" if k == "interaction_forms" else k.replace("_", "-")) for k in misplaced)
        raise SynthError(f"{flags}: not an option of --method {method}")
    check_output(out, overwrite)  # fail before loading a model

    llm = make_backend(backend, model, base_url, concurrency=concurrency, cache=not no_cache)
    try:
        with progress() as bar:
            report = evolve_dataset(dataset, out, method, llm, config, split=split, limit=limit, overwrite=overwrite, progress=bar)
        render_report(report.as_dict())
        report_usage(llm, console=console)
    finally:
        llm.close()
    eliminated = sum(report.eliminated.values()) + sum(report.seeds_skipped.values())
    console.print(
        f"wrote [bold]{report.written}[/bold] samples to [bold]{out}[/bold]; table in {report_path(out)}"
        + (f"; {eliminated} eliminated in {rejects_path(out)}" if eliminated else "")
    )


def render_report(data: dict[str, Any]) -> None:
    """The end-of-run table: what was generated, kept and eliminated, per reason, operator and round."""
    from rich.table import Table

    summary = Table(title=f"{data['method']}: evolution", title_justify="left", header_style="bold")
    for name in ("seeds", "skipped", "generated", "kept", "eliminated", "written"):
        summary.add_column(name, justify="right")
    summary.add_row(
        str(data["seeds"]),
        str(sum(data["seeds_skipped"].values())),
        str(data["generated"]),
        str(data["kept"]),
        str(sum(data["eliminated"].values())),
        str(data["written"]),
    )
    console.print(summary)

    def breakdown(title: str, rows: dict[str, dict[str, int]]) -> None:
        table = Table(title=title, title_justify="left", header_style="bold")
        for name in ("", "generated", "kept", "eliminated", "kept %"):
            table.add_column(name, justify="right" if name else "left")
        for key, counts in rows.items():
            generated = counts.get("generated", 0)
            rate = f"{100 * counts.get('kept', 0) / generated:.0f}%" if generated else "-"
            table.add_row(key, str(generated), str(counts.get("kept", 0)), str(counts.get("eliminated", 0)), rate)
        console.print(table)

    breakdown("per operator", data["per_operator"])
    breakdown("per round", data["per_round"])
    if data["eliminated"] or data["seeds_skipped"]:
        reasons = Table(title="eliminated by reason", title_justify="left", header_style="bold")
        reasons.add_column("reason")
        reasons.add_column("count", justify="right")
        for reason, count in data["eliminated"].items():
            reasons.add_row(reason, str(count))
        for reason, count in data["seeds_skipped"].items():
            reasons.add_row(f"seed skipped: {reason}", str(count))
        console.print(reasons)
    if data["interaction_forms"]:
        console.print("interaction forms: " + ", ".join(f"{k} {v}" for k, v in data["interaction_forms"].items()))
    if data["tokens"]:
        tokens = Table(title="tokens by step", title_justify="left", header_style="bold")
        for name in ("step", "requests", "prompt tokens", "completion tokens"):
            tokens.add_column(name, justify="right" if name != "step" else "left")
        for phase, counts in data["tokens"].items():
            tokens.add_row(phase, f"{counts['requests']:,}", f"{counts['prompt_tokens']:,}", f"{counts['completion_tokens']:,}")
        console.print(tokens)
