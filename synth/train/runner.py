"""What every training stage shares: checks before loading, TRL config fields, resume, save, summary.

A stage (align, sft, dpo) is: `prepare` (read + check the data, read the model's config, load the
tokenizer/processor and its chat template, drop over-long rows: all before any weights load), build a
TRL trainer, `train` (resume from a checkpoint when asked), `finish` (save the adapter or model with its
tokenizer/processor and chat template, write ``train_summary.json``, print the summary).

Output folder: ``OUT/`` holds the result (adapter or model files, tokenizer/processor, chat template,
``train_summary.json``); ``OUT/checkpoints/checkpoint-N`` the Trainer checkpoints that `resume` reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.errors import SynthError
from synth.ownership import MARKER, check_replaceable, mark
from synth.train.data import (
    DataReport,
    check_dataset,
    check_model_fits_data,
    drop_long_rows,
    read_recipe_data,
    select_for_trl,
)
from synth.train.distributed import is_main_process, main_process_first, wait_for_everyone
from synth.train.models import (
    ModelInfo,
    device_and_precision,
    inspect_model,
    load_processing,
    set_chat_template,
)
from synth.train.progress import ProgressLine, console, strip_printer

DEFAULT_LR = {"align": 1e-3, "sft": 2e-4, "dpo": 5e-5}


@dataclass
class Plan:
    """Everything known before the weights load."""

    stage: str
    recipe: Any
    info: ModelInfo
    processing: Any
    train: Any
    eval: Any | None
    report: DataReport
    device: str
    precision: str
    out: Path
    resume_from: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def is_vision_data(self) -> bool:
        return "images" in self.train.column_names


@dataclass
class TrainResult:
    output_dir: Path
    summary: dict[str, Any]


# ---------------------------------------------------------------- before loading


def recipe_inputs(recipe) -> list[str | None]:
    """Every path a recipe reads: an output_dir that is or holds one of them is never replaced."""
    names = ("dataset", "eval_dataset", "model", "adapter", "chat_template", "resume")
    values = [getattr(recipe, name, None) for name in names]
    return [v for v in values if isinstance(v, str)] + [getattr(recipe, "_source", None)]


#: Files that say a folder is a training output of synth (older versions wrote no marker).
TRAIN_OUTPUTS = ("train_summary.json", "merge_summary.json")
_CHOOSE = "set output_dir to a new folder"


def _check_output(recipe) -> tuple[Path, str | None]:
    """The output folder, and the checkpoint to resume from (None: start fresh). A folder is replaced
    (overwrite: true) only when synth wrote it and it holds no input; the run marks its folder at once,
    so that a killed run's checkpoints can be resumed or replaced later."""
    out = Path(recipe.output_dir)
    checkpoints = out / "checkpoints"
    if recipe.resume:
        if isinstance(recipe.resume, str):
            path = Path(recipe.resume)
            if not (path / "trainer_state.json").is_file():
                raise SynthError(f"resume: {path} is not a checkpoint folder (no trainer_state.json)")
            return out, str(path)
        last, skipped = last_complete_checkpoint(checkpoints)
        if last is None:
            raise SynthError(
                f"resume: no {'complete ' if skipped else ''}checkpoint in {checkpoints}; run without resume "
                "(checkpoints are written every `save_steps` steps)"
            )
        if skipped:
            console.print(
                f"[yellow]note:[/] {', '.join(skipped)} incomplete (no trainer_state.json: a run killed while "
                f"saving); resuming from {Path(last).name}, the newest complete checkpoint"
            )
        return out, last
    if _has_results(out):
        if not recipe.overwrite:
            raise SynthError(
                f"{out} already exists; set overwrite: true (or -s overwrite=true) to replace it, "
                "or resume: true to continue its last checkpoint"
            )
        check_replaceable(out, recipe_inputs(recipe), also=TRAIN_OUTPUTS, choose=_CHOOSE)
    return out, None


def start_output(out: Path) -> None:
    """The one place a fresh training run starts writing, once every check passed: the previous output
    (checked by `_check_output`: synth's, holding no input) goes, and the new folder is marked as synth's."""
    if _has_results(out):
        shutil.rmtree(out)
    elif (out / "checkpoints").is_dir():
        (out / "checkpoints").rmdir()  # an empty checkpoints folder of a run that never got to a step
    out.mkdir(parents=True, exist_ok=True)
    mark(out, "train")


