"""Command: evolve (Evol-Instruct for text, MMEvol for image-text; see synth/generate)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from synth.cli.common import command, console
from synth.cli.llm_options import (
    PANEL,
    BackendName,
    BaseUrl,
    Batch,
    CacheDir,
    Concurrency,
    MaxTokens,
    Model,
    NoCache,
    Out,
    Seed,
    Temperature,
    make_llm,
)

# Options that only one method understands (the other would reject them as unknown keys).
_MMEVOL_ONLY = (
    "interaction_forms", "form_choice", "image_column", "caption_column", "boxes_column", "box_format", "box_units",
    "qa_column", "question_column", "max_items", "image_input",
)
_EVOL_ONLY = ("instruction_column",)


@command("evolve")
def evolve(
    dataset: Annotated[str, typer.Argument(help="Seed dataset: folder, Parquet, JSONL, CSV or Hub id.")],
    out: Out,
    method: str = typer.Option("evol-instruct", "--method", help="evol-instruct (text) or mmevol (image-text)."),
    model: Model = None,
    base_url: BaseUrl = None,
    backend: BackendName = None,
    concurrency: Concurrency = None,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    batch: Batch = False,
    max_tokens: MaxTokens = 1024,
    temperature: Temperature = 0.7,
    seed: Seed = 0,
    judge_max_tokens: int = typer.Option(512, "--judge-max-tokens", min=16, help="Token limit of each judge reply.", rich_help_panel=PANEL),
    rounds: Optional[int] = typer.Option(
        None, "--rounds", min=1, max=20, help="Evolution rounds per seed (default: the method's; evol-instruct 4, as WizardLM)."
    ),
    operators: Optional[str] = typer.Option(
        None,
        "--operators",
        help="Operator weights NAME=W,NAME=W (a name alone weighs 1). evol-instruct: add_constraints, deepen, "
        "concretize, increase_reasoning, complicate_input, in_breadth. mmevol: perception, reasoning, interaction "
        "(default 0.5, 0.25, 0.25, MMEvol's odds).",
    ),
    forms: Optional[str] = typer.Option(
        None,
        "--forms",
        help="mmevol interaction forms NAME=W,... (default: all 17 of MMEvol's, e.g. multi_choice, fill_in_the_blank, "
        "region_selection, text_image_matching, depth_order; see the README).",
    ),
    form_choice: Optional[str] = typer.Option(
        None, "--form-choice", help="mmevol: model (the LLM picks the fitting form, MMEvol) or drawn (one form drawn per image)."
    ),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Evolve only the first N seeds."),
    judge: bool = typer.Option(True, "--judge/--no-judge", help="Ask the LLM judge (off: rule-based elimination only)."),
    judge_batch_size: int = typer.Option(4, "--judge-batch-size", min=1, max=32, help="Items judged per request."),
    output: str = typer.Option("all", "--output", help="all: every kept evolution; final: the last version per seed."),
    include_seeds: bool = typer.Option(False, "--include-seeds", help="Also write the unevolved seeds."),
    image_input: str = typer.Option("auto", "--image-input", help="mmevol: auto, image (send it) or text (caption + boxes)."),
    instruction_column: Optional[str] = typer.Option(None, "--instruction-column", help="evol-instruct: column of the instructions."),
    answer_column: Optional[str] = typer.Option(None, "--answer-column", help="Column of the existing answers."),
    image_column: Optional[str] = typer.Option(None, "--image-column", help="mmevol: image column (default: image/images)."),
    caption_column: Optional[str] = typer.Option(None, "--caption-column", help="mmevol: caption column (default: detailed_caption/caption)."),
    boxes_column: Optional[str] = typer.Option(None, "--boxes-column", help="mmevol: objects with label + box (default: objects)."),
    box_format: Optional[str] = typer.Option(None, "--box-format", help="mmevol: xyxy ([x0, y0, x1, y1], default) or xywh (COCO's bbox)."),
    box_units: Optional[str] = typer.Option(None, "--box-units", help="mmevol: auto (default), normalised (0-1) or pixels."),
    max_items: Optional[int] = typer.Option(None, "--max-items", min=1, help="mmevol: evolve at most N QA items per image."),
    qa_column: Optional[str] = typer.Option(None, "--qa-column", help="mmevol: list of {question, answer} (default: qa)."),
    question_column: Optional[str] = typer.Option(None, "--question-column", help="mmevol: question column (with --answer-column)."),
    split: Optional[str] = typer.Option(None, "--split", help="Split to read when the source has several."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Evolve instructions (Evol-Instruct) or visual QA (MMEvol) over several rounds, keeping only the
    evolutions that pass elimination; writes OUT with report.json, rejects.jsonl and failures.jsonl inside."""
    from synth.data import FAILURES, REJECTS, REPORT, check_output
    from synth.errors import SynthError
    from synth.generate.evolution.driver import ENGINES, evolve_dataset, make_stage, open_seeds
    from synth.generate.evolution.operators import parse_weights
    from synth.llm.factory import report_usage
    from synth.progress import progress

    config: dict[str, Any] = {
        "rounds": rounds,
        "seed": seed,
        "judge": judge,
        "judge_batch_size": judge_batch_size,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "judge_max_tokens": judge_max_tokens,
        "output": output,
        "include_seeds": include_seeds,
        "operators": parse_weights(operators, "--operators"),
        "interaction_forms": parse_weights(forms, "--forms"),
        "form_choice": form_choice,
        "box_format": box_format,
        "box_units": box_units,
        "max_items": max_items,
        "image_input": None if image_input == "auto" else image_input,
        "instruction_column": instruction_column,
        "answer_column": answer_column,
        "image_column": image_column,
        "caption_column": caption_column,
        "boxes_column": boxes_column,
        "qa_column": qa_column,
        "question_column": question_column,
    }
    if method == "evol-instruct":
        config["answer_temperature"] = temperature  # the new answers sample like the evolutions
    config = {k: v for k, v in config.items() if v is not None}
    if method not in ENGINES:
        raise SynthError(f"unknown --method '{method}'; use one of: {', '.join(ENGINES)}")
    not_for_method = _EVOL_ONLY if method == "mmevol" else _MMEVOL_ONLY
    misplaced = [k for k in not_for_method if k in config]
    if misplaced:
        flags = ", ".join("--" + ("forms" if k == "interaction_forms" else k.replace("_", "-")) for k in misplaced)
        raise SynthError(f"{flags}: not an option of --method {method}")
    check_output(out, overwrite)  # fail before reading data or loading a model
    make_stage(method, None, config)  # bad options fail here too
    source = open_seeds(dataset, config, split, limit)

    llm = make_llm(backend, model, base_url, concurrency, cache_dir, no_cache, batch)
    try:
        with progress() as bar:
            report = evolve_dataset(source, out, method, llm, config, overwrite=overwrite, progress=bar)
        render_report(report.as_dict())
        report_usage(llm, console=console)
    finally:
        llm.close()
    eliminated = sum(report.eliminated.values()) + sum(report.seeds_skipped.values())
    failed = sum(report.failed.values())
    console.print(
        f"wrote [bold]{report.written}[/bold] samples to [bold]{out}[/bold]; table in {out / REPORT}"
        + (f"; {eliminated} eliminated in {out / REJECTS}" if eliminated else "")
        + (f"; {failed} failed in {out / FAILURES} (a rerun retries them)" if failed else "")
    )


