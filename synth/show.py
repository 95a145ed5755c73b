"""Pretty-print dataset rows with rich: role-coloured turns, `[image WxH]` markers, a provenance line.

SFT rows show their conversation, preference rows their prompt and both replies, and any other dataset
(e.g. the demo shapes data) its columns, so `synth show` works on anything the one reader (`synth.data`)
reads, in any layout it knows. Rows are converted by the reader; images are sized from their headers and
checked without decoding, so a truncated or missing image marks its row instead of stopping the command.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.text import Text

from synth.errors import SynthError
from synth.records import load_meta

ROLE_STYLES = {"system": "magenta", "user": "cyan", "assistant": "green"}
MAX_MESSAGE_CHARS = 4000
MAX_VALUE_CHARS = 300


def image_label(value: Any, base_dir: Path | None) -> str:
    """`[image WxH]` for an image in any stored form (size from the header); says why when it cannot be read."""
    from PIL import Image

    from synth.data.images import ImageError, check_image_bytes, image_ref

    if hasattr(value, "size") and hasattr(value, "mode"):  # a PIL image
        return f"[image {value.size[0]}x{value.size[1]}]"
    try:
        ref = image_ref(value, base_dir, check=False)
        check_image_bytes(ref["bytes"], where=ref.get("path") or "(inline bytes)")
        with Image.open(io.BytesIO(ref["bytes"])) as image:
            width, height = image.size
    except ImageError as e:
        return f"[image unreadable: {_image_problem(str(e))}]"
    except Exception as e:  # PIL raises many types for broken files
        return f"[image unreadable: {str(e).splitlines()[0][:120]}]"
    return f"[image {width}x{height}]"


def _image_problem(message: str) -> str:
    """The reason in an ImageError's message, without the ``record ?:`` prefix."""
    return message.split(": ", 1)[1] if message.startswith("record ") and ": " in message else message


def _message_text(message: dict, images: list[str]) -> Text:
    """One turn: role, then its text with image markers where the image parts stand."""
    role = message.get("role") or "?"
    style = ROLE_STYLES.get(role, "yellow")
    text = Text()
    text.append(f"{role}: ", style=f"bold {style}")
    content = message.get("content")
    if isinstance(content, str) or content is None:
        text.append(_clip(content or "", MAX_MESSAGE_CHARS))
        return text
    for part in content:
        if part.get("type") == "image":
            text.append(images.pop(0) if images else "[image missing]", style="bold yellow")
            text.append(" ")
        else:
            text.append(_clip(part.get("text") or "", MAX_MESSAGE_CHARS))
    return text


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"… (+{len(text) - limit} chars)"


def _meta_line(meta: dict) -> Text:
    fields = []
    for key in sorted(meta):
        value = meta[key]
        if value in (None, "", {}, []):
            continue
        if isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False, sort_keys=True)
        fields.append(f"{key}={value}")
    return Text("meta: " + (" ".join(fields) or "-"), style="dim")


def render_row(row: dict, kind: str, base_dir: Path | None = None, title: str = "") -> RenderableType:
    """One record (as the reader gives it) as a rich panel; `kind` is ``sft``, ``preference`` or ``raw``."""
    images = [image_label(v, base_dir) for v in (row.get("images") or [])]
    lines: list[RenderableType] = []
    if kind == "sft":
        lines += [_message_text(m, images) for m in row["messages"]]
    elif kind == "preference":  # chosen | rejected side by side, the words that differ highlighted
        from synth.prefs.show import render_pair

        return render_pair(row, title, images)
    else:
        lines += _plain_columns(row, base_dir)
    if kind in ("sft", "preference"):
        if images:  # images the messages did not point at: show them rather than hide a mismatch
            lines.append(Text(f"unplaced images: {' '.join(images)}", style="bold red"))
        lines.append(_meta_line(load_meta(row.get("meta"))))
    return Panel(Group(*lines), title=title, title_align="left", border_style="blue")


