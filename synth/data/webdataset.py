"""WebDataset tar shards in and out: ``{key}.jpg`` + ``{key}.txt`` + ``{key}.json``, as img2dataset writes
them and open_clip / webdataset read them.

Reading: a folder holding ``.tar`` shards, a glob (``shards/*.tar``), one ``.tar`` file or a list of them
becomes rows ``{id, image, caption, json, __error__}`` (the ``raw`` layout, the columns CapFilt reads by
default): ``id`` is the sample key, ``image`` the image member as ``{"bytes", "path": "SHARD/KEY.EXT"}``,
``caption`` the text member, ``json`` the JSON member's text exactly as stored (so it leaves byte for byte).
Which member extensions fill which column is configurable (`Members`). Other members are not read.

Why the stdlib `tarfile` and not the ``webdataset`` package: the format is a plain tar whose members group
by key (the name up to the first dot of its file name); the stdlib reads it sequentially (``r|``, never
seeking, as a pipe would) and tells exactly which member a truncated shard broke on, which the error line
must name. Hub ids go through `datasets`' own webdataset builder instead (streaming), see `from_builder`.

A shard that cannot be read (not a tar, cut short, a member that is not UTF-8 text or a key without an
image) becomes a row with ``__error__`` set: the reader's row conversion raises it as a `RecordError`
naming the shard and key, so the usual ``--on-error`` rule applies (fail, or skip it into rejects).
A truncated shard ends there: the samples before the break are read, the next shard goes on.

Writing: `WebDatasetWriter` writes ``00000.tar``, ``00001.tar`` ... of at most N samples or M MB each,
members in key order per sample, with fixed metadata (mtime 0, mode 0644) so the same records give the
same bytes.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.errors import SynthError

ERROR_COLUMN = "__error__"
GLOB_CHARS = set("*?[")
# webdataset's rule: the key is the path up to the first dot of the file name; the rest is the extension
_KEY_RE = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


@dataclass(frozen=True)
class Members:
    """Which member extensions fill which column (the first present wins, case-insensitive)."""

    image: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")
    caption: tuple[str, ...] = ("txt", "caption", "text")
    json: tuple[str, ...] = ("json",)

    @classmethod
    def parse(cls, value: Members | dict | None) -> Members:
        if value is None or isinstance(value, Members):
            return value or cls()
        unknown = set(value) - {"image", "caption", "json"}
        if unknown:
            raise SynthError(f"webdataset members: unknown column(s) {', '.join(sorted(unknown))} (image, caption, json)")

        def exts(v) -> tuple[str, ...]:
            items = v.replace(";", ",").split(",") if isinstance(v, str) else list(v)
            return tuple(str(x).strip().lstrip(".").lower() for x in items if str(x).strip())

        return cls(**{k: exts(v) for k, v in value.items()})


def shard_paths(source: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path] | None:
    """The ``.tar`` shards a source names, or None when it is no WebDataset source: a list of paths, a
    glob, a ``.tar`` file, or a folder holding ``.tar`` files (img2dataset writes Parquet and JSON stats
    beside its shards: the shards win)."""
    if isinstance(source, (list, tuple)):
        paths = [Path(p) for p in source]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise SynthError(f"{missing[0]}: no such shard")
        return paths
    text = str(source)
    if GLOB_CHARS & set(text) and text.lower().endswith(".tar"):
        found = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True))
        if not found:
            raise SynthError(f"{text}: no .tar shard matches this pattern")
        return found
    path = Path(text)
    if path.is_file() and path.suffix.lower() == ".tar":
        return [path]
    if path.is_dir():
        tars = sorted(p for p in path.rglob("*.tar") if p.is_file() and not p.name.startswith("."))
        return tars or None
    return None


def source_name(paths: list[Path]) -> str:
    return str(paths[0]) if len(paths) == 1 else f"{paths[0].parent} ({len(paths)} shards)"


def _split_name(name: str) -> tuple[str, str] | None:
    match = _KEY_RE.match(name)
    return (match.group(1), match.group(2).lower()) if match else None


def _row(shard: str, key: str, members: dict[str, bytes], spec: Members) -> dict[str, Any]:
    row: dict[str, Any] = {"id": key, "image": None, "caption": None, "json": None, ERROR_COLUMN: None}
    where = f"{shard}: key {key}"
    image_ext = next((e for e in spec.image if e in members), None)
    if image_ext is None:
        row[ERROR_COLUMN] = (f"{where}: no image member ({', '.join('.' + e for e in spec.image)}; has "
                             f"{', '.join('.' + e for e in sorted(members))}); set the image member extension")
        return row
    row["image"] = {"bytes": members[image_ext], "path": f"{Path(shard).name}/{key}.{image_ext}"}
    for column, exts in (("caption", spec.caption), ("json", spec.json)):
        ext = next((e for e in exts if e in members), None)
        if ext is None:
            continue
        try:
            row[column] = members[ext].decode("utf-8")
        except UnicodeDecodeError as e:
            row[ERROR_COLUMN] = f"{where}: member {key}.{ext} is not UTF-8 text ({e.reason} at byte {e.start})"
            return row
        if column == "json":
            try:
                json.loads(row[column])
            except json.JSONDecodeError as e:
                row[ERROR_COLUMN] = f"{where}: member {key}.{ext} is not valid JSON (line {e.lineno}: {e.msg})"
                return row
    return row


def iter_shard(path: Path, spec: Members) -> Iterator[dict[str, Any]]:
    """The rows of one shard in member order; a shard broken part way ends with an error row."""
    shard = str(path)
    key: str | None = None
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(shard, mode="r|*") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                parts = _split_name(info.name)
                if parts is None:
                    continue  # a member without an extension (e.g. a README): not a sample's part
                if parts[0] != key:
                    if key is not None:
                        yield _row(shard, key, members, spec)
                    key, members = parts[0], {}
                handle = tar.extractfile(info)
                members[parts[1]] = handle.read() if handle else b""
                if len(members[parts[1]]) != info.size:
                    raise tarfile.ReadError("unexpected end of data")
    except (tarfile.TarError, EOFError, OSError, zlib_error()) as e:
        at = f"key {key}" if key is not None else "its first member"
        what = str(e).strip() or type(e).__name__
        yield {"id": key or f"{path.name}#0", "image": None, "caption": None, "json": None,
               ERROR_COLUMN: f"{shard}: {at}: unreadable tar shard ({what}); re-download or remove the shard"}
        return
    if key is not None:
        yield _row(shard, key, members, spec)


def zlib_error():
    import zlib

    return zlib.error


def features():
    from datasets import Features, Image, Value

    return Features({"id": Value("string"), "image": Image(decode=False), "caption": Value("string"),
                     "json": Value("string"), ERROR_COLUMN: Value("string")})


def load_shards(paths: list[Path], members: Members | dict | None = None, streaming: bool = False):
    """A `datasets` Dataset of the shards' rows (IterableDataset when streaming). The map-style one is
    cached by the shards' paths, sizes and times (an edited shard is read again), like any local file."""
    import hashlib

    from datasets import Dataset, IterableDataset

    from synth.data.hf import EmptyDatasetError, quiet_datasets

    spec = Members.parse(members)
    if all(p.stat().st_size == 0 for p in paths):
        raise EmptyDatasetError(f"{source_name(paths)}: the shards are empty; give shards with at least one sample")

    def generate(shards: list[str]):
        for shard in shards:
            yield from iter_shard(Path(shard), spec)

    kwargs = {"shards": [str(p) for p in paths]}
    if streaming:
        return IterableDataset.from_generator(generate, features=features(), gen_kwargs=kwargs)
    stamp = "webdataset-1|" + repr(spec) + "|" + "|".join(
        f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths)
    with quiet_datasets():
        return Dataset.from_generator(generate, features=features(), gen_kwargs=kwargs,
                                      fingerprint=hashlib.sha256(stamp.encode()).hexdigest()[:16])


