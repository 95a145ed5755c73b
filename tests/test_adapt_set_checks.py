"""Template sets are checked whole when they load: unsafe variants, unknown names (did you mean), recipes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from test_adapt_classes import csv_source
from test_adapt_data import SUMMARY_ROWS, write_jsonl

from synth.adapt import adapt, load_template_set
from synth.errors import SynthError
from tests.cli_helpers import one_line_error, run_cli


def summary_set(path: Path, unsafe: str, index: int = 4) -> Path:
    """The shipped summarization set with one variant replaced by `unsafe`."""
    data = yaml.safe_load(Path(load_template_set("summarization").origin).read_text())
    data["name"] = "my_summaries"
    data["instructions"][index] = unsafe
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("unsafe, name", [
    ("Summarize {{ document.__class__ }}", "__class__"),
    ("Summarize {{ document['__class__'] }}", "__class__"),
    ("Summarize\n{{ document | attr('_private') }}", "_private"),
    ("{% for c in document.__class__.__mro__ %}{{ c }}{% endfor %}", "__class__"),
])
def test_an_unsafe_variant_fails_when_the_set_loads(tmp_path, unsafe, name):
    path = summary_set(tmp_path / "mine.yaml", unsafe)
    with pytest.raises(SynthError) as e:
        load_template_set(path)
    assert "template set 'my_summaries'" in str(e.value) and "instructions[4]" in str(e.value)
    assert f"unsafe attribute access '{name}'" in str(e.value), str(e.value)


def test_an_unsafe_variant_no_record_draws_still_fails_the_command(tmp_path):
    # 2 records, 6 variants: with seed 0 neither draws variant 5; today the set passes and writes
    path = summary_set(tmp_path / "mine.yaml", "{{ document.__init__.__globals__ }}", index=5)
    rows = write_jsonl(tmp_path / "rows.jsonl", SUMMARY_ROWS)
    line = one_line_error(run_cli("adapt", rows, "-t", path, "-o", tmp_path / "out", "--on-error", "skip"),
                          "my_summaries", "instructions[5], line 1", "'__init__', '__globals__'")
    assert "unsafe" in line
    assert not (tmp_path / "out").exists()


def test_safe_attribute_reads_pass(tmp_path):
    path = summary_set(tmp_path / "mine.yaml", "Summarize ({{ document.split() | length }} words): {{ document }}")
    assert load_template_set(path).name == "my_summaries"


def test_unknown_set_name_says_did_you_mean(tmp_path):
    rows = write_jsonl(tmp_path / "rows.jsonl", SUMMARY_ROWS)
    one_line_error(run_cli("adapt", rows, "-t", "sumarization", "-o", tmp_path / "out"),
                   "unknown template set 'sumarization'", "did you mean 'summarization'?")
    line = one_line_error(run_cli("adapt", rows, "-t", "zzzz", "-o", tmp_path / "out"), "unknown template set")
    assert "did you mean" not in line


def test_recipe_template_typo_and_classes(tmp_path):
    from datasets import load_from_disk

    from synth.run import RunOptions, run_recipe

    source = csv_source(tmp_path, ["cat", "dog", "cat"])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        name: cls
        stages:
          - {{type: source, name: raw, path: {source}}}
          - {{type: adapt, name: labelled, input: raw, template: clasification, classes: [dog, cat, fox]}}
        """), encoding="utf-8")
    with pytest.raises(SynthError, match=r"recipe.yaml:4: stages.1.template: .*did you mean 'classification'"):
        run_recipe(recipe, options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    assert not (tmp_path / "runs" / "cls").exists()  # refused when the recipe loads, before any stage
    twice = tmp_path / "twice.yaml"
    twice.write_text(recipe.read_text().replace("[dog, cat, fox]", "[dog, dog]"))
    with pytest.raises(SynthError, match=r"twice.yaml:4: stages.1.classes: class 'dog' is listed twice"):
        run_recipe(twice, options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    recipe.write_text(recipe.read_text().replace("clasification", "classification"))
    run_recipe(recipe, options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    rows = load_from_disk(str(tmp_path / "runs" / "cls" / "labelled"))
    assert [m[-1]["content"][0]["text"] for m in rows["messages"]] == ["cat", "dog", "cat"]
    assert all("fox" in m[0]["content"][1]["text"] for m in rows["messages"])


def test_recipe_shards_share_the_class_list_of_the_whole_input(tmp_path):
    """Distinct labels are read from the whole input: every shard renders the same list."""
    from datasets import load_from_disk

    from synth.run import RunOptions, run_recipe

    source = csv_source(tmp_path, ["cat", "cat", "dog", "dog"])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        name: cls
        shard_size: 2
        stages:
          - {{type: source, name: raw, path: {source}}}
          - {{type: adapt, name: labelled, input: raw, template: classification}}
        """), encoding="utf-8")
    run_recipe(recipe, options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    rows = load_from_disk(str(tmp_path / "runs" / "cls" / "labelled"))
    assert len(rows) == 4
    assert all("cat" in m[0]["content"][1]["text"] and "dog" in m[0]["content"][1]["text"]
               for m in rows["messages"])


def test_adapt_with_an_unsafe_in_memory_set_fails_before_reading(tmp_path):
    ts = load_template_set("summarization")
    bad = ts.model_copy(update={"instructions": [*ts.instructions[:-1], "{{ document.__len__() }}"]})
    rows = write_jsonl(tmp_path / "rows.jsonl", SUMMARY_ROWS)
    with pytest.raises(SynthError, match=r"instructions\[5\].*'__len__'"):
        adapt(rows, bad, tmp_path / "out")
