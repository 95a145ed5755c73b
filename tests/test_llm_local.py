"""The local transformers backend on a tiny random model (built from a config, offline), and the factory."""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from synth.errors import SynthError
from synth.llm.base import ChatRequest
from synth.llm.local import LocalBackend, default_chat_template
from synth.records import ImagePart, Message, TextPart

PROMPTS = [
    "Hi",
    "Write a short poem about the sea.",
    "Name three colours, please, and say why you like them.",
    "The quick brown fox jumps over the lazy dog. Again: the quick brown fox jumps over the lazy dog.",
    "Numbers 0 1 2 3",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    from synth.llm.tiny import build_tiny_model

    torch.set_num_threads(1)  # a tiny model gains nothing from threads; the test machine is shared
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-lm")))


@pytest.fixture(scope="module")
def backend(tiny_model):
    b = LocalBackend(model=tiny_model, batch_size=8, max_tokens=16)
    b.load()
    return b


def user(text: str, **params) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], **params)


def test_batched_greedy_equals_one_at_a_time(tiny_model, backend):
    requests = [user(p, temperature=0, key=str(i)) for i, p in enumerate(PROMPTS)]
    lengths = {len(backend._prompt_ids(backend.load(), r)) for r in requests}
    assert len(lengths) == len(PROMPTS)  # different lengths: the batch really is left-padded

    batched = backend.complete(requests)
    single = LocalBackend(model=tiny_model, batch_size=1, max_tokens=16).complete(requests)

    assert [c.key for c in batched] == [str(i) for i in range(len(PROMPTS))]  # order and keys kept
    assert [c.texts for c in batched] == [c.texts for c in single]
    for c in batched:
        assert c.ok and c.finish_reasons == (["length"] if c.usage.completion_tokens == 16 else ["stop"])
    assert len({c.text for c in batched}) > 1  # the prompts matter


def test_usage_counts_tokens(backend):
    backend.usage = type(backend.usage)()
    requests = [user(p, temperature=0, max_tokens=7) for p in PROMPTS[:3]]
    out = backend.complete(requests)
    loaded = backend.load()
    for request, completion in zip(requests, out, strict=True):
        rendered = loaded.tokenizer.apply_chat_template(
            [{"role": "user", "content": request.messages[0].text}], chat_template=default_chat_template(),
            tokenize=False, add_generation_prompt=True,
        )
        assert completion.usage.prompt_tokens == len(loaded.tokenizer(rendered, add_special_tokens=False)["input_ids"])
        assert completion.usage.completion_tokens == 7
    totals = backend.usage
    assert totals.requests == 3 and totals.failures == 0
    assert totals.prompt_tokens == sum(c.usage.prompt_tokens for c in out)
    assert totals.completion_tokens == 21


def test_max_tokens_and_finish_reason(backend):
    [short] = backend.complete([user("Hi", temperature=0, max_tokens=3)])
    [longer] = backend.complete([user("Hi", temperature=0, max_tokens=12)])
    assert short.finish_reasons == ["length"] and short.usage.completion_tokens == 3
    assert longer.usage.completion_tokens == 12
    assert longer.text.startswith(short.text)  # greedy: the first 3 tokens are the same


def test_stop_strings_cut_at_the_first_one(backend):
    [free] = backend.complete([user(PROMPTS[1], temperature=0, max_tokens=24)])
    text = free.text
    # Pick a stop string from the middle of the free-running text (a stretch of plain characters).
    start = next(i for i in range(4, len(text) - 3) if text[i : i + 2].isprintable() and text[i : i + 2].strip())
    stop = text[start : start + 2]
    first = text.find(stop)
    [stopped] = backend.complete([user(PROMPTS[1], temperature=0, max_tokens=24, stop=[stop, "\x00never"])])
    assert stopped.text == text[:first]
    assert stopped.finish_reasons == ["stop"]
    assert stopped.usage.completion_tokens < 24  # generation really stopped early


