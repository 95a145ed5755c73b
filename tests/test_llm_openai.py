"""OpenAI-compatible backend against the loopback test server: real HTTP, injected faults."""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from PIL import Image

from synth.errors import BackendUnavailable, SynthError
from synth.llm.base import ChatRequest
from synth.llm.images import decode_data_url
from synth.llm.openai_compat import OpenAIBackend, OpenAIConfig, parse_retry_after, token_limit_field
from synth.llm.testing import image_urls
from synth.records import ImagePart, Message, TextPart


def ask(text: str, **kw) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], key=text, **kw)


def batch(n: int, prefix: str = "q") -> list[ChatRequest]:
    return [ask(f"{prefix} {i}") for i in range(n)]


def test_echo_batch_keeps_order_keys_and_usage(llm_server, llm_backend):
    out = llm_backend.complete(batch(20))
    assert [c.key for c in out] == [f"q {i}" for i in range(20)]
    assert [c.text for c in out] == [f"q {i}" for i in range(20)]
    assert all(c.ok and c.finish_reasons == ["stop"] for c in out)
    # The server counts whitespace words: prompt "q i" = 2 (+1), reply = 2.
    assert out[0].usage.prompt_tokens == 3 and out[0].usage.completion_tokens == 2
    u = llm_backend.usage
    assert (u.requests, u.retries, u.failures, u.cached) == (20, 0, 0, 0)
    assert (u.prompt_tokens, u.completion_tokens) == (60, 40)
    assert llm_server.request_count == 20
    assert llm_server.requests[0]["model"] == "test-model"


def test_scripted_replies_and_sampling_params_reach_the_server(llm_server, llm_backend):
    llm_server.script({"France": "Paris", "count": ["one", "two"]})
    out = llm_backend.complete([
        ask("capital of France?", temperature=0.3, top_p=0.9, max_tokens=7, stop=["\n"], seed=5),
        ask("count"), ask("count"), ask("count"),
    ])
    assert [c.text for c in out] == ["Paris", "one", "two", "two"] or sorted(c.text for c in out[1:]) == [
        "one", "two", "two"]
    body = next(b for b in llm_server.requests if "France" in b["messages"][0]["content"])
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["stop"], body["seed"]) == (
        0.3, 0.9, 7, ["\n"], 5)


def test_openai_gets_max_completion_tokens_other_servers_max_tokens(llm_server, make_llm_backend):
    make_llm_backend(token_param="max_completion_tokens").complete([ask("as openai", max_tokens=9)])
    make_llm_backend().complete([ask("as vllm", max_tokens=9)])
    as_openai, as_vllm = llm_server.requests
    assert as_openai["max_completion_tokens"] == 9 and "max_tokens" not in as_openai
    assert as_vllm["max_tokens"] == 9 and "max_completion_tokens" not in as_vllm


def test_token_limit_field_by_host(monkeypatch):
    assert token_limit_field("https://api.openai.com/v1") == "max_completion_tokens"
    for url in ("http://localhost:8000/v1", "https://my-proxy.example.com/openai/v1", "http://api.openai.com.evil/v1"):
        assert token_limit_field(url) == "max_tokens"
    assert token_limit_field("https://api.openai.com/v1", "max_tokens") == "max_tokens"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    default = OpenAIBackend(OpenAIConfig(model="gpt-5-mini"))  # no base URL: OpenAI itself
    assert [r.token_param for r in default.replicas] == ["max_completion_tokens"]


def test_a_server_asking_for_max_completion_tokens_gets_it(llm_server_factory, make_llm_backend):
    server = llm_server_factory(reject_max_tokens=True)  # as OpenAI's reasoning models answer max_tokens
    backend = make_llm_backend(base_urls=[server.base_url], concurrency=1)
    out = backend.complete([ask("a", max_tokens=5), ask("b", max_tokens=5), ask("no limit")])
    assert all(c.ok for c in out)
    assert [sorted(k for k in b if "tokens" in k) for b in server.requests] == [
        ["max_tokens"], ["max_completion_tokens"], ["max_completion_tokens"], []]


