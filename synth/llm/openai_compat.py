"""Backend for any OpenAI-compatible server: OpenAI, vLLM, SGLang, Ollama, llama.cpp server, TGI.

How a batch is served:

- a fixed pool of `concurrency` workers takes requests in order (memory does not grow with the batch);
- each HTTP call picks the least-busy replica (several `base_urls`); a replica that keeps failing is set
  aside for `replica_cooldown` seconds while another one can serve;
- a circuit breaker for an endpoint that cannot serve at all (connection refused, unknown host, 401/403,
  404, an HTML or non-JSON body): `breaker_failures` such failures in a row before any success take the
  replica out for good; with every replica out the call raises `BackendUnavailable` with one line saying
  what to check — within seconds, instead of retrying every record. Transient failures (429, 5xx,
  timeouts) are retried; if the first `breaker_requests` requests all fail even so, the run stops too;
- optional requests/tokens-per-minute limits (token buckets; tokens estimated before, corrected after);
- retries with exponential backoff and jitter on 429, 5xx, timeouts, dropped connections and malformed
  bodies, honouring ``Retry-After`` (seconds or HTTP-date) — the SDK's own retries are off so every retry
  is counted;
- `n` > 1 (topped up with extra calls when a server ignores `n`), images as data URLs, structured output
  (``response_format`` + local validation, repair and re-ask);
- ``max_completion_tokens`` for OpenAI itself (its reasoning models reject ``max_tokens``), ``max_tokens``
  for other servers; a server that asks for the other name (HTTP 400) gets it from then on;
- short of an unusable endpoint, each request gets one `Completion`; a failure has `error` set with its
  reason and `error_kind` with its class.

The API key comes only from the environment (``OPENAI_API_KEY`` by default) and is never stored in the
config, so config dumps, caches and logs cannot leak it.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator

from synth.errors import BackendUnavailable, SynthError, check_key_env_name, redact, register_key_env
from synth.llm.base import Backend, ChatRequest, Completion, Usage, gather_or_cancel, run_sync
from synth.llm.images import image_data_url
from synth.llm.structured import parse_structured, reask_messages, response_format
from synth.llm.usage import Prices
from synth.records import Message

log = logging.getLogger(__name__)

OPENAI_URL = "https://api.openai.com/v1"
NO_KEY = "sk-no-key-needed"  # local servers ignore the key, but the SDK wants one
RETRY_STATUSES = {408, 409, 425, 429}
AUTH_STATUSES = {401, 403}  # bad or missing key: no request can succeed
ROUTE_STATUSES = {404, 405}  # wrong base URL or model name


class OpenAIConfig(BaseModel):
    """Options of the OpenAI-compatible backend. The key is read from the env var `api_key_env`."""

    model_config = ConfigDict(extra="forbid")
    model: str
    base_urls: list[str] = Field(
        default_factory=list, description="replicas of one model; default $OPENAI_BASE_URL (comma-separated) or OpenAI")
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = Field(16, ge=1)
    rpm: float | None = Field(None, gt=0, description="requests per minute limit")
    tpm: float | None = Field(None, gt=0, description="tokens per minute limit")
    max_retries: int = Field(5, ge=0)
    timeout: float = Field(120.0, gt=0, description="seconds per HTTP call")
    backoff_base: float = Field(0.5, ge=0)
    backoff_max: float = Field(20.0, ge=0)
    max_retry_after: float = Field(120.0, ge=0, description="cap on a server's Retry-After")
    max_image_side: int = Field(1024, ge=16)
    max_reask: int = Field(2, ge=0, description="structured output: re-asks with the validation error")
    json_schema: bool = Field(True, description="send response_format json_schema when a schema is set")
    prices: Prices | None = None
    replica_failures: int = Field(3, ge=1, description="consecutive failures before a replica is set aside")
    replica_cooldown: float = Field(30.0, ge=0)
    breaker_failures: int = Field(
        3, ge=1, description="unusable-endpoint failures in a row, before any success, that take a replica out")
    breaker_requests: int = Field(
        3, ge=1, description="stop the run when this many requests failed after their retries before any success")
    token_param: Literal["auto", "max_tokens", "max_completion_tokens"] = Field(
        "auto", description="field for the token limit; auto: max_completion_tokens for api.openai.com")
    supports_images: bool = True
    # Batch mode (synth.llm.batch): requests go out as batch files at the provider's batch price.
    batch: bool = Field(False, description="send each call's requests as batch files (about half price, slower)")
    batch_mode: Literal["api", "file"] = Field(
        "api", description="api: the server's /v1/batches; file: write JSONL for `vllm run-batch`, read its output")
    batch_max_requests: int = Field(50_000, ge=1, description="requests per batch file (the provider's limit)")
    batch_max_bytes: int = Field(200_000_000, ge=1024, description="size of one batch file (the provider's limit)")
    batch_poll_interval: float = Field(30.0, gt=0, description="seconds between status checks of running batches")
    batch_completion_window: str = "24h"
    batch_prices: Prices | None = Field(None, description="price per 1M tokens in batch mode (default: prices)")
    batch_retry: Literal["next_run", "online"] = Field(
        "next_run", description="requests a batch failed or expired: next_run retries them then; online: now")

    @field_validator("api_key_env")
    @classmethod
    def _key_env_is_a_name(cls, value: str) -> str:
        check_key_env_name(value)  # a key pasted here would be stored in the run folder and sent as a name
        register_key_env(value)  # its value is redacted from everything synth writes or prints
        return value


class _Retryable(Exception):
    """One HTTP call failed; another try may work.

    `kind` is the `Completion.error_kind` if the request ends on it. `unusable` = (class, one-line
    diagnosis) for failures that, repeated before any success, mean the endpoint cannot serve at all.
    `refused` (401/403/404): once the replica has served, retrying the same request cannot help.
    """

    def __init__(self, reason: str, retry_after: float | None = None, replica_fault: bool = True,
                 kind: str = "connection", unusable: tuple[str, str] | None = None, refused: bool = False):
        super().__init__(redact(reason))  # a server's reply may repeat the key; so may a URL with a password
        if unusable is not None:
            unusable = (unusable[0], redact(unusable[1]))
        self.retry_after = retry_after
        self.replica_fault = replica_fault
        self.kind = kind
        self.unusable = unusable
        self.refused = refused


class _ItemFailed(Exception):
    """This request cannot be served (bad request, unreadable image...): record it, don't retry."""

    def __init__(self, reason: str, kind: str = "invalid_request"):
        super().__init__(redact(reason))
        self.kind = kind


