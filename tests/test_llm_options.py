"""The generating commands share one group of LLM options: same flags, defaults and help everywhere."""

from __future__ import annotations

import typer.main

from synth.cli import app

SHARED = ("out", "model", "base_url", "backend", "concurrency", "cache_dir", "no_cache", "max_tokens", "temperature", "seed")
COMMANDS = ("generate", "evolve", "self-instruct")
#: self-instruct's --max-tokens sets its instruction_max_tokens: the same flag, help that says what it limits
OWN_HELP = {("self-instruct", "max_tokens")}


def params(name: str) -> dict:
    group = typer.main.get_command(app)
    params = group.commands[name].params  # by flag (`--max-tokens` may set a field of another name)
    return {**{o[2:].replace("-", "_"): p for p in params for o in p.opts if o.startswith("--")},
            **{p.name: p for p in params}}


def test_every_generating_command_has_the_same_llm_options():
    by_command = {name: params(name) for name in COMMANDS}
    for option in SHARED:
        shapes = {  # (a generated command reads a one-value flag as a list, so that a repeat is an error)
            name: (tuple(p[option].opts), p[option].help)
            for name, p in by_command.items() if (name, option) not in OWN_HELP
        }
        assert len(set(shapes.values())) == 1, (option, shapes)
        assert len({tuple(p[option].opts) for p in by_command.values()}) == 1, option
    for option in ("out", "model", "base_url", "backend", "concurrency", "cache_dir", "no_cache"):
        assert len({p[option].default for p in by_command.values()}) == 1, option
    assert by_command["evolve"]["model"].opts == ["--model", "-m"]  # -m is the model, never the method
    assert by_command["evolve"]["method"].opts == ["--method"]
    assert by_command["self-instruct"]["out"].opts == ["--out", "-o"]
    assert by_command["generate"]["base_url"].multiple  # replicas


def test_evolve_m_is_the_model(tmp_path, llm_server):
    import json

    from tests.cli_helpers import run_cli

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"instruction": "Write a haiku about rain."}) + "\n")
    result = run_cli("evolve", seeds, "-o", tmp_path / "out", "-m", "served-model", "--base-url", llm_server.base_url,
                     "--no-cache", "--rounds", "1", "--no-judge")
    assert result.exit_code == 0, result.output
    assert {body["model"] for body in llm_server.requests} == {"served-model"}