@pytest.mark.parametrize("kind", ["500", "503", "drop", "truncate", "non_json", "429"])
def test_each_fault_is_retried_without_losing_items(llm_server, make_llm_backend, kind):
    backend = make_llm_backend(concurrency=4)
    warm = 0
    if kind == "non_json":
        # A 200 with a non-JSON body before any success means a wrong base URL (the circuit breaker trips,
        # see test_llm_breaker.py); once the server has answered properly it is a transient glitch.
        assert backend.complete([ask("warm-up")])[0].ok
        warm = 1
    rule = llm_server.fault(kind, first=5, retry_after=0.01 if kind == "429" else None)
    out = backend.complete(batch(30))
    assert all(c.ok for c in out), [c.error for c in out if not c.ok]
    assert [c.text for c in out] == [f"q {i}" for i in range(30)]
    assert rule.fired == 5 == backend.usage.retries
    assert llm_server.request_count == 35 + warm == backend.usage.requests
    assert backend.usage.failures == 0


def test_recurring_faults_every_nth_request(llm_server, make_llm_backend):
    backend = make_llm_backend(concurrency=4, max_retries=20)
    rule = llm_server.fault("500", every=3)
    out = backend.complete(batch(30))
    assert all(c.ok for c in out)
    # A retry may itself land on a 3rd request: the count is not fixed, but each fault is one retry.
    assert rule.fired == backend.usage.retries >= 10
    assert llm_server.request_count == 30 + rule.fired == backend.usage.requests


def test_timeout_is_retried(llm_server, make_llm_backend):
    backend = make_llm_backend(timeout=0.3)
    llm_server.fault("slow", first=2, delay=10)
    started = time.monotonic()
    out = backend.complete(batch(3))
    assert all(c.ok for c in out)
    assert backend.usage.retries == 2 and llm_server.request_count == 5
    assert time.monotonic() - started < 5  # gave up on the slow replies instead of waiting 10 s


def test_retries_are_bounded_and_failure_is_recorded(llm_server, make_llm_backend):
    backend = make_llm_backend(max_retries=2)
    llm_server.fault("503", marker="doomed")
    out = backend.complete([ask("fine"), ask("doomed item"), ask("also fine")])
    assert [c.ok for c in out] == [True, False, True]
    assert "HTTP 503" in out[1].error and "2 retries" in out[1].error
    assert out[1].key == "doomed item"
    assert llm_server.request_count == 2 + 3  # 1 try + 2 retries for the doomed one
    assert (backend.usage.failures, backend.usage.retries) == (1, 2)


@pytest.mark.parametrize("as_date", [False, True])
def test_retry_after_is_honoured(llm_server, make_llm_backend, as_date):
    backend = make_llm_backend()
    llm_server.fault("429", first=1, retry_after=1.0 if not as_date else 2.0, retry_after_date=as_date)
    started = time.monotonic()
    out = backend.complete([ask("x")])
    elapsed = time.monotonic() - started
    assert out[0].ok and llm_server.request_count == 2
    # Backoff alone would be ~0.01 s; an HTTP-date has 1 s resolution, so it waits at least ~1 s.
    assert elapsed >= 0.95


def test_parse_retry_after_forms():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "garbage"}) is None
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 10))
    assert 8 <= parse_retry_after({"retry-after": date}) <= 10.5


def test_fatal_status_fails_fast_without_hammering(llm_server, make_llm_backend):
    backend = make_llm_backend(concurrency=1)
    llm_server.fault("status", status=401)
    with pytest.raises(BackendUnavailable, match="401 from .*check OPENAI_API_KEY"):
        backend.complete(batch(10))
    assert llm_server.request_count == 3  # breaker_failures tries of the first request, then it stops


def test_concurrency_bound_is_respected(llm_server_factory, make_llm_backend):
    server = llm_server_factory(latency=0.05)
    backend = make_llm_backend(base_urls=[server.base_url], concurrency=5)
    started = time.monotonic()
    out = backend.complete(batch(40))
    elapsed = time.monotonic() - started
    assert all(c.ok for c in out)
    assert server.max_in_flight == 5
    assert elapsed >= 40 / 5 * 0.05 * 0.9


