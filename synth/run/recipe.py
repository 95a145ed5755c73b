"""Recipes: one YAML file → a validated `Recipe` (backends + a list of stages wired by named outputs).

A recipe maps 1:1 onto pydantic models: ``stages`` is a discriminated union (on ``type``) of every stage
type's spec (see `synth.run.adapters`), each forbidding unknown keys. Every error names its place in the
file, ``recipe.yaml:14: stages.3.filters.0.treshold: unknown key``; an override's error names the
override (``-s stages.answers.max_tokens=abc: ...``). Secrets are never part of a recipe: a key such as
``api_key`` is refused, and backends read keys from the environment.

The file, its ``-s path.to.key=value`` overrides and the error lines are `synth.recipe_file`'s (the same
loader as train and mix recipes); the models a recipe is made of are `synth.run.spec`'s. This module puts
them together: the stage union of every adapter, then the wiring (`synth.run.dag`) and loop checks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Field, ValidationError

from synth import recipe_file
from synth.recipe_file import (
    SECRET_KEYS,
    RecipeError,
    YamlDoc,
    apply_overrides,
    clean_loc,
    issue,
    read_recipe,
    validate,
)
from synth.run.spec import (
    DEFAULT_BACKEND,
    NAME_PATTERN,
    RESERVED_NAMES,
    RUNTIME_BACKEND_FIELDS,
    Recipe,
    StageResources,
    StageSpec,
    backend_identity,
    backend_options,
    backend_spec,
    backend_spec_types,
    check_name,
)

# names other code imports from here (the Python API, tests, users); they live in synth.run.spec (what a
# recipe is made of) and synth.recipe_file (the file, overrides, errors), which code inside synth.run uses
__all__ = [
    "DEFAULT_BACKEND", "NAME_PATTERN", "RESERVED_NAMES", "RUNTIME_BACKEND_FIELDS", "SECRET_KEYS", "LoadedRecipe",
    "Recipe", "RecipeError", "StageResources", "StageSpec", "YamlDoc", "apply_overrides", "backend_identity",
    "backend_options", "backend_spec", "backend_spec_types", "check_name", "clean_loc", "format_errors",
    "format_items", "issue", "load_recipe", "recipe_model",
]

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


# ---------------------------------------------------------------- errors


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


def _tag_choices(loc: tuple) -> tuple[str, str, str, str | None] | None:
    """A stage's ``type:`` and a backend's ``backend:`` name their choices (other unions: the generic words).
    Stage types grow with plugins: an unknown one gets the closest and a pointer, not the whole list."""
    from synth.run.adapters import registry

    if len(loc) == 2 and loc[0] == "stages":
        return "stage type", "type", ", ".join(sorted(registry())), "`synth operators` lists them all"
    if len(loc) == 2 and loc[0] == "backends":
        return "backend", "backend", "openai, local", None
    return None


def format_errors(error: ValidationError, doc: YamlDoc) -> str:
    """One line: ``FILE:LINE: key.path: what`` for up to three errors."""
    return format_items(error.errors(), doc)


def format_items(items: list[dict], doc: YamlDoc, prefix: tuple = ()) -> str:
    """`format_errors` for pydantic error dicts whose locations start at `prefix`."""
    return recipe_file.format_items(items, doc, prefix, _known_keys, _tag_choices)


# ---------------------------------------------------------------- loading


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
    doc = read_recipe(path, "recipe", overrides, shape="a mapping with 'stages:' (and optionally 'backends:')")
    secret = _find_secret(doc.data)
    if secret:
        raise issue(doc, secret, "secrets never go in a recipe (it is copied into the run folder); "
                                 "set them in the environment, e.g. OPENAI_API_KEY (a backend's api_key_env names the variable)")
    recipe = validate(recipe_model(), doc, known_keys=_known_keys, tag_choices=_tag_choices)
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
