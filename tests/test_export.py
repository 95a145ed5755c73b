"""Exporters: each format round-trips to the source samples (text and image bytes), placeholder counts hold,
bad rows are named (or skipped into a rejects file), and output is all-or-nothing."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from synth.cli import app
from synth.demo_data import make_row
from synth.errors import SynthError
from synth.export import export_dataset
from synth.io import read_dataset
from synth.records import (
    ImagePart,
    Message,
    PreferencePair,
    Sample,
    TextPart,
    pairs_to_dataset,
    samples_to_dataset,
)

# ---------------------------------------------------------------- source datasets


def _png(index: int, size: int = 96) -> bytes:
    return make_row(index, seed=3, size=size)["image"]["bytes"]


def _jpeg(index: int) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(_png(index))).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def user(*parts) -> Message:
    return Message(role="user", content=[TextPart(text=p) if isinstance(p, str) else p for p in parts])


def assistant(text: str, multimodal: bool = True) -> Message:
    return Message(role="assistant", content=[TextPart(text=text)] if multimodal else text)


def sft_samples() -> list[Sample]:
    return [
        Sample(messages=[user(ImagePart(), "Describe the image."), assistant("Two shapes.")], images=[_png(0)], meta={"source": "demo", "template": "brief"}),
        Sample(
            messages=[
                Message(role="system", content=[TextPart(text="Answer briefly.")]),
                user("What colour is it? ", ImagePart()),
                assistant("Red."),
                user("And its shape?"),
                assistant("A circle."),
            ],
            images=[_jpeg(1)],
            meta={"source": "demo", "variant": 2},
        ),
        Sample(messages=[user("No image here: what is 2+2?"), assistant("4")], meta={"source": "text"}),
    ]


def multi_image_sample() -> Sample:
    return Sample(messages=[user(ImagePart(), ImagePart(), "Which is larger?"), assistant("The first.")], images=[_png(2), _png(3)])


def pairs() -> list[PreferencePair]:
    return [
        PreferencePair(
            prompt=[user(ImagePart(), "How many shapes?")],
            chosen=[assistant("Three.")],
            rejected=[assistant("Seven.")],
            images=[_png(4)],
            meta={"model": "judge"},
        ),
        PreferencePair(prompt=[user("Say hi.")], chosen=[assistant("Hi!")], rejected=[assistant("No.")]),
    ]


def _save(dataset, folder: Path) -> Path:
    dataset.save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    text_only = [Sample(messages=[Message(role="user", content="Hi"), Message(role="assistant", content="Hello")])]
    return {
        "sft": _save(samples_to_dataset(sft_samples()), root / "sft"),
        "multi": _save(samples_to_dataset(sft_samples() + [multi_image_sample()]), root / "multi"),
        "pref": _save(pairs_to_dataset(pairs()), root / "pref"),
        "text": _save(samples_to_dataset(text_only), root / "text"),
        "literal": _save(
            samples_to_dataset([sft_samples()[0], Sample(messages=[user(ImagePart(), "What does <image> mean?"), assistant("A tag.")], images=[_png(5)])]),
            root / "literal",
        ),
    }


def _source_rows(path: Path) -> list[dict]:
    from datasets import Image as ImageFeature
    from datasets import List

    dataset = read_dataset(path)
    return list(dataset.cast_column("images", List(ImageFeature(decode=False))))


def _flat(message: dict, token: str = "<image>") -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(p["text"] if p["type"] == "text" else token for p in content)


# ---------------------------------------------------------------- TRL


def test_trl_parquet_round_trips_messages_meta_and_image_bytes(sources, tmp_path):
    from datasets import Image as ImageFeature
    from datasets import List, load_dataset

    summary = export_dataset(sources["sft"], tmp_path / "trl", "trl", show_progress=False)
    assert summary.rows == 3 and summary.embedded_images == 2 and summary.files == ["trl.parquet"]
    loaded = load_dataset("parquet", data_files=str(tmp_path / "trl" / "trl.parquet"), split="train")
    assert isinstance(loaded.features["images"].feature, ImageFeature)  # decodes straight into PIL for TRL
    raw = loaded.cast_column("images", List(ImageFeature(decode=False)))
    source = _source_rows(sources["sft"])
    for got, want in zip(raw, source, strict=True):
        assert got["id"] == want["id"]
        assert got["messages"] == want["messages"]
        assert json.loads(got["meta"]) == json.loads(want["meta"])
        assert [i["bytes"] for i in got["images"]] == [i["bytes"] for i in want["images"]]
    assert loaded[1]["images"][0].format == "JPEG"


def test_trl_jsonl_writes_images_once_as_files(sources, tmp_path):
    from datasets import load_dataset

    out = tmp_path / "trl"
    summary = export_dataset(sources["sft"], out, "trl", jsonl=True, name="shapes", show_progress=False)
    assert summary.files == ["shapes.jsonl", "images/ (2 files)"] and summary.image_files == 2
    loaded = load_dataset("json", data_files=str(out / "shapes.jsonl"), split="train")
    source = _source_rows(sources["sft"])
    for got, want in zip(loaded, source, strict=True):
        assert got["messages"] == want["messages"]
        assert [(out / p).read_bytes() for p in got["images"]] == [i["bytes"] for i in want["images"]]
    assert sorted(p.suffix for p in (out / "images").iterdir()) == [".jpg", ".png"]


def test_trl_preference_parquet_keeps_the_columns(sources, tmp_path):
    from datasets import load_dataset

    export_dataset(sources["pref"], tmp_path / "p", "trl", show_progress=False)
    loaded = load_dataset("parquet", data_files=str(tmp_path / "p" / "p.parquet"), split="train")
    assert loaded.column_names == ["id", "prompt", "chosen", "rejected", "images", "meta"]
    source = list(read_dataset(sources["pref"]))
    for column in ("prompt", "chosen", "rejected", "id"):
        assert loaded[column] == [r[column] for r in source]
    assert loaded[0]["images"][0].tobytes() == Image.open(io.BytesIO(_png(4))).convert("RGB").tobytes()


def test_trl_text_only_keeps_string_content(sources, tmp_path):
    from datasets import load_dataset

    export_dataset(sources["text"], tmp_path / "t", "trl", show_progress=False)
    loaded = load_dataset("parquet", data_files=str(tmp_path / "t" / "t.parquet"), split="train")
    assert "images" not in loaded.column_names
    assert loaded[0]["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


# ---------------------------------------------------------------- LLaMA-Factory


def test_llamafactory_sft_rows_and_dataset_info(sources, tmp_path):
    out = tmp_path / "lf"
    summary = export_dataset(sources["sft"], out, "llamafactory", name="shapes_sft", show_progress=False)
    assert summary.files == ["shapes_sft.json", "dataset_info.json", "images/ (2 files)"]
    info = json.loads((out / "dataset_info.json").read_text())
    assert info == {
        "shapes_sft": {
            "file_name": "shapes_sft.json",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant", "system_tag": "system"},
        }
    }
    rows = json.loads((out / "shapes_sft.json").read_text())
    source = _source_rows(sources["sft"])
    assert len(rows) == len(source)
    for row, want in zip(rows, source):
        assert isinstance(row["images"], list)
        assert sum(m["content"].count("<image>") for m in row["messages"]) == len(row["images"])
        assert row["messages"] == [{"role": m["role"], "content": _flat(m)} for m in want["messages"]]
        assert [(out / p).read_bytes() for p in row["images"]] == [i["bytes"] for i in want["images"]]
    assert rows[1]["messages"][1]["content"] == "What colour is it? <image>"  # the token stays where the image was
    assert rows[2]["images"] == []


def test_llamafactory_preference_entry_is_ranking(sources, tmp_path):
    out = tmp_path / "lf"
    export_dataset(sources["pref"], out, "llamafactory", jsonl=True, show_progress=False)
    entry = json.loads((out / "dataset_info.json").read_text())["lf"]
    assert entry["ranking"] is True and entry["file_name"] == "lf.jsonl"
    assert entry["columns"] == {"messages": "messages", "images": "images", "chosen": "chosen", "rejected": "rejected"}
    rows = [json.loads(line) for line in (out / "lf.jsonl").read_text().splitlines()]
    assert rows[0]["messages"] == [{"role": "user", "content": "<image>How many shapes?"}]
    assert rows[0]["chosen"] == {"role": "assistant", "content": "Three."}
    assert rows[0]["rejected"] == {"role": "assistant", "content": "Seven."}
    assert rows[1]["images"] == []


def test_llamafactory_token_mismatch_names_the_row(sources, tmp_path):
    bad_id = _source_rows(sources["literal"])[1]["id"]
    with pytest.raises(SynthError, match=rf"row 2 \(id {bad_id}\): 2 '<image>' token\(s\) in the text but 1 image"):
        export_dataset(sources["literal"], tmp_path / "lf", "llamafactory", show_progress=False)
    assert not (tmp_path / "lf").exists()
    assert list(tmp_path.iterdir()) == []  # no temp folder left behind either


def test_on_error_skip_writes_rejects_inside_the_output(sources, tmp_path):
    out = tmp_path / "lf"
    (tmp_path / "lf.rejects.jsonl").write_text('{"stale": true}\n')  # an older synth's sidecar beside OUT
    summary = export_dataset(sources["literal"], out, "llamafactory", on_error="skip", show_progress=False)
    assert summary.rows == 1 and summary.skipped == 1 and summary.rejects == out / "rejects.jsonl"
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["reason"], r["stage"]) for r in rejects] == [(2, "image_token_mismatch", "export:llamafactory")]
    assert len(json.loads((out / "lf.json").read_text())) == 1
    assert not (tmp_path / "lf.rejects.jsonl").exists()
    # A clean re-export over it leaves no rejects file.
    export_dataset(sources["sft"], out, "llamafactory", overwrite=True, show_progress=False)
    assert not (out / "rejects.jsonl").exists()


# ---------------------------------------------------------------- LLaVA


def test_llava_conversations_and_single_image(sources, tmp_path):
    out = tmp_path / "llava"
    export_dataset(sources["sft"], out, "llava", show_progress=False)
    rows = json.loads((out / "llava.json").read_text())
    source = _source_rows(sources["sft"])
    assert rows[0] == {
        "id": source[0]["id"],
        "image": rows[0]["image"],
        "conversations": [{"from": "human", "value": "<image>\nDescribe the image."}, {"from": "gpt", "value": "Two shapes."}],
    }
    assert (out / rows[0]["image"]).read_bytes() == source[0]["images"][0]["bytes"]
    # The system prompt goes in front of the first human turn; the image token leads it.
    assert rows[1]["conversations"][0]["value"] == "<image>\nAnswer briefly.\n\nWhat colour is it? "
    assert [c["from"] for c in rows[1]["conversations"]] == ["human", "gpt", "human", "gpt"]
    assert "image" not in rows[2]
    assert rows[2]["conversations"][0]["value"] == "No image here: what is 2+2?"


def test_llava_multi_image_row_is_an_error_or_skipped(sources, tmp_path):
    bad_id = _source_rows(sources["multi"])[3]["id"]
    with pytest.raises(SynthError, match=rf"row 4 \(id {bad_id}\): 2 images; LLaVA holds at most one"):
        export_dataset(sources["multi"], tmp_path / "llava", "llava", show_progress=False)
    assert not (tmp_path / "llava").exists()

    summary = export_dataset(sources["multi"], tmp_path / "llava", "llava", on_error="skip", show_progress=False)
    assert summary.rows == 3 and summary.skipped == 1
    reject = json.loads((tmp_path / "llava" / "rejects.jsonl").read_text())
    assert reject["id"] == bad_id and reject["reason"] == "multi_image"


def test_llava_refuses_preference_data_and_jsonl(sources, tmp_path):
    with pytest.raises(SynthError, match="SFT data only"):
        export_dataset(sources["pref"], tmp_path / "x", "llava", show_progress=False)
    with pytest.raises(SynthError, match="drop --jsonl"):
        export_dataset(sources["sft"], tmp_path / "x", "llava", jsonl=True, show_progress=False)
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- OpenAI


def _data_url_bytes(url: str) -> tuple[str, bytes]:
    head, data = url.split(",", 1)
    return head, base64.b64decode(data)


def test_openai_chat_rows_embed_images_as_data_urls(sources, tmp_path):
    out = tmp_path / "oa"
    summary = export_dataset(sources["sft"], out, "openai", show_progress=False)
    assert summary.embedded_images == 2 and summary.image_files == 0 and not (out / "images").exists()
    rows = [json.loads(line) for line in (out / "oa.jsonl").read_text().splitlines()]
    assert list(rows[0]) == ["messages"]
    first = rows[0]["messages"][0]["content"]
    assert first[1] == {"type": "text", "text": "Describe the image."}
    head, data = _data_url_bytes(first[0]["image_url"]["url"])
    assert head == "data:image/png;base64" and data == _png(0)
    head, data = _data_url_bytes(rows[1]["messages"][1]["content"][1]["image_url"]["url"])
    assert head == "data:image/jpeg;base64" and data == _jpeg(1)
    assert rows[1]["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert rows[0]["messages"][1] == {"role": "assistant", "content": "Two shapes."}
    assert rows[2]["messages"] == [{"role": "user", "content": "No image here: what is 2+2?"}, {"role": "assistant", "content": "4"}]


def test_openai_preference_format_is_text_only(sources, tmp_path):
    # OpenAI's DPO fine-tuning takes text only: an image pair is an error naming the row, or skipped.
    with pytest.raises(SynthError, match=r"row 1.*OpenAI preference \(DPO\) fine-tuning accepts text only"):
        export_dataset(sources["pref"], tmp_path / "oa", "openai", show_progress=False)
    assert not (tmp_path / "oa").exists()
    out = tmp_path / "oa2"
    export_dataset(sources["pref"], out, "openai", on_error="skip", show_progress=False)
    rows = [json.loads(line) for line in (out / "oa2.jsonl").read_text().splitlines()]
    assert rows == [
        {
            "input": {"messages": [{"role": "user", "content": "Say hi."}]},
            "preferred_output": [{"role": "assistant", "content": "Hi!"}],
            "non_preferred_output": [{"role": "assistant", "content": "No."}],
        }
    ]
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejects] == ["images_unsupported"]


def test_openai_refuses_images_in_assistant_turns(tmp_path):
    sample = Sample(messages=[user("Draw it."), Message(role="assistant", content=[ImagePart()])], images=[_png(6)])
    source = _save(samples_to_dataset([sample]), tmp_path / "src")
    with pytest.raises(SynthError, match=rf"id {sample.id}\): an image in a 'assistant' message"):
        export_dataset(source, tmp_path / "oa", "openai", show_progress=False)


# ---------------------------------------------------------------- sources, atomicity, CLI


def test_jsonl_source_with_relative_image_paths_round_trips(sources, tmp_path):
    first = tmp_path / "trl"
    export_dataset(sources["sft"], first, "trl", jsonl=True, show_progress=False)
    export_dataset(first / "trl.jsonl", tmp_path / "llava", "llava", show_progress=False)
    rows = json.loads((tmp_path / "llava" / "llava.json").read_text())
    assert (tmp_path / "llava" / rows[0]["image"]).read_bytes() == _png(0)


def test_image_path_escaping_the_dataset_is_refused(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    row = {"id": "r1", "messages": [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "hi"}]},
                                    {"role": "assistant", "content": [{"type": "text", "text": "ok"}]}],
           "images": ["../../etc/passwd"], "meta": "{}"}
    (source / "data.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(SynthError, match=r"row 1 \(id r1\).*outside the dataset folder"):
        export_dataset(source / "data.jsonl", tmp_path / "out", "llamafactory", show_progress=False)


def test_a_dataset_that_is_not_sft_or_preference_is_refused(tmp_path):
    from synth.demo_data import write_demo_data

    write_demo_data(tmp_path / "demo", count=2)
    with pytest.raises(SynthError, match="not an SFT dataset.*synth adapt"):
        export_dataset(tmp_path / "demo", tmp_path / "out", "trl", show_progress=False)


def test_existing_output_needs_overwrite_and_a_failed_overwrite_keeps_it(sources, tmp_path):
    out = tmp_path / "lf"
    export_dataset(sources["sft"], out, "llamafactory", show_progress=False)
    before = (out / "lf.json").read_bytes()
    with pytest.raises(SynthError, match="already exists; pass --overwrite"):
        export_dataset(sources["pref"], out, "llamafactory", show_progress=False)
    with pytest.raises(SynthError, match="token"):
        export_dataset(sources["literal"], out, "llamafactory", overwrite=True, show_progress=False)
    assert (out / "lf.json").read_bytes() == before
    export_dataset(sources["pref"], out, "llamafactory", overwrite=True, show_progress=False)
    assert (out / "lf.json").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lf"]


def test_unknown_format_is_a_clear_error(sources, tmp_path):
    with pytest.raises(SynthError, match="unknown export format 'alpaca'; choose one of trl, llamafactory, llava, openai"):
        export_dataset(sources["sft"], tmp_path / "x", "alpaca")


def test_cli_export_prints_a_summary_and_errors_in_one_line(sources, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(sources["sft"]), "--format", "llamafactory", "--out", str(tmp_path / "lf")])
    assert result.exit_code == 0, result.output
    assert "exported 3 sft rows (2 image files) as llamafactory" in result.output
    assert "lf.json, dataset_info.json, images/ (2 files)" in result.output

    result = runner.invoke(app, ["export", str(sources["multi"]), "--format", "llava", "--out", str(tmp_path / "llava")])
    assert result.exit_code == 1
    assert "error:" in result.output and "row 4" in result.output and "Traceback" not in result.output

    result = runner.invoke(app, ["export", str(sources["multi"]), "-f", "llava", "-o", str(tmp_path / "llava"), "--on-error", "skip"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 rows" in result.output


@pytest.mark.slow  # importing trl takes ~10-30 s on 2 shared cores; no model needed
def test_trl_export_fits_trl_data_utils(sources, tmp_path):
    from datasets import load_dataset
    from trl.data_utils import is_conversational, prepare_multimodal_messages

    export_dataset(sources["sft"], tmp_path / "sft", "trl", show_progress=False)
    export_dataset(sources["pref"], tmp_path / "pref", "trl", show_progress=False)
    sft = load_dataset("parquet", data_files=str(tmp_path / "sft" / "sft.parquet"), split="train")
    pref = load_dataset("parquet", data_files=str(tmp_path / "pref" / "pref.parquet"), split="train")
    for row in list(sft) + list(pref):
        assert is_conversational(row)
    filled = prepare_multimodal_messages(sft[0]["messages"], sft[0]["images"])
    assert filled[0]["content"][0]["image"].size == (96, 96)


# ---------------------------------------------------------------- bad input, splits, formats (the record spine)


def _noisy_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((128, 128), 80).convert("RGB").save(buf, format="JPEG")
    return buf.getvalue()


def _one_image_sample(image: bytes, text: str = "What is it?") -> Sample:
    return Sample(messages=[user(ImagePart(), text), assistant("A shape.")], images=[image])


def _cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def _one_error_line(result, *fragments):
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize("fmt", ["trl", "llamafactory", "llava", "openai"])
def test_truncated_jpeg_and_corrupt_png_are_one_error_line_and_nothing_is_written(tmp_path, fmt):
    jpeg = _noisy_jpeg()
    png = bytearray(_png(7))
    png[60] ^= 0xFF  # the image data chunk's checksum no longer matches
    for name, bad, fragment in (("jpeg", jpeg[: len(jpeg) // 2], "truncated JPEG"), ("png", bytes(png), "corrupt image")):
        good, broken = _one_image_sample(_png(0)), _one_image_sample(bad, "Broken?")
        source = _save(samples_to_dataset([good, broken]), tmp_path / f"src-{name}")
        out = tmp_path / f"out-{name}"
        _one_error_line(_cli("export", source, "-f", fmt, "-o", out), f"row 2 (id {broken.id})", fragment, "--on-error skip")
        assert not out.exists() and not list(tmp_path.glob(f".out-{name}.*"))
        result = _cli("export", source, "-f", fmt, "-o", out, "--on-error", "skip")
        assert result.exit_code == 0, result.output
        assert "exported 1 sft rows" in result.output and "skipped 1 rows" in result.output
        (reject,) = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
        assert (reject["id"], reject["reason"], reject["row"]) == (broken.id, "bad_image", 2)


def test_a_literal_image_token_is_an_error_for_trl(sources, tmp_path):
    bad_id = _source_rows(sources["literal"])[1]["id"]
    for extra in ((), ("--jsonl",)):
        _one_error_line(
            _cli("export", sources["literal"], "-f", "trl", "-o", tmp_path / "trl", *extra),
            f"row 2 (id {bad_id})", "literal '<image>'", "TRL",
        )
    assert not (tmp_path / "trl").exists()
    text_only = Sample(messages=[Message(role="user", content="What does <image> do in HTML?"), Message(role="assistant", content="Nothing.")])
    source = _save(samples_to_dataset([text_only]), tmp_path / "text")
    with pytest.raises(SynthError, match=rf"row 1 \(id {text_only.id}\): message 0 \(user\) contains a literal '<image>'"):
        export_dataset(source, tmp_path / "t", "trl", show_progress=False)
    summary = export_dataset(sources["literal"], tmp_path / "trl", "trl", on_error="skip", show_progress=False)
    assert summary.rows == 1 and summary.skipped == 1
    assert json.loads((tmp_path / "trl" / "rejects.jsonl").read_text())["reason"] == "image_token_literal"


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def test_openai_gets_rgb_or_rgba_only(tmp_path):
    base = Image.open(io.BytesIO(_png(1))).convert("RGB")
    rgba = base.convert("RGBA")
    rgba.putpixel((0, 0), (1, 2, 3, 40))
    images = {
        "L": _encoded(base.convert("L"), "PNG"),
        "P": _encoded(base.convert("P"), "PNG"),
        "LA": _encoded(base.convert("LA"), "PNG"),
        "CMYK": _encoded(base.convert("CMYK"), "JPEG"),
        "L-jpeg": _encoded(base.convert("L"), "JPEG"),
        "GIF": _encoded(base.convert("P"), "GIF"),
        "RGBA": _encoded(rgba, "PNG"),
        "RGB": _encoded(base, "PNG"),
    }
    samples = [_one_image_sample(data, name) for name, data in images.items()]
    source = _save(samples_to_dataset(samples), tmp_path / "modes")
    result = _cli("export", source, "-f", "openai", "-o", tmp_path / "oa")
    assert result.exit_code == 0, result.output
    assert "8 images embedded, 6 converted to RGB" in result.output
    rows = [json.loads(line) for line in (tmp_path / "oa" / "oa.jsonl").read_text().splitlines()]
    got = {}
    for row in rows:
        parts = row["messages"][0]["content"]
        head, data = _data_url_bytes(parts[0]["image_url"]["url"])
        got[parts[1]["text"]] = (head, data, Image.open(io.BytesIO(data)))
    for name in ("L", "P", "LA", "CMYK", "L-jpeg", "GIF"):
        head, _, image = got[name]
        assert image.mode == "RGB" and image.size == base.size, name
        assert head == ("data:image/jpeg;base64" if name in ("CMYK", "L-jpeg") else "data:image/png;base64"), name
    assert got["RGBA"][1] == images["RGBA"] and got["RGBA"][2].mode == "RGBA"  # kept, byte for byte
    assert got["RGB"][1] == images["RGB"]
    # the gray values survive the conversion
    assert got["L"][2].getpixel((5, 5)) == (base.convert("L").getpixel((5, 5)),) * 3


def test_a_datasetdict_exports_every_split(tmp_path):
    from datasets import DatasetDict

    train = samples_to_dataset(sft_samples())
    valid = samples_to_dataset([_one_image_sample(_png(9), "Held out?")])
    DatasetDict({"train": train, "validation": valid}).save_to_disk(str(tmp_path / "dd"))

    result = _cli("export", tmp_path / "dd", "-f", "trl", "-o", tmp_path / "trl", "--name", "shapes")
    assert result.exit_code == 0, result.output
    assert "exported 4 sft rows" in result.output and "splits: train 3, validation 1" in result.output
    assert sorted(p.name for p in (tmp_path / "trl").iterdir() if p.name != ".synth-output") == ["shapes_train.parquet", "shapes_validation.parquet"]
    from datasets import load_dataset

    loaded = load_dataset("parquet", data_files={s: str(tmp_path / "trl" / f"shapes_{s}.parquet") for s in ("train", "validation")})
    assert {s: len(d) for s, d in loaded.items()} == {"train": 3, "validation": 1}

    summary = export_dataset(tmp_path / "dd", tmp_path / "lf", "llamafactory", show_progress=False)
    assert summary.files == ["lf_train.json", "lf_validation.json", "dataset_info.json", "images/ (3 files)"]
    info = json.loads((tmp_path / "lf" / "dataset_info.json").read_text())
    assert {k: v["file_name"] for k, v in info.items()} == {"lf_train": "lf_train.json", "lf_validation": "lf_validation.json"}
    for fmt, ext in (("llava", "json"), ("openai", "jsonl")):
        summary = export_dataset(tmp_path / "dd", tmp_path / fmt, fmt, show_progress=False)
        assert summary.splits == {"train": 3, "validation": 1}
        assert summary.files[:2] == [f"{fmt}_train.{ext}", f"{fmt}_validation.{ext}"]
    # --split picks one, named as a single dataset
    summary = export_dataset(tmp_path / "dd", tmp_path / "one", "openai", split="validation", show_progress=False)
    assert summary.files == ["one.jsonl"] and summary.rows == 1 and summary.splits == {}


def test_relative_image_paths_resolve_against_the_dataset_not_the_cwd(sources, tmp_path, monkeypatch):
    first = tmp_path / "trl"
    export_dataset(sources["sft"], first, "trl", jsonl=True, show_progress=False)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "images").mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    summary = export_dataset(Path("..") / "trl" / "trl.jsonl", tmp_path / "lf", "llamafactory", show_progress=False)
    assert summary.rows == 3 and summary.image_files == 2
    rows = json.loads((tmp_path / "lf" / "lf.json").read_text())
    assert (tmp_path / "lf" / rows[0]["images"][0]).read_bytes() == _png(0)


def test_peer_layouts_export(tmp_path):
    folder = tmp_path / "llava"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "a.png").write_bytes(_png(3))
    rows = [{"id": "v1", "image": "img/a.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "Shapes."}]}]
    (folder / "data.json").write_text(json.dumps(rows))
    summary = export_dataset(folder / "data.json", tmp_path / "trl", "trl", jsonl=True, show_progress=False)
    assert summary.rows == 1
    (row,) = [json.loads(line) for line in (tmp_path / "trl" / "trl.jsonl").read_text().splitlines()]
    assert row["id"] == "v1"
    assert row["messages"][0]["content"] == [{"type": "image", "text": None}, {"type": "text", "text": "What?"}]
    assert (tmp_path / "trl" / row["images"][0]).read_bytes() == _png(3)


def test_empty_sources_are_one_clear_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    _one_error_line(_cli("export", tmp_path / "empty.jsonl", "-f", "trl", "-o", tmp_path / "o"), "empty.jsonl: the file is empty")
    samples_to_dataset(sft_samples()).select([]).save_to_disk(str(tmp_path / "zero"), num_shards=1)
    _one_error_line(_cli("export", tmp_path / "zero", "-f", "trl", "-o", tmp_path / "o"), "the dataset is empty (0 rows)")
    assert not (tmp_path / "o").exists()
