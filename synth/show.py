"""Pretty-print dataset rows with rich: role-coloured turns, `[image WxH]` markers, a provenance line.

SFT rows show their conversation, preference rows their prompt and both replies, and any other dataset
(e.g. the demo shapes data) its columns, so `synth show` works on anything `read_dataset` reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.text import Text

from synth.errors import SynthError
from synth.records import dataset_kind, load_meta

ROLE_STYLES = {"system": "magenta", "user": "cyan", "assistant": "green"}
MAX_MESSAGE_CHARS = 4000
MAX_VALUE_CHARS = 300


def image_label(value: Any, base_dir: Path | None) -> str:
    """`[image WxH]` for an image in any stored form; says so when it cannot be read."""
    from synth.io import open_image

    try:
        size = value.size if hasattr(value, "size") and hasattr(value, "mode") else open_image(value, base_dir).size
    except SynthError:
        return "[image unreadable]"
    return f"[image {size[0]}x{size[1]}]"


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
    """One row as a rich panel."""
    images = [image_label(v, base_dir) for v in (row.get("images") or [])]
    lines: list[RenderableType] = []
    if kind == "sft":
        lines += [_message_text(m, images) for m in row["messages"]]
    elif kind == "preference":
        lines += [_message_text(m, images) for m in row["prompt"]]
        for column, style in (("chosen", "bold green"), ("rejected", "bold red")):
            lines.append(Text(f"── {column} ──", style=style))
            lines += [_message_text(m, images) for m in row[column]]
    else:
        lines += _plain_columns(row, base_dir)
    if kind != "other":
        if images:  # images the messages did not point at: show them rather than hide a mismatch
            lines.append(Text(f"unplaced images: {' '.join(images)}", style="bold red"))
        lines.append(_meta_line(load_meta(row.get("meta"))))
    return Panel(Group(*lines), title=title, title_align="left", border_style="blue")


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
    """(index, row) pairs: the row with `row_id`, or `n` rows from `offset`."""
    if row_id is not None:
        if "id" not in dataset.column_names:
            raise SynthError("this dataset has no 'id' column; use --offset to pick rows")
        ids = dataset["id"]
        matches = [i for i, value in enumerate(ids) if value == row_id]
        if not matches:
            raise SynthError(f"no row with id '{row_id}' (the dataset has {len(dataset)} rows)")
        return [(i, dataset[i]) for i in matches]
    if n < 1:
        raise SynthError(f"-n must be at least 1 (got {n})")
    if offset < 0 or offset >= len(dataset):
        raise SynthError(f"--offset {offset} is outside the dataset (it has {len(dataset)} rows)")
    end = min(offset + n, len(dataset))
    return [(i, dataset[i]) for i in range(offset, end)]


def show_dataset(source: str | os.PathLike, console, n: int = 3, offset: int = 0, row_id: str | None = None, split: str | None = None) -> None:
    """Print a header and the selected rows of the dataset at `source`."""
    from synth.io import dataset_base_dir, read_dataset

    dataset = read_dataset(source, split)
    kind = dataset_kind(dataset)
    base_dir = dataset_base_dir(source) if Path(str(source)).exists() else None
    label = {"sft": "SFT", "preference": "preference", "other": "plain"}[kind]
    console.print(
        Text.assemble((str(source), "bold"), f": {len(dataset)} rows, {label} dataset, columns: {', '.join(dataset.column_names)}")
    )
    for index, row in select_rows(dataset, n, offset, row_id):
        title = f"#{index}" + (f" · id {row['id']}" if row.get("id") else "")
        console.print(render_row(row, kind, base_dir, title))