def test_n_samples_seed_and_greedy_n(backend):
    request = user(PROMPTS[2], temperature=1.0, n=3, seed=7, max_tokens=10)
    [a] = backend.complete([request])
    [b] = backend.complete([request])
    assert len(a.texts) == 3 and len(a.finish_reasons) == 3
    assert a.texts == b.texts  # same seed, same batch: same samples
    assert len(set(a.texts)) > 1  # sampling: the samples differ
    [other_seed] = backend.complete([request.model_copy(update={"seed": 8})])
    assert other_seed.texts != a.texts
    [greedy] = backend.complete([user(PROMPTS[2], temperature=0, n=3, max_tokens=10)])
    assert len(greedy.texts) == 3 and len(set(greedy.texts)) == 1


def test_requests_with_different_seeds_share_a_batch(backend, monkeypatch):
    model = backend.load().model
    calls = []
    original = model.generate

    def counting_generate(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "generate", counting_generate)
    requests = [user(p, temperature=1.0, seed=i, max_tokens=4) for i, p in enumerate(PROMPTS[:4])]
    first = backend.complete(requests)
    assert calls == [4]  # one generate() for the four prompts
    assert [c.texts for c in backend.complete(requests)] == [c.texts for c in first]  # still reproducible


class Verdict(BaseModel):
    answer: Literal["yes", "no"]
    score: int = Field(ge=1, le=5)
    note: str = Field(max_length=8)
    ok: bool


def test_json_schema_output_always_validates(backend):
    requests = [user(p, schema_model=Verdict, temperature=1.0, n=3, seed=i, max_tokens=64) for i, p in enumerate(PROMPTS)]
    out = backend.complete(requests)
    for completion in out:
        assert completion.ok, completion.error
        assert completion.finish_reasons == ["stop"] * 3  # the grammar ended the JSON (with eos)
        assert [Verdict.model_validate_json(t) for t in completion.texts] == completion.parsed
        assert all(isinstance(p, Verdict) for p in completion.parsed)
        assert [list(json.loads(t)) for t in completion.texts] == [["answer", "score", "note", "ok"]] * 3
    # Without the grammar the same random model does not produce this JSON.
    free = backend.complete([user(p, temperature=1.0, seed=1, max_tokens=64) for p in PROMPTS])
    assert not any(t.startswith('{"answer"') for c in free for t in c.texts)


def test_json_schema_cut_by_max_tokens_is_a_recorded_failure(backend):
    [c] = backend.complete([user("Hi", schema_model=Verdict, temperature=0, max_tokens=4)])
    assert not c.ok and "max_tokens=4" in c.error
    assert c.finish_reasons == ["length"]


def test_default_chat_template_for_tokenizer_without_one(backend):
    loaded = backend.load()
    assert loaded.default_template and not getattr(loaded.tokenizer, "chat_template", None)
    request = ChatRequest(messages=[
        Message(role="system", content="Be brief."),
        Message(role="user", content="Name a colour."),
        Message(role="assistant", content="Red."),
        Message(role="user", content="Another?"),
    ])
    text = loaded.tokenizer.decode(backend._prompt_ids(loaded, request))
    assert text == (
        "<s>Be brief.\n\n### Instruction:\nName a colour.\n\n### Response:\nRed.\n\n"
        "### Instruction:\nAnother?\n\n### Response:\n"
    )
    # A trailing assistant message is continued, not closed.
    prefix = ChatRequest(messages=[Message(role="user", content="Hi"), Message(role="assistant", content="Well,")])
    assert loaded.tokenizer.decode(backend._prompt_ids(loaded, prefix)).endswith("### Response:\nWell,")


