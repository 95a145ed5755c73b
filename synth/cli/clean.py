"""Commands: clean (see synth/clean)."""

from synth.cli.common import command, console  # noqa: F401
