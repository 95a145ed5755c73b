"""`adapt` is an operator: its config is the one declaration behind `synth adapt`, the recipe's `type: adapt`,
a dry run and Python chains."""

from __future__ import annotations

import json
import textwrap

import pytest
from test_adapt_classes import csv_source
from test_adapt_data import SUMMARY_ROWS, make_shapes_dataset, write_jsonl

from synth.adapt.operator import Adapt, AdaptConfig
from synth.errors import SynthError
from tests.cli_helpers import one_line_error, run_cli


def test_the_generated_command_shows_every_config_field():
    result = run_cli("adapt", "--help")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    flags = {"template": "--template", "map": "--map", "seed": "--seed", "classes": "--classes",
             "on_error": "--on-error", "verify_images": "--verify-images", "num_proc": "--num-proc"}
    assert set(flags) == set(AdaptConfig.model_fields)
    for flag in [*flags.values(), "-t", "--limit", "--config", "--image-root", "--split", "--revision", "--overwrite"]:
        assert flag in text, flag
    assert "VARIABLE=COLUMN" in text and "(fail | skip)" in text
    assert "adapt" in run_cli("operators").output


def test_a_misspelt_recipe_key_names_its_line_and_the_key_meant(tmp_path):
    from synth.run import RunOptions, run_recipe

    rows = write_jsonl(tmp_path / "rows.jsonl", SUMMARY_ROWS)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        name: typo
        stages:
          - {{type: source, name: raw, path: {rows}}}
          - type: adapt
            name: sft
            input: raw
            templat: summarization
        """), encoding="utf-8")
    with pytest.raises(SynthError) as e:
        run_recipe(recipe, options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    assert f"{recipe}:7: stages.1.templat: unknown key (did you mean 'template'?)" in str(e.value)


def test_several_sets_on_the_command_line_as_in_a_recipe(tmp_path):
    """`-t A -t B` gives every record the samples of both sets, a record's samples together, as a recipe's
    `template: [A, B]` does (before, the command kept only the last -t)."""
    from datasets import load_from_disk

    from synth.records import load_meta
    from synth.run import RunOptions, run_recipe

    shapes = make_shapes_dataset(tmp_path / "shapes", 4)
    result = run_cli("adapt", shapes, "-t", "caption_brief", "-t", "ocr", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "wrote 8 samples from 4 records" in " ".join(result.output.split())
    cli_rows = load_from_disk(str(tmp_path / "out"))
    metas = [load_meta(m) for m in cli_rows["meta"]]
    assert [(m["source_id"], m["template"]) for m in metas] == [
        (sid, t) for sid in sorted({m["source_id"] for m in metas}, key=[m["source_id"] for m in metas].index)
        for t in ("caption_brief", "ocr")]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["template"] == "caption_brief, ocr" and report["records"] == 4 and report["samples"] == 8

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        name: two
        stages:
          - {{type: source, name: shapes, path: {shapes}}}
          - {{type: adapt, name: both, input: shapes, template: [caption_brief, ocr]}}
        """), encoding="utf-8")
    run_recipe(recipe, options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    recipe_rows = load_from_disk(str(tmp_path / "runs" / "two" / "both"))
    assert recipe_rows["id"] == cli_rows["id"] and recipe_rows["messages"] == cli_rows["messages"]


def test_a_bad_map_pair_is_one_line_in_the_form_the_field_describes(tmp_path):
    rows = write_jsonl(tmp_path / "rows.jsonl", SUMMARY_ROWS)
    result = run_cli("adapt", rows, "-t", "summarization", "-o", tmp_path / "out", "--map", "document")
    one_line_error(result, "--map 'document': expected VARIABLE=COLUMN")
    assert not (tmp_path / "out").exists()


def test_dry_run_renders_a_few_rows_with_the_class_list_of_the_whole_input(tmp_path):
    from synth.run.dry import plan_dry_run

    source = csv_source(tmp_path, ["cat", "dog", "cat", "fox"])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        name: dry
        stages:
          - {{type: source, name: raw, path: {source}}}
          - {{type: adapt, name: labelled, input: raw, template: classification}}
        """), encoding="utf-8")
    (entry,) = [e for e in plan_dry_run(recipe, runs_dir=tmp_path / "runs") if e["type"] == "adapt"]
    assert entry["rows_in"] == 4 and entry["rows_out"] == 4
    assert not (tmp_path / "runs").exists()


def test_python_chain_adapts_records():
    records = [dict(row) for row in SUMMARY_ROWS]
    stage = Adapt(template="summarization", seed=3)
    samples = list(stage.run(records))
    assert len(samples) == len(records) and stage.stats.seen == len(records)
    assert [s["meta"]["source_id"] for s in samples] == [str(r["id"]) for r in records]
    assert samples[0]["messages"][-1]["content"] == records[0]["summary"]


def test_a_shipped_set_name_stays_a_name_beside_a_folder_of_that_name(tmp_path, monkeypatch):
    """`template: caption_brief` next to an output folder called caption_brief is still the shipped set;
    `template: mine.yaml` is a file beside the recipe, its content in the fingerprint."""
    from datasets import load_from_disk

    from synth.adapt import load_template_set
    from synth.run import RunOptions, run_recipe

    monkeypatch.chdir(tmp_path)
    shapes = make_shapes_dataset(tmp_path / "shapes", 2)
    assert run_cli("adapt", shapes, "-t", "caption_brief", "-o", tmp_path / "caption_brief").exit_code == 0
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "caption_brief").mkdir()
    (tmp_path / "recipes" / "mine.yaml").write_text(
        open(load_template_set("ocr").origin).read().replace("name: ocr", "name: mine"))
    recipe = tmp_path / "recipes" / "recipe.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        name: names
        stages:
          - {{type: source, name: shapes, path: {shapes}}}
          - {{type: adapt, name: both, input: shapes, template: [caption_brief, mine.yaml]}}
        """), encoding="utf-8")
    run_recipe(recipe, options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    rows = load_from_disk(str(tmp_path / "runs" / "names" / "both"))
    assert len(rows) == 4


def test_every_generated_command_takes_image_root(tmp_path):
    """--image-root, which `synth adapt` had, is an option of every operator's command: a filter over
    annotation rows that name images in a sibling folder reads them under it."""
    from datasets import load_from_disk
    from test_adapt_image_root import coco_like

    ann = coco_like(tmp_path / "data")
    one_line_error(run_cli("image-size", ann, "-o", tmp_path / "o1"), "outside the dataset folder", "--image-root")
    result = run_cli("image-size", ann, "-o", tmp_path / "out", "--image-root", tmp_path / "data" / "images")
    assert result.exit_code == 0, result.output
    assert load_from_disk(str(tmp_path / "out"))["caption"] == ["a one", "a two"]


def test_limit_below_one_is_one_line(tmp_path):
    rows = write_jsonl(tmp_path / "rows.jsonl", SUMMARY_ROWS)
    one_line_error(run_cli("adapt", rows, "-t", "summarization", "-o", tmp_path / "out", "--limit", "0"),
                   "--limit 0", "at least 1")
    assert not (tmp_path / "out").exists()


def test_an_image_set_beside_a_text_set_gives_one_image_text_layout(tmp_path):
    """Text samples join image samples as text parts with no images (this was a traceback: a features cast
    between the two layouts)."""
    from datasets import load_from_disk

    from tests.cli_helpers import run_cli

    assert run_cli("demo-data", tmp_path / "shapes", "--count", 4, "--size", 64).exit_code == 0
    result = run_cli("adapt", tmp_path / "shapes", "-t", "vqa_short", "-t", "scene_qa_text", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    rows = list(load_from_disk(str(tmp_path / "out")))
    text_rows = [r for r in rows if not r["images"]]
    image_rows = [r for r in rows if r["images"]]
    assert text_rows and image_rows
    first = text_rows[0]["messages"][0]["content"]
    assert first[0]["type"] == "text" and first[0]["text"] and len(first) == 1
    assert "Casting" not in result.output