def last_complete_checkpoint(checkpoints: Path) -> tuple[str | None, list[str]]:
    """(newest ``checkpoint-N`` holding its trainer_state.json, names of newer incomplete ones)."""
    if not checkpoints.is_dir():
        return None, []
    found = []
    for entry in checkpoints.iterdir():
        step = entry.name.removeprefix("checkpoint-")
        if entry.is_dir() and entry.name.startswith("checkpoint-") and step.isdigit():
            found.append((int(step), entry))
    skipped = []
    for _, entry in sorted(found, reverse=True):
        if (entry / "trainer_state.json").is_file():
            return str(entry), skipped
        skipped.append(entry.name)
    return None, skipped


def _has_results(out: Path) -> bool:
    """Anything there besides an empty checkpoints folder and the marker (a run that never got to a step)."""
    if not out.is_dir():
        return out.exists()
    for entry in out.iterdir():
        if entry.name == "checkpoints" and entry.is_dir() and not any(entry.iterdir()):
            continue
        if entry.name == MARKER and entry.is_file():
            continue
        return True
    return False


def prepare(recipe, stage: str) -> Plan:
    """Checks that need no weights, in the order that fails fastest; then the tokenizer and lengths."""
    train, evaluation = read_recipe_data(recipe)
    source = recipe.dataset + (f" (split {recipe.split})" if recipe.split else "")
    eval_source = (recipe.eval_dataset or recipe.dataset) + (f" (split {recipe.eval_split})" if recipe.eval_split else "")
    check_dataset(train, stage, source)
    if evaluation is not None:
        check_dataset(evaluation, stage, eval_source)
    with main_process_first(cpu=recipe.device == "cpu"):  # one process deletes an old output; the others wait
        out, resume_from = _check_output(recipe)
    info = inspect_model(recipe.model, recipe.revision)
    check_model_fits_data(train, info, stage, source)
    device, precision = device_and_precision(recipe.device, recipe.precision)

    processing = load_processing(info)
    set_chat_template(processing, recipe.chat_template, getattr(recipe, "adapter", None))
    report = DataReport(source=source, max_length=recipe.max_length)
    train = select_for_trl(train, stage)
    train, report.dropped_too_long, report.longest = drop_long_rows(train, processing, stage, recipe.max_length)
    if len(train) == 0:
        raise SynthError(
            f"{source}: every row is longer than max_length={recipe.max_length} tokens (longest {report.longest}); "
            "raise max_length"
        )
    report.rows = len(train)
    if evaluation is not None:
        evaluation = select_for_trl(evaluation, stage)
        evaluation, report.eval_dropped_too_long, _ = drop_long_rows(evaluation, processing, stage, recipe.max_length)
        report.eval_rows = len(evaluation)
        if len(evaluation) == 0:
            evaluation = None
    # In memory: TRL's map() calls would otherwise write cache files into the user's dataset folder.
    train = train.flatten_indices(keep_in_memory=True)
    if evaluation is not None:
        evaluation = evaluation.flatten_indices(keep_in_memory=True)
    if resume_from is None:
        cpu = recipe.device == "cpu"
        wait_for_everyone(cpu)  # every process has checked the old output before the main one deletes it
        if is_main_process():
            start_output(out)
        wait_for_everyone(cpu)  # and the others go on once the new folder is there
    plan = Plan(stage, recipe, info, processing, train, evaluation, report, device, precision, out, resume_from)
    if report.dropped_too_long:
        plan.notes.append(
            f"dropped {report.dropped_too_long} of {report.rows + report.dropped_too_long} rows longer than "
            f"max_length={recipe.max_length} tokens (longest {report.longest})"
        )
    return plan


# ---------------------------------------------------------------- TRL config


