"""Batch mode: a call's requests go out as batch files (OpenAI-compatible ``/v1/files`` + ``/v1/batches``, or
the JSONL that ``vllm run-batch`` reads) at the provider's batch price, and come back through the request cache.

How one `complete` call is served (one call = one step of an operator, e.g. one evolution round):

1. cache hits are answered at once; the misses become batch lines whose ``custom_id`` is the cache key
   (request hash and the sample indices it fills), so any batch output can be stored without its request;
2. a miss that an unfinished batch of the journal already holds is not sent again: that batch is polled;
3. the other misses are split into batch files (``batch_max_requests`` lines, ``batch_max_bytes`` bytes);
4. each batch goes: prepared (input file written) → uploaded (file id) → submitted (batch id) → polled →
   downloaded (output and error files saved) → done (outputs in the cache). Every id is written to the
   journal (``<cache dir>/batches/<local id>.json``, replaced atomically) the moment it exists; the batch
   carries ``metadata.synth_batch = <local id>`` and the file is named ``<local id>.jsonl``, so a kill between
   the server's answer and the journal write is found again by listing, never by sending twice;
5. finished outputs go into the request cache as online answers do; per-request errors, expired and
   missing requests are failures (not cached: the next run retries them, or at once online with
   ``batch_retry: online``), never drops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

from synth.errors import SynthError, redact
from synth.io import atomic_write_bytes, atomic_write_json
from synth.llm.base import ChatRequest, Completion, gather_or_cancel
from synth.llm.cache import CachedBackend, request_hash, sample_key
from synth.llm.structured import parse_structured

log = logging.getLogger(__name__)

BATCHES_DIR = "batches"
TERMINAL = {"completed", "failed", "expired", "cancelled"}
CHAT_URL = "/v1/chat/completions"


# ---------------------------------------------------------------- journal


class BatchJournal:
    """One JSON file per batch in `folder`, each replaced atomically at every step."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def records(self) -> list[dict[str, Any]]:
        if not self.folder.is_dir():
            return []
        out = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                out.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as e:
                raise SynthError(f"batch journal {path} is unreadable ({e}); delete it only if that batch "
                                 "is finished or cancelled") from e
        return sorted(out, key=lambda r: r["created"])

    def pending(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["state"] != "done"]

    def save(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.folder / f"{record['local_id']}.json", record, indent=1)

    def path(self, record: dict[str, Any], kind: str) -> Path:
        """The record's `input`, `output` or `errors` JSONL file."""
        return self.folder / f"{record['local_id']}.{kind}.jsonl"

    def write_file(self, record: dict[str, Any], kind: str, data: bytes) -> None:
        atomic_write_bytes(self.path(record, kind), data)


def journal_dir(cache_folder: str | os.PathLike) -> Path:
    return Path(cache_folder) / BATCHES_DIR


def find_journal(path: str | os.PathLike) -> Path:
    """The journal of a run folder (``RUN/cache/batches``), a cache folder or the journal folder itself."""
    path = Path(path)
    for candidate in (path / "cache" / BATCHES_DIR, path / BATCHES_DIR, path):
        if candidate.is_dir() and (candidate.name == BATCHES_DIR):
            return candidate
    raise SynthError(f"no batches recorded under {path}: pass a run folder, or the --cache-dir of a command "
                     "run with --batch")


