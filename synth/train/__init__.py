"""Training on synth's datasets: align (connector), LoRA SFT, DPO, merge, on transformers + peft + TRL.

`load_recipe` reads a YAML recipe; `run_stage` runs it. Every check that needs no weights (recipe keys,
columns, images vs placeholders, image data vs a text-only model, output folder) happens before the
model loads. See `synth.train.runner` for the output layout and `synth.train.evaluate` for `synth eval`.
"""

from __future__ import annotations

from synth.train.recipe import AlignRecipe, DpoRecipe, MergeRecipe, SftRecipe, load_recipe, recipe_from_dict


def run_stage(stage: str, recipe, callbacks=None):
    """Run a validated recipe for `stage` (align | sft | dpo | merge), with library noise silenced."""
    from synth.optional import TRAIN_PACKAGES, require_all

    require_all(TRAIN_PACKAGES if stage != "merge" else ("torch", "peft"), f"synth train {stage}", extra="train")
    from synth.train.distributed import is_main_process
    from synth.train.progress import console
    from synth.train.runner import quiet_training

    console.quiet = not is_main_process()  # data-parallel: the main process speaks for all

    seed = getattr(recipe, "seed", None)
    if seed is not None:
        from transformers import set_seed

        # Seed before anything draws random numbers (model loading, wrapping an adapter), not only where
        # the trainer seeds itself: the same recipe gives the same adapter whatever ran before it.
        set_seed(seed)
    with quiet_training():
        return _run(stage, recipe, callbacks)


def _run(stage: str, recipe, callbacks):
    if stage == "align":
        from synth.train.align import run_align

        return run_align(recipe, callbacks)
    if stage == "sft":
        from synth.train.sft import run_sft

        return run_sft(recipe, callbacks)
    if stage == "dpo":
        from synth.train.dpo import run_dpo

        return run_dpo(recipe, callbacks)
    if stage == "merge":
        from synth.train.merge import run_merge

        return run_merge(recipe)
    raise ValueError(f"unknown stage {stage!r}")


__all__ = ["AlignRecipe", "DpoRecipe", "MergeRecipe", "SftRecipe", "load_recipe", "recipe_from_dict", "run_stage"]