def test_rpm_limit(llm_server, make_llm_backend):
    backend = make_llm_backend(rpm=600, concurrency=8)  # 10 per second, at most 10 at once
    started = time.monotonic()
    out = backend.complete(batch(25))
    elapsed = time.monotonic() - started
    assert all(c.ok for c in out)
    assert elapsed >= 1.3  # 10 go at once, the other 15 at 10/s


def test_tpm_limit(llm_server, make_llm_backend):
    # 6000 tpm = 100 tokens/s (bucket of 100). Each call: ~31 estimated, 33 actual (3 prompt + 30 reply).
    llm_server.script(" ".join(["word"] * 30))
    backend = make_llm_backend(tpm=6000, concurrency=8)
    started = time.monotonic()
    out = backend.complete([ask(f"t {i}", max_tokens=30) for i in range(6)])
    elapsed = time.monotonic() - started
    assert all(c.ok for c in out)
    assert backend.usage.prompt_tokens + backend.usage.completion_tokens == 6 * 33
    assert 0.8 <= elapsed < 8  # ~200 tokens through a 100-token bucket refilling at 100/s


def test_replica_failover_and_cooldown(llm_server_factory, make_llm_backend):
    good, bad = llm_server_factory(), llm_server_factory()
    bad.fault("500")
    backend = make_llm_backend(base_urls=[bad.base_url, good.base_url], concurrency=1,
                               replica_failures=2, replica_cooldown=1.5)
    out = backend.complete(batch(20))
    assert all(c.ok for c in out)
    # Two failures set the bad replica aside; during the cooldown everything goes to the good one.
    assert bad.request_count == 2
    assert good.request_count == 20
    time.sleep(1.6)  # after the cooldown the bad replica is tried once more, fails, and is set aside again
    out = backend.complete(batch(10, "r"))
    assert all(c.ok for c in out)
    assert bad.request_count == 3 and good.request_count == 30


def test_replicas_share_load(llm_server_factory, make_llm_backend):
    a, b = llm_server_factory(latency=0.02), llm_server_factory(latency=0.02)
    backend = make_llm_backend(base_urls=[a.base_url, b.base_url], concurrency=8)
    out = backend.complete(batch(80))
    assert all(c.ok for c in out)
    assert a.request_count + b.request_count == 80
    assert min(a.request_count, b.request_count) >= 25


def test_n_samples(llm_server, llm_backend):
    llm_server.script(lambda body: [f"s{i}" for i in range(body.get("n", 1))])
    out = llm_backend.complete([ask("x", n=4)])
    assert out[0].texts == ["s0", "s1", "s2", "s3"] and len(out[0].finish_reasons) == 4
    assert llm_server.request_count == 1 and llm_server.requests[0]["n"] == 4


def test_n_samples_topped_up_when_server_ignores_n(llm_server_factory, make_llm_backend):
    server = llm_server_factory(ignore_n=True)
    backend = make_llm_backend(base_urls=[server.base_url])
    out = backend.complete([ask("x", n=3, seed=7)])
    assert out[0].ok and len(out[0].texts) == 3
    assert [b.get("n", 1) for b in server.requests] == [3, 2, 1]
    assert [b["seed"] for b in server.requests] == [7, 8, 9]  # fresh seeds so the extra samples differ


