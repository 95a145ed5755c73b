"""The LLM task: a stage that asks the LLM once per record.

Subclasses implement ``format_input(record) -> ChatRequest | Rejected`` and
``format_output(record, completion) -> record | [records] | Rejected | Failed``; both are testable without a
backend. Records go to the backend in batches of `batch_size` so it can serve them concurrently. A
completion with an error (the backend failed after its retries, or the reply stayed unparseable after
re-asks) is a `Failed`, not a `Rejected`: it lands in ``failures.jsonl`` and the next run retries it.
Backends (`synth.llm`) know nothing of stages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import ClassVar

from synth.errors import SynthError
from synth.llm.base import Backend, ChatRequest, Completion
from synth.pipeline.stage import Failed, Rejected, Result, Stage, batched


def failure_of(completion: Completion) -> Failed:
    """A failed completion as a counted failure (its kind when the backend says, else ``llm_error``)."""
    kind = getattr(completion, "error_kind", None) or "llm_error"
    return Failed(kind, completion.error or "the request failed")


class LLMTask(Stage):
    batch_size: ClassVar[int] = 256

    def __init__(self, backend: Backend, config=None, progress: Callable | None = None, **overrides):
        super().__init__(config, **overrides)
        self.backend = backend
        self.progress = progress
        # requests whose reply came back usable (not a `Failed`): tells "all failed" from "some failed"
        self.answered = 0

    def format_input(self, record: dict) -> ChatRequest | Rejected:
        raise NotImplementedError

    def format_output(self, record: dict, completion: Completion) -> Result:
        raise NotImplementedError

    def passes_through(self, record: dict) -> bool:
        """Records that need no request and go on unchanged (e.g. already answered)."""
        return False

    def run(self, records: Iterable[dict]) -> Iterator[dict]:
        # A batch-mode backend takes a whole shard in one call (one batch file, one wait), not chunks.
        size = max(self.batch_size, getattr(self.backend, "preferred_call_size", None) or 0)
        for batch in batched(records, size):
            yield from self.run_batch(batch)

    def run_batch(self, batch: list[dict]) -> Iterator[dict]:
        requests: list[ChatRequest] = []
        plan: list[tuple[dict, int | None | Rejected]] = []
        for record in batch:
            if self.passes_through(record):
                plan.append((record, None))
                continue
            request = self.format_input(record)
            if isinstance(request, Rejected):
                plan.append((record, request))
                if self.progress:
                    self.progress(None)
                continue
            plan.append((record, len(requests)))
            requests.append(request)
        completions = self.backend.complete(requests, progress=self.progress) if requests else []
        for record, step in plan:
            if step is None:
                yield from self.account(record, record)
            elif isinstance(step, Rejected):
                self.account(record, step)
            else:
                completion = completions[step]
                result = self.format_output(record, completion) if completion.ok else failure_of(completion)
                self.answered += not isinstance(result, Failed)
                yield from self.account(record, result)


def all_failed(failed: dict[str, int], answered: int, rejected: int = 0, written: int | None = None) -> str | None:
    """Why a stage's LLM work ends the command, or None when it stands. Failures (backend errors, replies
    unparseable after re-asks) are not rejections (decisions about usable replies): the work fails when
    every request failed (none came back usable), or, with `written`, when nothing was written and
    failures were the only outcome. Replies that came back and were rejected never make it fail."""
    total = sum(failed.values())
    if not total:
        return None
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(failed.items(), key=lambda kv: (-kv[1], kv[0])))
    if not answered:
        return f"every LLM request failed ({total:,}; {reasons})"
    if written == 0 and not rejected:
        return f"nothing was written and LLM requests failed ({total:,}; {reasons})"
    return None


def check_not_all_failed(stage: Stage, written: int | None = None) -> None:
    """End a command whose LLM work produced nothing because requests failed (see `all_failed`). Call it
    inside the `OutputFolder` block, so nothing is written; the error names the reasons and the first
    failure."""
    problem = all_failed(stage.stats.failed, getattr(stage, "answered", 0), sum(stage.stats.dropped.values()), written)
    if problem is None:
        return
    first = stage.failures.first
    example = f"; first: record {first['id']}: {first['detail']}" if first else ""
    raise SynthError(
        f"{stage.name}: {problem}{example}; "
        "check the server (--base-url), the model name and the API key, then rerun (failed requests are retried)"
    )
