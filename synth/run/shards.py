"""Shards: a stage's input split by stable record id, each shard written whole or not at all.

Planning: record ``id`` (the row position, ``row-N``, when a source has no ids) → ``xxh64(id) % world_size``
picks the shard; a shard keeps its records in input order. The number of shards depends only on the input
size and the stage's ``shard_size``, never on the executor or the worker count, so every way of running a
recipe makes the same shards.

Writing a shard (`run_shard`, the task every executor runs): the records go through the stage into an
`OutputFolder` (a temporary sibling, fsynced, renamed into place), then a completion marker
``shard-NNNNN.done`` is written (temp file, fsync, rename). Nothing is ever appended: a shard without its
marker is redone from scratch, and a killed LLM shard replays its finished requests from the run's request
cache. Next to the records a shard keeps ``positions.npy``: the input position of each output record.

Assembly (`assemble`): the shards, concatenated and put back in input order by those positions, become
the stage's output — the same rows in the same order as one uninterrupted, unsharded run.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.data import FAILURES, REJECTS, REPORT, USAGE, OutputFolder, save
from synth.errors import SynthError
from synth.ownership import MARKER
from synth.run import hooks
from synth.run.chain import column
from synth.run.manifest import file_hashes, file_sizes, read_json, write_json_atomic

POSITIONS = "positions.npy"


# ---------------------------------------------------------------- planning


def record_ids(src) -> list[str]:
    """The id that places each row in a shard: its ``id``, or ``row-N`` (N = position) without one."""
    dataset = src.dataset
    n = src.num_rows or 0
    if "id" in (dataset.column_names or []):
        return [str(v) if v not in (None, "") else f"row-{i}" for i, v in enumerate(column(dataset, "id"))]
    return [f"row-{i}" for i in range(n)]


def world_size_for(rows: int | None, shard_size: int) -> int:
    if not rows:
        return 1
    return max(1, -(-rows // shard_size))


def assign(ids: list[str], world_size: int) -> list[list[int]]:
    """Row positions per shard (ascending), by ``xxh64(id) % world_size``."""
    import xxhash

    shards: list[list[int]] = [[] for _ in range(world_size)]
    if world_size == 1:
        shards[0] = list(range(len(ids)))
        return shards
    for i, rid in enumerate(ids):
        shards[xxhash.xxh64_intdigest(rid.encode("utf-8")) % world_size].append(i)
    return shards


@dataclass
class ShardTask:
    """Everything one shard needs, picklable (it travels to a worker process or a Ray task)."""

    run_dir: str
    stage: str
    type: str
    spec: dict
    inputs: list[dict]  # DataRef dicts; the first one is sharded
    rank: int
    world_size: int
    fingerprint: str
    shards_dir: str
    seed: int
    cache_dir: str
    recipe_dir: str
    backends: dict = field(default_factory=dict)
    indices: Any = None  # numpy array of rows of inputs[0] (None: all of them)
    ids_missing: bool = False  # raw rows without ids get ``row-N`` (their position) as id

    @property
    def name(self) -> str:
        return f"shard-{self.rank:05d}"

    @property
    def path(self) -> Path:
        return Path(self.shards_dir) / self.name

    @property
    def marker(self) -> Path:
        return Path(self.shards_dir) / f"{self.name}.done"


def completed(task: ShardTask, retry_failed: bool = True) -> dict | None:
    """The shard's marker when it is complete for this fingerprint (and, with `retry_failed`, had no
    failed requests: those shards run again and replay the rest from the cache)."""
    marker = read_json(task.marker)
    if not marker or marker.get("fingerprint") != task.fingerprint or marker.get("world_size") != task.world_size:
        return None
    if not task.path.is_dir():
        return None
    failed = sum((marker.get("report", {}).get("counts", {}).get("failed") or {}).values())
    if retry_failed and failed:
        return None
    return marker


# ---------------------------------------------------------------- running one shard


def _select(src, indices, ids_missing: bool):
    """The shard's rows of `src` (a `Source`), ``row-N`` ids added first where the rows have none."""
    dataset = src.dataset
    if ids_missing and "id" not in (dataset.column_names or []):
        dataset = dataset.add_column("id", [f"row-{i}" for i in range(len(dataset))])
        src.columns = [*src.columns, "id"]
    if indices is not None:
        dataset = dataset.select(indices)
    src.dataset = dataset
    return src


def run_shard(task: ShardTask, progress=None) -> dict[str, Any]:
    """Run one shard to its completion marker (the task every executor runs); returns the marker."""
    import numpy as np

    from synth.data import quiet_datasets
    from synth.run.adapters import registry
    from synth.run.adapters.base import DataRef, StageContext
    from synth.run.chain import Tracker

    started = time.time()
    adapter = registry()[task.type]
    spec = adapter.Spec.model_validate(task.spec)
    ctx = StageContext(run_dir=Path(task.run_dir), cache_dir=Path(task.cache_dir), seed=task.seed,
                       recipe_dir=Path(task.recipe_dir), backends=task.backends, stage=task.stage,
                       progress=progress, task=task)
    with quiet_datasets():
        inputs = [DataRef.from_dict(d).open(allow_empty=True, **(adapter.open_options(spec) if i == 0 else {}))
                  for i, d in enumerate(task.inputs)]
        if inputs:
            inputs[0] = _select(inputs[0], task.indices, task.ids_missing)
        positions = None
        if inputs and adapter.positional:
            positions = np.asarray(task.indices) if task.indices is not None else np.arange(inputs[0].num_rows or 0)
        tracker = Tracker(positions, adapter.origin if hasattr(adapter, "origin") else None)
        with OutputFolder(task.path, overwrite=True) as folder:
            report = adapter.execute(spec, ctx, inputs, folder, tracker)
            hooks.point("shard_write", stage=task.stage, shard=task.rank)
            if tracker.enabled and tracker.ok and task.world_size > 1:
                np.save(folder.path / POSITIONS, np.asarray(tracker.positions, dtype=np.int64))
            report["seconds"] = round(time.time() - started, 3)
            folder.write_json(REPORT, report)
        hooks.point("shard_done", stage=task.stage, shard=task.rank)
    # the files as written: a rerun checks them before trusting this marker (a truncated or deleted file)
    marker = {"fingerprint": task.fingerprint, "stage": task.stage, "rank": task.rank,
              "world_size": task.world_size, "report": report, "finished": time.time(),
              "files": file_hashes(task.path), "sizes": file_sizes(task.path)}
    write_json_atomic(task.marker, marker)
    return marker


