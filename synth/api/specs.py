"""What a Python user sees of a pydantic spec: a signature and a docstring made from its fields, and its
validation errors as one `SynthError` line naming the owner (``synth.ops.Dedup``), the key and what to do."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

from synth.errors import SynthError


def field_default(field) -> Any:
    """A field's default as a signature shows it (`inspect.Parameter.empty` for a required field)."""
    if field.is_required():
        return inspect.Parameter.empty
    if field.default_factory is not None:
        try:
            return field.default_factory()
        except TypeError:  # a factory taking the validated data: no value to show
            return inspect.Parameter.empty
    return None if field.default is PydanticUndefined else field.default


def signature(model: type[BaseModel], leading: Iterable[inspect.Parameter] = (), skip: Iterable[str] = (),
              extra: bool = False) -> inspect.Signature:
    """Keyword-only parameters: `leading` first, then the model's fields (less `skip`), then ``**options``
    when the model takes extra keys."""
    params = list(leading)
    taken = {p.name for p in params} | set(skip)
    for key, field in model.model_fields.items():
        if key in taken or field.exclude:
            continue
        params.append(inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=field_default(field),
                                        annotation=field.annotation))
    if extra:
        params.append(inspect.Parameter("options", inspect.Parameter.VAR_KEYWORD))
    return inspect.Signature(params)


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return text or str(annotation).replace("typing.", "")


def docstring(summary: str, sig: inspect.Signature, model: type[BaseModel], notes: dict[str, str] | None = None,
              footer: str = "") -> str:
    """``summary`` then one line per parameter: name (type, default): description."""
    lines = [summary.strip(), "", "Options:"]
    notes = notes or {}
    for param in sig.parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            lines.append(f"    **{param.name}: {notes.get(param.name, 'more options, checked when the step runs')}")
            continue
        field = model.model_fields.get(param.name)
        described = notes.get(param.name) or (field.description if field is not None else None) or ""
        default = "required" if param.default is inspect.Parameter.empty else f"default {param.default!r}"
        kind = _type_name(param.annotation) if param.annotation is not inspect.Parameter.empty else "any"
        lines.append(f"    {param.name} ({kind}, {default}){': ' + described if described else ''}")
    if footer:
        lines += ["", footer.strip()]
    return "\n".join(lines)


def option_error(owner: str, error: ValidationError, valid: list[str],
                 known_keys: Callable[[tuple], list[str]] | None = None, data: Any = None) -> SynthError:
    """One line for up to three errors: ``OWNER: key.path: what``; an unknown key gets a 'did you mean'
    and the valid keys at its level."""
    from synth.run.recipe import clean_loc

    parts = []
    items = error.errors()
    for item in items[:3]:
        loc = clean_loc(tuple(item.get("loc", ())), data) if data is not None else tuple(item.get("loc", ()))
        dotted = ".".join(str(x) for x in loc) or "<options>"
        msg = str(item.get("msg", "invalid")).replace("Value error, ", "")
        if item.get("type") == "extra_forbidden":
            keys = valid if len(loc) <= 1 else (known_keys(loc[:-1]) if known_keys else [])
            msg = "unknown key"
            close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
            if close:
                msg += f" (did you mean '{close[0]}'?)"
            if keys:
                msg += f"; valid keys: {', '.join(keys)}"
        elif item.get("type") == "missing":
            msg = "required, not given"
        parts.append(f"{dotted}: {msg}")
    more = "" if len(items) <= 3 else f" (+{len(items) - 3} more)"
    return SynthError(f"{owner}: " + "; ".join(parts) + more)