def public_url(url: str) -> str:
    """The URL without user and password (the journal is a file users share and list)."""
    parts = urlparse(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        parts = parts._replace(netloc=host + (f":{parts.port}" if parts.port else ""))
    return urlunparse(parts)


# ---------------------------------------------------------------- backend


class BatchBackend(CachedBackend):
    """The request cache in front of batch files; `inner` is the `OpenAIBackend` (config, client, bodies)."""

    def __init__(self, inner, cache_path: str | os.PathLike, journal: str | os.PathLike, console=None):
        super().__init__(inner, cache_path)
        self.config = inner.config
        self.journal = BatchJournal(journal)
        self.console = console
        #: an LLM task sends a whole shard in one call (one batch), not chunks of its online size
        self.preferred_call_size = self.config.batch_max_requests
        prices = self.config.batch_prices or self.config.prices
        self._prices = prices
        self._client_obj = None
        self._url = inner.replicas[0].url
        # batches prepared by this process: no earlier upload or create of theirs can exist to look for
        self._fresh: set[str] = set()

    def __repr__(self) -> str:
        return f"BatchBackend({self.inner!r}, journal={str(self.journal.folder)!r})"

    # ------------------------------------------------------------ one call

    async def acomplete(self, requests: Sequence[ChatRequest], progress=None) -> list[Completion]:
        bases = [request_hash(self.identity, r) for r in requests]
        hits = self.cache.get_many([sample_key(b, i) for b, r in zip(bases, requests) for i in range(r.n)])
        results: list[Completion | None] = [None] * len(requests)
        wanted: dict[str, list[int]] = {}  # custom_id → request positions
        for pos, (base, request) in enumerate(zip(bases, requests)):
            rows = [hits.get(sample_key(base, i)) for i in range(request.n)]
            completion = self._from_rows(request, rows) if all(rows) else None
            if completion is not None:
                results[pos] = completion
                continue
            missing = [i for i, row in enumerate(rows) if row is None] or list(range(request.n))
            wanted.setdefault(f"{base}:{','.join(map(str, missing))}", []).append(pos)
        with self.usage.lock:
            self.usage.cached += sum(r is not None for r in results)
        if progress is not None:
            for completion in results:
                if completion is not None:
                    progress(completion)
        if not wanted:
            return results  # type: ignore[return-value]

        errors: dict[str, tuple[str, str]] = {}  # custom_id → (reason, kind)
        schemas = {cid: requests[positions[0]].schema_model for cid, positions in wanted.items()}
        records = self._plan(requests, wanted, errors)
        try:
            await self._drive_all(records, schemas, errors, len(wanted))
        finally:
            await self._close_client()

        again: list[int] = []
        found = self.cache.get_many([sample_key(b, i) for b, r in zip(bases, requests) for i in range(r.n)])
        for cid, positions in wanted.items():
            for pos in positions:
                request = requests[pos]
                rows = [found.get(sample_key(bases[pos], i)) for i in range(request.n)]
                completion = self._from_rows(request, rows) if all(rows) else None
                if completion is not None:
                    results[pos] = completion.model_copy(update={"cached": False})
                elif self.config.batch_retry == "online":
                    again.append(pos)
                    continue
                else:
                    reason, kind = errors.get(cid) or (
                        ("invalid structured output in the batch's reply", "unparseable") if all(rows)
                        else ("the batch returned no result for this request", "batch_missing"))
                    results[pos] = Completion(key=request.key, error=redact(reason), error_kind=kind)
                    with self.usage.lock:
                        self.usage.failures += 1
                if progress is not None:
                    progress(results[pos])
        if again:  # batch_retry: online — through the cache, as any online request
            retried = await CachedBackend.acomplete(self, [requests[p] for p in again], progress)
            for pos, completion in zip(again, retried):
                results[pos] = completion
        return results  # type: ignore[return-value]

    def _plan(self, requests, wanted: dict[str, list[int]], errors: dict) -> list[dict]:
        """Unfinished batches of the journal that hold some of `wanted`, plus new batches for the rest."""
        records = []
        covered: set[str] = set()
        for record in self.journal.pending():
            if record["model"] != self.config.model or record["mode"] != self.config.batch_mode:
                continue
            ids = set(record["custom_ids"])
            if ids & wanted.keys():
                records.append(record)
                covered |= ids
        lines: list[tuple[str, bytes]] = []
        for cid, positions in wanted.items():
            if cid in covered:
                continue
            request = requests[positions[0]]
            n = cid.rsplit(":", 1)[1].count(",") + 1
            try:
                body = self.inner.batch_body(request, n)
            except Exception as e:  # an unreadable image: this request only
                errors[cid] = (str(e), getattr(e, "kind", "invalid_request"))
                continue
            line = {"custom_id": cid, "method": "POST", "url": CHAT_URL, "body": body}
            lines.append((cid, (json.dumps(line, ensure_ascii=False) + "\n").encode()))
        cfg = self.config
        chunk: list[tuple[str, bytes]] = []
        size = 0
        for cid, data in lines:
            if chunk and (len(chunk) >= cfg.batch_max_requests or size + len(data) > cfg.batch_max_bytes):
                records.append(self._prepare(chunk))
                chunk, size = [], 0
            chunk.append((cid, data))
            size += len(data)
        if chunk:
            records.append(self._prepare(chunk))
        return records

    def _prepare(self, chunk: list[tuple[str, bytes]]) -> dict:
        local_id = f"synth-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
        record = {"local_id": local_id, "state": "prepared", "created": time.time(), "mode": self.config.batch_mode,
                  "model": self.config.model, "base_url": public_url(self._url),
                  "api_key_env": self.config.api_key_env, "requests": len(chunk),
                  "custom_ids": [cid for cid, _ in chunk], "file_id": None, "batch_id": None, "status": None,
                  "counts": {}, "output_file_id": None, "error_file_id": None}
        self.journal.write_file(record, "input", b"".join(data for _, data in chunk))
        self.journal.save(record)  # after the input file: a record always has its file
        self._fresh.add(local_id)
        return record

    # ------------------------------------------------------------ driving batches

    async def _drive_all(self, records: list[dict], schemas: dict, errors: dict, wanted: int) -> None:
        self._status_line = ""
        self._wanted = wanted
        if self.config.batch_mode == "file":
            self._files_mode(records, schemas, errors)
            return
        await gather_or_cancel([asyncio.ensure_future(self._drive(record, schemas, errors, records))
                                for record in records])

    async def _drive(self, record: dict, schemas: dict, errors: dict, records: list[dict]) -> None:
        if record["state"] == "prepared":
            await self._upload(record)
        if record["state"] == "uploaded":
            await self._create(record)
        while record["state"] == "submitted":
            batch = await self._control(lambda c: c.batches.retrieve(record["batch_id"]), "check", record)
            self._note(record, batch)
            if record["status"] in TERMINAL:
                await self._download(record, batch)
                break
            self._show(records)
            await asyncio.sleep(self.config.batch_poll_interval)
        if record["state"] == "downloaded":
            self._ingest(record, schemas, errors)
        self._show(records)

    async def _upload(self, record: dict) -> None:
        name = f"{record['local_id']}.jsonl"
        file_id = None
        # A kill right after an earlier upload: that file is on the server under our name.
        async def find(client):
            async for item in client.files.list(purpose="batch"):
                if getattr(item, "filename", None) == name:
                    return item.id
            return None

        if record["local_id"] not in self._fresh:
            file_id = await self._control(find, "list the files of", record)
        if file_id is None:
            data = self.journal.path(record, "input").read_bytes()
            uploaded = await self._control(lambda c: c.files.create(file=(name, data), purpose="batch"),
                                           "upload", record)
            file_id = uploaded.id
        record.update(state="uploaded", file_id=file_id)
        self.journal.save(record)

    async def _create(self, record: dict) -> None:
        # A kill right after an earlier create: that batch is on the server with our local id.
        batch = None
        if record["local_id"] not in self._fresh:
            batch = await self._control(lambda c: find_batch(c, record), "list the batches of", record)
        if batch is None:
            batch = await self._control(lambda c: c.batches.create(
                input_file_id=record["file_id"], endpoint=CHAT_URL,
                completion_window=self.config.batch_completion_window,
                metadata={"synth_batch": record["local_id"]}), "create", record)
        record.update(state="submitted", batch_id=batch.id)
        self._note(record, batch)

    def _note(self, record: dict, batch) -> None:
        counts = getattr(batch, "request_counts", None)
        record["status"] = batch.status
        record["counts"] = {"total": getattr(counts, "total", 0), "completed": getattr(counts, "completed", 0),
                            "failed": getattr(counts, "failed", 0)} if counts is not None else {}
        record["output_file_id"] = getattr(batch, "output_file_id", None)
        record["error_file_id"] = getattr(batch, "error_file_id", None)
        errors = getattr(getattr(batch, "errors", None), "data", None) or []
        if errors:
            record["batch_errors"] = [redact(str(getattr(e, "message", e))) for e in errors][:5]
        self.journal.save(record)

    async def _download(self, record: dict, batch) -> None:
        for kind, file_id in (("output", record["output_file_id"]), ("errors", record["error_file_id"])):
            data = b""
            if file_id:
                response = await self._control(lambda c, f=file_id: c.files.content(f), "download", record)
                data = response.content
            self.journal.write_file(record, kind, data)
        record["state"] = "downloaded"
        self.journal.save(record)

    def _files_mode(self, records: list[dict], schemas: dict, errors: dict) -> None:
        """`vllm run-batch` on the user's machine: ingest the outputs that exist, say what to run for the rest."""
        waiting = []
        for record in records:
            if record["state"] == "prepared" and self.journal.path(record, "output").is_file():
                self.journal.write_file(record, "errors", b"")
                record["state"] = "downloaded"
                self.journal.save(record)
            if record["state"] == "downloaded":
                self._ingest(record, schemas, errors)
            else:
                waiting.append(record)
        if waiting:
            first = waiting[0]
            command = (f"vllm run-batch -i {self.journal.path(first, 'input')} "
                       f"-o {self.journal.path(first, 'output')} --model {self.config.model}")
            more = f" (and {len(waiting) - 1} more: `synth batches {self.journal.folder}` lists them)" if len(
                waiting) > 1 else ""
            raise SynthError(f"batch input written: run `{command}`{more}, then rerun this command to read the output")

    # ------------------------------------------------------------ outputs into the cache

    def _ingest(self, record: dict, schemas: dict, errors: dict) -> None:
        from synth.llm.openai_compat import read_choices

        rows: list[tuple] = []
        seen: set[str] = set()
        for kind in ("output", "errors"):
            path = self.journal.path(record, kind)
            text = path.read_text(encoding="utf-8") if path.is_file() else ""
            for number, raw in enumerate(text.splitlines(), 1):
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                    cid = line["custom_id"]
                except (ValueError, KeyError, TypeError):
                    log.warning("%s line %d is not a batch result; skipped", path, number)
                    continue
                seen.add(cid)
                with self.usage.lock:
                    self.usage.requests += 1
                response = line.get("response") or {}
                status = response.get("status_code")
                body = response.get("body")
                if line.get("error") or status != 200 or not isinstance(body, dict):
                    errors[cid] = _line_error(line)
                    continue
                try:
                    choices, prompt_tokens, completion_tokens = read_choices(body, self._url)
                except Exception as e:
                    errors[cid] = (f"malformed batch result: {e}", "bad_response")
                    continue
                base, indices = cid.rsplit(":", 1)
                samples = [int(i) for i in indices.split(",")]
                if len(choices) < len(samples):
                    errors[cid] = (f"the batch returned {len(choices)} of {len(samples)} samples", "incomplete")
                    continue
                schema = schemas.get(cid)
                if schema is not None:
                    bad = [e for _, e in (parse_structured(t, schema) for t, _ in choices[: len(samples)]) if e]
                    if bad:
                        errors[cid] = (f"invalid structured output: {bad[0]}", "unparseable")
                        continue
                self._count(prompt_tokens, completion_tokens)
                share, rest = divmod(completion_tokens, len(samples))
                rows += [(sample_key(base, index), text, finish, prompt_tokens if k == 0 else 0,
                          share + (rest if k == 0 else 0), self.model_name)
                         for k, (index, (text, finish)) in enumerate(zip(samples, choices))]
        for cid in record["custom_ids"]:
            if cid not in seen:
                why = "; ".join(record.get("batch_errors") or []) or f"the batch ended {record['status']}"
                errors.setdefault(cid, (f"no result in the batch ({why})", f"batch_{record['status'] or 'missing'}"))
        if rows:
            self.cache.put(rows)
        record["state"] = "done"
        self.journal.save(record)

    def _count(self, prompt_tokens: int, completion_tokens: int) -> None:
        with self.usage.lock:
            self.usage.prompt_tokens += prompt_tokens
            self.usage.completion_tokens += completion_tokens
            if self._prices is not None:
                self.usage.cost = (self.usage.cost or 0.0) + self._prices.cost(prompt_tokens, completion_tokens)

    # ------------------------------------------------------------ progress

    def _show(self, records: list[dict]) -> None:
        states = [r.get("status") or r["state"] for r in records]
        done = sum(r["state"] == "done" for r in records)
        running = sum(s in ("validating", "in_progress", "finalizing", "cancelling") for s in states)
        submitted = sum(r["state"] in ("submitted", "downloaded", "done") for r in records)
        finished = sum((r.get("counts") or {}).get("completed", 0) + (r.get("counts") or {}).get("failed", 0)
                       for r in records)
        total = sum(r["requests"] for r in records)
        line = (f"batches: {submitted} submitted, {running} running, {done} done of {len(records)}; "
                f"{finished:,}/{total:,} requests finished")
        if line != self._status_line:
            self._status_line = line
            console = self.console
            if console is None:
                from synth.progress import console
            console.print(line)

    # ------------------------------------------------------------ control calls, with patience

    async def _client(self):
        if self._client_obj is None:
            self._client_obj = self.inner._client(self._url)
        return self._client_obj

    async def _close_client(self) -> None:
        client, self._client_obj = self._client_obj, None
        if client is not None:
            await client.close()

    async def _control(self, call, what: str, record: dict):
        """One files/batches call; connection errors, timeouts, 429 and 5xx are retried for `timeout` seconds
        (a server restarting mid-batch), anything else stops the command with where the batch is recorded."""
        import openai

        client = await self._client()
        deadline = time.monotonic() + self.config.timeout
        delay = self.config.backoff_base
        while True:
            try:
                return await call(client)
            except (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError,
                    openai.InternalServerError) as e:
                if time.monotonic() >= deadline:
                    raise SynthError(self._stopped(what, record, e)) from None
            except openai.APIStatusError as e:
                raise SynthError(self._stopped(what, record, e)) from None
            await asyncio.sleep(delay)
            delay = min(max(delay * 2, 0.01), max(self.config.backoff_max, 0.01))

    def _stopped(self, what: str, record: dict, error: Exception) -> str:
        said = " ".join(redact(str(error)).split())[:160]
        which = record.get("batch_id") or record["local_id"]
        return (f"cannot {what} batch {which} at {public_url(self._url)} ({said}); its ids are recorded in "
                f"{self.journal.folder}: rerun to resume it (nothing is sent twice)")


async def find_batch(client, record: dict):
    """The server's batch carrying ``metadata.synth_batch`` = the record's local id, or None."""
    async for item in client.batches.list(limit=100):
        if (getattr(item, "metadata", None) or {}).get("synth_batch") == record["local_id"]:
            return item
        if getattr(item, "created_at", 0) and item.created_at < record["created"] - 3600:
            return None  # newest first: older ones cannot be ours
    return None


def _line_error(line: dict) -> tuple[str, str]:
    """(reason, kind) of a failed batch line: a request error, an expired request, or a non-200 reply."""
    error = line.get("error")
    if isinstance(error, dict):
        code = str(error.get("code") or "batch_error")
        return f"{code}: {error.get('message') or ''}".strip(), code if code == "batch_expired" else "batch_error"
    response = line.get("response") or {}
    status = response.get("status_code")
    body = response.get("body")
    message = ""
    if isinstance(body, dict):
        inner = body.get("error")
        message = inner.get("message", "") if isinstance(inner, dict) else str(inner or body.get("message") or "")
    return f"HTTP {status}: {message}".strip(), f"http_{status}"


# ---------------------------------------------------------------- `synth batches`


def list_batches(path: str | os.PathLike) -> list[dict[str, Any]]:
    return BatchJournal(find_journal(path)).records()


def cancel_batches(path: str | os.PathLike, base_url: str | None = None) -> list[str]:
    """Cancel the unfinished batches recorded under `path` (also one whose create reply a kill cut off);
    a batch never submitted is marked cancelled here. The next run counts their requests as failures."""
    from synth.llm.base import run_sync

    journal = BatchJournal(find_journal(path))
    records = [r for r in journal.pending() if r["state"] != "downloaded" and r.get("status") not in TERMINAL]

    async def run():
        import openai

        cancelled = []
        clients: dict[str, Any] = {}
        try:
            for record in records:
                url = base_url or record["base_url"]
                if url not in clients:
                    clients[url] = openai.AsyncOpenAI(base_url=url, max_retries=2, api_key=os.environ.get(
                        record.get("api_key_env") or "OPENAI_API_KEY") or "sk-no-key-needed")
                client = clients[url]
                try:
                    if not record.get("batch_id") and record.get("file_id"):
                        found = await find_batch(client, record)
                        if found is not None:
                            record.update(state="submitted", batch_id=found.id)
                    if record.get("batch_id"):
                        batch = await client.batches.cancel(record["batch_id"])
                        record["status"] = batch.status
                        cancelled.append(record["batch_id"])
                    else:  # never submitted: nothing at the server; its requests fail in the next run
                        for kind in ("output", "errors"):
                            journal.write_file(record, kind, b"")
                        record.update(state="downloaded", status="cancelled")
                        cancelled.append(record["local_id"])
                except openai.APIError as e:
                    said = " ".join(redact(str(e)).split())[:160]
                    raise SynthError(f"cannot cancel batch {record.get('batch_id') or record['local_id']} at "
                                     f"{url} ({said}); check {record.get('api_key_env')} and --base-url") from None
                journal.save(record)
        finally:
            for client in clients.values():
                await client.close()
        return cancelled

    return run_sync(run)
