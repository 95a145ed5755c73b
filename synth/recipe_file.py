"""The one loader of recipe files (``synth run``/``loop``, ``synth train``, ``synth mix``): YAML → a
validated pydantic model, with ``-s path=value`` overrides and every error as one line at its place.

An error names the file and line of the key, ``recipe.yaml:14: stages.3.filters.0.treshold: unknown key``,
or the override that supplied it (``-s lora.r=abc: lora.r: ...``). The YAML itself is read by
`synth.io.read_yaml` (safe, duplicate keys refused, alias and size budgets).

``-s path.to.key=value`` overrides: the path walks mappings by key and lists by index (or an item by its
``name``: ``-s stages.answers.max_tokens=64``); missing mappings are created. The value is read as a YAML
scalar or flow collection (``3`` is an int, ``[a, b]`` a list, ``1e-4`` a float, ``null`` None).
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from synth.errors import SynthError, looks_like_key

#: keys that would hold a secret: a recipe is shared (and a run copies it into its folder); secrets live in env
SECRET_KEYS = {"api_key", "apikey", "openai_api_key", "token", "hf_token", "access_token", "password",
               "secret", "authorization", "bearer"}
#: exponent notation YAML 1.1 reads as a string (``1e-4``); an override means the number
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class RecipeError(SynthError):
    """A recipe that cannot be used: the message names the file and line (or the override)."""


# ---------------------------------------------------------------- locations


@dataclass
class YamlDoc:
    """A parsed recipe and, for error messages, the line of every key and value."""

    path: Path
    data: Any
    root: Any = None  # yaml node tree
    overrides: list[tuple[tuple, str]] = field(default_factory=list)  # (path, "-s text")

    def line_of(self, loc: tuple) -> int | None:
        """1-based line of the deepest node along `loc` (a key's line when the last step is a key)."""
        import yaml

        node, line = self.root, None
        if node is None:
            return None
        line = node.start_mark.line + 1
        for step in loc:
            if isinstance(node, yaml.MappingNode):
                match = None
                for key_node, value_node in node.value:
                    if str(getattr(key_node, "value", None)) == str(step):
                        match = (key_node, value_node)
                        break
                if match is None:
                    # the one-key form {name: {options}}: look one level down
                    if len(node.value) == 1 and isinstance(node.value[0][1], yaml.MappingNode):
                        node = node.value[0][1]
                        for key_node, value_node in node.value:
                            if str(getattr(key_node, "value", None)) == str(step):
                                match = (key_node, value_node)
                                break
                    if match is None:
                        return line
                line = match[0].start_mark.line + 1
                node = match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
                node = node.value[step]
                line = node.start_mark.line + 1
            else:
                return line
        return line

    def where(self, loc: tuple) -> str:
        for path, text in self.overrides:
            if tuple(loc[: len(path)]) == path:
                return f"-s {text}"
        line = self.line_of(loc)
        return f"{self.path}:{line}" if line else str(self.path)


def issue(doc: YamlDoc, loc: tuple, message: str) -> RecipeError:
    """An error at `loc` of the recipe: ``FILE:LINE: key.path: message``."""
    dotted = ".".join(str(x) for x in loc)
    return RecipeError(f"{doc.where(loc)}: {dotted}: {message}")


def clean_loc(loc: tuple, data: Any) -> tuple:
    """A pydantic error location without the union tags it inserts (``stages.3.filter.x`` → ``stages.3.x``)."""
    out: list = []
    node = data
    for step in loc:
        if isinstance(node, dict):
            if step in node:
                out.append(step)
                node = node[step]
                continue
            if step in (node.get("type"), node.get("name"), node.get("backend")) or str(step).startswith(
                    ("function-", "tagged-union")):
                continue  # a tag, not a key
            # the one-key form {name: {options}}
            if len(node) == 1 and isinstance(next(iter(node.values())), dict) and step in next(iter(node.values())):
                key = next(iter(node))
                out.append(key)
                node = node[key]
                out.append(step)
                node = node[step]
                continue
            out.append(step)
            node = None
        elif isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
            out.append(step)
            node = node[step]
        else:
            if isinstance(step, str) and step.startswith(("function-", "tagged-union")):
                continue
            out.append(step)
            node = None
    return tuple(out)


# ---------------------------------------------------------------- errors

#: (location, recipe data) → keys accepted at the location's parent, for "did you mean"
KnownKeys = Callable[[tuple, Any], list[str]]
#: a union tag error's location → (what the tag picks, its key, the choices, and where to find them when
#: they are too many to list, or None), or None for the generic words
TagChoices = Callable[[tuple], "tuple[str, str, str, str | None] | None"]


def model_keys(model: type[BaseModel]) -> KnownKeys:
    """`KnownKeys` read off a pydantic model: the fields of the (nested) model the location's parent is."""

    def known(loc: tuple, _data: Any) -> list[str]:
        current: Any = model
        for step in loc[:-1]:
            if isinstance(step, int):
                continue
            fields = getattr(current, "model_fields", None)
            if fields is None or step not in fields:
                return []
            current = _inner_model(fields[step].annotation)
        return list(getattr(current, "model_fields", {}))

    return known


def _inner_model(annotation: Any) -> Any:
    """The pydantic model inside ``X | None``, ``list[X]``, ``dict[str, X]`` (None when there is none)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def format_items(items: list[dict], doc: YamlDoc, prefix: tuple = (), known_keys: KnownKeys | None = None,
                 tag_choices: TagChoices | None = None) -> str:
    """One line for pydantic error dicts (locations start at `prefix`): ``FILE:LINE: key.path: what``
    for up to three errors."""
    parts = []
    for item in items[:3]:
        loc = clean_loc((*prefix, *tuple(item.get("loc", ()))), doc.data)
        dotted = ".".join(str(x) for x in loc) or "<root>"
        kind = item.get("type")
        msg = item.get("msg", "invalid")
        if kind == "extra_forbidden":
            msg = "unknown key"
            try:
                keys = known_keys(loc, doc.data) if known_keys else []
            except Exception:  # a hint only
                keys = []
            close = difflib.get_close_matches(str(loc[-1]), keys, n=1) if loc else []
            if close:
                msg += f" (did you mean '{close[0]}'?)"
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            ctx = item.get("ctx") or {}
            tag = ctx.get("tag")
            picked = tag_choices(loc) if tag_choices else None
            if picked is not None:
                what, key, choices, pointer = picked
            else:
                key = str(ctx.get("discriminator", "name")).strip("'")
                what = "filter" if "filters" in loc else key
                choices = str(ctx.get("expected_tags", "")).replace("'", "")
                pointer = None
            if kind == "union_tag_invalid" and pointer:  # too many to list: the closest, then where they are
                close = difflib.get_close_matches(str(tag), [c.strip() for c in choices.split(",")], n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                msg = f"unknown {what} '{tag}' ({hint}{pointer})"
            elif kind == "union_tag_invalid":
                msg = f"unknown {what} '{tag}' (one of: {choices})"
            else:
                msg = f"needs '{key}:' (one of: {choices})"
            if tag is not None or picked is not None:
                loc = (*loc, key)
                dotted = ".".join(str(x) for x in loc)
        msg = msg.replace("Value error, ", "")
        # a check of the whole recipe (no key) reads as a plain sentence
        parts.append(f"{doc.where(loc)}: {dotted}: {msg}" if loc else f"{doc.where(loc)}: {msg}")
    more = "" if len(items) <= 3 else f" (+{len(items) - 3} more)"
    return "; ".join(parts) + more


# ---------------------------------------------------------------- overrides


def shown_override(text: str) -> str:
    """An override as errors show it: the value of a secret (or of anything that looks like a key) left out."""
    key, eq, value = text.partition("=")
    last = key.strip().split(".")[-1].lower()
    if eq and (last in SECRET_KEYS or looks_like_key(value.strip())):
        return f"{key.strip()}=***"
    return text


def parse_override(text: str) -> tuple[list[str], Any]:
    """``path.to.key=value`` → (the path's steps, the value read as YAML)."""
    from synth.io import yaml_value

    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise RecipeError(f"-s {shown_override(text)}: expected path.to.key=value, e.g. -s seed=1 or -s lora.r=8")
    parsed = yaml_value(value, f"-s {key.strip()}")
    if isinstance(parsed, str) and _FLOAT.fullmatch(parsed.strip()):
        parsed = float(parsed)  # YAML 1.1 reads 1e-4 as a string
    return [p for p in key.strip().split(".") if p != ""], parsed


def apply_overrides(data: dict, overrides: list[str]) -> tuple[dict, list[tuple[tuple, str]]]:
    """The recipe data with every ``-s path=value`` applied; the resolved paths (for error locations)."""
    data = copy.deepcopy(data)
    applied = []
    for text in overrides:
        steps, value = parse_override(text)
        text = shown_override(text)  # as errors show it
        node: Any = data
        resolved: list = []
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            if isinstance(node, list):
                index = _list_index(node, step, resolved, text)
                resolved.append(index)
                if last:
                    node[index] = value
                else:
                    node = node[index]
            elif isinstance(node, dict):
                resolved.append(step)
                if last:
                    node[step] = value
                else:
                    if not isinstance(node.get(step), (dict, list)):
                        node[step] = {}
                    node = node[step]
            else:
                where = ".".join(str(x) for x in resolved) or "<root>"
                raise RecipeError(f"-s {text}: {where} is a value, not a mapping or list")
        applied.append((tuple(resolved), text))
    return data, applied


def _list_index(node: list, step: str, resolved: list, text: str) -> int:
    if step.lstrip("-").isdigit():
        index = int(step)
        if not -len(node) <= index < len(node):
            raise RecipeError(f"-s {text}: {'.'.join(map(str, resolved))} has {len(node)} items; no index {index}")
        return index % len(node)
    names = [item.get("name") if isinstance(item, dict) else None for item in node]
    if step in names:
        return names.index(step)
    what = "stage" if resolved == ["stages"] else "item"
    raise RecipeError(f"-s {text}: no {what} named '{step}' ({what}s: {', '.join(str(n) for n in names if n)})")


# ---------------------------------------------------------------- loading


def read_recipe(path: str | os.PathLike, what: str, overrides: list[str] | None = None,
                shape: str = "a mapping of keys") -> YamlDoc:
    """Read a recipe file (`what`: "recipe", "training recipe", ...) and apply the overrides. Its top level
    must be a mapping (`shape` says what one holds, for the error); an empty file is an empty mapping."""
    from synth.io import compose_yaml, read_yaml

    path = Path(path)
    data = read_yaml(path, what)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}:1: a {what} is {shape}")
    # the file parsed above, so it composes (with the same limits): the node tree gives every key's line
    doc = YamlDoc(path=path, data=data, root=compose_yaml(path.read_text(encoding="utf-8")))
    doc.data, doc.overrides = apply_overrides(data, list(overrides or []))
    return doc


def validate(model: type[BaseModel], doc: YamlDoc, data: Any = None, prefix: tuple = (),
             known_keys: KnownKeys | None = None, tag_choices: TagChoices | None = None) -> Any:
    """`model` validated from the recipe (or from `data`, the part of it at `prefix`); a `RecipeError`
    with file:line otherwise. "Did you mean" hints come from `known_keys` (default: the model's fields)."""
    try:
        return model.model_validate(doc.data if data is None else data)
    except ValidationError as e:
        if known_keys is None:
            fields = model_keys(model)

            def known_keys(loc: tuple, data: Any) -> list[str]:
                return fields(loc[len(prefix):], data)

        raise RecipeError(format_items(e.errors(), doc, prefix, known_keys, tag_choices)) from None
