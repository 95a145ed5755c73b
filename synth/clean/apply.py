"""Run a chain of cleaning stages from the one reader to the one writer.

Records come from `synth.data.open_source` (a local file or folder, or a Hub id; images as encoded
``{"bytes", "path"}`` refs whose relative paths resolve inside the dataset's folder, whatever the working
directory; a bad row or image is an error naming it), pass lazily through the stages and are written by
`synth.data.write_records` into an `OutputFolder`: the output appears whole or not at all, and everything
the run leaves lives inside it (``rejects.jsonl``, ``failures.jsonl``, ``report.json``, ``usage.json`` when
an LLM was asked).

The output keeps the input's layout: SFT records in, synth's SFT layout out (preference pairs likewise);
raw rows (web captions, labelled data) keep their own columns, images embedded, with ``meta`` added when
a stage writes scores.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.data import (
    FAILURES,
    REJECTS,
    REPORT,
    USAGE,
    OutputFolder,
    check_output,
    open_source,
    write_records,
)
from synth.pipeline import Stage, run_stages
from synth.records import dump_meta

#: columns of raw rows that hold images (as paths or image cells); a stage may name more (`image_column`)
IMAGE_COLUMNS = ("image", "images")


@dataclass
class CleanResult:
    out: Path
    read: int
    kept: int
    failed: int = 0
    stages: list[tuple[str, dict]] = field(default_factory=list)  # (stage name, stats dict) in order
    summaries: dict[str, list[dict]] = field(default_factory=dict)  # stage name -> summary rows
    rejects_file: Path | None = None
    failures_file: Path | None = None
    report_file: Path | None = None

    @property
    def dropped(self) -> int:
        return self.read - self.kept - self.failed


# ---------------------------------------------------------------- features of raw rows


def _map_images(feature, fn):
    """`feature` with `fn` applied to every Image feature in it (also inside lists and structs)."""
    from datasets import Image, LargeList, List, Sequence

    if isinstance(feature, Image):
        return fn(feature)
    if isinstance(feature, (List, LargeList)):
        length = getattr(feature, "length", -1)
        return type(feature)(_map_images(feature.feature, fn), **({"length": length} if length != -1 else {}))
    if isinstance(feature, Sequence):
        return Sequence(_map_images(feature.feature, fn), length=feature.length)
    if isinstance(feature, dict):
        return {k: _map_images(v, fn) for k, v in feature.items()}
    if isinstance(feature, list) and feature:
        return [_map_images(feature[0], fn)]
    return feature


def _path_to_image(feature):
    """A string column (or list of strings) as an undecoded Image feature; None when it is neither."""
    from datasets import Image, LargeList, List, Sequence, Value

    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        return Image(decode=False)
    if isinstance(feature, (List, LargeList, Sequence)) and isinstance(feature.feature, Value):
        inner = _path_to_image(feature.feature)
        return None if inner is None else type(feature)(inner)
    return None


def _image_path_columns(features, columns: set[str]) -> dict[str, Any]:
    """Raw columns that name images by path (strings, or lists of them) → the Image feature they become."""
    found = {name: _path_to_image(features[name]) for name in columns if name in features}
    return {name: feature for name, feature in found.items() if feature is not None}


def _resolve_image_paths(records: Iterable[dict], columns: Sequence[str], source) -> Iterator[dict]:
    """Raw rows keep image paths as text: make them image refs the way the reader does for known layouts
    (resolved inside the dataset folder whatever the working directory, paths out of it refused, the file
    checked), so the stages see images and the output embeds them."""
    from synth.data import RecordError, image_ref
    from synth.errors import SynthError

    for position, record in enumerate(records, 1):
        rid = str(record.get("id") or f"row {position}")
        try:
            for name in columns:
                value = record.get(name)
                if isinstance(value, str):
                    record[name] = image_ref(value, source.base_dir, rid, check=source.check_images)
                elif isinstance(value, list):
                    record[name] = [image_ref(v, source.base_dir, rid, check=source.check_images) if isinstance(v, str) else v
                                    for v in value]
        except SynthError as e:
            raise RecordError(f"{source.name}: row {position}: {e}", getattr(e, "reason", "bad_image")) from None
        yield record


def _output_features(features, writes_meta: bool, image_columns: dict[str, Any]):
    """The raw input's features as they are written: image cells (and image paths, now embedded images)
    decoded on reading back, ``meta`` a JSON string when a stage writes scores."""
    from datasets import Features, Image, Value

    out = Features({k: _map_images(image_columns.get(k, v), lambda f: Image(mode=f.mode)) for k, v in features.items()})
    if writes_meta:
        out["meta"] = Value("string")
    return out


def _raw_rows(records: Iterable[dict], features) -> Iterator[dict]:
    """Raw records as rows of the output's columns (a ``row N`` id given for the rejects is not one)."""
    from datasets import Value

    meta_as_text = isinstance(features.get("meta"), Value) and features["meta"].dtype == "string"
    for record in records:
        row = {name: record.get(name) for name in features}
        if meta_as_text and not isinstance(row.get("meta"), str):
            row["meta"] = dump_meta(row.get("meta") or {})
        yield row


