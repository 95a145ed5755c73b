"""Provenance a user can rely on: the input's own columns travel with each record, ``meta.source`` names the
dataset the same way from any working directory (never a path that holds the user's home), and `synth adapt`
names a row without an id by its image path."""

from __future__ import annotations

import json
from pathlib import Path

from test_adapt_data import draw_scene

from synth.data import open_source
from synth.data.reader import source_label
from synth.io import read_dataset
from synth.records import load_meta
from tests.cli_helpers import run_cli

pytest_plugins = ["tests.llm_fixtures"]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _metas(folder: Path) -> list[dict]:
    return [load_meta(r["meta"]) for r in read_dataset(str(folder))]


HUMANEVAL = [
    {"task_id": f"HumanEval/{i}", "instruction": f"Write a function number {i}.", "entry_point": f"f{i}",
     "test": f"assert f{i}() == {i}"}
    for i in range(3)
]


def test_columns_a_layout_does_not_use_travel_in_meta(tmp_path):
    path = _jsonl(tmp_path / "humaneval" / "test.jsonl", HUMANEVAL)
    records = list(open_source(path).records())
    assert [r["meta"]["columns"] for r in records] == [
        {"task_id": r["task_id"], "entry_point": r["entry_point"], "test": r["test"]} for r in HUMANEVAL
    ]
    chat = _jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "Hi"}], "category": "greeting",
                                             "meta": {"origin": "kept"}}])
    (record,) = open_source(chat).records()
    assert record["meta"] == {"origin": "kept", "columns": {"category": "greeting"}}


def test_generate_keeps_the_input_columns_and_names_the_source_stably(tmp_path, llm_server, monkeypatch):
    path = _jsonl(tmp_path / "data" / "humaneval" / "test.jsonl", HUMANEVAL)
    outs = []
    for i, cwd in enumerate((tmp_path, tmp_path / "data")):
        monkeypatch.chdir(cwd)
        out = tmp_path / f"out{i}"
        result = run_cli("generate", Path(*path.relative_to(cwd).parts), "--out", out, "--base-url", llm_server.base_url,
                         "--model", "m", "--no-cache")
        assert result.exit_code == 0, result.output
        outs.append(_metas(out))
    for metas in outs:
        assert [m["columns"]["task_id"] for m in metas] == [r["task_id"] for r in HUMANEVAL]
        assert [m["columns"]["entry_point"] for m in metas] == [r["entry_point"] for r in HUMANEVAL]
        assert {m["source"] for m in metas} == {"humaneval/test.jsonl"}
    assert outs[0] == outs[1]  # the working directory leaves no trace


def test_source_label_is_the_dataset_folder_or_file_name(tmp_path, monkeypatch):
    (tmp_path / "shapes").mkdir()
    _jsonl(tmp_path / "qa" / "train.jsonl", [{"a": 1}])
    monkeypatch.chdir(tmp_path / "shapes")
    assert source_label(".") == "shapes" and source_label("../shapes/") == "shapes"
    assert source_label(tmp_path / "shapes") == "shapes"
    assert source_label("../qa/train.jsonl") == "qa/train.jsonl"
    assert source_label("org/some-dataset") == "org/some-dataset"  # a Hub id is its own stable name


def _image_rows(folder: Path, ids: bool) -> Path:
    (folder / "imgs").mkdir(parents=True)
    rows = []
    for i, word in enumerate(("CAT", "DOG")):
        (folder / "imgs" / f"{word.lower()}.png").write_bytes(draw_scene([], word))
        rows.append({**({"id": f"x{i}"} if ids else {}), "image": f"./imgs/{word.lower()}.png", "text": word})
    return _jsonl(folder / "data.jsonl", rows)


def test_adapt_names_rows_without_id_by_their_image_path(tmp_path, monkeypatch):
    _image_rows(tmp_path / "signs", ids=False)
    monkeypatch.chdir(tmp_path / "signs")
    result = run_cli("adapt", ".", "-t", "ocr", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    metas = _metas(tmp_path / "out")
    assert [m["source_image"] for m in metas] == ["imgs/cat.png", "imgs/dog.png"]
    assert [m["source_id"] for m in metas] == ["row-0", "row-1"] and {m["source"] for m in metas} == {"signs"}

    _image_rows(tmp_path / "with_ids", ids=True)
    result = run_cli("adapt", tmp_path / "with_ids" / "data.jsonl", "-t", "ocr", "-o", tmp_path / "out_ids")
    assert result.exit_code == 0, result.output
    metas = _metas(tmp_path / "out_ids")
    assert [(m["source_id"], m["source_image"]) for m in metas] == [("x0", "imgs/cat.png"), ("x1", "imgs/dog.png")]
    assert {m["source"] for m in metas} == {"with_ids/data.jsonl"}


def test_adapt_image_folder_records_paths_inside_the_folder(tmp_path):
    for label in ("circle", "square"):
        (tmp_path / "folder" / label).mkdir(parents=True)
        (tmp_path / "folder" / label / f"{label}.png").write_bytes(draw_scene([], label[:3].upper()))
    result = run_cli("adapt", tmp_path / "folder", "-t", "classification", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    metas = _metas(tmp_path / "out")
    assert sorted(m["source_image"] for m in metas) == ["circle/circle.png", "square/square.png"]
    assert not any(str(tmp_path) in json.dumps(m) for m in metas)
