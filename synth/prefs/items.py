"""Prompts to build preference pairs for, taken from input records, and the pair records they become.

Input records are SFT records (``messages``, ``images``, ``id``, ``meta``): the prompt is the conversation
up to its last user turn and the reference answer is the final assistant turn, when there is one. Raw
rows with structured ground truth (the demo shapes data: ``image``, ``qa`` with question / answer / kind,
``detailed_caption``, ``objects``) give one prompt per QA item plus one for the caption, so strategies run
on them without `synth adapt`.

Output records are TRL conversational preference records: ``prompt`` (messages), ``chosen`` and
``rejected`` (one assistant message each), ``images``, ``id`` (a content hash) and ``meta``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from synth.pipeline import Rejected
from synth.prefs.scene import Scene, scene_from_row
from synth.records import content_id

QA_COLUMNS = ("qa", "qas", "questions")
IMAGE_COLUMNS = ("image", "images", "img", "picture")
CAPTION_COLUMNS = ("detailed_caption", "caption", "description")


@dataclass
class PromptItem:
    """One prompt: the messages before the answer, its images, and what is known about it."""

    id: str
    prompt: list[dict]
    images: list[dict] = field(default_factory=list)
    reference: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    scene: Scene | None = None
    #: the kind of a structured answer when the source says (demo QA: count, color, spatial, exists)
    answer_kind: str | None = None

    @property
    def stub(self) -> dict:
        """What rejects/failures lines name: the prompt's id."""
        return {"id": self.id}

    @property
    def turns(self) -> list[dict]:
        """The prompt as ``{role, text}`` turns (images as ``[image]``), for prompt templates."""
        return [{"role": m["role"], "text": message_text(m, image_marker="[image]")} for m in self.prompt]

    @property
    def question(self) -> str:
        """The text of the last user turn."""
        return message_text(self.prompt[-1]) if self.prompt else ""


def message_text(message: dict, image_marker: str = "") -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    out = []
    for part in content:
        if part.get("type") == "image":
            if image_marker:
                out.append(image_marker + " ")
        else:
            out.append(part.get("text") or "")
    return "".join(out).strip() if image_marker else "".join(out)


def same_text(a: str, b: str) -> bool:
    """Equal up to case, Unicode form, whitespace and trailing punctuation: a pair of these teaches nothing."""
    return normalise(a) == normalise(b)


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "").casefold()
    return re.sub(r"\s+", " ", text).strip().rstrip(".!?").strip()


# ---------------------------------------------------------------- records → prompt items


def items_from_record(record: dict, scenes=None) -> list[PromptItem] | Rejected:
    """The prompt(s) of one input record, or why it has none."""
    if "messages" in record:
        return _sft_item(record, scenes)
    if any(record.get(c) for c in QA_COLUMNS + CAPTION_COLUMNS):
        return _raw_items(record)
    if {"prompt", "chosen", "rejected"} <= set(record):
        return Rejected("not_sft", "the record is already a preference pair")
    return Rejected("no_prompt", "the record has no 'messages' and no QA or caption columns to build prompts from")


def usable_items(record: dict, scenes=None) -> list[PromptItem]:
    """The prompts of a record, none when it has none (first passes that only learn from the data)."""
    items = items_from_record(record, scenes)
    return [] if isinstance(items, Rejected) else items


def _sft_item(record: dict, scenes) -> list[PromptItem] | Rejected:
    messages = [dict(m) for m in record.get("messages") or []]
    reference = None
    if messages and messages[-1].get("role") == "assistant":
        reference = message_text(messages[-1]).strip() or None
        messages = messages[:-1]
    if not messages or messages[-1].get("role") != "user":
        return Rejected("no_prompt", "the conversation has no user turn to answer")
    last = messages[-1]
    if not message_text(last).strip() and not _image_parts(last):
        return Rejected("no_prompt", "the last user turn is empty")
    meta = dict(record.get("meta") or {})
    images = list(record.get("images") or [])
    scene = scene_from_row(record) or (scenes.lookup(record) if scenes is not None else None)
    return [PromptItem(
        id=str(record.get("id") or content_id(messages, images)),
        prompt=messages,
        images=images,
        reference=reference,
        meta=meta,
        scene=scene,
    )]


def _image_parts(message: dict) -> int:
    content = message.get("content")
    return 0 if isinstance(content, str) or not content else sum(1 for p in content if p.get("type") == "image")


def _column(record: dict, names: tuple[str, ...]) -> Any:
    return next((record[c] for c in names if record.get(c) is not None), None)


def _raw_items(record: dict) -> list[PromptItem] | Rejected:
    from synth.templating import render_file

    image = _column(record, IMAGE_COLUMNS)
    images = list(image) if isinstance(image, (list, tuple)) else ([image] if image is not None else [])
    images = images[:1]
    row_id = str(record.get("id") or "row")
    scene = scene_from_row(record)
    base_meta = {"source_id": row_id}
    items = []

    def user(text: str) -> list[dict]:
        if images:
            return [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": text}]}]
        return [{"role": "user", "content": text}]

    qa = _column(record, QA_COLUMNS)
    if isinstance(qa, dict) and qa and all(isinstance(v, list) for v in qa.values()):
        qa = [dict(zip(qa, row, strict=True)) for row in zip(*qa.values(), strict=True)]  # Arrow's list-of-structs layout
    for k, entry in enumerate(qa if isinstance(qa, list) else []):
        if not isinstance(entry, dict):
            continue
        question = str(entry.get("question") or "").strip()
        answer = str(entry.get("answer") or "").strip()
        if not question:
            continue
        items.append(PromptItem(
            id=f"{row_id}:qa{k}",
            prompt=user(question),
            images=images,
            reference=answer or None,
            meta={**base_meta, "item": k, **({"qa_kind": entry["kind"]} if entry.get("kind") else {})},
            scene=scene,
            answer_kind=entry.get("kind") or None,
        ))
    caption = _column(record, CAPTION_COLUMNS)
    if isinstance(caption, str) and caption.strip():
        items.append(PromptItem(
            id=f"{row_id}:caption",
            prompt=user(render_file("prompts/prefs/describe.jinja").strip()),
            images=images,
            reference=caption.strip(),
            meta={**base_meta, "item": "caption"},
            scene=scene,
        ))
    if not items:
        return Rejected("no_prompt", "the row's QA and caption columns are empty")
    return items


# ---------------------------------------------------------------- pair records


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def make_pair(item: PromptItem, chosen: str, rejected: str, meta: dict[str, Any]) -> dict | Rejected:
    """The preference record for `item`; Rejected("identical") when the two replies say the same."""
    chosen, rejected = chosen.strip(), rejected.strip()
    if same_text(chosen, rejected):
        return Rejected("identical", f"chosen and rejected are the same text: {chosen[:120]!r}")
    prompt = item.prompt
    conversation = prompt + assistant(chosen) + assistant(rejected)
    from synth.records import image_hash

    return {
        "prompt": prompt,
        "chosen": assistant(chosen),
        "rejected": assistant(rejected),
        "images": list(item.images),
        "id": content_id(conversation, image_digests=[image_hash(i) for i in item.images]),
        "meta": {**item.meta, **meta, "prompt_id": item.id},
    }
