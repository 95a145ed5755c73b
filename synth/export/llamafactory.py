"""LLaMA-Factory: sharegpt-style rows with OpenAI role/content tags, plus a `dataset_info.json` entry.

Rows: ``{"messages": [{"role", "content"}], "images": [relative paths], "id"}``; each image part becomes an
``<image>`` token where it stood, and the number of tokens in a row must equal ``len(images)`` (LLaMA-Factory
pairs them up in order). Preference rows add ``chosen`` / ``rejected`` as single assistant messages and the
entry says ``"ranking": true``. OUT is a LLaMA-Factory ``dataset_dir``: paths are relative to it. A DatasetDict
gives one file and one ``dataset_info.json`` entry per split (``NAME_train``, ``NAME_validation``, ...).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from synth.export.common import (
    IMAGE_TOKEN,
    Exporter,
    Record,
    RowError,
    check_turns,
    flat_text,
    single_reply,
    write_json_list,
    write_jsonl_rows,
)
from synth.records import Message

TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}


def _message(message: Message) -> dict[str, str]:
    return {"role": message.role, "content": flat_text(message, IMAGE_TOKEN)}


class LlamaFactoryExporter(Exporter):
    name = "llamafactory"

    def convert(self, record: Record) -> dict[str, Any]:
        if self.context.kind == "preference":
            check_turns(record.prompt, end_with="user")
            row: dict[str, Any] = {
                "messages": [_message(m) for m in record.prompt],
                "chosen": _message(single_reply(record.chosen, "chosen")),
                "rejected": _message(single_reply(record.rejected, "rejected")),
            }
            texts = [m["content"] for m in row["messages"]] + [row["chosen"]["content"], row["rejected"]["content"]]
        else:
            check_turns(record.messages, end_with="assistant")
            row = {"messages": [_message(m) for m in record.messages]}
            texts = [m["content"] for m in row["messages"]]
        tokens = sum(text.count(IMAGE_TOKEN) for text in texts)
        if tokens != len(record.images):
            raise RowError(
                "image_token_mismatch",
                f"{tokens} '{IMAGE_TOKEN}' token(s) in the text but {len(record.images)} image(s); "
                f"LLaMA-Factory needs one token per image (a literal '{IMAGE_TOKEN}' in the text counts too)",
            )
        row["images"] = [self.context.images.path_for(image) for image in record.images]
        row["id"] = record.id
        return row

    def entry(self, file_name: str) -> dict[str, Any]:
        columns = {"messages": "messages", "images": "images"}
        entry: dict[str, Any] = {"file_name": file_name, "formatting": "sharegpt"}
        if self.context.kind == "preference":
            entry["ranking"] = True
            columns.update({"chosen": "chosen", "rejected": "rejected"})
        entry["columns"] = columns
        entry["tags"] = dict(TAGS)
        return entry

    def write(self, rows: Iterator[dict], stem: str) -> str:
        file_name = f"{stem}.{'jsonl' if self.context.jsonl else 'json'}"
        (write_jsonl_rows if self.context.jsonl else write_json_list)(self.context.root / file_name, rows)
        return file_name

    def finish(self, written: dict[str | None, str]) -> list[str]:
        # the entry's key is the file's stem: NAME, or NAME_SPLIT for each split of a DatasetDict
        info = {file_name.rsplit(".", 1)[0]: self.entry(file_name) for file_name in written.values()}
        path = self.context.root / "dataset_info.json"
        path.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return ["dataset_info.json"]
