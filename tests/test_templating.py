"""Sandboxed, strict jinja2 rendering with errors that name template, line and record."""

from __future__ import annotations

import pytest

from synth.errors import SynthError
from synth.templating import compile_template, render


def test_renders_and_names_unknown_variable_with_line_and_record():
    t = compile_template("Line one {{ a }}\nLine two {{ missing }}", "caption.yaml variant 2")
    assert render(t, {"a": 1, "missing": "x"}, "t") == "Line one 1\nLine two x"
    with pytest.raises(SynthError, match=r"caption\.yaml variant 2, line 2: unknown template variable.*'missing'.*record r1"):
        render(t, {"a": 1}, "caption.yaml variant 2", record_id="r1")


def test_sandbox_blocks_unsafe_attribute_access():
    t = compile_template("{{ x.__class__.__mro__ }}", "evil")
    with pytest.raises(SynthError):
        render(t, {"x": 1}, "evil")


def test_syntax_error_is_clear():
    with pytest.raises(SynthError, match="bad, line 1: template syntax error"):
        compile_template("{% if %}", "bad")
