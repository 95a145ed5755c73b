"""The `synth filter` command: a chain of filter operators (each filter also has a command of its own,
generated from its config: synth/cli/operators.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from synth.cli.common import command, console
from synth.cli.llm_options import BackendName, BaseUrl, Batch, CacheDir, Concurrency, Model, NoCache, Out

DATASET_HELP = (
    "Dataset: save_to_disk folder, Parquet/JSONL/CSV file or folder (synth, TRL, LLaVA, sharegpt, alpaca or "
    "OpenAI layout), or Hub id."
)
SUBSET_HELP = "Hub dataset: the configuration (subset) to load."
REVISION_HELP = "Hub dataset: a branch, tag or commit."


#: titles of the per-stage summary tables (a stage's `summary()` rows)
SUMMARY_TITLES = {"decontaminate": "hits per benchmark", "capfilt": "image-text pairs scored and kept"}


def print_result(result, title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("stage", style="bold")
    table.add_column("reason")
    table.add_column("records", justify="right")
    table.add_row("input", "read", f"{result.read:,}")
    for name, stats in result.stages:
        if not stats["dropped"] and not stats["failed"]:
            table.add_row(name, "dropped", "0")
        for reason, count in sorted(stats["dropped"].items(), key=lambda kv: -kv[1]):
            table.add_row(name, f"dropped: {reason}", f"{count:,}")
        for reason, count in sorted(stats["failed"].items(), key=lambda kv: -kv[1]):
            table.add_row(name, f"failed: {reason}", f"{count:,}", style="yellow")
    share = f" ({result.kept / result.read:.1%})" if result.read else ""
    table.add_row("output", "kept", f"{result.kept:,}{share}", style="green")
    console.print(table)
    for name, rows in result.summaries.items():
        if not rows:
            continue
        summary = Table(title=f"{name}: {SUMMARY_TITLES.get(name, 'summary')}")
        for key in rows[0]:
            summary.add_column(key, justify="right" if isinstance(rows[0][key], (int, float)) else "left")
        for row in rows:
            summary.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()))
        console.print(summary)
    line = f"wrote {result.kept:,} records to [bold]{result.out}[/]"
    if result.rejects_file:
        line += f"; rejects: {result.rejects_file}"
    console.print(line, soft_wrap=True)
    if result.failed:
        console.print(
            f"[yellow]{result.failed:,} records failed (LLM request errors; not cached, retried by the next run): "
            f"{result.failures_file}[/]",
            soft_wrap=True,
        )


class _LazyBackend:
    """Builds the LLM backend only when a filter asks for one (the judge, CapFilt's captioner), and
    remembers it to close."""

    def __init__(self, *options):
        self.options = options
        self.built = []

    def __call__(self):
        from synth.cli.llm_options import make_llm

        self.built.append(make_llm(*self.options))
        return self.built[-1]


@command("filter")
def filter_(
    dataset: Annotated[Optional[str], typer.Argument(help=DATASET_HELP + " (not needed with --filter help)")] = None,
    out: Out = None,  # optional only for --filter help
    filters: list[str] = typer.Option([], "--filter", "-f", help="NAME or NAME:key=value,... (repeatable, applied in order)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML list of filters: [{length: {min_answer_words: 3}}, dedup, ...]."),
    split: Optional[str] = typer.Option(None, help="Split to read when the source has several."),
    subset: Optional[str] = typer.Option(None, "--subset", help=SUBSET_HELP),
    revision: Optional[str] = typer.Option(None, "--revision", help=REVISION_HELP),
    limit: Optional[int] = typer.Option(None, help="Only the first N records."),
    model: Model = None,
    base_url: BaseUrl = None,
    backend: BackendName = None,
    concurrency: Concurrency = None,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    batch: Batch = False,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    """Apply a chain of filters (heuristics, dedup, decontaminate, judge); list them with --filter help."""
    from synth.clean.apply import clean_dataset
    from synth.clean.registry import FILTERS, build_filters, load_filter_chain
    from synth.data import check_output
    from synth.errors import SynthError
    from synth.llm.factory import report_usage

    if filters == ["help"]:
        for name, cls in FILTERS.items():
            console.print(f"[bold]{name}[/]: {(cls.__doc__ or '').strip().splitlines()[0]}", soft_wrap=True)
            console.print(f"  options: {', '.join(cls.Config.model_fields)}", style="dim", soft_wrap=True)
        return
    if dataset is None or out is None:
        missing = " and ".join(m for m, absent in (("DATASET", dataset is None), ("--out/-o OUT", out is None)) if absent)
        raise SynthError(f"synth filter needs {missing}: synth filter DATASET -o OUT --filter NAME "
                         "(--filter help lists the filters)")
    specs: list = load_filter_chain(config) if config else []
    specs += list(filters)
    if not specs:
        raise SynthError("no filters given: pass --filter NAME[:key=value,...] or --config FILE.yaml (see --filter help)")
    check_output(out, overwrite)  # fail before loading a model
    backends = _LazyBackend(backend, model, base_url, concurrency, cache_dir, no_cache, batch)
    try:
        stages = build_filters(specs, backend_factory=backends)
        for stage in stages:
            if getattr(stage.config, "score_only", False):  # say it before the run, not after
                console.print(f"{stage.name}: score only (score_only=true): nothing dropped by score; "
                              f"scores in meta.scores.{stage.name}", style="yellow", soft_wrap=True)
        result = clean_dataset(
            dataset, out, stages, split=split, config=subset, revision=revision, overwrite=overwrite, limit=limit,
            description="filtering", command="filter",
        )
        print_result(result, "synth filter")
        for llm in backends.built:
            report_usage(llm, console=console)
    finally:
        for llm in backends.built:
            llm.close()
