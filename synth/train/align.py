"""`synth train align`: image-text stage 1, only the connector trains, on caption rows.

The connector is found per family before the weights load (synth.train.parts: LLaVA's
multi_modal_projector, Qwen-VL's visual.merger, Idefics3/SmolVLM's connector, ...; a recipe's
``connector:`` names it otherwise). The vision tower and the language model are frozen (``requires_grad``
off, so the optimizer never sees them); TRL's SFTTrainer runs the loop with the loss on the assistant (caption) tokens. The result is a
full model folder (weights + processor + chat template) that `synth train sft` can start from.
"""

from __future__ import annotations

from synth.train.models import attn_implementation, load_weights
from synth.train.parts import freeze_all_but, model_parts, require_connector, show_parts
from synth.train.progress import ProgressLine
from synth.train.recipe import AlignRecipe
from synth.train.runner import TrainResult, finish, prepare, train, trainer_fields
from synth.train.vlm_batches import fix_family_batches


def run_align(recipe: AlignRecipe, callbacks=None) -> TrainResult:
    from trl import SFTConfig, SFTTrainer

    from synth.train.sft import loss_mode

    plan = prepare(recipe, "align")
    parts = model_parts(plan.info, recipe.connector)
    require_connector(plan.info, parts, "align")
    model = load_weights(plan.info, device=plan.device, attn=attn_implementation(plan.device, "float32"))
    freeze_all_but(model, parts, ("connector",))
    fields = trainer_fields(plan, SFTConfig)
    fields.update(loss_mode(plan, "assistant"))  # the captions are the assistant turns
    fields.update(packing=False)
    progress = ProgressLine("align")
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**fields),
        train_dataset=plan.train,
        eval_dataset=plan.eval,
        processing_class=plan.processing,
        callbacks=[progress, *(callbacks or [])],
    )
    fix_family_batches(trainer, plan.processing, drop_labels=False)
    show_parts(trainer.model, parts, "align")
    metrics = train(plan, trainer, progress)
    return finish(plan, trainer, metrics, progress, "model (connector trained)", trainer.save_model)

