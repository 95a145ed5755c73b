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
from synth.train.models import (
    VISION_MODULES,
    attn_implementation,
    connector_name,
    current_template,
    load_weights,
)
from synth.train.progress import ProgressLine
from synth.train.recipe import SftRecipe
from synth.train.runner import TrainResult, finish, prepare, train, trainer_fields, weights_dtype


def check_adapter(recipe) -> None:
    """`adapter:` must name a LoRA adapter folder; said before any weights load."""
    from synth.train.models import is_adapter_dir

    if recipe.adapter and not is_adapter_dir(recipe.adapter):
        raise SynthError(f"adapter: {recipe.adapter} is not a LoRA adapter folder (no adapter_config.json)")


def attach_lora(recipe, model, is_vision: bool):
    """The model and PEFT config a TRL trainer takes: `recipe.adapter` trained further (its own LoRA
    settings apply; e.g. a closed loop's previous round), else a new LoRA from `recipe.lora` (None: full)."""
    if recipe.adapter:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, recipe.adapter, is_trainable=True), None
    if recipe.lora is not None:
        return model, lora_config(recipe.lora, model, is_vision)
    return model, None


def lora_config(spec, model, is_vision: bool):
    """peft.LoraConfig from the recipe; image-text models keep LoRA off the vision side, train the connector."""
    from peft import LoraConfig

    exclude = spec.exclude_modules
    modules_to_save = spec.modules_to_save
    if is_vision:
        if exclude is None:
            exclude = VISION_MODULES
        connector = connector_name(model)
        if modules_to_save is None and connector:
            modules_to_save = [connector]
    return LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules,
        exclude_modules=exclude,
        modules_to_save=modules_to_save,
        task_type="CAUSAL_LM",
    )


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


def build_trainer(plan, model, callbacks=None):
    """The SFTTrainer for a prepared plan (exposed for the benchmark and tests)."""
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

    model, peft_config = attach_lora(recipe, model, plan.info.is_vision)
    if recipe.adapter is None and recipe.lora is None and plan.info.is_vision:
        freeze_vision_tower(model)
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
    return trainer, progress


def freeze_vision_tower(model) -> None:
    """Full fine-tuning of an image-text model still leaves the vision encoder as it was."""
    import re

    pattern = re.compile(VISION_MODULES.replace("|multi_modal_projector|mm_projector", ""))
    for name, param in model.named_parameters():
        if pattern.match(name):
            param.requires_grad_(False)


def run_sft(recipe: SftRecipe, callbacks=None) -> TrainResult:
    check_adapter(recipe)
    plan = prepare(recipe, "sft")
    dtype = weights_dtype(plan, recipe.lora is not None or recipe.adapter is not None)
    model = load_weights(
        plan.info, device=plan.device, dtype=dtype, qlora=recipe.qlora,
        attn=attn_implementation(plan.device, dtype),
    )
    trainer, progress = build_trainer(plan, model, callbacks)
    metrics = train(plan, trainer, progress)
    if recipe.lora is not None or recipe.adapter:
        trainer.model.save_pretrained(str(plan.out), is_main_process=trainer.is_world_process_zero())
        saved = "adapter"
    else:
        trainer.save_model(str(plan.out))
        saved = "model"
    return finish(plan, trainer, metrics, progress, saved)
