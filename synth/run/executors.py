"""Executors run shard tasks (`synth.run.shards.run_shard`); they all run the same tasks.

- `LocalExecutor(workers=1)`: in this process, one shard after another (live per-record progress).
- `LocalExecutor(workers=N)`: N worker processes (``forkserver``: a clean process forks the workers, so
  they inherit neither threads nor a loaded model from the runner).
- `RayExecutor(address)`: each shard is a Ray task (``num_cpus=1``, or the stage's ``resources.cpus``), on
  a local Ray (``address=None``: ``ray.init(num_cpus=workers)``) or a cluster (``"auto"``,
  ``"HOST:PORT"``). On a cluster the run folder must be on storage every node sees, and synth installed on
  every node. A stage with ``resources: {gpus: N}`` runs on GPU actors instead: as many as the cluster's
  GPUs hold (at most one per shard), each a long-lived process that takes shard after shard, so a model
  (CapFilt's scorer, cached per process) loads once per actor. Ray gives each actor its GPUs
  (``CUDA_VISIBLE_DEVICES``); where each shard ran is kept in ``placements`` (the run's manifest).

The runner hands LLM stages on the local model to ``inline`` (this process, one model loaded once):
several processes would each load it and compete for the same cores.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from typing import Any

from synth.errors import SynthError
from synth.run.shards import ShardTask, run_shard

OnDone = Callable[[ShardTask, dict[str, Any]], None]


def run_inline(tasks: list[ShardTask], on_done: OnDone, progress_for: Callable[[ShardTask], Any] | None = None) -> None:
    for task in tasks:
        marker = run_shard(task, progress_for(task) if progress_for else None)
        on_done(task, marker)


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int = 1):
        if workers < 1:
            raise SynthError(f"--workers must be at least 1 (got {workers})")
        self.workers = workers
        self._pool = None

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "workers": self.workers}

    def _get_pool(self):
        if self._pool is None:
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context("forkserver")
            # the forkserver imports the runner once; every worker forks from it ready to go
            context.set_forkserver_preload(["synth.run.shards", "synth.run.adapters", "datasets"])
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
        return self._pool

    def run(self, tasks: list[ShardTask], on_done: OnDone, progress_for=None, resources=None) -> None:
        if not tasks:
            return
        if self.workers == 1 or len(tasks) == 1:
            run_inline(tasks, on_done, progress_for)
            return
        from concurrent.futures import FIRST_EXCEPTION, wait
        from concurrent.futures.process import BrokenProcessPool

        pool = self._get_pool()
        futures = {pool.submit(run_shard, task): task for task in tasks}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    on_done(futures[future], future.result())
        except BrokenProcessPool:
            raise SynthError("a worker process died (out of memory?); run the same command again to resume") from None
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None):
        from synth.optional import require

        self.ray = require("ray", "--executor ray")
        self.address = address
        self.workers = workers
        self._started = False
        self._remote = None
        self.placements: dict[str, dict[str, dict[str, Any]]] = {}  # stage -> shard -> where it ran

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "address": self.address or "local", "workers": self.workers}

    def _init(self) -> None:
        if self._started:
            return
        ray = self.ray
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                       "ignore_reinit_error": True}
            if self.address:
                options["address"] = self.address
            else:
                options["num_cpus"] = self.workers or os.cpu_count() or 1
            # workers import synth from this interpreter's environment; pass the env vars the shards read
            env = {k: v for k, v in os.environ.items()
                   if k.startswith(("SYNTH_", "_SYNTH_", "HF_", "TRANSFORMERS_")) and "TOKEN" not in k}
            options["runtime_env"] = {"env_vars": env}
            try:
                ray.init(**options)
            except Exception as e:  # Ray raises many types: connection, version mismatch, ...
                where = self.address or "a local Ray"
                raise SynthError(f"cannot start or reach {where}: {str(e).splitlines()[0][:300]}") from None
            self._owns = True
        self._remote = ray.remote(num_cpus=1, max_retries=0)(run_shard)
        self._started = True

    def run(self, tasks: list[ShardTask], on_done: OnDone, progress_for=None, resources=None) -> None:
        if not tasks:
            return
        self._init()
        if resources is not None and resources.gpus > 0:
            self._run_on_actors(tasks, on_done, resources)
            return
        remote = self._remote if resources is None else self._remote.options(num_cpus=resources.cpus)
        refs = {remote.remote(task): task for task in tasks}
        pending = list(refs)
        try:
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                for ref in done:
                    on_done(refs[ref], self._result(ref, refs[ref]))
        finally:
            for ref in pending:
                self.ray.cancel(ref, force=True)

    def _result(self, ref, task: ShardTask):
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as e:
            cause = e.cause if getattr(e, "cause", None) is not None else e
            if isinstance(cause, SynthError):
                raise cause from None
            raise SynthError(f"shard {task.name} of stage {task.stage} failed on Ray: "
                             f"{str(cause).splitlines()[0][:300]}") from None

    def gpu_actors(self, tasks: list[ShardTask], resources) -> int:
        """How many GPU actors: as many as the cluster's GPUs hold, at most one per shard."""
        total = self.ray.cluster_resources().get("GPU", 0)
        fits = int(total // resources.gpus + 1e-9)
        if fits < 1:
            raise SynthError(
                f"stage {tasks[0].stage} asks for {resources.gpus:g} GPU(s) per worker but the Ray cluster has "
                f"{total:g}; start Ray on GPU nodes (ray start --num-gpus N), or drop the stage's resources.gpus "
                "to run it on CPUs")
        return min(fits, len(tasks))

    def _run_on_actors(self, tasks: list[ShardTask], on_done: OnDone, resources) -> None:
        ray = self.ray
        actor_class = ray.remote(num_gpus=resources.gpus, num_cpus=resources.cpus, max_restarts=0)(ShardWorker)
        actors = [actor_class.remote() for _ in range(self.gpu_actors(tasks, resources))]
        queue, running = list(tasks), {}
        placements = self.placements.setdefault(tasks[0].stage, {})
        try:
            while queue or running:
                while queue and len(running) < len(actors):
                    busy = {actor for actor, _ in running.values()}
                    actor = next(a for a in actors if a not in busy)
                    task = queue.pop(0)
                    running[actor.run.remote(task)] = (actor, task)
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    _, task = running.pop(ref)
                    marker, where = self._result(ref, task)
                    placements[task.name] = where
                    on_done(task, marker)
        finally:
            for ref in running:
                ray.cancel(ref, force=True)
            for actor in actors:
                ray.kill(actor)

    def close(self) -> None:
        if self._started and getattr(self, "_owns", False):
            self.ray.shutdown()
        self._started = False


class ShardWorker:
    """A Ray actor holding GPUs: runs shard after shard in one process, so what a stage loads (a model)
    stays loaded between shards; says where each ran."""

    def run(self, task: ShardTask) -> tuple[dict[str, Any], dict[str, Any]]:
        import ray

        context = ray.get_runtime_context()
        where = {"node": context.get_node_id(), "actor": context.get_actor_id(), "pid": os.getpid(),
                 "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}
        return run_shard(task), where


def make_executor(kind: str, workers: int = 1, ray_address: str | None = None):
    if kind == "local":
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(ray_address if ray_address not in (None, "", "local") else None, workers)
    raise SynthError(f"unknown executor '{kind}'; choose local or ray")
