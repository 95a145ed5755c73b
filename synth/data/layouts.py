"""Peer dataset layouts → synth's records, one row at a time.

Records are plain dicts (the Arrow layout of `synth.records`, ``meta`` as a dict):

- SFT: ``messages`` (``{role, content}``; content a string or a list of ``{"type": "text", "text"}`` /
  ``{"type": "image"}`` parts), ``images`` (``{"bytes", "path"}`` refs, one per image part, in order),
  ``id``, ``meta``;
- preference: ``prompt``, ``chosen``, ``rejected`` (message lists), ``images``, ``id``, ``meta``.

Layouts recognised by their columns (the first that matches wins):

=================  ==============================================================================
preference         ``prompt`` + ``chosen`` + ``rejected`` (TRL; strings or message lists)
openai_preference  ``input.messages`` + ``preferred_output`` + ``non_preferred_output`` (OpenAI DPO)
messages           ``messages`` (TRL conversational, OpenAI chat JSONL with ``image_url`` parts,
                   LLaMA-Factory sharegpt with OpenAI tags)
sharegpt           ``conversations`` of ``{from, value}`` (LLaVA JSON with ``image``, ShareGPT /
                   LLaMA-Factory with ``images``); ``<image>`` tokens become image parts
prompt_completion  ``prompt`` + ``completion`` (TRL; strings or message lists)
alpaca             ``instruction`` [+ ``input``, ``output``/``response``, ``system``, ``history``]
raw                anything else (labelled sources for adaptation, the demo shapes data): rows pass
                   through with their columns
=================  ==============================================================================

Why hand-written: each peer documents its own layout and no library converts between them.
"""

from __future__ import annotations

import json
from typing import Any

from synth.data.images import image_ref
from synth.errors import SynthError

IMAGE_TOKEN = "<image>"
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "bing": "assistant", "chatgpt": "assistant"}
WDS_ERROR = "__error__"  # synth.data.webdataset.ERROR_COLUMN (a sample its reader could not read)
LAYOUTS = ("preference", "openai_preference", "messages", "sharegpt", "prompt_completion", "alpaca", "raw")


class RecordError(SynthError):
    """A row that cannot be read in its layout; `reason` is counted, the message names the row."""

    def __init__(self, message: str, reason: str = "bad_record"):
        super().__init__(message)
        self.reason = reason


def detect_layout(columns: set[str]) -> str:
    if {"prompt", "chosen", "rejected"} <= columns:
        return "preference"
    if {"input", "preferred_output", "non_preferred_output"} <= columns:
        return "openai_preference"
    if "messages" in columns:
        return "messages"
    if "conversations" in columns:
        return "sharegpt"
    if {"prompt", "completion"} <= columns:
        return "prompt_completion"
    if "instruction" in columns:
        return "alpaca"
    return "raw"


def kind_of(layout: str) -> str:
    """``sft``, ``preference`` or ``raw``: what the records of a layout are."""
    if layout in ("preference", "openai_preference"):
        return "preference"
    return "raw" if layout == "raw" else "sft"


# ---------------------------------------------------------------- content


def _decoded(value: Any) -> Any:
    """A cell the layout says holds a list or an object (a messages or conversations column, OpenAI's
    ``input``, ``history``, ``images``, ``meta``) may arrive as its JSON text: CSV has only text cells.
    Only such cells are decoded; message content never is (text that looks like JSON is still text)."""
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in ("{", "["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return value
    return value


def _parts(content: Any, where: str, images_out: list | None = None) -> list[dict] | str:
    """A message's content as a string, or as canonical parts (image_url parts' data go to `images_out`).
    A string is the message's text whatever it looks like: only a list (or one part object) is parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (bool, int, float)):
        # a JSON file that wrote the answer as a bare number (`"content": 3`): the text the file holds
        return json.dumps(content)
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        raise RecordError(f"{where}: message content must be a string or a list of parts, got {type(content).__name__}")
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append({"type": "text", "text": part})
            continue
        if not isinstance(part, dict):
            raise RecordError(f"{where}: a content part must be an object, got {type(part).__name__}")
        kind = part.get("type")
        if kind == "text" or (kind is None and "text" in part):
            parts.append({"type": "text", "text": part.get("text") or ""})
        elif kind in ("image", "image_url", "input_image"):
            if kind != "image":  # OpenAI: the image travels inside the part as a URL
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                if not url:
                    raise RecordError(f"{where}: an {kind} part has no url")
                if images_out is None:
                    raise RecordError(f"{where}: an {kind} part is not allowed here")
                images_out.append(url)
            parts.append({"type": "image", "text": None})
        else:
            raise RecordError(f"{where}: unknown content part type '{kind}' (expected text or image)")
    return parts


def _messages(value: Any, where: str, images_out: list | None = None, default_role: str | None = None) -> list[dict]:
    """A column of messages. Where the layout also takes plain text (TRL's prompt, completion, chosen,
    rejected: `default_role` set), a string is the text of one message in that role; in a column that
    only holds message lists (messages, conversations) a string is the list's JSON text (CSV)."""
    if isinstance(value, str) and default_role is not None:
        return [{"role": default_role, "content": value}]
    value = _decoded(value)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise RecordError(f"{where}: expected a list of messages, got {type(value).__name__}")
    out = []
    for i, m in enumerate(value):
        m = _decoded(m)
        if not isinstance(m, dict):
            raise RecordError(f"{where}: message {i} must be an object with role and content")
        role = m.get("role") or SHAREGPT_ROLES.get(str(m.get("from", "")).lower())
        if role not in ("system", "user", "assistant"):
            raise RecordError(f"{where}: message {i} has role '{m.get('role') or m.get('from')}' (expected system, user or assistant)")
        content = m["content"] if "content" in m else m.get("value")
        out.append({"role": role, "content": _parts(content, f"{where}: message {i}", images_out)})
    return out


def _split_image_tokens(messages: list[dict]) -> tuple[list[dict], int]:
    """``<image>`` tokens in string content → image parts where they stood (LLaVA / sharegpt)."""
    count = 0
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, str) and IMAGE_TOKEN in content:
            parts: list[dict] = []
            for i, piece in enumerate(content.split(IMAGE_TOKEN)):
                if i:
                    parts.append({"type": "image", "text": None})
                    count += 1
                piece = piece.strip("\n") if i or piece.endswith("\n") else piece
                if piece:
                    parts.append({"type": "text", "text": piece})
            m = {"role": m["role"], "content": parts}
        out.append(m)
    return out, count


