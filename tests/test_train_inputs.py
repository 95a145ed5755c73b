"""Training reads what synth's reader reads: every valid input trains, every broken one names its row.

The inputs are the files users hand over: `synth export -f trl --jsonl` output (relative image paths),
Parquet with path-only images, JSONL mixing image rows and plain-string text rows. The checks run before
any weights load (`prepare`), so these tests stay fast; one runs a real step through the CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from synth.errors import SynthError
from synth.train import recipe_from_dict
from tests.cli_helpers import one_line_error, run_cli
from tests.train_helpers import (
    adapted,
    fast_fields,
    one_torch_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_llava,
    tiny_text_model,
    write_recipe,
)


@pytest.fixture(scope="module")
def trl_jsonl(tmp_path_factory) -> Path:
    """`synth export -f trl --jsonl` of the demo captions: trl.jsonl + images/ with relative paths."""
    out = tmp_path_factory.mktemp("export") / "trl"
    result = run_cli("export", adapted("caption_brief"), "-o", out, "-f", "trl", "--jsonl")
    assert result.exit_code == 0, result.output
    return out / "trl.jsonl"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _copy_export(trl_jsonl: Path, folder: Path) -> Path:
    shutil.copytree(trl_jsonl.parent, folder)
    return folder / trl_jsonl.name


def _prepare(model: Path, dataset: Path, out: Path, **extra):
    from synth.train.runner import prepare

    return prepare(recipe_from_dict(fast_fields(model, dataset, out, **extra), "sft"), "sft")


def test_trl_jsonl_export_with_relative_image_paths_trains(trl_jsonl, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative image paths resolve against the dataset's folder, not the cwd
    recipe = write_recipe(tmp_path, **fast_fields(tiny_llava(), trl_jsonl, tmp_path / "run", max_steps=1,
                                                  batch_size=2))
    result = run_cli("train", "sft", recipe)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["steps"] == 1 and summary["data"]["train_rows"] == len(_rows(trl_jsonl))


def test_parquet_with_path_only_images(trl_jsonl, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "data"
    jsonl = _copy_export(trl_jsonl, data)
    rows = _rows(jsonl)
    table = pa.table({
        "id": [r["id"] for r in rows],
        "messages": [r["messages"] for r in rows],
        "images": [[{"bytes": None, "path": p} for p in r["images"]] for r in rows],
    })
    pq.write_table(table, data / "train.parquet")
    jsonl.unlink()
    plan = _prepare(tiny_llava(), data / "train.parquet", tmp_path / "o")
    assert len(plan.train) == len(rows)
    assert all(len(images) == 1 for images in plan.train["images"])


def test_missing_image_names_the_row_and_the_file(trl_jsonl, tmp_path):
    jsonl = _copy_export(trl_jsonl, tmp_path / "data")
    rows = _rows(jsonl)
    missing = rows[2]["images"][0]
    (tmp_path / "data" / missing).unlink()
    recipe = write_recipe(tmp_path, **fast_fields(tiny_llava(), jsonl, tmp_path / "o"))
    one_line_error(run_cli("train", "sft", recipe), "row 3", rows[2]["id"], Path(missing).name)


def test_image_rows_mixed_with_plain_text_rows(trl_jsonl, tmp_path):
    jsonl = _copy_export(trl_jsonl, tmp_path / "data")
    rows = _rows(jsonl)[:4]
    text_rows = [
        {"id": f"text-{i}", "messages": [{"role": "user", "content": "How many shapes?"},
                                         {"role": "assistant", "content": str(i)}], "images": []}
        for i in range(3)
    ]
    mixed = _write_jsonl(rows[:2] + text_rows + rows[2:], tmp_path / "data" / "mixed.jsonl")
    plan = _prepare(tiny_llava(), mixed, tmp_path / "o")
    assert len(plan.train) == 7
    assert [len(images) for images in plan.train["images"]] == [1, 1, 0, 0, 0, 1, 1]


def test_an_empty_assistant_reply_is_refused_with_its_row(tmp_path):
    rows = [
        {"id": "ok", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {"id": "blank", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]},
    ]
    data = _write_jsonl(rows, tmp_path / "data.jsonl")
    recipe = write_recipe(tmp_path, **fast_fields(tiny_text_model(), data, tmp_path / "o"))
    one_line_error(run_cli("train", "sft", recipe), "row 2", "blank", "empty assistant reply", "fill it in")
    parts = [{"id": "parts", "messages": [{"role": "user", "content": "q"},
                                          {"role": "assistant", "content": [{"type": "text", "text": ""}]}]}]
    with pytest.raises(SynthError, match="row 1 .id parts.: message 2 is an empty assistant reply"):
        _prepare(tiny_text_model(), _write_jsonl(parts, tmp_path / "parts.jsonl"), tmp_path / "o")
