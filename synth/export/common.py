"""What every exporter shares: reading the source, checking rows, images as files or data, atomic output.

The source is read by the one reader (`synth.data.reader`): any layout it knows, images as the encoded
bytes they were stored as, relative image paths resolved against the dataset's own folder (never the
working directory), truncated or corrupt images caught. A DatasetDict exports every split, one file per
split (``NAME_SPLIT.EXT``); `--split` picks one (``NAME.EXT``).

An exporter converts one prepared record (a `Sample` or `PreferencePair` whose images are `ImageData`)
into one output row, or raises `RowError` when the row cannot be expressed in its format. `run_export`
does the rest: prepare rows, count, skip or fail (naming the row), and write everything into an
`OutputFolder` (renamed into place only when all went well; ``rejects.jsonl`` inside it).
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
    content_id,
    messages_from_arrow,
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
# OpenAI fine-tuning accepts these formats, in these colour modes.
OPENAI_FORMATS = ("PNG", "JPEG", "WEBP")
OPENAI_MODES = ("RGB", "RGBA")

OnError = Literal["fail", "skip"]


class RowError(Exception):
    """A row that the target format cannot hold. `reason` is a short stable key for the rejects file."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageData:
    """Encoded image bytes as found in the source, with their format, colour mode and size."""

    data: bytes
    format: str
    mode: str
    width: int
    height: int

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def extension(self) -> str:
        return _FORMATS.get(self.format, ("png", ""))[0]

    def data_url(self) -> str:
        return f"data:{_FORMATS[self.format][1]};base64,{base64.b64encode(self.data).decode('ascii')}"

    @property
    def openai_ready(self) -> bool:
        return self.format in OPENAI_FORMATS and self.mode in OPENAI_MODES

    def for_openai(self) -> ImageData:
        """This image as OpenAI accepts it: PNG, JPEG or WEBP in RGB or RGBA. Grayscale, palette, CMYK, LA
        and other modes are converted to RGB (RGBA stays RGBA); other formats are re-encoded as PNG."""
        if self.openai_ready:
            return self
        from synth.data.images import decode_image

        image = decode_image({"bytes": self.data, "path": None}, mode=None)
        image = image.convert("RGBA" if image.mode == "RGBA" else "RGB")
        fmt = self.format if self.format in OPENAI_FORMATS else "PNG"
        buf = io.BytesIO()
        image.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        return ImageData(buf.getvalue(), fmt, image.mode, image.width, image.height)


def image_data(ref: dict, record_id: str) -> ImageData:
    """`ImageData` for an image ref the reader produced (bytes already checked whole). The header gives the
    format, mode and size; a format outside the known ones is stored as PNG (its pixels kept)."""
    from PIL import Image

    from synth.data.images import ImageError, decode_image

    data = ref["bytes"]
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, mode, (width, height) = image.format, image.mode, image.size
    except Exception as e:  # PIL raises many types for broken files
        where = ref.get("path") or "(inline bytes)"
        raise RowError("bad_image", f"record {record_id}: unreadable or corrupt image {where}: {str(e).splitlines()[0][:200]}") from None
    if fmt not in _FORMATS:  # an exotic format: keep the pixels, store them as PNG
        try:
            image = decode_image(ref, record_id=record_id, mode=None)
        except ImageError as e:
            raise RowError("bad_image", str(e)) from None
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return ImageData(buf.getvalue(), "PNG", image.mode, image.width, image.height)
    return ImageData(bytes(data), fmt, mode, width, height)


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


def check_no_image_token(messages: list[Message], trainer: str) -> None:
    """A literal ``<image>`` in the text would be read as an image placeholder by the trainer's processor."""
    for i, message in enumerate(messages):
        if IMAGE_TOKEN in flat_text(message, ""):
            raise RowError(
                "image_token_literal",
                f"message {i} ({message.role}) contains a literal '{IMAGE_TOKEN}' in its text, which {trainer} would "
                "read as an image placeholder; remove or rewrite it",
            )


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
    options: dict[str, Any] = field(default_factory=dict)  # format options (webdataset: shard_records, shard_mb)
    images: ImageStore = field(init=False)

    def __post_init__(self) -> None:
        self.images = ImageStore(self.root)


