"""Commands: export (see synth/export)."""

from synth.cli.common import command, console  # noqa: F401
