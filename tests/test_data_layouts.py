"""The one reader (`synth.data.open_source`) on every layout users hand over, as real files on disk.

Each peer layout (TRL conversational, prompt/completion and preference; LLaVA JSON; LLaMA-Factory sharegpt
and alpaca; OpenAI chat and preference JSONL) must come out as synth's records: ``messages`` (or
``prompt``/``chosen``/``rejected``) with string content or ``{"type": "text"|"image"}`` parts, ``images`` as
``{"bytes", "path"}`` refs in placeholder order. Relative image paths resolve against the dataset's folder
whatever the working directory, and may not leave it. Hub ids are tested with a stand-in for
`datasets.load_dataset` (the Hub cannot be reached from the tests).
"""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from synth.data import EmptyDatasetError, ImageError, RecordError, open_source
from synth.data.reader import hub_cache_root, open_splits


def _image(color=(200, 10, 10), size=(12, 10), fmt: str = "PNG", noise: bool = False) -> bytes:
    buf = io.BytesIO()
    image = Image.effect_noise((128, 128), 80).convert("RGB") if noise else Image.new("RGB", size, color)
    image.save(buf, format=fmt)
    return buf.getvalue()


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _images(folder: Path, names: list[str], fmt: str = "PNG") -> dict[str, bytes]:
    out = {}
    for i, name in enumerate(names):
        data = _image((i * 40 % 256, 90, 30), fmt=fmt)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        out[name] = data
    return out


def _text(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(p["text"] or "" for p in content if p["type"] == "text")


def _types(message: dict) -> list[str]:
    return [p["type"] for p in message["content"]]


@pytest.fixture()
def elsewhere(tmp_path, monkeypatch) -> Path:
    """Run from a directory that is not the dataset's (with a decoy image folder that must not be read)."""
    cwd = tmp_path / "elsewhere"
    (cwd / "img").mkdir(parents=True)
    (cwd / "img" / "0.png").write_bytes(b"decoy: not the dataset's image")
    monkeypatch.chdir(cwd)
    return cwd


# ---------------------------------------------------------------- TRL


def test_trl_conversational_with_image_parts_and_relative_paths(tmp_path, elsewhere):
    folder = tmp_path / "trl"
    pictures = _images(folder, ["img/0.png", "img/1.png"])
    rows = [
        {  # image parts without a "text" key, as TRL writes them
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Red."}]},
            ],
            "images": ["img/0.png"],
        },
        {
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                {"role": "user", "content": [{"type": "text", "text": "Compare "}, {"type": "image"}, {"type": "text", "text": " and "}, {"type": "image"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Same."}]},
            ],
            "images": ["img/1.png", "img/0.png"],
        },
        # a string-content row in the same file: datasets 5 then infers `content` as Json
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "images": []},
    ]
    path = _jsonl(folder / "train.jsonl", rows)
    src = open_source(os.path.relpath(path, elsewhere))  # a relative source path too
    assert (src.layout, src.kind, src.multimodal, src.num_rows) == ("messages", "sft", True, 3)
    assert src.base_dir == folder.resolve()
    records = list(src.records())
    first, second, third = records
    assert first["messages"][0]["content"] == [{"type": "image", "text": None}, {"type": "text", "text": "What colour?"}]
    assert first["messages"][1]["content"] == [{"type": "text", "text": "Red."}]
    assert [(i["path"], i["bytes"]) for i in first["images"]] == [("img/0.png", pictures["img/0.png"])]
    assert _types(second["messages"][1]) == ["text", "image", "text", "image"]
    assert [i["bytes"] for i in second["images"]] == [pictures["img/1.png"], pictures["img/0.png"]]  # in order
    assert third["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert third["images"] == [] and all(r["meta"] == {} for r in records)


def test_trl_prompt_completion_strings_and_messages(tmp_path):
    rows = [
        {"prompt": "The sky is", "completion": " blue."},
        {"prompt": [{"role": "user", "content": "2+2?"}], "completion": [{"role": "assistant", "content": "4"}]},
    ]
    src = open_source(_jsonl(tmp_path / "pc.jsonl", rows))
    assert (src.layout, src.kind, src.multimodal) == ("prompt_completion", "sft", False)
    records = list(src.records())
    assert records[0]["messages"] == [{"role": "user", "content": "The sky is"}, {"role": "assistant", "content": " blue."}]
    assert records[1]["messages"] == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]


def test_trl_preference_strings_messages_and_images(tmp_path, elsewhere):
    folder = tmp_path / "prefs"
    pictures = _images(folder, ["pics/a.jpg"], fmt="JPEG")
    rows = [
        {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven.", "images": []},
        {
            "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many shapes?"}]}],
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "Three."}]}],
            "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "Nine."}]}],
            "images": ["pics/a.jpg"],
        },
    ]
    src = open_source(_jsonl(folder / "prefs.jsonl", rows))
    assert (src.layout, src.kind) == ("preference", "preference")
    plain, vision = src.records()
    assert plain["prompt"] == [{"role": "user", "content": "Name a colour."}]
    assert plain["chosen"] == [{"role": "assistant", "content": "Blue."}]
    assert plain["rejected"] == [{"role": "assistant", "content": "Seven."}]
    assert _types(vision["prompt"][0]) == ["image", "text"]
    assert vision["images"][0]["bytes"] == pictures["pics/a.jpg"]  # a JPEG stays a JPEG


