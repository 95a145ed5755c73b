"""Small file helpers: YAML with file:line errors, atomic single-file writes.

Datasets are read by `synth.data.reader` and written by `synth.data.writer` (the one reader and the one
writer); this module keeps the helpers for config files and plain JSON/JSONL outputs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from synth.errors import DiskFull, SynthError, disk_full_error

#: a config file (recipe, template set, filter chain) larger than this is refused before parsing
MAX_YAML_BYTES = 4 * 1024 * 1024
#: nodes that aliases may add once expanded: a few anchors reused in a config add hundreds; an "alias
#: bomb" (billion laughs) adds billions, and every later walk over the data would expand them
MAX_ALIAS_NODES = 100_000
#: nesting deeper than this is refused (the parser recurses; deeper input would end in RecursionError)
MAX_YAML_DEPTH = 200


@functools.lru_cache(maxsize=1)
def _loader():
    """The one YAML loader of synth: safe (plain data only), strict (a duplicate key is an error, not
    last-one-wins) and bounded (aliases may not expand into a huge tree; no alias to its own container;
    limited nesting)."""
    import yaml
    from yaml.composer import ComposerError

    class SynthLoader(yaml.SafeLoader):
        def __init__(self, stream):
            super().__init__(stream)
            self._sizes: dict[int, int] = {}  # id(node) -> its node count with aliases expanded (finished nodes)
            self._alias_nodes = 0
            self._depth = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                target = self.anchors.get(event.anchor)
                if target is not None:
                    size = self._sizes.get(id(target))
                    if size is None:  # still being composed: the alias sits inside its own anchor
                        raise ComposerError(None, None, f"alias *{event.anchor} refers to a node that contains it; "
                                            "YAML loops are not allowed", event.start_mark)
                    self._alias_nodes += size
                    if self._alias_nodes > MAX_ALIAS_NODES:
                        raise ComposerError(None, None, f"aliases expand to more than {MAX_ALIAS_NODES:,} nodes "
                                            "(an alias bomb?); write the repeated parts out or use fewer aliases",
                                            event.start_mark)
                return super().compose_node(parent, index)
            self._depth += 1
            if self._depth > MAX_YAML_DEPTH:
                raise ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep",
                                    self.peek_event().start_mark)
            try:
                node = super().compose_node(parent, index)
            finally:
                self._depth -= 1
            children = node.value if isinstance(node, yaml.SequenceNode) else (
                [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
            self._sizes[id(node)] = 1 + sum(self._sizes.get(id(child), 1) for child in children)
            return node

    class DuplicateKeyError(yaml.constructor.ConstructorError):
        def __init__(self, *args, first_line: int):
            super().__init__(*args)
            self.first_line = first_line

    SynthLoader.DuplicateKeyError = DuplicateKeyError
    merge_tag = "tag:yaml.org,2002:merge"

    def construct_mapping(loader, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == merge_tag:
                continue  # `<<: *base` merges; its keys may be overridden by the mapping's own
            key = loader.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                continue
            if key in seen:
                raise DuplicateKeyError(None, None, f"duplicate key '{key}' (first at line {seen[key] + 1}); keep one",
                                        key_node.start_mark, first_line=seen[key] + 1)
            seen[key] = key_node.start_mark.line
        return loader.construct_mapping(node, deep=deep)

    SynthLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return SynthLoader


def _yaml_problem(e, source: str, what: str, lines: bool = True) -> SynthError:
    mark = getattr(e, "problem_mark", None)
    where = f"{source}:{mark.line + 1}" if mark is not None and lines else source
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return SynthError(f"{where}: invalid {what}: {problem}")


def _key_path(node, line: int, column: int, path: tuple = ()) -> tuple | None:
    """The path of keys (list items by index) to the mapping key that starts at (line, column)."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            step = (*path, key_node.value)
            if (key_node.start_mark.line, key_node.start_mark.column) == (line, column):
                return step
            found = _key_path(value_node, line, column, step)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found = _key_path(item, line, column, (*path, index))
            if found:
                return found
    return None


