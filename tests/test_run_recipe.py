"""Recipes: validation errors carry their file:line (or override), the wiring is checked, overrides apply."""

from __future__ import annotations

import textwrap

import pytest

from synth.errors import SynthError
from synth.run.dag import order
from synth.run.recipe import load_recipe
from tests.cli_helpers import one_line_error, run_cli

GOOD = """\
name: demo-run
seed: 3
stages:
  - type: demo
    name: shapes
    count: 8
  - type: adapt
    name: vqa
    input: shapes
    template: vqa_short
  - type: generate
    name: answers
    input: vqa
    max_tokens: 16
  - type: filter
    name: clean
    input: answers
    filters:
      - name: length
        min_answer_words: 1
      - repetition
      - {image_tokens: {}}
  - type: dedup
    name: unique
    input: clean
"""


def write(tmp_path, text: str, name: str = "recipe.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(path, overrides=()):
    with pytest.raises(SynthError) as e:
        load_recipe(path, list(overrides))
    return str(e.value)


def test_a_good_recipe_loads_in_dependency_order(tmp_path):
    loaded = load_recipe(write(tmp_path, GOOD))
    recipe = loaded.recipe
    assert recipe.seed == 3 and [s.type for s in recipe.stages] == ["demo", "adapt", "generate", "filter", "dedup"]
    assert order(recipe) == ["shapes", "vqa", "answers", "clean", "unique"]
    assert [f.name for f in recipe.stages[3].filters] == ["length", "repetition", "image_tokens"]
    assert recipe.stages[1].template == ["vqa_short"]


def test_unknown_key_names_file_line_and_key_path(tmp_path):
    path = write(tmp_path, GOOD.replace("        min_answer_words: 1", "        treshold: 1"))
    assert error_of(path).startswith(f"{path}:20: stages.3.filters.0.treshold: unknown key")


def test_unknown_key_suggests_the_right_one(tmp_path):
    path = write(tmp_path, GOOD.replace("    max_tokens: 16", "    max_tokns: 16"))
    assert error_of(path) == f"{path}:14: stages.2.max_tokns: unknown key (did you mean 'max_tokens'?)"


def test_unknown_stage_type(tmp_path):
    path = write(tmp_path, GOOD.replace("  - type: dedup", "  - type: dedupe"))
    message = error_of(path)
    assert message.startswith(f"{path}:23: stages.4.type: unknown stage type 'dedupe' (did you mean 'dedup'? "
                              "`synth operators` lists them all)")


def test_unknown_filter_name(tmp_path):
    path = write(tmp_path, GOOD.replace("      - repetition", "      - repetitoin"))
    assert f"{path}:21: stages.3.filters.1" in error_of(path)
    assert "unknown filter 'repetitoin'" in error_of(path)


def test_missing_output_reference(tmp_path):
    path = write(tmp_path, GOOD.replace("    input: answers", "    input: answer"))
    assert error_of(path) == (f"{path}:17: stages.3.input: no stage named 'answer' (did you mean 'answers'?) "
                              "(outputs: shapes, vqa, answers, clean, unique)")


def test_cycle(tmp_path):
    path = write(tmp_path, GOOD.replace("    input: vqa\n    max_tokens", "    input: clean\n    max_tokens"))
    message = error_of(path)
    assert message.startswith(f"{path}:")
    assert "cycle: " in message and "answers → clean → answers" in message


def test_duplicate_names_and_reserved_names(tmp_path):
    path = write(tmp_path, GOOD.replace("    name: unique", "    name: clean"))
    assert error_of(path) == f"{path}:24: stages.4.name: 'clean' also names stages.3; each stage needs its own name"
    path = write(tmp_path, GOOD.replace("    name: unique", "    name: cache"))
    assert "stages.4.name: 'cache' cannot name an output" in error_of(path)


def test_duplicate_yaml_key_is_an_error_at_its_line(tmp_path):
    path = write(tmp_path, GOOD.replace("    max_tokens: 16", "    max_tokens: 16\n    max_tokens: 8"))
    assert error_of(path).startswith(f"{path}:15: invalid recipe: stages.2.max_tokens: duplicate key (first at line 14)")


def test_reading_an_export_is_an_error(tmp_path):
    text = GOOD + "  - {type: export, name: trl, input: unique, format: trl}\n" \
                  "  - {type: dedup, name: again, input: trl}\n"
    path = write(tmp_path, text)
    assert "stages.6.input: 'trl' is a export stage: it writes files, not a dataset" in error_of(path)


def test_unknown_backend_and_backend_options(tmp_path):
    path = write(tmp_path, GOOD.replace("    max_tokens: 16", "    max_tokens: 16\n    backend: vision"))
    assert error_of(path) == f"{path}:15: stages.2.backend: no backend 'vision' under 'backends:' (defined: none)"
    text = "backends:\n  vision:\n    backend: openai\n    model: m\n    conccurency: 4\n" + GOOD
    path = write(tmp_path, text)
    assert error_of(path) == f"{path}:5: backends.vision.conccurency: unknown key (did you mean 'concurrency'?)"
    path = write(tmp_path, "backends:\n  vision:\n    backend: ollama\n" + GOOD)
    assert error_of(path).startswith(f"{path}:3: backends.vision.backend: unknown backend 'ollama'")


def test_secrets_are_refused(tmp_path):
    path = write(tmp_path, "backends:\n  default:\n    backend: openai\n    model: m\n    api_key: sk-123\n" + GOOD)
    message = error_of(path)
    assert message.startswith(f"{path}:5: backends.default.api_key: secrets never go in a recipe")
    assert "OPENAI_API_KEY" in message and "sk-123" not in message


def test_engine_options_are_checked_with_locations(tmp_path):
    text = GOOD + ("  - type: evolve\n    name: evolved\n    input: shapes\n    method: mmevol\n"
                   "    rounds: 0\n    judge_batch_sise: 2\n")
    path = write(tmp_path, text)
    message = error_of(path)
    assert f"{path}:30: stages.5.rounds: Input should be greater than or equal to 1" in message
    assert f"{path}:31: stages.5.judge_batch_sise: unknown key (did you mean 'judge_batch_size'?)" in message


def test_overrides_apply_by_index_or_name_and_errors_name_the_override(tmp_path):
    path = write(tmp_path, GOOD)
    loaded = load_recipe(path, ["stages.answers.max_tokens=64", "seed=9", "stages.0.count=4",
                                "stages.clean.filters.0.min_answer_words=3"])
    recipe = loaded.recipe
    assert recipe.seed == 9 and recipe.stages[2].max_tokens == 64 and recipe.stages[0].count == 4
    assert recipe.stages[3].filters[0].min_answer_words == 3
    assert error_of(path, ["stages.answers.max_tokens=abc"]).startswith(
        "-s stages.answers.max_tokens=abc: stages.2.max_tokens: Input should be a valid integer")
    assert error_of(path, ["stages.nope.x=1"]) == "-s stages.nope.x=1: no stage named 'nope' (stages: shapes, vqa, answers, clean, unique)"
    assert "expected path.to.key=value" in error_of(path, ["seed"])


def test_cli_prints_one_red_line(tmp_path):
    path = write(tmp_path, GOOD.replace("        min_answer_words: 1", "        treshold: 1"))
    one_line_error(run_cli("run", path, "--runs-dir", tmp_path / "runs"), f"{path}:20: stages.3.filters.0.treshold: unknown key")
    assert not (tmp_path / "runs").exists()
    one_line_error(run_cli("run", "--status", "nothing", "--runs-dir", tmp_path / "runs"), "no run 'nothing'")


@pytest.mark.parametrize("name", ["quickstart", "mmevol_openai", "evol_instruct_vllm", "hub_adapt_mix"])
def test_shipped_recipes_validate(name):
    from synth.paths import recipes_dir

    loaded = load_recipe(recipes_dir() / f"{name}.yaml")
    assert loaded.recipe.name == name and order(loaded.recipe)


def test_several_servers_for_one_backend():
    from synth.paths import recipes_dir
    from synth.run.spec import backend_options

    loaded = load_recipe(recipes_dir() / "evol_instruct_vllm.yaml",
                         ["backends.vllm.base_url=[http://a:8000/v1, http://b:8000/v1]"])
    options = backend_options(loaded.recipe.backends["vllm"])
    assert options["backend"] == "openai" and options["base_url"] == ["http://a:8000/v1", "http://b:8000/v1"]
    assert options["concurrency"] == 96 and "api_key" not in options


def test_dry_run_counts_a_mix_source_read_in_place(tmp_path, monkeypatch):
    import json

    from synth.run.dry import plan_dry_run

    monkeypatch.chdir(tmp_path)
    rows = [{"messages": [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": f"A{i}."}]}
            for i in range(7)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(textwrap.dedent("""\
        name: counted
        stages:
          - {type: source, name: qa, path: qa.jsonl}
          - {type: filter, name: clean, input: qa, filters: [repetition]}
          - {type: mix, name: mix, sources: [{input: qa, name: raw}, {input: clean}]}
        """))
    (mix,) = [e for e in plan_dry_run(recipe, runs_dir=tmp_path / "runs") if e["type"] == "mix"]
    by_label = {s["label"]: s for s in mix["mix_sources"]}
    assert by_label["raw"]["rows"] == 7 and by_label["raw"]["how"] == ""
    assert by_label["clean"]["rows"] is None and by_label["clean"]["how"] == "not yet built"
    assert by_label["clean"]["planned"] == 7
    assert not (tmp_path / "runs").exists()
