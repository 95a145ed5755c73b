"""Structured output: find JSON in a model's reply, repair near-JSON, validate with pydantic, re-ask.

Used by every backend: the reply is always validated locally, whatever the server promised. Repairs are
conservative — code fences, prose around the JSON, trailing commas, smart quotes, Python-style literals
with single quotes (parsed with `ast.literal_eval`, which evaluates nothing) — and a reply that still does
not validate gets its error back in a re-ask (`reask_messages`).
"""

from __future__ import annotations

import ast
import functools
import json
import re
from typing import Any

from pydantic import TypeAdapter, ValidationError

from synth.records import Message

_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
_SMART = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'"})
_PY_LITERALS = [(re.compile(r"\btrue\b"), "True"), (re.compile(r"\bfalse\b"), "False"),
                (re.compile(r"\bnull\b"), "None")]


@functools.lru_cache(maxsize=256)
def adapter_for(schema_model: Any) -> TypeAdapter:
    """A cached validator for a pydantic model class (or any type pydantic understands)."""
    return TypeAdapter(schema_model)


@functools.lru_cache(maxsize=256)
def schema_json(schema_model: Any) -> str:
    """The JSON schema as a canonical string (cache keys, prompts)."""
    return json.dumps(adapter_for(schema_model).json_schema(), sort_keys=True, separators=(",", ":"))


def schema_name(schema_model: Any) -> str:
    name = getattr(schema_model, "__name__", "") or "output"
    return re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:64]


def response_format(schema_model: Any) -> dict:
    """The OpenAI `response_format` asking for JSON that follows the schema."""
    return {"type": "json_schema",
            "json_schema": {"name": schema_name(schema_model), "schema": json.loads(schema_json(schema_model)),
                            "strict": False}}


def _balanced_end(text: str, start: int) -> int | None:
    """Index just past the bracket that closes the one at `start`, skipping string contents."""
    depth, quote, escaped = 0, None, False
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _strip_trailing_commas(text: str) -> str:
    out, quote, escaped = [], None, False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if quote:
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
            out.append(ch)
        elif ch == ",":
            j = i + 1
            while j < n and text[j].isspace():
                j += 1
            if j >= n or text[j] not in "}]":
                out.append(ch)
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def json_candidates(text: str) -> list[str]:
    """Strings to try, from the reply as it is to more and more repaired forms (duplicates removed)."""
    raw = text.strip()
    found = [raw]
    fence = _FENCE.search(raw)
    body = fence.group(1).strip() if fence else raw
    found.append(body)
    starts = [i for i in (body.find("{"), body.find("[")) if i >= 0]
    if starts:
        start = min(starts)
        end = _balanced_end(body, start)
        body = body[start:end] if end else body[start:]
        found.append(body)
    repaired = _strip_trailing_commas(body.translate(_SMART))
    found.append(repaired)
    seen, out = set(), []
    for c in found:
        if c and c not in seen:
            seen.add(c)
            out.append(c)
    return out


def _outside_strings(text: str, fix) -> str:
    """Apply `fix` to the stretches of `text` that are not inside quotes (either kind)."""
    out, start, quote, escaped = [], 0, None, False
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                out.append(text[start:i + 1])
                start, quote = i + 1, None
        elif ch in "\"'":
            out.append(fix(text[start:i]))
            start, quote = i, ch
    out.append(text[start:] if quote else fix(text[start:]))
    return "".join(out)


def _python_words(chunk: str) -> str:
    for pattern, value in _PY_LITERALS:
        chunk = pattern.sub(value, chunk)
    return chunk


def _python_literal(text: str) -> str | None:
    """Single-quoted, Python-style JSON → real JSON, via a literal parser (never evaluates code)."""
    text = _outside_strings(text, _python_words)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None
    if not isinstance(value, (dict, list)):
        return None
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return None


def error_summary(error: ValidationError, limit: int = 4) -> str:
    parts = []
    for item in error.errors()[:limit]:
        loc = ".".join(str(x) for x in item.get("loc", ())) or "<root>"
        parts.append(f"{loc}: {item.get('msg', 'invalid')}")
    more = "" if error.error_count() <= limit else f" (+{error.error_count() - limit} more)"
    return "; ".join(parts) + more


def parse_structured(text: str, schema_model: Any) -> tuple[Any, str | None]:
    """(validated object, None) or (None, reason). Tries the reply as it is, then repaired forms."""
    adapter = adapter_for(schema_model)
    schema_error: str | None = None
    candidates = json_candidates(text or "")
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        try:
            return adapter.validate_python(data), None
        except ValidationError as e:
            schema_error = schema_error or error_summary(e)
    if schema_error is None and candidates:
        literal = _python_literal(candidates[-1])
        if literal is not None:
            try:
                return adapter.validate_json(literal), None
            except ValidationError as e:
                schema_error = error_summary(e)
    if schema_error:
        return None, f"reply does not match the schema: {schema_error}"
    if not (text or "").strip():
        return None, "empty reply, expected JSON"
    return None, "reply is not valid JSON"


def reask_messages(messages: list[Message], bad_reply: str, error: str, schema_model: Any) -> list[Message]:
    """The conversation plus the bad reply and a request to correct it (prompt: prompts/structured_reask.jinja)."""
    from synth.templating import render_file

    prompt = render_file("prompts/structured_reask.jinja", error=error, schema=schema_json(schema_model))
    return [*messages, Message(role="assistant", content=bad_reply), Message(role="user", content=prompt)]
