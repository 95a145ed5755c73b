"""`prefs` as an operator: one config made from the strategies' own configs gives the recipe keys, the
`synth prefs` flags and `--help`; samplers and the judge name backends of a recipe; scenes name an output."""

from __future__ import annotations

import json
import re

import pytest

from synth.errors import SynthError
from synth.llm.testing import LLMTestServer
from synth.prefs.operator import STRATEGIES, Prefs
from synth.run import RunOptions, run_recipe
from synth.run.recipe import load_recipe
from tests.cli_helpers import one_line_error, run_cli
from tests.run_helpers import rows, write_recipe
from tests.test_prefs_llm import CAPITAL, PLANTED, SPIDER, Script, ask, right, sft, user_text

BACKENDS = """\
backends:
  policy: {{backend: openai, model: policy, base_url: {url}, max_retries: 0, backoff_base: 0.01}}
  critic: {{backend: openai, model: critic, base_url: {url}, max_retries: 0, backoff_base: 0.01}}
"""

JUDGED = """\
name: judged
{backends}
stages:
  - {{type: source, name: planted, path: {source}}}
  - type: prefs
    name: pairs
    input: planted
    backend: policy
    strategy: judge
    samplers: [{{backend: policy, temperature: 0.9}}]
    judge: critic
    n: 4
"""


def error_of(path) -> str:
    with pytest.raises(SynthError) as e:
        load_recipe(path)
    return str(e.value)


def test_help_shows_every_option_of_every_strategy():
    import typer

    from synth.cli import app

    result = run_cli("prefs", "--help")
    assert result.exit_code == 0 and "Usage:" in result.output, result.output
    command = typer.main.get_command(app).commands["prefs"]  # the flags, whatever the terminal's width
    flags = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]}
    helps = " ".join(" ".join((getattr(param, "help", None) or "").split()) for param in command.params)
    for field in Prefs.Config.model_fields:
        flag = Prefs.cli_flags.get(field, ["--" + field.replace("_", "-")])[0]
        assert flag.split("/")[0] in flags, flag
    for strategy in STRATEGIES.values():  # each strategy's options are the operator's, declared once
        assert set(strategy.Config.model_fields) <= set(Prefs.Config.model_fields)
    assert "(judge, claims; default 1.0)" not in helps  # min_gap's two meanings are told apart
    assert "claims checked per response (claims; default 8)" in helps


def test_recipe_mistakes_name_their_line(tmp_path):
    planted = tmp_path / "planted"
    base = JUDGED.format(backends=BACKENDS.format(url="http://127.0.0.1:1/v1"), source=planted)
    path = write_recipe(tmp_path, base.replace("    n: 4\n", "    min_gapp: 2\n"))
    assert error_of(path) == f"{path}:15: stages.1.min_gapp: unknown key (did you mean 'min_gap'?)"
    path = write_recipe(tmp_path, base.replace("    n: 4\n", "    kinds: [color]\n"))
    assert error_of(path).startswith(f"{path}:15: stages.1.kinds: not an option of strategy 'judge' (its options: seed,")
    path = write_recipe(tmp_path, base.replace("strategy: judge", "strategy: hallucinate").replace("    n: 4\n",
                                                                                                "    max_tokens: 8\n"))
    assert error_of(path) == (f"{path}:15: stages.1.max_tokens: Input should be greater than or equal to 16 "
                              "(strategy 'hallucinate')")
    path = write_recipe(tmp_path, base.replace("judge: critic", "judge: critc"))
    assert error_of(path) == (f"{path}:14: stages.1.judge: no backend 'critc' under 'backends:' "
                              "(defined: policy, critic)")
    path = write_recipe(tmp_path, base.replace("{backend: policy, temperature", "{backend: polcy, temperature"))
    assert error_of(path).startswith(f"{path}:13: stages.1.samplers.0.backend: no backend 'polcy'")
    path = write_recipe(tmp_path, base.replace("strategy: judge", "strategy: vote"))
    assert "unknown strategy 'vote'; choose one of: judge, pairwise, claims, hallucinate, perturb" in error_of(path)
    path = write_recipe(tmp_path, base.replace("strategy: judge", "strategy: hallucinate").replace("    n: 4\n", "")
                        .replace("samplers: [{backend: policy, temperature: 0.9}]",
                                 "samplers: [{backend: policy}, {backend: critic}]"))
    assert "strategy 'hallucinate' uses 1 sampler(s), not 2" in error_of(path)