def render_report(data: dict[str, Any]) -> None:
    """The end-of-run table: what was generated, kept and eliminated, per reason, operator and round."""
    from rich.table import Table

    summary = Table(title=f"{data['method']}: evolution", title_justify="left", header_style="bold")
    for name in ("seeds", "skipped", "generated", "kept", "eliminated", "failed", "written"):
        summary.add_column(name, justify="right")
    summary.add_row(
        str(data["seeds"]),
        str(sum(data["seeds_skipped"].values())),
        str(data["generated"]),
        str(data["kept"]),
        str(sum(data["eliminated"].values())),
        str(sum(data.get("failed", {}).values())),
        str(data["written"]),
    )
    console.print(summary)

    def breakdown(title: str, rows: dict[str, dict[str, int]]) -> None:
        table = Table(title=title, title_justify="left", header_style="bold")
        for name in ("", "generated", "kept", "eliminated", "failed", "kept %"):
            table.add_column(name, justify="right" if name else "left")
        for key, counts in rows.items():
            generated = counts.get("generated", 0)
            rate = f"{100 * counts.get('kept', 0) / generated:.0f}%" if generated else "-"
            table.add_row(
                key, str(generated), str(counts.get("kept", 0)), str(counts.get("eliminated", 0)),
                str(counts.get("failed", 0)), rate,
            )
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
    if data.get("failed"):
        failures = Table(title="failed requests by reason (retried by the next run)", title_justify="left", header_style="bold")
        failures.add_column("reason")
        failures.add_column("count", justify="right")
        for reason, count in data["failed"].items():
            failures.add_row(reason, str(count))
        console.print(failures)
    if data.get("items_per_round"):
        breakdown("items per round", data["items_per_round"])
    if data.get("data_statistics"):
        render_statistics(data["data_statistics"])
    boxes = data.get("boxes") or {}
    if boxes.get("malformed"):
        console.print(
            f"boxes: {boxes['read']} read, malformed left out: " + ", ".join(f"{k} {v}" for k, v in boxes["malformed"].items())
            + " (check --box-format / --box-units)"
        )
    if data["interaction_forms"]:
        console.print("interaction forms: " + ", ".join(f"{k} {v}" for k, v in data["interaction_forms"].items()))
    if data["tokens"]:
        tokens = Table(title="tokens by step", title_justify="left", header_style="bold")
        for name in ("step", "requests", "prompt tokens", "completion tokens"):
            tokens.add_column(name, justify="right" if name != "step" else "left")
        for phase, counts in data["tokens"].items():
            tokens.add_row(phase, f"{counts['requests']:,}", f"{counts['prompt_tokens']:,}", f"{counts['completion_tokens']:,}")
        console.print(tokens)


def render_statistics(stats: dict[str, dict[str, Any]]) -> None:
    """Per round, the kept items' mean judge difficulty, steps and skills per question, and their change
    (round 0: the seeds' items, which the judge has not scored)."""
    from rich.table import Table

    def cell(row: dict[str, Any], key: str) -> str:
        value, change = row.get(key), (row.get("change") or {}).get(key)
        if value is None:
            return "-"
        return f"{value:.2f}" + (f" ({change:+.2f})" if change is not None else "")

    table = Table(title="data statistics per round (kept items)", title_justify="left", header_style="bold")
    for name in ("round", "items", "difficulty", "steps / question", "skills / question"):
        table.add_column(name, justify="right")
    for round_, row in stats.items():
        table.add_row(round_, str(row["items"]), cell(row, "difficulty"), cell(row, "steps"), cell(row, "skills"))
    console.print(table)
