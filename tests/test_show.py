"""`synth show`: SFT, preference and plain datasets, row selection, and clear errors."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from synth.cli import app
from synth.demo_data import write_demo_data
from synth.records import (
    ImagePart,
    Message,
    PreferencePair,
    Sample,
    TextPart,
    pairs_to_dataset,
    samples_to_dataset,
)


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def datasets_on_disk(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("show")
    samples = [
        Sample(
            messages=[
                Message(role="system", content=[TextPart(text="Be brief.")]),
                Message(role="user", content=[ImagePart(), TextPart(text="What is drawn?")]),
                Message(role="assistant", content=[TextPart(text="A red square.")]),
            ],
            images=[_png(64, 48)],
            meta={"source": "demo", "template": "brief_caption", "variant": 3},
        ),
        Sample(
            messages=[Message(role="user", content=[TextPart(text="Second question?")]), Message(role="assistant", content=[TextPart(text="Second answer.")])],
            meta={"source": "demo"},
        ),
    ]
    pairs = [
        PreferencePair(
            prompt=[Message(role="user", content="Name a colour.")],
            chosen=[Message(role="assistant", content="Blue.")],
            rejected=[Message(role="assistant", content="Seven.")],
            meta={"model": "judge-x"},
        )
    ]
    paths = {"sft": root / "sft", "pref": root / "pref", "demo": root / "demo"}
    samples_to_dataset(samples).save_to_disk(str(paths["sft"]))
    pairs_to_dataset(pairs).save_to_disk(str(paths["pref"]))
    write_demo_data(paths["demo"], count=3, size=96)
    return paths


def _show(*args: str):
    result = CliRunner().invoke(app, ["show", *args])
    return result


def test_sft_rows_show_turns_image_sizes_and_provenance(datasets_on_disk):
    result = _show(str(datasets_on_disk["sft"]), "-n", "1")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "2 rows, SFT dataset" in out
    assert "system: Be brief." in out
    assert "user: [image 64x48] What is drawn?" in out
    assert "assistant: A red square." in out
    assert "meta: source=demo template=brief_caption variant=3" in out
    assert "Second question?" not in out  # -n 1


def test_offset_and_id_pick_rows(datasets_on_disk):
    from synth.io import read_dataset

    result = _show(str(datasets_on_disk["sft"]), "--offset", "1")
    assert result.exit_code == 0 and "Second answer." in result.output and "Be brief." not in result.output
    second_id = read_dataset(datasets_on_disk["sft"])[1]["id"]
    result = _show(str(datasets_on_disk["sft"]), "--id", second_id)
    assert result.exit_code == 0 and f"#1 · id {second_id}" in result.output


def test_preference_rows_show_both_replies(datasets_on_disk):
    result = _show(str(datasets_on_disk["pref"]))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "preference dataset" in out
    assert "user: Name a colour." in out
    # chosen | rejected side by side: the headers on one line, then the two replies on one line
    header = next(line for line in out.splitlines() if "chosen" in line)
    assert header.index("chosen") < header.index("rejected")
    replies = next(line for line in out.splitlines() if "Blue." in line)
    assert replies.index("Blue.") < replies.index("Seven.")
    assert "model=judge-x" in out


def test_plain_datasets_show_their_columns(datasets_on_disk):
    result = _show(str(datasets_on_disk["demo"]), "-n", "2")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "plain dataset" in out and "shapes-00001" in out and "shapes-00002" not in out
    assert "image: [image 96x96]" in out
    assert "caption: " in out and "label: " in out


def test_bad_selection_is_a_one_line_error(datasets_on_disk):
    result = _show(str(datasets_on_disk["sft"]), "--id", "nope")
    assert result.exit_code == 1 and "no row with id 'nope'" in result.output
    result = _show(str(datasets_on_disk["sft"]), "--offset", "5")
    assert result.exit_code == 1 and "outside the dataset (it has 2 rows)" in result.output
    result = _show(str(datasets_on_disk["sft"].parent / "missing"))
    assert result.exit_code == 1 and "no such file or folder" in result.output


def test_exported_jsonl_with_image_paths_is_shown(datasets_on_disk, tmp_path):
    from synth.export import export_dataset

    export_dataset(datasets_on_disk["sft"], tmp_path / "trl", "trl", jsonl=True, show_progress=False)
    result = _show(str(tmp_path / "trl" / "trl.jsonl"))
    assert result.exit_code == 0, result.output
    assert "[image 64x48]" in result.output


def test_a_truncated_jpeg_marks_its_row_instead_of_crashing(tmp_path):
    buf = io.BytesIO()
    Image.effect_noise((128, 128), 80).convert("RGB").save(buf, format="JPEG")
    cut = buf.getvalue()[: len(buf.getvalue()) // 2]
    samples = [
        Sample(messages=[Message(role="user", content=[ImagePart(), TextPart(text="Broken?")]),
                         Message(role="assistant", content=[TextPart(text="Yes.")])], images=[cut]),
        Sample(messages=[Message(role="user", content=[ImagePart(), TextPart(text="Fine?")]),
                         Message(role="assistant", content=[TextPart(text="Yes.")])], images=[_png(20, 10)]),
    ]
    samples_to_dataset(samples).save_to_disk(str(tmp_path / "cut"))
    result = _show(str(tmp_path / "cut"))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    out = " ".join(result.output.split())
    assert "[image unreadable: truncated JPEG" in out and "[image 20x10] Fine?" in out


def test_peer_layouts_and_relative_paths_from_another_directory(tmp_path, monkeypatch):
    import json

    folder = tmp_path / "trl"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "0.png").write_bytes(_png(30, 20))
    rows = [{"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
                          {"role": "assistant", "content": [{"type": "text", "text": "Red."}]}], "images": ["img/0.png"]},
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "images": ["img/missing.png"]}]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "lf.json").write_text(json.dumps([{"conversations": [{"from": "human", "value": "<image>What?"}, {"from": "gpt", "value": "A."}],
                                                  "images": ["img/0.png"]}]))
    monkeypatch.chdir(tmp_path)
    result = _show(str(folder / "data.jsonl"))
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "user: [image 30x20] Colour?" in out
    assert "cannot read this row" in out and "image not found" in out  # the second row is marked, not fatal
    result = _show(str(folder / "lf.json"))
    assert result.exit_code == 0, result.output
    assert "SFT (sharegpt layout) dataset" in result.output and "user: [image 30x20] What?" in result.output


def test_empty_dataset_is_one_clear_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    result = _show(str(tmp_path / "empty.jsonl"))
    assert result.exit_code == 1 and "the file is empty" in result.output
