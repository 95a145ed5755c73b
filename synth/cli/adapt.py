"""Commands: adapt (labelled dataset → instruction samples, see synth/adapt) and templates (list the sets)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from synth.cli.common import command, console


@command()
def adapt(
    source: str = typer.Argument(
        ..., help="Dataset: save_to_disk folder, Parquet/JSONL/CSV file or folder, image folder, or Hub id."
    ),
    template: str = typer.Option(
        ..., "--template", "-t", help="Template set: a shipped name (see `synth templates`) or a YAML path."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (a datasets save_to_disk folder)."),
    split: str | None = typer.Option(None, help="Split to read when the source has several."),
    config: str | None = typer.Option(None, "--config", help="Hub dataset: the configuration (subset) to load."),
    revision: str | None = typer.Option(None, "--revision", help="Hub dataset: a branch, tag or commit."),
    seed: int = typer.Option(0, help="Seed for the choice of instruction variants and option order."),
    num_proc: int = typer.Option(1, "--num-proc", min=1, help="Worker processes."),
    limit: int | None = typer.Option(None, min=1, help="Adapt only the first N records."),
    map_: list[str] = typer.Option(
        [],
        "--map",
        help="Map a template variable to another column: VAR=COLUMN (repeatable; dotted paths allowed).",
    ),
    on_error: str = typer.Option(
        "fail",
        "--on-error",
        help="fail: stop at the first bad record; skip: count it and write it to OUT/rejects.jsonl.",
    ),
    classes: str | None = typer.Option(
        None,
        "--classes",
        help="Class list for a set with classes (e.g. classification): NAME,NAME,... in order "
        "(default: a ClassLabel column's names, else the distinct labels).",
    ),
    image_root: Path | None = typer.Option(
        None,
        "--image-root",
        help="Folder that relative (and absolute) image paths resolve under and may not leave "
        "(default: the dataset's folder).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    """Turn a labelled dataset into instruction samples with a template set."""
    from synth.adapt import adapt as run_adapt
    from synth.adapt import parse_classes, parse_mapping

    result = run_adapt(
        source,
        template,
        out,
        split=split,
        config=config,
        revision=revision,
        seed=seed,
        num_proc=num_proc,
        limit=limit,
        mapping=parse_mapping(map_),
        on_error=on_error,
        overwrite=overwrite,
        classes=parse_classes(classes),
        image_root=image_root,
    )
    for note in result.notes:
        console.print(Text.assemble(("note: ", "yellow"), note), soft_wrap=True)
    line = (
        f"[green]wrote {result.samples:,} samples[/] from {result.records:,} records to [bold]{result.out}[/]"
    )
    if result.skipped:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(result.reasons().items()))
        line += f"; skipped {result.skipped:,} ({reasons}), see {result.rejects_file}"
    else:
        line += "; skipped 0"
    console.print(line, soft_wrap=True)


@command()
def templates() -> None:
    """List the shipped template sets."""
    from rich.table import Table

    from synth.adapt import list_template_sets

    table = Table(title="template sets (synth adapt --template NAME)")
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("task")
    table.add_column("modality")
    table.add_column("variants", justify="right")
    table.add_column("description", ratio=1)
    for ts in list_template_sets():
        # Text(), not markup: descriptions contain brackets such as [x0, y0, x1, y1]
        table.add_row(ts.name, Text(ts.task), ts.modality, str(len(ts.instructions)), Text(ts.description))
    console.print(table)
