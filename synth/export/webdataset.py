"""WebDataset: tar shards of ``{key}.jpg`` + ``{key}.txt`` + ``{key}.json``, as img2dataset writes them and
open_clip (``--train-data 'OUT/{00000..00009}.tar'``) or ``webdataset.WebDataset`` read them.

One sample per image-text pair: image-caption rows (the ``raw`` layout with an ``image`` and a ``caption``
column, as synth reads WebDataset shards and LAION-style Parquet) or SFT records with one image (the text
is the last assistant answer). The image keeps its bytes and extension (a JPEG stays the same JPEG); the
key is the record id (dots become ``_``: a key ends at its first dot). ``{key}.json`` is the sample's
JSON member exactly as it came; when a stage added meta (CapFilt's scores) it is that JSON object with
a ``"synth"`` entry holding the meta, and a record without a JSON member gets ``{"synth": meta}``.

Shards: ``00000.tar``, ``00001.tar`` ... of at most ``shard_records`` samples or ``shard_mb`` MB each
(every split of a DatasetDict in its own folder).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from synth.data.webdataset import WebDatasetWriter, member_key
from synth.errors import SynthError
from synth.export.common import Exporter, RowError, image_data

IMAGE_COLUMNS = ("image", "jpg", "jpeg", "png", "webp")
CAPTION_COLUMNS = ("caption", "txt", "text")
KNOWN_EXTENSIONS = {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tiff"}


def _is_image(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"bytes", "path"} and bool(value.get("bytes"))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text") or "" for p in content or [] if p.get("type") == "text")


class WebDatasetExporter(Exporter):
    name = "webdataset"
    supports_preference = False
    takes_records: ClassVar[bool] = True  # reader records as they are (raw image-caption rows included)

    def __init__(self, context):
        super().__init__(context)
        if context.jsonl:
            raise SynthError("the webdataset format writes tar shards; drop --jsonl")

    def convert_record(self, record: dict, kind: str) -> tuple[str, dict[str, bytes]]:
        record_id = str(record.get("id") or "")
        if not record_id:
            raise RowError("no_id", "the record has no id to key its sample by")
        if kind == "raw":
            image = next((record[c] for c in IMAGE_COLUMNS if _is_image(record.get(c))), None)
            image = image or next((v for v in record.values() if _is_image(v)), None)
            caption = next((record[c] for c in CAPTION_COLUMNS if isinstance(record.get(c), str)), None)
        else:
            images = record.get("images") or []
            if len(images) != 1:
                raise RowError("image_count", f"{len(images)} images; a WebDataset sample holds one image and its text")
            image = images[0]
            answers = [m for m in record["messages"] if m["role"] == "assistant"]
            caption = _text_of(answers[-1]["content"]) if answers else None
        if image is None:
            raise RowError("no_image", "no image column (image, jpg, png) with bytes")
        if caption is None:
            raise RowError("no_caption", "no caption (a caption / txt column, or an assistant answer)")
        data = image_data(image, record_id)
        ext = Path(image.get("path") or "").suffix.lstrip(".").lower()
        if ext not in KNOWN_EXTENSIONS or data.data != image["bytes"]:
            ext = data.extension
        members = {ext: data.data, "txt": caption.encode("utf-8")}
        stored = record.get("json") if kind == "raw" else None
        meta = record.get("meta") or {}
        if isinstance(meta, str):
            meta = json.loads(meta) if meta.strip() else {}
        if isinstance(stored, str) and not meta:
            members["json"] = stored.encode("utf-8")  # as it came, byte for byte
        elif meta or isinstance(stored, str):
            base = json.loads(stored) if isinstance(stored, str) else {}
            base = base if isinstance(base, dict) else {"json": base}
            members["json"] = json.dumps({**base, "synth": meta}, ensure_ascii=False).encode("utf-8")
        return member_key(record_id), members

    def write(self, rows: Iterator[tuple[str, dict[str, bytes]]], stem: str) -> str:
        folder = self.context.root
        if stem != self.context.name:  # one split of several: its own folder
            folder = folder / stem[len(self.context.name) + 1:]
            folder.mkdir(parents=True, exist_ok=True)
        limit_mb = self.context.options.get("shard_mb")
        with WebDatasetWriter(folder, max_samples=self.context.options.get("shard_records") or 10_000,
                              max_bytes=int(limit_mb * (1 << 20)) if limit_mb else None) as writer:
            for key, members in rows:
                writer.add(key, members)
                self.embedded_images += 1
        prefix = "" if folder == self.context.root else f"{folder.name}/"
        if not writer.shards:
            return f"{prefix}(no shards)"
        first, last = writer.shards[0], writer.shards[-1]
        return f"{prefix}{first}" if first == last else f"{prefix}{first}..{last} ({len(writer.shards)} shards)"
