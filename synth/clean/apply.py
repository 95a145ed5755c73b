"""Run a chain of cleaning stages over a dataset on disk and write the kept rows atomically.

Rows are read without decoding images (filters get ``{"bytes", "path"}`` entries; size checks read only
headers, perceptual hashes decode), and the output is the input dataset's kept rows (`Dataset.select`),
so features and images pass through untouched. Stages that change records (the judge adds scores to
``meta``; CapFilt's captioner may replace a caption or answer) get their text columns written back.
Rejects go to `synth.io.rejects_path(out)`, one JSON line per dropped record naming its stage and reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.io import check_output, read_dataset, rejects_path, write_dataset
from synth.records import dump_meta, load_meta
from synth.stages import Stage, run_stages

_ROW = "_synth_row"  # position of a record in the input, carried through the stages


@dataclass
class CleanResult:
    out: Path
    rejects_file: Path | None
    read: int
    kept: int
    stages: list[tuple[str, dict]] = field(default_factory=list)  # (stage name, stats dict) in order
    summaries: dict[str, list[dict]] = field(default_factory=dict)  # stage name -> summary rows

    @property
    def dropped(self) -> int:
        return self.read - self.kept


def iter_records(dataset, batch_size: int = 1024) -> Iterator[dict]:
    """Rows as record dicts (``meta`` parsed to a dict, images as undecoded ``{"bytes", "path"}``), tagged
    with their position; a dataset without ids gets ``row N`` ids so rejects can name records."""
    has_ids = "id" in dataset.column_names
    position = 0
    # Arrow batches give the stored form directly: no image decoding, no per-row feature decoding.
    for table in dataset.with_format("arrow").iter(batch_size=batch_size):
        for record in table.to_pylist():
            if "meta" in record:
                record["meta"] = load_meta(record["meta"])
            if not has_ids:
                record["id"] = f"row {position + 1}"
            record[_ROW] = position
            position += 1
            yield record


def _changes_records(stage: Stage) -> bool:
    from synth.llm.base import LLMStage

    return bool(getattr(stage, "changes_records", isinstance(stage, LLMStage)))


def _holds_images(feature) -> bool:
    from datasets import Image

    if isinstance(feature, Image):
        return True
    if isinstance(feature, dict):
        return any(_holds_images(f) for f in feature.values())
    if isinstance(feature, (list, tuple)):
        return any(_holds_images(f) for f in feature)
    inner = getattr(feature, "feature", None)
    return inner is not None and _holds_images(inner)


def _write_back(output, dataset, changed: dict[int, dict], kept_rows: list[int]):
    """Replace the text columns of `output` with the values the stages left in the records."""
    columns = list(output.column_names)
    for name in changed[kept_rows[0]]:
        values = [changed[row][name] for row in kept_rows]
        if name == "meta":
            values = [dump_meta(v if isinstance(v, dict) else load_meta(v)) for v in values]
            feature = None
        else:
            feature = dataset.features.get(name)
        if name in columns:
            output = output.remove_columns(name)
        output = output.add_column(name, values, feature=feature)
    extra = [c for c in output.column_names if c not in columns]
    return output.select_columns(columns + extra)


def clean_dataset(
    source: str | os.PathLike,
    out: str | os.PathLike,
    stages: Sequence[Stage],
    *,
    split: str | None = None,
    overwrite: bool = False,
    limit: int | None = None,
    description: str = "cleaning",
) -> CleanResult:
    """Read `source`, pass its rows through `stages`, write the kept rows to `out` (save_to_disk folder)."""
    from synth.progress import progress

    out = check_output(out, overwrite)
    dataset = read_dataset(source, split)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    final_rejects = rejects_path(out)
    partial_rejects = final_rejects.with_name(final_rejects.name + ".partial")
    kept_rows: list[int] = []
    changed: dict[int, dict[str, Any]] = {}
    # Filters return records unchanged; stages that change them (judge, captioner) get their text written back.
    track = any(_changes_records(stage) for stage in stages)
    text_columns = [c for c, f in dataset.features.items() if c != "meta" and not _holds_images(f)]
    try:
        with progress() as bar:
            task = bar.add_task(description, total=len(dataset), tokens="")

            def counted():
                for record in iter_records(dataset):
                    bar.advance(task)
                    yield record

            for record in run_stages(stages, counted(), partial_rejects):
                row = record[_ROW]
                kept_rows.append(row)
                if track:
                    changed[row] = {c: record.get(c) for c in text_columns}
                    changed[row]["meta"] = record.get("meta") or {}
        output = dataset.select(kept_rows)
        if changed and kept_rows:
            output = _write_back(output, dataset, changed, kept_rows)
        write_dataset(output, out, overwrite=overwrite)
        if partial_rejects.exists():
            os.replace(partial_rejects, final_rejects)
        elif final_rejects.exists():
            final_rejects.unlink()  # stale from an earlier run into the same --out
    finally:
        if partial_rejects.exists():
            partial_rejects.unlink()
    result = CleanResult(
        out=out,
        rejects_file=final_rejects if final_rejects.exists() else None,
        read=len(dataset),
        kept=len(kept_rows),
        stages=[(stage.name, stage.stats.as_dict()) for stage in stages],
    )
    for stage in stages:
        if hasattr(stage, "summary"):
            result.summaries[stage.name] = stage.summary()
    return result