# ---------------------------------------------------------------- ids


def _with_ids(records: Iterable[dict], kind: str) -> Iterator[dict]:
    """Give every record an id before the stages see it, so rejects and failures can name it: the id the
    writer would give (a hash of the content) for SFT and preference records, ``row N`` for raw rows."""
    from synth.records import content_id

    for position, record in enumerate(records, 1):
        if record.get("id") in (None, ""):
            if kind == "sft":
                record["id"] = content_id(record["messages"], record.get("images") or [])
            elif kind == "preference":
                record["id"] = content_id(record["prompt"] + record["chosen"] + record["rejected"], record.get("images") or [])
            else:
                record["id"] = f"row {position}"
        yield record


# ---------------------------------------------------------------- the run


def _image_columns(stages: Sequence[Stage]) -> set[str]:
    columns = set(IMAGE_COLUMNS)
    for stage in stages:
        column = getattr(stage.config, "image_column", None)
        if isinstance(column, str):
            columns.add(column)
    return columns


def _backends(stages: Sequence[Stage]) -> list[tuple[str, Any]]:
    return [(stage.name, stage.backend) for stage in stages if getattr(stage, "backend", None) is not None]


def _usage(stages: Sequence[Stage], command: str) -> dict | None:
    from synth.llm.factory import backend_description

    blocks = [(name, {**backend_description(b), **b.usage.as_dict()}) for name, b in _backends(stages)]
    if not blocks:
        return None
    first = blocks[0][1]
    doc: dict[str, Any] = {"command": command, "model": first.get("model"), "usage": first}
    if len(blocks) > 1:
        doc["by_stage"] = {name: block for name, block in blocks}
    return doc


