"""Export SFT and preference datasets to the formats trainers read: TRL, LLaMA-Factory, LLaVA, OpenAI;
image-text pairs (image-caption rows included) to WebDataset tar shards.

`export_dataset(source, out, fmt)` reads any dataset the one reader (`synth.data`) reads, in any layout it
knows (or takes a `datasets` Dataset / DatasetDict), converts every row of every split, and writes the folder
OUT whole or not at all. See each module for its format.
"""

from __future__ import annotations

import os

from synth.errors import SynthError
from synth.export.common import Exporter, ExportSummary, OnError, run_export
from synth.export.llamafactory import LlamaFactoryExporter
from synth.export.llava import LlavaExporter
from synth.export.openai_chat import OpenAIExporter
from synth.export.trl import TrlExporter
from synth.export.webdataset import WebDatasetExporter

EXPORTERS: dict[str, type[Exporter]] = {e.name: e for e in (TrlExporter, LlamaFactoryExporter, LlavaExporter, OpenAIExporter,
                                                          WebDatasetExporter)}
FORMATS = tuple(EXPORTERS)


def export_dataset(
    source,
    out: str | os.PathLike,
    fmt: str,
    *,
    overwrite: bool = False,
    name: str | None = None,
    jsonl: bool = False,
    on_error: OnError = "fail",
    split: str | None = None,
    config: str | None = None,
    revision: str | None = None,
    show_progress: bool = True,
    shard_records: int | None = None,
    shard_mb: float | None = None,
) -> ExportSummary:
    """Export `source` to the folder `out` in format `fmt` (one of `FORMATS`)."""
    exporter = EXPORTERS.get(fmt)
    if exporter is None:
        raise SynthError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")
    return run_export(
        source, out, exporter, overwrite=overwrite, name=name, jsonl=jsonl, on_error=on_error, split=split,
        config=config, revision=revision, show_progress=show_progress,
        options={"shard_records": shard_records, "shard_mb": shard_mb},
    )


__all__ = ["EXPORTERS", "FORMATS", "ExportSummary", "export_dataset"]
