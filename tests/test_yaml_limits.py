"""Hostile YAML: an alias bomb, a self-referring alias, deep nesting or a huge file is refused with one line
naming the file, fast, by every command that reads YAML (one loader: `synth.io.read_yaml`)."""

from __future__ import annotations

import time

import pytest

from synth.errors import SynthError
from synth.io import read_yaml
from tests.cli_helpers import one_line_error, run_cli

# The classic "billion laughs": 9 levels of 9 aliases each, 9^9 (~387 million) strings once expanded.
LOL_LEVELS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10))
BOMB = 'l0: &l0 "lol"\n' + LOL_LEVELS


def bomb_file(folder, name, head=""):
    path = folder / name
    path.write_text(head + BOMB, encoding="utf-8")
    return path


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def test_read_yaml_refuses_an_alias_bomb_in_a_second(tmp_path):
    path = bomb_file(tmp_path, "bomb.yaml")
    with pytest.raises(SynthError) as e:
        timed(lambda: read_yaml(path, "recipe"))
    message = str(e.value)
    assert message.startswith(f"{path}:") and "aliases" in message and "\n" not in message


@pytest.mark.parametrize("args", [
    ("run", "{path}", "--runs-dir", "{tmp}/runs"),
    ("run", "{path}", "--dry-run"),
    ("train", "sft", "{path}"),
    ("train", "dpo", "{path}"),
    ("loop", "{path}", "--runs-dir", "{tmp}/runs"),
    ("mix", "{path}", "-o", "{tmp}/mixed"),
])
def test_every_command_gives_one_line_fast(tmp_path, args):
    path = bomb_file(tmp_path, "bomb.yaml", head="stages: []\n")
    argv = [a.format(path=path, tmp=tmp_path) for a in args]
    result, seconds = timed(lambda: run_cli(*argv))
    one_line_error(result, str(path), "aliases")
    assert seconds < 2, f"{seconds:.1f} s"


def test_a_template_set_from_the_users_folder_gives_one_line_fast(tmp_path):
    from synth.demo_data import write_demo_data

    shapes = write_demo_data(tmp_path / "shapes", count=2, size=64, show_progress=False)
    templates = tmp_path / "my_templates"
    templates.mkdir()
    path = bomb_file(templates, "mine.yaml", head="name: mine\n")
    result, seconds = timed(lambda: run_cli("adapt", shapes, "-t", path, "-o", tmp_path / "out"))
    one_line_error(result, str(path), "aliases")
    assert seconds < 2, f"{seconds:.1f} s"
    assert not (tmp_path / "out").exists()
    # and as a recipe's adapt stage
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stages:\n  - {type: demo, name: shapes, count: 2, size: 64}\n"
                      "  - {type: adapt, name: qa, input: shapes, template: my_templates/mine.yaml}\n")
    result, seconds = timed(lambda: run_cli("run", recipe, "--dry-run"))
    one_line_error(result, str(path), "aliases")
    assert seconds < 2, f"{seconds:.1f} s"
    # a real run draws the demo stage first, then stops at the adapt stage with one error line
    result = run_cli("run", recipe, "--runs-dir", tmp_path / "runs")
    last = result.output.strip().splitlines()[-1]
    assert result.exit_code == 1 and result.output.count("error:") == 1, result.output
    assert last.startswith("error:") and str(path) in last and "aliases" in last


def test_a_loop_recipe_with_a_bomb_under_loop_gives_one_line(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("stages:\n  - {type: demo, name: shapes, count: 2}\nloop:\n  rounds: 1\n"
                    + "".join("  " + line + "\n" for line in BOMB.splitlines()), encoding="utf-8")
    result, seconds = timed(lambda: run_cli("loop", path, "--runs-dir", tmp_path / "runs"))
    one_line_error(result, str(path), "aliases")
    assert seconds < 2, f"{seconds:.1f} s"


def test_a_self_referring_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("stages: &s\n  - *s\n", encoding="utf-8")
    one_line_error(run_cli("run", path, "--runs-dir", tmp_path / "runs"), f"{path}:2:", "*s")


def test_deep_nesting_is_refused(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("stages: " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    one_line_error(run_cli("run", path, "--runs-dir", tmp_path / "runs"), str(path), "nested")


def test_a_huge_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("# " + "x" * (5 * 1024 * 1024) + "\nstages: []\n", encoding="utf-8")
    result, seconds = timed(lambda: run_cli("run", path, "--runs-dir", tmp_path / "runs"))
    one_line_error(result, str(path), "MB")
    assert seconds < 2


def test_an_override_value_cannot_be_a_bomb(tmp_path):
    from synth.io import yaml_value

    flow = "[" + ", ".join(["&a [x, x, x, x, x, x, x, x, x]"] + ["*a"] * 3) + "]"
    assert yaml_value(flow) == [["x"] * 9] * 4
    bomb = "[&a0 x" + "".join(f", &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)) + "]"
    path = tmp_path / "r.yaml"
    path.write_text("stages:\n  - {type: demo, name: shapes, count: 2}\n", encoding="utf-8")
    result, seconds = timed(lambda: run_cli("run", path, "--dry-run", "-s", f"stages.0.count={bomb}"))
    one_line_error(result, "-s stages.0.count", "aliases")
    assert seconds < 2


def test_ordinary_anchors_and_aliases_still_load(tmp_path):
    from synth.run.recipe import load_recipe

    path = tmp_path / "anchors.yaml"
    path.write_text(
        "backends:\n  default: &server\n    backend: openai\n    model: m\n    base_url: http://127.0.0.1:9/v1\n"
        "  judge: *server\n"
        "stages:\n  - {type: demo, name: shapes, count: 2}\n"
        "  - {type: adapt, name: vqa, input: shapes, template: vqa_short}\n"
        "  - &answers {type: generate, name: a1, input: vqa, max_tokens: 16}\n"
        "  - {<<: *answers, name: a2}\n", encoding="utf-8")
    recipe = load_recipe(path).recipe
    assert recipe.backends["judge"].model == "m" and recipe.stages[3].max_tokens == 16
    assert [s.name for s in recipe.stages] == ["shapes", "vqa", "a1", "a2"]
