"""Request cache: reruns send nothing, interrupted runs resume, concurrent writers, no secrets on disk."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from PIL import Image
from pydantic import BaseModel

from synth.llm.base import ChatRequest
from synth.llm.cache import CachedBackend, request_hash
from synth.llm.openai_compat import OpenAIBackend, OpenAIConfig
from synth.records import ImagePart, Message, TextPart


def ask(text: str, **kw) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], key=text, **kw)


def batch(n: int, prefix: str = "q") -> list[ChatRequest]:
    return [ask(f"{prefix} {i}") for i in range(n)]


def rows(path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0]


def test_rerun_sends_zero_requests(llm_server, make_llm_backend, tmp_path):
    path = tmp_path / "cache.sqlite"
    first = CachedBackend(make_llm_backend(), path)
    out1 = first.complete(batch(20))
    assert llm_server.request_count == 20 and not any(c.cached for c in out1)
    first.close()

    second = CachedBackend(make_llm_backend(), path)
    out2 = second.complete(batch(20))
    assert llm_server.request_count == 20  # nothing new reached the server
    assert all(c.cached for c in out2)
    assert [c.text for c in out2] == [c.text for c in out1]
    assert [c.key for c in out2] == [f"q {i}" for i in range(20)]
    assert (second.usage.requests, second.usage.cached) == (0, 20)
    assert out2[0].usage == out1[0].usage


def test_each_sample_is_an_entry_and_more_samples_only_ask_for_the_rest(llm_server, make_llm_backend, tmp_path):
    llm_server.script(lambda body: [f"s{i}" for i in range(body.get("n", 1))])
    backend = CachedBackend(make_llm_backend(), tmp_path / "c.sqlite")
    assert backend.complete([ask("x", n=4)])[0].texts == ["s0", "s1", "s2", "s3"]
    assert rows(tmp_path / "c.sqlite") == 4
    out = backend.complete([ask("x", n=6)])
    assert out[0].texts == ["s0", "s1", "s2", "s3", "s0", "s1"]
    assert llm_server.request_count == 2 and llm_server.requests[1]["n"] == 2
    assert backend.complete([ask("x", n=2)])[0].cached and llm_server.request_count == 2


def test_params_schema_and_images_are_part_of_the_key(tmp_path):
    class A(BaseModel):
        a: int

    base = request_hash("m", ask("x"))
    assert base == request_hash("m", ask("x"))
    assert base != request_hash("m2", ask("x"))
    assert base != request_hash("m", ask("x", temperature=0.5))
    assert base != request_hash("m", ask("x", schema_model=A))
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buf, format="PNG")
    path = tmp_path / "a.png"
    path.write_bytes(buf.getvalue())
    msgs = [Message(role="user", content=[ImagePart(), TextPart(text="?")])]
    by_path = request_hash("m", ChatRequest(messages=msgs, images=[str(path)]))
    by_bytes = request_hash("m", ChatRequest(messages=msgs, images=[buf.getvalue()]))
    other = Image.new("RGB", (4, 4), "blue")
    assert by_path == by_bytes != request_hash("m", ChatRequest(messages=msgs, images=[other]))


def test_cancelled_run_resumes_with_only_the_rest(llm_server_factory, make_llm_backend, tmp_path):
    server = llm_server_factory(latency=0.05)
    path = tmp_path / "c.sqlite"
    backend = CachedBackend(make_llm_backend(base_urls=[server.base_url], concurrency=4), path)

    async def interrupted():
        done = []
        enough = asyncio.Event()

        def progress(completion):
            done.append(completion)
            if len(done) >= 10:
                enough.set()

        task = asyncio.ensure_future(backend.acomplete(batch(60), progress))
        await enough.wait()
        task.cancel()  # like Ctrl-C: in-flight requests are abandoned, finished ones are kept
        with pytest.raises(asyncio.CancelledError):
            await task
        await backend.aclose()
        return len(done)

    finished = asyncio.run(interrupted())
    saved = rows(path)
    assert 10 <= finished == saved < 60
    sent_before = server.request_count
    out = CachedBackend(make_llm_backend(base_urls=[server.base_url]), path).complete(batch(60))
    assert all(c.ok for c in out) and [c.text for c in out] == [f"q {i}" for i in range(60)]
    assert server.request_count - sent_before == 60 - saved
    assert sum(c.cached for c in out) == saved


WORKER = textwrap.dedent("""
    import sys
    from synth.llm.base import ChatRequest
    from synth.llm.cache import CachedBackend
    from synth.llm.openai_compat import OpenAIBackend, OpenAIConfig
    from synth.records import Message

    url, path, prompts = sys.argv[1], sys.argv[2], sys.argv[3:]
    if len(prompts) == 2 and prompts[1].isdigit():  # PREFIX N
        prompts = [f"{prompts[0]} {i}" for i in range(int(prompts[1]))]
    backend = CachedBackend(OpenAIBackend(OpenAIConfig(model="m", base_urls=[url], concurrency=8)), path)
    requests = [ChatRequest(messages=[Message(role="user", content=p)], key=p) for p in prompts]
    # Printed once the cache has committed the completion (the cache stores before it reports).
    backend.complete(requests, lambda completion: print(completion.key, flush=True))
