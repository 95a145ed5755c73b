"""`synth train sft`: LoRA (or full) supervised fine-tuning with TRL's SFTTrainer, loss on assistant tokens.

- Text data: packed without padding (TRL's best-fit-decreasing packing, padding-free batches), so no
  step computes on pad tokens. Rows never straddle a pack boundary: rows longer than max_length were
  dropped beforehand, so BFD never has to cut one.
- Image-text data: TRL forbids packing and padding-free for images; the vision tower stays frozen,
  LoRA goes on the language model (``exclude_modules`` keeps "all-linear" off the vision side) and the
  connector trains in full through ``modules_to_save``.
- Loss: assistant turns only via the chat template's ``{% generation %}`` markers (TRL patches known
  templates that lack them). A template without markers that TRL cannot patch falls back to the last
  reply as a completion, when every row has exactly one reply (the same tokens); otherwise it is an error.
"""

from __future__ import annotations

from synth.errors import SynthError
from synth.train.data import single_reply, to_prompt_completion
from synth.train.models import attn_implementation, current_template, load_weights
from synth.train.parts import freeze_all_but, show_parts, vision_parts
from synth.train.progress import ProgressLine
from synth.train.recipe import SftRecipe
from synth.train.runner import TrainResult, finish, prepare, train, trainer_fields, weights_dtype
from synth.train.vlm_batches import fix_family_batches


def check_adapter(recipe) -> None:
    """`adapter:` must name a LoRA adapter folder; said before any weights load."""
    from synth.train.models import is_adapter_dir

    if recipe.adapter and not is_adapter_dir(recipe.adapter):
        raise SynthError(f"adapter: {recipe.adapter} is not a LoRA adapter folder (no adapter_config.json)")


def attach_lora(recipe, model, parts=None):
    """The model and PEFT config a TRL trainer takes: `recipe.adapter` trained further (its own LoRA
    settings apply; e.g. a closed loop's previous round), else a new LoRA from `recipe.lora` (None: full).
    `parts`: an image-text model's parts (LoRA on the language model only, the connector in full)."""
    if recipe.adapter:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, recipe.adapter, is_trainable=True), None
    if recipe.lora is not None:
        return model, lora_config(recipe, parts)
    return model, None


def lora_config(recipe, parts=None):
    """peft.LoraConfig from the recipe; image-text models: LoRA on the language model only, the connector
    (and the vision encoder's last `train_vision_blocks` blocks) trained in full and saved with the adapter."""
    from peft import LoraConfig

    spec = recipe.lora
    exclude = spec.exclude_modules
    modules_to_save = spec.modules_to_save
    if parts is not None:
        if exclude is None:
            exclude = parts.not_language_regex()
        if modules_to_save is None:
            modules_to_save = full_modules(recipe, parts) or None
    return LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules,
        exclude_modules=exclude,
        modules_to_save=modules_to_save,
        task_type="CAUSAL_LM",
    )


def full_modules(recipe, parts) -> list[str]:
    """Module paths an image-text LoRA run trains in full: the connector unless `train_connector: false`,
    plus the vision encoder's last `train_vision_blocks` blocks."""
    modules = list(parts.connector) if getattr(recipe, "train_connector", True) else []
    blocks = getattr(recipe, "train_vision_blocks", 0)
    if blocks:
        if blocks > len(parts.vision_blocks):
            raise SynthError(
                f"train_vision_blocks: {blocks}, but the vision encoder has {len(parts.vision_blocks)} blocks"
            )
        modules += parts.vision_blocks[-blocks:]
    return modules


def loss_mode(plan, loss: str) -> dict:
    """SFTConfig loss fields for `loss` (assistant | completion | all), converting the data if needed."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if loss == "all":
        return {"assistant_only_loss": False, "completion_only_loss": False}
    if loss == "assistant":
        template = current_template(plan.processing) or ""
        if has_generation_markers(template):
            return {"assistant_only_loss": True}
        try:
            if get_training_chat_template(plan.processing):
                return {"assistant_only_loss": True}  # TRL swaps in its patched copy of this template
        except ValueError:
            pass
        if not single_reply(plan.train):
            raise SynthError(
                f"model '{plan.info.name}': its chat template has no {{% generation %}} markers, so the loss cannot "
                "be put on assistant turns of multi-turn rows; set chat_template: default (or a template with "
                "markers), or loss: completion (last reply only) / loss: all"
            )
        plan.notes.append("chat template has no generation markers: loss on the last reply (prompt-completion)")
    plan.train = to_prompt_completion(plan.train)
    if plan.eval is not None:
        plan.eval = to_prompt_completion(plan.eval)
    return {"completion_only_loss": True}


def build_trainer(plan, model, callbacks=None, parts=None):
    """The SFTTrainer for a prepared plan (exposed for the benchmark and tests); `parts`: an image-text
    model's parts (synth.train.parts)."""
    from trl import SFTConfig, SFTTrainer

    recipe: SftRecipe = plan.recipe
    fields = trainer_fields(plan, SFTConfig)
    fields.update(loss_mode(plan, recipe.loss))
    packing = recipe.packing
    if packing == "auto":
        packing = not plan.is_vision_data
    if packing and plan.is_vision_data:
        raise SynthError("packing: TRL cannot pack image rows; set packing: false (or auto)")
    fields.update(packing=bool(packing), packing_strategy="bfd")
    args = SFTConfig(**fields)

    if parts is None:
        parts = vision_parts(plan, recipe)  # None for text models
    model, peft_config = attach_lora(recipe, model, parts)
    if recipe.adapter is None and recipe.lora is None and parts is not None:
        freeze_for_full_finetune(model, recipe, parts)
    progress = ProgressLine("sft")
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=plan.train,
        eval_dataset=plan.eval,
        processing_class=plan.processing,
        peft_config=peft_config,
        callbacks=[progress, *(callbacks or [])],
    )
    fix_family_batches(trainer, plan.processing, drop_labels=False)
    return trainer, progress


def freeze_for_full_finetune(model, recipe, parts) -> None:
    """Full fine-tuning of an image-text model: the language model (and connector unless turned off)
    train; the vision encoder stays as it was except its last `train_vision_blocks` blocks."""
    train = ("language", "connector") if recipe.train_connector else ("language",)
    freeze_all_but(model, parts, train)
    blocks = tuple(b + "." for b in full_modules(recipe, parts) if b not in parts.connector)
    for name, param in model.named_parameters():
        if name.startswith(blocks):
            param.requires_grad_(True)


def run_sft(recipe: SftRecipe, callbacks=None) -> TrainResult:
    check_adapter(recipe)
    plan = prepare(recipe, "sft")
    parts = vision_parts(plan, recipe)
    if parts is not None:
        full_modules(recipe, parts)  # a train_vision_blocks the encoder cannot give fails before the weights load
    dtype = weights_dtype(plan, recipe.lora is not None or recipe.adapter is not None)
    model = load_weights(
        plan.info, device=plan.device, dtype=dtype, qlora=recipe.qlora,
        attn=attn_implementation(plan.device, dtype),
    )
    trainer, progress = build_trainer(plan, model, callbacks, parts)
    show_parts(trainer.model, parts, "sft")
    metrics = train(plan, trainer, progress)
    if recipe.lora is not None or recipe.adapter:
        save, saved = trainer.model.save_pretrained, "adapter"
    else:
        save, saved = trainer.save_model, "model"
    return finish(plan, trainer, metrics, progress, saved, save)
