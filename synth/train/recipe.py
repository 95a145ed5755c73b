"""Training recipes: YAML → pydantic models (unknown keys are errors with file:line) → TRL configs.

A recipe names the model, the dataset and its splits, the chat template, LoRA, the schedule and where
the run goes. The file goes through synth's one recipe loader (`synth.recipe_file`, as run and mix
recipes do): ``-s key=value`` overrides (dotted keys for nested fields, values parsed as YAML) are
applied before validation, so they are checked like file values, and every error names its line. Relative paths are resolved against
the recipe's folder first, then the current folder (as `synth mix` does).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from synth.recipe_file import YamlDoc, read_recipe, validate

Stage = Literal["align", "sft", "dpo", "merge"]
#: `model:` values that mean the embedded Gemma 3 270M base (converted on first use).
EMBEDDED_NAMES = ("embedded", "gemma-3-270m")


class LoraSpec(BaseModel):
    """LoRA adapter settings (peft.LoraConfig)."""

    model_config = ConfigDict(extra="forbid")
    r: int = Field(16, ge=1, description="rank")
    alpha: int = Field(32, ge=1, description="scaling numerator (lora_alpha)")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Union[str, list[str]] = Field("all-linear", description="module names, or 'all-linear'")
    exclude_modules: Union[str, list[str], None] = Field(
        None, description="kept out of target_modules; default for image-text models: vision tower and connector"
    )
    modules_to_save: list[str] | None = Field(
        None, description="trained in full and saved with the adapter; default for image-text models: the connector"
    )


class _Recipe(BaseModel):
    """Fields every training stage shares."""

    model_config = ConfigDict(extra="forbid")
    _source: str | None = PrivateAttr(None)  # the recipe file: an input no output_dir may replace

    model: str = Field("embedded", description="Hub id, local folder, or 'embedded' (Gemma 3 270M base)")
    revision: str | None = None
    output_dir: str = Field(description="where the adapter / model, checkpoints and train_summary.json go")
    overwrite: bool = Field(False, description="replace an existing output_dir (otherwise: error, or resume)")
    chat_template: str | None = Field(
        None,
        description="jinja file; 'default' = templates/chat/instruct.jinja; unset = the tokenizer's own, "
        "else the default",
    )

    dataset: str = Field(description="a synth output folder, a file, or a Hub id")
    split: str | None = Field(None, description="split of `dataset` to train on (default: train)")
    limit: int | None = Field(None, ge=1, description="train on the first N rows only")
    eval_dataset: str | None = Field(None, description="held-out data (default: `eval_split` of `dataset`)")
    eval_split: str | None = Field(None, description="split used for evaluation during training")
    eval_limit: int | None = Field(None, ge=1)

    learning_rate: float | None = Field(None, gt=0, description="default: align 1e-3, sft 2e-4, dpo 5e-5")
    lr_scheduler: str = Field("cosine", description="any transformers scheduler name: linear, cosine, constant, ...")
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="overrides epochs")
    batch_size: int = Field(8, ge=1, description="rows per device per step")
    gradient_accumulation: int = Field(1, ge=1)
    max_length: int = Field(1024, ge=8, description="tokens per row; longer rows are dropped and counted")
    eval_steps: int | None = Field(None, ge=1, description="evaluate every N steps (needs eval data)")
    save_steps: int | None = Field(None, ge=1, description="write a checkpoint every N steps")
    save_total_limit: int | None = Field(2, ge=1)
    resume: Union[bool, str] = Field(False, description="true: from the latest checkpoint; or a checkpoint folder")
    seed: int = 0
    logging_steps: int = Field(10, ge=1)
    report_to: Union[str, list[str]] = Field("none", description="'none', 'tensorboard', 'wandb', ...")

    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast where the hardware has it (CUDA, or a CPU with AVX512-BF16)"
    )
    gradient_checkpointing: Union[bool, Literal["auto"]] = Field(
        "auto", description="auto: off (faster) unless QLoRA; turn on when memory is short"
    )
    trl: dict[str, Any] = Field(
        default_factory=dict, description="extra SFTConfig / DPOConfig fields, passed as they are"
    )

    @field_validator("report_to")
    @classmethod
    def _report_list(cls, v):
        return [v] if isinstance(v, str) else v


class _VisionParts(BaseModel):
    """Image-text models: which module is the connector (for families synth does not know)."""

    connector: list[str] | None = Field(
        None, description="image-text: the connector's module path(s) (e.g. model.multi_modal_projector); "
        "default: found by name for every family transformers ships"
    )


class AlignRecipe(_Recipe, _VisionParts):
    """Image-text stage 1: train only the connector (e.g. multi_modal_projector) on caption data."""


class SftRecipe(_Recipe, _VisionParts):
    """LoRA (or full) supervised fine-tuning, loss on assistant tokens."""

    train_connector: bool = Field(True, description="image-text: train the connector in full (false: frozen)")
    train_vision_blocks: int = Field(
        0, ge=0, description="image-text: also train the vision encoder's last N blocks in full"
    )

    adapter: str | None = Field(
        None, description="keep training this LoRA adapter (e.g. the previous round's) instead of a new one"
    )
    lora: LoraSpec | None = Field(default_factory=LoraSpec, description="null: full fine-tuning")
    qlora: bool = Field(False, description="load the base in 4-bit (needs bitsandbytes and a CUDA GPU)")
    loss: Literal["assistant", "completion", "all"] = Field(
        "assistant", description="assistant turns only; the last reply only; or every token"
    )
    packing: Union[bool, Literal["auto"]] = Field(
        "auto", description="pack text rows without padding (BFD, padding-free); auto: on for text data"
    )


class DpoRecipe(_Recipe, _VisionParts):
    """DPO with PEFT: the reference is the model with the new adapter disabled (no second copy)."""

    adapter: str | None = Field(
        None, description="start from this SFT adapter; it is also the reference (copied once, frozen)"
    )
    lora: LoraSpec | None = Field(default_factory=LoraSpec)
    qlora: bool = False
    beta: float = Field(0.1, gt=0)
    loss_type: Union[str, list[str]] = Field("sigmoid", description="TRL DPO loss: sigmoid, ipo, hinge, ...")
    precompute_ref_log_probs: Union[bool, Literal["auto"]] = Field(
        "auto",
        description="auto: on for text data that training visits in full (one reference pass before "
        "training); off for images and for max_steps runs that see only part of the rows",
    )


class MergeRecipe(BaseModel):
    """Merge a LoRA adapter into its base and save a plain model."""

    model_config = ConfigDict(extra="forbid")
    _source: str | None = PrivateAttr(None)  # the recipe file: an input no output_dir may replace
    model: str | None = Field(None, description="base model (default: the one the adapter was trained on)")
    revision: str | None = None
    adapter: str = Field(description="adapter folder written by `synth train sft|dpo`")
    output_dir: str
    overwrite: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: the base model's dtype"
    )

    @model_validator(mode="after")
    def _distinct(self):
        if Path(self.adapter).resolve() == Path(self.output_dir).resolve():
            raise ValueError("output_dir must differ from adapter")
        return self


RECIPES: dict[str, type[BaseModel]] = {
    "align": AlignRecipe,
    "sft": SftRecipe,
    "dpo": DpoRecipe,
    "merge": MergeRecipe,
}
#: Fields holding paths that are resolved against the recipe's folder.
_PATH_FIELDS = ("model", "dataset", "eval_dataset", "adapter", "output_dir", "chat_template", "resume")


# ---------------------------------------------------------------- loading


def _resolve(value: str, base_dir: Path) -> str:
    """A relative path that exists beside the recipe wins; otherwise the value as given (cwd or Hub id)."""
    if not value or os.path.isabs(value) or value in EMBEDDED_NAMES or value == "default":
        return value
    beside = base_dir / value
    if beside.exists():
        return str(beside)
    return value


def load_recipe(path: str | os.PathLike, stage: Stage, overrides: list[str] | None = None):
    """Read, override and validate a recipe for `stage` (synth's one recipe loader: file:line errors,
    duplicate keys, ``-s path=value``); relative paths resolved against its folder."""
    doc = read_recipe(path, "training recipe", overrides, shape="a mapping of keys (model, dataset, output_dir, ...)")
    recipe = validate(RECIPES[stage], doc)
    path = Path(path)
    base_dir = path.resolve().parent
    # Output folders are made where the user runs from (or as written, when absolute).
    updates = {
        name: _resolve(getattr(recipe, name), base_dir)
        for name in _PATH_FIELDS
        if name != "output_dir" and isinstance(getattr(recipe, name, None), str)
    }
    recipe = recipe.model_copy(update=updates)
    recipe._source = str(path)
    return recipe


def recipe_from_dict(data: dict, stage: Stage, source: str = "<recipe>"):
    """Validate a recipe given as a dict (library use, tests); errors name `source` and the key."""
    return validate(RECIPES[stage], YamlDoc(path=Path(source), data=data))
