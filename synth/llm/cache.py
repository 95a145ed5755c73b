"""Persistent request cache: a rerun sends zero requests, and a killed run resumes where it stopped.

`CachedBackend(inner, path)` wraps any backend (OpenAI-compatible or local). Each sample is one row in
a SQLite file (WAL mode), keyed by a hash of the model's identity (its `identity` when the backend has one,
e.g. a local model with a LoRA adapter, named by the adapter's content hash; else its name), the messages (images by content hash), the
sampling parameters, the schema and the sample index — so ``n=4`` stores four rows, and raising ``n``
later only asks for the new samples. Hits come back with ``cached=True`` (counted in ``usage.cached``);
only misses reach the inner backend. Each completion is committed as it arrives (one small WAL
transaction; with ``synchronous=NORMAL`` a commit is not fsynced, so it survives ``kill -9`` but not a
power cut), so a killed run loses no answer that had arrived and its rerun sends only the rest. Several
processes may share one file (SQLite locking; writers wait up to `busy_timeout` seconds). Failures are
never cached: a rerun tries them again. The file holds requests' hashes, replies and token counts —
never API keys or request headers.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from synth.errors import SynthError
from synth.llm.base import Backend, ChatRequest, Completion, Usage
from synth.llm.structured import parse_structured, schema_json
from synth.records import image_hash

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    model TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def request_hash(model: str, request: ChatRequest) -> str:
    """Hash of everything that decides a reply, except `n` (each sample has its own index)."""
    messages = []
    images = iter(request.images)
    for m in request.messages:
        if isinstance(m.content, str):
            messages.append([m.role, m.content])
            continue
        parts = []
        for p in m.content:
            if p.type == "text":
                parts.append(["text", p.text])
            else:
                image = next(images, None)
                parts.append(["image", image_hash(image) if image is not None else None])
        messages.append([m.role, parts])
    schema = schema_json(request.schema_model) if request.schema_model is not None else None
    payload = [model, messages, request.temperature, request.top_p, request.max_tokens, request.stop,
               request.seed, schema]
    if request.presence_penalty is not None:  # appended only when set: older cache keys stay valid
        payload.append(request.presence_penalty)
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


def sample_key(base: str, index: int) -> str:
    return f"{base}:{index}"


class RequestCache:
    """The SQLite file. Thread-safe; one connection per process (reopened after a fork)."""

    def __init__(self, path: str | os.PathLike, busy_timeout: float = 60.0):
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=self.busy_timeout, check_same_thread=False,
                                       isolation_level=None)
                self._setup(conn)
            except sqlite3.Error as e:
                raise SynthError(f"cannot open the request cache {self.path}: {e} "
                                 "(delete the file or pick another cache dir)") from e
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        """WAL mode and the schema. Two processes opening a new file at once can get "database is locked"
        from the journal-mode switch without SQLite's busy wait, so that one is retried up to busy_timeout."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")  # a commit survives kill -9 (not power loss)
                conn.execute(_SCHEMA)
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple]:
        """{key: (text, finish_reason, prompt_tokens, completion_tokens)} for the keys present."""
        found: dict[str, tuple] = {}
        with self._lock:
            conn = self._connection()
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    "SELECT key, text, finish_reason, prompt_tokens, completion_tokens FROM completions "
                    f"WHERE key IN ({marks})", chunk)
                for key, *rest in rows:
                    found[key] = tuple(rest)
        return found

    def put(self, rows: Sequence[tuple[str, str, str, int, int, str]]) -> None:
        """Store (key, text, finish_reason, prompt_tokens, completion_tokens, model) rows and commit now:
        one transaction, so the samples of one completion are there all together or not at all."""
        now = time.time()
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany("INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?, ?, ?, ?)",
                                     [(*row, now) for row in rows])
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise SynthError(f"cannot write the request cache {self.path}: {e} (disk full? another "
                                 "process holding it? or pass --no-cache)") from e

    def __len__(self) -> int:
        with self._lock:
            return self._connection().execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


