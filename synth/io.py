"""Small file helpers: YAML with file:line errors, atomic single-file writes.

Datasets are read by `synth.data.reader` and written by `synth.data.writer` (the one reader and the one
writer); this module keeps the helpers for config files and plain JSON/JSONL outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from synth.errors import SynthError


def _strict_loader():
    """A safe YAML loader that refuses duplicate keys (YAML itself lets the last one win silently)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (first at line {seen[key] + 1}); keep one", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return loader.construct_mapping(node, deep=deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader


def read_yaml(path: str | os.PathLike, what: str) -> Any:
    """Parse a YAML file (recipe, template set, filter chain); errors name the file, the line and `what`.
    A duplicate key is an error, not last-one-wins."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SynthError(f"{path}: no such {what} file")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_strict_loader())  # noqa: S506 - a SafeLoader subclass
    except OSError as e:
        raise SynthError(f"{path}: cannot read {what}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SynthError(f"{where}: invalid {what}: {problem}") from None



def read_jsonl(path: str | os.PathLike, what: str = "JSONL") -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a small JSONL file (seed tasks, few-shot
    examples); errors name the file and the line. Datasets are read by `synth.data.open_source`."""
    path = Path(path)
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise SynthError(f"{what} file {path} not found") from None
    except OSError as e:
        raise SynthError(f"cannot read {what} file {path}: {e.strerror or e}") from None
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SynthError(f"{path}:{number}: not valid JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(value, dict):
                    raise SynthError(f"{path}:{number}: expected a JSON object, got {type(value).__name__}")
                yield number, value
        except UnicodeDecodeError as e:
            raise SynthError(f"cannot read {what} file {path}: not UTF-8 text ({e.reason})") from None

# ---------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling path; on success move it onto `final`, on error remove it."""
    final = Path(os.path.abspath(final))  # "." has no name to build a sibling from
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp / final.name
    try:
        yield target
        if final.exists():
            if not overwrite:
                raise SynthError(f"{final} already exists; pass --overwrite to replace it")
            if final.is_dir() and not target.is_dir():  # a file never replaces a whole folder
                raise SynthError(f"{final} is a folder; give a file path (e.g. {final / final.name}) instead")
            trash = tmp / ".old"
            os.replace(final, trash)
        os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_jsonl(rows: Iterable[dict], out: str | os.PathLike, overwrite: bool = True) -> int:
    count = 0
    with atomic_path(out, overwrite) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
                count += 1
    return count


def write_json(value: Any, out: str | os.PathLike, overwrite: bool = True) -> None:
    with atomic_path(out, overwrite) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(value, f, ensure_ascii=False, indent=2, default=str)
            f.write("\n")


def read_dataset(source: str | os.PathLike, split: str | None = None, **options: Any):
    """The `datasets` Dataset behind a source (images decoded), for code that hands a dataset to another
    library (trainers, the Hub); records for synth's own stages come from `synth.data.open_source`."""
    from synth.data.reader import load

    return load(source, split, **options)
