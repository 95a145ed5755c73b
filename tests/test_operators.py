"""Every registered operator is declared once, by its config: each field documented, unknown keys refused,
and the recipe stage, the generated command and the docs page all made from it."""

from __future__ import annotations

import pytest

from synth.core.registry import operators
from synth.run.adapters import registry
from tests.cli_helpers import run_cli

OPERATORS = sorted(operators())


def test_the_builtin_filters_are_operators():
    assert {"length", "repetition", "placeholder", "image_size", "image_tokens", "dedup", "decontaminate", "judge",
            "capfilt"} <= set(OPERATORS)


@pytest.mark.parametrize("name", OPERATORS)
def test_an_operator_documents_every_option_and_refuses_unknown_ones(name):
    cls = operators()[name]
    assert cls.Config.model_config.get("extra") == "forbid"
    undocumented = [f for f, info in cls.Config.model_fields.items() if not (info.description or "").strip()]
    assert not undocumented, f"{name}: fields without a description: {undocumented}"
    assert (cls.__doc__ or "").strip(), f"{name}: no docstring (its summary everywhere)"


@pytest.mark.parametrize("name", OPERATORS)
def test_the_recipe_stage_and_the_command_come_from_the_config(name):
    cls = operators()[name]
    spec = registry()[name].Spec
    assert set(cls.Config.model_fields) <= set(spec.model_fields)
    if not getattr(cls, "cli_command", True):
        return
    result = run_cli(name.replace("_", "-"), "--help")
    assert result.exit_code == 0 and "Usage:" in result.output, result.output
    import typer

    from synth.cli import app

    command = typer.main.get_command(app).commands[name.replace("_", "-")]
    flags = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]}
    for field in cls.Config.model_fields:
        wanted = (getattr(cls, "cli_flags", {}).get(field) or [f"--{field.replace('_', '-')}"])[0].split("/")[0]
        assert wanted in flags or f"--{name}-{field}".replace("_", "-") in flags, f"{name}: no flag for {field}"
        param = next(p for p in command.params if wanted in p.opts or p.name in (field, f"{name}_{field}"))
        assert param.help and cls.Config.model_fields[field].description.split()[0].lower() in param.help.lower()


def test_synth_operators_lists_them_all():
    result = run_cli("operators", "--json")
    import json

    listed = {row["name"]: row for row in json.loads(result.output)}
    assert set(OPERATORS) <= set(listed)
    assert listed["dedup"]["kind"] == "aggregate" and listed["judge"]["kind"] == "llm"
    assert listed["length"]["kind"] == "filter" and listed["length"]["origin"] == "synth"


def test_an_unknown_operator_name_suggests_the_closest():
    from synth.core.registry import get
    from synth.errors import SynthError

    with pytest.raises(SynthError, match="unknown operator 'dedupe' \\(did you mean 'dedup'\\?\\)"):
        get("dedupe")


def test_a_benchmark_file_edited_after_a_run_reruns_the_stages_that_read_it(tmp_path):
    """File fields are fingerprinted by content, in a `filter` chain as in an operator's own stage."""
    import json
    import textwrap

    from datasets import load_from_disk

    from synth.run import RunOptions, run_recipe

    rows = ["the quick brown fox jumps over the lazy dog", "a completely different sentence about cats"]
    with open(tmp_path / "data.jsonl", "w") as f:
        for i, text in enumerate(rows):
            f.write(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                             {"role": "assistant", "content": text}]}) + "\n")
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": rows[0]}) + "\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(textwrap.dedent("""
        stages:
          - {type: source, name: raw, path: data.jsonl}
          - type: filter
            name: chained
            input: raw
            filters: [{decontaminate: {benchmarks: [bench.jsonl], ngram: 4, min_item_words: 3}}]
          - {type: decontaminate, name: alone, input: raw, benchmarks: [bench.jsonl], ngram: 4, min_item_words: 3}
    """))
    options = RunOptions(runs_dir=tmp_path / "runs", live=False)
    run_recipe(recipe, [], options)
    run_dir = tmp_path / "runs" / "recipe"
    assert len(load_from_disk(str(run_dir / "chained"))) == len(load_from_disk(str(run_dir / "alone"))) == 1
    unchanged = run_recipe(recipe, [], RunOptions(runs_dir=tmp_path / "runs", live=False))
    assert {s.name: s.state for s in unchanged.stages}["alone"] == "reused"
    bench.write_text(json.dumps({"question": rows[1]}) + "\n")  # same path, other content
    edited = run_recipe(recipe, [], RunOptions(runs_dir=tmp_path / "runs", live=False))
    states = {s.name: s.state for s in edited.stages}
    assert states["chained"] == "ran" and states["alone"] == "ran"
    kept = [r["messages"][-1]["content"] for r in load_from_disk(str(run_dir / "chained"))]
    assert kept == [rows[0]] == [r["messages"][-1]["content"] for r in load_from_disk(str(run_dir / "alone"))]


def test_an_operator_that_reads_no_dataset_needs_its_own_command_run():
    """`needs_input = False` has no DATASET to run `clean_dataset` over: its command needs a `run_command`
    (or none at all); registering it otherwise is one line naming where."""
    from synth import Map, OperatorConfig
    from synth.core.operator import check_operator
    from synth.errors import SynthError

    class Made(Map):
        """Makes records from its config."""

        name = "made"
        Config = OperatorConfig
        needs_input = False

    with pytest.raises(SynthError, match=r"^plugin x: Made reads no dataset .*needs a `run_command`"):
        check_operator(Made, "plugin x")
    Made.cli_command = False
    check_operator(Made, "plugin x")  # a recipe stage only
