"""Heuristic filters: each keeps the good records, drops the bad ones with a stable reason, and writes
rejects through the stage base; plus the filter registry (names, options, clear errors)."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from synth.clean.heuristics import (
    ImageSizeFilter,
    ImageTokensFilter,
    LengthFilter,
    PlaceholderFilter,
    RepetitionFilter,
)
from synth.clean.registry import (
    FILTERS,
    build_filter,
    build_filters,
    filter_specs_from_yaml,
    parse_filter_spec,
)
from synth.data import RecordLog
from synth.errors import SynthError
from synth.pipeline import run_stages


def sft(rid: str, user: str, answer: str) -> dict:
    return {"id": rid, "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}], "meta": {}}


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (120, 30, 200)).save(buf, format="PNG")
    return buf.getvalue()


def image_record(rid: str, images: list, parts: int, text: str = "What is shown?") -> dict:
    content = [{"type": "image", "text": None}] * parts + [{"type": "text", "text": text}]
    return {
        "id": rid,
        "messages": [{"role": "user", "content": content}, {"role": "assistant", "content": [{"type": "text", "text": "A purple square."}]}],
        "images": images,
        "meta": {},
    }


def run(stage, records, tmp_path):
    rejects = tmp_path / "rejects.jsonl"
    with RecordLog(rejects) as log:
        kept = list(run_stages([stage], records, log))
    lines = [json.loads(line) for line in rejects.read_text().splitlines()] if rejects.exists() else []
    return [r["id"] for r in kept], {line["id"]: line for line in lines}


def test_length_bounds_on_instruction_and_answer(tmp_path):
    stage = LengthFilter(min_instruction_words=2, min_answer_chars=5, max_answer_words=10)
    records = [
        sft("ok", "Name a colour.", "Blue is a colour."),
        sft("short_q", "Colour?", "Blue is a colour."),
        sft("short_a", "Name a colour.", "Red"),
        sft("long_a", "Name a colour.", " ".join(["blue"] * 11)),
    ]
    kept, rejects = run(stage, records, tmp_path)
    assert kept == ["ok"]
    assert rejects["short_q"]["reason"] == "instruction_too_short"
    assert rejects["short_a"]["reason"] == "answer_too_short" and "3 chars < 5" in rejects["short_a"]["detail"]
    assert rejects["long_a"]["reason"] == "answer_too_long"
    assert rejects["long_a"]["stage"] == "length"
    assert stage.stats.as_dict() == {
        "seen": 4, "kept": 1, "dropped": {"instruction_too_short": 1, "answer_too_short": 1, "answer_too_long": 1},
        "failed": {},
    }


def test_length_checks_both_answers_of_a_preference_pair(tmp_path):
    pair = {
        "id": "p1",
        "prompt": [{"role": "user", "content": "Say something long."}],
        "chosen": [{"role": "assistant", "content": "Something long enough to pass."}],
        "rejected": [{"role": "assistant", "content": ""}],
    }
    kept, rejects = run(LengthFilter(min_answer_chars=3), [pair], tmp_path)
    assert kept == [] and rejects["p1"]["reason"] == "answer_too_short"


def test_repetition_catches_loops_but_not_normal_text(tmp_path):
    normal = (
        "The water cycle moves water between the ocean, the air and the land. Sunlight warms the sea, water "
        "evaporates, rises, cools into clouds and falls again as rain or snow that feeds rivers and lakes."
    )
    looping = "I am happy to help. " * 12
    one_phrase = "very good " * 15 + "answer indeed with several other unique words at the end of it"
    kept, rejects = run(RepetitionFilter(), [sft("normal", "Explain.", normal), sft("loop", "Explain.", looping), sft("phrase", "Explain.", one_phrase)], tmp_path)
    assert kept == ["normal"]
    assert rejects["loop"]["reason"] == "repetitive" and "3-grams repeat" in rejects["loop"]["detail"]
    assert rejects["phrase"]["reason"] == "repetitive"
    # Short texts are not judged at all (min_words).
    kept, _ = run(RepetitionFilter(), [sft("tiny", "Q?", "yes yes yes yes")], tmp_path)
    assert kept == ["tiny"]


def test_placeholders_and_filler_phrases(tmp_path):
    records = [
        sft("good", "What is 2+2?", "4"),
        sft("empty", "What is 2+2?", "   "),
        sft("na", "What is 2+2?", "N/A."),
        sft("todo", "What is 2+2?", "TODO"),
        sft("lorem", "Write a poem.", "Lorem ipsum dolor sit amet."),
        sft("ai", "Write a poem.", "As an AI language model, I cannot write poems."),
        sft("researcher", "Who are you?", "I work as an AI researcher on a todo-list app."),
    ]
    kept, rejects = run(PlaceholderFilter(), records, tmp_path)
    assert kept == ["good", "researcher"]
    assert rejects["empty"]["reason"] == "empty_answer"
    assert {rejects[k]["reason"] for k in ("na", "todo", "lorem", "ai")} == {"placeholder_answer"}
    assert "lorem ipsum" in rejects["lorem"]["detail"]
    # Configurable: a custom placeholder list and phrases.
    kept, _ = run(PlaceholderFilter(placeholders=["4"], phrases=[]), records[:1], tmp_path)
    assert kept == []


def test_placeholder_bad_regex_is_a_clear_error():
    with pytest.raises(SynthError, match="bad regular expression"):
        PlaceholderFilter(phrases=["(unclosed"])


def test_image_size_and_aspect_from_headers(tmp_path):
    records = [
        image_record("ok", [{"bytes": png(64, 48), "path": None}], 1),
        image_record("small", [png(8, 8)], 1),
        image_record("wide", [png(200, 20)], 1),
        image_record("huge", [png(600, 300)], 1),
        image_record("broken", [{"bytes": b"not an image", "path": None}], 1),
    ]
    stage = ImageSizeFilter(min_width=16, min_height=16, max_width=512, max_aspect=3.0)
    kept, rejects = run(stage, records, tmp_path)
    assert kept == ["ok"]
    assert rejects["small"]["reason"] == "image_too_small" and "8x8" in rejects["small"]["detail"]
    assert rejects["wide"]["reason"] == "bad_aspect"
    assert rejects["huge"]["reason"] == "image_too_large"
    assert rejects["broken"]["reason"] == "unreadable_image"


def test_image_size_reads_refs_and_pil_images_never_bare_paths(tmp_path):
    """Records carry images as the reader made them; a bare path is never opened from the working directory."""
    from synth.data import image_ref

    path = tmp_path / "a.png"
    path.write_bytes(png(10, 10))
    records = [
        image_record("ref", [image_ref("a.png", tmp_path)], 1),
        image_record("pil", [Image.new("RGB", (100, 100))], 1),
        image_record("bare_path", [str(path)], 1),
    ]
    kept, rejects = run(ImageSizeFilter(min_width=20), records, tmp_path)
    assert kept == ["pil"] and rejects["ref"]["reason"] == "image_too_small"
    assert rejects["bare_path"]["reason"] == "unreadable_image" and "no dataset folder" in rejects["bare_path"]["detail"]


def test_image_token_consistency(tmp_path):
    image = png(32, 32)
    records = [
        image_record("parts_ok", [image], 1),
        image_record("parts_missing_image", [], 1),
        image_record("two_parts_one_image", [image], 2),
        image_record("stray_token", [image], 1, text="<image> What is shown?"),
        sft("text_ok", "<image>\nWhat is shown?", "A cat.") | {"images": [image]},
        sft("text_bad", "<image><image> Compare.", "Same.") | {"images": [image]},
        sft("text_only", "No images here.", "Fine."),
    ]
    kept, rejects = run(ImageTokensFilter(), records, tmp_path)
    assert kept == ["parts_ok", "text_ok", "text_only"]
    assert rejects["parts_missing_image"]["reason"] == "image_count_mismatch"
    assert rejects["two_parts_one_image"]["reason"] == "image_count_mismatch"
    assert rejects["stray_token"]["reason"] == "stray_image_token"
    assert rejects["text_bad"]["reason"] == "image_token_mismatch" and "2 <image> tokens but 1 images" in rejects["text_bad"]["detail"]


# ---------------------------------------------------------------- registry


def test_registry_builds_filters_by_name_with_options():
    stage = build_filter("length", {"min_answer_words": 3})
    assert isinstance(stage, LengthFilter) and stage.config.min_answer_words == 3
    assert {"length", "repetition", "placeholder", "image_size", "image_tokens", "dedup", "decontaminate", "judge"} <= set(FILTERS)


def test_registry_errors_name_the_problem_and_the_valid_choices():
    with pytest.raises(SynthError, match=r"unknown filter 'lenght'; valid filters: .*length"):
        build_filter("lenght", {})
    with pytest.raises(SynthError, match=r"filter 'length': min_answer_wrds: unknown key .*valid options for 'length': .*min_answer_words"):
        build_filter("length", {"min_answer_wrds": 3})
    with pytest.raises(SynthError, match=r"filter 'dedup': threshold"):
        build_filter("dedup", {"threshold": 2})
    with pytest.raises(SynthError, match="needs an LLM backend"):
        build_filter("judge", {})


def test_filter_specs_from_text_and_yaml():
    assert parse_filter_spec("length") == ("length", {})
    assert parse_filter_spec("length:min_answer_words=3,max_answer_chars=4000") == (
        "length", {"min_answer_words": 3, "max_answer_chars": 4000}
    )
    assert parse_filter_spec("placeholder:phrases=[foo, 'a,b'],placeholders=[]") == (
        "placeholder", {"phrases": ["foo", "a,b"], "placeholders": []}
    )
    with pytest.raises(SynthError, match="expected key=value"):
        parse_filter_spec("length:min_answer_words")
    specs = filter_specs_from_yaml({"filters": ["placeholder", {"length": {"min_answer_words": 2}}, "dedup:threshold=0.9"]}, "x.yaml")
    assert specs == [("placeholder", {}), ("length", {"min_answer_words": 2}), ("dedup", {"threshold": 0.9})]
    with pytest.raises(SynthError, match="x.yaml: filter 1"):
        filter_specs_from_yaml([{"a": {}, "b": {}}], "x.yaml")
    stages = build_filters(specs)
    assert [s.name for s in stages] == ["placeholder", "length", "dedup"]
