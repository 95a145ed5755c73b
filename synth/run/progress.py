"""What a run shows: a live table per stage while it runs, and the final table (also in the manifest).

Live (on a terminal, to stderr): stage, state, shards done/total, records, records/s, tokens, tokens/s,
failures, ETA. Shards run in this process update their counters as records and completions go by;
shards in worker processes or on Ray count when they finish. Off a terminal (a log file, a pipe): one
line per stage as it ends, and every few seconds (``SYNTH_PROGRESS_INTERVAL``) a line per running stage
with the same figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table
from rich.text import Text

from synth.console import Console
from synth.progress import Ticker, duration, interval
from synth.run.adapters.base import Progress


@dataclass
class StageRow:
    name: str
    type: str
    state: str = "pending"
    shards_total: int = 0
    shards_done: int = 0
    records_total: int | None = None
    records_done: int = 0  # from finished shards
    tokens_done: int = 0
    failures_done: int = 0
    started: float = 0.0
    seconds: float = 0.0
    report: dict[str, Any] = field(default_factory=dict)
    live: Progress | None = None

    def records(self) -> int:
        return self.records_done + (self.live.records if self.live else 0)

    def tokens(self) -> int:
        return self.tokens_done + (self.live.tokens if self.live else 0)

    def failures(self) -> int:
        return self.failures_done + (self.live.failures if self.live else 0)


def _tokens_of(report: dict) -> int:
    usage = report.get("usage") or {}
    return int(usage.get("prompt_tokens", 0) or 0) + int(usage.get("completion_tokens", 0) or 0)


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


_duration = duration


class RunView:
    def __init__(self, live: bool = True, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.live_enabled = live and self.console.is_terminal
        self.lines_enabled = live and not self.console.is_terminal  # periodic lines for logs instead
        self.rows: dict[str, StageRow] = {}
        self._live = None
        self._ticker: Ticker | None = None

    # -- lifecycle

    def __enter__(self) -> RunView:
        if self.live_enabled:
            from rich.live import Live

            self._live = Live(self, console=self.console, refresh_per_second=4, transient=True)
            self._live.start()
        elif self.lines_enabled:
            self._ticker = Ticker(interval(), self.print_running).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None

    def __rich__(self) -> Table:
        return self.live_table()

    # -- events

    def _row(self, name: str, type_: str) -> StageRow:
        row = self.rows.get(name)
        if row is None:
            row = self.rows[name] = StageRow(name, type_)
        return row

    def note(self, text: str) -> None:
        """One line about the run itself (a damaged output redone), printed whether the view is live or not."""
        self.console.print(text, style="yellow", highlight=False, soft_wrap=True)

    def source(self, name: str, type_: str, report: dict) -> None:
        row = self._row(name, type_)
        row.state, row.report = "source", report
        row.records_done = report.get("counts", {}).get("rows") or 0
        self._line(row)

    def reused(self, name: str, type_: str, report: dict) -> None:
        row = self._row(name, type_)
        row.state, row.report = "reused", report
        row.records_done = report.get("counts", {}).get("read") or 0
        row.tokens_done = _tokens_of(report)
        row.seconds = report.get("seconds", 0.0)
        self._line(row)

    def start(self, name: str, type_: str, shards_total: int, shards_done: int, records_total: int | None,
              done_markers: list[dict | None]) -> None:
        row = self._row(name, type_)
        row.state, row.started = "running", time.time()
        row.shards_total, row.shards_done, row.records_total = shards_total, shards_done, records_total
        for marker in done_markers:
            if marker:
                self._add_shard(row, marker)

    def progress_for(self, name: str) -> Progress:
        row = self.rows[name]
        if row.live is not None:  # fold the previous shard's live counts into the totals
            row.live = None
        row.live = Progress()
        return row.live

    def _add_shard(self, row: StageRow, marker: dict) -> None:
        report = marker.get("report", {})
        counts = report.get("counts", {})
        row.records_done += counts.get("read", 0) or 0
        row.tokens_done += _tokens_of(report)
        row.failures_done += sum((counts.get("failed") or {}).values())

    def shard_done(self, name: str, marker: dict) -> None:
        row = self.rows[name]
        row.live = None
        row.shards_done += 1
        self._add_shard(row, marker)

    def finish(self, name: str, report: dict, seconds: float) -> None:
        row = self.rows[name]
        row.state, row.report, row.seconds, row.live = "done", report, seconds, None
        counts = report.get("counts", {})
        row.records_done = counts.get("read", 0) or 0
        row.tokens_done = _tokens_of(report)
        row.failures_done = sum((counts.get("failed") or {}).values())
        self._line(row)

    def _line(self, row: StageRow) -> None:
        if self.live_enabled:
            return
        counts = row.report.get("counts", {})
        if row.state == "source":
            text = f"{row.name} ({row.type}): {_count(counts.get('rows'))} records"
        else:
            text = (f"{row.name} ({row.type}): {row.state}, {_count(counts.get('read'))} read → "
                    f"{_count(counts.get('rows'))} rows in {_duration(row.seconds)}")
            for outcome in ("rejected", "failed"):
                n = sum((counts.get(outcome) or {}).values())
                text += f", {n:,} {outcome}" if n else ""
        self.console.print(text, highlight=False, soft_wrap=True)

    # -- tables

    def figures(self, row: StageRow, now: float) -> dict[str, str]:
        """A stage's live figures as text: shards, records, rec/s, tokens, tok/s, failed, ETA."""
        elapsed = max(now - row.started, 1e-6) if row.state == "running" else max(row.seconds, 1e-6)
        records, tokens = row.records(), row.tokens()
        rate = records / elapsed if row.state in ("running", "done") else None
        tok_rate = tokens / elapsed if row.state in ("running", "done") and tokens else None
        eta = "-"
        # Records are counted as they are read: once all are read the stage may still be working on them, so
        # the time left is unknown then, not zero.
        if row.state == "running" and rate and row.records_total and records < row.records_total:
            eta = _duration((row.records_total - records) / rate)
        return {
            "shards": f"{row.shards_done}/{row.shards_total}" if row.shards_total else "-",
            "records": f"{records:,}" + (f"/{row.records_total:,}" if row.records_total else ""),
            "rec/s": "-" if rate is None else f"{rate:,.1f}",
            "tokens": f"{tokens:,}" if tokens else "-",
            "tok/s": "-" if tok_rate is None else f"{tok_rate:,.1f}",
            "failed": f"{row.failures():,}",
            "ETA": eta,
        }

    def print_running(self) -> None:
        """One plain line per running stage (for logs, every few seconds)."""
        now = time.time()
        for row in list(self.rows.values()):
            if row.state != "running":
                continue
            f = self.figures(row, now)
            requests = row.live.requests if row.live is not None else 0  # this shard's, as they complete
            text = (f"{row.name} ({row.type}): running, shards {f['shards']}, {f['records']} records read, "
                    f"{f['rec/s']} rec/s" + (f", {requests:,} requests done" if requests else "")
                    + f", {f['tokens']} tokens, {f['tok/s']} tok/s, {f['failed']} failed, "
                    f"{_duration(now - row.started)} elapsed, ETA {f['ETA']}")
            self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def live_table(self) -> Table:
        from rich import box

        table = Table(title="synth run", title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                      show_edge=False, padding=(0, 1, 0, 0))
        columns = ("stage", "state", "shards", "records", "rec/s", "tokens", "tok/s", "failed", "ETA")
        for column in columns:
            table.add_column(column, justify="left" if column in ("stage", "state") else "right", no_wrap=True)
        now = time.time()
        for row in self.rows.values():
            f = self.figures(row, now)
            style = {"running": "yellow", "done": "green", "reused": "dim", "source": "dim"}.get(row.state, "")
            table.add_row(row.name, Text(row.state, style=style), *(f[c] for c in columns[2:]))
        return table


