"""The data model: chat messages with text and image parts, SFT samples, preference pairs, provenance.

On disk and in memory a dataset is a `datasets.Dataset` whose columns load straight into TRL:

- SFT: ``messages`` (list of ``{role, content}``), ``images`` (``Sequence(Image())``, one per image
  part, in order; only present when the dataset has images), ``id``, ``meta``.
- Preferences: ``prompt`` (messages), ``chosen`` / ``rejected`` (assistant messages), ``images``, ``id``,
  ``meta``.

Text-only datasets keep ``content`` as a plain string. Image-text datasets use the parts form everywhere
(``[{"type": "text", "text": ...}, {"type": "image", "text": None}]``), because an Arrow column holds one
type. ``meta`` is stored as a JSON string: provenance keys differ between samples and Arrow structs would
force one schema on all of them.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant"]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"] = "text"
    text: str


class ImagePart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["image"] = "image"


Part = Annotated[Union[TextPart, ImagePart], Field(discriminator="type")]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    content: Union[str, list[Part]]

    @property
    def text(self) -> str:
        """All text of the message, image parts left out."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def image_count(self) -> int:
        if isinstance(self.content, str):
            return 0
        return sum(1 for p in self.content if isinstance(p, ImagePart))


def message_text(message: Message | dict) -> str:
    """All text of one message (a `Message` or a row dict; content a string or parts), images left out."""
    if isinstance(message, Message):
        return message.text
    content = message.get("content")
    if isinstance(content, list):
        return "".join((p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type", "text") == "text")
    return "" if content is None else str(content)


def first_turn_text(messages: Iterable[Message | dict] | None, role: str = "user") -> str:
    """Text of the first turn with `role` ("" when there is none), stripped."""
    for message in messages or []:
        if (message.role if isinstance(message, Message) else message.get("role")) == role:
            return message_text(message).strip()
    return ""


class Provenance(BaseModel):
    """Typed view of the common ``meta`` keys; other keys are kept as they are."""

    model_config = ConfigDict(extra="allow")
    source: str | None = None
    template: str | None = None
    variant: int | None = None
    operator: str | None = None
    parent_id: str | None = None
    round: int | None = None
    model: str | None = None
    scores: dict[str, float] = Field(default_factory=dict)


class Sample(BaseModel):
    """One SFT conversation. ``images`` holds PIL images, encoded bytes, paths or ``{"bytes", "path"}``."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    messages: list[Message]
    images: list[Any] = Field(default_factory=list)
    id: str = ""
    meta: dict[str, Any] = Field(default_factory=dict)

    def model_post_init(self, __context: Any) -> None:
        if not self.id:
            self.id = content_id(self.messages, self.images)


class PreferencePair(BaseModel):
    """A prompt with a preferred and a dispreferred assistant reply (DPO)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    images: list[Any] = Field(default_factory=list)
    id: str = ""
    meta: dict[str, Any] = Field(default_factory=dict)

    def model_post_init(self, __context: Any) -> None:
        if not self.id:
            self.id = content_id(self.prompt + self.chosen + self.rejected, self.images)


# ---------------------------------------------------------------- ids


def image_bytes(image: Any) -> bytes:
    """Encoded bytes of an image given in any of the accepted forms (used for hashing and export)."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, dict):
        if image.get("bytes"):
            return image["bytes"]
        if image.get("path"):
            with open(image["path"], "rb") as f:
                return f.read()
        raise ValueError("image entry has neither bytes nor path")
    if isinstance(image, str):
        with open(image, "rb") as f:
            return f.read()
    return encode_pil(image)  # a PIL image: encoded as the writer stores it


def encode_pil(image) -> bytes:
    """Encoded bytes of a PIL image, as the `datasets` Image feature would store them (its own format
    when PIL knows it, else PNG)."""
    fmt = image.format if image.format in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF") else "PNG"
    if fmt == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
        fmt = "PNG"
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def image_hash(image: Any) -> str:
    """Hash of the encoded bytes. A PIL image is hashed by the bytes it is stored as, so a sample's id is
    the same whether its images arrive as PIL objects or as the bytes read back from disk."""
    return hashlib.sha256(image_bytes(image)).hexdigest()


def _plain_messages(messages: Iterable[Message | dict]) -> list[dict]:
    out = []
    for m in messages:
        d = m.model_dump() if isinstance(m, Message) else m
        content = d["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        else:
            content = [
                {"type": "text", "text": p["text"] or ""} if p["type"] == "text" else {"type": "image"}
                for p in content
            ]
        out.append({"role": d["role"], "content": content})
    return out


# The string escaper `json.dumps(..., ensure_ascii=False)` itself uses (the C one when available).
_json_str = json.encoder.encode_basestring


def _canonical_part(part: Any, from_model: bool) -> str | None:
    """One content part as `_plain_messages` + ``json.dumps(sort_keys=True)`` would write it."""
    if from_model:  # a Message's parts are TextPart / ImagePart
        if isinstance(part, ImagePart):
            return '{"type": "image"}'
        text = part.text
    elif not isinstance(part, dict):
        return None
    elif part["type"] != "text":
        return '{"type": "image"}'
    else:
        text = part["text"] or ""
    return '{"text": ' + _json_str(text) + ', "type": "text"}' if isinstance(text, str) else None


def _canonical_messages_json(messages: Iterable[Message | dict]) -> str | None:
    """``json.dumps(_plain_messages(messages), sort_keys=True, ensure_ascii=False)`` without the
    intermediate dicts (ids are computed for every sample, so this is a hot path). Keys are written in
    sorted order by hand: content < role, text < type. None for a shape it does not know; the caller then
    takes the general path, which also raises the same errors for malformed messages."""
    out = []
    for m in messages:
        # dicts first: they are the common case, and pydantic's isinstance check is slow
        from_model = not isinstance(m, dict)
        if not from_model:
            role, content = m["role"], m["content"]
        elif isinstance(m, Message):
            role, content = m.role, m.content
        else:
            return None
        if not isinstance(role, str):
            return None
        if isinstance(content, str):  # plain text: one text part
            text = _json_str(content)
            out.append(f'{{"content": [{{"text": {text}, "type": "text"}}], "role": {_json_str(role)}}}')
            continue
        if not isinstance(content, list):
            return None
        parts = [_canonical_part(p, from_model) for p in content]
        if None in parts:
            return None
        out.append(f'{{"content": [{", ".join(parts)}], "role": {_json_str(role)}}}')
    return f"[{', '.join(out)}]"


def content_id(
    messages: Iterable[Message | dict],
    images: Iterable[Any] = (),
    extra: str = "",
    *,
    image_digests: Iterable[str] | None = None,
) -> str:
    """Stable id: a hash of the conversation text and the image bytes, so reruns and dedup line up.

    `image_digests` replaces `images` with their `image_hash` values, for callers that give one image
    to many samples (hashing the bytes once); the id is the same.
    """
    messages = messages if isinstance(messages, (list, tuple)) else list(messages)
    text = _canonical_messages_json(messages)
    if text is None:
        text = json.dumps(_plain_messages(messages), sort_keys=True, ensure_ascii=False)
    h = hashlib.sha256(text.encode())
    for digest in map(image_hash, images) if image_digests is None else image_digests:
        h.update(digest.encode())
    h.update(extra.encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- Arrow layout


def message_feature(multimodal: bool):
    from datasets import Value

    if multimodal:
        return [{"role": Value("string"), "content": [{"type": Value("string"), "text": Value("string")}]}]
    return [{"role": Value("string"), "content": Value("string")}]


def sft_features(multimodal: bool):
    from datasets import Features, Image, Sequence, Value

    cols: dict[str, Any] = {"id": Value("string"), "messages": message_feature(multimodal)}
    if multimodal:
        cols["images"] = Sequence(Image())
    cols["meta"] = Value("string")
    return Features(cols)


def preference_features(multimodal: bool):
    from datasets import Features, Image, Sequence, Value

    cols: dict[str, Any] = {
        "id": Value("string"),
        "prompt": message_feature(multimodal),
        "chosen": message_feature(multimodal),
        "rejected": message_feature(multimodal),
    }
    if multimodal:
        cols["images"] = Sequence(Image())
    cols["meta"] = Value("string")
    return Features(cols)


def messages_to_arrow(messages: Iterable[Message | dict], multimodal: bool) -> list[dict]:
    """Messages in the column form: parts with ``text=None`` for images when multimodal."""
    out = []
    for m in _plain_messages(messages):
        content = m["content"]  # always parts here
        if multimodal:
            content = [{"type": p["type"], "text": p.get("text")} for p in content]
        else:
            content = "".join(p.get("text") or "" for p in content if p["type"] == "text")
        out.append({"role": m["role"], "content": content})
    return out


def messages_from_arrow(messages: list[dict]) -> list[Message]:
    out = []
    for m in messages:
        content = m["content"]
        if not isinstance(content, str):
            content = [
                TextPart(text=p["text"] or "") if p["type"] == "text" else ImagePart() for p in content
            ]
        out.append(Message(role=m["role"], content=content))
    return out


def dump_meta(meta: dict) -> str:
    return json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str)


def load_meta(value: Any) -> dict:
    if isinstance(value, dict):
        return value
    return json.loads(value) if value else {}


def is_multimodal(samples: Iterable[Sample | PreferencePair]) -> bool:
    return any(s.images for s in samples)


def sample_to_row(sample: Sample, multimodal: bool) -> dict:
    row = {"id": sample.id, "messages": messages_to_arrow(sample.messages, multimodal), "meta": dump_meta(sample.meta)}
    if multimodal:
        row["images"] = list(sample.images)
    return row


def row_to_sample(row: dict) -> Sample:
    return Sample(
        id=row.get("id") or "",
        messages=messages_from_arrow(row["messages"]),
        images=list(row.get("images") or []),
        meta=load_meta(row.get("meta")),
    )


def pair_to_row(pair: PreferencePair, multimodal: bool) -> dict:
    row = {
        "id": pair.id,
        "prompt": messages_to_arrow(pair.prompt, multimodal),
        "chosen": messages_to_arrow(pair.chosen, multimodal),
        "rejected": messages_to_arrow(pair.rejected, multimodal),
        "meta": dump_meta(pair.meta),
    }
    if multimodal:
        row["images"] = list(pair.images)
    return row


def row_to_pair(row: dict) -> PreferencePair:
    return PreferencePair(
        id=row.get("id") or "",
        prompt=messages_from_arrow(row["prompt"]),
        chosen=messages_from_arrow(row["chosen"]),
        rejected=messages_from_arrow(row["rejected"]),
        images=list(row.get("images") or []),
        meta=load_meta(row.get("meta")),
    )


def samples_to_dataset(samples: Iterable[Sample]):
    """Build a `datasets.Dataset` in the SFT layout (images column only when some sample has images)."""
    from datasets import Dataset

    samples = list(samples)
    multimodal = is_multimodal(samples)
    rows = [sample_to_row(s, multimodal) for s in samples]
    return Dataset.from_list(rows, features=sft_features(multimodal))


def pairs_to_dataset(pairs: Iterable[PreferencePair]):
    from datasets import Dataset

    pairs = list(pairs)
    multimodal = is_multimodal(pairs)
    rows = [pair_to_row(p, multimodal) for p in pairs]
    return Dataset.from_list(rows, features=preference_features(multimodal))


def dataset_to_samples(dataset) -> Iterator[Sample]:
    for row in dataset:
        yield row_to_sample(row)


def dataset_to_pairs(dataset) -> Iterator[PreferencePair]:
    for row in dataset:
        yield row_to_pair(row)


def dataset_kind(dataset) -> Literal["sft", "preference", "other"]:
    cols = set(dataset.column_names)
    if {"prompt", "chosen", "rejected"} <= cols:
        return "preference"
    if "messages" in cols:
        return "sft"
    return "other"