class CachedBackend(Backend):
    """Serve hits from the cache, forward misses to `inner`, store what comes back."""

    def __init__(self, inner: Backend, path: str | os.PathLike):
        super().__init__()
        self.inner = inner
        self.cache = RequestCache(path)
        self.usage = inner.usage  # one set of totals: the inner's requests plus our hits
        self.model_name = inner.model_name
        # What decides the replies: a local model names its adapter's content (and its folder's files) here,
        # so a retrained adapter at the same path never gets the old answers.
        self.identity = getattr(inner, "identity", None) or inner.model_name
        self.supports_images = inner.supports_images
        self.supports_presence_penalty = inner.supports_presence_penalty

    def __repr__(self) -> str:
        return f"CachedBackend({self.inner!r}, path={str(self.cache.path)!r})"

    def complete(self, requests: Sequence[ChatRequest], progress=None) -> list[Completion]:
        # The inner backend may need to tidy up at the end of a sync call (e.g. close HTTP connections).
        from synth.llm.base import run_sync

        async def run():
            try:
                return await self.acomplete(requests, progress)
            finally:
                if hasattr(self.inner, "aclose"):
                    await self.inner.aclose()

        return run_sync(run)

    async def acomplete(self, requests: Sequence[ChatRequest], progress=None) -> list[Completion]:
        model = self.identity
        bases = [request_hash(model, r) for r in requests]
        hits = self.cache.get_many([sample_key(b, i) for b, r in zip(bases, requests) for i in range(r.n)])
        results: list[Completion | None] = [None] * len(requests)
        forwarded: list[tuple[int, list[int]]] = []  # (request position, missing sample indices)
        for pos, (base, request) in enumerate(zip(bases, requests)):
            rows = [hits.get(sample_key(base, i)) for i in range(request.n)]
            completion = self._from_rows(request, rows) if all(rows) else None
            if completion is None:
                forwarded.append((pos, [i for i, row in enumerate(rows) if row is None] or list(range(request.n))))
            else:
                results[pos] = completion
        with self.usage.lock:
            self.usage.cached += len(requests) - len(forwarded)
        if progress is not None:
            for completion in results:
                if completion is not None:
                    progress(completion)
        if not forwarded:
            return results  # type: ignore[return-value]

        inner_requests = [requests[pos].model_copy(update={"n": len(missing), "key": str(j)})
                          for j, (pos, missing) in enumerate(forwarded)]

        def on_done(completion: Completion) -> None:
            j = int(completion.key) if completion.key is not None and completion.key.isdigit() else -1
            if 0 <= j < len(forwarded) and results[forwarded[j][0]] is None:
                merged = self._store(requests, bases, hits, forwarded[j], completion)
                results[forwarded[j][0]] = merged
                if progress is not None:
                    progress(merged)

        # Each completion is stored (committed) in on_done, as it arrives, before anyone hears of it.
        completions = await self.inner.acomplete(inner_requests, on_done)
        for j, completion in enumerate(completions):  # backends that don't report progress
            if results[forwarded[j][0]] is None:
                completion = completion.model_copy(update={"key": str(j)})
                on_done(completion)
        return results  # type: ignore[return-value]

    def _store(self, requests, bases, hits, forwarded: tuple[int, list[int]], completion: Completion) -> Completion:
        """Write the new samples, and merge them with the cached ones in sample order."""
        pos, missing = forwarded
        request = requests[pos]
        if not completion.ok:  # never stored: a rerun asks again
            return completion.model_copy(update={"key": request.key})
        if len(completion.texts) != len(missing):
            return completion.model_copy(update={
                "key": request.key, "error": f"backend returned {len(completion.texts)} of {len(missing)} samples",
                "error_kind": "incomplete"})
        usage = completion.usage
        share, rest = divmod(usage.completion_tokens, len(missing))
        # Token counts are split over the samples so a full hit adds up to what the call cost.
        self.cache.put([(sample_key(bases[pos], index), text, finish, usage.prompt_tokens if k == 0 else 0,
                         share + (rest if k == 0 else 0), self.model_name)
                        for k, (index, text, finish) in enumerate(zip(missing, completion.texts,
                                                                       completion.finish_reasons))])
        if len(missing) == request.n:
            return completion.model_copy(update={"key": request.key})
        # A partial hit: cached samples plus the new ones.
        texts, finishes, parsed = [], [], [] if request.schema_model is not None else None
        new = dict(zip(missing, range(len(missing))))
        for i in range(request.n):
            if i in new:
                k = new[i]
                texts.append(completion.texts[k])
                finishes.append(completion.finish_reasons[k] if k < len(completion.finish_reasons) else "stop")
                if parsed is not None:
                    parsed.append(completion.parsed[k] if completion.parsed else None)
            else:
                text, finish, *_ = hits[sample_key(bases[pos], i)]
                texts.append(text)
                finishes.append(finish)
                if parsed is not None:
                    parsed.append(parse_structured(text, request.schema_model)[0])
        return Completion(key=request.key, texts=texts, finish_reasons=finishes, parsed=parsed, usage=usage)

    @staticmethod
    def _from_rows(request: ChatRequest, rows: list[tuple]) -> Completion | None:
        texts = [row[0] for row in rows]
        parsed = None
        if request.schema_model is not None:
            parsed = []
            for text in texts:
                value, error = parse_structured(text, request.schema_model)
                if error is not None:
                    return None  # stale or foreign row: ask again
                parsed.append(value)
        usage = Usage(prompt_tokens=sum(r[2] for r in rows), completion_tokens=sum(r[3] for r in rows))
        return Completion(key=request.key, texts=texts, finish_reasons=[r[1] for r in rows], parsed=parsed,
                          usage=usage, cached=True)

    async def aclose(self) -> None:
        if hasattr(self.inner, "aclose"):
            await self.inner.aclose()

    def close(self) -> None:
        self.cache.close()
        self.inner.close()
