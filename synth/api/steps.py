"""Steps: a recipe stage as a Python object, one class per registered stage type (``synth.ops.Dedup``).

The classes are made from the stage-type registry (`synth.run.adapters.registry`): each validates its
options against the stage's `Spec` when it is built (an unknown or bad option is a `SynthError` at once)
and carries a signature and docstring made from the Spec's fields, so a new stage type is a new step
without any edit here. A step holds its options as given; the pipeline names it, wires its input and
writes it as a recipe stage (`Step.stage`).

Options may hold other steps (``input=adapt_step``, ``sources=[{"input": step, ...}]``): the pipeline writes
their names. Backend fields (the Spec's ``backend_fields``, and ``backend`` keys such as a sampler's) take
a backend name or a `synth.backends` object.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, ClassVar

from synth.api.backends import Backend
from synth.api.specs import docstring, option_error, signature
from synth.core.operator import class_name
from synth.errors import SynthError

#: stands in for a reference the pipeline wires later (the previous step's output), while validating
LATER = "__wired_later__"
SOURCE_NAME = "source"  # the output name of the source a pipeline runs on




class Step:
    """One stage of a pipeline; see `synth.ops` for the step types."""

    type: ClassVar[str] = ""

    def __init__(self, *, name: str | None = None, input: str | Step | None = None, **options: Any):
        self.name = name
        self.input = input
        self.options = options
        self.owner = f"synth.ops.{type(self).__name__}"
        self._check_given()
        placed: list[tuple] = []  # where the options hold backend objects
        data = self._data(name or self.type, self._ref(input) if input is not None else None, placeholders=True,
                          placed=placed)
        self.spec = self._validate(data, placed)
        self._check_backend_places(placed, self.spec)

    # -- what the step is

    @classmethod
    def adapter(cls):
        from synth.run.adapters import registry

        return registry()[cls.type]

    @classmethod
    def fields(cls) -> dict[str, Any]:
        return cls.adapter().Spec.model_fields

    @classmethod
    def reads_previous(cls) -> str | None:
        """The field wired to the previous step's output when not given: ``input`` or ``inputs``."""
        fields = cls.fields()
        return "input" if "input" in fields else "inputs" if "inputs" in fields else None

    # -- validation

    def _check_given(self) -> None:
        from synth.run.recipe import NAME_PATTERN, RESERVED_NAMES, SECRET_KEYS

        if self.name is not None and (not isinstance(self.name, str) or not NAME_PATTERN.match(self.name)
                                      or self.name in RESERVED_NAMES):
            raise SynthError(f"{self.owner}: name: {self.name!r} cannot name an output (letters, digits, '_', '-', "
                             f"'.'; not {', '.join(sorted(RESERVED_NAMES))})")
        if self.input is not None and not isinstance(self.input, (str, Step)):
            raise SynthError(f"{self.owner}: input: give a step or the name of an output, not "
                             f"{type(self.input).__name__}")
        for key in self.options:
            if str(key).lower() in SECRET_KEYS:
                raise SynthError(f"{self.owner}: {key}: secrets never go in a pipeline (it is written out as a "
                                 "recipe); set them in the environment (a backend's api_key_env names the variable)")

    def _check_backend_places(self, placed: list[tuple], spec) -> None:
        """A backend object belongs where the stage names a backend: a backend field, a ``backend`` key (a
        sampler's) or a place the validated `spec` reports among the backends it uses."""
        fields = {*self.adapter().Spec.backend_fields, "backend"}
        used = {tuple(loc) for loc, _name in spec.backends_used()} if spec is not None else set()
        for loc in placed:
            if loc and (loc in used or loc[-1] in fields):
                continue
            dotted = ".".join(str(x) for x in loc)
            raise SynthError(f"{self.owner}: {dotted}: takes a value, not a backend object (backends go in: "
                             f"{', '.join(sorted(fields))})")

    @staticmethod
    def _ref(value: str | Step, names: dict[int, str] | None = None) -> str:
        """An output name; a step's is the one its pipeline gives it (`names`: id(step) → name)."""
        if not isinstance(value, Step):
            return value
        if names is None:
            return value.name or value.type
        if id(value) not in names:
            raise SynthError(f"{value!r} is given as an input but is not a step of this pipeline; add it to the "
                             "steps or name its output")
        return names[id(value)]

    def _substitute(self, value: Any, step_name, backend_name, loc: tuple) -> Any:
        """`value` with steps and backends replaced by their names (`backend_name(backend, loc)`)."""
        if isinstance(value, Step):
            return step_name(value)
        if isinstance(value, Backend):
            return backend_name(value, loc)
        if isinstance(value, dict):
            return {k: self._substitute(v, step_name, backend_name, (*loc, k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._substitute(v, step_name, backend_name, (*loc, i)) for i, v in enumerate(value)]
        if isinstance(value, Path):
            return str(value)
        return value

    def _data(self, name: str, input_name: str | None, placeholders: bool = False,
              names: dict[int, str] | None = None, backend_names: dict[Backend, str] | None = None,
              placed: list[tuple] | None = None) -> dict:
        """The stage's recipe mapping (before validation); with `placeholders`, references wired later and
        backends (their places noted in `placed`) stand in as names."""
        step_name = (lambda step: self._ref(step, names)) if names is not None else (lambda s: s.name or s.type)

        def backend_name(backend: Backend, loc: tuple) -> str:
            if backend_names is not None:
                return backend_names[backend]
            if placed is not None:
                placed.append(loc)
            return f"__backend_{len(placed or ())}__"
        data: dict[str, Any] = {"type": self.type, "name": name}
        wired = self.reads_previous()
        if input_name is not None:
            data["input"] = input_name  # an unknown key where the stage reads no input: the error says so
        elif wired == "input" and placeholders:
            data["input"] = LATER
        data.update(self._substitute(self.options, step_name, backend_name, ()))
        if wired == "inputs" and "inputs" not in data and placeholders:
            data["inputs"] = [LATER]
        return data

    def _validate(self, data: dict, placed: list[tuple] = ()):
        from pydantic import ValidationError

        from synth.run.recipe import clean_loc

        adapter = self.adapter()
        try:
            spec = adapter.Spec.model_validate(data)
        except ValidationError as e:
            wrong = [loc for loc in placed if loc in {clean_loc(tuple(i["loc"]), data) for i in e.errors()}]
            self._check_backend_places(wrong, None)  # a backend object where a value goes: say that
            first = [k for k in ("name", "input", "inputs") if k == "name" or k in adapter.Spec.model_fields]
            valid = [*first, *[k for k in adapter.Spec.model_fields if k not in ("type", *first)]]
            raise option_error(self.owner, e, valid, lambda loc: adapter.known_keys(loc, data), data) from None
        problems = adapter.check(spec)
        if problems:
            loc, item = problems[0]
            dotted = ".".join(str(x) for x in loc)
            raise SynthError(f"{self.owner}: {dotted}: {str(item.get('msg', 'invalid')).replace('Value error, ', '')}")
        return spec

    # -- as a recipe stage

    def stage(self, name: str, previous: str, names: dict[int, str], backend_names: dict[Backend, str],
              base_dir: Path) -> dict[str, Any]:
        """The recipe stage: only the options given (no defaults), steps and backends by name, relative paths
        that exist under `base_dir` made absolute (so the recipe runs from any folder)."""
        input_name = self._ref(self.input, names) if self.input is not None else None
        data = self._data(name, input_name, names=names, backend_names=backend_names)
        wired = self.reads_previous()
        if wired == "input" and "input" not in data:
            data["input"] = previous
        elif wired == "inputs" and "inputs" not in data:
            data["inputs"] = [previous]
        spec = self._validate(data)
        resolved = self.adapter().resolve(spec, base_dir).model_dump(mode="json", exclude_unset=True)
        given = spec.model_dump(mode="json", exclude_unset=True)
        head = {k: given[k] for k in ("type", "name", "input", "inputs") if k in given}
        return {**head, **{k: resolved.get(k, v) for k, v in given.items() if k not in head}}

    # -- Python niceties

    def __repr__(self) -> str:
        args = [f"{k}={v!r}" for k, v in (("name", self.name), ("input", self.input)) if v is not None]
        args += [f"{k}={v!r}" for k, v in self.options.items()]
        return f"{type(self).__name__}({', '.join(args)})"

    def __eq__(self, other: object) -> bool:
        return (type(other) is type(self) and isinstance(other, Step)
                and (self.name, self.input, self.options) == (other.name, other.input, other.options))

    __hash__ = object.__hash__


_CLASSES: dict[str, type[Step]] = {}


def step_class(type_: str) -> type[Step]:
    """The step class of a registered stage type (made once, with its signature and docstring)."""
    cls = _CLASSES.get(type_)
    if cls is None:
        from synth.run.adapters import registry

        adapter = registry().get(type_)
        if adapter is None:
            raise SynthError(f"unknown stage type '{type_}' (one of: {', '.join(sorted(registry()))})")
        name = class_name(type_)
        cls = type(name, (Step,), {"type": type_, "__module__": "synth.ops", "__qualname__": name})
        _document(cls, adapter)
        _CLASSES[type_] = cls
    return cls


def step_types() -> dict[str, str]:
    """Class name → stage type, for every registered type that is a step (a source is the run's argument)."""
    from synth.run.adapters import registry

    return {class_name(t): t for t, adapter in registry().items() if not adapter.source}


def _document(cls: type[Step], adapter) -> None:
    spec = adapter.Spec
    leading = [inspect.Parameter("name", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=str | None)]
    if "input" in spec.model_fields:
        leading.append(inspect.Parameter("input", inspect.Parameter.KEYWORD_ONLY, default=None,
                                         annotation=str | Step | None))
    sig = signature(spec, leading, skip={"type"}, extra=spec.model_config.get("extra") == "allow")
    notes = {"name": f"its output's name (default '{cls.type}'; '{cls.type}_2', ... when repeated)",
             "input": "the output it reads: a step or an output name (default: the previous step's output; "
                      "the run's source for the first step)",
             "inputs": "the outputs it reads: steps or output names (default: the previous step's output)"}
    summary = (spec.__doc__ or "").strip() if "__doc__" in vars(spec) and spec.__doc__ else f"The '{cls.type}' stage."
    footer = (f"In a recipe: `- type: {cls.type}`. Options are validated against "
              f"`{spec.__module__}.{spec.__name__}` when the step is built.")
    cls.__signature__ = sig  # type: ignore[attr-defined]
    cls.__doc__ = docstring(summary, sig, spec, notes, footer)
