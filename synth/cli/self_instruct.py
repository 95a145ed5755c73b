"""Commands: self_instruct."""

from synth.cli.common import command, console  # noqa: F401