@dataclass(eq=False)
class _Replica:
    url: str
    token_param: str = "max_tokens"
    token_param_switched: bool = False
    in_flight: int = 0
    failures: int = 0  # consecutive
    cooldown_until: float = 0.0
    not_before: float = 0.0  # from Retry-After
    served: bool = False  # at least one call succeeded: later failures are not a misconfiguration
    streak_class: str | None = None  # circuit breaker: the unusable-endpoint failure repeating
    streak: int = 0
    out: str | None = None  # why the breaker took it out (for good)


class _Bucket:
    """Token bucket that allows going into debt (a big request waits for a full bucket, not forever)."""

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)  # at most one second's worth at once: smooth, never over the limit
        self.level = self.capacity
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_time(self, amount: float) -> float:
        self._refill()
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, amount: float) -> None:
        self.level -= amount

    def give_back(self, amount: float) -> None:
        self.level = min(self.capacity, self.level + amount)


class _LoopState:
    """What must belong to one event loop: HTTP clients, the concurrency semaphore, the limiter lock."""

    def __init__(self, loop, clients: dict[str, Any], concurrency: int):
        self.loop = loop
        self.clients = clients
        self.semaphore = asyncio.Semaphore(concurrency)
        self.limit_lock = asyncio.Lock()


def parse_retry_after(headers) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP-date)."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIBackend(Backend):
    supports_images = True
    supports_presence_penalty = True

    def __init__(self, config: OpenAIConfig | None = None, **options: Any):
        super().__init__()
        self.config = config or OpenAIConfig(**options)
        self.model_name = self.config.model
        self.supports_images = self.config.supports_images
        urls = self.config.base_urls or (os.environ.get("OPENAI_BASE_URL") or OPENAI_URL).split(",")
        urls = [u.strip() for u in urls if u.strip()]
        self.replicas = [_Replica(url.rstrip("/")) for url in urls]
        for replica in self.replicas:
            replica.token_param = token_limit_field(replica.url, self.config.token_param)
        if not os.environ.get(self.config.api_key_env) and any(_needs_key(r.url) for r in self.replicas):
            raise SynthError(f"no API key: set {self.config.api_key_env} (or use --base-url for a local "
                             "server, or --backend local)")
        self._state: _LoopState | None = None
        self._state_lock = threading.Lock()
        self._send_schema = self.config.json_schema
        self._served = False  # any call succeeded, on any replica
        self._unserved_failures = 0  # requests that failed after their retries before any success
        self._unavailable: tuple[str, str] | None = None  # (message, kind) once the breaker tripped
        key = os.environ.get(self.config.api_key_env) or NO_KEY
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                         "Accept": "application/json"}
        self._rpm = _Bucket(self.config.rpm) if self.config.rpm else None
        self._tpm = _Bucket(self.config.tpm) if self.config.tpm else None

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model_name!r}, base_urls={[redact(r.url) for r in self.replicas]})"

    # ------------------------------------------------------------ clients

    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._state
        if state is not None and state.loop is loop:
            return state
        with self._state_lock:
            if self._state is None or self._state.loop is not loop:
                self._state = _LoopState(loop, {r.url: self._client(r.url) for r in self.replicas},
                                         self.config.concurrency)
            return self._state

    def _client(self, url: str):
        import openai

        limits_type = type(openai.DEFAULT_CONNECTION_LIMITS)
        size = self.config.concurrency
        http = openai.DefaultAsyncHttpxClient(
            limits=limits_type(max_connections=size, max_keepalive_connections=size),
            timeout=self.config.timeout,
        )
        return openai.AsyncOpenAI(
            base_url=url,
            api_key=os.environ.get(self.config.api_key_env) or NO_KEY,
            max_retries=0,  # ours, counted and honouring Retry-After
            timeout=self.config.timeout,
            http_client=http,
        )

    async def aclose(self) -> None:
        """Close this event loop's connections (async users call it when done)."""
        state = self._state
        if state is not None and state.loop is asyncio.get_running_loop():
            self._state = None
            for client in state.clients.values():
                await client.close()

    def close(self) -> None:
        state, self._state = self._state, None
        if state is None:
            return
        loop = state.loop
        if not loop.is_closed() and not loop.is_running():
            for client in state.clients.values():
                loop.run_until_complete(client.close())

    def complete(self, requests: Sequence[ChatRequest], progress=None) -> list[Completion]:
        """Sync wrapper; closes this call's connections before its event loop ends."""

        async def run():
            try:
                return await self.acomplete(requests, progress)
            finally:
                await self.aclose()

        return run_sync(run)

    # ------------------------------------------------------------ batch

    async def acomplete(self, requests: Sequence[ChatRequest], progress=None) -> list[Completion]:
        """All completions, or `BackendUnavailable` when the endpoint turned out unusable."""
        if self._unavailable is not None and requests:
            raise self._unavailable_error()
        state = self._loop_state()
        results: list[Completion | None] = [None] * len(requests)
        order = iter(range(len(requests)))

        async def worker():
            for i in order:  # shared iterator: each worker takes the next request
                completion = await self._serve(state, requests[i])
                results[i] = completion
                if progress is not None:
                    progress(completion)

        workers = min(self.config.concurrency, len(requests))
        # The breaker tripping (or a cancel) stops the other workers too, now.
        await gather_or_cancel([asyncio.ensure_future(worker()) for _ in range(workers)])
        return results  # type: ignore[return-value]

    async def _serve(self, state: _LoopState, request: ChatRequest) -> Completion:
        usage = Usage()
        try:
            messages = self._messages(request.messages, request.images)
            texts, finishes = await self._sample(state, request, messages, request.n, usage)
            parsed, error = None, None
            if request.schema_model is not None:
                parsed, error = await self._structured(state, request, texts, finishes, usage)
        except _ItemFailed as e:
            return self._failed(request, str(e), usage, e.kind)
        except (asyncio.CancelledError, BackendUnavailable):
            raise
        except Exception as e:  # a bug or an unexpected server reply must not sink the batch
            log.exception("unexpected error serving a request")
            return self._failed(request, f"unexpected error: {type(e).__name__}: {e}", usage, "internal")
        if error:
            with self.usage.lock:
                self.usage.failures += 1
        return Completion(key=request.key, texts=texts, finish_reasons=finishes, parsed=parsed, usage=usage,
                          error=error, error_kind="unparseable" if error else None)

    def _failed(self, request: ChatRequest, reason: str, usage: Usage, kind: str) -> Completion:
        with self.usage.lock:
            self.usage.failures += 1
        return Completion(key=request.key, usage=usage, error=redact(reason), error_kind=kind)

    async def _sample(self, state, request: ChatRequest, messages: list[dict], n: int,
                      usage: Usage) -> tuple[list[str], list[str]]:
        """`n` choices; servers that ignore `n` get extra calls for the rest."""
        texts: list[str] = []
        finishes: list[str] = []
        while len(texts) < n:
            seed = request.seed + len(texts) if (request.seed is not None and texts) else request.seed
            choices = await self._call(state, request, messages, n - len(texts), seed, usage)
            if not choices:
                raise _ItemFailed("server returned no choices", "no_choices")
            for text, finish in choices[: n - len(texts)]:
                texts.append(text)
                finishes.append(finish)
        return texts, finishes

    async def _structured(self, state, request: ChatRequest, texts: list[str], finishes: list[str],
                          usage: Usage) -> tuple[list[Any], str | None]:
        """Validate every choice; re-ask (bounded) with the validation error for the ones that fail."""
        parsed: list[Any] = []
        errors: list[str] = []
        for index, text in enumerate(texts):
            value, error = parse_structured(text, request.schema_model)
            reasks = 0
            while error is not None and reasks < self.config.max_reask:
                reasks += 1
                retry_messages = self._messages(
                    reask_messages(request.messages, text, error, request.schema_model), request.images)
                (text, finish), *_ = await self._call(state, request, retry_messages, 1, request.seed, usage)
                texts[index], finishes[index] = text, finish
                value, error = parse_structured(text, request.schema_model)
            parsed.append(value)
            if error is not None:
                errors.append(f"choice {index}: {error} (after {reasks} re-asks)")
        return parsed, ("invalid structured output: " + "; ".join(errors)) if errors else None

    # ------------------------------------------------------------ one call, with retries

    def request_params(self, request: ChatRequest, messages: list[dict], n: int, seed: int | None) -> dict[str, Any]:
        """The chat-completion body of one call, less the token limit (its field name depends on the replica)."""
        params: dict[str, Any] = {"model": self.config.model, "messages": messages}
        if n != 1:
            params["n"] = n
        for name in ("temperature", "top_p", "presence_penalty", "stop"):
            value = getattr(request, name)
            if value is not None:
                params[name] = value
        if seed is not None:
            params["seed"] = seed
        return params

    def batch_body(self, request: ChatRequest, n: int) -> dict[str, Any]:
        """The body of one batch line: what `_call` would send first to the first replica."""
        params = self.request_params(request, self._messages(request.messages, request.images), n, request.seed)
        if request.schema_model is not None and self.config.json_schema:
            params["response_format"] = response_format(request.schema_model)
        if request.max_tokens is not None:
            params[self.replicas[0].token_param] = request.max_tokens
        return params

    async def _call(self, state: _LoopState, request: ChatRequest, messages: list[dict], n: int,
                    seed: int | None, usage: Usage) -> list[tuple[str, str]]:
        params = self.request_params(request, messages, n, seed)
        estimate = self._estimate_tokens(messages, request.max_tokens, n) if self._tpm else 0
        cfg = self.config
        last_failed: _Replica | None = None
        attempt = 0
        while True:
            if self._unavailable is not None:
                raise self._unavailable_error()
            with_schema = request.schema_model is not None and self._send_schema
            if with_schema:
                params["response_format"] = response_format(request.schema_model)
            else:
                params.pop("response_format", None)
            await self._limit(state, estimate)
            replica = await self._pick(last_failed)
            params.pop("max_tokens", None)
            params.pop("max_completion_tokens", None)
            if request.max_tokens is not None:
                params[replica.token_param] = request.max_tokens
            try:
                async with state.semaphore:
                    replica.in_flight += 1
                    try:
                        data = await self._post(state.clients[replica.url], replica.url, params)
                    finally:
                        replica.in_flight -= 1
                        with self.usage.lock:
                            self.usage.requests += 1
                choices, prompt_tokens, completion_tokens = read_choices(data, replica.url)
            except _Retryable as e:
                failure: _Retryable | None = e
            except _ItemFailed as e:
                if with_schema and _rejects_schema(str(e)):
                    # This server has no structured output: validate locally only, from now on.
                    if self._send_schema:
                        log.warning("server rejected response_format json_schema; validating replies locally only")
                    self._send_schema = False
                    continue
                if request.max_tokens is not None and self._switch_token_param(replica, str(e)):
                    continue
                raise
            else:
                failure = None
            if failure is None:
                replica.failures = 0
                replica.served, replica.streak, replica.streak_class = True, 0, None
                self._served = True
                self._account(usage, prompt_tokens, completion_tokens, estimate)
                return choices
            if self._tpm is not None:
                self._tpm.give_back(estimate)
            self._breaker(replica, failure)  # may take the replica out, or raise BackendUnavailable
            if failure.refused and replica.served:
                raise _ItemFailed(str(failure), failure.kind)
            now = time.monotonic()
            if failure.replica_fault and replica.out is None:
                replica.failures += 1
                if replica.failures >= cfg.replica_failures and len(self.replicas) > 1:
                    replica.cooldown_until = now + cfg.replica_cooldown
                    replica.failures = cfg.replica_failures - 1  # one more failure after the cooldown benches it again
                    log.warning("replica %s set aside for %.0f s after repeated failures", redact(replica.url),
                                cfg.replica_cooldown)
            if attempt >= cfg.max_retries:
                self._gave_up(failure)  # raises BackendUnavailable when the first requests all failed
                raise _ItemFailed(f"{failure} (gave up after {attempt} retries)", failure.kind)
            attempt += 1
            last_failed = replica
            with self.usage.lock:
                self.usage.retries += 1
            if replica.out is not None:
                continue  # that replica is out for good: the next try goes to another one at once
            if failure.retry_after is not None:
                # The replica asked for a pause: it waits in _pick; another replica may serve meanwhile.
                replica.not_before = max(replica.not_before, now + min(failure.retry_after, cfg.max_retry_after))
            else:
                ceiling = min(cfg.backoff_max, cfg.backoff_base * 2 ** (attempt - 1))
                await asyncio.sleep(ceiling * (0.5 + random.random() / 2))

    async def _post(self, client, url: str, params: dict) -> dict:
        import openai

        http = client._client  # the httpx client we gave the SDK: its pool, limits and timeout
        errors = _http_errors(http)
        try:
            # Straight through the SDK's own HTTP client: the SDK's request building, retry plumbing and
            # error wrapping cost more CPU than the HTTP call itself (profiled: about a third of a call).
            response = await http.post(url + "/chat/completions", content=json.dumps(params).encode(),
                                       headers=self._headers)
            text = response.text
        except errors.TimeoutException as e:
            if type(e).__name__ == "ConnectTimeout":
                diagnosis = (f"no connection to {url} within {self.config.timeout:g} s: is the host reachable? "
                             "check --base-url")
                raise _Retryable(f"connect timed out after {self.config.timeout:g} s", kind="timeout",
                                 unusable=("connect", diagnosis)) from None
            raise _Retryable(f"timed out after {self.config.timeout:g} s", kind="timeout") from None
        except errors.TransportError as e:
            raise _Retryable(f"connection error: {type(e).__name__}: {_short(str(e))}",
                             kind="connection", unusable=_connect_diagnosis(e, url)) from None
        status = response.status_code
        if status >= 400:
            try:
                body: Any = json.loads(text)
            except ValueError:
                body = text
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                body = body["error"]  # as the SDK unwraps it
            e = openai.APIStatusError(f"Error code: {status} - {_short(text)}", response=response, body=body)
            said = _server_message(e)
            reason = f"HTTP {status}: {said}"
            kind = f"http_{status}"
            if status in RETRY_STATUSES or status >= 500:
                raise _Retryable(reason, parse_retry_after(response.headers), replica_fault=status != 429,
                                 kind=kind) from None
            if status in AUTH_STATUSES:
                diagnosis = f"{status} from {url}: check {self.config.api_key_env} (server said: {said})"
                raise _Retryable(reason, kind=kind, unusable=("auth", diagnosis), refused=True) from None
            if status in ROUTE_STATUSES:
                diagnosis = (f"{status} from {url}: check --base-url (it usually ends in /v1) and --model "
                             f"{self.config.model!r} (server said: {said})")
                raise _Retryable(reason, kind=kind, unusable=("route", diagnosis), refused=True) from None
            raise _ItemFailed(reason, kind) from None
        try:
            return json.loads(text)
        except ValueError:
            if _looks_like_html(text):
                diagnosis = f"{url} answered with HTML, not JSON: --base-url probably points at a web page, not the API"
            else:
                diagnosis = (f"{url} answered with a body that is not JSON ({_short(text, 60)!r}): check that "
                             "--base-url is an OpenAI-compatible API (it usually ends in /v1)")
            raise _Retryable(f"malformed response body (not JSON): {_short(text)}", kind="bad_response",
                             unusable=("not_json", diagnosis)) from None

    # ------------------------------------------------------------ circuit breaker

    def _breaker(self, replica: _Replica, failure: _Retryable) -> None:
        """Count unusable-endpoint failures in a row on a replica that never served; trip at the limit."""
        if failure.unusable is None or replica.served:
            replica.streak, replica.streak_class = 0, None
            return
        kind, diagnosis = failure.unusable
        if replica.streak_class == kind:
            replica.streak += 1
        else:
            replica.streak, replica.streak_class = 1, kind
        if replica.streak < self.config.breaker_failures or replica.out is not None:
            return
        replica.out = diagnosis
        if any(r.out is None for r in self.replicas):
            log.warning("replica taken out: %s", diagnosis)
            return
        if len(self.replicas) == 1:
            message = diagnosis
        else:
            message = f"all {len(self.replicas)} replicas are unusable: " + "; ".join(r.out or "" for r in self.replicas)
        self._trip(message, failure.kind)

    def _gave_up(self, failure: _Retryable) -> None:
        """A request failed after all its retries; if no call has ever succeeded, count it, and trip at the limit."""
        if self._served:
            return
        self._unserved_failures += 1
        if self._unserved_failures < self.config.breaker_requests:
            return
        urls = ", ".join(r.url for r in self.replicas)
        hint = {"http_429": "the server keeps rate limiting: lower --concurrency or set an rpm/tpm limit",
                "timeout": f"no reply within {self.config.timeout:g} s: the server may be overloaded or the "
                           "model too slow; lower --concurrency or raise the timeout",
                "connection": "the server drops every connection: check its logs",
                "bad_response": "its replies are not chat completions: check --base-url"}.get(
            failure.kind, "the server fails every request: check its logs")
        self._trip(f"the first {self._unserved_failures} requests to {urls} all failed, each after "
                   f"{self.config.max_retries} retries (last: {failure}): {hint}", failure.kind)

    def _trip(self, message: str, kind: str) -> None:
        if self._unavailable is None:
            self._unavailable = (message, kind)
            log.debug("LLM endpoint unusable: %s", message)
        raise self._unavailable_error()

    def _unavailable_error(self) -> BackendUnavailable:
        message, kind = self._unavailable or ("", "")
        return BackendUnavailable(message, url=", ".join(r.url for r in self.replicas), kind=kind)

    # ------------------------------------------------------------ token limit field

    def _switch_token_param(self, replica: _Replica, reason: str) -> bool:
        """A 400 asking for the other name of the token limit: use it on this replica from now on (once)."""
        lowered = reason.lower()
        if replica.token_param_switched or not reason.startswith("HTTP 400") or "max_completion_tokens" not in lowered:
            return False
        if replica.token_param == "max_completion_tokens" and not any(
                word in lowered for word in ("unrecognized", "unsupported", "unknown", "extra", "not permitted")):
            return False
        new = "max_tokens" if replica.token_param == "max_completion_tokens" else "max_completion_tokens"
        log.warning("%s rejected %s; sending %s from now on", redact(replica.url), replica.token_param, new)
        replica.token_param, replica.token_param_switched = new, True
        return True

    async def _pick(self, avoid: _Replica | None) -> _Replica:
        """Least-busy replica, not out or cooling down, preferring one other than the one that just failed."""
        replicas = [r for r in self.replicas if r.out is None] or self.replicas
        if len(replicas) == 1:
            replica = replicas[0]
        else:
            now = time.monotonic()
            ready = [r for r in replicas if r.cooldown_until <= now] or replicas
            replica = min(ready, key=lambda r: (max(0.0, r.not_before - now), r is avoid, r.in_flight))
        wait = replica.not_before - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        return replica

    async def _limit(self, state: _LoopState, estimate: float) -> None:
        if self._rpm is None and self._tpm is None:
            return
        async with state.limit_lock:  # first come, first served
            while True:
                wait = max(self._rpm.wait_time(1) if self._rpm else 0.0,
                           self._tpm.wait_time(estimate) if self._tpm else 0.0)
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            if self._rpm:
                self._rpm.take(1)
            if self._tpm:
                self._tpm.take(estimate)

    @staticmethod
    def _estimate_tokens(messages: list[dict], max_tokens: int | None, n: int) -> float:
        chars = 0
        for m in messages:
            content = m["content"]
            if isinstance(content, str):
                chars += len(content)
            else:
                chars += sum(len(p.get("text", "")) for p in content) + 800 * sum(
                    1 for p in content if p.get("type") == "image_url")
        return chars / 4 + (max_tokens or 256) * n

    def _account(self, usage: Usage, prompt_tokens: int, completion_tokens: int, estimate: float) -> None:
        usage.prompt_tokens += prompt_tokens
        usage.completion_tokens += completion_tokens
        if self._tpm is not None:
            self._tpm.give_back(estimate - (prompt_tokens + completion_tokens))
        prices = self.config.prices
        with self.usage.lock:
            self.usage.prompt_tokens += prompt_tokens
            self.usage.completion_tokens += completion_tokens
            if prices is not None:
                self.usage.cost = (self.usage.cost or 0.0) + prices.cost(prompt_tokens, completion_tokens)

    # ------------------------------------------------------------ messages

    def _messages(self, messages: list[Message], images: list[Any]) -> list[dict]:
        """Chat messages in the OpenAI wire format; image parts take `images` in order, as data URLs."""
        out = []
        next_image = 0
        for m in messages:
            if isinstance(m.content, str):
                out.append({"role": m.role, "content": m.content})
                continue
            parts = []
            for part in m.content:
                if part.type == "text":
                    parts.append({"type": "text", "text": part.text})
                    continue
                if next_image >= len(images):
                    raise _ItemFailed(f"the messages have more image parts than images ({len(images)})")
                try:
                    url = image_data_url(images[next_image], self.config.max_image_side)
                except Exception as e:
                    raise _ItemFailed(f"image {next_image} is unreadable: {_short(str(e))}") from None
                parts.append({"type": "image_url", "image_url": {"url": url}})
                next_image += 1
            out.append({"role": m.role, "content": parts})
        if next_image != len(images):
            raise _ItemFailed(f"{len(images)} images but {next_image} image parts in the messages")
        return out


