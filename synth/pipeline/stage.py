"""The stage contract every engine follows: adapt, generate, self-instruct, evolution, filters, dedup, mix, prefs.

A stage has a pydantic config (unknown keys rejected, so a typo in a recipe fails loudly), declares the
columns it reads and writes, and turns an iterable of records into another: ``run(records) -> records``.

- `Map`: changes records (``process(record) -> record | [records] | Rejected | Failed``).
- `Filter`: only answers keep or drop, and why (``check(record) -> Rejected | None``); it never changes a
  record — the base class passes the original through.
- `Aggregate`: needs the whole input before it can answer (dedup, a top fraction); ``needs_all_input``.
- `synth.pipeline.llm_task.LLMTask`: asks an LLM once per record (``format_input`` / ``format_output``).

**Rejected** is a stage's decision about good output (counted by reason, written to ``rejects.jsonl``).
**Failed** is not a decision: the backend erred or the reply stayed unparseable after re-asks. It is
counted apart, written to ``failures.jsonl``, never cached as final, and retried by the next run.
The base class does batching, counting and the writing of both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict

from synth.data.writer import RecordLog


class Rejected(NamedTuple):
    """Why a record was dropped. `reason` is a short stable key (counted); `detail` is free text."""

    reason: str
    detail: str = ""


class Failed(NamedTuple):
    """Why a record could not be processed (backend error, unparseable reply): retried by the next run."""

    reason: str
    detail: str = ""


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class StageStats:
    seen: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "kept": self.kept, "dropped": dict(self.dropped), "failed": dict(self.failed)}

    @property
    def failures(self) -> int:
        return sum(self.failed.values())


Result = dict | list | Rejected | Failed

#: the key under which a record carries its input position through a run's stages (set by the runner,
#: copied by `Stage.account` onto every record made from it, removed before writing): row order travels
#: with the records
POSITION = "__position__"


class Stage:
    """Base for all stages. Subclasses set `name`, `Config`, `reads`, `writes` and implement `run`
    (or `process` / `check` in the subclasses below)."""

    name: ClassVar[str] = "stage"
    Config: ClassVar[type[StageConfig]] = StageConfig
    #: columns the stage reads and writes (documentation, and checked by the recipe runner)
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    #: True when the stage must see its whole input before it can answer (dedup, top fraction)
    needs_all_input: ClassVar[bool] = False

    def __init__(self, config: StageConfig | dict | None = None, **overrides: Any):
        if config is None or isinstance(config, dict):
            config = self.Config(**{**(config or {}), **overrides})
        elif overrides:
            config = config.model_copy(update=overrides)
        self.config = config
        self.stats = StageStats()
        self.rejects = RecordLog(None)
        self.failures = RecordLog(None)

    def run(self, records: Iterable[dict]) -> Iterator[dict]:
        raise NotImplementedError

    def reject(self, record: dict, verdict: Rejected, **extra: Any) -> None:
        self.stats.dropped[verdict.reason] += 1
        self.rejects.write(record.get("id"), self.name, verdict.reason, verdict.detail, **extra)

    def fail(self, record: dict, failure: Failed, **extra: Any) -> None:
        self.stats.failed[failure.reason] += 1
        self.failures.write(record.get("id"), self.name, failure.reason, failure.detail, **extra)

    def account(self, record: dict, result: Result) -> list[dict]:
        """Count one input's outcome; the records to pass on (none for a reject or a failure)."""
        self.stats.seen += 1
        if isinstance(result, Rejected):
            self.reject(record, result)
            return []
        if isinstance(result, Failed):
            self.fail(record, result)
            return []
        self.stats.kept += 1
        out = result if isinstance(result, list) else [result]
        if POSITION in record:
            for made in out:
                made.setdefault(POSITION, record[POSITION])
        return out


class Map(Stage):
    """A stage that changes records one at a time."""

    def process(self, record: dict) -> Result:
        raise NotImplementedError

    def run(self, records: Iterable[dict]) -> Iterator[dict]:
        for record in records:
            yield from self.account(record, self.process(record))


class Filter(Stage):
    """Keeps or drops records. Implement `check` (one) or `check_batch` (many, e.g. a model or an LLM).
    A verdict may be a `Failed` (the filter could not decide: e.g. the judge's request failed)."""

    batch_size: ClassVar[int] = 1

    def check(self, record: dict) -> Rejected | Failed | None:
        raise NotImplementedError

    def check_batch(self, records: Sequence[dict]) -> list[Rejected | Failed | None]:
        return [self.check(r) for r in records]

    def run(self, records: Iterable[dict]) -> Iterator[dict]:
        for batch in batched(records, self.batch_size):
            verdicts = self.check_batch(batch)
            if len(verdicts) != len(batch):
                raise RuntimeError(f"{self.name}: {len(verdicts)} verdicts for {len(batch)} records")
            for record, verdict in zip(batch, verdicts):
                yield from self.account(record, record if verdict is None else verdict)


class Aggregate(Stage):
    """A stage that needs its whole input (it may still stream its output)."""

    needs_all_input: ClassVar[bool] = True


def batched(records: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_stages(
    stages: Sequence[Stage],
    records: Iterable[dict],
    rejects: RecordLog | None = None,
    failures: RecordLog | None = None,
) -> Iterator[dict]:
    """Chain stages lazily; they share one rejects log and one failures log (each line names its stage)."""
    for stage in stages:
        if rejects is not None:
            stage.rejects = rejects
        if failures is not None:
            stage.failures = failures
        records = stage.run(records)
    yield from records
