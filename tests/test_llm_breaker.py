"""Fail fast on an unusable endpoint (circuit breaker), keep retrying transient faults, classify failures.

Misconfiguration tests use the backend's *default* retry settings (backoff 0.5 s, 5 retries,
concurrency 16): the point is that a real user's run stops within seconds, not after minutes.
"""

from __future__ import annotations

import logging
import socket
import time

import pytest
from pydantic import BaseModel

from synth.errors import BackendUnavailable, SynthError
from synth.llm.base import ChatRequest
from synth.llm.cache import CachedBackend
from synth.llm.openai_compat import OpenAIBackend, OpenAIConfig
from synth.records import ImagePart, Message

FAST_FAIL = 5.0  # seconds: "stops within a few seconds"


def ask(text: str, **kw) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], key=text, **kw)


def batch(n: int, prefix: str = "q") -> list[ChatRequest]:
    return [ask(f"{prefix} {i}") for i in range(n)]


def dead_port() -> int:
    """A port nothing listens on: bound, then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_for(url: str | list[str], **config) -> OpenAIBackend:
    urls = [url] if isinstance(url, str) else url
    return OpenAIBackend(OpenAIConfig(model=config.pop("model", "test-model"), base_urls=urls, **config))


def fails_fast(backend, requests=None) -> tuple[BackendUnavailable, float]:
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        backend.complete(requests if requests is not None else batch(200))
    elapsed = time.monotonic() - started
    assert elapsed < FAST_FAIL, f"took {elapsed:.1f} s"
    return info.value, elapsed


@pytest.fixture(autouse=True)
def no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


# ---------------------------------------------------------------- misconfigurations stop within seconds


@pytest.mark.parametrize("concurrency", [1, 16])
def test_dead_port(concurrency):
    url = f"http://127.0.0.1:{dead_port()}/v1"
    error, _ = fails_fast(backend_for(url, concurrency=concurrency))
    assert str(error) == f"connection refused at {url}: is the server running? check --base-url"
    assert isinstance(error, SynthError) and error.url == url and error.kind == "connection"


def test_unknown_host():
    url = "http://no-such-host.invalid:8000/v1"
    error, _ = fails_fast(backend_for(url))
    assert str(error) == f"cannot resolve the host 'no-such-host.invalid' of {url}: check --base-url"


def test_wrong_api_key(llm_server_factory, monkeypatch):
    server = llm_server_factory(api_key="sk-right")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    error, _ = fails_fast(backend_for(server.base_url))
    assert str(error) == (f"401 from {server.base_url}: check OPENAI_API_KEY "
                          "(server said: Incorrect API key provided.)")
    assert error.kind == "http_401"
    assert server.request_count <= 16 + 3  # the first wave in flight, not 200 × 6 tries


def test_forbidden_names_the_key_env(llm_server):
    llm_server.fault("403")
    error, _ = fails_fast(backend_for(llm_server.base_url, api_key_env="MY_LLM_KEY", concurrency=2))
    assert str(error).startswith(f"403 from {llm_server.base_url}: check MY_LLM_KEY")


def test_wrong_model(llm_server_factory):
    server = llm_server_factory(strict_model=True)
    error, _ = fails_fast(backend_for(server.base_url, model="lama-3-8b"))
    assert str(error) == (f"404 from {server.base_url}: check --base-url (it usually ends in /v1) and --model "
                          "'lama-3-8b' (server said: The model `lama-3-8b` does not exist.)")
    assert backend_for(server.base_url).complete([ask("right model")])[0].ok


def test_base_url_without_v1(llm_server):
    url = llm_server.base_url.removesuffix("/v1")
    error, _ = fails_fast(backend_for(url))
    assert str(error).startswith(f"404 from {url}: check --base-url (it usually ends in /v1)")


@pytest.mark.parametrize("kind, message", [
    ("html", "{url} answered with HTML, not JSON: --base-url probably points at a web page, not the API"),
    ("plain_text", "{url} answered with a body that is not JSON ('OK'): check that --base-url is an "
                   "OpenAI-compatible API (it usually ends in /v1)"),
    ("wrong_json", "{url} answered JSON that is not a chat completion"),
])
def test_a_body_that_is_not_a_chat_completion(llm_server, kind, message):
    llm_server.fault(kind)
    error, _ = fails_fast(backend_for(llm_server.base_url))
    assert str(error).startswith(message.format(url=llm_server.base_url))
    assert error.kind == "bad_response"


def test_a_tripped_backend_refuses_the_next_call_at_once(llm_server):
    llm_server.fault("401")
    backend = backend_for(llm_server.base_url, concurrency=1)
    fails_fast(backend, batch(5))
    sent = llm_server.request_count
    with pytest.raises(BackendUnavailable, match="401 from"):
        backend.complete(batch(5, "again"))
    assert llm_server.request_count == sent


def test_the_cache_passes_the_error_on_and_stores_nothing(tmp_path):
    url = f"http://127.0.0.1:{dead_port()}/v1"
    backend = CachedBackend(backend_for(url), tmp_path / "c.sqlite")
    fails_fast(backend)
    assert len(backend.cache) == 0
    backend.close()


# ---------------------------------------------------------------- replicas


def test_a_dead_replica_is_taken_out_and_the_run_succeeds_on_the_other(llm_server, caplog):
    dead = f"http://127.0.0.1:{dead_port()}/v1"
    backend = backend_for([dead, llm_server.base_url])  # default backoff: being slow here would show
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="synth.llm.openai_compat"):
        out = backend.complete(batch(100))
    assert time.monotonic() - started < FAST_FAIL
    assert all(c.ok for c in out) and [c.text for c in out] == [f"q {i}" for i in range(100)]
    assert llm_server.request_count == 100
    assert f"replica taken out: connection refused at {dead}" in caplog.text
    assert backend.complete(batch(10, "later"))[0].ok  # stays out: no new failures, no waiting


def test_all_replicas_unusable(llm_server):
    dead = f"http://127.0.0.1:{dead_port()}/v1"
    llm_server.fault("401")
    error, _ = fails_fast(backend_for([dead, llm_server.base_url]))
    assert str(error).startswith(f"all 2 replicas are unusable: connection refused at {dead}: is the server "
                                 f"running? check --base-url; 401 from {llm_server.base_url}: check OPENAI_API_KEY")


# ---------------------------------------------------------------- transient faults


def test_a_burst_of_429_and_500_still_succeeds(llm_server, make_llm_backend):
    backend = make_llm_backend(concurrency=8)
    llm_server.fault("429", first=10, retry_after=0.05)
    llm_server.fault("500", first=10)
    out = backend.complete(batch(40))
    assert all(c.ok for c in out), [c.error for c in out if not c.ok]
    assert backend.usage.retries == 20 and llm_server.request_count == 60


def test_a_server_that_fails_everything_stops_the_run(llm_server, make_llm_backend):
    backend = make_llm_backend(concurrency=4, max_retries=2)
    llm_server.fault("500")
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        backend.complete(batch(1000))
    assert time.monotonic() - started < FAST_FAIL
    assert str(info.value) == (f"the first 3 requests to {llm_server.base_url} all failed, each after 2 retries "
                               "(last: HTTP 500: injected fault 500): the server fails every request: check its logs")
    assert info.value.kind == "http_500"
    assert llm_server.request_count <= 4 * 3 + 4  # the first few requests' tries, not 1,000 × 3


def test_timeouts_on_every_request_stop_the_run(llm_server, make_llm_backend):
    backend = make_llm_backend(concurrency=4, max_retries=1, timeout=0.2)
    llm_server.fault("slow", delay=3)
    with pytest.raises(BackendUnavailable, match=r"no reply within 0.2 s: .*lower --concurrency") as info:
        backend.complete(batch(100))
    assert info.value.kind == "timeout"


def test_fewer_failed_requests_than_the_limit_are_recorded_failures(llm_server, make_llm_backend):
    backend = make_llm_backend(max_retries=1)
    llm_server.fault("503")
    out = backend.complete(batch(2))  # two failures (< breaker_requests=3) are not a verdict on the server
    assert [c.error_kind for c in out] == ["http_503", "http_503"]


def test_failures_after_a_success_never_trip(llm_server, make_llm_backend):
    backend = make_llm_backend(concurrency=2, max_retries=1)
    assert backend.complete([ask("warm-up")])[0].ok
    llm_server.fault("500")
    out = backend.complete(batch(10))
    assert [c.error_kind for c in out] == ["http_500"] * 10
    llm_server.clear_faults()
    llm_server.fault("401")
    out = backend.complete(batch(4, "k"))
    # Refused after the replica served: a per-request failure, and not retried (it cannot help).
    assert [c.error_kind for c in out] == ["http_401"] * 4
    assert "HTTP 401" in out[0].error
    assert llm_server.request_count == 1 + 10 * 2 + 4


# ---------------------------------------------------------------- failure reasons


def test_error_kind_names_each_failure(llm_server, make_llm_backend):
    class Answer(BaseModel):
        answer: str

    # 1.5 s: far below the slow fault's 3 s, and above a stall of the shared machine (at 0.3 s a full-suite run
    # once saw every request, the instant ones too, time out)
    backend = make_llm_backend(max_retries=0, timeout=1.5, max_reask=0)
    assert backend.complete([ask("warm-up")])[0].ok
    llm_server.script({"structured": "not json"})
    llm_server.fault("503", marker="five-oh-three")
    llm_server.fault("status", status=400, marker="bad-request")
    llm_server.fault("slow", marker="slow-one", delay=3)
    llm_server.fault("drop", marker="dropped")
    llm_server.fault("plain_text", marker="garbled")
    image_mismatch = ChatRequest(messages=[Message(role="user", content=[ImagePart()])], key="image")
    out = backend.complete([ask("five-oh-three"), ask("bad-request"), ask("slow-one"), ask("dropped"),
                            ask("garbled"), ask("structured", schema_model=Answer), image_mismatch, ask("fine")])
    assert [c.error_kind for c in out] == ["http_503", "http_400", "timeout", "connection", "bad_response",
                                           "unparseable", "invalid_request", None]
    assert out[-1].ok and all(c.error for c in out[:-1])
