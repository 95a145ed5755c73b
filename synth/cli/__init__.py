"""Command-line interface: parse, call the library, render. Each module registers its commands."""

from __future__ import annotations

from typing import Optional

import typer

from synth import __version__

# Importing the command modules registers their commands on `app`.
from synth.cli import adapt as _adapt  # noqa: F401,E402
from synth.cli import batches as _batches  # noqa: F401,E402
from synth.cli import clean as _clean  # noqa: F401,E402
from synth.cli import export as _export  # noqa: F401,E402
from synth.cli import loop as _loop  # noqa: F401,E402
from synth.cli import mix as _mix  # noqa: F401,E402
from synth.cli import operators as _operators  # noqa: F401,E402
from synth.cli import publish as _publish  # noqa: F401,E402
from synth.cli import run as _run  # noqa: F401,E402
from synth.cli import train as _train  # noqa: F401,E402
from synth.cli.common import app

_operators.register_all()  # a command per registered operator (synth's own and plugins'), from its config


def _version(value: bool) -> None:
    if value:
        typer.echo(f"synth {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Build instruction-tuning and preference datasets for text and image-text LLMs."""


def main() -> None:
    app()
