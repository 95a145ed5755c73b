"""`self_instruct` is one declaration: `SelfInstructConfig` gives the command (no DATASET: it reads its
seed tasks), its --help and the recipe stage (no `input`)."""

from __future__ import annotations

import textwrap

import pytest

from synth.cli.llm_options import SAMPLING_OPTIONS
from synth.errors import SynthError
from synth.generate.self_instruct import SelfInstruct, SelfInstructConfig


def test_help_shows_every_config_field_and_the_old_flags():
    import typer
    from typer.testing import CliRunner

    from synth.cli import app

    command = typer.main.get_command(app).commands["self-instruct"]
    names = {p.name for p in command.params}
    options = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    for field in SelfInstructConfig.model_fields:
        assert field in names or f"self_instruct_{field}" in names, field
    assert "dataset" not in names  # it reads no dataset
    assert {"--max-tokens", "--text-only", "--multimodal", "--responses", "--instance-outputs", "--seeds",
            "--count", "--concurrency", "--top-p", "--presence-penalty", "--instance-max-tokens"} <= options
    assert CliRunner().invoke(app, ["self-instruct", "--help"]).exit_code == 0
    # the flags' help as the command holds it (the printed help is cut to the terminal's width)
    text = " ".join(" ".join((getattr(p, "help", None) or "").split()) for p in command.params).replace("\\[", "[")
    for field, info in SelfInstructConfig.model_fields.items():
        if field in SAMPLING_OPTIONS:  # --temperature, --seed: the shared LLM option's help
            continue
        assert info.description and " ".join(info.description.split())[:30] in text, field


def test_the_llm_concurrency_also_sets_the_rounds_width():
    from synth.cli.operators import _options_from

    fields = {"count": "count", "concurrency": "self_instruct_concurrency"}
    assert _options_from(SelfInstruct, fields, {"concurrency": 2, "count": 6})["concurrency"] == 2
    assert _options_from(SelfInstruct, fields, {"concurrency": 2, "self_instruct_concurrency": 5})["concurrency"] == 5
    assert "concurrency" not in _options_from(SelfInstruct, fields, {"concurrency": None})


def test_a_misspelt_recipe_key_names_file_line_and_the_right_key(tmp_path):
    from synth.run.recipe import load_recipe

    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent("""\
        name: si-keys
        stages:
          - type: self_instruct
            name: si
            count: 3
            rouge_treshold: 0.5
        """), encoding="utf-8")
    with pytest.raises(SynthError) as e:
        load_recipe(path, [])
    assert str(e.value) == f"{path}:6: stages.0.rouge_treshold: unknown key (did you mean 'rouge_threshold'?)"