def image_part_count(messages: list[dict]) -> int:
    return sum(
        1 for m in messages if not isinstance(m["content"], str) for p in m["content"] if p.get("type") == "image"
    )


def _image_list(value: Any) -> list:
    value = _decoded(value)
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _meta(row: dict) -> dict:
    meta = _decoded(row.get("meta"))
    if meta is None or meta == "":
        return {}
    if not isinstance(meta, dict):
        return {"meta": meta}
    return meta


# ---------------------------------------------------------------- rows → records


def to_record(row: dict, layout: str, where: str, base_dir, check_images: bool = True) -> dict:
    """One source row as a record in synth's layout (images as ``{"bytes", "path"}`` refs)."""
    if WDS_ERROR in row:  # a WebDataset sample that could not be read: its error names shard and key
        if row[WDS_ERROR]:
            raise RecordError(f"{where}: {row[WDS_ERROR]}", reason="bad_shard")
        row = {k: v for k, v in row.items() if k != WDS_ERROR}
    rid = str(row.get("id") or "") or where
    if layout == "raw":
        return _raw(row, base_dir, rid, check_images)
    inline: list = []
    if layout == "preference":
        record = {
            "prompt": _messages(row["prompt"], where, inline, default_role="user"),
            "chosen": _messages(row["chosen"], where, inline, default_role="assistant"),
            "rejected": _messages(row["rejected"], where, inline, default_role="assistant"),
        }
        convs = [record["prompt"], record["chosen"], record["rejected"]]
    elif layout == "openai_preference":
        prompt = _decoded(row["input"])
        record = {
            "prompt": _messages(prompt.get("messages") if isinstance(prompt, dict) else prompt, where, inline,
                                default_role="user"),
            "chosen": _messages(row["preferred_output"], where, inline, default_role="assistant"),
            "rejected": _messages(row["non_preferred_output"], where, inline, default_role="assistant"),
        }
        convs = [record["prompt"], record["chosen"], record["rejected"]]
    elif layout == "messages":
        record = {"messages": _messages(row["messages"], where, inline)}
        convs = [record["messages"]]
        if row.get("system") and record["messages"][:1] and record["messages"][0]["role"] != "system":
            record["messages"].insert(0, {"role": "system", "content": row["system"]})
    elif layout == "sharegpt":
        messages = _messages(row["conversations"], where, inline)
        if row.get("system") and (not messages or messages[0]["role"] != "system"):
            messages.insert(0, {"role": "system", "content": row["system"]})
        record = {"messages": messages}
        convs = [messages]
    elif layout == "prompt_completion":
        prompt = _messages(row["prompt"], where, inline, default_role="user")
        completion = _messages(row["completion"], where, inline, default_role="assistant")
        record = {"messages": prompt + completion}
        convs = [record["messages"]]
    elif layout == "alpaca":
        record = {"messages": _alpaca(row, where)}
        convs = [record["messages"]]
    else:
        raise SynthError(f"unknown layout '{layout}' (one of: {', '.join(LAYOUTS)})")

    sources = inline + _image_list(row.get("images", row.get("image")))
    for value in sources:
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            # a URL would otherwise be taken for a file path inside the dataset folder
            raise RecordError(
                f"{where}: remote image URL '{value[:200]}' is not fetched; download the images and give data: "
                "URLs or paths inside the dataset folder",
                reason="bad_image",
            )
    # LLaVA / sharegpt mark images with <image> tokens in the text
    tokens = 0
    if layout in ("sharegpt", "messages", "prompt_completion", "preference") and sources and not inline:
        if not any(image_part_count(c) for c in convs):
            split = [_split_image_tokens(c) for c in convs]
            tokens = sum(n for _, n in split)
            if tokens:
                convs = [c for c, _ in split]
                for key, conv in zip([k for k in ("prompt", "chosen", "rejected", "messages") if k in record], convs):
                    record[key] = conv
    parts = sum(image_part_count(c) for c in convs)
    if sources and parts == 0 and len(sources) == 1 and layout in ("messages", "prompt_completion", "sharegpt", "preference"):
        # One image and no placeholder (some peers leave it implicit): it belongs to the first user turn.
        first = convs[0]
        for m in first:
            if m["role"] == "user":
                text = m["content"]
                m["content"] = [{"type": "image", "text": None}] + (
                    [{"type": "text", "text": text}] if isinstance(text, str) and text else (text if isinstance(text, list) else [])
                )
                break
        parts = 1
    if parts != len(sources):
        raise RecordError(
            f"{where}: {parts} image placeholder(s) in the text but {len(sources)} image(s); "
            "each image part (or <image> token) needs exactly one image, in order",
            reason="image_token_mismatch",
        )
    record["images"] = [image_ref(v, base_dir, rid, check=check_images) for v in sources]
    record["id"] = str(row.get("id") or "")
    record["meta"] = _meta(row)
    other = _other_columns(row, layout)
    if other and isinstance(record["meta"].get("columns", {}), dict):
        record["meta"]["columns"] = {**other, **record["meta"].get("columns", {})}
    return record


