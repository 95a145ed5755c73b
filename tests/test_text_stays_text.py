"""Message text that happens to look like JSON (a list, an object, a number, ``true``, ``null``, a code
block) is text: every reader layout, every exporter, a ``save_to_disk`` round trip and the CLI commands
that read datasets (show, filter, dedup) keep it exactly as written. The layout and the column's type
decide what is a list of content parts, never the look of a string."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from synth.data import open_source, write_records
from synth.io import read_dataset
from synth.records import Message, Sample, message_text, samples_to_dataset
from tests.cli_helpers import run_cli

ANSWERS = [
    '["red", "green"]',
    "[1, 3, 5]",
    '{"a": 1}',
    "3",
    "true",
    "null",
    "1e3",
    "007",
    '"quoted"',
    "```python\nprint([1, 2, 3])\n```",
    "[]",
]


def _png(color=(200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _last_text(record: dict, key: str = "messages") -> str:
    return message_text(record[key][-1])


def _chat(answer: str) -> list[dict]:
    return [{"role": "user", "content": "Answer in the form asked for."}, {"role": "assistant", "content": answer}]


def _answers(path, key: str = "messages") -> list[str]:
    return [_last_text(r, key) for r in open_source(path).records()]


# ---------------------------------------------------------------- reader layouts


def test_trl_messages_jsonl_keeps_json_looking_answers(tmp_path):
    path = _jsonl(tmp_path / "chat.jsonl", [{"messages": _chat(a)} for a in ANSWERS])
    assert _answers(path) == ANSWERS


def test_messages_mixing_parts_and_strings_keep_json_looking_answers(tmp_path):
    """`datasets` reads a content column of both strings and part lists as Json; a string must stay a
    string there too (also when the first rows are all strings, and in streaming mode)."""
    (tmp_path / "0.png").write_bytes(_png())
    image_row = {
        "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
                     {"role": "assistant", "content": [{"type": "text", "text": "red"}]}],
        "images": ["0.png"],
    }
    rows = [{"messages": _chat(a), "images": []} for a in ANSWERS] + [image_row]
    path = _jsonl(tmp_path / "mixed.jsonl", rows)
    records = list(open_source(path).records())
    assert [_last_text(r) for r in records] == ANSWERS + ["red"]
    assert all(isinstance(r["messages"][-1]["content"], str) for r in records[:-1])
    assert records[-1]["messages"][0]["content"][0]["type"] == "image" and len(records[-1]["images"]) == 1
    streamed = [_last_text(r) for r in open_source(path, streaming=True).records()]
    assert streamed == ANSWERS + ["red"]
    # the same rows as one JSON list (LLaVA-style .json), and as JSON lines in a .json file
    (tmp_path / "mixed_list.json").write_text(json.dumps(rows), encoding="utf-8")
    (tmp_path / "lines").mkdir()
    (tmp_path / "lines" / "0.png").write_bytes(_png())
    (tmp_path / "lines" / "mixed.json").write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    for other in ("mixed_list.json", "lines/mixed.json"):
        assert _answers(tmp_path / other) == ANSWERS + ["red"], other
    # an edited file is read again, not served from a cache of the first read
    _jsonl(path, [{"messages": _chat("[2, 4]"), "images": []}, image_row])
    assert _answers(path) == ["[2, 4]", "red"]


def test_prompt_completion_and_preference_jsonl(tmp_path):
    pc = _jsonl(tmp_path / "pc" / "d.jsonl", [{"prompt": a, "completion": a} for a in ANSWERS])
    records = list(open_source(pc).records())
    assert [message_text(r["messages"][0]) for r in records] == ANSWERS
    assert [_last_text(r) for r in records] == ANSWERS
    pref = _jsonl(tmp_path / "pref" / "d.jsonl", [{"prompt": a, "chosen": a, "rejected": "no"} for a in ANSWERS])
    records = list(open_source(pref).records())
    assert [message_text(r["prompt"][0]) for r in records] == ANSWERS
    assert [_last_text(r, "chosen") for r in records] == ANSWERS


def test_llava_json_sharegpt_and_alpaca(tmp_path):
    (tmp_path / "llava").mkdir()
    (tmp_path / "llava" / "0.png").write_bytes(_png())
    llava = [{"id": f"r{i}", "image": "0.png",
              "conversations": [{"from": "human", "value": "<image>\nWhat is listed?"}, {"from": "gpt", "value": a}]}
             for i, a in enumerate(ANSWERS)]
    (tmp_path / "llava" / "data.json").write_text(json.dumps(llava))
    assert _answers(tmp_path / "llava" / "data.json") == ANSWERS

    sharegpt = [{"conversations": [{"from": "human", "value": a}, {"from": "gpt", "value": a}]} for a in ANSWERS]
    path = _jsonl(tmp_path / "sharegpt" / "d.jsonl", sharegpt)
    records = list(open_source(path).records())
    assert [message_text(r["messages"][0]) for r in records] == ANSWERS and [_last_text(r) for r in records] == ANSWERS

    alpaca = [{"instruction": "Answer.", "input": "", "output": a} for a in ANSWERS]
    (tmp_path / "alpaca.json").write_text(json.dumps(alpaca))
    assert _answers(tmp_path / "alpaca.json") == [a.strip() for a in ANSWERS]


def test_openai_chat_and_preference_jsonl(tmp_path):
    path = _jsonl(tmp_path / "chat" / "train.jsonl", [{"messages": _chat(a)} for a in ANSWERS])
    assert _answers(path) == ANSWERS
    rows = [{"input": {"messages": [{"role": "user", "content": a}]},
             "preferred_output": [{"role": "assistant", "content": a}],
             "non_preferred_output": [{"role": "assistant", "content": "no"}]} for a in ANSWERS]
    path = _jsonl(tmp_path / "pref" / "train.jsonl", rows)
    records = list(open_source(path).records())
    assert [message_text(r["prompt"][0]) for r in records] == ANSWERS
    assert [_last_text(r, "chosen") for r in records] == ANSWERS


def test_saved_parquet_and_synth_written_datasets(tmp_path):
    samples = [Sample(messages=[Message(role="user", content="Q?"), Message(role="assistant", content=a)]) for a in ANSWERS]
    dataset = samples_to_dataset(samples)
    dataset.save_to_disk(str(tmp_path / "saved"))
    dataset.to_parquet(str(tmp_path / "d.parquet"))
    write_records([{"messages": _chat(a)} for a in ANSWERS], tmp_path / "written")
    for source in ("saved", "d.parquet", "written"):
        assert _answers(tmp_path / source) == ANSWERS, source
    # and through synth's reader + writer again (a save_to_disk round trip of what synth read)
    write_records(open_source(tmp_path / "saved").records(), tmp_path / "again")
    assert _answers(tmp_path / "again") == ANSWERS


def test_csv_cells_are_text(tmp_path):
    """CSV holds only text: a messages cell is the JSON of the list (the column's type says so), but the
    message contents inside, and alpaca's output, stay the strings they are (no "3" read as a number)."""
    with open(tmp_path / "chat.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["messages"])
        writer.writerows([[json.dumps(_chat(a))] for a in ANSWERS])
    assert _answers(tmp_path / "chat.csv") == ANSWERS
    (tmp_path / "alpaca").mkdir()
    with open(tmp_path / "alpaca" / "a.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["instruction", "input", "output"])
        writer.writerows([["Answer.", "", a] for a in ANSWERS])
    assert _answers(tmp_path / "alpaca" / "a.csv") == ANSWERS
    # a labelled table (raw rows, for adapt): "None", "NA" and "null" are answers, only an empty cell is missing
    (tmp_path / "raw").mkdir()
    with open(tmp_path / "raw" / "qa.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["question", "answer"], ["a", "None"], ["b", "NA"], ["c", "null"], ["d", ""]])
    assert [r["answer"] for r in open_source(tmp_path / "raw" / "qa.csv").records()] == ["None", "NA", "null", None]


# ---------------------------------------------------------------- exporters and the CLI


@pytest.fixture()
def answers_dataset(tmp_path) -> Path:
    """A text-only SFT dataset as synth writes it (Self-Instruct's answers can look like this)."""
    samples = [Sample(messages=[Message(role="user", content=f"Question {i}?"), Message(role="assistant", content=a)])
               for i, a in enumerate(ANSWERS)]
    path = tmp_path / "answers"
    samples_to_dataset(samples).save_to_disk(str(path))
    return path


@pytest.fixture()
def image_answers_dataset(tmp_path) -> Path:
    samples = [Sample(messages=[Message(role="user", content=[{"type": "image"}, {"type": "text", "text": "What?"}]),
                                Message(role="assistant", content=[{"type": "text", "text": a}])],
                      images=[_png((i * 20, 0, 0))]) for i, a in enumerate(ANSWERS)]
    path = tmp_path / "image_answers"
    samples_to_dataset(samples).save_to_disk(str(path))
    return path


def _export(source: Path, fmt: str, out: Path, *extra: str) -> Path:
    result = run_cli("export", source, "--format", fmt, "--out", out, *extra)
    assert result.exit_code == 0, result.output
    return out


def _json_rows(folder: Path) -> list[dict]:
    rows = []
    for file in sorted(folder.rglob("*.json*")):
        if file.name == "dataset_info.json":
            continue
        text = file.read_text(encoding="utf-8")
        rows += json.loads(text) if file.suffix == ".json" else [json.loads(line) for line in text.splitlines()]
    return rows


def test_every_exporter_writes_the_answers_as_written(answers_dataset, image_answers_dataset, tmp_path):
    trl = _export(answers_dataset, "trl", tmp_path / "trl")
    assert _answers(trl) == ANSWERS
    trl_jsonl = _export(answers_dataset, "trl", tmp_path / "trl_jsonl", "--jsonl")
    assert [r["messages"][-1]["content"] for r in _json_rows(trl_jsonl)] == ANSWERS
    assert _answers(trl_jsonl) == ANSWERS  # and read back

    lf = _export(answers_dataset, "llamafactory", tmp_path / "lf")
    assert [r["messages"][-1]["content"] for r in _json_rows(lf)] == ANSWERS
    assert _answers(lf / "lf.json") == ANSWERS

    openai = _export(answers_dataset, "openai", tmp_path / "openai")
    assert [r["messages"][-1]["content"] for r in _json_rows(openai)] == ANSWERS
    assert _answers(openai) == ANSWERS

    llava = _export(image_answers_dataset, "llava", tmp_path / "llava")
    assert [r["conversations"][-1]["value"] for r in _json_rows(llava)] == ANSWERS
    assert _answers(llava) == ANSWERS
    trl_images = _export(image_answers_dataset, "trl", tmp_path / "trl_images", "--jsonl")
    assert _answers(trl_images) == ANSWERS
    # OpenAI chat rows mix part lists (the image turn) and strings (the answer): read back exactly
    openai_images = _export(image_answers_dataset, "openai", tmp_path / "openai_images")
    assert [r["messages"][-1]["content"] for r in _json_rows(openai_images)] == ANSWERS
    assert _answers(openai_images) == ANSWERS


def test_show_filter_and_dedup_read_such_a_dataset(answers_dataset, tmp_path):
    result = run_cli("show", answers_dataset, "-n", str(len(ANSWERS)))
    assert result.exit_code == 0, result.output
    assert '["red", "green"]' in result.output and '{"a": 1}' in result.output and "redgreen" not in result.output

    result = run_cli("filter", answers_dataset, "--out", tmp_path / "filtered", "--filter", "repetition")
    assert result.exit_code == 0, result.output
    kept = [message_text(r["messages"][-1]) for r in read_dataset(str(tmp_path / "filtered"))]
    assert kept == ANSWERS

    result = run_cli("dedup", answers_dataset, "--out", tmp_path / "deduped")
    assert result.exit_code == 0, result.output
    kept = [message_text(r["messages"][-1]) for r in read_dataset(str(tmp_path / "deduped"))]
    assert kept == ANSWERS
