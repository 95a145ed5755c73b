"""Helpers for CLI tests: run `synth` in-process and check the one-line error contract."""

from __future__ import annotations

from typer.testing import CliRunner

from synth.cli import app

runner = CliRunner()


def run_cli(*args):
    """Invoke `synth ARGS...`; a traceback in the output always fails the test."""
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def one_line_error(result, *fragments: str) -> str:
    """The CLI failed with exit 1 and a single 'error:' line holding every fragment."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]
