"""`synth.Pipeline`: steps (``synth.ops``) run on a path, a Hub id or an in-memory `datasets.Dataset`
by the same runner as ``synth run``, and written as (or read from) the recipe YAML it runs.

A pipeline is a recipe: ``to_yaml()`` gives the stages (steps wired in order: each reads the previous
step's output unless it names an ``input``; the first reads the run's source, the output named
``source``), ``to_yaml(source=...)`` adds the source stage, and ``run`` writes that recipe to a temporary
file and calls `synth.run.run_recipe` on it. With ``output_dir`` the run folder is ``output_dir``
(sharded, resumable, ``manifest.json``, exactly as ``synth run``); without it the run happens in a
temporary folder and the last step's output comes back in memory.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from synth.api.backends import Backend
from synth.api.steps import SOURCE_NAME, Step, step_class
from synth.errors import SynthError
from synth.run.runner import RunResult

RECIPE_FILE = "pipeline.yaml"  # the generated recipe, in a temporary folder while it runs
MEMORY_RUN = "pipeline"  # the run folder's name in a temporary runs folder (no output_dir)
RECIPE_KEYS = ("name", "description", "seed", "shard_size", "llm_shard_size", "backends", "stages")


@dataclass
class PipelineRun(RunResult):
    """What `synth run` returns (run folder, stage outcomes, manifest), plus the last step's output."""

    last: str | None = None

    @cached_property
    def dataset(self):
        """The last step's output as a `datasets.Dataset` (a `DatasetDict` for a mix), read from the run
        folder; None when the last step writes files (export) or nothing (push)."""
        from datasets import load_from_disk

        from synth.data import quiet_datasets
        from synth.run.adapters import registry

        outcome = next((s for s in self.stages if s.name == self.last), None)
        if outcome is None or outcome.ref is None or registry()[outcome.type].output != "dataset":
            return None
        with quiet_datasets():
            return load_from_disk(outcome.ref.path)


