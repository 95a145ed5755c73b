"""WebDataset shards in and out: real tar files written here as img2dataset writes them (real JPEGs and
PNGs, text and JSON members), read by the one reader, cleaned, and written back as shards."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from synth.data import open_source
from synth.data.webdataset import WebDatasetWriter, builder_rows, member_key
from synth.errors import SynthError
from tests import test_clean_capfilt
from tests.cli_helpers import one_line_error, run_cli

tiny_clip = test_clean_capfilt.tiny_clip  # the fixture: a tiny random CLIP saved to a folder


def jpeg(i: int, size=(40, 30)) -> bytes:
    image = Image.new("RGB", size, ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
    image.paste((255 - (i * 37) % 256, 20, 200), (i % 20, i % 10, i % 20 + 8, i % 10 + 8))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=80 + i % 15)
    return buf.getvalue()


def sample(i: int) -> tuple[str, dict[str, bytes]]:
    key = f"{i // 100:05d}{i % 100:04d}"
    # JSON as img2dataset writes it, odd spacing and key order included: it must leave byte for byte
    meta = f'{{"url": "https://example.com/{i}.jpg",  "key": "{key}", "caption": "caf\\u00e9 {i}", "width": 40}}'
    return key, {"jpg": jpeg(i), "txt": f"a photo number {i}, café ☕".encode(), "json": meta.encode()}


def write_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def make_shards(folder: Path, counts=(4, 3, 5)) -> list[tuple[str, dict[str, bytes]]]:
    folder.mkdir(parents=True, exist_ok=True)
    every, i = [], 0
    for s, n in enumerate(counts):
        samples = [sample(i + j) for j in range(n)]
        write_shard(folder / f"{s:05d}.tar", samples)
        every += samples
        i += 100
    return every


def read_shards(folder: Path) -> list[tuple[str, str, dict[str, bytes]]]:
    """(shard name, key, {ext: bytes}) for every sample, in order."""
    out = []
    for shard in sorted(folder.rglob("*.tar")):
        with tarfile.open(shard) as tar:
            for info in tar.getmembers():
                key, ext = info.name.split(".", 1)
                if not out or out[-1][1] != key or out[-1][0] != shard.name:
                    out.append((shard.name, key, {}))
                out[-1][2][ext] = tar.extractfile(info).read()
    return out


def test_reader_maps_members_onto_records_from_a_folder_a_glob_and_a_list(tmp_path):
    samples = make_shards(tmp_path / "shards")
    (tmp_path / "shards" / "00000.parquet").write_bytes(b"img2dataset stats, not data")  # shards win
    for source in (tmp_path / "shards", str(tmp_path / "shards" / "*.tar"),
                   sorted((tmp_path / "shards").glob("*.tar"))):
        src = open_source(source)
        assert src.layout == "raw" and src.num_rows == len(samples)
        records = list(src.records())
        assert [r["id"] for r in records] == [key for key, _ in samples]
        for record, (_, members) in zip(records, samples):
            assert record["image"]["bytes"] == members["jpg"]
            assert record["caption"].encode() == members["txt"]
            assert record["json"].encode() == members["json"]
            assert "__error__" not in record
    assert records[4]["image"]["path"] == "00001.tar/000010000.jpg"
    streamed = list(open_source(tmp_path / "shards" / "00001.tar", streaming=True).records())
    assert [r["id"] for r in streamed] == [key for key, _ in samples[4:7]]


def test_member_names_are_configurable(tmp_path):
    png = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, "PNG")
    write_shard(tmp_path / "a.tar", [("k1", {"png": png.getvalue(), "caption": b"red", "meta": b'{"a": 1}',
                                             "jpg": jpeg(1)})])
    record = next(open_source(tmp_path / "a.tar", members={"image": "png", "caption": "caption", "json": "meta"}).records())
    assert record["image"]["bytes"] == png.getvalue() and record["caption"] == "red" and record["json"] == '{"a": 1}'
    with pytest.raises(SynthError, match="unknown column"):
        open_source(tmp_path / "a.tar", members={"picture": "png"})


def test_webdataset_round_trip_keeps_bytes_and_keys(tmp_path):
    samples = make_shards(tmp_path / "in")
    result = run_cli("export", tmp_path / "in", "-f", "webdataset", "-o", tmp_path / "out", "--shard-records", 5)
    assert result.exit_code == 0, result.output
    assert "exported 12 raw rows as webdataset" in result.output and "00000.tar..00002.tar (3 shards)" in result.output
    written = read_shards(tmp_path / "out")
    assert [shard for shard, _, _ in written] == ["00000.tar"] * 5 + ["00001.tar"] * 5 + ["00002.tar"] * 2
    assert [(key, members) for _, key, members in written] == samples
    # and again: the output reads back the same, and the same records give the same shard bytes
    assert run_cli("export", tmp_path / "out", "-f", "webdataset", "-o", tmp_path / "again",
                   "--shard-records", 5).exit_code == 0
    for shard in ("00000.tar", "00001.tar", "00002.tar"):
        assert (tmp_path / "again" / shard).read_bytes() == (tmp_path / "out" / shard).read_bytes()


def test_shards_by_size(tmp_path):
    make_shards(tmp_path / "in", counts=(10,))
    per_sample = sum(512 + -(-len(b) // 512) * 512 for b in sample(0)[1].values())
    assert run_cli("export", tmp_path / "in", "-f", "webdataset", "-o", tmp_path / "out",
                   "--shard-mb", (per_sample * 3.5) / (1 << 20)).exit_code == 0
    sizes = [len([m for m in tarfile.open(p).getmembers()]) // 3 for p in sorted((tmp_path / "out").glob("*.tar"))]
    assert sizes == [3, 3, 3, 1]


def test_sft_records_export_their_image_and_answer(tmp_path):
    from datasets import Dataset

    rows = [{"id": "s.1", "messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a square"}]}],
        "images": [{"bytes": jpeg(3), "path": None}], "meta": json.dumps({"source": "x"})}]
    from synth.export import export_dataset

    export_dataset(Dataset.from_list(rows), tmp_path / "out", "webdataset", show_progress=False)
    [(_, key, members)] = read_shards(tmp_path / "out")
    assert key == "s_1" and members["jpg"] == jpeg(3) and members["txt"] == b"a square"
    assert json.loads(members["json"]) == {"synth": {"source": "x"}}


def test_truncated_shard_is_one_error_line_naming_shard_and_key_or_skipped(tmp_path):
    make_shards(tmp_path / "in", counts=(4, 4))
    shard = tmp_path / "in" / "00000.tar"
    data = shard.read_bytes()
    cut = data.index(b"000000002.txt")  # the header of sample 2's caption: cut inside sample 2's image
    shard.write_bytes(data[: cut - 700])
    result = run_cli("export", tmp_path / "in", "-f", "webdataset", "-o", tmp_path / "out")
    one_line_error(result, "00000.tar", "key 000000002", "unreadable tar shard", "--on-error skip")
    assert not (tmp_path / "out").exists()
    result = run_cli("export", tmp_path / "in", "-f", "webdataset", "-o", tmp_path / "out", "--on-error", "skip")
    assert result.exit_code == 0, result.output
    assert [key for _, key, _ in read_shards(tmp_path / "out")] == ["000000000", "000000001"] + [
        f"00001{i:04d}" for i in range(4)]
    [reject] = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert reject["reason"] == "bad_shard" and "key 000000002" in reject["detail"]


def test_corrupt_members_name_their_key(tmp_path):
    key, members = sample(7)
    write_shard(tmp_path / "bad-image.tar", [(key, {**members, "jpg": members["jpg"][:-100]})])
    one_line_error(run_cli("export", tmp_path / "bad-image.tar", "-f", "webdataset", "-o", tmp_path / "o1"),
                   f"id {key}", "truncated JPEG", f"bad-image.tar/{key}.jpg")
    write_shard(tmp_path / "no-image.tar", [(key, {"txt": b"words"})])
    one_line_error(run_cli("export", tmp_path / "no-image.tar", "-f", "webdataset", "-o", tmp_path / "o2"),
                   "no-image.tar: key 000000007", "no image member")
    write_shard(tmp_path / "bad-text.tar", [(key, {**members, "txt": b"\xff\xfe caption"})])
    one_line_error(run_cli("export", tmp_path / "bad-text.tar", "-f", "webdataset", "-o", tmp_path / "o3"),
                   "bad-text.tar: key 000000007", "not UTF-8")
    (tmp_path / "junk.tar").write_bytes(b"this is not a tar file at all" * 40)
    one_line_error(run_cli("export", tmp_path / "junk.tar", "-f", "webdataset", "-o", tmp_path / "o4"),
                   "junk.tar", "unreadable tar shard")
    one_line_error(run_cli("export", str(tmp_path / "none-*.tar"), "-f", "webdataset", "-o", tmp_path / "o5"),
                   "no .tar shard matches")


def test_hub_path_datasets_webdataset_builder_gives_the_same_records(tmp_path):
    """Hub ids of tar repos load through `datasets`' webdataset builder (streaming); the same builder on
    local files checks the column mapping the reader applies to them."""
    from datasets import load_dataset

    samples = make_shards(tmp_path / "in", counts=(3, 2))
    shards = [str(p) for p in sorted((tmp_path / "in").glob("*.tar"))]
    splits = builder_rows(load_dataset("webdataset", data_files={"train": shards[:1], "test": shards[1:]},
                                       streaming=True))
    assert [r["id"] for r in splits["test"]] == [key for key, _ in samples[3:]]
    built = builder_rows(load_dataset("webdataset", data_files={"train": shards}, split="train", streaming=True))
    rows = list(built)
    assert [r["id"] for r in rows] == [key for key, _ in samples]
    for row, (_, members) in zip(rows, samples):
        assert row["image"]["bytes"] == members["jpg"] and row["caption"].encode() == members["txt"]
        assert json.loads(row["json"]) == json.loads(members["json"]) and row["__error__"] is None


def test_member_keys_and_the_writer_limits(tmp_path):
    assert member_key("a.b c/d") == "a_b_c/d"
    assert member_key("../x") == "__/x"  # no dot survives: the key cannot climb out of the tar's folder
    with pytest.raises(SynthError, match="cannot name"):
        member_key("a//b")
    with WebDatasetWriter(tmp_path, max_samples=2, prefix="p-") as writer:
        for i in range(5):
            writer.add(f"k{i}", {"txt": b"x"})
    assert writer.shards == ["p-00000.tar", "p-00001.tar", "p-00002.tar"] and writer.samples == 5


def test_clean_laion_style_shards_with_capfilt_and_write_shards(tmp_path, tiny_clip):
    """The README's one-machine flow: shards → synth filter (CapFilt) → shards; kept samples keep their
    image, caption and JSON bytes, the JSON gains the score under "synth"."""
    samples = make_shards(tmp_path / "in", counts=(5, 5))
    result = run_cli("filter", tmp_path / "in", "--out", tmp_path / "clean", "--filter",
                     f"capfilt:model={tiny_clip},top_fraction=0.5")
    assert result.exit_code == 0, result.output
    result = run_cli("export", tmp_path / "clean", "-f", "webdataset", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    written = read_shards(tmp_path / "out")
    originals = dict(samples)
    assert len(written) == 5
    rejects = [json.loads(line)["id"] for line in (tmp_path / "clean" / "rejects.jsonl").read_text().splitlines()]
    assert sorted([key for _, key, _ in written] + rejects) == sorted(originals)
    for _, key, members in written:
        assert members["jpg"] == originals[key]["jpg"] and members["txt"] == originals[key]["txt"]
        stored = json.loads(members["json"])
        assert {k: v for k, v in stored.items() if k != "synth"} == json.loads(originals[key]["json"])
        assert isinstance(stored["synth"]["scores"]["capfilt"], float)


RECIPE = """\
name: laion
shard_size: 4
stages:
  - {type: source, name: web, path: shards}
  - type: filter
    name: clean
    input: web
    filters: [{name: capfilt, model: "{model}", threshold: -1.0}]
  - {type: export, name: out, input: clean, format: webdataset, shard_records: 3}
"""


def test_recipe_reads_shards_and_writes_shards(tmp_path, tiny_clip):
    from synth.run import RunOptions, run_recipe
    from tests.run_helpers import write_recipe

    samples = make_shards(tmp_path / "shards", counts=(4, 3))
    recipe = write_recipe(tmp_path, RECIPE.replace("{model}", tiny_clip))
    result = run_recipe(recipe, options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    assert [s.state for s in result.stages] == ["source", "ran", "ran"]
    written = read_shards(tmp_path / "runs" / "laion" / "out")
    assert sorted(key for _, key, _ in written) == sorted(key for key, _ in samples)
    assert [shard for shard, _, _ in written] == ["00000.tar"] * 3 + ["00001.tar"] * 3 + ["00002.tar"]
    originals = dict(samples)
    for _, key, members in written:
        assert members["jpg"] == originals[key]["jpg"] and members["txt"] == originals[key]["txt"]