def is_builder_output(dataset) -> bool:
    """Whether `datasets` read this with its webdataset builder (a Hub repo of tar shards)."""
    columns = set(getattr(dataset, "column_names", None) or [])
    return "__key__" in columns and "__url__" in columns


def builder_rows(loaded, members: Members | dict | None = None):
    """What `datasets.load_dataset` gave, with the webdataset builder's output (a dataset, or every split
    of a dict of them) in the local reader's columns; anything else as it came."""
    if is_builder_output(loaded):
        return from_builder(loaded, members)
    if isinstance(loaded, dict) and loaded and all(is_builder_output(d) for d in loaded.values()):
        return type(loaded)({name: from_builder(d, members) for name, d in loaded.items()})
    return loaded


def from_builder(dataset, members: Members | dict | None = None):
    """Rows of `datasets`' webdataset builder (``__key__``, ``__url__`` and one column per extension) in
    the same columns as the local reader: the real path for Hub ids (``load_dataset(repo, streaming=True)``
    picks that builder for repos of tar shards). The builder decodes JSON members, so ``json`` is their
    re-encoding (the local reader keeps the stored bytes)."""
    spec = Members.parse(members)
    columns = list(dataset.column_names or [])

    def first(exts: tuple[str, ...]) -> str | None:
        return next((c for e in exts for c in columns if c.lower() == e), None)

    image, caption, meta = first(spec.image), first(spec.caption), first(spec.json)

    def convert(row: dict) -> dict:
        key = row["__key__"]
        shard = str(row.get("__url__") or "?")
        out = {"id": key, "image": None, "caption": None, "json": None, ERROR_COLUMN: None}
        value = row.get(image) if image else None
        if value is None:
            out[ERROR_COLUMN] = f"{shard}: key {key}: no image member ({', '.join('.' + e for e in spec.image)})"
            return out
        out["image"] = {"bytes": value.get("bytes"), "path": value.get("path") or f"{key}.{image}"}
        if caption and row.get(caption) is not None:
            text = row[caption]
            out["caption"] = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        if meta and row.get(meta) is not None:
            out["json"] = json.dumps(row[meta], ensure_ascii=False)
        return out

    from synth.data.hf import without_image_decoding

    return without_image_decoding(dataset).map(convert, remove_columns=columns, features=features())