# ---------------------------------------------------------------- LLaVA and LLaMA-Factory


def test_llava_json_with_image_tokens(tmp_path, elsewhere):
    folder = tmp_path / "llava"
    pictures = _images(folder, ["coco/000.jpg"], fmt="JPEG")
    rows = [
        {"id": "l1", "image": "coco/000.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "Shapes."},
            {"from": "human", "value": "Which colour?"}, {"from": "gpt", "value": "Red."}]},
        {"id": "l2", "conversations": [{"from": "human", "value": "Text only?"}, {"from": "gpt", "value": "Yes."}]},
    ]
    (folder / "llava.json").write_text(json.dumps(rows, indent=1))
    src = open_source(folder / "llava.json")
    assert (src.layout, src.kind, src.multimodal) == ("sharegpt", "sft", True)
    first, second = src.records()
    assert first["id"] == "l1"
    assert [m["role"] for m in first["messages"]] == ["user", "assistant", "user", "assistant"]
    assert first["messages"][0]["content"] == [{"type": "image", "text": None}, {"type": "text", "text": "What is shown?"}]
    assert first["images"][0]["bytes"] == pictures["coco/000.jpg"]
    assert second["images"] == [] and second["messages"][0]["content"] == "Text only?"


def test_llamafactory_sharegpt_with_images_and_system(tmp_path, elsewhere):
    folder = tmp_path / "lf"
    pictures = _images(folder, ["images/a.png", "images/b.png"])
    rows = [
        {"conversations": [{"from": "human", "value": "<image><image>Which is larger?"}, {"from": "gpt", "value": "The first."}],
         "images": ["images/a.png", "images/b.png"], "system": "You compare pictures."},
        # LLaMA-Factory with OpenAI-style tags: `messages` of {role, content} and <image> tokens
        {"messages": [{"role": "user", "content": "Describe <image> please."}, {"role": "assistant", "content": "A square."}],
         "images": ["images/b.png"]},
    ]
    _jsonl(folder / "a_sharegpt.jsonl", rows[:1])
    _jsonl(tmp_path / "lf2" / "b_tags.jsonl", rows[1:])
    (tmp_path / "lf2" / "images").mkdir()
    (tmp_path / "lf2" / "images" / "b.png").write_bytes(pictures["images/b.png"])

    (record,) = open_source(folder / "a_sharegpt.jsonl").records()
    assert record["messages"][0] == {"role": "system", "content": "You compare pictures."}
    assert record["messages"][1]["content"] == [
        {"type": "image", "text": None}, {"type": "image", "text": None}, {"type": "text", "text": "Which is larger?"}]
    assert [i["bytes"] for i in record["images"]] == [pictures["images/a.png"], pictures["images/b.png"]]

    (tagged,) = open_source(tmp_path / "lf2" / "b_tags.jsonl").records()
    assert tagged["messages"][0]["content"] == [
        {"type": "text", "text": "Describe "}, {"type": "image", "text": None}, {"type": "text", "text": " please."}]


def test_sharegpt_token_count_must_match_images(tmp_path):
    folder = tmp_path / "bad"
    _images(folder, ["a.png"])
    path = _jsonl(folder / "d.jsonl", [{"id": "m1", "conversations": [{"from": "human", "value": "<image> and <image>?"},
                                                                      {"from": "gpt", "value": "x"}], "images": ["a.png"]}])
    with pytest.raises(RecordError, match=r"row 1 \(id m1\): 2 image placeholder\(s\) in the text but 1 image"):
        list(open_source(path).records())