def test_chat_template_file_option(tiny_model, tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>")
    b = LocalBackend(model=tiny_model, chat_template=str(template), max_tokens=2)
    loaded = b.load()
    assert not loaded.default_template
    assert loaded.tokenizer.decode(b._prompt_ids(loaded, user("Hi"))) == "<user>Hi<assistant>"


def test_images_are_a_recorded_failure_not_a_crash(backend):
    with_image = ChatRequest(
        messages=[Message(role="user", content=[ImagePart(), TextPart(text="What is this?")])], images=[b"x"], key="img"
    )
    out = backend.complete([with_image, user("Hi", temperature=0, max_tokens=2, key="txt")])
    assert out[0].key == "img" and not out[0].ok and "does not take images" in out[0].error
    assert out[1].ok and out[1].usage.completion_tokens == 2
    assert backend.supports_images is False


def test_acomplete_runs_off_the_event_loop_and_reports_progress(backend):
    requests = [user(p, temperature=0, max_tokens=12) for p in PROMPTS] * 4
    seen = []
    ticks = 0

    async def main():
        nonlocal ticks
        task = asyncio.ensure_future(backend.acomplete(requests, progress=seen.append))
        while not task.done():
            ticks += 1
            await asyncio.sleep(0.001)
        return task.result()

    out = asyncio.run(main())
    assert len(out) == len(requests) and len(seen) == len(requests)
    assert sorted(id(c) for c in seen) == sorted(id(c) for c in out)
    assert ticks > 3  # the loop kept running while the model generated


def test_model_that_cannot_be_loaded_is_a_clear_error(tmp_path):
    b = LocalBackend(model=str(tmp_path / "no-such-model"))
    with pytest.raises(SynthError, match="cannot load the local model"):
        b.complete([user("Hi")])


# ---------------------------------------------------------------- factory


def test_factory_default_is_the_embedded_local_model(tmp_path, monkeypatch):
    from synth.llm.cache import CachedBackend
    from synth.llm.embedded import EMBEDDED_MODEL, embedded_model_version
    from synth.llm.factory import make_backend

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    b = make_backend(cache_dir=tmp_path)
    assert isinstance(b, CachedBackend) and isinstance(b.inner, LocalBackend)
    assert b.inner.config.model == EMBEDDED_MODEL and b.model_name == embedded_model_version()
    assert b.inner._loaded is None  # nothing loaded until the first request
    assert b.cache.path == tmp_path / "llm-cache.sqlite"
    assert isinstance(make_backend(cache=False), LocalBackend)


def test_factory_openai_selection_and_errors(monkeypatch, tmp_path):
    from synth.llm.factory import make_backend
    from synth.llm.openai_compat import OpenAIBackend

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    with pytest.raises(SynthError, match="no API key: set OPENAI_API_KEY.*--backend local"):
        make_backend("openai", model="gpt-4o-mini", cache=False)
    with pytest.raises(SynthError, match="needs a model"):
        make_backend("openai", cache=False)
    with pytest.raises(SynthError, match="unknown backend 'vllm'"):
        make_backend("vllm")
    with pytest.raises(SynthError, match="--base-url is for --backend openai"):
        make_backend("local", base_url="http://127.0.0.1:1/v1")
    with pytest.raises(SynthError, match="local backend options.*batch_size"):
        make_backend("local", batch_size=0)
    with pytest.raises(SynthError, match="openai backend options.*rmp"):
        make_backend("openai", model="m", base_url="http://127.0.0.1:1/v1", rmp=10)
    # A local server needs no key; a base URL alone selects the openai backend.
    b = make_backend(model="m", base_url=["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"], concurrency=3,
                     cache_dir=tmp_path)
    assert isinstance(b.inner, OpenAIBackend) and b.inner.config.concurrency == 3
    assert [r.url for r in b.inner.replicas] == ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert isinstance(make_backend("openai", model="gpt-4o-mini", cache=False), OpenAIBackend)


def test_report_usage_prints_and_returns_totals(backend):
    import io

    from rich.console import Console

    from synth.llm.factory import report_usage

    backend.usage = type(backend.usage)()
    backend.complete([user("Hi", temperature=0, max_tokens=3)])
    console = Console(file=io.StringIO(), width=160)
    usage = report_usage(backend, console=console)
    printed = console.file.getvalue()
    assert usage["backend"] == "local" and usage["model"] == backend.model_name
    assert usage["requests"] == 1 and usage["completion_tokens"] == 3 and usage["failures"] == 0
    assert "LLM usage" in printed and "completion tokens" in printed


# ---------------------------------------------------------------- embedded model (no conversion here)


def test_embedded_model_dir_honours_model_cache(tmp_path, monkeypatch):
    from synth.llm.embedded import embedded_model_dir, is_converted

    monkeypatch.setenv("SYNTH_MODEL_CACHE", str(tmp_path / "models"))
    path = embedded_model_dir()
    assert path.parent == tmp_path / "models" and path.name.startswith("gemma-3-270m-")
    assert not is_converted(path)
