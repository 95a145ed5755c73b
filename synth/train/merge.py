"""`synth train merge`: fold a LoRA adapter into its base and save a plain model.

The result is safetensors plus the tokenizer/processor and the chat template the adapter trained with,
loadable by `transformers`, vLLM or ``synth ... --backend local --model OUT``. It is written to a
temporary sibling and renamed into place, so a failed merge leaves no half-written model.
"""

from __future__ import annotations

import json
from pathlib import Path

from synth.errors import SynthError
from synth.io import atomic_path
from synth.ownership import check_replaceable, mark
from synth.train.models import adapter_base, inspect_model, is_adapter_dir, load_processing, load_weights
from synth.train.progress import console
from synth.train.recipe import MergeRecipe
from synth.train.runner import TRAIN_OUTPUTS


def merge_adapter(adapter: str | Path, out: str | Path, *, model: str | None = None, revision: str | None = None,
                  dtype: str = "auto", overwrite: bool = False, inputs: tuple = ()) -> Path:
    """Load base + adapter, merge_and_unload, save model + processing class + template into `out`."""
    import torch
    from peft import PeftModel

    adapter = Path(adapter)
    out = Path(out)
    if not is_adapter_dir(adapter):
        raise SynthError(f"adapter: {adapter} is not a LoRA adapter folder (no adapter_config.json)")
    if out.exists() and not overwrite:
        raise SynthError(f"{out} already exists; set overwrite: true (or -s overwrite=true) to replace it")
    check_replaceable(out, [adapter, model, *inputs], also=TRAIN_OUTPUTS, choose="set output_dir to a new folder")
    base = model or adapter_base(adapter)
    if not base:
        raise SynthError(f"adapter {adapter}: cannot tell its base model; set model: in the recipe")
    info = inspect_model(base, revision)
    if dtype == "auto":
        dtype = str(getattr(info.config, "dtype", None) or getattr(info.config, "torch_dtype", None) or "float32")
        dtype = dtype.replace("torch.", "")
    weights = load_weights(info, device="cpu", dtype=dtype)
    merged = PeftModel.from_pretrained(weights, str(adapter)).merge_and_unload()
    # The adapter folder holds the tokenizer/processor saved with the template it was trained with.
    source = adapter if (adapter / "tokenizer_config.json").is_file() else None
    processing = load_processing(type(info)(**{**info.__dict__, "path": str(source)})) if source else load_processing(info)
    with atomic_path(out, overwrite) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        processing.save_pretrained(str(tmp))
        mark(tmp, "train merge")
        (tmp / "merge_summary.json").write_text(
            json.dumps({"base": base, "adapter": str(adapter), "dtype": dtype, "torch": torch.__version__}, indent=2)
            + "\n"
        )
    console.print(f"[bold green]merged[/] {adapter} into {base}: saved to {out}")
    return out


def run_merge(recipe: MergeRecipe) -> Path:
    return merge_adapter(
        recipe.adapter, recipe.output_dir, model=recipe.model, revision=recipe.revision, dtype=recipe.dtype,
        overwrite=recipe.overwrite, inputs=(recipe._source,),
    )
