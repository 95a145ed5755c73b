"""Commands: mix."""

from synth.cli.common import command, console  # noqa: F401
