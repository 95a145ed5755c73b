"""Command: templates (list the shipped template sets). ``synth adapt`` itself is generated from the adapt
operator's config (`synth.adapt.operator`, `synth.cli.operators`)."""

from __future__ import annotations

from rich.text import Text

from synth.cli.common import command, console


@command()
def templates() -> None:
    """List the shipped template sets."""
    from rich.table import Table

    from synth.adapt import list_template_sets

    table = Table(title="template sets (synth adapt --template NAME)")
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("task")
    table.add_column("modality")
    table.add_column("variants", justify="right")
    table.add_column("description", ratio=1)
    for ts in list_template_sets():
        # Text(), not markup: descriptions contain brackets such as [x0, y0, x1, y1]
        table.add_row(ts.name, Text(ts.task), ts.modality, str(len(ts.instructions)), Text(ts.description))
    console.print(table)
