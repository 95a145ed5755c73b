"""`synth batches`: the batch files a run (or a command run with --batch) sent, and cancelling them."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Optional

import typer

from synth.cli.common import command, console


@command("batches")
def batches(
    path: Path = typer.Argument(..., help="A run folder, or the --cache-dir of a command run with --batch."),
    cancel: bool = typer.Option(False, "--cancel", help="Cancel the batches that are not finished."),
    base_url: Optional[str] = typer.Option(
        None, "--base-url", help="Server for --cancel (default: the one each batch was sent to)."),
) -> None:
    """List the batches recorded under PATH (local id, provider batch id, status, requests finished); with
    --cancel, cancel the unfinished ones (a rerun then counts their requests as failures and retries them
    in the run after)."""
    from rich.table import Table

    from synth.llm.batch import cancel_batches, list_batches

    if cancel:
        cancelled = cancel_batches(path, base_url)
        console.print(f"cancelled {len(cancelled)} batch(es)" + (f": {', '.join(cancelled)}" if cancelled else ""))
    records = list_batches(path)
    table = Table(title=f"batches under {path}", title_justify="left", header_style="bold")
    for name in ("local id", "batch id", "state", "status", "requests", "done", "failed", "created"):
        table.add_column(name, justify="right" if name in ("requests", "done", "failed") else "left")
    for r in records:
        counts = r.get("counts") or {}
        created = datetime.datetime.fromtimestamp(r["created"], datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
        table.add_row(r["local_id"], r.get("batch_id") or "-", r["state"], r.get("status") or "-",
                      f"{r['requests']:,}", f"{counts.get('completed', 0):,}", f"{counts.get('failed', 0):,}", created)
    console.print(table)
