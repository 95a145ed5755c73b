"""Filters by name, so the CLI, recipes and mixtures can build them from ``name`` + options.

`build_filter("length", {"min_answer_words": 3})` validates the options against the filter's pydantic
config (unknown keys rejected) and returns a ready `synth.pipeline.Stage`. Filters that call an LLM
(subclasses of `synth.pipeline.llm_task.LLMTask`) get their backend from `backend_factory()`; a filter class may
instead define ``from_config(config, *, backend_factory)`` to build itself.

Specs as text (CLI ``--filter``): ``name`` or ``name:key=value,key=value``; values are read as YAML
scalars (``3`` -> int, ``true`` -> bool, ``[a, b]`` -> list; quote to keep a comma).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from synth.errors import SynthError, validation_message
from synth.pipeline import Stage

#: synth's own filters, in the order `synth filter --filter help` lists them
BUILTIN_FILTERS = ("length", "repetition", "placeholder", "image_size", "image_tokens", "dedup", "decontaminate",
                   "judge", "capfilt")


class _Filters(Mapping):
    """Filter name → class: the registered operators that may sit in a `filter` chain (a `Filter`, or one
    that says ``filter_chain = True``), plugins' included. Read from `synth.core.registry` on first use."""

    def _table(self) -> dict[str, type[Stage]]:
        from synth.core.registry import operators
        from synth.pipeline import Filter

        found = {name: cls for name, cls in operators().items()
                 if issubclass(cls, Filter) or getattr(cls, "filter_chain", False)}
        ordered = {name: found[name] for name in BUILTIN_FILTERS if name in found}
        return {**ordered, **{k: v for k, v in found.items() if k not in ordered}}

    def __getitem__(self, name: str) -> type[Stage]:
        return self._table()[name]

    def __iter__(self):
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


FILTERS: Mapping[str, type[Stage]] = _Filters()


def _valid_options(cls: type[Stage]) -> str:
    return ", ".join(cls.Config.model_fields) or "(none)"


def build_filter(name: str, options: dict | None = None, *, backend_factory: Callable[[], Any] | None = None) -> Stage:
    """A filter stage by registry name with validated options; SynthError naming what is wrong."""
    from synth.core.operator import build

    cls = FILTERS.get(name)
    if cls is None:
        raise SynthError(f"unknown filter '{name}'; valid filters: {', '.join(sorted(FILTERS))}")
    try:
        config = cls.Config(**(options or {}))
    except ValidationError as e:
        raise SynthError(
            validation_message(e, f"filter '{name}'") + f"; valid options for '{name}': {_valid_options(cls)}"
        ) from None
    except TypeError as e:  # options not a mapping
        raise SynthError(f"filter '{name}': options must be a mapping of key: value ({e})") from None
    if backend_factory is None and hasattr(cls, "format_input"):
        raise SynthError(f"filter '{name}' needs an LLM backend; pass --backend/--model (or a backend in the recipe)")
    return build(cls, config, backend_factory=backend_factory)


# ---------------------------------------------------------------- specs


def _split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on `sep` outside brackets and quotes."""
    parts, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p for p in (p.strip() for p in parts) if p]


def parse_filter_spec(spec: str) -> tuple[str, dict]:
    """``"length:min_answer_words=3,max_answer_chars=4000"`` -> ``("length", {...})``."""
    from synth.io import yaml_value

    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise SynthError(f"bad filter spec '{spec}': expected NAME or NAME:key=value,...")
    options: dict[str, Any] = {}
    for item in _split_top_level(rest):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SynthError(f"bad filter option '{item}' in '{spec}': expected key=value")
        options[key.strip()] = yaml_value(value, f"filter option '{key.strip()}'")
    return name, options


def filter_specs_from_yaml(data: Any, source: str) -> list[tuple[str, dict]]:
    """A chain from YAML: a list (or ``{filters: [...]}``) of names, ``{name: {options}}``, or ``"name:k=v"``."""
    if isinstance(data, dict) and set(data) == {"filters"}:
        data = data["filters"]
    if not isinstance(data, list):
        raise SynthError(f"{source}: expected a list of filters (or 'filters:' with a list)")
    specs = []
    for position, item in enumerate(data, 1):
        if isinstance(item, str):
            specs.append(parse_filter_spec(item))
        elif isinstance(item, dict) and len(item) == 1:
            name, options = next(iter(item.items()))
            if options is not None and not isinstance(options, dict):
                raise SynthError(f"{source}: filter {position} ('{name}'): options must be a mapping")
            specs.append((str(name), options or {}))
        else:
            raise SynthError(f"{source}: filter {position}: expected a name or a one-key mapping name: {{options}}")
    return specs


def load_filter_chain(path: str | Path) -> list[tuple[str, dict]]:
    from synth.io import read_yaml

    return filter_specs_from_yaml(read_yaml(path, "filter config"), str(path))


def build_filters(specs, *, backend_factory: Callable[[], Any] | None = None) -> list[Stage]:
    """Stages from specs: ``"name:k=v"`` strings, ``(name, options)`` pairs or ``{name: options}`` mappings."""
    stages = []
    for spec in specs:
        if isinstance(spec, str):
            name, options = parse_filter_spec(spec)
        elif isinstance(spec, dict) and len(spec) == 1:
            name, options = next(iter(spec.items()))
        else:
            name, options = spec
        stages.append(build_filter(name, options or {}, backend_factory=backend_factory))
    return stages
