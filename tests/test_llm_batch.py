"""Batch mode against the loopback server's /v1/files and /v1/batches: same outputs as online, failures
never dropped, and a kill -9 at any phase resumes the same batches (requests counted at the server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import httpx
import pytest
from pydantic import BaseModel

from synth.errors import SynthError
from synth.llm.base import ChatRequest
from synth.llm.batch import BatchJournal, journal_dir
from synth.llm.factory import make_backend
from synth.llm.usage import Prices
from synth.records import Message
from tests.cli_helpers import one_line_error, run_cli
from tests.llm_fixtures import FAST_RETRY

FAST_BATCH = {**FAST_RETRY, "batch": True, "batch_poll_interval": 0.01}
SCRIPT = {"capital": "Paris", "colour": {"content": "blue and long", "finish_reason": "length"}}


class Answer(BaseModel):
    answer: str


def ask(text: str, **kw) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], key=text, **kw)


def requests_(count: int = 12) -> list[ChatRequest]:
    out = [ask(f"question {i}", temperature=0.5, max_tokens=20, seed=i) for i in range(count)]
    return out + [ask("the capital of France?"), ask("your colour?", n=2), ask("the capital of France?"),
                  ask('{"answer": "yes"}', schema_model=Answer)]


def view(completions) -> list:
    return [(c.key, c.texts, c.finish_reasons, c.error_kind, c.usage.prompt_tokens, c.usage.completion_tokens,
             [p.model_dump() for p in c.parsed] if c.parsed else None) for c in completions]


def batch_backend(server, cache, **options):
    return make_backend("openai", "test-model", server.base_url, cache_dir=cache, **{**FAST_BATCH, **options})


@pytest.fixture(autouse=True)
def _no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def test_batch_outputs_equal_online_and_go_into_the_cache(tmp_path, llm_server_factory):
    online_server, batch_server = llm_server_factory(), llm_server_factory(batch_delay=0.05)
    for server in (online_server, batch_server):
        server.script(SCRIPT)
    online = make_backend("openai", "test-model", online_server.base_url, cache_dir=tmp_path / "a", **FAST_RETRY)
    expected = view(online.complete(requests_()))
    backend = batch_backend(batch_server, tmp_path / "b", batch_max_requests=5,
                            prices=Prices(prompt=2, completion=8), batch_prices=Prices(prompt=1, completion=4))
    got = backend.complete(requests_())
    assert view(got) == expected and not any(c.cached for c in got)
    # 15 distinct requests (the repeated one is sent once) in files of at most 5 lines; nothing online.
    assert (batch_server.batch_creates, batch_server.file_uploads, batch_server.batch_lines) == (3, 3, 15)
    assert batch_server.request_count == 15
    assert all(count == 1 for count in batch_server.prompt_counts().values())
    usage = backend.usage
    assert (usage.requests, usage.failures, usage.prompt_tokens) == (15, 0, online.usage.prompt_tokens - 5)  # the repeat: 4 words + 1
    assert usage.cost == pytest.approx((usage.prompt_tokens * 1 + usage.completion_tokens * 4) / 1e6)
    assert [r["state"] for r in BatchJournal(journal_dir(tmp_path / "b")).records()] == ["done"] * 3
    # A rerun, online or in batch mode, is served from the cache.
    backend.close()
    again = make_backend("openai", "test-model", batch_server.base_url, cache_dir=tmp_path / "b", **FAST_RETRY)
    assert [c.texts for c in again.complete(requests_())] == [e[1] for e in expected]
    assert batch_server.request_count == 15 and again.usage.cached == len(requests_())


def test_batch_files_split_by_size(tmp_path, llm_server_factory):
    server = llm_server_factory()
    backend = batch_backend(server, tmp_path, batch_max_bytes=1024)
    out = backend.complete([ask(f"{i} " + "x" * 300) for i in range(10)])
    assert all(c.ok for c in out)
    records = BatchJournal(journal_dir(tmp_path)).records()
    assert server.batch_creates == len(records) >= 4
    assert all(len(BatchJournal(journal_dir(tmp_path)).path(r, "input").read_bytes()) <= 1024 for r in records)


def test_a_batch_failing_half_its_requests_records_failures_and_the_rerun_sends_only_those(
        tmp_path, llm_server_factory):
    server = llm_server_factory()
    server.fault("500", every=2)
    backend = batch_backend(server, tmp_path)
    questions = [ask(f"q {i}") for i in range(14)]
    first = backend.complete(questions)
    failed = [c for c in first if not c.ok]
    assert len(failed) == 7 and {c.error_kind for c in failed} == {"http_500"}
    assert all("injected fault 500" in c.error for c in failed)
    assert backend.usage.failures == 7 and len(first) == 14  # failures, never drops
    server.clear_faults()
    second = backend.complete(questions)
    assert all(c.ok for c in second) and server.batch_lines == 14 + 7 and server.batch_creates == 2
    ok_before = {c.key: c.texts for c in first if c.ok}
    assert all({c.key: c.texts for c in second}[k] == v for k, v in ok_before.items())


def test_expired_requests_are_failures_and_come_back_next_run(tmp_path, llm_server_factory):
    server = llm_server_factory(batch_expire_after=4)
    backend = batch_backend(server, tmp_path)
    out = backend.complete([ask(f"q {i}") for i in range(10)])
    assert sum(c.ok for c in out) == 4
    assert {c.error_kind for c in out if not c.ok} == {"batch_expired"}
    server.batch_expire_after = None
    again = backend.complete([ask(f"q {i}") for i in range(10)])
    assert [c.text for c in again] == [f"q {i}" for i in range(10)] and server.batch_lines == 4 + 6


def test_batch_retry_online_serves_failures_at_once(tmp_path, llm_server_factory):
    server = llm_server_factory(batch_expire_after=3)
    backend = batch_backend(server, tmp_path, batch_retry="online")
    out = backend.complete([ask(f"q {i}") for i in range(8)])
    assert [c.text for c in out] == [f"q {i}" for i in range(8)]
    assert server.batch_lines == 3 and server.request_count == 3 + 5


def test_a_server_restart_mid_batch_is_waited_out(tmp_path, llm_server_factory):
    server = llm_server_factory(batch_delay=0.6)
    server.hooks["batch_created"] = lambda event: threading.Timer(0.1, server.restart).start()
    backend = batch_backend(server, tmp_path, timeout=10)
    out = backend.complete([ask(f"q {i}") for i in range(6)])
    assert [c.text for c in out] == [f"q {i}" for i in range(6)]
    assert server.batch_creates == 1 and server.batch_lines == 6


def test_an_unreachable_batch_server_stops_with_where_the_ids_are(tmp_path, llm_server_factory):
    server = llm_server_factory(batch_delay=30)
    backend = batch_backend(server, tmp_path, timeout=0.3)
    server.hooks["batch_created"] = lambda event: threading.Timer(0.05, server.stop).start()
    with pytest.raises(SynthError) as caught:
        backend.complete([ask("q")])
    assert "cannot check batch batch-test-0" in str(caught.value) and str(journal_dir(tmp_path)) in str(caught.value)
    assert "rerun to resume" in str(caught.value)


# ---------------------------------------------------------------- kill -9 at each phase

CHILD = """
import json, sys
from synth.llm.factory import make_backend
from synth.llm.base import ChatRequest
from synth.records import Message
url, cache, out = sys.argv[1:]
backend = make_backend("openai", "test-model", url, cache_dir=cache, batch=True, batch_poll_interval=0.01,
                       batch_max_requests=4, backoff_base=0.01, backoff_max=0.05, timeout=5)