class Pipeline:
    """Steps run in order on a source; see the module docs.

    ``seed``, ``shard_size`` and ``llm_shard_size`` are the recipe's (records per shard of per-record and
    of LLM stages); ``name`` is the recipe's name; ``backends`` are named backends that steps refer to by
    name (backend objects given to steps are added by themselves)."""

    def __init__(self, steps: Iterable[Step], *, seed: int = 0, shard_size: int | None = None,
                 llm_shard_size: int | None = None, name: str | None = None, description: str | None = None,
                 backends: dict[str, Backend] | Iterable[Backend] | None = None):
        from synth.run.recipe import NAME_PATTERN

        if isinstance(steps, Step):
            steps = [steps]
        self.steps = list(steps)
        for i, step in enumerate(self.steps):
            if not isinstance(step, Step):
                raise SynthError(f"synth.Pipeline: step {i + 1} is a {type(step).__name__}, not a step; build steps "
                                 "with synth.ops, e.g. synth.ops.Dedup(threshold=0.8)")
        if not self.steps:
            raise SynthError("synth.Pipeline: no steps; give a list of synth.ops steps")
        for key, value in (("seed", seed), ("shard_size", shard_size), ("llm_shard_size", llm_shard_size)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or (key != "seed" and value < 1)):
                raise SynthError(f"synth.Pipeline: {key}: expected {'an integer' if key == 'seed' else 'a whole number >= 1'}"
                                 f", got {value!r}")
        if name is not None and (not isinstance(name, str) or not NAME_PATTERN.match(name)):
            raise SynthError(f"synth.Pipeline: name: {name!r}: use letters, digits, '_', '-' or '.'")
        self.seed, self.shard_size, self.llm_shard_size = seed, shard_size, llm_shard_size
        self.name, self.description = name, description
        if backends is None:
            backends = {}
        elif not isinstance(backends, dict):
            backends = {getattr(b, "name", None): b for b in backends}
        for key, backend in backends.items():
            if not isinstance(backend, Backend) or not key:
                raise SynthError(f"synth.Pipeline: backends: {key!r} is not a named synth.backends object")
        self.backends = {key: (b if b.name == key else Backend.from_options(b.options(), key))
                         for key, b in backends.items()}

    # ------------------------------------------------------------ the recipe

    def _names(self) -> tuple[list[str], dict[int, str]]:
        """Each step's output name (its own, or its type; repeated types get ``_2``, ``_3``...)."""
        given = [s.name for s in self.steps if s.name]
        for name in given:
            if given.count(name) > 1:
                raise SynthError(f"synth.Pipeline: two steps are named '{name}'; give each its own name=")
        taken, names = set(given), []
        for step in self.steps:
            name = step.name
            if name is None:
                name, k = step.type, 1
                while name in taken:
                    k += 1
                    name = f"{step.type}_{k}"
                taken.add(name)
            if name == SOURCE_NAME and step.type != "source":
                raise SynthError(f"synth.Pipeline: '{SOURCE_NAME}' names the run's source; give the {step.type} "
                                 "step another name=")
            names.append(name)
        ids: dict[int, str] = {}
        for step, name in zip(self.steps, names):
            ids.setdefault(id(step), name)
        return names, ids

    def _backend_names(self) -> tuple[dict[str, Backend], dict[Backend, str]]:
        """The recipe's ``backends:`` (name → backend) and every backend object the steps hold → its name
        there (its own, else b1, b2... in the order steps use them); the pipeline's named backends first."""
        found = [b for step in self.steps for b in _backends_in(step.options)]
        taken = set(self.backends) | {b.name for b in found if b.name is not None}
        named: dict[str, Backend] = dict(self.backends)
        out = {b: key for key, b in named.items()}
        k = 0
        for backend in found:
            if backend in out:
                continue
            if backend.name is not None:
                if backend.name in named:
                    raise SynthError(f"synth.Pipeline: two different backends are named '{backend.name}'")
                key = backend.name
            else:
                k += 1
                while f"b{k}" in taken:
                    k += 1
                key = f"b{k}"
            named[key] = backend
            out[backend] = key
        return named, out

    def to_recipe(self, source: Any = None, *, split: str | None = None, limit: int | None = None) -> dict:
        """The recipe `synth run` runs (only the options given, relative paths that exist made absolute);
        with `source`, its ``source`` stage first (see `run` for what a source may be)."""
        names, ids = self._names()
        named_backends, backend_names = self._backend_names()
        base_dir = Path.cwd()
        recipe: dict[str, Any] = {}
        for key, value, default in (("name", self.name, None), ("description", self.description, None),
                                    ("seed", self.seed, 0), ("shard_size", self.shard_size, None),
                                    ("llm_shard_size", self.llm_shard_size, None)):
            if value != default:
                recipe[key] = value
        if named_backends:
            recipe["backends"] = {key: b.options() for key, b in named_backends.items()}
        stages = []
        if source is not None:
            if SOURCE_NAME in names:
                raise SynthError(f"synth.Pipeline: this pipeline has its own '{SOURCE_NAME}' stage; run it without "
                                 "a source")
            stages.append(source_stage(source, split, limit, base_dir))
        elif split is not None or limit is not None:
            raise SynthError("synth.Pipeline: split= and limit= apply to a source; give one")
        previous = SOURCE_NAME
        for step, name in zip(self.steps, names):
            stages.append(step.stage(name, previous, ids, backend_names, base_dir))
            previous = name
        recipe["stages"] = stages
        return recipe

    def to_yaml(self, source: Any = None, *, split: str | None = None, limit: int | None = None) -> str:
        """`to_recipe` as YAML text (what ``synth run FILE`` runs once it has a source stage)."""
        import yaml

        return yaml.safe_dump(self.to_recipe(source, split=split, limit=limit), sort_keys=False,
                              allow_unicode=True)

    @classmethod
    def from_recipe(cls, data: dict, base_dir: str | os.PathLike | None = None, where: str = "recipe") -> Pipeline:
        """The pipeline of a recipe mapping (its stages, source stages included, as steps). Relative paths
        found under `base_dir` (a recipe file's folder) are made absolute, as ``synth run`` does."""
        if not isinstance(data, dict):
            raise SynthError(f"{where}: a recipe is a mapping with 'stages:'")
        if data.get("loop") is not None:
            raise SynthError(f"{where}: loop: a closed loop runs with `synth run`; a Pipeline holds stages only")
        unknown = [k for k in data if k not in (*RECIPE_KEYS, "loop")]
        if unknown:
            raise SynthError(f"{where}: {unknown[0]}: unknown key (valid keys: {', '.join(RECIPE_KEYS)})")
        backends = data.get("backends") or {}
        if not isinstance(backends, dict):
            raise SynthError(f"{where}: backends: a mapping of name → backend options")
        objects = {}
        for key, options in backends.items():
            try:
                objects[key] = Backend.from_options(options, key)
            except SynthError as e:
                raise SynthError(f"{where}: backends.{key}: {e}") from None
        stages = data.get("stages")
        if not isinstance(stages, list) or not stages:
            raise SynthError(f"{where}: stages: list at least one stage")
        steps = []
        for i, stage in enumerate(stages):
            try:
                steps.append(_step_of(stage, Path(base_dir) if base_dir is not None else None))
            except SynthError as e:
                raise SynthError(f"{where}: stages.{i}: {e}") from None
        options = {k: data[k] for k in ("seed", "shard_size", "llm_shard_size", "name", "description") if k in data}
        try:
            return cls(steps, backends=objects, **options)
        except SynthError as e:
            raise SynthError(f"{where}: {e}") from None

    @classmethod
    def from_yaml(cls, text_or_path: str | os.PathLike) -> Pipeline:
        """The pipeline of recipe YAML: a file (relative paths in it are relative to its folder) or text."""
        from synth.io import parse_yaml, read_yaml

        text = str(text_or_path)
        if isinstance(text_or_path, os.PathLike) or ("\n" not in text and text.endswith((".yaml", ".yml"))):
            path = Path(text_or_path)
            return cls.from_recipe(read_yaml(path, "recipe"), base_dir=path.resolve().parent, where=str(path))
        return cls.from_recipe(parse_yaml(text, "recipe text", "recipe"), where="recipe text")

    # ------------------------------------------------------------ running

    def run(self, source: Any = None, output_dir: str | os.PathLike | None = None, *, split: str | None = None,
            limit: int | None = None, workers: int = 1, executor: str = "local", ray_address: str | None = None):
        """Run the pipeline on `source`: a local path (a dataset folder, Parquet/JSONL/CSV, an image folder,
        WebDataset shards), a Hub id, an in-memory `datasets.Dataset`/`DatasetDict`, or a mapping of the
        ``source`` stage's options (``{"path": ..., "config": ...}``); None when the pipeline has its own
        source stages. `split` and `limit` pick the source's rows.

        With `output_dir`: the run folder (resumable; a second run reuses every unchanged stage); returns a
        `PipelineRun` (``.run_dir``, ``.manifest``, ``.stages``, ``.dataset``). Without: a temporary run
        folder, removed after; returns the last step's output as an in-memory `datasets.Dataset`."""
        from synth.run.adapters import registry

        recipe = self.to_recipe(source, split=split, limit=limit)
        stages = recipe["stages"]
        refs = {ref for stage in stages for ref in _references(stage)}
        names = {stage["name"] for stage in stages}
        if SOURCE_NAME in refs and SOURCE_NAME not in names:
            raise SynthError("synth.Pipeline.run: the first step reads the run's source: give one, e.g. "
                             "pipeline.run('data/folder'), a Hub id or a datasets.Dataset")
        if source is not None and SOURCE_NAME not in refs:
            raise SynthError("synth.Pipeline.run: no step reads the source (each names its own input); run "
                             "without a source")
        last = stages[-1]
        if output_dir is None and registry()[last["type"]].output != "dataset":
            raise SynthError(f"synth.Pipeline.run: the last step ({last['name']}) writes files, not a dataset; "
                             "pass output_dir= to keep them")
        scratch = Path(tempfile.mkdtemp(prefix="synth-pipeline-"))
        try:
            if output_dir is not None:
                out = Path(output_dir).expanduser().absolute()
                result = self._run(recipe, scratch, out.parent, out.name, workers, executor, ray_address)
                return PipelineRun(result.name, result.run_dir, result.stages, result.manifest, last=last["name"])
            result = self._run(recipe, scratch, scratch / "runs", MEMORY_RUN, workers, executor, ray_address)
            return _in_memory(result, last["name"])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _run(self, recipe: dict, scratch: Path, runs_dir: Path, name: str, workers: int, executor: str,
             ray_address: str | None) -> RunResult:
        import yaml

        from synth.run import RunOptions, run_recipe
        from synth.run.recipe import RecipeError

        path = scratch / RECIPE_FILE
        path.write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True), encoding="utf-8")
        options = RunOptions(name=name, runs_dir=runs_dir, executor=executor, workers=workers,
                             ray_address=ray_address, live=False)
        try:
            return run_recipe(path, None, options)
        except RecipeError as e:  # its file is ours, a temporary one: name the step instead
            raise SynthError(_step_error(str(e), path, recipe)) from None

    def __repr__(self) -> str:
        return f"Pipeline({self.steps!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pipeline) and self.to_recipe() == other.to_recipe()

    __hash__ = object.__hash__


