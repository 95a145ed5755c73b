"""Named points in a run where a test can kill it (to prove resume works from exactly there).

``SYNTH_RUN_KILL="POINT[:key=value...]"`` sends SIGKILL to the run's whole process group (the `synth run`
process and its workers, as when a machine dies) the first time the run reaches POINT with matching
values. Points: ``record`` (a shard read its `index`-th record; keys stage, shard, index),
``shard_write`` (a shard's files are written, not yet renamed into place), ``shard_done`` (renamed, no
completion marker yet), ``stage_output`` (a stage's output is in place, its marker not yet written).
Unset, a point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "SYNTH_RUN_KILL"
MAIN_ENV = "_SYNTH_RUN_MAIN_PID"


def _parse(text: str) -> tuple[str, dict[str, str]]:
    name, *pairs = text.split(":")
    return name, dict(p.split("=", 1) for p in pairs if "=" in p)


def point(name: str, **values) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, wanted = _parse(spec)
    if target != name:
        return
    if all(str(values.get(k)) == v for k, v in wanted.items()):
        main = int(os.environ.get(MAIN_ENV) or os.getpid())
        if os.getpgrp() == main:  # the run leads its own process group: take the workers down with it
            os.killpg(main, signal.SIGKILL)
        if main != os.getpid():
            os.kill(main, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


def mark_main_process() -> None:
    """Called by the runner: workers inherit which process is the run."""
    os.environ[MAIN_ENV] = str(os.getpid())
