"""A disk that fills up: writes under one folder fail with ENOSPC once a byte budget is spent.

`fill_disk(monkeypatch, folder, budget)` swaps Python's `open` (builtins and io) for one whose files under
`folder` are real files on disk that take `budget` bytes in all (the last write is cut short, as on a full
disk), then raise ``OSError(ENOSPC)``, which is what the kernel says. Everything that writes through Python
file objects (json, pyarrow via datasets, PIL, the writer's sidecars) meets it, and so does pyarrow's
ParquetWriter (given a Python file instead of the path it would open natively).
"""

from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path


class _Budget:
    def __init__(self, budget: int):
        self.left = budget
        self.hits = 0


def fill_disk(monkeypatch, folder, budget: int = 0) -> _Budget:
    folder = os.path.realpath(folder)
    state = _Budget(budget)
    real_open = io.open

    class FullFileIO(io.FileIO):
        def write(self, data) -> int:
            size = memoryview(data).nbytes
            if size > state.left:
                if state.left > 0:
                    super().write(memoryview(data).cast("B")[: state.left])
                    state.left = 0
                state.hits += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            state.left -= size
            return super().write(data)

    def full_open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None, closefd=True, opener=None):
        writing = any(flag in mode for flag in "wax+")
        if not writing or not isinstance(file, (str, os.PathLike)):
            return real_open(file, mode, buffering, encoding, errors, newline, closefd, opener)
        path = os.path.realpath(os.fspath(file))
        if not (path == folder or path.startswith(folder + os.sep)):
            return real_open(file, mode, buffering, encoding, errors, newline, closefd, opener)
        raw = FullFileIO(file, mode.replace("t", "").replace("b", ""), closefd=closefd, opener=opener)
        buffered = (io.BufferedRandom if "+" in mode else io.BufferedWriter)(raw)
        if "b" in mode:
            return buffered
        return io.TextIOWrapper(buffered, encoding=encoding or "utf-8", errors=errors, newline=newline)

    import pyarrow.parquet as pq

    class FullParquetWriter(pq.ParquetWriter):  # pyarrow writes a path natively: hand it a Python file
        def __init__(self, where, schema, *args, **kwargs):
            self._sink = None
            if isinstance(where, (str, os.PathLike)):
                where = self._sink = full_open(where, "wb")
            super().__init__(where, schema, *args, **kwargs)

        def close(self):
            try:
                super().close()
            finally:
                if self._sink is not None:
                    self._sink.close()

    monkeypatch.setattr(pq, "ParquetWriter", FullParquetWriter)
    monkeypatch.setattr(builtins, "open", full_open)
    monkeypatch.setattr(io, "open", full_open)
    return state


def leftovers(folder: Path) -> list[str]:
    """Whatever a failed command left under `folder` (which held nothing before it ran)."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))
