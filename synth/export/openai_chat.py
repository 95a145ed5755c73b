"""OpenAI fine-tuning JSONL: chat rows ``{"messages": [...]}`` or preference rows for DPO fine-tuning.

Images go inline as base64 data URLs in ``image_url`` parts. OpenAI accepts PNG, JPEG and WEBP in RGB or
RGBA only: such images go as they are (byte for byte); grayscale, palette, CMYK, LA and other modes are
converted to RGB (RGBA stays RGBA), other formats re-encoded as PNG. Images in user messages only. Preference rows are
``{"input": {"messages": [...]}, "preferred_output": [assistant], "non_preferred_output": [assistant]}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from synth.export.common import (
    Exporter,
    ImageData,
    Record,
    RowError,
    check_turns,
    has_image,
    single_reply,
    write_jsonl_rows,
)
from synth.records import Message, TextPart


class OpenAIExporter(Exporter):
    name = "openai"

    def _messages(self, messages: list[Message], images: Iterator[ImageData]) -> list[dict[str, Any]]:
        out = []
        for message in messages:
            if has_image(message) and message.role != "user":
                raise RowError("image_role", f"an image in a '{message.role}' message; OpenAI fine-tuning accepts images in user messages only")
            if isinstance(message.content, str) or not has_image(message):
                out.append({"role": message.role, "content": message.text})
                continue
            parts = []
            for part in message.content:
                if isinstance(part, TextPart):
                    if part.text:
                        parts.append({"type": "text", "text": part.text})
                else:
                    image = next(images)
                    if not image.openai_ready:
                        image = image.for_openai()
                        self.converted_images += 1
                    parts.append({"type": "image_url", "image_url": {"url": image.data_url()}})
                    self.embedded_images += 1
            out.append({"role": message.role, "content": parts})
        return out

    def convert(self, record: Record) -> dict[str, Any]:
        images = iter(record.images)
        if self.context.kind == "preference":
            if record.images:  # OpenAI's DPO fine-tuning takes text only
                raise RowError(
                    "images_unsupported",
                    f"{len(record.images)} image(s): OpenAI preference (DPO) fine-tuning accepts text only; "
                    "export image preference sets as trl or llamafactory",
                )
            check_turns(record.prompt, end_with="user")
            chosen = single_reply(record.chosen, "chosen")
            rejected = single_reply(record.rejected, "rejected")
            prompt = self._messages(record.prompt, images)
            return {
                "input": {"messages": prompt},
                "preferred_output": self._messages([chosen], images),
                "non_preferred_output": self._messages([rejected], images),
            }
        check_turns(record.messages, end_with="assistant")
        return {"messages": self._messages(record.messages, images)}

    def write(self, rows: Iterator[dict], stem: str) -> str:
        file_name = f"{stem}.jsonl"
        write_jsonl_rows(self.context.root / file_name, rows)
        return file_name
