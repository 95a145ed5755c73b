"""What every exporter shares: reading the source, checking rows, images as files or data, atomic output.

An exporter converts one prepared record (a `Sample` or `PreferencePair` whose images are `ImageData`)
into one output row, or raises `RowError` when the row cannot be expressed in its format. `run_export`
does the rest: read the source, prepare rows, count, skip or fail (naming the row), write everything into a
temporary folder and rename it into place only when all went well.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from synth.errors import SynthError
from synth.records import (
    ImagePart,
    Message,
    PreferencePair,
    Sample,
    TextPart,
    dataset_kind,
    row_to_pair,
    row_to_sample,
)

IMAGE_TOKEN = "<image>"
# File extension and MIME type per PIL format name.
_FORMATS = {
    "PNG": ("png", "image/png"),
    "JPEG": ("jpg", "image/jpeg"),
    "WEBP": ("webp", "image/webp"),
    "GIF": ("gif", "image/gif"),
    "BMP": ("bmp", "image/bmp"),
    "TIFF": ("tiff", "image/tiff"),
}

OnError = Literal["fail", "skip"]


class RowError(Exception):
    """A row that the target format cannot hold. `reason` is a short stable key for the rejects file."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageData:
    """Encoded image bytes as found in the source, with their format and size."""

    data: bytes
    format: str
    width: int
    height: int

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def extension(self) -> str:
        return _FORMATS.get(self.format, ("png", ""))[0]

    def data_url(self, allowed: tuple[str, ...] = ("PNG", "JPEG", "WEBP")) -> str:
        """A base64 data URL; formats outside `allowed` are re-encoded as PNG (lossless)."""
        data, fmt = self.data, self.format
        if fmt not in allowed:
            from PIL import Image

            buf = io.BytesIO()
            Image.open(io.BytesIO(data)).convert("RGBA").save(buf, format="PNG")
            data, fmt = buf.getvalue(), "PNG"
        return f"data:{_FORMATS[fmt][1]};base64,{base64.b64encode(data).decode('ascii')}"


def decode_image(data: bytes, where: str) -> ImageData:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise RowError("bad_image", f"unreadable or corrupt image {where}: {str(e).splitlines()[0][:200]}") from e
    fmt = image.format if image.format in _FORMATS else "PNG"
    if image.format not in _FORMATS:  # an exotic format: keep the pixels, store them as PNG
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data = buf.getvalue()
    return ImageData(data, fmt, image.width, image.height)


def load_image(value: Any, base_dir: Path | None) -> ImageData:
    """Image bytes from a datasets Image cell ({bytes, path}), raw bytes, a PIL image or a relative path."""
    from synth.io import resolve_image_path

    if isinstance(value, dict):
        if value.get("bytes"):
            return decode_image(value["bytes"], "<bytes>")
        if value.get("path"):  # written by the datasets library itself: trust the path as stored
            return _read_image_file(Path(value["path"]))
        raise RowError("bad_image", "image entry has neither bytes nor path")
    if isinstance(value, (bytes, bytearray)):
        return decode_image(bytes(value), "<bytes>")
    if isinstance(value, (str, os.PathLike)):
        if base_dir is None:
            return _read_image_file(Path(value))
        try:
            return _read_image_file(resolve_image_path(base_dir, str(value)))
        except SynthError as e:
            raise RowError("bad_image", str(e).split(": ", 1)[-1]) from e
    if hasattr(value, "save") and hasattr(value, "mode"):  # PIL image
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return decode_image(buf.getvalue(), "<PIL image>")
    raise RowError("bad_image", f"unsupported image value of type {type(value).__name__}")


def _read_image_file(path: Path) -> ImageData:
    if not path.is_file():
        raise RowError("bad_image", f"image not found: {path}")
    return decode_image(path.read_bytes(), str(path))


# ---------------------------------------------------------------- message helpers


def image_parts(messages: list[Message]) -> int:
    return sum(m.image_count for m in messages)


def flat_text(message: Message, image_token: str = IMAGE_TOKEN) -> str:
    """The message as one string, each image part replaced by `image_token` where it stood."""
    if isinstance(message.content, str):
        return message.content
    return "".join(p.text if isinstance(p, TextPart) else image_token for p in message.content)


