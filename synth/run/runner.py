"""`run_recipe`: a recipe from its sources to its finished outputs, in a run folder, restartable at any moment.

The run folder ``RUNS_DIR/NAME/``::

    recipe.yaml       the recipe as run (overrides applied, paths resolved)
    manifest.json     versions, seed, executor, and per stage: fingerprint, state, counts, usage, timings, hashes
    NAME/             each stage's output (a dataset in the spine's layout, with its sidecars; export: files)
    state/NAME.json   a stage's completion marker (fingerprint, output, report); written after its output
    shards/NAME/FP/   a running stage's shards and their markers (removed once the stage's output is in place)
    cache/            the LLM request cache (every finished request, committed as it arrives)

For each stage in dependency order: compute its fingerprint; an unchanged fingerprint with its output in
place is reused; otherwise its input is split into shards, the shards without a completion marker run on
the executor, and the shards are assembled into the output. A run killed at any point resumes with the
same command.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.errors import SynthError, redact_data
from synth.io import atomic_write_text
from synth.pipeline.llm_task import all_failed
from synth.run import hooks
from synth.run.adapters import registry
from synth.run.adapters.base import DataRef, StageContext, close_backends
from synth.run.dag import order
from synth.run.manifest import (
    RESOLVED_RECIPE,
    file_hashes,
    file_sizes,
    hash_files,
    load_manifest,
    new_manifest,
    output_damage,
    read_json,
    save_manifest,
    source_fingerprint,
    stage_fingerprint,
    write_json_atomic,
)
from synth.run.recipe import LoadedRecipe, load_recipe
from synth.run.shards import (
    ShardTask,
    assemble,
    assign,
    completed,
    merge_reports,
    record_ids,
    world_size_for,
)
from synth.run.spec import DEFAULT_BACKEND, NAME_PATTERN, backend_identity, backend_spec

STATE_DIR = "state"
SHARDS_DIR = "shards"
CACHE_DIR = "cache"


@dataclass
class RunOptions:
    name: str | None = None
    runs_dir: Path = Path("runs")
    executor: str = "local"
    workers: int = 1
    ray_address: str | None = None
    retry_failed: bool = True
    rerun: list[str] = field(default_factory=list)
    live: bool = True


@dataclass
class StageOutcome:
    name: str
    type: str
    state: str  # ran | reused | source
    fingerprint: str
    ref: DataRef | None
    report: dict[str, Any]
    seconds: float = 0.0


@dataclass
class RunResult:
    name: str
    run_dir: Path
    stages: list[StageOutcome]
    manifest: dict[str, Any]


# ---------------------------------------------------------------- preparing


@dataclass
class Plan:
    """A loaded recipe ready to run: specs with paths resolved, stage order, backends by name."""

    loaded: LoadedRecipe
    specs: dict[str, Any]
    order: list[str]
    backends: dict[str, dict[str, Any]]

    @property
    def recipe(self):
        return self.loaded.recipe


def prepare(path: str | os.PathLike, overrides: list[str] | None = None) -> Plan:
    loaded = load_recipe(path, overrides)
    recipe = loaded.recipe
    adapters = registry()
    specs = {s.name: adapters[s.type].resolve(s, loaded.base_dir) for s in recipe.stages}
    backends: dict[str, dict[str, Any]] = {}
    for spec in specs.values():
        name = adapters[spec.type].backend_name(spec) if adapters[spec.type].uses_llm(spec) else None
        for _loc, used in spec.backends_used():
            backends[used] = backend_spec(recipe, used).model_dump(mode="json")
        if name:
            backends[name] = backend_spec(recipe, name).model_dump(mode="json")
    return Plan(loaded=loaded, specs=specs, order=order(recipe), backends=backends)


def run_dir_for(plan: Plan, options: RunOptions) -> Path:
    name = options.name or plan.recipe.name or plan.loaded.path.stem
    if not NAME_PATTERN.match(name):
        raise SynthError(f"run name '{name}': use letters, digits, '_', '-' or '.'; pass --name NAME")
    return Path(options.runs_dir) / name


def _resolved_recipe_text(plan: Plan) -> str:
    import yaml

    data = plan.recipe.model_dump(mode="json", exclude_unset=True)
    data["stages"] = [plan.specs[s.name].model_dump(mode="json", exclude_unset=True) for s in plan.recipe.stages]
    header = f"# resolved from {plan.loaded.path} (overrides applied, paths made absolute)\n"
    # a password in a base_url is stored as ***: the run folder is shared, the recipe holds no secrets
    return header + yaml.safe_dump(redact_data(data), sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------- running


@contextlib.contextmanager
def opened_run(plan: Plan, run_dir: Path, options: RunOptions, stages: list[str], **fields: Any):
    """A run folder held for one run: locked, the resolved recipe written, an executor started and a new
    manifest (``fields`` added) saved; on the way out the manifest says how the run ended (done,
    interrupted, failed and why), and the executor and backends are closed."""
    from synth.run.executors import make_executor
    from synth.run.lock import RunLock

    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        hooks.mark_main_process()
        for stale in run_dir.glob(".*.tmp"):  # temp files of a killed run (manifest, recipe): never read
            if stale.is_file():
                stale.unlink()
        (run_dir / STATE_DIR).mkdir(exist_ok=True)
        atomic_write_text(run_dir / RESOLVED_RECIPE, _resolved_recipe_text(plan))
        executor = make_executor(options.executor, options.workers, options.ray_address)
        previous = load_manifest(run_dir) or {}
        manifest = new_manifest(run_dir.name, plan.loaded.path, plan.recipe.model_dump(mode="json"),
                                executor.describe(), stages)
        manifest["runs"] = previous.get("runs", 0) + 1
        manifest["stages"] = {n: {"state": "pending", "type": plan.specs[n].type} for n in stages}
        manifest.update(fields)
        save_manifest(run_dir, manifest)
        try:
            yield executor, manifest
            manifest["state"] = "done"
        except KeyboardInterrupt:
            manifest["state"] = "interrupted"
            raise
        except BaseException as e:
            manifest["state"] = "failed"
            manifest["error"] = str(e).splitlines()[0][:500] if str(e) else type(e).__name__
            raise
        finally:
            manifest["finished"] = time.time()
            try:
                save_manifest(run_dir, manifest)
            except SynthError:
                if manifest["state"] == "done":
                    raise
                # the run already failed (a full disk, say): its own error is the one to report
            finally:
                executor.close()
                close_backends()


class Runner:
    def __init__(self, plan: Plan, run_dir: Path, options: RunOptions, view, prefix: str = "",
                 identity: dict[str, Any] | None = None):
        self.plan = plan
        self.run_dir = run_dir
        self.options = options
        self.view = view
        self.adapters = registry()
        self.outputs: dict[str, tuple[DataRef, str, str]] = {}  # name → (ref, fingerprint, data hash)
        self.results: list[StageOutcome] = []
        self.executor = None
        # A closed loop's round runs its stages under a subfolder (``round_1/NAME``), and its backends'
        # identity adds what the model name alone does not say (a hash of the round's adapter).
        self.prefix = prefix
        self.identity = identity or {}

    def out_dir(self, name: str) -> Path:
        return self.run_dir / self.prefix / name if self.prefix else self.run_dir / name

    def marker_path(self, name: str) -> Path:
        return self.run_dir / STATE_DIR / self.prefix / f"{name}.json"

    def shards_root(self, name: str) -> Path:
        return self.run_dir / SHARDS_DIR / self.prefix / name

    @property
    def cache_dir(self) -> Path:
        return self.run_dir / CACHE_DIR

    def context(self, name: str) -> StageContext:
        return StageContext(run_dir=self.run_dir, cache_dir=self.cache_dir, seed=self.plan.recipe.seed,
                            recipe_dir=self.plan.loaded.base_dir, backends=self.plan.backends, stage=name)

    def run(self) -> RunResult:
        with opened_run(self.plan, self.run_dir, self.options, self.plan.order) as (self.executor, self.manifest):
            with self.view:
                for name in self.plan.order:
                    self.manifest["stages"][name]["state"] = "running"
                    save_manifest(self.run_dir, self.manifest)
                    self.results.append(self.run_stage(name))
                    self.manifest["stages"][name] = self.stage_entry(self.results[-1])
                    save_manifest(self.run_dir, self.manifest)
        return RunResult(self.run_dir.name, self.run_dir, self.results, self.manifest)

    # -- one stage

    def fingerprint(self, name: str, spec, adapter) -> str:
        inputs = [(dep, self.outputs[dep][1], self.outputs[dep][2]) for dep in adapter.inputs(spec)]
        backend = None
        if adapter.uses_llm(spec):
            bname = adapter.backend_name(spec) or DEFAULT_BACKEND
            backend = backend_identity(backend_spec(self.plan.recipe, bname))
            if bname in self.identity:
                backend = {**backend, "identity": self.identity[bname]}
        extra = adapter.fingerprint_extra(spec)
        return stage_fingerprint(type_=spec.type, spec=spec.fingerprint_fields(), backend=backend, inputs=inputs,
                                 seed=self.plan.recipe.seed, adapter_version=adapter.version, extra=extra)

    def run_stage(self, name: str) -> StageOutcome:
        spec = self.plan.specs[name]
        adapter = self.adapters[spec.type]
        if adapter.source:
            return self.run_source(name, spec, adapter)
        fp = self.fingerprint(name, spec, adapter)
        marker_path = self.marker_path(name)
        marker = read_json(marker_path)
        out = self.out_dir(name)
        if (marker and marker.get("fingerprint") == fp and name not in self.options.rerun
                and not (self.options.retry_failed and adapter.uses_llm(spec) and _failed(marker.get("report", {})))):
            damage = output_damage(out, marker)
            if damage is not None:  # deleted, truncated or edited since it was written: never reuse it
                self.view.note(f"stage {name}: {damage} since it finished; running the stage again")
                marker_path.unlink(missing_ok=True)
                return self.execute_stage(name, spec, adapter, fp, marker_path)
            ref = DataRef.from_dict(marker["output"])
            self.outputs[name] = (ref, fp, marker["hash"])
            self.view.reused(name, spec.type, marker.get("report", {}))
            return StageOutcome(name, spec.type, "reused", fp, ref, marker.get("report", {}), 0.0)
        return self.execute_stage(name, spec, adapter, fp, marker_path)

    def run_source(self, name: str, spec, adapter) -> StageOutcome:
        started = time.time()
        ref = adapter.source_ref(spec)
        data_hash = source_fingerprint(ref)
        fp = stage_fingerprint(type_=spec.type, spec=spec.fingerprint_fields(), backend=None,
                               inputs=[("source", data_hash, data_hash)], seed=self.plan.recipe.seed,
                               adapter_version=adapter.version)
        from synth.data import quiet_datasets

        with quiet_datasets():
            src = ref.open()  # an empty source is an error: nothing downstream could do anything
            ref.kind, ref.multimodal, ref.rows = src.kind, bool(src.multimodal), src.num_rows
        ref.stage = name
        report = {"counts": {"read": ref.rows or 0, "kept": ref.rows or 0, "rows": ref.rows or 0,
                             "rejected": {}, "failed": {}}, "kind": ref.kind, "multimodal": ref.multimodal,
                  "layout": src.layout}
        self.outputs[name] = (ref, fp, data_hash)
        self.view.source(name, spec.type, report)
        return StageOutcome(name, spec.type, "source", fp, ref, report, time.time() - started)

    def plan_shards(self, name: str, spec, adapter, fp: str) -> list[ShardTask]:
        from synth.data import quiet_datasets

        shards_root = self.shards_root(name)
        shards_dir = shards_root / fp[:16]
        if shards_root.is_dir():  # shards of an older fingerprint are of no use
            for old in shards_root.iterdir():
                if old.name != shards_dir.name:
                    shutil.rmtree(old, ignore_errors=True)
        shards_dir.mkdir(parents=True, exist_ok=True)
        inputs = [self.outputs[dep][0] for dep in adapter.inputs(spec)]
        world_size, indices, ids_missing = 1, [None], False
        if inputs:
            import numpy as np

            with quiet_datasets():
                src = inputs[0].open(allow_empty=True, **adapter.open_options(spec))
                ids_missing = src.kind == "raw" and "id" not in src.columns
                rows = src.num_rows
                limit = getattr(spec, "limit", None)
                if limit and rows is not None and rows > limit:
                    rows = limit
                    indices = [np.arange(rows, dtype=np.int64)]
                if adapter.is_sharded(spec) and rows:
                    size = spec.shard_size or (self.plan.recipe.llm_shard_size if adapter.uses_llm(spec)
                                               else self.plan.recipe.shard_size)
                    world_size = world_size_for(rows, size)
                    if world_size > 1:
                        ids = record_ids(src)[:rows]
                        indices = [np.asarray(r, dtype=np.int64) for r in assign(ids, world_size)]
        common = {
            "run_dir": str(self.run_dir), "stage": name, "type": spec.type, "spec": spec.model_dump(mode="json"),
            "inputs": [ref.as_dict() for ref in inputs], "world_size": world_size, "fingerprint": fp,
            "shards_dir": str(shards_dir), "seed": self.plan.recipe.seed, "cache_dir": str(self.cache_dir),
            "recipe_dir": str(self.plan.loaded.base_dir), "backends": self.plan.backends, "ids_missing": ids_missing,
        }
        return [ShardTask(rank=rank, indices=indices[rank], **common) for rank in range(world_size)]

    def inline(self, spec, adapter) -> bool:
        """LLM stages on an in-process model run here: one model, loaded once, using every core."""
        if not adapter.uses_llm(spec):
            return False
        kind = self.plan.backends.get(adapter.backend_name(spec) or DEFAULT_BACKEND, {}).get("backend", "local")
        return kind == "local"

    def execute_stage(self, name: str, spec, adapter, fp: str, marker_path: Path) -> StageOutcome:
        from synth.run.executors import run_inline

        started = time.time()
        tasks = self.plan_shards(name, spec, adapter, fp)
        todo = []
        for task in tasks:
            marker = completed(task, self.options.retry_failed)
            damage = output_damage(task.path, marker) if marker is not None else None
            if damage is not None:  # a finished shard damaged since: its marker no longer vouches for it
                self.view.note(f"stage {name}: shard {task.rank}: {damage} since it finished; running it again")
                task.marker.unlink(missing_ok=True)
            if marker is None or damage is not None:
                todo.append(task)
        rows_in = sum(len(t.indices) for t in tasks) if tasks[0].indices is not None else None
        if rows_in is None and tasks[0].inputs:
            rows_in = tasks[0].inputs[0].get("rows")
        self.view.start(name, spec.type, len(tasks), len(tasks) - len(todo), rows_in,
                        [completed(t, False) for t in tasks if t not in todo])

        def on_done(task: ShardTask, marker: dict) -> None:
            self.view.shard_done(name, marker)

        # a GPU stage on the local executor: this process, in order, on the local device (one model loaded)
        local_gpu = self.executor.name == "local" and spec.gpus > 0
        if self.inline(spec, adapter) or local_gpu or (self.executor.name == "local" and self.executor.workers == 1):
            run_inline(todo, on_done, lambda task: self.view.progress_for(name))
        else:
            self.executor.run(todo, on_done, resources=spec.resources)
        markers = [read_json(t.marker) for t in tasks]
        if any(m is None for m in markers):
            raise SynthError(f"stage {name}: a shard finished without its marker; run again to resume")
        report = adapter.merged_report(spec, merge_reports([m["report"] for m in markers]))
        report["shards"] = len(tasks)
        report["shard_seconds"] = round(sum(m["report"].get("seconds", 0) for m in markers), 3)
        if adapter.uses_llm(spec):
            bname = adapter.backend_name(spec) or DEFAULT_BACKEND
            report["model"] = backend_identity(backend_spec(self.plan.recipe, bname))
            report["backend"] = bname
        failed = _failed(report)
        counts = report["counts"]
        problem = adapter.uses_llm(spec) and all_failed(
            counts["failed"], report.get("answered", counts.get("kept") or 0), sum(counts["rejected"].values()),
            counts.get("rows"))
        if problem:
            raise SynthError(f"stage {name}: {problem}; check the server (base_url), the model name and the API "
                             f"key; details in {tasks[0].shards_dir}/shard-*/failures.jsonl")
        out = self.out_dir(name)
        report["seconds"] = round(time.time() - started, 3)
        assemble([t.path for t in tasks], out, report)
        hooks.point("stage_output", stage=name)
        ref = DataRef(path=str(out.resolve()), kind=report.get("kind"), multimodal=report.get("multimodal"),
                      rows=report["counts"].get("rows"), stage=name)
        data_hash = hash_files(out)
        write_json_atomic(marker_path, {
            "fingerprint": fp, "stage": name, "type": spec.type, "output": ref.as_dict(), "hash": data_hash,
            "files": file_hashes(out), "sizes": file_sizes(out), "report": report, "finished": time.time(),
        })
        if not failed:  # keep the shards of a stage with failures: the next run redoes only those
            shutil.rmtree(Path(tasks[0].shards_dir).parent, ignore_errors=True)
        adapter.after_assembly(spec, self.context(name), out)
        self.outputs[name] = (ref, fp, data_hash)
        seconds = time.time() - started
        self.view.finish(name, report, seconds)
        return StageOutcome(name, spec.type, "ran", fp, ref, report, seconds)

    def stage_entry(self, outcome: StageOutcome) -> dict[str, Any]:
        spec = self.plan.specs[outcome.name]
        adapter = self.adapters[spec.type]
        entry: dict[str, Any] = {
            "type": outcome.type,
            "state": outcome.state,
            "fingerprint": outcome.fingerprint,
            "inputs": adapter.inputs(spec),
            "spec": spec.model_dump(mode="json"),
            "counts": outcome.report.get("counts", {}),
            "seconds": round(outcome.seconds, 3),
            "output": outcome.ref.as_dict() if outcome.ref else None,
        }
        for key in ("usage", "model", "backend", "shards", "shard_seconds", "layout"):
            if key in outcome.report:
                entry[key] = outcome.report[key]
        placement = getattr(self.executor, "placements", {}).get(outcome.name)
        if placement:  # where each shard ran (Ray GPU workers); never part of the output or its hash
            entry["placement"] = placement
        if adapter.uses_llm(spec):
            entry["sampling"] = _sampling(spec)
        if outcome.state != "source" and outcome.ref is not None:
            marker = read_json(self.marker_path(outcome.name)) or {}
            entry["hash"] = marker.get("hash")
            entry["files"] = marker.get("files")
            entry["seconds_first_run"] = marker.get("report", {}).get("seconds")
        else:
            entry["hash"] = self.outputs[outcome.name][2]
        return entry


SAMPLING_FIELDS = ("temperature", "top_p", "presence_penalty", "max_tokens", "judge_max_tokens", "instance_max_tokens",
                   "instance_temperature", "instance_top_p", "instance_presence_penalty", "n", "samples", "seed",
                   "stop", "judge_temperature")


def _sampling(spec) -> dict[str, Any]:
    data = spec.model_dump(mode="json")
    return {k: data[k] for k in SAMPLING_FIELDS if k in data}


def _failed(report: dict) -> int:
    return sum((report.get("counts", {}).get("failed") or {}).values())


