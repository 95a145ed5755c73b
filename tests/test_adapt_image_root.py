"""Annotation files whose image paths leave the file's folder: --image-root (recipe image_root:).

Relative paths resolve against the image root (as LLaVA's image folder), absolute ones must lie inside it.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from test_adapt_classes import digit_png

from synth.adapt import adapt
from synth.data import open_source
from synth.errors import SynthError
from tests.cli_helpers import one_line_error, run_cli


def coco_like(root: Path, extra: list[dict] = ()) -> Path:
    """data/images/*.png and data/ann/train.json naming them as ../images/x.png and by absolute path."""
    (root / "images").mkdir(parents=True)
    (root / "ann").mkdir()
    (root / "images" / "a.png").write_bytes(digit_png(1, 0))
    (root / "images" / "b.png").write_bytes(digit_png(2, 0))
    rows = [
        {"id": "a", "image": "../images/a.png", "caption": "a one"},
        {"id": "b", "image": str((root / "images" / "b.png").resolve()), "caption": "a two"},
        *extra,
    ]
    (root / "ann" / "train.json").write_text(json.dumps(rows), encoding="utf-8")
    return root / "ann" / "train.json"


def test_relative_and_absolute_paths_under_image_root(tmp_path):
    ann = coco_like(tmp_path / "data")
    result = adapt(ann, "caption_brief", tmp_path / "out", image_root=tmp_path / "data" / "images")
    assert result.samples == 2
    images = [row[0]["bytes"] for row in result.dataset.cast_column("images", _undecoded())["images"]]
    assert images == [digit_png(1, 0), digit_png(2, 0)]


def test_llava_style_paths_relative_to_the_image_folder(tmp_path):
    (tmp_path / "coco" / "train2017").mkdir(parents=True)
    (tmp_path / "coco" / "train2017" / "1.png").write_bytes(digit_png(1, 0))
    (tmp_path / "llava").mkdir()
    ann = tmp_path / "llava" / "instruct.json"
    ann.write_text(json.dumps([{"id": "1", "image": "train2017/1.png", "caption": "one"}]), encoding="utf-8")
    with pytest.raises(SynthError, match="image not found"):  # not beside the annotation file
        adapt(ann, "caption_brief", tmp_path / "o1")
    assert adapt(ann, "caption_brief", tmp_path / "out", image_root=tmp_path / "coco").samples == 1


def _undecoded():
    from datasets import Image, List

    return List(Image(decode=False))


def test_without_image_root_the_error_names_the_option(tmp_path):
    ann = coco_like(tmp_path / "data")
    line = one_line_error(run_cli("adapt", ann, "-t", "caption_brief", "-o", tmp_path / "out"),
                          "record a", "'../images/a.png'", "outside the dataset folder", "--image-root")
    assert "Traceback" not in line
    ok = run_cli("adapt", ann, "-t", "caption_brief", "-o", tmp_path / "out", "--image-root", tmp_path / "data/images")
    assert ok.exit_code == 0, ok.output
    assert "wrote 2 samples from 2 records" in ok.output


@pytest.mark.parametrize("escape", ["../../secret.png", "ABS"])
def test_a_path_that_leaves_image_root_is_an_error_naming_the_option(tmp_path, escape):
    (tmp_path / "secret.png").write_bytes(digit_png(3, 0))
    value = str((tmp_path / "secret.png").resolve()) if escape == "ABS" else escape
    ann = coco_like(tmp_path / "data", [{"id": "evil", "image": value, "caption": "x"}])
    one_line_error(
        run_cli("adapt", ann, "-t", "caption_brief", "-o", tmp_path / "out", "--image-root", tmp_path / "data/images"),
        "record evil", "points outside --image-root", str((tmp_path / "data" / "images").resolve()),
    )
    assert not (tmp_path / "out").exists()
    skipped = adapt(ann, "caption_brief", tmp_path / "o2", image_root=tmp_path / "data/images", on_error="skip")
    assert skipped.samples == 2 and skipped.reasons() == {"bad_image": 1}


def test_a_symlink_out_of_image_root_is_refused(tmp_path):
    (tmp_path / "secret.png").write_bytes(digit_png(3, 0))
    ann = coco_like(tmp_path / "data", [{"id": "link", "image": "link.png", "caption": "x"}])
    (tmp_path / "data" / "images" / "link.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(SynthError, match="record link.*outside --image-root"):
        adapt(ann, "caption_brief", tmp_path / "out", image_root=tmp_path / "data" / "images")


def test_missing_image_root_folder(tmp_path):
    ann = coco_like(tmp_path / "data")
    one_line_error(
        run_cli("adapt", ann, "-t", "caption_brief", "-o", tmp_path / "out", "--image-root", tmp_path / "nope"),
        "--image-root", "no such folder",
    )


def test_reader_records_resolve_under_image_root(tmp_path):
    """The one reader (every command's records): a LLaVA-layout file whose images live elsewhere."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(digit_png(1, 0))
    (tmp_path / "ann").mkdir()
    turns = [{"from": "human", "value": "<image>\nWhich digit?"}, {"from": "gpt", "value": "1"}]
    ann = tmp_path / "ann" / "llava.json"
    ann.write_text(json.dumps([{"id": "a", "image": "../images/a.png", "conversations": turns}]), encoding="utf-8")
    with pytest.raises(SynthError, match="outside the dataset folder.*--image-root"):
        list(open_source(ann).records())
    records = list(open_source(ann, image_root=tmp_path / "images").records())
    assert [r["images"][0]["bytes"] for r in records] == [digit_png(1, 0)]


def test_recipe_source_image_root_is_relative_to_the_recipe(tmp_path):
    from synth.run import RunOptions, run_recipe

    coco_like(tmp_path / "data")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(textwrap.dedent("""\
        name: ann
        stages:
          - {type: source, name: raw, path: data/ann/train.json, image_root: data/images}
          - {type: adapt, name: captions, input: raw, template: caption_brief}
        """), encoding="utf-8")
    run_recipe(recipe, options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    from datasets import load_from_disk

    assert len(load_from_disk(str(tmp_path / "runs" / "ann" / "captions"))) == 2
    recipe.write_text(recipe.read_text().replace("image_root: data/images}", "image_root: data/ann}"))
    with pytest.raises(SynthError, match="outside --image-root .*image_root"):
        run_recipe(recipe, options=RunOptions(runs_dir=tmp_path / "runs2", live=False))
