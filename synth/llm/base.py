"""The one backend interface every generating feature calls.

A batch of `ChatRequest`s goes in, one `Completion` per request comes out, in the same order. A request
that could not be served (after retries) comes back with `error` set: it is a recorded failure, never an
exception and never a silent drop. The one exception is an endpoint that cannot serve anything at all
(wrong URL, key or model, server down): then the call raises `synth.errors.BackendUnavailable`.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from synth.records import Message


class ChatRequest(BaseModel):
    """One chat request. Images go as ``{"type": "image"}`` parts in `messages` plus `images` in order."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    messages: list[Message]
    images: list[Any] = Field(default_factory=list)
    temperature: float | None = None
    top_p: float | None = None
    # OpenAI's presence penalty; sent only by backends with `supports_presence_penalty` (others have none)
    presence_penalty: float | None = None
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
    #: why the request failed, for people (None when it succeeded)
    error: str | None = None
    #: the same, for counting: "connection", "timeout", "http_<status>" (e.g. "http_500", "http_400"),
    #: "bad_response" (body not JSON / not a chat completion), "no_choices", "unparseable" (structured
    #: output still invalid after re-asks), "invalid_request" (e.g. unreadable image), "generation"
    #: (local model error), "incomplete" (fewer samples than asked), "internal" (a bug)
    error_kind: str | None = None

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


async def gather_or_cancel(tasks: Sequence[asyncio.Future]) -> None:
    """Await every task; when one fails (or we are cancelled), cancel the others now and re-raise."""
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


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
    #: whether requests' `presence_penalty` is applied (the OpenAI-compatible API has it; transformers has not)
    supports_presence_penalty: bool = False

    def __init__(self) -> None:
        self.usage = UsageTotals()

    @abstractmethod
    async def acomplete(self, requests: Sequence[ChatRequest], progress=None) -> list[Completion]:
        """Serve all requests; `progress(completion)` is called as each one finishes."""

    def complete(self, requests: Sequence[ChatRequest], progress=None) -> list[Completion]:
        return run_sync(lambda: self.acomplete(requests, progress))

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to release
        """Release connections/models. Safe to call twice."""