""")


def test_killed_process_resends_only_what_had_not_arrived(llm_server_factory, tmp_path):
    server = llm_server_factory(latency=0.05)
    server.fault("slow", marker="hang", delay=30)  # in flight when the process dies
    path = tmp_path / "c.sqlite"
    prompts = [f"hang {i}" for i in range(3)] + [f"q {i}" for i in range(60)]
    proc = subprocess.Popen([sys.executable, "-c", WORKER, server.base_url, str(path), *prompts],
                            stdout=subprocess.PIPE, text=True)
    arrived = []
    for line in proc.stdout:
        arrived.append(line.strip())
        if len(arrived) >= 15:
            break
    os.kill(proc.pid, signal.SIGKILL)  # mid-run: 5 workers still cycling through q requests
    proc.wait()
    saved = rows(path)
    assert 15 <= saved < 60
    server.clear_faults()
    before = server.prompt_counts()
    backend = CachedBackend(OpenAIBackend(OpenAIConfig(model="m", base_urls=[server.base_url])), path)
    out = backend.complete([ask(p) for p in prompts])
    assert all(c.ok for c in out) and [c.text for c in out] == prompts
    assert sum(c.cached for c in out) == saved
    again = server.prompt_counts() - before  # what the rerun sent
    assert not any(again[p] for p in arrived), [p for p in arrived if again[p]]  # no arrived answer re-sent
    assert sum(again.values()) == len(prompts) - saved  # exactly what was not stored
    assert all(again[f"hang {i}"] == 1 for i in range(3))  # never answered: asked again, once
    assert max((before + again).values()) <= 2


def test_concurrent_writer_processes_share_one_file(llm_server, tmp_path):
    path = tmp_path / "c.sqlite"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, llm_server.base_url, str(path), p, "40"],
                              stdout=subprocess.DEVNULL) for p in ("a", "b")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert rows(path) == 80
    sent = llm_server.request_count
    backend = CachedBackend(OpenAIBackend(OpenAIConfig(model="m", base_urls=[llm_server.base_url])), path)
    requests = [ChatRequest(messages=[Message(role="user", content=f"{p} {i}")]) for p in "ab" for i in range(40)]
    assert all(c.cached for c in backend.complete(requests))
    assert llm_server.request_count == sent


def test_concurrent_tasks_in_one_loop(llm_server, make_llm_backend, tmp_path):
    backend = CachedBackend(make_llm_backend(), tmp_path / "c.sqlite")

    async def main():
        return await asyncio.gather(*(backend.acomplete(batch(10, f"t{k}")) for k in range(5)))

    results = asyncio.run(main())
    assert all(c.ok for out in results for c in out)
    assert rows(tmp_path / "c.sqlite") == 50


def test_each_completion_is_committed_before_it_is_reported(llm_server, make_llm_backend, tmp_path):
    path = tmp_path / "c.sqlite"
    backend = CachedBackend(make_llm_backend(concurrency=2), path)
    seen = []

    def progress(completion):
        # Another connection (as another process would) already sees the row: it is committed.
        with sqlite3.connect(path) as conn:
            seen.append(conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0])

    backend.complete(batch(6), progress)
    assert seen == list(range(1, 7))


def test_failures_are_not_cached(llm_server, make_llm_backend, tmp_path):
    path = tmp_path / "c.sqlite"
    llm_server.fault("503", marker="flaky")
    backend = CachedBackend(make_llm_backend(max_retries=1), path)
    out = backend.complete([ask("fine"), ask("flaky")])
    assert [c.ok for c in out] == [True, False]
    assert out[1].error_kind == "http_503" and rows(path) == 1
    llm_server.clear_faults()
    sent = llm_server.request_count
    out = backend.complete([ask("fine"), ask("flaky")])
    assert [c.ok for c in out] == [True, True] and [c.cached for c in out] == [True, False]
    assert llm_server.request_count == sent + 1


def test_invalid_structured_output_is_not_cached(llm_server, make_llm_backend, tmp_path):
    class A(BaseModel):
        a: int

    llm_server.script({"x": ["no json", '{"a": 1}']})
    path = tmp_path / "c.sqlite"
    backend = CachedBackend(make_llm_backend(max_reask=0), path)
    first = backend.complete([ask("x", schema_model=A)])[0]
    assert not first.ok and first.error_kind == "unparseable" and rows(path) == 0
    second = backend.complete([ask("x", schema_model=A)])[0]
    assert second.ok and not second.cached and second.parsed == [A(a=1)] and rows(path) == 1


def test_structured_hits_are_parsed(llm_server, make_llm_backend, tmp_path):
    class A(BaseModel):
        a: int

    llm_server.script('{"a": 7}')
    backend = CachedBackend(make_llm_backend(), tmp_path / "c.sqlite")
    backend.complete([ask("x", schema_model=A)])
    again = backend.complete([ask("x", schema_model=A)])[0]
    assert again.cached and again.parsed == [A(a=7)] and llm_server.request_count == 1


def test_cache_file_never_contains_the_api_key(llm_server, monkeypatch, tmp_path):
    secret = "sk-test-SECRET-4f9a1c"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    path = tmp_path / "c.sqlite"
    inner = OpenAIBackend(OpenAIConfig(model="m", base_urls=[llm_server.base_url]))
    backend = CachedBackend(inner, path)
    backend.complete(batch(10))
    assert llm_server.headers[0]["authorization"] == f"Bearer {secret}"  # the key was in use
    files = [p for p in tmp_path.iterdir() if p.name.startswith("c.sqlite")]
    assert files and rows(path) == 10
    for file in files:  # the database, its WAL and shared-memory files
        assert secret.encode() not in file.read_bytes()
    assert secret not in repr(backend)


def test_wraps_the_local_backend_too(tmp_path):
    from synth.llm.local import LocalBackend, LocalConfig
    from synth.llm.tiny import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny")  # random weights: noise, but deterministic greedy noise
    path = tmp_path / "c.sqlite"
    requests = [ask(f"Write about {w}", max_tokens=6, temperature=0.0) for w in ("sea", "sky", "sun")]
    first = CachedBackend(LocalBackend(LocalConfig(model=str(model), device="cpu")), path)
    out1 = first.complete(requests)
    assert all(c.ok for c in out1) and first.usage.requests == 3
    second = CachedBackend(LocalBackend(LocalConfig(model=str(model), device="cpu")), path)
    out2 = second.complete(requests)
    assert all(c.cached for c in out2) and [c.texts for c in out2] == [c.texts for c in out1]
    assert (second.usage.requests, second.usage.cached) == (0, 3)
