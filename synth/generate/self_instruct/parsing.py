"""Parsing Self-Instruct replies: numbered task lists, yes/no classification answers, and instances.

Replies of real models are messy (numbering styles, preambles, closing remarks, a last item cut off at
the token limit, the model starting to answer a task); these parsers are tested on such replies.
"""

from __future__ import annotations

import re

# "1. x", "1) x", "(1) x", "1: x", "1 - x", "#1. x", "Task 1: x", "**1.** x", "- 1. x"
_ITEM_RE = re.compile(
    r"^\s*(?:[-*>#]+\s*)?(?:\*\*)?(?:(?:task|instruction)\s*)?[#(]?(\d{1,3})\s*[.):\-](?:\*\*)?(?:\s+|$)(.*)$",
    re.IGNORECASE,
)
# Lines where the model starts answering or giving an example instead of listing tasks.
_FIELD_RE = re.compile(r"^\s*(?:input|output|example|answer|solution|response|label)\s*:", re.IGNORECASE)


def _clean_item(lines: list[str]) -> str:
    text = " ".join(part.strip() for part in lines if part.strip())
    text = text.replace("**", "").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return text


def parse_numbered_list(
    text: str, open_item: bool = False, truncated: bool = False, require_numbered: bool = False
) -> tuple[list[str], int]:
    """Items of a numbered list in an LLM reply; returns ``(items, dropped_truncated)``.

    `open_item`: the prompt ended with the next number, so text before the first numbered line is the
    first item (a continuation). Multi-line items are joined; text after a blank line that is not a new
    item (closing remarks) and answer-like lines ("Input:", "Output:") are ignored; a preamble that ends
    with ":" is not an item. With `truncated` (the reply hit the token limit) the last item is dropped.
    With `require_numbered`, a reply without any numbered line has no items (a chat model's refusal or
    small talk is not an instruction).
    """
    items: list[str] = []
    current: list[str] | None = [] if open_item else None  # lines of the item being read
    seen_numbered = False  # False while `current` is still the open (unnumbered) item
    blank_after = False  # a blank line followed the current item
    closed = False  # the current item has ended; skip lines until the next numbered one

    def flush() -> None:
        if current is None:
            return
        item = _clean_item(current)
        if item and not (not seen_numbered and item.endswith(":")):  # "Here are some tasks:"
            items.append(item)

    for line in text.splitlines():
        match = _ITEM_RE.match(line)
        if match:
            flush()
            current, seen_numbered, blank_after, closed = [match.group(2)], True, False, False
            continue
        if not line.strip():
            if current:
                blank_after = True
            continue
        if current is None or closed:
            continue
        if blank_after or _FIELD_RE.match(line):
            closed = True  # junk after the item, or the model began to answer it: the item ends here
            continue
        current.append(line)
    flush()
    if require_numbered and not seen_numbered:
        items = []
    dropped = 0
    if truncated and items:
        items.pop()
        dropped = 1
    return items, dropped


_YES_NO_RE = re.compile(r"^[\s\W]*(yes|no)\b", re.IGNORECASE)


def parse_yes_no(text: str) -> bool | None:
    """True for a reply starting with "yes", False for "no", None otherwise."""
    match = _YES_NO_RE.match(text or "")
    if not match:
        return None
    return match.group(1).lower() == "yes"


_INSTANCE_LABEL_RE = re.compile(r"^\s*(task|input|output|label)\s*:\s?(.*)$", re.IGNORECASE)
_NONE_INPUTS = {"(none)", "none", "n/a", "(no input)", "no input", "-", ""}


def parse_instances(text: str, output_first: bool) -> list[dict[str, str]]:
    """(input, output) pairs from an instance-generation reply.

    The prompt ends with the open "Input:" (input-first) or "Label:" (output-first) field, so a reply that
    does not start with a field label continues that field. Parsing stops at the next "Task:".
    """
    opening = "label" if output_first else "input"
    fields: list[tuple[str, list[str]]] = []
    lines = text.splitlines()
    if not lines or not _INSTANCE_LABEL_RE.match(lines[0]):
        fields.append((opening, [lines[0].strip()] if lines else []))
        lines = lines[1:]
    for line in lines:
        match = _INSTANCE_LABEL_RE.match(line)
        if match:
            name = match.group(1).lower()
            if name == "task":
                break
            fields.append((name, [match.group(2).strip()]))
        elif fields:
            fields[-1][1].append(line.rstrip())
    first_name, second_name = ("label", "input") if output_first else ("input", "output")
    instances: list[dict[str, str]] = []
    pending: str | None = None
    for name, value_lines in fields:
        value = "\n".join(value_lines).strip()
        if name == first_name:
            pending = value
        elif name == second_name and pending is not None:
            first_value, second_value = pending, value
            pending = None
            if output_first:
                output, input_ = first_value, second_value
            else:
                input_, output = first_value, second_value
            if input_.strip().lower() in _NONE_INPUTS:
                input_ = ""
            instances.append({"input": input_, "output": output})
    return instances
