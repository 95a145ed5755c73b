"""The real embedded default (Gemma 3 270M base from the PyPI package): converts/loads, answers a few-shot
prompt, and follows a JSON schema under grammar-constrained decoding. Slow: run with ``-m slow``.

The converted model lives in ``$SYNTH_MODEL_CACHE`` when set (point it at a persistent folder to convert
once across test sessions), else in the session's synth cache.
"""

from __future__ import annotations

import json
import time

import pytest
from pydantic import BaseModel, Field

from synth.llm.base import ChatRequest
from synth.records import Message

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma():
    from synth.llm.embedded import ensure_embedded_model, is_converted
    from synth.llm.local import LocalBackend

    path = ensure_embedded_model()
    assert is_converted(path)
    backend = LocalBackend(model="gemma-3-270m", batch_size=8, max_tokens=32)
    started = time.monotonic()
    backend.load()
    print(f"embedded model loaded in {time.monotonic() - started:.1f} s from {path}")
    yield backend
    backend.close()


def test_converted_checkpoint_is_plain_safetensors():
    from synth.llm.embedded import ensure_embedded_model

    path = ensure_embedded_model()
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config  # loads without the GGUF quantizer
    assert config["model_type"] == "gemma3_text" and config["vocab_size"] == 262144


def test_few_shot_answer(gemma):
    loaded = gemma.load()
    assert loaded.default_template  # a base model: its tokenizer has no chat template
    shots = [
        Message(role="user", content="What is the capital of Italy?"),
        Message(role="assistant", content="The capital of Italy is Rome."),
        Message(role="user", content="What is the capital of Spain?"),
        Message(role="assistant", content="The capital of Spain is Madrid."),
    ]
    request = ChatRequest(messages=[*shots, Message(role="user", content="What is the capital of France?")],
                          temperature=0, max_tokens=24)
    [completion] = gemma.complete([request])
    assert completion.ok and completion.finish_reasons == ["stop"]  # stopped at the next "### " heading
    assert "Paris" in completion.text
    assert "###" not in completion.text
    assert completion.usage.prompt_tokens > 30 and 0 < completion.usage.completion_tokens < 24


class Capital(BaseModel):
    country: str = Field(max_length=30)
    capital: str = Field(max_length=30)
    confident: bool


def test_json_schema_output_validates(gemma):
    questions = ["France", "Japan", "Peru"]
    requests = [
        ChatRequest(messages=[Message(role="user", content=f"Give the capital of {q} as JSON.")],
                    schema_model=Capital, temperature=0.8, n=2, seed=1, max_tokens=48)
        for q in questions
    ]
    out = gemma.complete(requests)
    for completion in out:
        assert completion.ok, completion.error
        assert len(completion.parsed) == 2
        for text, parsed in zip(completion.texts, completion.parsed, strict=True):
            assert Capital.model_validate_json(text) == parsed