# ---------------------------------------------------------------- writing


def member_key(record_id: str) -> str:
    """A sample key readers split correctly: no dot (the key ends at the first one), no empty or
    parent-folder part."""
    key = re.sub(r"[.\s]", "_", str(record_id)).strip("/")
    if not key or any(part in ("", "..") for part in key.split("/")):
        raise SynthError(f"record id '{record_id}' cannot name a WebDataset sample (empty or '..'); give it an id")
    return key


@dataclass
class WebDatasetWriter:
    """Samples → ``{prefix}00000.tar``, ... in `folder`, a new shard after `max_samples` samples or when
    the next sample would pass `max_bytes` (a lone sample larger than that still gets its own shard)."""

    folder: Path
    max_samples: int = 10_000
    max_bytes: int | None = None
    prefix: str = ""
    shards: list[str] = field(default_factory=list)
    samples: int = 0
    _tar: Any = None
    _count: int = 0
    _size: int = 0

    def _open_next(self) -> None:
        self.close()
        name = f"{self.prefix}{len(self.shards):05d}.tar"
        self.shards.append(name)
        self._tar = tarfile.open(self.folder / name, "w", format=tarfile.PAX_FORMAT)
        self._count = self._size = 0

    def add(self, key: str, members: dict[str, bytes]) -> None:
        """One sample: extension → bytes, written in the given order."""
        size = sum(512 + -(-len(b) // 512) * 512 for b in members.values())
        full = self._tar is None or self._count >= self.max_samples or (
            self.max_bytes is not None and self._count and self._size + size > self.max_bytes)
        if full:
            self._open_next()
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self._count += 1
        self._size += size
        self.samples += 1

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None

    def __enter__(self) -> WebDatasetWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
