"""The local backend serving an image-text model (a tiny random LLaVA, offline): image rows through the
processor, batched; text rows on the same model; structured output; a LoRA adapter, merged or not; and
`synth generate --backend local` on image rows."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, Field

from synth.llm.base import ChatRequest
from synth.llm.local import LocalBackend
from synth.records import ImagePart, Message, TextPart
from tests.cli_helpers import run_cli
from tests.run_helpers import rows
from tests.train_helpers import adapted, fast_fields, one_torch_thread, tiny_llava  # noqa: F401 - a fixture

QUESTIONS = [
    "How many shapes are there?",
    "What color is the star in this image? Answer in one word, please.",
    "Hi",
    "Is there a circle on the left side of the picture, or is there none at all?",
]
COLORS = ["red", "blue", "green", "white"]


def image(color: str):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (64, 64), color)
    ImageDraw.Draw(img).ellipse((10, 10, 40, 40), fill="black")
    return img


def image_request(question: str, color: str, key: str | None = None, **params) -> ChatRequest:
    content = [ImagePart(type="image"), TextPart(type="text", text=question)]
    return ChatRequest(messages=[Message(role="user", content=content)], images=[image(color)], key=key,
                       **{"temperature": 0, **params})


def serve(model, **options) -> LocalBackend:
    return LocalBackend(model=str(model), **{"device": "cpu", "max_tokens": 8, **options})


@pytest.fixture(scope="module")
def llava():
    return tiny_llava()


def test_image_rows_batched_greedy_equals_one_at_a_time(llava):
    backend = serve(llava, batch_size=8)
    assert backend.supports_images  # generate and pseudo_label send it the images
    requests = [image_request(q, c, key=str(i)) for i, (q, c) in enumerate(zip(QUESTIONS, COLORS))]
    batched = backend.complete(requests)
    single = serve(llava, batch_size=1).complete(requests)

    assert [c.key for c in batched] == ["0", "1", "2", "3"] and all(c.ok for c in batched), batched
    assert [c.texts for c in batched] == [c.texts for c in single]
    text_only = [len(backend._prompt_ids(backend.load(), r)) for r in requests]
    # the prompt holds the image's 16 tokens (4x4 patches), besides the text's
    assert [c.usage.prompt_tokens for c in batched] == [n - 1 + 16 for n in text_only]


def test_the_image_decides_the_answer(llava):
    backend = serve(llava, batch_size=8, max_tokens=12)
    replies = backend.complete([image_request(QUESTIONS[0], color) for color in COLORS])
    assert all(c.ok for c in replies)
    assert len({c.text for c in replies}) > 1  # same question, different pictures, different answers


def test_text_rows_on_an_image_text_model(llava):
    """Text rows go through the tokenizer, next to image rows in the same call (separate batches)."""
    backend = serve(llava, batch_size=8)
    text = [ChatRequest(messages=[Message(role="user", content=q)], temperature=0) for q in QUESTIONS]
    mixed = backend.complete([text[0], image_request(QUESTIONS[0], "red"), *text[1:]])
    alone = serve(llava, batch_size=1).complete(text)
    assert all(c.ok for c in mixed)
    assert [c.texts for c in [mixed[0], *mixed[2:]]] == [c.texts for c in alone]


class Reply(BaseModel):
    answer: Literal["yes", "no"]
    count: int = Field(ge=0, le=9)
    ok: bool


def test_structured_output_on_image_rows(llava):
    backend = serve(llava, batch_size=4, max_tokens=48)
    replies = backend.complete([image_request(q, c, schema_model=Reply) for q, c in zip(QUESTIONS, COLORS)])
    for c in replies:
        assert c.ok, c.error
        assert c.finish_reasons == ["stop"]  # the grammar ended the JSON
        assert isinstance(c.parsed[0], Reply) and Reply.model_validate_json(c.text) == c.parsed[0]


def test_more_image_parts_than_images_is_a_recorded_failure(llava):
    request = image_request(QUESTIONS[0], "red")
    request.messages[0].content.append(ImagePart(type="image"))
    [reply] = serve(llava).complete([request])
    assert reply.error_kind == "invalid_request" and "2 image part(s) in the messages but 1 image(s)" in reply.error


@pytest.fixture(scope="module")
def llava_adapter(llava, tmp_path_factory):
    from synth.train import recipe_from_dict, run_stage

    out = tmp_path_factory.mktemp("llava-gen") / "adapter"
    fields = fast_fields(llava, adapted("vqa_short"), out, limit=8, max_steps=6, learning_rate=5e-2)
    run_stage("sft", recipe_from_dict(fields, "sft"))
    return out


def test_adapter_on_an_image_text_model_merged_or_not(llava, llava_adapter):
    requests = [image_request(q, c) for q, c in zip(QUESTIONS, COLORS)]
    base = [c.text for c in serve(llava).complete(requests)]
    merged_backend = serve(llava_adapter)  # the adapter folder names its base
    assert merged_backend.supports_images and merged_backend.base_model == str(llava)
    assert "+adapter@" in merged_backend.model_name  # the cache identity holds the adapter's hash
    merged = [c.text for c in merged_backend.complete(requests)]
    kept = [c.text for c in serve(llava_adapter, merge_adapter=False).complete(requests)]
    assert merged == kept and merged != base


def test_merged_image_text_model_serves_images_and_text(llava, llava_adapter, tmp_path):
    from synth.train import recipe_from_dict, run_stage

    out = tmp_path / "merged"
    run_stage("merge", recipe_from_dict({"model": str(llava), "adapter": str(llava_adapter), "output_dir": str(out)},
                                        "merge"))
    requests = [image_request(q, c) for q, c in zip(QUESTIONS, COLORS)]
    requests.append(ChatRequest(messages=[Message(role="user", content=QUESTIONS[0])], temperature=0))
    from_merged = serve(out).complete(requests)
    from_adapter = serve(llava_adapter).complete(requests)
    assert all(c.ok for c in from_merged), [c.error for c in from_merged]
    assert [c.text for c in from_merged] == [c.text for c in from_adapter]


def test_generate_cli_answers_image_rows_with_the_local_model(llava, tmp_path):
    out = tmp_path / "answers"
    result = run_cli("generate", adapted("vqa_short"), "-o", out, "--backend", "local", "--model", llava,
                     "--regenerate", "--limit", "4", "--temperature", "0", "--max-tokens", "4", "--keep-truncated",
                     "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    written = rows(out)
    assert len(written) == 4 and all(row["images"] for row in written)
    assert all(row["messages"][-1]["role"] == "assistant" for row in written)


def test_dry_run_renders_image_rows_for_a_local_image_text_model(llava, tmp_path, monkeypatch):
    recipe = tmp_path / "dry.yaml"
    recipe.write_text(
        "name: dry\nbackends:\n"
        f"  vlm: {{backend: local, model: {llava}, device: cpu}}\n"
        "stages:\n"
        "  - {type: demo, name: shapes, count: 2, size: 64}\n"
        "  - {type: adapt, name: vqa, input: shapes, template: vqa_short}\n"
        "  - {type: generate, name: answers, input: vqa, backend: vlm, regenerate: true, max_tokens: 4}\n",
        encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = run_cli("run", recipe, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "takes no images" not in result.output and "images_unsupported" not in result.output
    assert "--- answers: record" in result.output  # the prompt of an image row, rendered
