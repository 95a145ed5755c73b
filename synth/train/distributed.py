"""Data-parallel training (``torchrun`` / ``accelerate launch``): which process is the main one, and the
one place where the others wait for it. Only the main process prints, deletes or writes; every process
trains (DDP averages the gradients), so N processes with `batch_size` B train on a global batch of N*B.

The launchers tell each process its place through the environment (RANK, WORLD_SIZE), which is read
here before torch.distributed is set up (the Trainer sets it up later, through accelerate)."""

from __future__ import annotations

import contextlib
import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0") or 0) == 0


@contextlib.contextmanager
def main_process_first(cpu: bool):
    """The main process runs the block first (e.g. deletes an output folder), then the others do."""
    if world_size() == 1:
        yield
        return
    from accelerate import PartialState

    # The state the Trainer reuses later; `cpu` picks gloo where the recipe trains on the CPU.
    with PartialState(cpu=cpu).main_process_first():
        yield


def wait_for_everyone(cpu: bool) -> None:
    """A barrier across the processes (nothing to wait for with one)."""
    if world_size() == 1:
        return
    from accelerate import PartialState

    PartialState(cpu=cpu).wait_for_everyone()
