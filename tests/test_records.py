"""Data model: ids, Arrow layout round trips, preference pairs."""

from __future__ import annotations

import pytest
from PIL import Image

from synth.records import (
    ImagePart,
    Message,
    PreferencePair,
    Sample,
    TextPart,
    content_id,
    dataset_kind,
    dataset_to_pairs,
    dataset_to_samples,
    pairs_to_dataset,
    samples_to_dataset,
)


def _image(color: str) -> Image.Image:
    return Image.new("RGB", (6, 4), color)


def _vqa(color: str = "red") -> Sample:
    return Sample(
        messages=[
            Message(role="user", content=[ImagePart(), TextPart(text="What colour is it?")]),
            Message(role="assistant", content=color),
        ],
        images=[_image(color)],
        meta={"source": "unit", "scores": {"q": 1.5}},
    )


def test_id_is_stable_content_hash():
    a, b = _vqa(), _vqa()
    assert a.id == b.id and len(a.id) == 16
    assert _vqa("blue").id != a.id
    # String content and a single text part are the same conversation.
    s1 = Sample(messages=[Message(role="user", content="hi")])
    s2 = Sample(messages=[Message(role="user", content=[TextPart(text="hi")])])
    assert s1.id == s2.id
    assert content_id(s1.messages, extra="x") != s1.id


def test_multimodal_round_trip_keeps_ids_and_pixels(tmp_path):
    samples = [_vqa("red"), Sample(messages=[Message(role="user", content="text only")])]
    ds = samples_to_dataset(samples)
    assert set(ds.column_names) == {"id", "messages", "images", "meta"}
    assert dataset_kind(ds) == "sft"
    ds.save_to_disk(str(tmp_path / "d"))
    from datasets import load_from_disk

    back = list(dataset_to_samples(load_from_disk(str(tmp_path / "d"))))
    assert [s.id for s in back] == [s.id for s in samples]
    assert back[0].meta == {"source": "unit", "scores": {"q": 1.5}}
    assert back[0].images[0].convert("RGB").tobytes() == _image("red").tobytes()
    assert back[0].messages[0].image_count == 1 and back[0].messages[0].text == "What colour is it?"
    # The second sample was text-only but lives in a multimodal dataset: parts form, no images.
    assert back[1].images == [] and back[1].messages[0].text == "text only"
    assert content_id(back[1].messages) == samples[1].id


def test_text_only_dataset_has_plain_string_content_and_no_images_column():
    ds = samples_to_dataset([Sample(messages=[Message(role="user", content="q"), Message(role="assistant", content="a")])])
    assert "images" not in ds.column_names
    assert ds[0]["messages"] == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


def test_preference_pairs_round_trip():
    pair = PreferencePair(
        prompt=[Message(role="user", content="2+2?")],
        chosen=[Message(role="assistant", content="4")],
        rejected=[Message(role="assistant", content="5")],
    )
    ds = pairs_to_dataset([pair])
    assert dataset_kind(ds) == "preference"
    (back,) = list(dataset_to_pairs(ds))
    assert back.id == pair.id and back.chosen[0].text == "4" and back.rejected[0].text == "5"


def test_unknown_role_and_part_are_rejected():
    with pytest.raises(ValueError):
        Message(role="robot", content="x")
    with pytest.raises(ValueError):
        Message(role="user", content=[{"type": "video"}])
