"""The spine's core: loading every local source kind, safe and checked images, the atomic output folder,
strict YAML. (Peer layouts are in test_data_layouts.py.)"""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from synth.data import (
    EmptyDatasetError,
    ImageError,
    OutputFolder,
    check_image_bytes,
    decode_image,
    image_ref,
    load,
    open_source,
    resolve_image_path,
    write_records,
)
from synth.errors import SynthError
from synth.io import read_yaml, write_jsonl
from synth.records import content_id


def _rows():
    return [{"question": f"q{i}", "answer": f"a{i}"} for i in range(5)]


def _jpeg(color=(200, 10, 10), size=(16, 16), noise: bool = False) -> bytes:
    buf = io.BytesIO()
    image = Image.effect_noise(size, 80).convert("RGB") if noise else Image.new("RGB", size, color)
    image.save(buf, format="JPEG")
    return buf.getvalue()


def test_reads_jsonl_parquet_csv_and_saved_dirs(tmp_path):
    from datasets import Dataset, DatasetDict

    ds = Dataset.from_list(_rows())
    write_jsonl(_rows(), tmp_path / "d.jsonl")
    ds.to_parquet(str(tmp_path / "d.parquet"))
    ds.to_csv(str(tmp_path / "d.csv"), index=False)
    ds.save_to_disk(str(tmp_path / "saved"))
    DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dd"))
    for source in ("d.jsonl", "d.parquet", "d.csv", "saved"):
        src = open_source(tmp_path / source)
        assert [r["question"] for r in src.records()] == [r["question"] for r in _rows()], source
        assert src.layout == "raw" and src.num_rows == 5
    assert open_source(tmp_path / "dd", split="test").num_rows == 1
    assert set(load(tmp_path / "dd", all_splits=True)) == {"train", "test"}
    with pytest.raises(SynthError, match="no split 'dev'"):
        open_source(tmp_path / "dd", split="dev")


def test_streaming_and_limit(tmp_path):
    write_jsonl(_rows(), tmp_path / "d.jsonl")
    src = open_source(tmp_path / "d.jsonl", streaming=True, limit=3)
    assert src.num_rows is None
    assert [r["question"] for r in src.records()] == ["q0", "q1", "q2"]