def has_image(message: Message) -> bool:
    return not isinstance(message.content, str) and any(isinstance(p, ImagePart) for p in message.content)


def check_turns(messages: list[Message], end_with: Literal["assistant", "user"]) -> None:
    """Optional leading system message, then user/assistant alternating, starting with user."""
    turns = messages[1:] if messages and messages[0].role == "system" else messages
    if not turns:
        raise RowError("role_order", "no user or assistant turns")
    for i, message in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if message.role != expected:
            raise RowError("role_order", f"turn {i + 1} is '{message.role}', expected '{expected}' (user and assistant must alternate)")
    if turns[-1].role != end_with:
        raise RowError("role_order", f"the conversation must end with a{'n' if end_with == 'assistant' else ''} {end_with} turn")


def single_reply(messages: list[Message], which: str) -> Message:
    """The one assistant message of a `chosen` / `rejected` column."""
    if len(messages) != 1 or messages[0].role != "assistant":
        roles = ", ".join(m.role for m in messages) or "none"
        raise RowError("reply_shape", f"'{which}' must hold exactly one assistant message (has: {roles})")
    return messages[0]


# ---------------------------------------------------------------- output


class ImageStore:
    """Writes each distinct image once, named by its content hash, and returns its relative path."""

    def __init__(self, root: Path, folder: str = "images"):
        self.root = root
        self.folder = folder
        self.paths: dict[str, str] = {}

    def path_for(self, image: ImageData) -> str:
        digest = image.digest
        if digest not in self.paths:
            rel = f"{self.folder}/{digest[:24]}.{image.extension}"
            target = self.root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(image.data)
            self.paths[digest] = rel
        return self.paths[digest]

    @property
    def count(self) -> int:
        return len(self.paths)


@dataclass
class ExportContext:
    """What an exporter knows about the export in progress."""

    root: Path  # the temporary output folder (renamed to OUT at the end)
    name: str
    kind: Literal["sft", "preference"]
    multimodal: bool
    jsonl: bool
    images: ImageStore = field(init=False)

    def __post_init__(self) -> None:
        self.images = ImageStore(self.root)


Record = Sample | PreferencePair


class Exporter:
    """One output format. Subclasses convert records (`convert`) and write the collected rows (`write`)."""

    name: ClassVar[str]
    supports_preference: ClassVar[bool] = True

    def __init__(self, context: ExportContext):
        self.context = context
        self.embedded_images = 0  # images written inline (Parquet bytes, data URLs), not as files

    def convert(self, record: Record) -> Any:
        raise NotImplementedError

    def write(self, rows: Iterator[Any]) -> list[str]:
        """Write the converted rows; return the files written (relative to the output folder)."""
        raise NotImplementedError