def trainer_fields(plan: Plan, config_cls) -> dict[str, Any]:
    """The TrainingArguments fields a recipe sets (stage-specific ones are added by the stage)."""
    recipe = plan.recipe
    has_eval = plan.eval is not None
    gradient_checkpointing = recipe.gradient_checkpointing
    if gradient_checkpointing == "auto":
        # Recomputing activations costs ~30% speed; only QLoRA (memory-bound by design) turns it on.
        gradient_checkpointing = bool(getattr(recipe, "qlora", False))
    fields: dict[str, Any] = {
        "output_dir": str(plan.out / "checkpoints"),
        "learning_rate": recipe.learning_rate or DEFAULT_LR[plan.stage],
        "lr_scheduler_type": recipe.lr_scheduler,
        "warmup_steps": recipe.warmup_ratio,
        "weight_decay": recipe.weight_decay,
        "num_train_epochs": recipe.epochs,
        "max_steps": recipe.max_steps or -1,
        "per_device_train_batch_size": recipe.batch_size,
        "per_device_eval_batch_size": recipe.batch_size,
        "gradient_accumulation_steps": recipe.gradient_accumulation,
        "max_length": recipe.max_length,
        "logging_steps": recipe.logging_steps,
        "eval_strategy": "steps" if has_eval and recipe.eval_steps else "no",
        "eval_steps": recipe.eval_steps if has_eval else None,
        "save_strategy": "steps" if recipe.save_steps else "no",
        "save_steps": recipe.save_steps or 500,
        "save_total_limit": recipe.save_total_limit,
        "seed": recipe.seed,
        "data_seed": recipe.seed,
        "report_to": recipe.report_to,
        "use_cpu": plan.device == "cpu",
        "bf16": plan.precision == "bf16",
        "fp16": plan.precision == "fp16",
        "gradient_checkpointing": gradient_checkpointing,
        "disable_tqdm": not console.is_terminal,
        "dataloader_pin_memory": plan.device == "cuda",
        # Liger's fused RMSNorm/RoPE/SwiGLU kernels (Triton, CUDA only), when installed.
        "use_liger_kernel": plan.device == "cuda" and importlib.util.find_spec("liger_kernel") is not None,
    }
    names = {f.name for f in dataclasses.fields(config_cls)}
    for key, value in recipe.trl.items():
        if key not in names:
            raise SynthError(f"trl.{key}: not a field of TRL's {config_cls.__name__}; see its documentation")
        fields[key] = value
    return fields


def weights_dtype(plan: Plan, frozen_base: bool) -> str:
    """float32 weights (mixed precision via autocast), except a frozen base (LoRA) on a GPU, which is held
    in bf16/fp16: half the memory, and the dtype flash-attention kernels need. Adapters stay float32."""
    if frozen_base and plan.device == "cuda" and plan.precision in ("bf16", "fp16"):
        return "bfloat16" if plan.precision == "bf16" else "float16"
    return "float32"


@contextlib.contextmanager
def compact_lm_head(device: str):
    """On CPU, score only the positions that carry a label in TRL's fused LM head.

    TRL's fused head projects only labelled positions on CUDA/XPU, but every position elsewhere (so
    that compiled devices such as Neuron keep one tile shape). CPUs compile nothing, and with the loss on
    assistant tokens most positions carry no label: with Gemma's 262k vocabulary this halves a CPU step.
    The loss is the same (see tests/test_train_sft.py); this only swaps TRL's device test, when present.
    """
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:  # pragma: no cover - trl is a dependency of the train extra
        yield
        return
    original = getattr(trl_utils, "_use_triton", None)
    if device != "cpu" or original is None or not hasattr(trl_utils, "add_fused_lm_head"):
        yield
        return
    trl_utils._use_triton = lambda d: d.type == "cpu" or original(d)
    try:
        yield
    finally:
        trl_utils._use_triton = original


# ---------------------------------------------------------------- training


@contextlib.contextmanager
def quiet_training():
    """Library noise off while a stage runs: deprecation warnings of transformers/TRL/PEFT internals,
    `datasets` progress bars (TRL's tokenizing maps), transformers' info logs. Errors still surface."""
    import warnings

    from transformers.utils import logging as hf_logging

    from synth.data import quiet_datasets

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    tqdm_env = os.environ.get("TQDM_DISABLE")
    if not console.is_terminal:
        os.environ["TQDM_DISABLE"] = "1"  # TRL's reference-pass bar: a line per update in a log file
    try:
        with warnings.catch_warnings(), quiet_datasets():
            for module in ("transformers", "trl", "peft", "accelerate", "torch"):
                warnings.filterwarnings("ignore", category=FutureWarning, module=module)
                warnings.filterwarnings("ignore", category=UserWarning, module=module)
                warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if tqdm_env is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = tqdm_env


def train(plan: Plan, trainer, progress: ProgressLine) -> dict[str, Any]:
    """Run trainer.train (resuming when the plan says so) and a final evaluation when there is eval data."""
    strip_printer(trainer)
    for note in plan.notes:
        console.print(f"[yellow]note:[/] {note}")
    if plan.resume_from:
        console.print(f"resuming from {plan.resume_from}")
    started = time.monotonic()
    with compact_lm_head(plan.device):
        output = trainer.train(resume_from_checkpoint=plan.resume_from)
        metrics = dict(output.metrics)
        if plan.eval is not None:
            metrics.update(trainer.evaluate())
    metrics["wall_seconds"] = time.monotonic() - started
    return metrics