Record = Sample | PreferencePair


class Exporter:
    """One output format. Subclasses convert records (`convert`), write one file of rows per split
    (`write`), and may add files that describe them all (`finish`, e.g. LLaMA-Factory's dataset_info.json)."""

    name: ClassVar[str]
    supports_preference: ClassVar[bool] = True
    #: formats of image-text pairs (webdataset) convert the reader's records themselves (`convert_record`),
    #: raw image-caption rows included
    takes_records: ClassVar[bool] = False

    def __init__(self, context: ExportContext):
        self.context = context
        self.embedded_images = 0  # images written inline (Parquet bytes, data URLs), not as files
        self.converted_images = 0  # images re-encoded to fit the format (e.g. grayscale -> RGB for OpenAI)

    def convert(self, record: Record) -> Any:
        raise NotImplementedError

    def convert_record(self, record: dict, kind: str) -> Any:
        raise NotImplementedError

    def write(self, rows: Iterator[Any], stem: str) -> str:
        """Write the converted rows of one split to a file named after `stem`; return its name (relative to
        the output folder)."""
        raise NotImplementedError

    def finish(self, written: dict[str | None, str]) -> list[str]:
        """Files that describe the data files (split name -> file name); the names of the files written."""
        return []


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
    converted_images: int = 0
    files: list[str] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)  # split name -> rows exported (DatasetDict sources)
    rejects: Path | None = None


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "data"


def prepare(record: dict, kind: str) -> Record:
    """A reader record as a `Sample` / `PreferencePair` with `ImageData` images; problems raise `RowError`."""
    from pydantic import ValidationError

    turns = record["prompt"] + record["chosen"] + record["rejected"] if kind == "preference" else record["messages"]
    record_id = record.get("id") or content_id(turns, record.get("images") or [])
    images = [image_data(ref, record_id) for ref in record.get("images") or []]
    try:
        if kind == "preference":
            prepared: Record = PreferencePair(
                id=record_id,
                prompt=messages_from_arrow(record["prompt"]),
                chosen=messages_from_arrow(record["chosen"]),
                rejected=messages_from_arrow(record["rejected"]),
                images=images,
                meta=record.get("meta") or {},
            )
        else:
            prepared = Sample(id=record_id, messages=messages_from_arrow(record["messages"]), images=images, meta=record.get("meta") or {})
    except ValidationError as e:
        item = e.errors()[0]
        where = ".".join(str(x) for x in item.get("loc", ()))
        raise RowError("bad_row", f"{where}: {item.get('msg')}") from None
    except (KeyError, TypeError) as e:
        raise RowError("bad_row", f"malformed row: {e}") from None
    messages = prepared.prompt + prepared.chosen + prepared.rejected if kind == "preference" else prepared.messages
    parts = image_parts(messages)
    if parts != len(prepared.images):
        raise RowError("image_count", f"{parts} image part(s) in the messages but {len(prepared.images)} image(s) in 'images'")
    return prepared


def _row_label(row_number: int, row_id: Any) -> str:
    return f"row {row_number} (id {row_id})" if row_id else f"row {row_number}"


