"""The demo shapes dataset: determinism, the column contract (DEMO_SCHEMA.md), and ground truth that
agrees with the drawn pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from synth.cli import app
from synth.demo_data import COLORS, SHAPES, TEXT_COLOR, WORDS, relation, write_demo_data
from synth.errors import SynthError
from synth.io import read_dataset

COUNT = 24


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "shapes"
    write_demo_data(out, count=COUNT, seed=0)
    return out


@pytest.fixture(scope="module")
def rows(demo) -> list[dict]:
    from datasets import Image as ImageFeature

    dataset = read_dataset(demo).cast_column("image", ImageFeature(decode=False))
    return list(dataset)


def test_same_seed_is_byte_identical_and_another_seed_differs(demo, tmp_path):
    again = tmp_path / "again"
    write_demo_data(again, count=COUNT, seed=0)
    assert _files(again) == _files(demo)

    other = tmp_path / "other"
    write_demo_data(other, count=COUNT, seed=1)
    assert _files(other)["data-00000-of-00001.arrow"] != _files(demo)["data-00000-of-00001.arrow"]


def test_columns_follow_the_schema(demo, rows):
    dataset = read_dataset(demo)
    assert dataset.column_names == ["id", "image", "caption", "detailed_caption", "objects", "qa", "label", "text"]
    assert len(rows) == COUNT
    assert [r["id"] for r in rows] == [f"shapes-{i:05d}" for i in range(COUNT)]
    first = dataset[0]
    assert first["image"].size == (256, 256) and first["image"].mode == "RGB"
    for row in rows:
        assert row["label"] in SHAPES
        assert row["text"] in WORDS
        assert 1 <= len(row["objects"]) <= 4
        labels = [o["label"] for o in row["objects"]]
        assert len(set(labels)) == len(labels), "labels must name one object each"
        for obj in row["objects"]:
            assert obj["label"] == f"{obj['color']} {obj['shape']}"
            assert obj["color"] in COLORS and obj["shape"] in SHAPES
            assert obj["size"] in ("small", "medium", "large")
            x0, y0, x1, y1 = obj["box"]
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
            assert all(round(v, 3) == v for v in obj["box"])
        kinds = {qa["kind"] for qa in row["qa"]}
        assert {"count", "exists"} <= kinds <= {"count", "color", "spatial", "exists"}
        for qa in row["qa"]:
            assert qa["answer"] in qa["options"]
            assert len(set(qa["options"])) == len(qa["options"])
            assert len(qa["options"]) == (2 if qa["kind"] == "exists" else 4)


def test_every_kind_of_question_occurs(rows):
    kinds = [qa["kind"] for row in rows for qa in row["qa"]]
    assert {"count", "color", "spatial", "exists"} <= set(kinds)
    exists = [qa["answer"] for row in rows for qa in row["qa"] if qa["kind"] == "exists"]
    assert "yes" in exists and "no" in exists


def test_answers_agree_with_the_objects(rows):
    for row in rows:
        objects = row["objects"]
        labels = {o["label"] for o in objects}
        for qa in row["qa"]:
            question, answer = qa["question"], qa["answer"]
            if qa["kind"] == "count":
                if question.startswith("How many shapes"):
                    assert answer == str(len(objects))
                else:
                    shape = question.split()[2][:-1]  # "How many circles are ..."
                    assert answer == str(sum(o["shape"] == shape for o in objects))
            elif qa["kind"] == "color":
                shape = question.rstrip("?").split()[-1]
                (obj,) = [o for o in objects if o["shape"] == shape]
                assert answer == obj["color"]
            elif qa["kind"] == "exists":
                asked = question.removeprefix("Is there ").removesuffix(" in the image?").split(" ", 1)[1]
                assert answer == ("yes" if asked in labels else "no")
            elif qa["kind"] == "spatial":
                a_label = question.removeprefix("Is the ").split(" left of")[0]
                b_label = question.split("below the ")[1].rstrip("?")
                a = next(o for o in objects if o["label"] == a_label)
                b = next(o for o in objects if o["label"] == b_label)
                ax, ay = (a["box"][0] + a["box"][2]) / 2, (a["box"][1] + a["box"][3]) / 2
                bx, by = (b["box"][0] + b["box"][2]) / 2, (b["box"][1] + b["box"][3]) / 2
                expected = ("left" if ax < bx else "right") if abs(ax - bx) > abs(ay - by) else ("above" if ay < by else "below")
                assert answer == expected


def test_captions_name_every_object_and_the_word(rows):
    for row in rows:
        for obj in row["objects"]:
            assert f"{obj['color']} {obj['shape']}" in row["caption"]
            assert f"{obj['size']} {obj['color']} {obj['shape']}" in row["detailed_caption"]
        assert f'"{row["text"]}"' in row["detailed_caption"]
        assert row["caption"][0].isupper() and row["caption"].endswith(".")


def test_boxes_and_label_match_the_drawn_pixels(rows):
    for row in rows:
        pixels = np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")).astype(int)
        side = pixels.shape[0]
        areas = {}
        for obj in row["objects"]:
            mask = np.all(pixels == COLORS[obj["color"]], axis=-1)
            x0, y0, x1, y1 = (round(v * side) for v in obj["box"])
            pad = 3
            window = mask[max(0, y0 - pad): y1 + pad, max(0, x0 - pad): x1 + pad]
            ys, xs = np.nonzero(window)
            assert len(xs) > 20, f"{row['id']}: no {obj['label']} pixels in its box"
            off_x, off_y = max(0, x0 - pad), max(0, y0 - pad)
            drawn = (xs.min() + off_x, ys.min() + off_y, xs.max() + off_x, ys.max() + off_y)
            assert all(abs(d - b) <= 2 for d, b in zip(drawn, (x0, y0, x1, y1))), (row["id"], obj, drawn)
            areas[obj["label"]] = len(xs)
        biggest = max(areas.values())
        labelled = [areas[o["label"]] for o in row["objects"] if o["shape"] == row["label"]]
        assert max(labelled) >= 0.97 * biggest, f"{row['id']}: label {row['label']} is not the largest object"
        # The word is drawn in dark ink somewhere.
        assert np.all(np.abs(pixels - TEXT_COLOR) < 10, axis=-1).sum() > 20


def test_relation_needs_a_clear_direction():
    from synth.demo_data import Shape

    a = Shape("red", "circle", "small", 10, 100, 5)
    assert relation(a, Shape("blue", "star", "small", 100, 100, 5)) == "left"
    assert relation(a, Shape("blue", "star", "small", 10, 10, 5)) == "below"
    assert relation(a, Shape("blue", "star", "small", 100, 190, 5)) is None


def test_cli_writes_and_refuses_to_overwrite(tmp_path):
    runner = CliRunner()
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo-data", str(out), "--count", "5", "--size", "128"])
    assert result.exit_code == 0, result.output
    assert "wrote 5 demo images (128x128, seed 0)" in result.output
    assert len(read_dataset(out)) == 5

    result = runner.invoke(app, ["demo-data", str(out), "--count", "5"])
    assert result.exit_code == 1
    assert "already exists" in result.output and "--overwrite" in result.output

    result = runner.invoke(app, ["demo-data", str(out), "--count", "7", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert len(read_dataset(out)) == 7


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(SynthError, match="--size must be at least 64"):
        write_demo_data(tmp_path / "x", count=3, size=32)
    with pytest.raises(SynthError, match="--count must be at least 1"):
        write_demo_data(tmp_path / "x", count=0)
    assert not (tmp_path / "x").exists()
