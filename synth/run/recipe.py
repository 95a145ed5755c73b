"""Recipes: one YAML file → a validated `Recipe` (backends + a list of stages wired by named outputs).

A recipe maps 1:1 onto pydantic models: ``stages`` is a discriminated union (on ``type``) of every stage
type's spec (see `synth.run.adapters`), each forbidding unknown keys. Every error names its place in the
file, ``recipe.yaml:14: stages.3.filters.0.treshold: unknown key``; an override's error names the
override (``-s stages.answers.max_tokens=abc: ...``). Secrets are never part of a recipe: a key such as
``api_key`` is refused, and backends read keys from the environment.

``-s path.to.key=value`` overrides: the path walks mappings by key and lists by index; under ``stages``
a stage may also be named by its ``name`` (``-s stages.answers.max_tokens=64``). The value is read as a
YAML scalar or flow collection (``3`` is an int, ``[a, b]`` a list, ``null`` removes nothing but sets
None).
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from synth.errors import SynthError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: names a stage output may not take: they are the run folder's own files and folders
RESERVED_NAMES = {"cache", "shards", "logs", "manifest.json", "recipe.yaml", "state", "tmp"}
#: keys that would hold a secret; a recipe is shared and stored in the run folder, secrets live in env
DEFAULT_BACKEND = "default"  # the backend a stage uses unless it names one; the embedded model unless defined
SECRET_KEYS = {"api_key", "apikey", "openai_api_key", "token", "hf_token", "access_token", "password",
               "secret", "authorization", "bearer"}


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


_RECIPE_MODEL: list[type[Recipe]] = []


def recipe_model() -> type[Recipe]:
    """`Recipe` with ``stages`` as the discriminated union of every registered stage spec."""
    if not _RECIPE_MODEL:
        from synth.run.adapters import registry

        specs = tuple(adapter.Spec for adapter in registry().values())
        openai_spec, local_spec = backend_spec_types()
        stage_union = Annotated[Union[specs], Field(discriminator="type")]  # type: ignore[valid-type]
        backend_union = Annotated[Union[openai_spec, local_spec], Field(discriminator="backend")]

        from synth.run.loop_recipe import LoopSpec

        class TypedRecipe(Recipe):
            backends: dict[str, backend_union] = Field(default_factory=dict)  # type: ignore[valid-type]
            stages: list[stage_union] = Field(default_factory=list)  # type: ignore[valid-type]
            loop: LoopSpec | None = None

        _RECIPE_MODEL.append(TypedRecipe)
    return _RECIPE_MODEL[0]


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


def _known_keys(loc: tuple, data: Any) -> list[str]:
    """Keys accepted at the parent of `loc` (for 'did you mean'); best effort."""
    from synth.run.adapters import registry

    parent = loc[:-1]
    try:
        if len(parent) >= 2 and parent[0] == "stages" and isinstance(parent[1], int):
            stage = data["stages"][parent[1]]
            adapter = registry().get(stage.get("type")) if isinstance(stage, dict) else None
            return adapter.known_keys(parent[2:], stage) if adapter is not None else []
        if len(parent) == 2 and parent[0] == "backends":
            kind = (data.get("backends") or {}).get(parent[1], {}).get("backend")
            openai_spec, local_spec = backend_spec_types()
            model = {"openai": openai_spec, "local": local_spec}.get(kind)
            return list(model.model_fields) + (["base_url"] if kind == "openai" else []) if model else []
        if not parent:
            return list(recipe_model().model_fields)
    except Exception:  # a hint only
        return []
    return []


def format_errors(error: ValidationError, doc: YamlDoc) -> str:
    """One line: ``FILE:LINE: key.path: what`` for up to three errors."""
    return format_items(error.errors(), doc)


def format_items(items: list[dict], doc: YamlDoc, prefix: tuple = ()) -> str:
    """`format_errors` for pydantic error dicts whose locations start at `prefix`."""
    from synth.run.adapters import registry

    parts = []
    for item in items[:3]:
        loc = clean_loc((*prefix, *tuple(item.get("loc", ()))), doc.data)
        dotted = ".".join(str(x) for x in loc) or "<root>"
        kind = item.get("type")
        msg = item.get("msg", "invalid")
        if kind == "extra_forbidden":
            msg = "unknown key"
            close = difflib.get_close_matches(str(loc[-1]), _known_keys(loc, doc.data), n=1)
            if close:
                msg += f" (did you mean '{close[0]}'?)"
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            ctx = item.get("ctx") or {}
            tag = ctx.get("tag")
            at_stage = len(loc) == 2 and loc[0] == "stages"
            at_backend = len(loc) == 2 and loc[0] == "backends"
            key = "type" if at_stage else "backend" if at_backend else str(ctx.get("discriminator", "name")).strip("'")
            if at_stage:
                what, choices = "stage type", ", ".join(sorted(registry()))
            elif at_backend:
                what, choices = "backend", "openai, local"
            else:
                what = "filter" if "filters" in loc else key
                choices = str(ctx.get("expected_tags", "")).replace("'", "")
            close = difflib.get_close_matches(str(tag), [c.strip() for c in choices.split(",")], n=1)
            if kind == "union_tag_invalid" and at_stage:  # the list grows with plugins: suggest, then point
                hint = f"did you mean '{close[0]}'? " if close else ""
                msg = f"unknown {what} '{tag}' ({hint}`synth operators` lists them all)"
            elif kind == "union_tag_invalid":
                msg = f"unknown {what} '{tag}' (one of: {choices})"
            else:
                msg = f"needs '{key}:' (one of: {choices})"
            if tag is not None or at_stage or at_backend:
                loc = (*loc, key)
                dotted = ".".join(str(x) for x in loc)
        msg = msg.replace("Value error, ", "")
        parts.append(f"{doc.where(loc)}: {dotted}: {msg}")
    more = "" if len(items) <= 3 else f" (+{len(items) - 3} more)"
    return "; ".join(parts) + more


class RecipeError(SynthError):
    """A recipe that cannot run: the message names the file and line (or the override)."""


def issue(doc: YamlDoc, loc: tuple, message: str) -> RecipeError:
    dotted = ".".join(str(x) for x in loc)
    return RecipeError(f"{doc.where(loc)}: {dotted}: {message}")


# ---------------------------------------------------------------- overrides


def shown_override(text: str) -> str:
    """An override as errors show it: the value of a secret (or of anything that looks like a key) left out."""
    from synth.errors import looks_like_key

    key, eq, value = text.partition("=")
    last = key.strip().split(".")[-1].lower()
    if eq and (last in SECRET_KEYS or looks_like_key(value.strip())):
        return f"{key.strip()}=***"
    return text


def parse_override(text: str) -> tuple[list[str], Any]:
    from synth.io import yaml_value

    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise SynthError(f"-s {text}: expected path.to.key=value, e.g. -s stages.answers.max_tokens=64")
    return [p for p in key.strip().split(".") if p != ""], yaml_value(value, f"-s {key.strip()}")


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
                raise SynthError(f"-s {text}: {where} is a value, not a mapping or list")
        applied.append((tuple(resolved), text))
    return data, applied


def _list_index(node: list, step: str, resolved: list, text: str) -> int:
    if step.lstrip("-").isdigit():
        index = int(step)
        if not -len(node) <= index < len(node):
            raise SynthError(f"-s {text}: {'.'.join(map(str, resolved))} has {len(node)} items; no index {index}")
        return index % len(node)
    names = [item.get("name") if isinstance(item, dict) else None for item in node]
    if step in names:
        return names.index(step)
    raise SynthError(f"-s {text}: no stage named '{step}' (stages: {', '.join(str(n) for n in names if n)})")


# ---------------------------------------------------------------- loading


def _compose(path: Path):
    from synth.io import compose_yaml

    return compose_yaml(path.read_text(encoding="utf-8"))  # None on errors: read_yaml has reported them


def _find_secret(data: Any, loc: tuple = ()) -> tuple | None:
    if isinstance(data, dict):
        for key, value in data.items():
            if str(key).lower() in SECRET_KEYS:
                return (*loc, key)
            found = _find_secret(value, (*loc, key))
            if found:
                return found
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found = _find_secret(value, (*loc, i))
            if found:
                return found
    return None


@dataclass
class LoadedRecipe:
    recipe: Recipe
    doc: YamlDoc

    @property
    def path(self) -> Path:
        return self.doc.path

    @property
    def base_dir(self) -> Path:
        return self.doc.path.resolve().parent


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> LoadedRecipe:
    """Read, override and validate a recipe, and check its wiring (names, references, cycles, backends).
    Every error is a `RecipeError` naming the file and line."""
    from synth.io import read_yaml

    path = Path(path)
    data = read_yaml(path, "recipe")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}:1: a recipe is a mapping with 'stages:' (and optionally 'backends:')")
    doc = YamlDoc(path=path, data=data, root=_compose(path))
    data, doc.overrides = apply_overrides(data, list(overrides or []))
    doc.data = data
    secret = _find_secret(data)
    if secret:
        raise issue(doc, secret, "secrets never go in a recipe (it is copied into the run folder); "
                                 "set them in the environment, e.g. OPENAI_API_KEY (a backend's api_key_env names the variable)")
    try:
        recipe = recipe_model().model_validate(data)
    except ValidationError as e:
        raise RecipeError(format_errors(e, doc)) from None
    if not recipe.stages:
        raise issue(doc, ("stages",), "no stages: list at least one")
    from synth.run.adapters import registry

    for i, stage in enumerate(recipe.stages):
        problems = registry()[stage.type].check(stage)
        if problems:
            raise RecipeError(format_items([{**err, "loc": loc} for loc, err in problems], doc, ("stages", i)))
    from synth.run.dag import check_wiring

    check_wiring(recipe, doc)
    from synth.run.loop_recipe import check_loop

    check_loop(recipe, doc)
    return LoadedRecipe(recipe=recipe, doc=doc)


def check_name(doc: YamlDoc, loc: tuple, name: str) -> None:
    if not NAME_PATTERN.match(name) or name in RESERVED_NAMES or name.startswith("."):
        raise issue(doc, loc, f"'{name}' cannot name an output (letters, digits, '_', '-', '.'; "
                              f"not {', '.join(sorted(RESERVED_NAMES))})")
