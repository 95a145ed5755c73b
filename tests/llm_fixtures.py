"""pytest fixtures for the loopback OpenAI-compatible test server (a fixture, never a model).

    def test_something(llm_server, llm_backend):
        llm_server.script({"capital of France": "Paris"})
        llm_server.fault("429", first=1, retry_after=0.1)
        out = llm_backend.complete([ChatRequest(messages=[...])])
        assert llm_server.request_count == 2

`llm_server` is a fresh `synth.llm.testing.LLMTestServer` per test (`.base_url`, `.script()`, `.fault()`,
`.requests`, `.request_count`, `.max_in_flight`, `.prompt_counts()`). `llm_backend` is an `OpenAIBackend`
pointed at it with fast retries; `make_llm_backend(**config)` builds one with other options;
`llm_server_factory(**opts)` starts more servers (replicas, or a server that checks like a real one:
``api_key=``, ``strict_model=True``, ``reject_max_tokens=True``).

The backend's circuit breaker stops a run (raises `synth.errors.BackendUnavailable`) when an endpoint
fails every try before any success: a test that injects a fault on *every* request from the start
(``fault("500")``, ``fault("html")``...) gets that error, not failed completions. To test per-record
failures, fault only some records (``marker=``) or let one request succeed first.
"""

from __future__ import annotations

import pytest

from synth.llm.testing import LLMTestServer

FAST_RETRY = {"backoff_base": 0.01, "backoff_max": 0.05, "timeout": 5.0}


@pytest.fixture
def llm_server_factory():
    servers: list[LLMTestServer] = []

    def make(**options) -> LLMTestServer:
        server = LLMTestServer(**options).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def llm_server(llm_server_factory) -> LLMTestServer:
    return llm_server_factory()


@pytest.fixture
def make_llm_backend(llm_server, monkeypatch):
    """Build an OpenAIBackend on the test server; keyword arguments are `OpenAIConfig` fields."""
    from synth.llm.openai_compat import OpenAIBackend, OpenAIConfig

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    backends = []

    def make(**config):
        options = {"model": "test-model", "base_urls": [llm_server.base_url], **FAST_RETRY, **config}
        backend = OpenAIBackend(OpenAIConfig(**options))
        backends.append(backend)
        return backend

    yield make
    for backend in backends:
        backend.close()


@pytest.fixture
def llm_backend(make_llm_backend):
    return make_llm_backend()
