"""A preference pair for the terminal: the prompt, then chosen and rejected side by side, with the words
that differ highlighted (what a perturbation or an injected hallucination changed) and a line of the
pair's ratings and provenance. `synth show` calls `render_pair` for preference rows.
"""

from __future__ import annotations

import difflib
import json
import re

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from synth.records import load_meta

_TOKENS = re.compile(r"\s+|[^\s]+")
# The meta keys worth a glance, in this order; the rest of meta is provenance.
_SUMMARY_KEYS = ("strategy", "ratings", "perturb", "injected", "model", "models", "prompt_id")


def _text(message: dict, images: list[str]) -> str:
    content = message.get("content")
    if isinstance(content, str) or content is None:
        return content or ""
    out = []
    for part in content:
        if part.get("type") == "image":
            out.append((images.pop(0) if images else "[image missing]") + " ")
        else:
            out.append(part.get("text") or "")
    return "".join(out)


def diff_texts(chosen: str, rejected: str) -> tuple[Text, Text]:
    """Both replies with the words only one of them has in bold colour."""
    a, b = _TOKENS.findall(chosen), _TOKENS.findall(rejected)
    left, right = Text(), Text()
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            left.append("".join(a[i1:i2]))
            right.append("".join(b[j1:j2]))
        else:
            left.append("".join(a[i1:i2]), style="bold green underline")
            right.append("".join(b[j1:j2]), style="bold red underline")
    return left, right


def _summary(meta: dict) -> Text:
    fields = []
    for key in _SUMMARY_KEYS:
        value = meta.get(key)
        if value in (None, "", {}, []):
            continue
        if isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False, sort_keys=True)
        fields.append(f"{key}={value}")
    return Text(" ".join(fields) or "-", style="dim")


def render_pair(row: dict, title: str = "", images: list[str] | None = None) -> RenderableType:
    """One preference row as a panel: prompt turns, then chosen | rejected in two columns. `images` are
    the labels the caller made for the row's images (`synth.show.image_label`); default ``[image]``."""
    if images is None:
        images = ["[image]"] * len(row.get("images") or [])
    lines: list[RenderableType] = []
    for message in row["prompt"]:
        line = Text()
        line.append(f"{message.get('role', '?')}: ", style="bold cyan" if message.get("role") == "user" else "bold magenta")
        line.append(_text(message, images))
        lines.append(line)
    chosen = "\n".join(_text(m, images) for m in row["chosen"])
    rejected = "\n".join(_text(m, images) for m in row["rejected"])
    left, right = diff_texts(chosen, rejected)
    table = Table(expand=True, show_lines=False, padding=(0, 1))
    table.add_column("chosen", style="", header_style="bold green", ratio=1)
    table.add_column("rejected", style="", header_style="bold red", ratio=1)
    table.add_row(left, right)
    lines.append(table)
    if images:
        lines.append(Text(f"unplaced images: {' '.join(images)}", style="bold red"))
    lines.append(_summary(load_meta(row.get("meta"))))
    return Panel(Group(*lines), title=title, title_align="left", border_style="blue")
