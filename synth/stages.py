"""The stage contract every step of a pipeline follows.

A stage has a pydantic config (unknown keys rejected, so a typo in a recipe fails loudly) and turns an
iterable of records (row dicts in the layout of `synth.records`, ``meta`` as a dict) into another.
A filter only answers "keep or drop, and why"; the base class does batching, counting and writing
rejects. Counts end up in the run manifest / end-of-run table.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict


class Rejected(NamedTuple):
    """Why a record was dropped. `reason` is a short stable key (counted); `detail` is free text."""

    reason: str
    detail: str = ""


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class StageStats:
    seen: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "kept": self.kept, "dropped": dict(self.dropped)}


class RejectsWriter:
    """Appends dropped records (id, stage, reason, detail) as JSONL; opened lazily, so no file if none."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._file = None
        self.count = 0

    def write(self, record: dict, stage: str, rejected: Rejected) -> None:
        self.count += 1
        if self.path is None:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", encoding="utf-8")
        entry = {"id": record.get("id"), "stage": stage, "reason": rejected.reason, "detail": rejected.detail}
        self._file.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Stage:
    """Base for all stages. Subclasses set `name`, `Config`, and implement `process` (or override `run`)."""

    name: ClassVar[str] = "stage"
    Config: ClassVar[type[StageConfig]] = StageConfig

    def __init__(self, config: StageConfig | dict | None = None, **overrides: Any):
        if config is None or isinstance(config, dict):
            config = self.Config(**{**(config or {}), **overrides})
        elif overrides:
            config = config.model_copy(update=overrides)
        self.config = config
        self.stats = StageStats()
        self.rejects = RejectsWriter(None)

    def process(self, record: dict) -> dict | Rejected:
        raise NotImplementedError

    def _account(self, record: dict, result: dict | Rejected) -> dict | None:
        self.stats.seen += 1
        if isinstance(result, Rejected):
            self.stats.dropped[result.reason] += 1
            self.rejects.write(record, self.name, result)
            return None
        self.stats.kept += 1
        return result

    def run(self, records: Iterable[dict]) -> Iterator[dict]:
        for record in records:
            out = self._account(record, self.process(record))
            if out is not None:
                yield out


class Filter(Stage):
    """A stage that keeps or drops records. Implement `check` (one) or `check_batch` (many, e.g. a model)."""

    batch_size: ClassVar[int] = 1

    def check(self, record: dict) -> Rejected | None:
        raise NotImplementedError

    def check_batch(self, records: Sequence[dict]) -> list[Rejected | None]:
        return [self.check(r) for r in records]

    def run(self, records: Iterable[dict]) -> Iterator[dict]:
        batch: list[dict] = []
        for record in records:
            batch.append(record)
            if len(batch) >= self.batch_size:
                yield from self._flush(batch)
                batch = []
        if batch:
            yield from self._flush(batch)

    def _flush(self, batch: list[dict]) -> Iterator[dict]:
        for record, verdict in zip(batch, self.check_batch(batch), strict=True):
            out = self._account(record, verdict if verdict is not None else record)
            if out is not None:
                yield out


def run_stages(stages: Sequence[Stage], records: Iterable[dict], rejects_path: str | Path | None = None) -> Iterator[dict]:
    """Chain stages lazily; all of them write rejects to one file (each line names its stage)."""
    writer = RejectsWriter(rejects_path)
    for stage in stages:
        stage.rejects = writer
        records = stage.run(records)
    try:
        yield from records
    finally:
        writer.close()