def read_choices(data: Any, url: str) -> tuple[list[tuple[str, str]], int, int]:
    try:
        choices = [((c.get("message") or {}).get("content") or "", c.get("finish_reason") or "stop")
                   for c in sorted(data["choices"], key=lambda c: c.get("index", 0))]
        usage = data.get("usage") or {}
        return choices, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    except (KeyError, TypeError, AttributeError, ValueError):
        body = _short(json.dumps(data)[:200])
        diagnosis = (f"{url} answered JSON that is not a chat completion ({_short(body, 60)}): check that "
                     "--base-url is an OpenAI-compatible API (it usually ends in /v1)")
        raise _Retryable(f"malformed response (no choices): {body}", kind="bad_response",
                         unusable=("not_chat", diagnosis)) from None


def _http_errors(http):
    """The httpx module behind the SDK's HTTP client (httpx, or httpx2 for openai >= 3), for its exceptions."""
    import importlib

    for cls in type(http).__mro__:
        if cls.__name__ == "AsyncClient" and cls.__module__.split(".")[0] in ("httpx", "httpx2"):
            return importlib.import_module(cls.__module__.split(".")[0])
    import httpx

    return httpx


def _server_message(error) -> str:
    """The server's own error message (OpenAI-style ``{"error": {"message": ...}}``, else the body)."""
    body = error.body
    if isinstance(body, dict):
        message = body.get("message") or body.get("detail") or body.get("error")
        if isinstance(message, str) and message:
            return _short(message)
        return _short(json.dumps(body))
    if isinstance(body, str) and body.strip():
        return "an HTML page" if _looks_like_html(body) else _short(body)
    return _short(error.message)


