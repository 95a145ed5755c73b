"""``export``: an output in a trainer's format (`synth.export`: TRL, LLaMA-Factory, LLaVA, OpenAI,
WebDataset).

The stage's folder holds the exported files (not a dataset later stages read); every split of a mix is
exported.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from synth.export import FORMATS
from synth.run.adapters.base import StageAdapter
from synth.run.spec import StageSpec


class ExportSpec(StageSpec):
    """Write `input` in a trainer's format: TRL, LLaMA-Factory, LLaVA, OpenAI fine-tuning JSONL or WebDataset."""

    type: Literal["export"]
    input: str
    format: Literal[FORMATS]  # type: ignore[valid-type]
    dataset_name: str | None = Field(None, description="dataset name in the export (default: the input's name)")
    jsonl: bool = Field(False, description="JSON Lines instead of one JSON list (LLaMA-Factory, LLaVA)")
    on_error: Literal["fail", "skip"] = "fail"
    split: str | None = Field(None, description="only this split (default: all)")
    shard_records: int | None = Field(None, ge=1, description="webdataset: samples per tar shard (default 10000)")
    shard_mb: float | None = Field(None, gt=0, description="webdataset: start a new tar shard before one passes this size")


class ExportAdapter(StageAdapter):
    type = "export"
    Spec = ExportSpec
    sharded = False
    positional = False
    output = "files"

    def execute(self, spec: ExportSpec, ctx, inputs, folder, tracker) -> dict[str, Any]:
        from synth.export import export_dataset

        ref = ctx.task.inputs[0]
        summary = export_dataset(ref["path"], folder.path, spec.format, overwrite=True,
                                 name=spec.dataset_name or ref.get("stage"), jsonl=spec.jsonl,
                                 on_error=spec.on_error, split=spec.split, show_progress=False,
                                 shard_records=spec.shard_records, shard_mb=spec.shard_mb)
        details = {k: getattr(summary, k) for k in ("format", "kind", "rows", "skipped", "image_files",
                                                     "embedded_images", "converted_images", "files", "splits")}
        return {"counts": {"read": summary.rows + summary.skipped, "kept": summary.rows, "rows": summary.rows,
                           "rejected": {"skipped": summary.skipped} if summary.skipped else {}, "failed": {}},
                "kind": None, "multimodal": bool(ref.get("multimodal")), "details": details}


ADAPTERS = (ExportAdapter,)