def test_alpaca_instruction_input_output_and_history(tmp_path):
    rows = [
        {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
        {"instruction": "And this one?", "input": "", "output": "chien", "system": "You translate.",
         "history": [["Translate to French: cat", "chat"]]},
    ]
    src = open_source(_jsonl(tmp_path / "alpaca.jsonl", rows))
    assert (src.layout, src.kind, src.multimodal) == ("alpaca", "sft", False)
    first, second = src.records()
    assert first["messages"] == [{"role": "user", "content": "Translate to French.\n\ncat"}, {"role": "assistant", "content": "chat"}]
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert second["messages"][3] == {"role": "user", "content": "And this one?"}


# ---------------------------------------------------------------- OpenAI


def _data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def test_openai_chat_jsonl_with_data_urls(tmp_path):
    png, jpeg = _image(fmt="PNG"), _image((0, 0, 255), fmt="JPEG")
    rows = [
        {"messages": [
            {"role": "system", "content": "You see images."},
            {"role": "user", "content": [{"type": "text", "text": "Compare"}, {"type": "image_url", "image_url": {"url": _data_url(png)}},
                                         {"type": "image_url", "image_url": {"url": _data_url(jpeg, "image/jpeg"), "detail": "low"}}]},
            {"role": "assistant", "content": "Red, then blue."}]},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
    ]
    src = open_source(_jsonl(tmp_path / "openai.jsonl", rows))
    assert (src.layout, src.kind) == ("messages", "sft")
    first, second = src.records()
    assert _types(first["messages"][1]) == ["text", "image", "image"]
    assert [i["bytes"] for i in first["images"]] == [png, jpeg]
    assert second["images"] == [] and second["messages"][0] == {"role": "user", "content": "Hi"}


def test_openai_remote_image_urls_are_a_clear_error(tmp_path):
    rows = [{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
                          {"role": "assistant", "content": "x"}]}]
    with pytest.raises(RecordError, match=r"row 1: .*remote image URL 'https://example.com/a.png' .*download"):
        list(open_source(_jsonl(tmp_path / "remote.jsonl", rows)).records())


def test_openai_preference_jsonl(tmp_path):
    rows = [{
        "input": {"messages": [{"role": "user", "content": "Say hi."}], "tools": [], "parallel_tool_calls": True},
        "preferred_output": [{"role": "assistant", "content": "Hi!"}],
        "non_preferred_output": [{"role": "assistant", "content": "No."}],
    }]
    src = open_source(_jsonl(tmp_path / "dpo.jsonl", rows))
    assert (src.layout, src.kind) == ("openai_preference", "preference")
    (record,) = src.records()
    assert record["prompt"] == [{"role": "user", "content": "Say hi."}]
    assert record["chosen"] == [{"role": "assistant", "content": "Hi!"}]
    assert record["rejected"] == [{"role": "assistant", "content": "No."}]


# ---------------------------------------------------------------- the folder boundary


def test_image_paths_outside_the_folder_are_refused_in_every_form(tmp_path):
    folder = tmp_path / "data"
    _images(folder, ["img/ok.png"])
    (tmp_path / "secret.png").write_bytes(_image())
    os.symlink(tmp_path / "secret.png", folder / "img" / "link.png")
    for bad in ("../secret.png", "../../etc/passwd", str(tmp_path / "secret.png"), "/etc/passwd", "img/link.png"):
        path = _jsonl(folder / "d.jsonl", [{"id": "x", "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]},
            {"role": "assistant", "content": "!"}], "images": [bad]}])
        with pytest.raises(RecordError, match=r"row 1 \(id x\): .*outside the dataset folder"):
            list(open_source(path).records())


def test_a_missing_image_names_the_file(tmp_path, elsewhere):
    folder = tmp_path / "data"
    path = _jsonl(folder / "d.jsonl", [{"id": "m", "image": "img/0.png", "conversations": [
        {"from": "human", "value": "<image>?"}, {"from": "gpt", "value": "!"}]}])
    # `img/0.png` exists beside the working directory (the decoy), not in the dataset folder
    with pytest.raises(RecordError, match=rf"row 1 \(id m\): .*image not found: {folder.resolve()}/img/0.png"):
        list(open_source(path).records())


# ---------------------------------------------------------------- empty and broken input


def test_empty_inputs_say_so(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "blank.jsonl").write_text("\n  \n")
    for name in ("empty.jsonl", "blank.jsonl"):
        with pytest.raises(EmptyDatasetError, match=rf"{name}: the file is empty"):
            open_source(tmp_path / name)
    from datasets import Dataset, DatasetDict

    Dataset.from_dict({"messages": []}).save_to_disk(str(tmp_path / "zero"), num_shards=1)
    with pytest.raises(EmptyDatasetError, match=r"zero: the dataset is empty \(0 rows\)"):
        open_source(tmp_path / "zero")
    empty = Dataset.from_dict({"messages": [[{"role": "user", "content": "x"}]]}).select([])
    DatasetDict({"train": empty, "test": empty}).save_to_disk(str(tmp_path / "zero_dd"), num_shards={"train": 1, "test": 1})
    with pytest.raises(EmptyDatasetError, match=r"the dataset is empty \(0 rows\)"):
        open_splits(tmp_path / "zero_dd")