# The columns each layout reads; the others travel in ``meta.columns``.
LAYOUT_COLUMNS = {
    "preference": {"prompt", "chosen", "rejected"},
    "openai_preference": {"input", "preferred_output", "non_preferred_output"},
    "messages": {"messages", "system"},
    "sharegpt": {"conversations", "system"},
    "prompt_completion": {"prompt", "completion"},
    "alpaca": {"instruction", "input", "output", "response", "system", "history"},
}
COMMON_COLUMNS = {"id", "meta", "images", "image"}


def _other_columns(row: dict, layout: str) -> dict:
    """The row's columns its layout does not read (a benchmark's ``task_id``, a category, a score): a
    record keeps them in ``meta.columns`` so the output carries what the input had. Image cells and raw
    bytes stay out (meta is JSON text); so do the pandas index columns (``__index_level_0__``)."""
    used = LAYOUT_COLUMNS[layout] | COMMON_COLUMNS
    return {
        key: value for key, value in row.items()
        if key not in used and not key.startswith("__") and _plain_json(value)
    }


def _plain_json(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool, int, float)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain_json(v) for v in value)
    if isinstance(value, dict):
        return set(value) != {"bytes", "path"} and all(isinstance(k, str) and _plain_json(v) for k, v in value.items())
    return False


def _alpaca(row: dict, where: str) -> list[dict]:
    instruction = (row.get("instruction") or "").strip()
    extra = (row.get("input") or "").strip() if isinstance(row.get("input"), str) else ""
    prompt = f"{instruction}\n\n{extra}" if extra else instruction
    messages: list[dict] = []
    if row.get("system"):
        messages.append({"role": "system", "content": row["system"]})
    for turn in _decoded(row.get("history")) or []:
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2):
            raise RecordError(f"{where}: history must be a list of [instruction, response] pairs")
        messages += [{"role": "user", "content": str(turn[0])}, {"role": "assistant", "content": str(turn[1])}]
    messages.append({"role": "user", "content": prompt})
    answer = row.get("output", row.get("response"))
    if isinstance(answer, str) and answer.strip():
        messages.append({"role": "assistant", "content": answer.strip()})
    return messages


def _raw(row: dict, base_dir, rid: str, check_images: bool) -> dict:
    """A labelled row passes through; image cells (``{"bytes", "path"}`` from an Image column) get their
    bytes, so every later step sees encoded bytes whatever the source."""
    out = dict(row)
    for key, value in row.items():
        if isinstance(value, dict) and set(value) == {"bytes", "path"}:
            out[key] = None if value["bytes"] is None and value["path"] is None else image_ref(value, base_dir, rid, check=check_images)
        elif isinstance(value, list) and value and all(isinstance(v, dict) and set(v) == {"bytes", "path"} for v in value):
            out[key] = [image_ref(v, base_dir, rid, check=check_images) for v in value]
    if "meta" in out:
        out["meta"] = _meta(row)
    return out