def test_image_folder_stays_encoded(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(_jpeg((i * 50, 0, 0)))
    src = open_source(tmp_path)
    records = list(src.records())
    assert len(records) == 3 and src.multimodal
    ref = records[0]["image"]
    assert isinstance(ref["bytes"], bytes) and ref["bytes"][:2] == b"\xff\xd8"  # still a JPEG


def test_empty_sources_say_so(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(EmptyDatasetError, match="the file is empty"):
        open_source(tmp_path / "empty.jsonl")
    from datasets import Dataset

    Dataset.from_dict({"messages": []}).save_to_disk(str(tmp_path / "zero"), num_shards=1)
    with pytest.raises(EmptyDatasetError, match=r"the dataset is empty \(0 rows\)"):
        open_source(tmp_path / "zero")


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": \n{"a": 4}\n')
    with pytest.raises(SynthError, match=r"bad\.jsonl:3: malformed JSON line"):
        open_source(path)


def test_missing_local_path_is_clear(tmp_path):
    with pytest.raises(SynthError, match="no such file"):
        open_source(tmp_path / "nope.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(SynthError, match="unknown file type"):
        open_source(tmp_path / "x.txt")


def test_hub_id_passes_config_revision_split_streaming(monkeypatch):
    # The Hub cannot be reached from tests: a stand-in for `datasets.load_dataset` records the call.
    import datasets

    seen = {}

    def fake_load_dataset(repo_id, name=None, split=None, revision=None, streaming=False, **kw):
        seen.update(repo=repo_id, name=name, split=split, revision=revision, streaming=streaming)
        ds = datasets.Dataset.from_list(_rows())
        return ds.to_iterable_dataset() if streaming else ds

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    src = open_source("someorg/someset", "validation", config="en", revision="abc123", streaming=True)
    assert len(list(src.records())) == 5
    assert seen == {"repo": "someorg/someset", "name": "en", "split": "validation", "revision": "abc123", "streaming": True}


def test_hub_failure_is_one_clear_error(monkeypatch):
    import datasets

    def failing(*a, **k):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(SynthError, match="not a local path and could not be loaded"):
        open_source("someorg/someset")


# ---------------------------------------------------------------- images


def test_image_paths_cannot_escape_the_dataset_folder(tmp_path):
    (tmp_path / "data" / "imgs").mkdir(parents=True)
    (tmp_path / "data" / "imgs" / "a.jpg").write_bytes(_jpeg())
    (tmp_path / "secret.jpg").write_bytes(_jpeg())
    os.symlink(tmp_path / "secret.jpg", tmp_path / "data" / "imgs" / "link.jpg")
    base = tmp_path / "data"
    assert resolve_image_path(base, "imgs/a.jpg") == (base / "imgs" / "a.jpg").resolve()
    for bad in ("../secret.jpg", "../../etc/passwd", "/etc/passwd", str(tmp_path / "secret.jpg"), "imgs/link.jpg"):
        with pytest.raises(ImageError, match="outside the dataset folder"):
            image_ref(bad, base, "rec-1")
    # an absolute path inside the folder is fine (image folders store absolute paths)
    assert image_ref(str(base / "imgs" / "a.jpg"), base, "r")["bytes"][:2] == b"\xff\xd8"


def test_truncated_jpeg_and_corrupt_png_are_caught_without_decoding(tmp_path):
    data = _jpeg(size=(128, 128), noise=True)
    Image.open(io.BytesIO(data[: len(data) // 2])).verify()  # PIL's verify() alone lets it through
    with pytest.raises(ImageError, match="record r1: truncated JPEG"):
        check_image_bytes(data[: len(data) // 2], "r1")
    png = io.BytesIO()
    Image.new("RGB", (32, 32), "blue").save(png, format="PNG")
    broken = bytearray(png.getvalue())
    broken[40] ^= 0xFF  # inside the IDAT chunk: its checksum no longer matches
    with pytest.raises(ImageError, match="record r2: unreadable or corrupt image"):
        check_image_bytes(bytes(broken), "r2")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match=r"record r7: unreadable or corrupt image .*bad\.png"):
        image_ref("bad.png", tmp_path, "r7")
    with pytest.raises(ImageError, match="record r8: image not found"):
        image_ref("none.png", tmp_path, "r8")
    with pytest.raises(ImageError, match="record r9: unreadable or corrupt"):
        decode_image({"bytes": data[: len(data) // 2], "path": "x.jpg"}, record_id="r9")


def test_pil_and_bytes_give_the_same_id():
    image = Image.new("RGB", (8, 8), "green")
    ref = image_ref(image, None)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "colour?"}]}]
    assert content_id(messages, [image]) == content_id(messages, [ref]) == content_id(messages, [ref["bytes"]])


# ---------------------------------------------------------------- writer


def _sft(i: int, images=()):
    content = [{"type": "image", "text": None}] * len(images) + [{"type": "text", "text": f"q{i}"}]
    return {
        "messages": [{"role": "user", "content": content}, {"role": "assistant", "content": [{"type": "text", "text": f"a{i}"}]}],
        "images": list(images),
        "meta": {"n": i},
    }


def test_output_folder_holds_dataset_and_sidecars_and_keeps_jpeg(tmp_path):
    jpeg = {"bytes": _jpeg(), "path": "x.jpg"}
    out = tmp_path / "out"
    with OutputFolder(out) as folder:
        folder.rejects.write("r0", "test", "too_short", "1 word")
        n = write_records((_sft(i, [jpeg]) for i in range(4)), folder.path, scratch=folder.scratch("w"))
        folder.write_json("report.json", {"written": n})
    assert n == 4
    assert {"rejects.jsonl", "report.json", "dataset_info.json", "state.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "failures.jsonl").exists()  # nothing failed: no file
    records = list(open_source(out).records())
    assert records[0]["images"][0]["bytes"] == jpeg["bytes"]  # no re-encoding
    assert records[2]["meta"] == {"n": 2}
    assert records[0]["id"] == content_id(_sft(0, [jpeg])["messages"], [jpeg])
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp folders left


def test_failure_leaves_previous_output_and_no_partial_sidecar(tmp_path):
    out = tmp_path / "out"
    with OutputFolder(out) as folder:
        write_records((_sft(i) for i in range(2)), folder.path)
    (tmp_path / "out.rejects.jsonl").write_text('{"stale": true}\n')  # an older synth's sidecar

    def crashing():
        yield _sft(0)
        raise RuntimeError("crash mid-run")

    with pytest.raises(RuntimeError):
        with OutputFolder(out, overwrite=True) as folder:
            folder.rejects.write("x", "t", "r")
            write_records(crashing(), folder.path)
    assert open_source(out).num_rows == 2 and not (out / "rejects.jsonl").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.rejects.jsonl"]
    with OutputFolder(out, overwrite=True) as folder:
        write_records((_sft(i) for i in range(3)), folder.path)
    assert open_source(out).num_rows == 3
    assert not (tmp_path / "out.rejects.jsonl").exists()  # the stale sidecar went with the old output


def test_refuses_to_overwrite_without_flag(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(SynthError, match="already exists; pass --overwrite"):
        OutputFolder(tmp_path / "out")


# ---------------------------------------------------------------- YAML


def test_yaml_duplicate_keys_are_errors_with_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("total: 10\nseed: 1\nsources:\n  - path: a\n    weight: 1\n    weight: 2\n")
    with pytest.raises(SynthError, match=r"r\.yaml:6: invalid recipe: sources\.0\.weight: duplicate key \(first at line 5\)"):
        read_yaml(path, "recipe")
    path.write_text("a: [1, 2\n")
    with pytest.raises(SynthError, match=r"r\.yaml:\d+: invalid recipe"):
        read_yaml(path, "recipe")
    path.write_text("a: 1\nb: {c: 2}\n")
    assert read_yaml(path, "recipe") == {"a": 1, "b": {"c": 2}}


def test_zero_shard_save_to_disk_reads_as_empty(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({"a": []}).save_to_disk(str(tmp_path / "zero"))  # datasets writes no shard at all
    with pytest.raises(EmptyDatasetError, match="the dataset is empty"):
        open_source(tmp_path / "zero")


def test_all_failed_error_names_the_first_failure():
    from synth.pipeline import Failed, Map
    from synth.pipeline.llm_task import check_not_all_failed

    class Flaky(Map):
        name = "flaky"
        answered = 0

        def process(self, record):
            return Failed("http_500", f"server error for {record['id']}")

    stage = Flaky()
    assert list(stage.run([{"id": "a"}, {"id": "b"}])) == []
    with pytest.raises(SynthError, match=r"flaky: every LLM request failed \(2; http_500: 2\); first: record a: server error for a"):
        check_not_all_failed(stage)
    stage.answered = 1
    check_not_all_failed(stage)  # some answered: the run stands
    with pytest.raises(SynthError, match="nothing was written and LLM requests failed"):
        check_not_all_failed(stage, written=0)



def test_replies_the_stage_cannot_parse_are_failures_and_rejected_ones_are_not(llm_server, llm_backend):
    """The bug: a reply that came back but that the stage could not parse counted as answered, so a run in
    which every reply was unusable ended without an error. Replies that parse and are rejected stand."""
    from synth.llm.base import ChatRequest
    from synth.pipeline import Failed, Rejected
    from synth.pipeline.llm_task import LLMTask, check_not_all_failed
    from synth.records import Message

    class Picky(LLMTask):
        name = "picky"

        def format_input(self, record):
            return ChatRequest(messages=[Message(role="user", content=record["q"])], key=record["id"])

        def format_output(self, record, completion):
            if not completion.text.startswith("score:"):
                return Failed("unparseable", f"no score in {completion.text!r}")
            return Rejected("low_score", completion.text) if completion.text == "score: 1" else record

    records = [{"id": "a", "q": "first"}, {"id": "b", "q": "second"}]
    llm_server.script("I like it")
    stage = Picky(llm_backend)
    assert list(stage.run(records)) == [] and stage.answered == 0
    with pytest.raises(SynthError, match=r"picky: every LLM request failed \(2; unparseable: 2\)"):
        check_not_all_failed(stage)

    llm_server.script({"first": "score: 1", "second": "no idea"})  # one rejected, one failed
    stage = Picky(llm_backend)
    assert list(stage.run(records)) == [] and stage.answered == 1
    check_not_all_failed(stage, written=0)  # a rejection is a decision: the (empty) output stands

def test_hub_image_cells_with_only_a_cache_path_resolve_inside_the_hf_cache(tmp_path, monkeypatch):
    """`datasets` gives image cells of some Hub datasets (image folders, archives) as a path into its cache
    and no bytes. For a Hub id the reader resolves those inside the Hugging Face cache, nowhere else.
    (No Hub here: the cells are made as `datasets` makes them, up to the download.)"""
    import datasets.config
    from huggingface_hub import constants

    from synth.data import ImageError, base_dir_of, image_ref

    home = tmp_path / "huggingface"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(home / "datasets"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    extracted = home / "datasets" / "downloads" / "extracted" / "abc123" / "train"
    extracted.mkdir(parents=True)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    (extracted / "0.png").write_bytes(buf.getvalue())
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(buf.getvalue())

    base = base_dir_of("someone/image-folder-dataset")  # not a local path: a Hub id
    assert base == home.resolve()
    ref = image_ref({"bytes": None, "path": str(extracted / "0.png")}, base, "row 0")
    assert ref["bytes"] == buf.getvalue()
    with pytest.raises(ImageError, match="outside the dataset folder"):
        image_ref({"bytes": None, "path": str(outside)}, base, "row 1")
