"""The Typer app and the one error boundary every command goes through."""

from __future__ import annotations

import functools
from collections.abc import Callable

import typer
from rich.text import Text

from synth.console import Console, debug
from synth.errors import DiskFull, SynthError, disk_full_error, redact

app = typer.Typer(
    name="synth",
    help="Build instruction-tuning and preference datasets for text and image-text LLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


def handle_errors(fn: Callable, out_option: str = "-o") -> Callable:
    """Turn library errors into one red line and exit code 1 (re-raise under SYNTH_DEBUG=1).

    A full disk is one of them wherever it surfaces (an OSError, or wrapped by a library): the line names
    the file or folder being written and `out_option`, the option that picks another place."""

    def fail(message: str):
        err_console.print(Text.assemble(("error: ", "bold red"), (redact(message), "red")), soft_wrap=True)
        raise typer.Exit(1) from None

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DiskFull as e:
            if debug():
                raise
            fail(str(DiskFull(e.path, f"another {out_option}")))
        except SynthError as e:
            if debug():
                raise
            fail(str(e))
        except KeyboardInterrupt:
            err_console.print(Text("interrupted", style="red"))
            raise typer.Exit(130) from None
        except ImportError as e:  # an optional package (an extra) that is not installed
            from synth.optional import from_import_error

            error = from_import_error(e, "this command")
            if error is None or debug():
                raise
            fail(str(error))
        except Exception as e:
            full = disk_full_error(e)
            if full is None or debug():
                raise
            path = getattr(full, "filename", None) or "the output (or synth's cache)"
            fail(str(DiskFull(path, f"another {out_option}")))

    return wrapper


def command(*args, out_option: str = "-o", **kwargs):
    """`@command()` registers a function on the app behind the error boundary; `out_option` is the option
    a user changes to write elsewhere (named when the disk is full)."""

    def decorator(fn):
        return app.command(*args, **kwargs)(handle_errors(fn, out_option))

    return decorator
