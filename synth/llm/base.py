"""The one backend interface every generating feature calls.

A batch of `ChatRequest`s goes in, one `Completion` per request comes out, in the same order. A request
that could not be served (after retries) comes back with `error` set: it is a recorded failure, never an
exception and never a silent drop.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from synth.records import Message
from synth.stages import Rejected, Stage


class ChatRequest(BaseModel):
    """One chat request. Images go as ``{"type": "image"}`` parts in `messages` plus `images` in order."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    messages: list[Message]
    images: list[Any] = Field(default_factory=list)
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    n: int = 1
    seed: int | None = None
    # Structured output: the reply must validate against this pydantic model.
    schema_model: Any = None
    # Caller's key (e.g. record id); echoed in the completion to match results by id, not position.
    key: str | None = None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Completion(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    key: str | None = None
    texts: list[str] = Field(default_factory=list)
    finish_reasons: list[str] = Field(default_factory=list)
    # Validated objects (instances of request.schema_model), one per text, when a schema was given.
    parsed: list[Any] | None = None
    usage: Usage = Field(default_factory=Usage)
    cached: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""


@dataclass
class UsageTotals:
    """What a command spent; printed at the end and stored in the output's metadata."""

    requests: int = 0
    cached: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "cached": self.cached,
            "retries": self.retries,
            "failures": self.failures,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": self.cost,
        }


def run_sync(make_coroutine):
    """Run a coroutine to the end from sync code, also when called inside a running loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coroutine())
    # Inside a running loop: run in a helper thread with its own loop.
    result: list[Any] = []
    error: list[BaseException] = []

    def target():
        try:
            result.append(asyncio.run(make_coroutine()))
        except BaseException as e:  # re-raised below in the caller's thread
            error.append(e)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


class Backend(ABC):
    """Implement `acomplete`; `complete` is the sync wrapper the CLI uses."""

    model_name: str = "unknown"
    #: whether the model takes images (otherwise callers describe the image in text)
    supports_images: bool = False

    def __init__(self) -> None:
        self.usage = UsageTotals()

    @abstractmethod
    async def acomplete(self, requests: Sequence[ChatRequest], progress=None) -> list[Completion]:
        """Serve all requests; `progress(completion)` is called as each one finishes."""

    def complete(self, requests: Sequence[ChatRequest], progress=None) -> list[Completion]:
        return run_sync(lambda: self.acomplete(requests, progress))

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to release
        """Release connections/models. Safe to call twice."""


class LLMStage(Stage):
    """A stage that asks the LLM once per record.

    Subclasses implement `format_input(record) -> ChatRequest | Rejected` and
    `format_output(record, completion) -> dict | Rejected`; both are testable without a backend.
    Records are sent in batches of `batch_size` so the backend can work on them concurrently.
    """

    batch_size: ClassVar[int] = 256

    def __init__(self, backend: Backend, config=None, **overrides):
        super().__init__(config, **overrides)
        self.backend = backend

    def format_input(self, record: dict) -> ChatRequest | Rejected:
        raise NotImplementedError

    def format_output(self, record: dict, completion: Completion) -> dict | Rejected:
        raise NotImplementedError

    def run(self, records: Iterable[dict]) -> Iterator[dict]:
        batch: list[dict] = []
        for record in records:
            batch.append(record)
            if len(batch) >= self.batch_size:
                yield from self._run_batch(batch)
                batch = []
        if batch:
            yield from self._run_batch(batch)

    def _run_batch(self, batch: list[dict]) -> Iterator[dict]:
        requests, waiting = [], []
        for record in batch:
            request = self.format_input(record)
            if isinstance(request, Rejected):
                self._account(record, request)
            else:
                requests.append(request)
                waiting.append(record)
        completions = self.backend.complete(requests) if requests else []
        for record, completion in zip(waiting, completions, strict=True):
            if not completion.ok:
                result: dict | Rejected = Rejected("llm_failure", completion.error or "")
            else:
                result = self.format_output(record, completion)
            out = self._account(record, result)
            if out is not None:
                yield out