def parse_yaml(text: str, source: str, what: str) -> Any:
    """Parse YAML text with synth's one loader; errors name `source` (a file, or ``-s key``) and `what`.
    A duplicate key names its path too: ``r.yaml:4: invalid recipe: sources.0.weight: duplicate key ...``."""
    import yaml

    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except _loader().DuplicateKeyError as e:
        mark = e.problem_mark
        path = _key_path(compose_yaml(text), mark.line, mark.column)  # it composes: keys are checked later
        if not path:
            raise _yaml_problem(e, source, what) from None
        dotted = ".".join(str(step) for step in path)
        raise SynthError(f"{source}:{mark.line + 1}: invalid {what}: {dotted}: duplicate key "
                         f"(first at line {e.first_line}); keep one") from None
    except yaml.YAMLError as e:
        raise _yaml_problem(e, source, what) from None


def compose_yaml(text: str) -> Any:
    """The node tree of a YAML document (for line numbers), with the same limits; None when it does not parse."""
    import yaml

    try:
        return yaml.compose(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        return None


def yaml_value(text: str, source: str = "value") -> Any:
    """A ``-s key=value`` value: a YAML scalar or flow collection; text that is not YAML stays text.
    An alias bomb is an error (it is YAML, but not a value anyone means)."""
    import yaml

    if not text.strip():
        return ""
    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.composer.ComposerError as e:
        raise _yaml_problem(e, source, "value", lines=False) from None
    except yaml.YAMLError:
        return text


def read_yaml(path: str | os.PathLike, what: str) -> Any:
    """Parse a YAML file (recipe, template set, filter chain); errors name the file, the line and `what`.
    A duplicate key is an error, not last-one-wins; alias bombs and huge files are refused."""
    path = Path(path)
    if not path.is_file():
        raise SynthError(f"{path}: no such {what} file")
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise SynthError(f"{path}: a {what} file of {size / 2**20:.1f} MB is too large (the limit is "
                             f"{MAX_YAML_BYTES // 2**20} MB); is this the right file?")
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SynthError(f"{path}: cannot read {what}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise SynthError(f"{path}: cannot read {what}: not UTF-8 text ({e.reason})") from None
    return parse_yaml(text, str(path), what)


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
    except Exception as e:
        if disk_full_error(e) is not None:
            raise DiskFull(final) from None  # the temp sibling is removed below: nothing half-written
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside `path` durable (a crash after it keeps the new name); best effort where the
    filesystem cannot sync a folder."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike, mode: str = "w", sync_folder: bool = False) -> Iterator:
    """A file opened on a temporary sibling (``.NAME.PID.tmp``); fsynced and renamed onto `final` when the
    block ends, removed on any error (a full disk: `DiskFull`), so `final` is the old file or the new one.
    `sync_folder` also fsyncs the folder after the rename (run folders: the new name survives a crash)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if disk_full_error(e) is not None:
            raise DiskFull(final) from None
        raise
    if sync_folder:
        fsync_dir(final.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, sync_folder: bool = False) -> None:
    """`path` holds `data` whole, or keeps its old content (see `atomic_file`)."""
    with atomic_file(path, "wb", sync_folder=sync_folder) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, sync_folder: bool = False) -> None:
    """`path` holds `text` (UTF-8) whole, or keeps its old content (see `atomic_file`)."""
    with atomic_file(path, "w", sync_folder=sync_folder) as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, value: Any, sync_folder: bool = False, indent: int | None = 2) -> None:
    """`value` as JSON (UTF-8, a final newline) in `path`, whole or not at all (see `atomic_file`)."""
    with atomic_file(path, "w", sync_folder=sync_folder) as f:
        json.dump(value, f, ensure_ascii=False, indent=indent, default=str)
        f.write("\n")


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
