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
        self.answered = 0  # requests that came back usable (to tell "all failed" from "some failed")

    def format_input(self, record: dict) -> ChatRequest | Rejected:
        raise NotImplementedError

    def format_output(self, record: dict, completion: Completion) -> Result:
        raise NotImplementedError

    def passes_through(self, record: dict) -> bool:
        """Records that need no request and go on unchanged (e.g. already answered)."""
        return False

    def run(self, records: Iterable[dict]) -> Iterator[dict]:
        for batch in batched(records, self.batch_size):
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
                if completion.ok:
                    self.answered += 1
                    result = self.format_output(record, completion)
                else:
                    result = failure_of(completion)
                yield from self.account(record, result)


def check_not_all_failed(stage: Stage, written: int | None = None) -> None:
    """End a command whose LLM work produced nothing because requests failed: every request failed, or
    (with `written`) nothing was written and some requests failed. Call it inside the `OutputFolder` block,
    so nothing is written; the error names the reasons and the first failure."""
    failed = stage.stats.failures
    answered = getattr(stage, "answered", 0)
    if not failed or (answered and (written is None or written > 0)):
        return
    reasons = ", ".join(f"{k}: {v}" for k, v in stage.stats.failed.most_common())
    first = stage.failures.first
    example = f"; first: record {first['id']}: {first['detail']}" if first else ""
    what = "every LLM request failed" if not answered else "nothing was written and LLM requests failed"
    raise SynthError(
        f"{stage.name}: {what} ({failed:,}; {reasons}){example}; "
        "check the server (--base-url), the model name and the API key, then rerun (failed requests are retried)"
    )