def write_json_list(path: Path, rows: Iterator[Any]) -> None:
    """A JSON list written row by row (one row per line inside the brackets), never held in memory."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("[")
        for i, row in enumerate(rows):
            f.write(",\n" if i else "\n")
            f.write(json.dumps(row, ensure_ascii=False))
        f.write("\n]\n")


def write_jsonl_rows(path: Path, rows: Iterator[Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


# ---------------------------------------------------------------- the run


@dataclass
class ExportSummary:
    format: str
    out: Path
    kind: str
    rows: int = 0
    skipped: int = 0
    image_files: int = 0
    embedded_images: int = 0
    files: list[str] = field(default_factory=list)
    rejects: Path | None = None


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "data"


def raw_rows(dataset, batch_size: int = 256) -> Iterator[dict]:
    """Rows as stored: image cells stay encoded bytes/paths (no decode + re-encode, so exports are
    byte-equal), and nothing is cast or cached beside the source."""
    for batch in dataset.with_format("arrow").iter(batch_size=batch_size):
        yield from batch.to_pylist()


def prepare(row: dict, kind: str, base_dir: Path | None) -> Record:
    """A source row as a record with decoded-checked `ImageData` images; problems raise `RowError`."""
    from pydantic import ValidationError

    row = dict(row)
    images = row.get("images")
    if images is None:
        images = []
    elif not isinstance(images, list):
        images = [images]
    row["images"] = [load_image(value, base_dir) for value in images]
    try:
        record = row_to_pair(row) if kind == "preference" else row_to_sample(row)
    except ValidationError as e:
        item = e.errors()[0]
        where = ".".join(str(x) for x in item.get("loc", ()))
        raise RowError("bad_row", f"{where}: {item.get('msg')}") from e
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise RowError("bad_row", f"malformed row: {e}") from e
    messages = record.prompt + record.chosen + record.rejected if kind == "preference" else record.messages
    parts = image_parts(messages)
    if parts != len(record.images):
        raise RowError("image_count", f"{parts} image part(s) in the messages but {len(record.images)} image(s) in 'images'")
    return record


def _row_label(index: int, row: dict) -> str:
    row_id = row.get("id")
    return f"row {index} (id {row_id})" if row_id else f"row {index}"


def run_export(
    source,
    out: str | os.PathLike,
    exporter_cls: type[Exporter],
    *,
    overwrite: bool = False,
    name: str | None = None,
    jsonl: bool = False,
    on_error: OnError = "fail",
    split: str | None = None,
    show_progress: bool = True,
) -> ExportSummary:
    """Export `source` (a path / Hub id or a `datasets.Dataset`) to the folder `out`, atomically."""
    from synth.io import atomic_path, check_output, dataset_base_dir, read_dataset, rejects_path, write_jsonl
    from synth.progress import progress

    if on_error not in ("fail", "skip"):
        raise SynthError(f"--on-error must be 'fail' or 'skip' (got '{on_error}')")
    out = check_output(out, overwrite)
    if isinstance(source, (str, os.PathLike)):
        dataset, base_dir = read_dataset(source, split), dataset_base_dir(source)
        label = str(source)
    else:
        dataset, base_dir, label = source, None, "dataset"
    kind = dataset_kind(dataset)
    if kind == "other":
        raise SynthError(
            f"{label}: not an SFT dataset ('messages') or a preference dataset ('prompt', 'chosen', 'rejected'); "
            f"its columns are {', '.join(dataset.column_names)}. Turn it into one first (e.g. synth adapt)"
        )
    if kind == "preference" and not exporter_cls.supports_preference:
        raise SynthError(f"{label}: the {exporter_cls.name} format holds SFT data only; export preference data with --format trl, llamafactory or openai")
    summary = ExportSummary(format=exporter_cls.name, out=out, kind=kind)
    rejects: list[dict] = []

    with atomic_path(out, overwrite) as tmp:
        tmp.mkdir()
        context = ExportContext(tmp, safe_name(name or out.name), kind, "images" in dataset.column_names, jsonl)
        exporter = exporter_cls(context)

        def converted() -> Iterator[Any]:
            with progress() as bar:
                task = bar.add_task(f"exporting ({exporter_cls.name})", total=len(dataset), tokens="", visible=show_progress)
                for index, row in enumerate(raw_rows(dataset)):
                    bar.advance(task)
                    try:
                        result = exporter.convert(prepare(row, kind, base_dir))
                    except RowError as e:
                        where = _row_label(index, row)
                        if on_error == "fail":
                            raise SynthError(f"{label}: {where}: {e.detail} (fix the row, or pass --on-error skip to leave such rows out)") from None
                        rejects.append({"id": row.get("id"), "index": index, "stage": f"export:{exporter_cls.name}", "reason": e.reason, "detail": e.detail})
                        continue
                    summary.rows += 1
                    yield result

        summary.files = exporter.write(converted())
        if summary.rows == 0:
            raise SynthError(f"{label}: no rows to export" + (f" ({len(rejects)} skipped; see the reasons with --on-error fail)" if rejects else ""))
        summary.image_files = context.images.count
        summary.embedded_images = exporter.embedded_images
        if context.images.count:
            summary.files.append(f"{context.images.folder}/ ({context.images.count} files)")

    summary.skipped = len(rejects)
    stale = rejects_path(out)
    if rejects:
        write_jsonl(rejects, stale)
        summary.rejects = stale
    elif stale.exists():
        stale.unlink()  # left by an earlier export into the same OUT; it no longer applies
    return summary