requests = [ChatRequest(messages=[Message(role="user", content=f"q {i}")], key=str(i), seed=i) for i in range(10)]
json.dump([[c.key, c.texts, c.error] for c in backend.complete(requests)], open(out, "w"))
"""


def run_child(tmp_path, server, name: str):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "SYNTH_PROGRESS_INTERVAL": "0"}
    return subprocess.Popen([sys.executable, str(script), server.base_url, str(tmp_path / "cache"),
                             str(tmp_path / name)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("phase", ["file_uploaded", "batch_created", "batch_checked", "file_content"])
def test_kill_9_at_each_phase_then_rerun_submits_nothing_twice(tmp_path, llm_server_factory, phase):
    server = llm_server_factory(batch_delay=0.2)
    child: list[subprocess.Popen] = []
    fired = threading.Event()

    def kill(event):
        if not fired.is_set() and child:
            fired.set()
            os.kill(child[0].pid, signal.SIGKILL)
            child[0].wait()  # dead before the server answers: the client never hears this reply

    server.hooks[phase] = kill
    child.append(run_child(tmp_path, server, "first.json"))
    assert child[0].wait(timeout=60) == -signal.SIGKILL and fired.is_set()
    assert not (tmp_path / "first.json").exists()
    server.hooks.clear()
    rerun = run_child(tmp_path, server, "second.json")
    _, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err.decode()
    got = json.loads((tmp_path / "second.json").read_text())
    assert got == [[str(i), [f"q {i}"], None] for i in range(10)]
    # 10 requests in files of 4: three batches, each created once and each line served once.
    assert server.batch_creates == 3 and server.batch_lines == 10 and server.request_count == 10
    assert all(count == 1 for count in server.prompt_counts().values())
    assert server.file_uploads == 3  # an upload the kill cut off is found again by its name
    records = BatchJournal(journal_dir(tmp_path / "cache")).records()
    assert [r["state"] for r in records] == ["done"] * 3 and len({r["batch_id"] for r in records}) == 3


# ---------------------------------------------------------------- cancel, vLLM files, CLI


def test_synth_batches_lists_and_cancels(tmp_path, llm_server_factory):
    server = llm_server_factory(batch_delay=3600)
    child: list[subprocess.Popen] = []
    server.hooks["batch_checked"] = lambda event: (child and server.batch_creates == 3
                                                   and os.kill(child[0].pid, signal.SIGKILL))
    child.append(run_child(tmp_path, server, "first.json"))
    assert child[0].wait(timeout=60) == -signal.SIGKILL
    server.hooks.clear()
    listing = run_cli("batches", tmp_path / "cache")
    assert listing.exit_code == 0, listing.output
    assert "in_progress" in listing.output and "batch-test-0" in listing.output
    cancelled = run_cli("batches", tmp_path / "cache", "--cancel")
    assert cancelled.exit_code == 0 and "cancelled 3 batch(es)" in cancelled.output, cancelled.output
    rerun = run_child(tmp_path, server, "second.json")
    rerun.communicate(timeout=60)
    got = json.loads((tmp_path / "second.json").read_text())
    assert all(error and "cancelled" in error for _, _, error in got)  # failures, retried by the next run
    assert server.batch_creates == 3 and server.batch_lines == 0
    server.batch_delay = 0
    third = run_child(tmp_path, server, "third.json")
    third.communicate(timeout=60)
    assert [texts for _, texts, _ in json.loads((tmp_path / "third.json").read_text())] == [
        [f"q {i}"] for i in range(10)]
    assert server.batch_creates == 6 and server.batch_lines == 10


def test_vllm_run_batch_files_are_written_and_read_back(tmp_path, llm_server):
    llm_server.script(SCRIPT)
    online = make_backend("openai", "test-model", llm_server.base_url, cache_dir=tmp_path / "a", **FAST_RETRY)
    expected = view(online.complete(requests_(3)))
    backend = make_backend("openai", "test-model", "http://127.0.0.1:9/v1", cache_dir=tmp_path / "b",
                           batch=True, batch_mode="file")
    with pytest.raises(SynthError) as caught:
        backend.complete(requests_(3))
    message = str(caught.value)
    assert message.startswith("batch input written: run `vllm run-batch -i ") and "--model test-model" in message
    (record,) = BatchJournal(journal_dir(tmp_path / "b")).records()
    journal = BatchJournal(journal_dir(tmp_path / "b"))
    # Stand in for `vllm run-batch`: each input line through the chat endpoint, its output format.
    lines = [json.loads(line) for line in journal.path(record, "input").read_text().splitlines()]
    assert {line["url"] for line in lines} == {"/v1/chat/completions"} and len(lines) == 6
    with open(journal.path(record, "output"), "w") as out:
        for line in lines:
            body = httpx.post(llm_server.base_url + "/chat/completions", json=line["body"]).json()
            out.write(json.dumps({"id": "x", "custom_id": line["custom_id"],
                                  "response": {"status_code": 200, "request_id": "r", "body": body},
                                  "error": None}) + "\n")
    assert view(backend.complete(requests_(3))) == expected
    assert BatchJournal(journal_dir(tmp_path / "b")).records()[0]["state"] == "done"


def test_generate_with_batch_on_the_cli(tmp_path, llm_server_factory):
    server = llm_server_factory(batch_delay=0.05)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"instruction": f"Question {i}"}) + "\n" for i in range(300)))
    base = ["generate", tasks, "--base-url", server.base_url, "--model", "test-model", "--temperature", "0",
            "--cache-dir", tmp_path / "cache"]
    result = run_cli(*base, "--out", tmp_path / "out", "--batch")
    assert result.exit_code == 0, result.output
    assert "wrote 300 records" in result.output and "batches: 1 submitted, 0 running, 1 done" in result.output
    assert server.batch_creates == 1 and server.batch_lines == 300  # one shard, one batch (not 256-chunks)
    usage = json.loads((tmp_path / "out" / "usage.json").read_text())["usage"]
    assert usage["requests"] == 300 and usage["failures"] == 0
    listing = run_cli("batches", tmp_path / "cache")
    assert "batch-test-0" in listing.output and "completed" in listing.output
    one_line_error(run_cli(*base, "--out", tmp_path / "o2", "--batch", "--no-cache"), "--batch needs the request cache")
    one_line_error(run_cli("generate", tasks, "--out", tmp_path / "o3", "--backend", "local", "--batch"),
                   "--batch is for --backend openai")
    one_line_error(run_cli("batches", tmp_path / "nothing"), "no batches recorded under")


def test_recipe_backend_takes_batch_options_without_changing_its_fingerprint():
    from synth.run.spec import backend_identity, backend_spec_types

    openai_spec, _ = backend_spec_types()
    online = openai_spec(backend="openai", model="m")
    batched = openai_spec(backend="openai", model="m", batch=True, batch_max_requests=1000,
                          batch_prices={"prompt": 1, "completion": 2})
    assert batched.batch and backend_identity(batched) == backend_identity(online)



def test_a_whole_recipe_in_batch_mode_writes_what_online_writes(tmp_path):
    """Every LLM stage (self-instruct's steps, evolution rounds with their judge, generate) through batches:
    the same rows as online, one batch per step, and `synth batches RUN` lists them."""
    from synth.run import RunOptions, run_recipe
    from tests.run_helpers import backend_block, rows, start_server, write_recipe
    from tests.test_run_loopback import FULL

    outputs = {}
    for mode in ("online", "batch"):
        server = start_server()
        try:
            block = backend_block(server)
            if mode == "batch":
                block += "    batch: true\n    batch_poll_interval: 0.01\n"
            folder = tmp_path / mode
            folder.mkdir()
            recipe = write_recipe(folder, FULL, backends=block)
            run_recipe(recipe, options=RunOptions(runs_dir=folder / "runs", live=False))
            run_dir = folder / "runs" / "full"
            outputs[mode] = {name: rows(run_dir / name) for name in ("self_instruct", "mmevol", "answers", "mix")}
            counts = (server.request_count, server.batch_lines, server.batch_creates)
        finally:
            server.stop()
    assert outputs["batch"] == outputs["online"]
    requests, lines, creates = counts
    assert requests == lines > 0 and creates > 3  # everything went through batches, in several steps
    listing = run_cli("batches", tmp_path / "batch" / "runs" / "full")
    assert listing.exit_code == 0 and "completed" in listing.output, listing.output
