"""`synth train align`: LLaVA stage 1, only the connector (multi_modal_projector) trains, on caption rows.

The vision tower and the language model are frozen (``requires_grad`` off, so the optimizer never sees
them); TRL's SFTTrainer runs the loop with the loss on the assistant (caption) tokens. The result is a
full model folder (weights + processor + chat template) that `synth train sft` can start from.
"""

from __future__ import annotations

from synth.errors import SynthError
from synth.train.models import attn_implementation, connector_name, load_weights
from synth.train.progress import ProgressLine
from synth.train.recipe import AlignRecipe
from synth.train.runner import TrainResult, finish, prepare, train, trainer_fields


def freeze_all_but_connector(model) -> str:
    """Leave only the connector trainable; returns its name."""
    name = connector_name(model)
    if name is None:
        raise SynthError(
            f"{type(model).__name__} has no connector module ({'/'.join(('multi_modal_projector', 'mm_projector'))}) "
            "to align"
        )
    for param_name, param in model.named_parameters():
        param.requires_grad_(f".{name}." in f".{param_name}")
    return name


def run_align(recipe: AlignRecipe, callbacks=None) -> TrainResult:
    from trl import SFTConfig, SFTTrainer

    from synth.train.sft import loss_mode

    plan = prepare(recipe, "align")
    model = load_weights(plan.info, device=plan.device, attn=attn_implementation(plan.device, "float32"))
    freeze_all_but_connector(model)
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
    metrics = train(plan, trainer, progress)
    return finish(plan, trainer, metrics, progress, "model (connector trained)", trainer.save_model)

