"""A loopback OpenAI-compatible HTTP server for tests and benchmarks. It is a test fixture, never a model.

It speaks real HTTP/1.1 (keep-alive) on 127.0.0.1 with `asyncio` streams, so one process sustains
thousands of concurrent requests. Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models`` and
``GET /_stats`` (counters, for benchmarks that run the server in another process); any other path is a
404, as on a real server (so a base URL without ``/v1`` fails like it would there).

Like a real server it can check the request: ``api_key="sk-..."`` answers 401 to any other key,
``strict_model=True`` answers 404 to a model other than `model` (vLLM's message), and
``reject_max_tokens=True`` answers 400 to ``max_tokens`` the way OpenAI's reasoning models do.
``echo_auth=True`` repeats the request's Authorization header in every error body, as some proxies do
(for tests that a key never reaches synth's outputs).

Replies: by default the assistant echoes the text of the last user message. `script()` changes that:

- ``server.script("fixed reply")`` — always this text;
- ``server.script({"marker": "reply", "other": ["first", "second"]})`` — a key matches when it occurs in a
  user message (the last user message is checked first, then earlier ones); a list is a queue: each
  matching request takes the next entry and the last entry repeats;
- ``server.script(fn)`` — ``fn(body) -> str | list[str] | dict | None``; a list gives one text per choice,
  a dict may set ``content`` and ``finish_reason``; ``None`` falls back to the echo.

Faults are rules checked in order, the first one that fires wins::

    server.fault("429", first=2, retry_after=1)     # the next 2 requests get 429 + Retry-After: 1
    server.fault("500", every=3)                    # every 3rd request
    server.fault("drop", marker="BOOM", times=1)    # once, for a request whose user text contains BOOM

Kinds: ``"429"`` (with ``retry_after`` seconds, as an HTTP-date when ``retry_after_date=True``), ``"500"``,
``"503"``, ``"401"``, ``"403"``, ``"404"``, ``"status"`` (any ``status``), ``"slow"`` (waits ``delay``
seconds before answering), ``"drop"`` (closes the connection without answering), ``"truncate"``
(announces the full length, sends half, closes), ``"non_json"`` (200 with a short HTML error body, as
from a proxy), ``"html"`` (200 with a web app's HTML page), ``"plain_text"`` (200, text that is not
JSON), ``"wrong_json"`` (200, JSON that is not a chat completion), ``"broken_json"`` (a valid response
whose message content is broken JSON, for structured-output tests).

Batch API (as OpenAI's): ``POST /v1/files`` (multipart upload), ``GET /v1/files`` (list),
``GET /v1/files/{id}`` and ``/content``, ``POST /v1/batches``, ``GET /v1/batches`` (newest first),
``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``. A batch is served when it is first checked
``batch_delay`` seconds after its creation: each line goes through the same replies and fault rules as a
chat request (a faulted line lands in the error file); ``batch_expire_after=k`` serves only k lines and
expires the rest (``batch_expired`` in the error file). Files and batches live in the server object, so
``restart()`` (stop, then listen again on the same port) keeps them, like a real provider. Counters:
`file_uploads`, `batch_creates`, `batch_lines`; ``hooks[event] = fn`` runs ``fn(event)`` before the
server answers ``file_uploaded``, ``batch_created``, ``batch_checked`` or ``file_content`` (tests kill a
client there).

Everything the server received is in `requests` (parsed JSON bodies, in arrival order) and `headers`;
`request_count` and `max_in_flight` count every chat request, including faulted ones;
`prompt_counts()` counts the requests per last user message.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import email.utils
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

FAULT_KINDS = {"429", "500", "503", "401", "403", "404", "status", "slow", "drop", "truncate", "non_json",
               "html", "plain_text", "wrong_json", "broken_json"}
BROKEN_JSON = '{"answer": "unterminated, "items": [1, 2,'
WEB_PAGE = (b'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Chat</title></head>'
            b'<body><div id="app"></div><script src="/static/app.js"></script></body></html>\n')
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable"}


@dataclass
class FaultRule:
    kind: str
    first: int | None = None
    every: int | None = None
    marker: str | None = None
    times: int | None = None
    retry_after: float | None = None
    retry_after_date: bool = False
    delay: float = 30.0
    status: int = 500
    seen: int = 0
    fired: int = 0

    def fires(self, user_texts: list[str]) -> bool:
        if self.marker is not None and not any(self.marker in t for t in user_texts):
            return False
        self.seen += 1
        if self.times is not None and self.fired >= self.times:
            return False
        if self.first is not None and self.seen > self.first:
            return False
        if self.every is not None and self.seen % self.every != 0:
            return False
        self.fired += 1
        return True


@dataclass
class _Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    action: str = "send"  # send | drop | truncate


def _user_texts(body: dict) -> list[str]:
    """Text of the user messages, the last one first."""
    texts = []
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text") or "" for p in content if p.get("type") == "text")
        texts.append(content or "")
    return texts


def _count_tokens(text: str) -> int:
    # A stand-in tokenizer: whitespace words. Deterministic, so tests can assert usage totals.
    return len(text.split())


class LLMTestServer:
    """The server; use as a context manager (background thread) or `start()`/`stop()`."""

    def __init__(self, latency: float = 0.0, model: str = "test-model", host: str = "127.0.0.1",
                 port: int = 0, record: bool = True, ignore_n: bool = False,
                 reject_response_format: bool = False, api_key: str | None = None, strict_model: bool = False,
                 reject_max_tokens: bool = False, echo_auth: bool = False, batch_delay: float = 0.0,
                 batch_expire_after: int | None = None):
        self.latency = latency
        self.model = model
        self.host = host
        self.port = port
        self.record = record
        #: answer one choice whatever `n` asks (some servers do)
        self.ignore_n = ignore_n
        #: answer 400 to `response_format` json_schema requests (servers without structured output)
        self.reject_response_format = reject_response_format
        #: when set, any other bearer token gets 401
        self.api_key = api_key
        #: answer 404 to a model other than `model`
        self.strict_model = strict_model
        #: answer 400 to `max_tokens` (as OpenAI's reasoning models do; they take max_completion_tokens)
        self.reject_max_tokens = reject_max_tokens
        #: repeat the Authorization header in error messages (a careless proxy)
        self.echo_auth = echo_auth
        #: seconds after creation before a batch is served (checks before then see it in progress)
        self.batch_delay = batch_delay
        #: serve only this many lines of a batch, expire the rest
        self.batch_expire_after = batch_expire_after
        self.hooks: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task] = set()
        self.reset()

    # ------------------------------------------------------------ controls

    def reset(self) -> None:
        """Forget scripts, faults and recorded requests."""
        with self._lock:
            self._script: Any = None
            self._queues: dict[str, list] = {}
            self.rules: list[FaultRule] = []
            self.requests: list[dict] = []
            self.headers: list[dict[str, str]] = []
            self.request_count = 0
            self.in_flight = 0
            self.max_in_flight = 0
            self.files: dict[str, dict] = {}
            self.batches: dict[str, dict] = {}
            self.file_uploads = 0
            self.batch_creates = 0
            self.batch_lines = 0

    def script(self, replies: Any) -> None:
        """Set the replies: a string, a {marker: reply-or-queue} dict, a callable, or None for the echo."""
        with self._lock:
            self._script = replies
            self._queues = {k: list(v) for k, v in replies.items() if isinstance(v, list)} if isinstance(
                replies, dict) else {}

    def fault(self, kind: str | int, *, first: int | None = None, every: int | None = None,
              marker: str | None = None, times: int | None = None, retry_after: float | None = None,
              retry_after_date: bool = False, delay: float = 30.0, status: int | None = None) -> FaultRule:
        """Add a fault rule (see the module doc); returns it so a test can read `fired`."""
        kind = str(kind)
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {sorted(FAULT_KINDS)}")
        if status is None:
            status = int(kind) if kind.isdigit() else 500
        rule = FaultRule(kind, first, every, marker, times, retry_after, retry_after_date, delay, status)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear_faults(self) -> None:
        with self._lock:
            self.rules = []

    def prompt_counts(self) -> collections.Counter:
        """How many chat requests arrived per last user message (needs `record`)."""
        with self._lock:
            return collections.Counter((_user_texts(b) or [""])[0] for b in self.requests)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # ------------------------------------------------------------ lifecycle (thread)

    def start(self) -> LLMTestServer:
        started = threading.Event()
        errors: list[BaseException] = []

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._bind())
            except BaseException as e:  # reported to the starting thread
                errors.append(e)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="llm-test-server", daemon=True)
        self._thread.start()
        started.wait()
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._thread = None

    def restart(self) -> None:
        """Stop and listen again on the same port; files and batches survive (as at a real provider)."""
        self.stop()
        self.start()

    def __enter__(self) -> LLMTestServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _bind(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def serve_forever(self) -> None:
        """Run in the current loop until cancelled (process mode)."""
        await self._bind()
        try:
            await asyncio.Event().wait()
        finally:
            await self._shutdown()

    # ------------------------------------------------------------ HTTP

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._handlers.add(task)
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    break
                method, path, _ = request_line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                raw = await reader.readexactly(length) if length else b""
                reply = await self._route(method, path.split("?", 1)[0], headers, raw)
                if reply.action == "drop":
                    break
                head = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}",
                        f"Content-Length: {len(reply.body)}",
                        "Content-Type: " + reply.headers.pop("Content-Type", "application/json")]
                head += [f"{k}: {v}" for k, v in reply.headers.items()]
                payload = ("\r\n".join(head) + "\r\n\r\n").encode() + reply.body
                if reply.action == "truncate":
                    writer.write(payload[: len(payload) - len(reply.body) // 2])
                    await writer.drain()
                    break
                writer.write(payload)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _route(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> _Reply:
        path = path.rstrip("/")
        if method == "GET" and path == "/v1/models":
            data = {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0,
                                                 "owned_by": "synth-test-server"}]}
            return _Reply(body=json.dumps(data).encode())
        if method == "GET" and path == "/_stats":
            data = {"requests": self.request_count, "max_in_flight": self.max_in_flight,
                    "batch_lines": self.batch_lines, "batch_creates": self.batch_creates}
            return _Reply(body=json.dumps(data).encode())
        if path.startswith(("/v1/files", "/v1/batches")):
            return await self._batch_api(method, path, headers, raw)
        if path != "/v1/chat/completions":
            return _Reply(404, json.dumps({"detail": "Not Found"}).encode())
        if method != "POST":
            return _Reply(405, json.dumps({"detail": "Method Not Allowed"}).encode())
        try:
            body = json.loads(raw)
        except ValueError:
            return _Reply(400, b'{"error": {"message": "body is not JSON"}}')
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._chat(body, headers)
        finally:
            self.in_flight -= 1

    async def _chat(self, body: dict, headers: dict[str, str]) -> _Reply:
        user_texts = _user_texts(body)
        with self._lock:
            self.request_count += 1
            if self.record:
                self.requests.append(body)
                self.headers.append(headers)
            rule = next((r for r in self.rules if r.fires(user_texts)), None)
        if self.latency:
            await asyncio.sleep(self.latency)
        refused = self._check(body, headers)
        if refused is not None:
            return self._echo(refused, headers)
        kind = rule.kind if rule else None
        if kind == "slow":
            await asyncio.sleep(rule.delay)
        elif kind == "drop":
            return _Reply(action="drop")
        elif kind is not None and (kind.isdigit() or kind == "status"):
            extra = {}
            if rule.retry_after is not None:
                extra["Retry-After"] = (email.utils.formatdate(time.time() + rule.retry_after, usegmt=True)
                                        if rule.retry_after_date else f"{rule.retry_after:g}")
            message = json.dumps({"error": {"message": f"injected fault {rule.status}", "type": "test"}})
            return self._echo(_Reply(rule.status, message.encode(), extra), headers)
        elif kind == "non_json":
            return _Reply(200, b"<html><body>502 Bad Gateway</body></html>", {"Content-Type": "text/html"})
        elif kind == "html":
            return _Reply(200, WEB_PAGE, {"Content-Type": "text/html; charset=utf-8"})
        elif kind == "plain_text":
            return _Reply(200, b"OK", {"Content-Type": "text/plain"})
        elif kind == "wrong_json":
            return _Reply(200, b'{"status": "ok", "version": "1.2.0"}')
        if self.reject_response_format and (body.get("response_format") or {}).get("type") == "json_schema":
            message = {"error": {"message": "response_format json_schema is not supported", "type": "invalid"}}
            return _Reply(400, json.dumps(message).encode())

        n = 1 if self.ignore_n else int(body.get("n") or 1)
        choices = []
        for index in range(n):
            content, finish = self._reply_text(body, user_texts, index)
            if kind == "broken_json":
                content = BROKEN_JSON
            choices.append({"index": index, "finish_reason": finish,
                            "message": {"role": "assistant", "content": content}})
        prompt_tokens = sum(_count_tokens(t) for t in _all_texts(body)) + 1
        completion_tokens = sum(_count_tokens(c["message"]["content"]) for c in choices)
        data = {
            "id": f"chatcmpl-test-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }
        return _Reply(body=json.dumps(data).encode(), action="truncate" if kind == "truncate" else "send")

    # ------------------------------------------------------------ files and batches

    def _hook(self, event: str) -> None:
        hook = self.hooks.get(event)
        if hook is not None:
            hook(event)

    async def _batch_api(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> _Reply:
        parts = path.split("/")[2:]  # ["files"|"batches", id?, "content"|"cancel"?]
        kind, ident, action = parts[0], parts[1] if len(parts) > 1 else None, parts[2] if len(parts) > 2 else None
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return _Reply(401, b'{"error": {"message": "Incorrect API key provided."}}')
        if kind == "files":
            if method == "POST" and ident is None:
                return self._upload(headers, raw)
            if method == "GET" and ident is None:
                data = [self._file_object(f) for f in self.files.values()]
                return _json({"object": "list", "data": data, "has_more": False})
            item = self.files.get(ident or "")
            if item is None:
                return _Reply(404, b'{"error": {"message": "No such file"}}')
            if action == "content":
                self._hook("file_content")
                return _Reply(200, item["data"], {"Content-Type": "application/octet-stream"})
            return _json(self._file_object(item))
        if method == "POST" and ident is None:
            return self._create_batch(raw)
        if method == "GET" and ident is None:
            data = [self._batch_object(b) for b in sorted(self.batches.values(), key=lambda b: -b["seq"])]
            return _json({"object": "list", "data": data, "has_more": False})
        batch = self.batches.get(ident or "")
        if batch is None:
            return _Reply(404, b'{"error": {"message": "No such batch"}}')
        if method == "POST" and action == "cancel":
            if batch["status"] not in ("completed", "failed", "expired", "cancelled"):
                batch["status"] = "cancelling"
            return _json(self._batch_object(batch))
        self._hook("batch_checked")
        await self._advance(batch)
        return _json(self._batch_object(batch))

    def _upload(self, headers: dict[str, str], raw: bytes) -> _Reply:
        boundary = headers.get("content-type", "").partition("boundary=")[2].strip('"')
        fields: dict[str, Any] = {}
        for part in raw.split(b"--" + boundary.encode())[1:-1]:
            part = part[2:] if part.startswith(b"\r\n") else part
            part = part[:-2] if part.endswith(b"\r\n") else part
            head, _, value = part.partition(b"\r\n\r\n")
            head_text = head.decode("latin-1")
            name = head_text.partition('name="')[2].partition('"')[0]
            filename = head_text.partition('filename="')[2].partition('"')[0]
            fields[name] = (filename, value) if filename else value.decode()
        if "file" not in fields:
            return _Reply(400, b'{"error": {"message": "no file in the upload"}}')
        filename, data = fields["file"]
        with self._lock:
            self.file_uploads += 1
            ident = f"file-test-{len(self.files)}"
            self.files[ident] = {"id": ident, "filename": filename, "purpose": fields.get("purpose", "batch"),
                                 "data": data, "created_at": int(time.time())}
        self._hook("file_uploaded")
        return _json(self._file_object(self.files[ident]))

    def _create_batch(self, raw: bytes) -> _Reply:
        body = json.loads(raw or b"{}")
        source = self.files.get(body.get("input_file_id") or "")
        if source is None:
            return _Reply(400, b'{"error": {"message": "input_file_id not found"}}')
        lines = [json.loads(line) for line in source["data"].decode().splitlines() if line.strip()]
        with self._lock:
            self.batch_creates += 1
            ident = f"batch-test-{len(self.batches)}"
            self.batches[ident] = {
                "id": ident, "seq": len(self.batches), "input_file_id": source["id"], "lines": lines,
                "status": "in_progress", "created": time.monotonic(), "created_at": int(time.time()),
                "metadata": body.get("metadata"), "completion_window": body.get("completion_window", "24h"),
                "endpoint": body.get("endpoint", "/v1/chat/completions"), "output_file_id": None,
                "error_file_id": None, "completed": 0, "failed": 0, "serving": False}
        self._hook("batch_created")
        return _json(self._batch_object(self.batches[ident]))

    async def _advance(self, batch: dict) -> None:
        """Serve the batch once its delay has passed (on the first check after it)."""
        if batch["status"] == "cancelling":
            batch["status"] = "cancelled"
            return
        if batch["status"] != "in_progress" or batch["serving"]:
            return
        if time.monotonic() - batch["created"] < self.batch_delay:
            return
        batch["serving"] = True
        lines = batch["lines"]
        served = lines if self.batch_expire_after is None else lines[: self.batch_expire_after]
        with self._lock:
            self.batch_lines += len(served)
        replies = await asyncio.gather(*(self._chat(line["body"], {}) for line in served))
        outputs, errors = [], []
        for number, (line, reply) in enumerate(zip(served, replies)):
            status = reply.status if reply.action == "send" else 502
            body = json.loads(reply.body) if reply.body and reply.action == "send" else {
                "error": {"message": "upstream dropped the connection"}}
            result = {"id": f"batch_req_{number}", "custom_id": line["custom_id"],
                      "response": {"status_code": status, "request_id": f"req_{number}", "body": body},
                      "error": None}
            (outputs if status == 200 else errors).append(result)
        for line in lines[len(served):]:
            errors.append({"id": "", "custom_id": line["custom_id"], "response": None,
                           "error": {"code": "batch_expired", "message": "This request could not be executed "
                                                                         "before the completion window expired."}})
        for name, rows in (("output_file_id", outputs), ("error_file_id", errors)):
            if rows:
                ident = f"file-test-{len(self.files)}"
                data = "".join(json.dumps(r) + "\n" for r in rows).encode()
                self.files[ident] = {"id": ident, "filename": f"{batch['id']}_{name}.jsonl",
                                     "purpose": "batch_output", "data": data, "created_at": int(time.time())}
                batch[name] = ident
        batch["completed"], batch["failed"] = len(outputs), len(errors)
        batch["status"] = "completed" if len(served) == len(lines) else "expired"

    @staticmethod
    def _file_object(item: dict) -> dict:
        return {"id": item["id"], "object": "file", "bytes": len(item["data"]), "created_at": item["created_at"],
                "filename": item["filename"], "purpose": item["purpose"], "status": "processed"}

    @staticmethod
    def _batch_object(batch: dict) -> dict:
        return {"id": batch["id"], "object": "batch", "endpoint": batch["endpoint"], "errors": None,
                "input_file_id": batch["input_file_id"], "completion_window": batch["completion_window"],
                "status": batch["status"], "output_file_id": batch["output_file_id"],
                "error_file_id": batch["error_file_id"], "created_at": batch["created_at"],
                "metadata": batch["metadata"],
                "request_counts": {"total": len(batch["lines"]), "completed": batch["completed"],
                                   "failed": batch["failed"]}}

    def _echo(self, reply: _Reply, headers: dict[str, str]) -> _Reply:
        """With `echo_auth`, the error message repeats the Authorization header (as some proxies do)."""
        if not self.echo_auth:
            return reply
        data = json.loads(reply.body)
        error = data.get("error") if isinstance(data.get("error"), dict) else data
        error["message"] = f"{error.get('message')} (request had Authorization: {headers.get('authorization')})"
        return _Reply(reply.status, json.dumps(data).encode(), reply.headers, reply.action)

    def _check(self, body: dict, headers: dict[str, str]) -> _Reply | None:
        """What a real server refuses before generating: a wrong key, an unknown model, a rejected field."""
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            message = {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                 "code": "invalid_api_key"}}
            return _Reply(401, json.dumps(message).encode())
        if self.strict_model and body.get("model") != self.model:
            message = {"object": "error", "message": f"The model `{body.get('model')}` does not exist.",
                       "type": "NotFoundError", "param": None, "code": 404}
            return _Reply(404, json.dumps(message).encode())
        if self.reject_max_tokens and "max_tokens" in body:
            message = {"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this "
                                            "model. Use 'max_completion_tokens' instead.",
                                 "type": "invalid_request_error", "param": "max_tokens",
                                 "code": "unsupported_parameter"}}
            return _Reply(400, json.dumps(message).encode())
        return None

    def _reply_text(self, body: dict, user_texts: list[str], index: int) -> tuple[str, str]:
        script = self._script
        reply: Any = None
        if callable(script):
            reply = script(body)
        elif isinstance(script, str):
            reply = script
        elif isinstance(script, dict):
            reply = self._match(script, user_texts)
        if reply is None:
            reply = user_texts[0] if user_texts else ""
        if isinstance(reply, list):
            reply = reply[index % len(reply)] if reply else ""
        if isinstance(reply, dict):
            return str(reply.get("content", "")), str(reply.get("finish_reason", "stop"))
        return str(reply), "stop"

    def _match(self, script: dict, user_texts: list[str]) -> Any:
        for text in user_texts:
            for key, value in script.items():
                if key in text:
                    if key in self._queues:
                        with self._lock:
                            queue = self._queues[key]
                            return queue.pop(0) if len(queue) > 1 else (queue[0] if queue else "")
                    return value
        return None


def _json(data: Any) -> _Reply:
    return _Reply(body=json.dumps(data).encode())


def _all_texts(body: dict) -> list[str]:
    out = []
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, list):
            out.extend(p.get("text") or "" for p in content if p.get("type") == "text")
        elif content:
            out.append(content)
    return out


def image_urls(body: dict) -> list[str]:
    """The image URLs (data URLs) in a recorded request body, in order."""
    urls = []
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, list):
            urls.extend(p["image_url"]["url"] for p in content if p.get("type") == "image_url")
    return urls


# ---------------------------------------------------------------- process mode


class ServerProcess:
    """The server in its own process (benchmarks: keeps its CPU off the client's event loop)."""

    def __init__(self, latency: float = 0.0, model: str = "test-model", record: bool = False,
                 batch_delay: float = 0.0):
        self.args = [sys.executable, "-m", "synth.llm.testing", "--latency", str(latency), "--model", model,
                     "--batch-delay", str(batch_delay)]
        if record:
            self.args.append("--record")
        self.proc: subprocess.Popen | None = None
        self.base_url = ""

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        line = self.proc.stdout.readline().strip()
        if not line.startswith("LISTENING "):
            self.proc.kill()
            raise RuntimeError(f"test server did not start: {line!r}")
        self.base_url = line.split(" ", 1)[1]
        return self

    def stats(self) -> dict:
        import httpx

        return httpx.get(self.base_url.rsplit("/v1", 1)[0] + "/_stats").json()

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Loopback OpenAI-compatible test server (a fixture, not a model).")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--model", default="test-model")
    parser.add_argument("--record", action="store_true", help="keep request bodies (memory grows)")
    parser.add_argument("--api-key", help="answer 401 to any other bearer token")
    parser.add_argument("--strict-model", action="store_true", help="answer 404 to a model other than --model")
    parser.add_argument("--fault", help="a fault kind every request gets (e.g. html, 500)")
    parser.add_argument("--batch-delay", type=float, default=0.0, help="seconds before a batch is served")
    args = parser.parse_args(argv)
    server = LLMTestServer(latency=args.latency, model=args.model, port=args.port, record=args.record,
                           api_key=args.api_key, strict_model=args.strict_model, batch_delay=args.batch_delay)
    if args.fault:
        server.fault(args.fault)

    async def run():
        task = asyncio.ensure_future(server.serve_forever())
        while not server._server:
            await asyncio.sleep(0.01)
        print(f"LISTENING {server.base_url}", flush=True)
        await task

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
