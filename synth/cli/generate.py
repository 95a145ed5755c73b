"""Commands: generate (see synth/generate)."""

from synth.cli.common import command, console  # noqa: F401
