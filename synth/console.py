"""The rich console every command prints through. Off a terminal (a log file, a pipe) rich assumes 80
columns and cuts wider tables (``re… ke…``); this one prints tables at their natural width there, so a log
holds every figure whole. On a terminal it behaves as rich does (the terminal's width)."""

from __future__ import annotations

import os

import rich.console
from rich.console import Group
from rich.measure import Measurement
from rich.table import Table

#: the widest a table may print off a terminal (a bound, not a target: tables print at their own width)
LOG_WIDTH = 10_000


def _tables_only(renderable) -> bool:
    if isinstance(renderable, Table):
        return True
    return isinstance(renderable, Group) and all(_tables_only(r) for r in renderable.renderables)


class Console(rich.console.Console):
    def print(self, *objects, **kwargs) -> None:
        if not self.is_terminal and objects and all(_tables_only(o) for o in objects):
            options = self.options.update(max_width=LOG_WIDTH)
            natural = max(Measurement.get(self, options, o).maximum for o in objects)
            if natural > self.width:  # rich caps a print's width at the console's: widen it for this print
                saved, self._width = self._width, natural
                try:
                    return super().print(*objects, **kwargs)
                finally:
                    self._width = saved
        super().print(*objects, **kwargs)


def debug() -> bool:
    """SYNTH_DEBUG=1: errors keep their traceback instead of the one red ``error:`` line."""
    return os.environ.get("SYNTH_DEBUG", "") not in ("", "0")
