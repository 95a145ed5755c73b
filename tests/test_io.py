"""Dataset I/O: every local source kind, clear errors, atomic writes, safe image paths."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from synth.errors import SynthError
from synth.io import atomic_path, open_image, read_dataset, resolve_image_path, write_dataset, write_jsonl


def _rows():
    return [{"question": f"q{i}", "answer": f"a{i}"} for i in range(5)]


def test_reads_jsonl_parquet_csv_and_saved_dirs(tmp_path):
    from datasets import Dataset, DatasetDict

    ds = Dataset.from_list(_rows())
    write_jsonl(_rows(), tmp_path / "d.jsonl")
    ds.to_parquet(str(tmp_path / "d.parquet"))
    ds.to_csv(str(tmp_path / "d.csv"), index=False)
    write_dataset(ds, tmp_path / "saved")
    DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dd"))
    for source in ("d.jsonl", "d.parquet", "d.csv", "saved"):
        loaded = read_dataset(tmp_path / source)
        assert loaded["question"] == [r["question"] for r in _rows()], source
    assert len(read_dataset(tmp_path / "dd", split="test")) == 1
    with pytest.raises(SynthError, match="no split 'dev'"):
        read_dataset(tmp_path / "dd", split="dev")


def test_image_folder(tmp_path):
    for i in range(3):
        Image.new("RGB", (4, 4), (i * 50, 0, 0)).save(tmp_path / f"{i}.png")
    ds = read_dataset(tmp_path)
    assert len(ds) == 3 and "image" in ds.column_names


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": \n{"a": 4}\n')
    with pytest.raises(SynthError, match=r"bad\.jsonl:3: malformed JSON line"):
        read_dataset(path)


def test_missing_local_path_is_clear(tmp_path):
    with pytest.raises(SynthError, match="no such file"):
        read_dataset(tmp_path / "nope.jsonl")
    with pytest.raises(SynthError, match="unknown file type"):
        (tmp_path / "x.txt").write_text("hi")
        read_dataset(tmp_path / "x.txt")


def test_hub_id_goes_through_load_dataset(monkeypatch):
    # The Hub cannot be reached from tests; a stand-in for `load_dataset` checks that the id is passed on.
    import datasets

    seen = {}

    def fake_load_dataset(repo_id, split=None, **kw):
        seen["args"] = (repo_id, split)
        return datasets.Dataset.from_list(_rows())

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert len(read_dataset("someorg/someset", split="validation")) == 5
    assert seen["args"] == ("someorg/someset", "validation")


def test_hub_failure_is_one_clear_error(monkeypatch):
    import datasets

    def failing(*a, **k):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(SynthError, match="not a local path and could not be loaded"):
        read_dataset("someorg/someset")


def test_image_paths_cannot_escape_the_dataset_folder(tmp_path):
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (3, 3)).save(tmp_path / "imgs" / "a.png")
    assert resolve_image_path(tmp_path, "imgs/a.png") == (tmp_path / "imgs" / "a.png").resolve()
    with pytest.raises(SynthError, match="outside the dataset folder"):
        resolve_image_path(tmp_path, "../../etc/passwd", "rec-1")
    with pytest.raises(SynthError, match="outside the dataset folder"):
        open_image("/etc/passwd", tmp_path, "rec-2")


def test_corrupt_and_missing_images_name_the_record(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(SynthError, match=r"record r7: unreadable or corrupt image .*bad\.png"):
        open_image("bad.png", tmp_path, "r7")
    with pytest.raises(SynthError, match="record r8: image not found"):
        open_image("none.png", tmp_path, "r8")


def test_write_is_atomic_and_refuses_to_overwrite(tmp_path):
    from datasets import Dataset

    out = tmp_path / "out"
    write_dataset(Dataset.from_list(_rows()), out)
    with pytest.raises(SynthError, match="already exists; pass --overwrite"):
        write_dataset(Dataset.from_list(_rows()), out)
    write_dataset(Dataset.from_list(_rows()[:2]), out, overwrite=True)
    assert len(read_dataset(out)) == 2

    # A failure half-way leaves neither a partial output nor temp folders behind.
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "half.jsonl") as tmp:
            tmp.write_text(json.dumps({"a": 1}) + "\n")
            raise RuntimeError("crash")
    assert not (tmp_path / "half.jsonl").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