@pytest.fixture
def server():
    server = LLMTestServer()
    server.script(Script(PLANTED, truth=right))
    with server:
        yield server


def test_samplers_and_the_judge_ask_the_backends_they_name_and_a_rerun_reuses_the_pairs(server, tmp_path):
    source = sft([ask(CAPITAL, "q1"), ask(SPIDER, "q2")], tmp_path / "planted")
    recipe = write_recipe(tmp_path, JUDGED, backends=BACKENDS.format(url=server.base_url), source=source)
    options = RunOptions(runs_dir=tmp_path / "runs", live=False)
    run_recipe(recipe, options=options)
    models = {(b["model"], "### Answer to rate" in user_text(b)) for b in server.requests}
    assert models == {("policy", False), ("critic", True)}
    assert all(b["temperature"] == 0.9 for b in server.requests if b["model"] == "policy")
    pairs = rows(tmp_path / "runs" / "judged" / "pairs")
    assert [json.loads(p["meta"])["prompt_id"] for p in pairs] == ["q1", "q2"]  # the input's order
    assert all(right(p["chosen"][0]["content"]) and not right(p["rejected"][0]["content"]) for p in pairs)
    asked = server.request_count
    again = run_recipe(recipe, options=options)
    assert server.request_count == asked and {s.name: s.state for s in again.stages}["pairs"] == "reused"


def test_a_dry_run_shows_the_sampling_prompts_and_asks_nothing(server, tmp_path):
    source = sft([ask(CAPITAL, "q1"), ask(SPIDER, "q2")], tmp_path / "planted")
    recipe = write_recipe(tmp_path, JUDGED, backends=BACKENDS.format(url=server.base_url), source=source)
    result = run_cli("run", recipe, "--dry-run", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert CAPITAL in result.output and server.request_count == 0
    assert re.search(r"pairs +prefs +planted +2 +1 +~10 ", result.output), result.output  # n + 1 per prompt


def test_perturb_from_the_command_line_takes_comma_lists_and_names_the_flags_it_replaced(tmp_path):
    from synth.demo_data import write_demo_data

    shapes = write_demo_data(tmp_path / "shapes", count=6, size=64, show_progress=False)
    result = run_cli("prefs", shapes, "-s", "perturb", "--kinds", "color,number", "-o", tmp_path / "p")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["config"]["kinds"] == ["color", "number"] and report["command"] == "prefs"
    bad = run_cli("prefs", shapes, "-s", "judge", "-o", tmp_path / "j", "--judge-base-url", "http://gpu2:8000/v1")
    one_line_error(bad, "no --judge-base-url any more", "a recipe whose `judge:` names a backend")
    assert not (tmp_path / "j").exists()


def test_several_models_and_temperatures_from_the_command_line_are_samplers(server, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    source = sft([ask(CAPITAL, "q1"), ask(SPIDER, "q2")], tmp_path / "planted")
    common = [source, "-s", "judge", "--base-url", server.base_url, "--judge-model", "critic", "--n", "4",
              "--cache-dir", tmp_path / "cache"]
    result = run_cli("prefs", *common, "-o", tmp_path / "out", "--temperature", "0.3",
                     "--samplers", "[{backend: policy}, {backend: rival, temperature: 1.0}]")
    assert result.exit_code == 0, result.output
    asked = {(b["model"], b.get("temperature"), b.get("n")) for b in server.requests if b["model"] != "critic"}
    assert asked == {("policy", 0.3, 2), ("rival", 1.0, 2)}
    usage = json.loads((tmp_path / "out" / "usage.json").read_text())
    assert [u["model"] for u in usage] == ["policy", "rival", "critic"]
    twice = run_cli("prefs", *common, "-o", tmp_path / "again", "--temperature", "0.7", "--temperature", "1.0")
    one_line_error(twice, "--temperature given 2 times (0.7, 1.0)", "--samplers")
    assert not (tmp_path / "again").exists()
