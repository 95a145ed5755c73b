"""`evolve` is one declaration: the command, its --help and the recipe stage all come from `EvolveConfig`
(made once from the two engines' configs), and an option of the other method is a clear error."""

from __future__ import annotations

import json
import textwrap

import pytest

from synth.cli.llm_options import SAMPLING_OPTIONS
from synth.errors import SynthError
from synth.generate.evolution.operator import Evolve, EvolveConfig
from tests.cli_helpers import one_line_error, run_cli


def _command():
    import typer

    from synth.cli import app

    group = typer.main.get_command(app)
    return group.commands["evolve"]


def test_help_shows_every_config_field():
    from typer.testing import CliRunner

    from synth.cli import app

    options = {opt for param in _command().params for opt in (*param.opts, *param.secondary_opts)}
    for field in EvolveConfig.model_fields:
        flags = Evolve.cli_flags.get(field) or ["--" + field.replace("_", "-")]
        assert set(flags) <= options, field
    # the older spellings still work: --forms, --judge/--no-judge, -m is the model
    assert {"--forms", "--no-judge", "-m", "--limit", "--method"} <= options
    assert CliRunner().invoke(app, ["evolve", "--help"]).exit_code == 0
    # the flags' help as the command holds it (the printed help is cut to the terminal's width)
    text = " ".join(" ".join((getattr(p, "help", None) or "").split()) for p in _command().params).replace("\\[", "[")
    for field, info in EvolveConfig.model_fields.items():
        if field in SAMPLING_OPTIONS:  # --max-tokens, --temperature, --seed: the shared LLM option's help
            continue
        assert info.description and " ".join(info.description.split())[:30] in text, field


def _recipe(tmp_path, stage: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent("""\
        name: evolve-keys
        stages:
          - {type: demo, name: shapes, count: 4}
        """) + textwrap.indent(textwrap.dedent(stage), "  "), encoding="utf-8")
    return path


def test_a_misspelt_recipe_key_names_file_line_and_the_right_key(tmp_path):
    from synth.run.recipe import load_recipe

    path = _recipe(tmp_path, """\
        - type: evolve
          name: evolved
          input: shapes
          method: mmevol
          judge_batch_sise: 2
        """)
    with pytest.raises(SynthError) as e:
        load_recipe(path, [])
    assert str(e.value) == f"{path}:8: stages.1.judge_batch_sise: unknown key (did you mean 'judge_batch_size'?)"


def test_an_option_of_the_other_method_is_an_error_at_its_line(tmp_path):
    from synth.run.recipe import load_recipe

    path = _recipe(tmp_path, """\
        - type: evolve
          name: evolved
          input: shapes
          rounds: 2
          image_column: picture
        """)
    with pytest.raises(SynthError) as e:
        load_recipe(path, [])
    assert str(e.value).startswith(
        f"{path}:8: stages.1.image_column: not an option of method evol-instruct (only of mmevol)")


def test_recipe_keys_of_today_still_load(tmp_path):
    """Every key the hand-written stage took (method, limit, engine options, rules over the method's
    defaults, weights as a map) loads; unset options keep the method's defaults."""
    from synth.run.recipe import load_recipe

    path = _recipe(tmp_path, """\
        - type: evolve
          name: evolved
          input: shapes
          method: evol-instruct
          limit: 3
          operators: {deepen: 3, in_breadth: 1}
          rules: {refusal_max_words: 50}
          answer_max_tokens: 64
        """)
    stage = load_recipe(path, []).recipe.stages[1]
    assert stage.limit == 3
    built = Evolve.from_config(EvolveConfig(**{k: getattr(stage, k) for k in EvolveConfig.model_fields}))
    assert built.name == "evol-instruct" and built.config.rounds == 4  # the paper's M = 4
    assert built.config.rules.refusal_max_words == 50 and built.config.rules.min_answer_words == 0
    assert built.config.operators == {"deepen": 3.0, "in_breadth": 1.0} and built.config.answer_max_tokens == 64


def test_cli_weights_text_and_a_bad_weight_are_one_line(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"instruction": "Name a colour.", "output": "Red."}) + "\n")
    one_line_error(run_cli("evolve", seeds, "-o", tmp_path / "out", "--operators", "deepen=x", "--base-url",
                           "http://127.0.0.1:9", "-m", "m"),
                   "operators", "weight 'x' of 'deepen' is not a number")
    one_line_error(run_cli("evolve", seeds, "-o", tmp_path / "out", "--method", "mmevol", "--instruction-column",
                           "q", "--base-url", "http://127.0.0.1:9", "-m", "m"),
                   "instruction_column: not an option of method mmevol (only of evol-instruct)")
    assert not (tmp_path / "out").exists()
