"""Commands: adapt (see synth/adapt)."""

from synth.cli.common import command, console  # noqa: F401
