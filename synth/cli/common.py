"""The Typer app and the one error boundary every command goes through."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import typer
from rich.console import Console
from rich.text import Text

from synth.errors import SynthError

app = typer.Typer(
    name="synth",
    help="Build instruction-tuning and preference datasets for text and image-text LLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


def debug() -> bool:
    return os.environ.get("SYNTH_DEBUG", "") not in ("", "0")


def handle_errors(fn: Callable) -> Callable:
    """Turn library errors into one red line and exit code 1 (re-raise under SYNTH_DEBUG=1)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SynthError as e:
            if debug():
                raise
            err_console.print(Text.assemble(("error: ", "bold red"), (str(e), "red")), soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print(Text("interrupted", style="red"))
            raise typer.Exit(130) from None
        except ImportError as e:  # an optional package (an extra) that is not installed
            from synth.optional import from_import_error

            error = from_import_error(e, "this command")
            if error is None or debug():
                raise
            err_console.print(Text.assemble(("error: ", "bold red"), (str(error), "red")), soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def command(*args, **kwargs):
    """`@command()` registers a function on the app behind the error boundary."""

    def decorator(fn):
        return app.command(*args, **kwargs)(handle_errors(fn))

    return decorator
