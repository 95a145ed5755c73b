"""What a run recipe is made of: stage specs, backend specs, the recipe's top-level fields, output names.

The bottom of `synth.run`: stage adapters, the DAG checks and the loop's checks build on these models;
`synth.run.recipe` puts them together (the stage union of every adapter) and loads a file. Reading the
file, ``-s`` overrides and file:line errors are `synth.recipe_file`'s, shared with train and mix recipes.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from synth.recipe_file import YamlDoc, issue

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: names a stage output may not take: they are the run folder's own files and folders
RESERVED_NAMES = {"cache", "shards", "logs", "manifest.json", "recipe.yaml", "state", "tmp"}
DEFAULT_BACKEND = "default"  # the backend a stage uses unless it names one; the embedded model unless defined


# ---------------------------------------------------------------- backends


class _OpenAISpec(BaseModel):
    """``backend: openai``: any OpenAI-compatible server; replicas as several ``base_urls``."""

    backend: Literal["openai"]

    @model_validator(mode="before")
    @classmethod
    def _base_url(cls, data: Any) -> Any:
        # `base_url` (one URL or a list) reads better in a recipe; the backend's field is `base_urls`
        if isinstance(data, dict) and "base_url" in data:
            data = dict(data)
            value = data.pop("base_url")
            if "base_urls" in data:
                raise ValueError("give base_url or base_urls, not both")
            data["base_urls"] = [value] if isinstance(value, str) else value
        return data


class _LocalSpec(BaseModel):
    """``backend: local``: an in-process transformers model (default: the embedded Gemma 3 270M)."""

    backend: Literal["local"]


_BACKEND_MODELS: dict[str, type[BaseModel]] = {}


def backend_spec_types() -> tuple[type[BaseModel], type[BaseModel]]:
    """The two backend spec models: the backends' own option models plus a ``backend`` tag."""
    if not _BACKEND_MODELS:
        from synth.llm.embedded import EMBEDDED_MODEL
        from synth.llm.local import LocalConfig
        from synth.llm.openai_compat import OpenAIConfig

        class OpenAIBackendSpec(_OpenAISpec, OpenAIConfig):
            model_config = ConfigDict(extra="forbid")

        class LocalBackendSpec(_LocalSpec, LocalConfig):
            model_config = ConfigDict(extra="forbid")
            model: str = Field(EMBEDDED_MODEL, description="Hub id or folder; default the embedded Gemma 3 270M")

        _BACKEND_MODELS["openai"] = OpenAIBackendSpec
        _BACKEND_MODELS["local"] = LocalBackendSpec
    return _BACKEND_MODELS["openai"], _BACKEND_MODELS["local"]


#: backend options that change where or how fast requests go, not what comes back (kept out of fingerprints)
RUNTIME_BACKEND_FIELDS = {
    "base_urls", "api_key_env", "concurrency", "rpm", "tpm", "max_retries", "timeout", "backoff_base",
    "backoff_max", "max_retry_after", "replica_failures", "replica_cooldown", "breaker_failures",
    "breaker_requests", "prices", "device", "batch_size", "threads", "token_param",
    "batch", "batch_mode", "batch_max_requests", "batch_max_bytes", "batch_poll_interval",
    "batch_completion_window", "batch_prices", "batch_retry",
}


def backend_spec(recipe: Recipe, name: str) -> BaseModel:
    """The named backend; ``default`` is the embedded local model unless the recipe defines it."""
    if name in recipe.backends:
        return recipe.backends[name]
    _, local_spec = backend_spec_types()
    return local_spec(backend="local")


def backend_identity(spec: BaseModel) -> dict[str, Any]:
    """What decides a backend's replies (model and generation options), for fingerprints and the manifest."""
    return {k: v for k, v in spec.model_dump(mode="json").items() if k not in RUNTIME_BACKEND_FIELDS}


def backend_options(spec: BaseModel) -> dict[str, Any]:
    """`synth.llm.factory.make_backend` arguments for a backend spec (never a key: those stay in env)."""
    data = spec.model_dump(exclude_unset=False)
    kind = data.pop("backend")
    model = data.pop("model", None)
    base_urls = data.pop("base_urls", None) or None
    concurrency = data.pop("concurrency", None)
    return {"backend": kind, "model": model, "base_url": base_urls, "concurrency": concurrency, **data}


# ---------------------------------------------------------------- stages


class StageResources(BaseModel):
    """What one worker of a stage needs. A stage asking for GPUs runs its shards on GPU workers of a Ray
    cluster (one actor per worker, the model loaded once per actor) and in this process, in order, with the
    local executor. Where a stage runs never changes what it writes: not part of its fingerprint."""

    model_config = ConfigDict(extra="forbid")
    gpus: float = Field(0, ge=0, description="GPUs per worker (Ray: num_gpus; 0.5 = two workers share one GPU)")
    cpus: float = Field(1, gt=0, description="CPU cores per worker (Ray: num_cpus)")


class StageSpec(BaseModel):
    """Fields every stage has. `name` names its output (``runs/RUN/NAME/``), which later stages read."""

    model_config = ConfigDict(extra="forbid")
    type: str
    name: str = Field(description="the stage's output name: later stages read it by this name")
    shard_size: int | None = Field(None, ge=1, description="records per shard (default: the recipe's)")
    resources: StageResources | None = Field(
        None, description="what each worker needs, e.g. {gpus: 1} for a model stage on a Ray cluster's GPU nodes")

    def fingerprint_fields(self) -> dict[str, Any]:
        """The spec as it decides the output (where it runs does not)."""
        return self.model_dump(mode="json", exclude={"resources"})

    @property
    def gpus(self) -> float:
        return self.resources.gpus if self.resources else 0

    #: fields naming other stages' outputs (checked by the DAG: missing names and cycles are errors)
    reference_fields: ClassVar[tuple[str, ...]] = ("input", "inputs")
    #: fields naming a backend of the recipe's ``backends``
    backend_fields: ClassVar[tuple[str, ...]] = ()

    def references(self) -> list[tuple[tuple, str]]:
        """(location inside the stage, referenced output name) for every reference."""
        refs: list[tuple[tuple, str]] = []
        for key in self.reference_fields:
            value = getattr(self, key, None)
            if isinstance(value, str):
                refs.append(((key,), value))
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, str):
                        refs.append(((key, i), item))
        return refs

    def backends_used(self) -> list[tuple[tuple, str]]:
        return [((key,), getattr(self, key)) for key in self.backend_fields if getattr(self, key, None)]


class Recipe(BaseModel):
    """The whole recipe (stages typed by `recipe_model()`)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, description="run name: the run folder is RUNS_DIR/NAME (default: the file's stem)")
    description: str | None = None
    seed: int = Field(0, description="default seed of every stage that takes one")
    shard_size: int = Field(10_000, ge=1, description="records per shard of per-record stages")
    llm_shard_size: int = Field(256, ge=1, description="records per shard of LLM stages")
    backends: dict[str, Any] = Field(default_factory=dict, description="named LLM backends; stages pick one by name")
    stages: list[Any] = Field(default_factory=list)
    loop: Any = Field(None, description="rounds of data → train → eval (see synth.run.loop_recipe)")


def check_name(doc: YamlDoc, loc: tuple, name: str) -> None:
    if not NAME_PATTERN.match(name) or name in RESERVED_NAMES or name.startswith("."):
        raise issue(doc, loc, f"'{name}' cannot name an output (letters, digits, '_', '-', '.'; "
                              f"not {', '.join(sorted(RESERVED_NAMES))})")
