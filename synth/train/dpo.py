"""`synth train dpo`: TRL's DPOTrainer with PEFT; the reference needs no second copy of the model.

- With a new LoRA adapter (`lora:`), the reference is the model with the adapter disabled
  (``ref_model=None``).
- Starting from an SFT adapter (`adapter:`), that adapter keeps training and TRL copies it once as a
  frozen "ref" adapter, so the reference is the SFT model (the usual DPO setup), still one base model.
- Text data: the reference log-probs are computed once before training (``precompute_ref_log_probs``),
  so each step runs one forward pass, not two. Image-text preference sets train too (TRL computes the
  reference on the fly there).
"""

from __future__ import annotations

from synth.errors import SynthError
from synth.train.models import attn_implementation, load_weights
from synth.train.progress import ProgressLine
from synth.train.recipe import DpoRecipe
from synth.train.runner import (
    TrainResult,
    compact_lm_head,
    finish,
    prepare,
    train,
    trainer_fields,
    weights_dtype,
)
from synth.train.sft import attach_lora, check_adapter


def build_trainer(plan, model, callbacks=None):
    from trl import DPOConfig, DPOTrainer

    recipe: DpoRecipe = plan.recipe
    fields = trainer_fields(plan, DPOConfig)
    precompute = recipe.precompute_ref_log_probs
    if precompute == "auto":
        # One reference pass over every row pays off when training visits every row at least once; a
        # short run over a large set (max_steps) computes the reference on the fly for the rows it sees.
        per_step = recipe.batch_size * recipe.gradient_accumulation
        visited = recipe.max_steps * per_step if recipe.max_steps else recipe.epochs * len(plan.train)
        precompute = not plan.is_vision_data and visited >= len(plan.train)
    if precompute and plan.is_vision_data:
        raise SynthError("precompute_ref_log_probs: TRL cannot precompute for image rows; set it to false (or auto)")
    loss_type = [recipe.loss_type] if isinstance(recipe.loss_type, str) else list(recipe.loss_type)
    fields.update(beta=recipe.beta, loss_type=loss_type, precompute_ref_log_probs=bool(precompute))
    args = DPOConfig(**fields)

    model, peft_config = attach_lora(recipe, model, plan.info.is_vision)
    progress = ProgressLine("dpo")
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=plan.train,
        eval_dataset=plan.eval,
        processing_class=plan.processing,
        peft_config=peft_config,
        callbacks=[progress, *(callbacks or [])],
    )
    return trainer, progress


def run_dpo(recipe: DpoRecipe, callbacks=None) -> TrainResult:
    check_adapter(recipe)
    plan = prepare(recipe, "dpo")
    frozen_base = recipe.adapter is not None or recipe.lora is not None
    dtype = weights_dtype(plan, frozen_base)
    model = load_weights(
        plan.info, device=plan.device, dtype=dtype, qlora=recipe.qlora,
        attn=attn_implementation(plan.device, dtype),
    )
    with compact_lm_head(plan.device):  # the reference pass runs while the trainer is built
        trainer, progress = build_trainer(plan, model, callbacks)
        metrics = train(plan, trainer, progress)
    if hasattr(trainer.model, "peft_config"):
        trainer.model.save_pretrained(str(plan.out), selected_adapters=["default"], is_main_process=trainer.is_world_process_zero())
        saved = "adapter"
    else:
        trainer.save_model(str(plan.out))
        saved = "model"
    return finish(plan, trainer, metrics, progress, saved)