# ---------------------------------------------------------------- assembly


def _concat_logs(paths: list[Path], out: Path) -> int:
    lines = 0
    with open(out, "w", encoding="utf-8") as f:
        for path in paths:
            if path.is_file():
                with open(path, encoding="utf-8") as part:
                    for line in part:
                        f.write(line)
                        lines += 1
    if not lines:
        out.unlink()
    return lines


def merge_reports(reports: list[dict]) -> dict[str, Any]:
    """One stage report from its shards' reports (counts and usage summed)."""
    counts: dict[str, Any] = {"read": 0, "kept": 0, "rows": 0, "rejected": {}, "failed": {}}
    usage: dict[str, Any] = {}
    answered = None
    for report in reports:
        c = report.get("counts", {})
        for key in ("read", "kept", "rows"):
            counts[key] += c.get(key, 0) or 0
        for key in ("rejected", "failed"):
            for reason, n in (c.get(key) or {}).items():
                counts[key][reason] = counts[key].get(reason, 0) + n
        for key, value in (report.get("usage") or {}).items():
            if isinstance(value, (int, float)):
                usage[key] = usage.get(key, 0) + value
        if "answered" in report:
            answered = (answered or 0) + report["answered"]
    merged: dict[str, Any] = {"counts": counts}
    for key in ("kind", "multimodal"):
        if reports and key in reports[0]:
            merged[key] = reports[0][key]
    details = [r["details"] for r in reports if "details" in r]
    if details:
        merged["details"] = details[0] if len(details) == 1 else merge_details(details)
    if usage:
        merged["usage"] = usage
    if answered is not None:
        merged["answered"] = answered
    return merged


def merge_details(parts: list[Any]) -> Any:
    """A stage's own report figures over its shards: counts (ints) summed, mappings merged key by key,
    anything else kept when every shard agrees (the gate, a config value) and left out when they differ
    (a per-shard ratio is no ratio of the whole: recompute it from the summed counts)."""
    present = [p for p in parts if p is not None]
    if not present:
        return None
    if all(isinstance(p, dict) for p in present):
        keys = list(dict.fromkeys(k for p in present for k in p))
        merged = {}
        for key in keys:
            value = merge_details([p.get(key) for p in present if key in p])
            if value is not None:
                merged[key] = value
        return merged
    if all(isinstance(p, int) and not isinstance(p, bool) for p in present):
        return sum(present)
    return present[0] if all(p == present[0] for p in present) else None


def assemble(shard_paths: list[Path], out: Path, report: dict[str, Any]) -> None:
    """Shards → the stage's output folder at `out` (replacing an older one), in input order."""
    with OutputFolder(out, overwrite=True) as folder:
        if len(shard_paths) == 1:
            # one shard is the output: move it in (its report is replaced by the stage's)
            (folder.path / MARKER).unlink()  # the shard brings its own
            folder.path.rmdir()
            shutil.copytree(shard_paths[0], folder.path, copy_function=_link_or_copy)
            (folder.path / POSITIONS).unlink(missing_ok=True)
        else:
            _merge_datasets(shard_paths, folder.path)
            _concat_logs([p / REJECTS for p in shard_paths], folder.path / REJECTS)
            _concat_logs([p / FAILURES for p in shard_paths], folder.path / FAILURES)
        # unlinked, not overwritten: a moved-in shard's files are hard links, and the shard's own report must
        # stay as its marker recorded it
        (folder.path / USAGE).unlink(missing_ok=True)
        (folder.path / REPORT).unlink(missing_ok=True)
        if report.get("usage"):
            folder.write_json(USAGE, report["usage"])
        folder.write_json(REPORT, report)


def _link_or_copy(src: str, dst: str) -> None:
    # a hard link is instant and the shard folder is deleted afterwards; copy across filesystems
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _merge_datasets(shard_paths: list[Path], target: Path) -> None:
    import numpy as np
    from datasets import concatenate_datasets, load_from_disk

    from synth.data import quiet_datasets

    with quiet_datasets():
        parts = [load_from_disk(str(p)) for p in shard_paths]
        merged = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        position_files = [p / POSITIONS for p in shard_paths]
        present = [f.is_file() for f in position_files]
        if any(present) and not all(present):  # the order would silently change: refuse instead
            missing = position_files[present.index(False)]
            raise SynthError(f"{missing} is missing; delete {missing.parent} and its .done marker, then run again")
        if len(merged) and all(present):
            positions = np.concatenate([np.load(f) for f in position_files])
            if len(positions) != len(merged):
                raise SynthError(f"{shard_paths[0].parent}: the shards' {POSITIONS} do not match their rows; "
                                 f"delete {shard_paths[0].parent} and run again")
            merged = merged.select(np.argsort(positions, kind="stable"))
        save(merged, target)
