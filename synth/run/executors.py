"""Executors run shard tasks (`synth.run.shards.run_shard`); they all run the same tasks.

- `LocalExecutor(workers=1)`: in this process, one shard after another (live per-record progress).
- `LocalExecutor(workers=N)`: N worker processes (``forkserver``: a clean process forks the workers, so
  they inherit neither threads nor a loaded model from the runner).
- `RayExecutor(address)`: each shard is a Ray task (``num_cpus=1``), on a local Ray
  (``address=None``: ``ray.init(num_cpus=workers)``) or a cluster (``"auto"``, ``"HOST:PORT"``). On a
  cluster the run folder must be on storage every node sees, and synth installed on every node.

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

    def run(self, tasks: list[ShardTask], on_done: OnDone, progress_for=None) -> None:
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

    def run(self, tasks: list[ShardTask], on_done: OnDone, progress_for=None) -> None:
        if not tasks:
            return
        self._init()
        ray = self.ray
        refs = {self._remote.remote(task): task for task in tasks}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        marker = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        cause = e.cause if getattr(e, "cause", None) is not None else e
                        if isinstance(cause, SynthError):
                            raise cause from None
                        raise SynthError(f"shard {refs[ref].name} of stage {refs[ref].stage} failed on Ray: "
                                         f"{str(cause).splitlines()[0][:300]}") from None
                    on_done(refs[ref], marker)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._started and getattr(self, "_owns", False):
            self.ray.shutdown()
        self._started = False


def make_executor(kind: str, workers: int = 1, ray_address: str | None = None):
    if kind == "local":
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(ray_address if ray_address not in (None, "", "local") else None, workers)
    raise SynthError(f"unknown executor '{kind}'; choose local or ray")