def render_bad_row(row: dict, error: str, base_dir: Path | None, title: str = "") -> RenderableType:
    """A row the reader cannot convert: its stored columns, and why, marked in red."""
    lines: list[RenderableType] = [Text(f"cannot read this row: {error}", style="bold red")]
    lines += _plain_columns(row, base_dir)
    return Panel(Group(*lines), title=title, title_align="left", border_style="red")


def _plain_columns(row: dict, base_dir: Path | None) -> list[Text]:
    lines = []
    for key, value in row.items():
        line = Text()
        line.append(f"{key}: ", style="bold cyan")
        line.append(_plain_value(value, base_dir))
        lines.append(line)
    return lines


def _is_image(value: Any) -> bool:
    if hasattr(value, "mode") and hasattr(value, "size"):
        return True
    return isinstance(value, dict) and set(value) == {"bytes", "path"}


def _plain_value(value: Any, base_dir: Path | None) -> str:
    if _is_image(value):
        return image_label(value, base_dir)
    if isinstance(value, list) and value and all(_is_image(v) for v in value):
        return " ".join(image_label(v, base_dir) for v in value)
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False, default=str)
    return _clip(str(value), MAX_VALUE_CHARS)


def select_rows(dataset, n: int = 3, offset: int = 0, row_id: str | None = None) -> Iterable[tuple[int, dict]]:
    """(index, stored row) pairs: the row with `row_id`, or `n` rows from `offset`."""
    if row_id is not None:
        import numpy as np
        import pyarrow.compute as pc

        if "id" not in dataset.column_names:
            raise SynthError("this dataset has no 'id' column; use --offset to pick rows")
        ids = dataset.select_columns(["id"]).with_format("arrow")[0 : len(dataset)]["id"]
        matches = np.flatnonzero(pc.fill_null(pc.equal(pc.cast(ids, "string"), row_id), False).to_numpy(zero_copy_only=False))
        if not len(matches):
            raise SynthError(f"no row with id '{row_id}' (the dataset has {len(dataset)} rows)")
        return [(int(i), dataset[int(i)]) for i in matches]
    if n < 1:
        raise SynthError(f"-n must be at least 1 (got {n})")
    if offset < 0 or offset >= len(dataset):
        raise SynthError(f"--offset {offset} is outside the dataset (it has {len(dataset)} rows)")
    end = min(offset + n, len(dataset))
    return [(i, dataset[i]) for i in range(offset, end)]


KIND_LABELS = {"sft": "SFT", "preference": "preference", "raw": "plain"}
NATIVE_LAYOUTS = ("messages", "preference", "raw")


def show_dataset(
    source: str | os.PathLike,
    console,
    n: int = 3,
    offset: int = 0,
    row_id: str | None = None,
    split: str | None = None,
    config: str | None = None,
    revision: str | None = None,
) -> None:
    """Print a header and the selected rows of the dataset at `source`."""
    from synth.data import open_source
    from synth.data.layouts import to_record

    src = open_source(source, split, config=config, revision=revision, check_images=False)
    label = KIND_LABELS[src.kind] + (f" ({src.layout} layout)" if src.layout not in NATIVE_LAYOUTS else "")
    console.print(
        Text.assemble((str(source), "bold"), f": {src.num_rows} rows, {label} dataset, columns: {', '.join(src.columns)}")
    )
    for index, row in select_rows(src.dataset, n, offset, row_id):
        title = f"#{index}" + (f" · id {row['id']}" if row.get("id") else "")
        try:
            # Images are checked per image by the label (a broken one marks itself, not the whole row).
            record = to_record(row, src.layout, f"#{index}", src.base_dir, check_images=False)
        except SynthError as e:
            console.print(render_bad_row(row, str(e), src.base_dir, title))
            continue
        console.print(render_row(record, src.kind, src.base_dir, title))