# ---------------------------------------------------------------- helpers


def source_stage(source: Any, split: str | None, limit: int | None, base_dir: Path) -> dict[str, Any]:
    """The ``source`` stage reading `source` (see `Pipeline.run`)."""
    from datasets import Dataset, DatasetDict

    from synth.api.io import saved_input

    if isinstance(source, (Dataset, DatasetDict)):
        options: dict[str, Any] = {"path": str(saved_input(source))}
    elif isinstance(source, dict):
        options = dict(source)
    elif isinstance(source, (str, os.PathLike)):
        options = {"path": os.fspath(source)}
    else:
        raise SynthError(f"synth.Pipeline: a source is a path, a Hub id or a datasets.Dataset, not "
                         f"{type(source).__name__}")
    options.update({k: v for k, v in (("split", split), ("limit", limit)) if v is not None})
    step = step_class("source")(name=SOURCE_NAME, **{k: v for k, v in options.items() if k != "name"})
    return step.stage(SOURCE_NAME, SOURCE_NAME, {}, {}, base_dir)


def _step_of(stage: Any, base_dir: Path | None) -> Step:
    if not isinstance(stage, dict) or "type" not in stage:
        raise SynthError("a stage is a mapping with 'type:' and 'name:'")
    cls = step_class(str(stage["type"]))
    options = {k: v for k, v in stage.items() if k not in ("type", "name", "input")}
    step = cls(name=stage.get("name"), input=stage.get("input"), **options)
    if base_dir is None:
        return step
    resolved = cls.adapter().resolve(step.spec, base_dir).model_dump(mode="json", exclude_unset=True)
    given = step.spec.model_dump(mode="json", exclude_unset=True)
    changed = {k: resolved[k] for k in options if k in resolved and resolved[k] != given.get(k)}
    return cls(name=stage.get("name"), input=stage.get("input"), **{**options, **changed}) if changed else step


def _references(stage: dict) -> list[str]:
    spec = step_class(stage["type"]).adapter().Spec.model_validate(stage)
    return [ref for _loc, ref in spec.references()]


def _backends_in(value: Any) -> Iterator[Backend]:
    if isinstance(value, Backend):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _backends_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _backends_in(item)


def _step_error(message: str, path: Path, recipe: dict) -> str:
    """A recipe error about our temporary file as one naming the step (``step 'dedup': input: ...``)."""
    match = re.match(re.escape(str(path)) + r"(?::\d+)?: stages\.(\d+)\.?", message)
    if match:
        index = int(match.group(1))
        stage = recipe["stages"][index] if index < len(recipe["stages"]) else {}
        return f"synth.Pipeline: step '{stage.get('name', index)}': " + message[match.end():]
    return re.sub(re.escape(str(path)) + r"(?::\d+)?", "synth.Pipeline", message)


def _in_memory(result: RunResult, last: str):
    from datasets import load_from_disk

    from synth.data import quiet_datasets

    outcome = next(s for s in result.stages if s.name == last)
    with quiet_datasets():
        return load_from_disk(outcome.ref.path, keep_in_memory=True)
