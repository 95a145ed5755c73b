"""Structured output: find JSON in a model's reply, repair near-JSON, validate with pydantic, re-ask.

Used by every backend: the reply is always validated locally, whatever the server promised. A reply that
is not strict JSON goes through `json_repair` (code fences and prose around the JSON, trailing commas,
single or smart quotes, Python literals, missing commas, and JSON cut off at max_tokens, whose open
strings and brackets are closed); the result must still validate against the schema, and a reply that
does not gets its error back in a re-ask (`reask_messages`).
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import json_repair
from pydantic import TypeAdapter, ValidationError

from synth.records import Message

_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)(?:```|$)", re.DOTALL)


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


def json_values(text: str) -> list[Any]:
    """Values the reply may mean, best first: the reply as strict JSON, else its repaired JSON (the
    content of a code fence if there is one) and, when the repair found several objects, each of them."""
    raw = (text or "").strip()
    if not raw:
        return []
    try:
        return [json.loads(raw)]
    except ValueError:
        pass
    fence = _FENCE.search(raw)
    for body in ([fence.group(1).strip()] if fence else []) + [raw]:  # a fence may hold code, not the JSON
        value = _repaired(body)
        if value is not None:
            values = [value]
            if isinstance(value, list):
                values += [item for item in value if isinstance(item, (dict, list))]  # "{...} and {...}"
            return values
    return []


def _repaired(text: str) -> dict | list | None:
    try:
        value = json_repair.loads(text)
    except Exception:  # the repairer is best effort; a reply it chokes on is simply not JSON
        return None
    # Prose comes back as "" (or a bare scalar): no answer.
    return value if isinstance(value, (dict, list)) else None


def error_summary(error: ValidationError, limit: int = 4) -> str:
    parts = []
    for item in error.errors()[:limit]:
        loc = ".".join(str(x) for x in item.get("loc", ())) or "<root>"
        parts.append(f"{loc}: {item.get('msg', 'invalid')}")
    more = "" if error.error_count() <= limit else f" (+{error.error_count() - limit} more)"
    return "; ".join(parts) + more


def parse_structured(text: str, schema_model: Any) -> tuple[Any, str | None]:
    """(validated object, None) or (None, reason). Tries the reply as it is, then its repaired forms."""
    adapter = adapter_for(schema_model)
    schema_error: str | None = None
    for value in json_values(text):
        try:
            return adapter.validate_python(value), None
        except ValidationError as e:
            schema_error = schema_error or error_summary(e)
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
