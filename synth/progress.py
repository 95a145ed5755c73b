"""Rich progress bars with counts, rate and (for LLM work) tokens; quiet when not on a terminal."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per second."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f}/s", style="progress.data.speed")


def progress(transient: bool = False) -> Progress:
    """A progress display: description, bar, done/total, %, rate, elapsed, remaining, and any `tokens` field.

    Use ``task = p.add_task("generating", total=n, tokens="")`` and update ``tokens=`` as usage arrives.
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[tokens]}", style="dim"),
        console=console,
        transient=transient,
        disable=not console.is_terminal,
    )
