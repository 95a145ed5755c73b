"""Field types an operator's config declares, which the runner and the CLI treat specially.

`FilePath` marks a field (or the items of a list field) as a file or folder the operator reads: a recipe's
relative path resolves against the recipe's folder (then the working folder), the CLI takes it as a path,
and the file's *content* is part of the stage fingerprint, so editing a benchmark file reruns the stage
that reads it instead of reusing a stale output. `DatasetRef` marks a field naming a dataset the operator
reads besides its input (another stage's output in a recipe, a path on the command line).

`NameOrFile(".yaml", ".yml")` marks a field whose value names something built in (a shipped template set)
or, when it ends with one of those suffixes, a file: only such values resolve and are fingerprinted as files.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel


class _FileMarker:
    """Metadata marking a string as a path the operator reads (with `suffixes`: only a value ending so)."""

    def __init__(self, suffixes: tuple[str, ...] = ()):
        self.suffixes = suffixes

    def is_file(self, value: str) -> bool:
        return not self.suffixes or Path(value).suffix in self.suffixes

    def __repr__(self) -> str:
        return "NameOrFile" if self.suffixes else "FilePath"


FILE = _FileMarker()
FilePath = Annotated[str, FILE]


def NameOrFile(*suffixes: str) -> Any:  # noqa: N802 (a type, used like FilePath)
    """A string naming something built in, or a file when it ends with one of `suffixes`."""
    return Annotated[str, _FileMarker(tuple(suffixes))]


class _DatasetMarker:
    """Metadata marking a string as a dataset the operator reads besides its input."""

    def __repr__(self) -> str:
        return "DatasetRef"


DATASET = _DatasetMarker()
#: a dataset the operator reads besides its input: in a recipe the name of another stage's output (the
#: runner orders the stages and hands the operator that output's folder), on the command line a path or Hub id
DatasetRef = Annotated[str, DATASET]


def dataset_fields(model: type[BaseModel]) -> list[str]:
    """Names of `model`'s fields that hold a `DatasetRef` (or an optional one)."""
    return [name for name, info in model.model_fields.items()
            if any(isinstance(m, _DatasetMarker) for m in info.metadata) or _holds(info.annotation, _DatasetMarker)]


def _holds(annotation: Any, marker: type) -> bool:
    if typing.get_origin(annotation) is Annotated:
        return any(isinstance(m, marker) for m in typing.get_args(annotation)[1:]) or _holds(
            typing.get_args(annotation)[0], marker)
    return any(_holds(arg, marker) for arg in typing.get_args(annotation))


def _marker_in(annotation: Any) -> _FileMarker | None:
    if typing.get_origin(annotation) is Annotated:
        found = [m for m in typing.get_args(annotation)[1:] if isinstance(m, _FileMarker)]
        return found[0] if found else _marker_in(typing.get_args(annotation)[0])
    return next((m for m in map(_marker_in, typing.get_args(annotation)) if m is not None), None)


def _file_marker(model: type[BaseModel], name: str) -> _FileMarker | None:
    info = model.model_fields[name]
    return next((m for m in info.metadata if isinstance(m, _FileMarker)), None) or _marker_in(info.annotation)


def file_fields(model: type[BaseModel]) -> list[str]:
    """Names of `model`'s fields that hold a `FilePath` (or a list of them, or an optional one)."""
    return [name for name in model.model_fields if _file_marker(model, name) is not None]


def resolve_file(value: str, base_dir: Path) -> str:
    """A relative path found beside the recipe wins, then one from the current folder; else as given
    (a Hub id, or a path the operator will report as missing)."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    beside = base_dir / path
    if set("*?[") & set(value) and beside.parent.is_dir():  # a glob beside the recipe
        return str(beside)
    if beside.exists():
        return str(beside.resolve())
    if path.exists():
        return str(path.resolve())
    return value


def _map_paths(value: Any, fn, marker: _FileMarker = FILE) -> Any:
    if isinstance(value, str):
        return fn(value) if marker.is_file(value) else value
    if isinstance(value, (list, tuple)):
        return [_map_paths(v, fn, marker) for v in value]
    return value


def _names_paths(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, (list, tuple)) and any(isinstance(v, str) for v in value))


def resolve_files(config: BaseModel, base_dir: Path) -> BaseModel:
    """`config` with its file fields resolved against `base_dir` (see `resolve_file`)."""
    model = type(config)
    update = {name: _map_paths(getattr(config, name), lambda v: resolve_file(v, base_dir), _file_marker(model, name))
              for name in file_fields(model) if _names_paths(getattr(config, name))}
    return config.model_copy(update=update) if update else config


def content_digest(path: str | os.PathLike, skip: frozenset[str] | set[str] = frozenset()) -> str:
    """xxh3-128 over a file or a folder's files (relative names and bytes, sorted; hidden files and files
    named in `skip` left out)."""
    import xxhash

    path = Path(path)
    h = xxhash.xxh3_128()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        rel = file.relative_to(path) if path.is_dir() else Path(file.name)
        if file.name in skip or any(part.startswith(".") for part in rel.parts):
            continue
        h.update(str(rel).encode() + b"\0")
        with open(file, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def file_contents(config: BaseModel) -> dict[str, Any]:
    """The content digest of every existing file a config's file fields name (for fingerprints)."""
    out: dict[str, Any] = {}
    for name in file_fields(type(config)):
        value = getattr(config, name)
        if _names_paths(value):  # not a field's other form (e.g. examples given inline instead of a file)
            out[name] = _map_paths(value, lambda v: content_digest(v) if Path(v).exists() else v,
                                   _file_marker(type(config), name))
    return out