def _open(source, split: str | None, config: str | None, revision: str | None):
    """`{split name or None: Source}` for a path / Hub id, or for a `datasets` Dataset / DatasetDict."""
    from synth.data.reader import Source, detect_layout, open_splits, without_image_decoding

    if isinstance(source, (str, os.PathLike)):
        return str(source), open_splits(source, split, config=config, revision=revision)
    from datasets import DatasetDict

    datasets = dict(source) if isinstance(source, DatasetDict) else {None: source}
    if split is not None:
        if split not in datasets:
            raise SynthError(f"dataset: no split '{split}' (splits: {', '.join(map(str, datasets))})")
        datasets = {None: datasets[split]}
    out = {}
    for name, dataset in datasets.items():
        dataset = without_image_decoding(dataset)
        out[name] = Source("dataset" if name is None else f"dataset (split {name})", dataset, None,
                           detect_layout(set(dataset.column_names)), list(dataset.column_names))
    return "dataset", out


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
    config: str | None = None,
    revision: str | None = None,
    show_progress: bool = True,
    options: dict[str, Any] | None = None,
) -> ExportSummary:
    """Export `source` (a path / Hub id, or a `datasets` Dataset / DatasetDict) to the folder `out`;
    `options`: the format's own (webdataset: ``shard_records``, ``shard_mb``)."""
    from synth.data import REJECTS, OutputFolder, check_output
    from synth.data.layouts import to_record
    from synth.progress import progress

    if on_error not in ("fail", "skip"):
        raise SynthError(f"--on-error must be 'fail' or 'skip' (got '{on_error}')")
    out = check_output(out, overwrite, inputs=[source])
    label, splits = _open(source, split, config, revision)
    first = next(iter(splits.values()))
    kind = first.kind
    if kind == "raw" and not exporter_cls.takes_records:
        raise SynthError(
            f"{label}: not an SFT dataset ('messages', or a peer chat layout) or a preference dataset ('prompt', "
            f"'chosen', 'rejected'); its columns are {', '.join(first.columns)}. Turn it into one first (e.g. synth adapt)"
        )
    if kind == "preference" and not exporter_cls.supports_preference:
        raise SynthError(f"{label}: the {exporter_cls.name} format holds SFT data only; export preference data with --format trl, llamafactory or openai")
    summary = ExportSummary(format=exporter_cls.name, out=out, kind=kind)
    stage = f"export:{exporter_cls.name}"

    with OutputFolder(out, overwrite) as folder:
        context = ExportContext(folder.path, safe_name(name or out.name), kind, any(s.multimodal for s in splits.values()), jsonl,
                                dict(options or {}))
        exporter = exporter_cls(context)

        def converted(src, split_name: str | None) -> Iterator[Any]:
            where_split = "" if split_name is None else f" (split {split_name})"
            with progress() as bar:
                task = bar.add_task(f"exporting{where_split} ({exporter_cls.name})", total=src.num_rows, tokens="", visible=show_progress)
                number = 0
                for rows in src.rows():
                    for row in rows:
                        number += 1
                        bar.advance(task)
                        row_id = row.get("id") or None
                        where = _row_label(number, row_id)
                        try:
                            # the reader's conversion: layout, images resolved inside the folder and checked
                            record = to_record(row, src.layout, f"{label}{where_split}: {where}", src.base_dir, src.check_images)
                            if exporter_cls.takes_records:
                                result = exporter.convert_record(record, kind)
                            else:
                                result = exporter.convert(prepare(record, kind))
                        except (RowError, SynthError) as e:
                            reason = getattr(e, "reason", "bad_record")
                            detail = e.detail if isinstance(e, RowError) else str(e)
                            if on_error == "fail":
                                if isinstance(e, RowError):
                                    detail = f"{label}{where_split}: {where}: {detail}"
                                elif "row " not in detail:
                                    detail = f"{label}{where_split}: {where}: {detail}"
                                raise SynthError(f"{detail} (fix the row, or pass --on-error skip to leave such rows out)") from None
                            extra = {"row": number} if split_name is None else {"row": number, "split": split_name}
                            folder.rejects.write(row_id, stage, reason, detail, **extra)
                            continue
                        summary.rows += 1
                        yield result

        written: dict[str | None, str] = {}
        for split_name, src in splits.items():
            before = summary.rows
            stem = context.name if split_name is None else f"{context.name}_{safe_name(split_name)}"
            if src.kind != kind:
                raise SynthError(f"{src.name}: a {src.kind} split beside {kind} ones; export the splits one by one (--split)")
            written[split_name] = exporter.write(converted(src, split_name), stem)
            if split_name is not None:
                summary.splits[split_name] = summary.rows - before
        summary.files = list(written.values()) + exporter.finish(written)
        summary.skipped = folder.rejects.count
        if summary.rows == 0:
            raise SynthError(f"{label}: no rows to export" + (f" ({summary.skipped} skipped; see the reasons with --on-error fail)" if summary.skipped else ""))
        summary.image_files = context.images.count
        summary.embedded_images = exporter.embedded_images
        summary.converted_images = exporter.converted_images
        if context.images.count:
            summary.files.append(f"{context.images.folder}/ ({context.images.count} files)")

    if summary.skipped:
        summary.rejects = out / REJECTS
    return summary
