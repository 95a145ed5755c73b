"""Stages that bring data in: ``source`` (any dataset the one reader opens, read in place) and ``demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from synth.core.fields import resolve_file
from synth.run.adapters.base import DataRef, StageAdapter
from synth.run.spec import StageSpec


def resolve_path(value: str, base_dir: Path) -> str:
    """A relative path found beside the recipe wins, then one from the current folder; else as given
    (a Hub id)."""
    return resolve_file(value, base_dir)


class SourceSpec(StageSpec):
    """A dataset read in place: a save_to_disk folder, Parquet/JSONL/CSV, an image folder, WebDataset tar
    shards (a folder or glob of them), or a Hub id."""

    type: Literal["source"]
    path: str = Field(description="local file or folder (relative to the recipe, then the current folder) or Hub id")
    split: str | None = None
    config: str | None = Field(None, description="Hub dataset config (subset)")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit): pin it for reproducible runs")
    limit: int | None = Field(None, ge=1, description="only the first N rows")
    image_root: str | None = Field(None, description="folder that image paths resolve under and may not leave "
                                                     "(relative to the recipe; default: the dataset's folder)")
    members: dict[str, str | list[str]] | None = Field(
        None, description="WebDataset shards: member extensions of each column, e.g. {image: 'jpg,png', caption: "
        "txt, json: json} (default: image jpg/jpeg/png/webp, caption txt, json json)")

    reference_fields: ClassVar[tuple[str, ...]] = ()


class SourceAdapter(StageAdapter):
    type = "source"
    Spec = SourceSpec
    source = True
    sharded = False

    def resolve(self, spec: SourceSpec, base_dir: Path) -> SourceSpec:
        update = {"path": resolve_path(spec.path, base_dir)}
        if spec.image_root is not None:  # a folder, never a Hub id: relative to the recipe
            update["image_root"] = str((base_dir / Path(spec.image_root).expanduser()).resolve())
        return spec.model_copy(update=update)

    def source_ref(self, spec: SourceSpec) -> DataRef:
        return DataRef(path=spec.path, split=spec.split, config=spec.config, revision=spec.revision,
                       limit=spec.limit, stage=spec.name, image_root=spec.image_root, members=spec.members)


class DemoSpec(StageSpec):
    """The demo shapes dataset (drawn offline: images with exact captions, boxes, QA, labels, words)."""

    type: Literal["demo"]
    count: int = Field(200, ge=1, description="number of scenes")
    seed: int = 0
    size: int = Field(256, ge=64, description="image side in pixels")
    offset: int = Field(0, ge=0, description="index of the first scene: disjoint index ranges (same seed) give "
                                             "disjoint scenes with distinct ids, e.g. train / unlabeled / held-out")

    reference_fields: ClassVar[tuple[str, ...]] = ()


class DemoAdapter(StageAdapter):
    type = "demo"
    Spec = DemoSpec
    sharded = False

    def execute(self, spec: DemoSpec, ctx, inputs, folder, tracker) -> dict[str, Any]:
        from synth.data import save
        from synth.demo_data import make_demo_dataset

        dataset = make_demo_dataset(spec.count, spec.seed, spec.size, show_progress=False, offset=spec.offset)
        save(dataset, folder.path)
        if ctx.progress is not None:
            ctx.progress.add(records=spec.count)
        return {"counts": {"read": 0, "kept": spec.count, "rows": spec.count, "rejected": {}, "failed": {}},
                "kind": "raw", "multimodal": True}

    def sample(self, spec: DemoSpec, ctx, records, src):
        from synth.data.layouts import to_record
        from synth.demo_data import make_row

        return [to_record(make_row(i, spec.seed, spec.size), "raw", f"demo row {i}", None)
                for i in range(spec.offset, spec.offset + min(spec.count, 4))]


ADAPTERS = (SourceAdapter, DemoAdapter)
