"""Commands: evolve (see synth/evolve)."""

from synth.cli.common import command, console  # noqa: F401
