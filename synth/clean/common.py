"""Text views of a record shared by the cleaning filters.

A record is a row dict in the layout of `synth.records`: SFT (``messages``), preference
(``prompt``/``chosen``/``rejected``) or, as a fallback for raw web data, plain ``text``/``caption`` columns.
"""

from __future__ import annotations

from typing import Any

IMAGE_TOKEN = "<image>"
_FALLBACK_TEXT_FIELDS = ("text", "caption", "question", "instruction", "prompt", "answer", "output")


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join((p.get("text") or "") for p in content if p.get("type") == "text")


def _messages(value: Any) -> list[dict]:
    return list(value) if isinstance(value, (list, tuple)) else []


def turns(record: dict) -> list[tuple[str, str]]:
    """All (role, text) turns of a record in order: SFT messages, or prompt + chosen + rejected."""
    if "messages" in record and record["messages"] is not None:
        return [(m["role"], _content_text(m.get("content"))) for m in _messages(record["messages"])]
    if "prompt" in record and isinstance(record["prompt"], (list, tuple)):
        out = []
        for key in ("prompt", "chosen", "rejected"):
            out += [(m["role"], _content_text(m.get("content"))) for m in _messages(record.get(key))]
        return out
    # Raw data without chat structure: treat known text columns as one user turn.
    texts = [str(record[k]) for k in _FALLBACK_TEXT_FIELDS if isinstance(record.get(k), str)]
    return [("user", "\n".join(texts))] if texts else []


def instruction_text(record: dict) -> str:
    """Text of the user (and system) turns; for preference pairs, the prompt."""
    if "prompt" in record and isinstance(record["prompt"], (list, tuple)) and "messages" not in record:
        return "\n".join(_content_text(m.get("content")) for m in record["prompt"] if m["role"] != "assistant")
    return "\n".join(text for role, text in turns(record) if role != "assistant")


def answer_texts(record: dict) -> list[str]:
    """The answers to judge: the assistant text of an SFT sample, or chosen and rejected of a pair."""
    if "messages" in record and record["messages"] is not None:
        answer = "\n".join(_content_text(m.get("content")) for m in record["messages"] if m["role"] == "assistant")
        return [answer]
    if "prompt" in record and isinstance(record["prompt"], (list, tuple)):
        return [
            "\n".join(_content_text(m.get("content")) for m in _messages(record.get(key)) if m["role"] == "assistant")
            for key in ("chosen", "rejected")
        ]
    for key in ("answer", "output", "caption"):
        if isinstance(record.get(key), str):
            return [record[key]]
    return []


def record_text(record: dict) -> str:
    """The whole conversation as one text (what dedup and decontamination compare)."""
    return "\n".join(text for _, text in turns(record))


def image_part_count(record: dict) -> int:
    count = 0
    for key in ("messages", "prompt", "chosen", "rejected"):
        for m in _messages(record.get(key)):
            content = m.get("content")
            if isinstance(content, (list, tuple)):
                count += sum(1 for p in content if p.get("type") == "image")
    return count


def record_images(record: dict) -> list:
    images = record.get("images")
    if images is None:
        single = record.get("image")
        return [single] if single is not None else []
    return list(images)
