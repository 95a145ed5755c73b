"""Which folders synth may replace: only ones it wrote, and never one that is or holds an input.

Every output folder synth writes carries a marker file (``.synth-output``, constant content: the command
that wrote it), so ``--overwrite`` / ``overwrite: true`` can tell its own output from an unrelated folder,
the current folder or the user's data. `check_replaceable` is the one gate every command goes through
before it deletes or replaces a folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from synth.errors import DiskFull, SynthError, disk_full_error

MARKER = ".synth-output"


def mark(folder: str | os.PathLike, command: str = "") -> Path:
    """Write the marker into `folder` (which synth is writing): it may be replaced by a later run."""
    path = Path(folder) / MARKER
    try:
        path.write_text(json.dumps({"written_by": f"synth {command}".strip()}) + "\n", encoding="utf-8")
    except OSError as e:
        path.unlink(missing_ok=True)  # a cut-short marker would make the folder look like an output
        if disk_full_error(e) is not None:
            raise DiskFull(folder) from None
        raise
    return path


def written_by_synth(folder: str | os.PathLike, also: Iterable[str] = ()) -> bool:
    """The marker (or, for outputs of older synth versions, one of the files named in `also`) is inside."""
    folder = Path(folder)
    return any((folder / name).is_file() for name in (MARKER, *also))


def _local(value) -> Path | None:
    """The resolved path of an input on this machine (None for a Hub id, a dataset object, nothing)."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        return None
    path = Path(value)
    return path.resolve() if path.exists() else None


def check_replaceable(
    out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (), *, also: Iterable[str] = (),
    choose: str = "choose another output folder",
) -> None:
    """Raise unless `out` may be deleted and replaced: absent, an empty folder, or a folder synth wrote that
    is not and does not hold any of `inputs` (dataset, model, adapter, recipe file, ...)."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    target = out.resolve()
    for value in inputs:
        path = _local(value)
        if path is not None and (path == target or target in path.parents):
            what = "is" if path == target else "holds"
            raise SynthError(f"{out} {what} the input {value}; overwriting would delete it: {choose}")
    if out.is_symlink() or not out.is_dir():
        if out.is_file():
            raise SynthError(f"{out} is a file, not a folder synth wrote; {choose} (or remove it yourself)")
        raise SynthError(f"{out} is not a folder synth wrote; {choose} (or remove it yourself)")
    if not any(out.iterdir()):
        return
    if not written_by_synth(out, also):
        raise SynthError(
            f"{out} was not written by synth (no {MARKER} inside), so it is not replaced; {choose} "
            "(or remove it yourself)"
        )
