"""Every command, argument and option of `synth` says what it is for in --help."""

from __future__ import annotations

import typer

from synth.cli import app


def commands(command, path: tuple[str, ...] = ("synth",)):
    """(path, command) for every leaf command of the Typer app, subcommand groups included."""
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        yield path, command
        return
    for name, sub in subcommands.items():
        yield from commands(sub, (*path, name))


def test_every_command_and_option_has_help_text():
    found = list(commands(typer.main.get_command(app)))
    assert len(found) > 20 and any(path[-1] == "generate" for path, _ in found)
    missing = []
    for path, command in found:
        if not (command.help or "").strip():
            missing.append(f"{' '.join(path)}: no description")
        for param in command.params:
            if param.name != "help" and not (getattr(param, "help", None) or "").strip():
                missing.append(f"{' '.join(path)} {'/'.join(param.opts)}: no help text")
    assert not missing, "\n".join(missing)


def test_generate_help_names_the_default_few_shot_examples():
    import json

    from typer.testing import CliRunner

    from synth.paths import templates_dir

    # Read the help texts themselves: the rendered --help wraps at a width rich may fix earlier in the process.
    result = CliRunner().invoke(app, ["generate", "--help"])
    assert result.exit_code == 0, result.output
    command = dict(commands(typer.main.get_command(app)))[("synth", "generate")]
    text = " ".join(" ".join([command.help or "", *(getattr(p, "help", None) or "" for p in command.params)]).split())
    shipped = templates_dir() / "fewshot" / "responses.jsonl"
    instructions = [json.loads(line)["instruction"] for line in shipped.read_text().splitlines() if line.strip()]
    assert len(instructions) >= 3
    assert "templates/fewshot/responses.jsonl" in text and "embedded default model" in text
    for instruction in instructions:
        assert json.dumps(instruction) in text, instruction
    assert "templates/chat/base.jinja" in text
