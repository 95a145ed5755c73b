"""One rich line per logging step (loss, lr, tokens/s, ETA) and a summary when training ends."""

from __future__ import annotations

import time
from typing import Any

from transformers import TrainerCallback

from synth.console import Console

# soft_wrap: a step line stays one line in a log file (rich would cut it at 80 columns off a terminal)
console = Console(stderr=True, highlight=False, soft_wrap=True)


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class ProgressLine(TrainerCallback):
    """Prints ``step 20/120  loss 1.234  lr 1.9e-04  312 tok/s  ETA 1m05s`` at each log step.

    Tokens are TRL's ``num_tokens`` count (non-padding tokens the trainer consumed). The ETA comes from
    the step rate of this run, so a resumed run does not count the steps it skipped.
    """

    def __init__(self, label: str = "train", out: Console | None = None):
        self.label = label
        self.console = out or console
        self.started = None
        self.start_step = 0
        self.last_time = None
        self.last_tokens = None
        self.tokens = 0.0
        self.history: list[dict[str, Any]] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = self.last_time = time.monotonic()
        self.start_step = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        if self.started is None or "train_runtime" in logs:
            return
        now = time.monotonic()
        self.history.append({"step": state.global_step, **logs})
        parts = [f"[bold]{self.label}[/] step {state.global_step}/{state.max_steps}"]
        if "loss" in logs:
            parts.append(f"loss {logs['loss']:.4f}")
        if "eval_loss" in logs:
            parts.append(f"eval_loss {logs['eval_loss']:.4f}")
        for key, name in (("rewards/accuracies", "reward_acc"), ("rewards/margins", "margin")):
            if key in logs:
                parts.append(f"{name} {logs[key]:.3f}")
        if "learning_rate" in logs:
            parts.append(f"lr {logs['learning_rate']:.2e}")
        tokens = logs.get("num_tokens")
        if tokens is not None:
            if self.last_tokens is not None and now > self.last_time and tokens >= self.last_tokens:
                parts.append(f"{(tokens - self.last_tokens) / (now - self.last_time):,.0f} tok/s")
            self.last_tokens, self.tokens = tokens, tokens
        self.last_time = now
        done = state.global_step - self.start_step
        if done > 0 and state.max_steps:
            rate = (now - self.started) / done
            parts.append(f"ETA {_duration(rate * (state.max_steps - state.global_step))}")
        self.console.print("  ".join(parts))

    def last(self, key: str):
        for entry in reversed(self.history):
            if key in entry:
                return entry[key]
        return None


def strip_printer(trainer) -> None:
    """Drop transformers' raw dict printer: ProgressLine prints the same numbers, readably."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
