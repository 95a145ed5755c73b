"""Commands: demo-data (synth/demo_data.py), export (synth/export), show (synth/show.py)."""

from __future__ import annotations

import typer
from rich.text import Text

from synth.cli.common import command, console


@command("demo-data", out_option="OUT")
def demo_data(
    out: str = typer.Argument(..., help="Output folder (a `save_to_disk` dataset)."),
    count: int = typer.Option(200, "--count", help="Number of images."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives byte-identical output."),
    size: int = typer.Option(256, "--size", help="Image side in pixels."),
    offset: int = typer.Option(0, "--offset", min=0, help="Index of the first scene: disjoint ranges give disjoint sets."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    """Draw the demo shapes dataset: scenes with captions, boxes, QA, labels and a word to read. Offline."""
    from synth.demo_data import write_demo_data

    path = write_demo_data(out, count=count, seed=seed, size=size, overwrite=overwrite, offset=offset)
    console.print(Text.assemble("wrote ", (f"{count}", "bold"), f" demo images ({size}x{size}, seed {seed}) to ", (str(path), "bold")))


@command("export")
def export(
    dataset: str = typer.Argument(..., help="SFT or preference dataset: folder, Parquet, JSONL or Hub id."),
    fmt: str = typer.Option(..., "--format", "-f", help="trl | llamafactory | llava | openai | webdataset"),
    out: str = typer.Option(..., "--out", "-o", help="Output folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    name: str | None = typer.Option(None, "--name", help="Dataset name (file names, dataset_info.json key); default: OUT's name."),
    jsonl: bool = typer.Option(False, "--jsonl", help="trl: JSONL + image files instead of Parquet; llamafactory: JSONL instead of JSON."),
    on_error: str = typer.Option("fail", "--on-error", help="fail: stop at the first bad row; skip: leave it out and write it to OUT/rejects.jsonl."),
    split: str | None = typer.Option(None, "--split", help="Export only this split (default: every split, one file each)."),
    config: str | None = typer.Option(None, "--config", help="Hub dataset: the configuration (subset) to load."),
    revision: str | None = typer.Option(None, "--revision", help="Hub dataset: a branch, tag or commit."),
    shard_records: int | None = typer.Option(None, "--shard-records", min=1, help="webdataset: samples per tar shard (default 10000)."),
    shard_mb: float | None = typer.Option(None, "--shard-mb", min=0.001, help="webdataset: start a new shard before one passes this many MB."),
) -> None:
    """Export a dataset for a trainer: TRL, LLaMA-Factory, LLaVA or OpenAI fine-tuning; image-text pairs as WebDataset shards."""
    from synth.export import export_dataset

    summary = export_dataset(
        dataset, out, fmt, overwrite=overwrite, name=name, jsonl=jsonl, on_error=on_error, split=split, config=config, revision=revision,
        shard_records=shard_records, shard_mb=shard_mb,
    )
    if summary.image_files:
        images = f" ({summary.image_files} image files)"
    elif summary.format == "webdataset":
        images = ""
    elif summary.embedded_images:
        converted = f", {summary.converted_images} converted to RGB" if summary.converted_images else ""
        images = f" ({summary.embedded_images} images embedded{converted})"
    else:
        images = ""
    line = Text.assemble(
        "exported ", (f"{summary.rows}", "bold"), f" {summary.kind} rows{images} as {summary.format} to ", (str(summary.out), "bold")
    )
    console.print(line)
    if summary.splits:
        console.print("  splits: " + ", ".join(f"{name} {rows}" for name, rows in summary.splits.items()))
    console.print(f"  files: {', '.join(summary.files)}")
    if summary.skipped:
        console.print(Text(f"  skipped {summary.skipped} rows; reasons in {summary.rejects}", style="yellow"))


@command("show")
def show(
    dataset: str = typer.Argument(..., help="Any dataset synth reads: folder, Parquet, JSONL, CSV or Hub id."),
    n: int = typer.Option(3, "-n", help="Number of rows to show."),
    offset: int = typer.Option(0, "--offset", help="Index of the first row to show."),
    row_id: str | None = typer.Option(None, "--id", help="Show the row with this id."),
    split: str | None = typer.Option(None, "--split", help="Split to read when the source has several."),
    config: str | None = typer.Option(None, "--config", help="Hub dataset: the configuration (subset) to load."),
    revision: str | None = typer.Option(None, "--revision", help="Hub dataset: a branch, tag or commit."),
) -> None:
    """Pretty-print samples: coloured turns, image sizes, provenance."""
    from synth.show import show_dataset

    show_dataset(dataset, console, n=n, offset=offset, row_id=row_id, split=split, config=config, revision=revision)