def reproducibility(plan: Plan) -> dict[str, Any]:
    """What decides the run's random numbers and arithmetic: the same recipe and seed on the same machine
    (same threads, same versions) give the same adapter bit for bit; another seed shows the real spread."""
    import torch

    seed = plan.recipe.seed
    return {
        "seed": seed,
        "lora_init_seed": seed,  # set_seed(seed) before the weights load and the adapter is wrapped
        "data_order_seed": seed,  # the Trainer's sampler (data_seed)
        "dropout_seed": seed,  # the Trainer seeds the global RNG again before the first step
        "precision": plan.precision,
        "cpu_bf16_autocast": plan.device == "cpu" and plan.precision == "bf16",
        "device": plan.device,
        "torch_threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "-"
    return out


def finish(plan: Plan, trainer, metrics: dict[str, Any], progress: ProgressLine, saved: str,
           save_weights) -> TrainResult:
    """Save the weights (`save_weights(folder)`), the tokenizer/processor (with its chat template) and the
    summary, and print it. They are written into a temporary sibling and moved into OUT only once all of
    them are whole (a full disk leaves no half-written tokenizer and no summary); OUT keeps its checkpoints."""
    if not is_main_process():  # under torchrun / accelerate only the main process writes and prints
        return TrainResult(plan.out, _summary(plan, trainer, metrics, progress, saved))
    with staged_results(plan.out) as staging:
        save_weights(str(staging))
        plan.processing.save_pretrained(str(staging))
        summary = _summary(plan, trainer, metrics, progress, saved)
        (staging / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    _print_summary(summary)
    return TrainResult(plan.out, summary)


@contextlib.contextmanager
def staged_results(out: Path):
    """A temporary folder beside OUT for the results; on success its files replace OUT's (the summary last:
    its presence says the results are complete), on any error it is removed and OUT is as it was."""
    import tempfile

    from synth.errors import DiskFull, disk_full_error

    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        entries = sorted(tmp.iterdir(), key=lambda p: p.name == "train_summary.json")
        for entry in entries:
            target = out / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)
    except Exception as e:
        if disk_full_error(e) is not None:
            raise DiskFull(out) from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _summary(plan: Plan, trainer, metrics: dict[str, Any], progress: ProgressLine, saved: str) -> dict[str, Any]:
    main = is_main_process()
    checkpoints = plan.out / "checkpoints"
    if main and checkpoints.is_dir() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()  # made by the Trainer; no save_steps, no checkpoints
    state = trainer.state
    summary = {
        "stage": plan.stage,
        "model": plan.info.name,
        "model_path": plan.info.path,
        "adapter_of": getattr(plan.recipe, "adapter", None),
        "saved": saved,
        "output_dir": str(plan.out),
        "steps": state.global_step,
        "epochs": state.epoch,
        "tokens": getattr(trainer, "_total_train_tokens", None) or progress.tokens or None,
        "train_seconds": round(metrics.get("train_runtime", 0.0), 2),
        "final_train_loss": progress.last("loss"),
        "mean_train_loss": metrics.get("train_loss"),
        "eval_loss": metrics.get("eval_loss"),
        "loss_history": [[e["step"], e["loss"]] for e in progress.history if "loss" in e],
        "resumed_from": plan.resume_from,
        "device": plan.device,
        "precision": plan.precision,
        "data": plan.report.as_dict(),
        "notes": plan.notes,
        "recipe": plan.recipe.model_dump(mode="json"),
        "reproducibility": reproducibility(plan),
        "versions": _versions(),
    }
    for key in ("eval_rewards/accuracies", "eval_rewards/margins"):
        if key in metrics:
            summary[key.replace("/", "_")] = metrics[key]
    return summary


def _print_summary(s: dict[str, Any]) -> None:
    def num(value, fmt):
        return "-" if value is None else format(value, fmt)

    tokens = s["tokens"]
    rate = f" ({tokens / s['train_seconds']:,.0f} tok/s)" if tokens and s["train_seconds"] else ""
    console.print(
        f"[bold green]{s['stage']} done[/]: {s['steps']} steps, {num(tokens, ',.0f')} tokens in "
        f"{s['train_seconds']:.0f}s{rate}; final train loss {num(s['final_train_loss'], '.4f')}, "
        f"eval loss {num(s['eval_loss'], '.4f')}; {s['saved']} saved to {s['output_dir']}"
    )