def summary_table(stages: list[dict[str, Any]], title: str = "synth run"):
    """The final table: per stage read, kept, rows written, rejected, failed, tokens, time; then the
    rejects and failures by reason. `stages` are manifest stage entries with ``name``."""
    from rich import box
    from rich.console import Group

    table = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    # no type column: it keeps the table within 80 columns (the manifest has each stage's type)
    for column in ("stage", "state", "read", "kept", "rows", "rejected", "failed", "tokens", "time"):
        table.add_column(column, justify="left" if column in ("stage", "state") else "right", no_wrap=True,
                         min_width=max([len(e["name"]) for e in stages] + [5]) if column == "stage" else None)
    reasons = Table(title="rejected and failed, by reason", title_justify="left", header_style="bold",
                    box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for column in ("stage", "outcome", "reason", "records"):
        reasons.add_column(column, justify="right" if column == "records" else "left", overflow="fold")
    for entry in stages:
        counts = entry.get("counts") or {}
        rejected = counts.get("rejected") or {}
        failed = counts.get("failed") or {}
        tokens = _tokens_of(entry)
        state = entry.get("state", "")
        seconds = entry.get("seconds") or 0.0
        source = state not in ("ran", "reused")  # a source, or a stage that has not run yet
        table.add_row(
            entry["name"], state,
            "-" if source or not counts else _count(counts.get("read")),
            "-" if source else _count(counts.get("kept")),
            _count(counts.get("rows")),
            "-" if source else f"{sum(rejected.values()):,}",
            "-" if source else f"{sum(failed.values()):,}",
            f"{tokens:,}" if tokens else "-",
            _duration(seconds) if state == "ran" else "-",
        )
        for outcome, by_reason in (("rejected", rejected), ("failed", failed)):
            for reason, n in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
                reasons.add_row(entry["name"], outcome, reason, f"{n:,}")
    return Group(table, reasons) if reasons.row_count else table
