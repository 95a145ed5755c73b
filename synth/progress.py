"""Progress for long commands: counts, rate and (for LLM work) tokens.

On a terminal, rich progress bars. Off a terminal (a log file, a pipe) bars would be noise, so a plain
line per unfinished task every `interval()` seconds (``SYNTH_PROGRESS_INTERVAL``, default 10; 0 = none):
a log shows how far a long command got, not silence until the end.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

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

from synth.console import Console
from synth.errors import SynthError

console = Console(stderr=True)
DEFAULT_INTERVAL = 10.0


def interval() -> float:
    """Seconds between plain progress lines off a terminal (``SYNTH_PROGRESS_INTERVAL``; 0 turns them off)."""
    raw = os.environ.get("SYNTH_PROGRESS_INTERVAL", "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also NaN
        raise SynthError(f"SYNTH_PROGRESS_INTERVAL={raw!r}: use a number of seconds (0 turns progress lines off)")
    return seconds


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class Ticker:
    """Calls `tick()` every `seconds` on a daemon thread until `stop()` (the first call after `seconds`,
    so a short command prints nothing)."""

    def __init__(self, seconds: float, tick: Callable[[], None]):
        self.seconds, self.tick = seconds, tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Ticker:
        if self.seconds > 0:
            self._thread = threading.Thread(target=self._run, name="synth-progress", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            self.tick()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class RateColumn(ProgressColumn):
    """Items per second."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f}/s", style="progress.data.speed")


def task_line(task) -> str:
    """One task as a plain log line: done/total (%), rate, elapsed, time left, tokens."""
    done = f"{int(task.completed):,}" + (f"/{int(task.total):,} ({task.percentage:.0f}%)" if task.total else "")
    parts = [f"{task.description}: {done}"]
    speed = task.speed
    if speed:
        parts.append(f"{speed:,.1f}/s")
    parts.append(f"{duration(task.elapsed or 0.0)} elapsed")
    if speed and task.total:
        parts.append(f"~{duration(max(task.total - task.completed, 0) / speed)} left")
    tokens = task.fields.get("tokens")
    if tokens:
        parts.append(str(tokens))
    return " · ".join(parts)


class LogProgress(Progress):
    """A `Progress` for logs: no bar; every `interval()` seconds one plain line per running task (started,
    neither finished nor stopped with `stop_task`)."""

    def __init__(self, *columns, **kwargs):
        super().__init__(*columns, **{**kwargs, "disable": True})
        self._ticker = Ticker(interval(), self.print_lines)

    def print_lines(self) -> None:
        with self._lock:
            lines = [task_line(t) for t in self.tasks
                     if t.started and t.stop_time is None and not t.finished and t.visible]
        for line in lines:
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def start(self) -> None:
        self._ticker.start()

    def stop(self) -> None:
        self._ticker.stop()


def progress(transient: bool = False) -> Progress:
    """A progress display: description, bar, done/total, %, rate, elapsed, remaining, and any `tokens` field
    (off a terminal, plain lines every few seconds instead: `LogProgress`).

    Use ``task = p.add_task("generating", total=n, tokens="")`` and update ``tokens=`` as usage arrives.
    """
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[tokens]}", style="dim"),
    )
    if not console.is_terminal:
        return LogProgress(*columns, console=console, transient=transient)
    return Progress(*columns, console=console, transient=transient)