def _png(size: tuple[int, int], color="red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_images_are_sent_as_resized_data_urls(llm_server, make_llm_backend, tmp_path):
    backend = make_llm_backend(max_image_side=64)
    path = tmp_path / "big.png"
    path.write_bytes(_png((300, 150)))
    small = Image.new("RGB", (20, 10), "blue")
    request = ChatRequest(
        messages=[Message(role="user", content=[ImagePart(), TextPart(text="compare"), ImagePart()])],
        images=[str(path), small])
    out = backend.complete([request])
    assert out[0].ok and out[0].text == "compare"
    urls = image_urls(llm_server.requests[0])
    assert len(urls) == 2 and all(u.startswith("data:image/") for u in urls)
    assert decode_data_url(urls[0]).size == (64, 32)
    assert decode_data_url(urls[1]).size == (20, 10)
    parts = llm_server.requests[0]["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "text", "image_url"]


def test_image_count_mismatch_is_a_recorded_failure(llm_server, llm_backend):
    request = ChatRequest(messages=[Message(role="user", content=[ImagePart(), ImagePart()])],
                          images=[_png((8, 8))])
    out = llm_backend.complete([request, ask("ok")])
    assert not out[0].ok and "image" in out[0].error
    assert out[1].ok and llm_server.request_count == 1


def test_no_key_needed_for_local_servers_and_key_never_in_repr(llm_server, monkeypatch):
    backend = OpenAIBackend(OpenAIConfig(model="m", base_urls=[llm_server.base_url]))
    assert backend.complete([ask("hi")])[0].ok
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")
    backend = OpenAIBackend(OpenAIConfig(model="m", base_urls=[llm_server.base_url]))
    assert backend.complete([ask("hi")])[0].ok
    assert llm_server.headers[-1]["authorization"] == "Bearer sk-secret-123"
    for text in (repr(backend), repr(backend.config), backend.config.model_dump_json()):
        assert "sk-secret" not in text


def test_official_endpoint_without_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(SynthError, match="OPENAI_API_KEY"):
        OpenAIBackend(OpenAIConfig(model="gpt-4o-mini"))


def test_base_url_from_env(llm_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", llm_server.base_url)
    backend = OpenAIBackend(OpenAIConfig(model="m"))
    assert backend.complete([ask("env")])[0].text == "env"


def test_config_forbids_unknown_keys():
    with pytest.raises(Exception, match="extra"):
        OpenAIConfig(model="m", concurency=3)


def test_cost_from_prices(llm_server, make_llm_backend):
    backend = make_llm_backend(prices={"prompt": 1.0, "completion": 2.0})
    backend.complete([ask("a b c")])  # 4 prompt tokens, 3 completion tokens
    assert backend.usage.cost == pytest.approx((4 * 1.0 + 3 * 2.0) / 1e6)


def test_async_use_reuses_clients(llm_server, make_llm_backend):
    backend = make_llm_backend()

    async def main():
        first = await backend.acomplete(batch(3))
        clients = backend._state.clients
        second = await backend.acomplete(batch(3, "again"))
        assert backend._state.clients is clients  # no per-call client creation within one loop
        await backend.aclose()
        return first + second

    assert all(c.ok for c in asyncio.run(main()))


def test_progress_called_once_per_item(llm_server, llm_backend):
    seen = []
    llm_backend.complete(batch(7), progress=seen.append)
    assert sorted(c.key for c in seen) == sorted(f"q {i}" for i in range(7))


def test_image_data_urls_keep_small_images_and_shrink_big_ones(tmp_path):
    from synth.llm.images import image_data_url

    jpeg = io.BytesIO()
    Image.new("RGB", (40, 20), "green").save(jpeg, format="JPEG")
    url = image_data_url(jpeg.getvalue(), max_side=64)
    assert url.startswith("data:image/jpeg;base64,")  # small enough: original bytes, untouched
    assert decode_data_url(url).size == (40, 20)
    rgba = Image.new("RGBA", (200, 400), (255, 0, 0, 128))
    url = image_data_url(rgba, max_side=100)
    assert url.startswith("data:image/png;base64,") and decode_data_url(url).size == (50, 100)
    assert image_data_url("data:image/png;base64,AAAA") == "data:image/png;base64,AAAA"


def test_usage_table_renders_totals(llm_server, make_llm_backend):
    from rich.console import Console

    from synth.llm.usage import print_usage

    backend = make_llm_backend(prices={"prompt": 1.0, "completion": 1.0})
    backend.complete(batch(3))
    console = Console(record=True, width=120)
    print_usage(backend.usage, console)
    text = console.export_text()
    assert "requests" in text and "completion tokens" in text and "0.0000" in text


def test_server_in_its_own_process():
    import httpx

    from synth.llm.testing import ServerProcess

    with ServerProcess(latency=0.0) as server:
        backend = OpenAIBackend(OpenAIConfig(model="m", base_urls=[server.base_url]))
        assert [c.text for c in backend.complete(batch(5))] == [f"q {i}" for i in range(5)]
        assert server.stats()["requests"] == 5
        models = httpx.get(server.base_url + "/models").json()
        assert models["data"][0]["id"] == "test-model"
    assert server.proc is None