def clean_dataset(
    source: str | os.PathLike,
    out: str | os.PathLike,
    stages: Sequence[Stage],
    *,
    split: str | None = None,
    config: str | None = None,
    revision: str | None = None,
    overwrite: bool = False,
    limit: int | None = None,
    description: str = "cleaning",
    command: str = "filter",
    layout: str | None = None,
    records_of=None,
    output_kind: str | None = None,
    output_multimodal: bool | None = None,
) -> CleanResult:
    """Read `source`, pass its records through `stages`, write the kept ones to the folder `out`.

    `layout` forces the reader's layout (e.g. "raw"), `records_of(source)` gives the records the stages read
    (default: the reader's), `output_kind` the kind of records they write when it is not the input's, and
    `output_multimodal` whether they carry images when that is not as the input's. A stage with
    ``bind_source(source)`` gets the opened source first; one with ``details()`` adds its figures to the
    report.

    Raises `SynthError` (nothing written) for an unreadable or empty source, a bad row or image, and a
    run in which every LLM request failed."""
    from synth.pipeline.llm_task import check_not_all_failed
    from synth.progress import progress

    out = check_output(out, overwrite, inputs=[source])
    src = open_source(source, split, config=config, revision=revision, limit=limit,
                      **({"layout": layout} if layout else {}))
    for stage in stages:
        if hasattr(stage, "bind_source"):
            stage.bind_source(src)
    path_columns = _image_path_columns(src.dataset.features or {}, _image_columns(stages)) if src.kind == "raw" else {}
    read = 0
    with OutputFolder(out, overwrite) as folder, progress() as bar:
        task = bar.add_task(description, total=src.num_rows, tokens="")

        def counted() -> Iterator[dict]:
            nonlocal read
            for record in (records_of(src) if records_of is not None else src.records()):
                read += 1
                bar.advance(task)
                yield record

        records = _with_ids(counted(), src.kind)
        if path_columns:
            records = _resolve_image_paths(records, list(path_columns), src)
        kept_records = run_stages(stages, records, folder.rejects, folder.failures)
        if src.kind == "raw" and output_kind in (None, "raw"):
            writes_meta = any("meta" in stage.writes for stage in stages)
            features = _output_features(src.dataset.features, writes_meta, path_columns)
            kept = write_records(
                _raw_rows(kept_records, features),
                folder.path, features=features, scratch=folder.scratch("write"),
            )
        else:
            kept = write_records(
                kept_records, folder.path, kind=output_kind or src.kind,
                multimodal=src.multimodal if output_multimodal is None else output_multimodal,
                scratch=folder.scratch("write"),
            )
        for stage in stages:
            if hasattr(stage, "answered"):
                check_not_all_failed(stage)  # every LLM request failed: nothing is written
        result = _finish(folder, out, stages, command, {"source": str(source), "layout": src.layout}, read, kept)
    return result


def run_alone(out: str | os.PathLike, stage: Stage, *, overwrite: bool = False, command: str,
              kind: str = "sft", multimodal: bool = False) -> CleanResult:
    """Run an operator that reads no dataset (its records come from its config, e.g. Self-Instruct's seed
    tasks) and write them to the folder `out` with the same sidecars as `clean_dataset`."""
    from synth.pipeline.llm_task import check_not_all_failed

    out = check_output(out, overwrite)
    with OutputFolder(out, overwrite) as folder:
        stage.rejects, stage.failures = folder.rejects, folder.failures
        kept = write_records(stage.run(iter(())), folder.path, kind=kind, multimodal=multimodal,
                             scratch=folder.scratch("write"))
        if hasattr(stage, "answered"):
            check_not_all_failed(stage)  # every LLM request failed: nothing is written
        if hasattr(stage, "write_files"):
            stage.write_files(folder.path)
        return _finish(folder, out, [stage], command, {}, stage.stats.seen, kept)


def _finish(folder: OutputFolder, out: Path, stages: Sequence[Stage], command: str, source: dict[str, Any],
            read: int, kept: int) -> CleanResult:
    """The run's result, and its report.json and usage.json in the output folder."""
    failed = sum(stage.stats.failures for stage in stages)
    result = CleanResult(
        out=out,
        read=read,
        kept=kept,
        failed=failed,
        stages=[(stage.name, stage.stats.as_dict()) for stage in stages],
        summaries={stage.name: stage.summary() for stage in stages if hasattr(stage, "summary")},
        rejects_file=out / REJECTS if folder.rejects.count else None,
        failures_file=out / FAILURES if folder.failures.count else None,
        report_file=out / REPORT,
    )
    folder.write_json(REPORT, {
        "command": command,
        **source,
        "read": read,
        "kept": kept,
        "failed": failed,
        "stages": [
            {"name": stage.name, "type": type(stage).__name__, **stage.stats.as_dict(),
             "config": stage.config.model_dump(mode="json")}
            for stage in stages
        ],
        "summaries": result.summaries,
        **{k: v for stage in stages if hasattr(stage, "details") for k, v in stage.details().items()},
    })
    usage = _usage(stages, command)
    if usage:
        folder.write_json(USAGE, usage)
    return result