def test_truncated_jpeg_and_corrupt_png_name_their_row(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    jpeg = _image(fmt="JPEG", noise=True)
    (folder / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    png = bytearray(_image(size=(32, 32)))
    png[40] ^= 0xFF  # inside the image data chunk: its checksum no longer matches
    (folder / "bad.png").write_bytes(bytes(png))
    (folder / "ok.png").write_bytes(_image())

    def row(rid: str, name: str) -> dict:
        return {"id": rid, "messages": [{"role": "user", "content": [{"type": "image"}]}, {"role": "assistant", "content": "!"}],
                "images": [name]}

    path = _jsonl(folder / "d.jsonl", [row("good", "ok.png"), row("j", "cut.jpg"), row("p", "bad.png")])
    with pytest.raises(RecordError, match=r"row 2 \(id j\): record j: truncated JPEG cut\.jpg"):
        list(open_source(path).records())
    bad: list[tuple[str, str]] = []
    kept = list(open_source(path).records(on_bad=lambda stub, e: bad.append((stub["id"], e.reason))))
    assert [r["id"] for r in kept] == ["good"]
    assert bad == [("j", "bad_image"), ("p", "bad_image")]
    # embedded bytes in a saved dataset are checked the same way
    from datasets import Dataset, Features, List, Value
    from datasets import Image as ImageFeature

    features = Features({"id": Value("string"), "messages": [{"role": Value("string"), "content": [{"type": Value("string"), "text": Value("string")}]}],
                         "images": List(ImageFeature())})
    rows = [{"id": "e", "messages": [{"role": "user", "content": [{"type": "image", "text": None}]},
                                     {"role": "assistant", "content": [{"type": "text", "text": "!"}]}],
             "images": [{"bytes": jpeg[: len(jpeg) // 2], "path": None}]}]
    Dataset.from_list(rows, features=features).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(RecordError, match=r"saved: row 1 \(id e\): record e: truncated JPEG") as error:
        list(open_source(tmp_path / "saved").records())
    assert error.value.reason == "bad_image"
    with pytest.raises(ImageError, match="truncated JPEG"):  # the image helper itself, as stages call it
        from synth.data import image_ref

        image_ref({"bytes": jpeg[: len(jpeg) // 2], "path": None}, None, "e")


# ---------------------------------------------------------------- the Hub


def test_hub_ids_take_config_revision_split_and_streaming(monkeypatch):
    """The Hub cannot be reached from the tests: a stand-in for `datasets.load_dataset` records the call
    and serves a peer layout (sharegpt), so what reaches synth is the real conversion path."""
    import datasets

    calls = []
    rows = [{"conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}]}]

    def stand_in(path, name=None, *, split=None, revision=None, streaming=False, **kwargs):
        calls.append({"path": path, "name": name, "split": split, "revision": revision, "streaming": streaming})
        ds = datasets.Dataset.from_list(rows)
        if split is None:
            return datasets.DatasetDict({"train": ds, "test": ds})
        return ds.to_iterable_dataset() if streaming else ds

    monkeypatch.setattr(datasets, "load_dataset", stand_in)
    src = open_source("org/chat", "test", config="en", revision="v1.0", streaming=True)
    assert src.num_rows is None and src.layout == "sharegpt"
    assert [r["messages"] for r in src.records()] == [[{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]]
    assert calls[-1] == {"path": "org/chat", "name": "en", "split": "test", "revision": "v1.0", "streaming": True}
    assert src.base_dir == hub_cache_root()  # a Hub id: image paths resolve only inside the HF cache

    splits = open_splits("org/chat", config="en", revision="main")
    assert list(splits) == ["train", "test"] and calls[-1]["split"] is None and calls[-1]["revision"] == "main"
    assert [s.num_rows for s in splits.values()] == [1, 1]


def test_mixed_string_and_parts_content_keeps_answers_that_look_like_json(tmp_path):
    """TRL-style JSONL mixing image rows (content parts) and text rows (content strings): `datasets` reads
    the column as Json and hands a string answer such as "3" or "true" back as a number or a bool."""
    Image.new("RGB", (8, 8), "red").save(tmp_path / "0.png")
    rows = [
        {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "red"}]}], "images": ["0.png"]},
        {"messages": [{"role": "user", "content": "How many sides has a triangle?"}, {"role": "assistant", "content": "3"}]},
        {"messages": [{"role": "user", "content": "Is the sky blue?"}, {"role": "assistant", "content": "true"}]},
        {"messages": [{"role": "user", "content": "Half of one?"}, {"role": "assistant", "content": "0.5"}]},
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    answers = [r["messages"][-1]["content"] for r in open_source(path).records()]
    assert answers[1:] == ["3", "true", "0.5"]
