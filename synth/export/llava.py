"""LLaVA: a JSON list of ``{id, image, conversations: [{from: human|gpt, value}]}``.

LLaVA holds at most one image per sample: ``image`` is its path relative to OUT (pass OUT as LLaVA's
``image_folder``) and the first human turn starts with ``<image>\\n``. Text-only samples have no ``image``.
LLaVA has no system turn: a system message is put in front of the first human turn's text.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from synth.errors import SynthError
from synth.export.common import (
    IMAGE_TOKEN,
    Exporter,
    Record,
    RowError,
    check_turns,
    flat_text,
    write_json_list,
)

ROLES = {"user": "human", "assistant": "gpt"}


class LlavaExporter(Exporter):
    name = "llava"
    supports_preference = False

    def convert(self, record: Record) -> dict[str, Any]:
        if len(record.images) > 1:
            raise RowError("multi_image", f"{len(record.images)} images; LLaVA holds at most one image per sample")
        messages = record.messages
        check_turns(messages, end_with="assistant")
        system = ""
        if messages[0].role == "system":
            system, messages = flat_text(messages[0], ""), messages[1:]
        # The image token is placed by us, so any other "<image>" in the text would be a second image.
        texts = [flat_text(m, "") for m in messages]
        if any(IMAGE_TOKEN in text for text in texts + [system]):
            raise RowError("image_token_mismatch", f"the text contains a literal '{IMAGE_TOKEN}', which LLaVA would read as an image")
        if system:
            texts[0] = f"{system}\n\n{texts[0]}"
        row: dict[str, Any] = {"id": record.id}
        if record.images:
            row["image"] = self.context.images.path_for(record.images[0])
            texts[0] = f"{IMAGE_TOKEN}\n{texts[0]}"
        row["conversations"] = [{"from": ROLES[m.role], "value": text} for m, text in zip(messages, texts)]
        return row

    def __init__(self, context):
        super().__init__(context)
        if context.jsonl:
            raise SynthError("the llava format is one JSON list (LLaVA reads no JSONL); drop --jsonl")

    def write(self, rows: Iterator[dict], stem: str) -> str:
        file_name = f"{stem}.json"
        write_json_list(self.context.root / file_name, rows)
        return file_name