def _in_chain(error: BaseException, name: str) -> bool:
    """Whether an exception named `name` is among the causes (httpx and httpx2 name theirs alike)."""
    return any(type(e).__name__ == name for e in _causes(error))


def _causes(error: BaseException):
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _connect_diagnosis(error: BaseException, url: str) -> tuple[str, str] | None:
    """Why no connection could be made (refused, unknown host, TLS), or None for one dropped mid-call."""
    if not _in_chain(error, "ConnectError"):
        return None  # the server accepted the connection and then dropped it: transient
    import socket
    import ssl

    for cause in _causes(error):
        if isinstance(cause, ConnectionRefusedError):
            return "connect", f"connection refused at {url}: is the server running? check --base-url"
        if isinstance(cause, socket.gaierror):
            host = urlparse(url).hostname or url
            return "connect", f"cannot resolve the host {host!r} of {url}: check --base-url"
        if isinstance(cause, ssl.SSLError):
            return "connect", (f"TLS handshake with {url} failed ({_short(str(cause), 80)}): http:// or https:// "
                               "in --base-url?")
    detail = _short(str(error.__cause__ or error), 80)
    return "connect", f"cannot connect to {url} ({detail}): is the server running? check --base-url"


def _looks_like_html(text: str) -> bool:
    head = text.lstrip()[:200].lower()
    return head.startswith(("<!doctype", "<html", "<head", "<body", "<?xml")) or "<html" in head


def token_limit_field(url: str, setting: str = "auto") -> str:
    """The request field for the token limit: OpenAI itself wants ``max_completion_tokens`` (its reasoning
    models reject ``max_tokens``); other servers get ``max_tokens``, which all of them know."""
    if setting != "auto":
        return setting
    return "max_completion_tokens" if (urlparse(url).hostname or "") == "api.openai.com" else "max_tokens"


def _rejects_schema(reason: str) -> bool:
    lowered = reason.lower()
    return reason.startswith(("HTTP 400", "HTTP 422")) and (
        "response_format" in lowered or "json_schema" in lowered or "schema" in lowered)


def _needs_key(url: str) -> bool:
    return (urlparse(url).hostname or "").endswith("openai.com")


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(redact(str(text)).split())  # before cutting: a cut key would no longer be found
    return text if len(text) <= limit else text[: limit - 1] + "…"
