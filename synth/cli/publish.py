"""Commands: push (a dataset card + Parquet shards to the Hugging Face Hub, or the same folder offline) and
report (one self-contained HTML page to look at samples, images, lineage and rejects)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from synth.cli.common import command, console


@command("push", out_option="--to-dir")
def push(
    datasets: list[str] = typer.Argument(..., help="Dataset folders, one config each; NAME=PATH names the config."),
    repo: str = typer.Option(..., "--repo", "-r", help="Hub dataset repo, USER/NAME or ORG/NAME."),
    private: bool = typer.Option(False, "--private", help="Create the repo as private."),
    to_dir: Optional[Path] = typer.Option(
        None, "--to-dir", help="Write exactly the folder that would be uploaded (shards + README.md) here; upload nothing."
    ),
    max_shard_size: str = typer.Option("500MB", "--max-shard-size", help="Largest Parquet shard, e.g. 500MB, 50MB."),
    license: str = typer.Option("other", "--license", help="License id for the card (e.g. cc-by-4.0, apache-2.0)."),
    language: list[str] = typer.Option(["en"], "--language", help="Language code(s) of the text (repeat for several)."),
    pretty_name: Optional[str] = typer.Option(None, "--pretty-name", help="Title of the card (default: the repo name)."),
    description: Optional[str] = typer.Option(None, "--description", help="A paragraph at the top of the card."),
    message: Optional[str] = typer.Option(None, "--message", help="Commit message prefix (default: synth push)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --to-dir folder."),
) -> None:
    """Publish datasets to the Hugging Face Hub as configs with a generated dataset card.

    Each dataset becomes one config (its splits kept) stored as Parquet shards with the images embedded.
    The card (README.md) says how each config was made: steps, drop reasons, templates, models, sampling
    settings and tokens, with sample rows, the load_dataset lines and the papers of the methods used.
    The token comes from HF_TOKEN or `hf auth login`.
    """
    from synth.data.writer import check_output
    from synth.publish.hub import (
        check_repo_id,
        hub_token,
        load_configs,
        parse_sources,
        push_folder_summary,
        write_folder,
    )
    from synth.publish.hub import push as push_to_hub

    check_repo_id(repo)
    options = dict(license=license, language=language, pretty_name=pretty_name, description=description)
    if to_dir is not None:
        sources = parse_sources(datasets)
        check_output(to_dir, overwrite, inputs=[path for _, path in sources])
        configs = load_configs(sources)
        result = write_folder(configs, repo, to_dir, max_shard_size=max_shard_size, overwrite=overwrite, **options)
        console.print(push_folder_summary(result, to_dir), soft_wrap=True)
        return
    token = hub_token()  # before reading anything: offline or no token fails at once, nothing uploaded
    configs = load_configs(parse_sources(datasets))
    result = push_to_hub(configs, repo, private=private, max_shard_size=max_shard_size, commit_message=message,
                         token=token, **options)
    names = ", ".join(f"{c.name} ({c.lineage.rows:,} rows)" for c in configs)
    console.print(f"pushed {names} to https://huggingface.co/datasets/{repo}", soft_wrap=True)


@command("report")
def report(
    datasets: list[Path] = typer.Argument(..., help="Dataset folders to report on (sidecars and sources are followed)."),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="The HTML file to write."),
    sample: int = typer.Option(40, "--sample", "-n", min=1, help="Samples, chains and pairs shown per dataset."),
    thumb_size: int = typer.Option(160, "--thumb-size", min=16, max=1024, help="Longest side of inlined thumbnails (px)."),
    title: Optional[str] = typer.Option(None, "--title", help="Page title."),
    seed: int = typer.Option(0, "--seed", help="Which samples are drawn (spread over the sources)."),
) -> None:
    """Write one self-contained HTML report: per-step counts and drop reasons as a chart, samples with their
    images and provenance, evolution chains with the judge's verdicts, preference pairs side by side, and
    rejects by reason, with filters by dataset, source, stage and reason. Opens offline in any browser."""
    from synth.report.render import build_report

    result = build_report(datasets, out, sample=sample, thumb_size=thumb_size, title=title, seed=seed)
    parts = [f"{result.samples} samples"]
    if result.chains:
        parts.append(f"{result.chains} evolution chains")
    if result.pairs:
        parts.append(f"{result.pairs} pairs")
    parts.append(f"{result.reject_groups} reject reasons")
    console.print(
        f"wrote {result.out} ({result.bytes / 1e6:.1f} MB, {result.images} images inlined): " + ", ".join(parts)
        + f" from {result.datasets} dataset{'s' if result.datasets != 1 else ''} in {result.seconds:.1f} s",
        soft_wrap=True,
    )
