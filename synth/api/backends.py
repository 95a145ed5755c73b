"""LLM backends as Python objects: ``synth.backends.OpenAI(model=..., base_url=...)`` and
``synth.backends.Local(model=...)``.

Each is the recipe's backend spec (`synth.run.recipe.backend_spec_types`), validated when it is built, so
a step's backend field takes a name from the recipe's ``backends:`` or one of these objects; a pipeline
writes the objects under ``backends:`` (named ``b1``, ``b2``, ... unless they have a ``name``). Keys never go
in: the backend reads its key from the environment variable ``api_key_env`` names (OPENAI_API_KEY).
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from synth.api.specs import docstring, option_error, signature
from synth.errors import SynthError


def _spec_model(kind: str):
    from synth.run.recipe import backend_spec_types

    openai_spec, local_spec = backend_spec_types()
    return openai_spec if kind == "openai" else local_spec


class Backend:
    """A backend spec; see `OpenAI` and `Local`."""

    kind: ClassVar[str] = ""

    def __init__(self, *, name: str | None = None, **options: Any):
        from pydantic import ValidationError

        from synth.run.recipe import SECRET_KEYS

        owner = f"synth.backends.{type(self).__name__}"
        for key in options:
            if str(key).lower() in SECRET_KEYS:
                raise SynthError(f"{owner}: {key}: keys never go in a pipeline (it is written out as a recipe); "
                                 "set the key in the environment, e.g. OPENAI_API_KEY, and name the variable "
                                 "with api_key_env=")
        if name is not None and not isinstance(name, str):
            raise SynthError(f"{owner}: name: a backend name is a string, not {type(name).__name__}")
        model = _spec_model(self.kind)
        try:
            spec = model.model_validate({"backend": self.kind, **options})
        except ValidationError as e:
            raise option_error(owner, e, ["name", *[k for k in model.model_fields if k != "backend"],
                                          *(["base_url"] if self.kind == "openai" else [])]) from None
        self.name = name
        self.spec = spec

    def options(self) -> dict[str, Any]:
        """The options given (defaults left out), as the recipe's ``backends:`` writes them."""
        data = self.spec.model_dump(mode="json", exclude_unset=True)
        urls = data.pop("base_urls", None)
        if urls is not None:  # one URL reads better as base_url (both load the same)
            data["base_url" if len(urls) == 1 else "base_urls"] = urls[0] if len(urls) == 1 else urls
        return {"backend": data.pop("backend"), **data}

    @classmethod
    def from_options(cls, options: dict[str, Any], name: str | None = None) -> Backend:
        """The backend of a recipe's ``backends:`` entry."""
        kind = options.get("backend") if isinstance(options, dict) else None
        backend_cls = {"openai": OpenAI, "local": Local}.get(kind)
        if backend_cls is None:
            raise SynthError(f"backends.{name}: needs 'backend: openai' or 'backend: local'")
        return backend_cls(name=name, **{k: v for k, v in options.items() if k != "backend"})

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and (other.name, other.options()) == (self.name, self.options())

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.name, repr(sorted(self.options().items()))))

    def __repr__(self) -> str:
        args = [f"{k}={v!r}" for k, v in self.options().items() if k != "backend"]
        if self.name is not None:
            args.insert(0, f"name={self.name!r}")
        return f"{type(self).__name__}({', '.join(args)})"


class OpenAI(Backend):
    kind = "openai"

    def __init__(self, model: str, *, base_url: str | list[str] | None = None, name: str | None = None,
                 **options: Any):
        if base_url is not None:
            options["base_url"] = base_url
        super().__init__(name=name, model=model, **options)


class Local(Backend):
    kind = "local"

    def __init__(self, model: str | None = None, *, name: str | None = None, **options: Any):
        super().__init__(name=name, **({"model": model} if model is not None else {}), **options)


def _document(cls: type[Backend], summary: str, leading: list[inspect.Parameter]) -> None:
    model = _spec_model(cls.kind)
    name = inspect.Parameter("name", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=str | None)
    sig = signature(model, [*leading, name], skip={"backend", "base_urls"})
    notes = {"name": "its name under the recipe's backends: (default b1, b2, ... in the order steps use them)",
             "base_url": "the server's URL (several: replicas)"}
    cls.__signature__ = sig  # type: ignore[attr-defined]
    cls.__doc__ = docstring(summary, sig, model, notes)


_document(OpenAI, "An OpenAI-compatible server (vLLM, SGLang, llama.cpp, OpenAI, ...).",
          [inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str),
           inspect.Parameter("base_url", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=str | None)])
_document(Local, "An in-process transformers model (default: the embedded Gemma 3 270M).",
          [inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=str | None)])

__all__ = ["Backend", "Local", "OpenAI"]
