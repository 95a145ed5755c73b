"""The default body of a shard: a stage adapter's engine stages over the shard's records, into the writer.

`run_stage_chain` is what `StageAdapter.execute` does unless an adapter writes its output itself: the
records go through the chain (counted for the live view), out through the one writer, and back into input
order when a stage emitted them out of it (`Tracker`). The adapter comes in as a parameter, so this module
sits below the adapters and the shard runner (`synth.run.shards`) that both use it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from synth.data import FAILURES, REJECTS, save, write_records
from synth.ownership import MARKER
from synth.pipeline.stage import POSITION
from synth.run import hooks


def column(dataset, name: str) -> list:
    """One column as a Python list, read as one Arrow array (indexing a dataset goes row by row)."""
    return dataset.with_format("arrow")[name].to_pylist()


class Tracker:
    """Puts a shard's written rows back in input order. Each input record carries its position in the
    whole input (`synth.pipeline.stage.POSITION`); `Stage.account` copies it onto every record made from
    it, whatever the chain of stages. Records made outside `account` (an evolution's versions) are placed
    by `origin(record)`: the id of the input record they came from."""

    def __init__(self, positions: Any | None, origin=None):
        self.global_positions = positions  # row → position in the whole input (None: not tracked)
        self.enabled = positions is not None
        self.origin = origin
        self._by_id: dict[Any, int] = {}
        self.positions: list[int] = []
        self.ok = True

    def source(self, records: Iterable[dict]) -> Iterator[dict]:
        if not self.enabled:
            yield from records
            return
        for i, record in enumerate(records):
            position = int(self.global_positions[i])
            record[POSITION] = position
            if self.origin is not None:
                self._by_id.setdefault(record.get("id"), position)
            yield record

    def output(self, records: Iterable[dict]) -> Iterator[dict]:
        for record in records:
            position = record.pop(POSITION, None)
            if not self.enabled:
                yield record
                continue
            if position is None and self.origin is not None:
                position = self._by_id.get(self.origin(record))
            if position is None:
                self.ok = False
                position = -1
            self.positions.append(position)
            yield record

    def sorted_order(self):
        """The permutation that puts the written rows in input order (None when they already are)."""
        import numpy as np

        if not (self.enabled and self.ok) or not self.positions:
            return None
        positions = np.asarray(self.positions, dtype=np.int64)
        if bool(np.all(positions[1:] >= positions[:-1])):
            return None
        return np.argsort(positions, kind="stable")


def counted(records: Iterable[dict], task, progress) -> Iterator[dict]:
    """Records, counted for the live view, passing the test kill point ``record``."""
    stage, rank = (task.stage, task.rank) if task else ("", 0)
    for index, record in enumerate(records, 1):
        hooks.point("record", stage=stage, shard=rank, index=index)
        if progress is not None:
            progress.add(records=1)
        yield record


def raw_features(src, writes_meta: bool):
    """How raw rows (their own columns) are written: as read, ``meta`` as JSON text when a stage adds it."""
    from datasets import Features, Value

    features = Features(dict(src.dataset.features))
    if writes_meta and "meta" not in features:
        features["meta"] = Value("string")
    return features


def _raw_rows(records: Iterable[dict], features) -> Iterator[dict]:
    from synth.records import dump_meta

    for record in records:
        row = {name: record.get(name) for name in features}
        if "meta" in features and not isinstance(row.get("meta"), str):
            row["meta"] = dump_meta(row.get("meta") or {})
        yield row


def write_output(records: Iterable[dict], folder, kind: str, multimodal: bool, src=None, writes_meta=False) -> int:
    """Write a shard's records through the one writer; the number of rows."""
    if kind == "raw":
        features = raw_features(src, writes_meta)
        return write_records(_raw_rows(records, features), folder.path, features=features,
                             scratch=folder.scratch("w"))
    return write_records(records, folder.path, kind=kind, multimodal=multimodal, scratch=folder.scratch("w"))


def reorder(folder, tracker: Tracker) -> None:
    """Rewrite a shard's dataset in input order when its stage emitted records out of it (an evolution
    writes round by round), so one shard and many shards give the same order."""
    order = tracker.sorted_order()
    if order is None:
        return
    from datasets import load_from_disk

    staged = folder.scratch("order")
    dataset = load_from_disk(str(folder.path))
    save(dataset.select(order), staged / "data")
    del dataset
    for item in folder.path.iterdir():
        if item.is_file() and item.name not in (REJECTS, FAILURES, MARKER):
            item.unlink()
    for item in (staged / "data").iterdir():
        os.replace(item, folder.path / item.name)
    tracker.positions = [tracker.positions[i] for i in order]


def run_stage_chain(adapter, spec, ctx, src, folder, tracker: Tracker) -> dict[str, Any]:
    """The default shard body: the adapter's engine stages over the shard's records, into the writer."""
    from synth.pipeline import run_stages

    stages = adapter.stages(spec, ctx, src)
    kind, multimodal = adapter.output_layout(spec, src)
    before = usage_snapshot(stages)
    records = tracker.source(counted(adapter.records(spec, src), ctx.task, ctx.progress))
    out = tracker.output(run_stages(stages, records, folder.rejects, folder.failures))
    writes_meta = any("meta" in getattr(stage, "writes", ()) for stage in stages)
    rows = write_output(out, folder, kind, multimodal, src, writes_meta)
    reorder(folder, tracker)
    counts = count_stats(stages)
    counts["rows"] = rows
    report: dict[str, Any] = {"counts": counts, "kind": kind, "multimodal": multimodal,
                              "stages": [{"name": s.name, **s.stats.as_dict()} for s in stages]}
    own = [s for s in stages if hasattr(s, "details")]  # an operator's own figures (summed over shards)
    if own:
        report["details"] = own[0].details() if len(own) == 1 else {s.name: s.details() for s in own}
    usage = usage_delta(before, usage_snapshot(stages))
    if usage:
        report["usage"] = usage
    answered = sum(getattr(s, "answered", 0) for s in stages)
    if any(hasattr(s, "answered") for s in stages):
        report["answered"] = answered
    return report


def count_stats(stages: Iterable[Any]) -> dict[str, Any]:
    """A chain's counts: read = the first stage's input, kept = the last's, reasons from every stage
    (prefixed by the stage's name when the chain has several)."""
    stages = list(stages)
    rejected: dict[str, int] = {}
    failed: dict[str, int] = {}
    for stage in stages:
        prefix = f"{stage.name}:" if len(stages) > 1 else ""
        for reason, n in stage.stats.dropped.items():
            rejected[prefix + reason] = rejected.get(prefix + reason, 0) + n
        for reason, n in stage.stats.failed.items():
            failed[prefix + reason] = failed.get(prefix + reason, 0) + n
    return {
        "read": stages[0].stats.seen if stages else 0,
        "kept": stages[-1].stats.kept if stages else 0,
        "rejected": rejected,
        "failed": failed,
    }


def usage_snapshot(stages: Iterable[Any]) -> dict[str, Any]:
    """Usage totals of the distinct backends behind `stages` (a later snapshot minus this one = a shard's use)."""
    seen, totals = set(), {}
    for stage in stages:
        backend = getattr(stage, "backend", None)
        if backend is None or id(backend) in seen:
            continue
        seen.add(id(backend))
        for key, value in backend.usage.as_dict().items():
            if isinstance(value, (int, float)) and value is not None:
                totals[key] = totals.get(key, 0) + value
    return totals


def usage_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after}
