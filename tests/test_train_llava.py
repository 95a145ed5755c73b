"""Image-text training on a tiny LLaVA (CLIP vision config + Llama text config, `<image>` token,
CLIPImageProcessor, LlavaProcessor): align trains only the connector, SFT puts LoRA on the language model
with the connector trained in full and the vision tower frozen, DPO runs on image preference pairs."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from synth.train import recipe_from_dict, run_stage
from tests.train_helpers import (
    adapted,
    fast_fields,
    image_pairs,
    one_torch_thread,  # noqa: F401  (autouse: one torch thread)
    params_of,
    tiny_llava,
)


class Params(TrainerCallback):
    def __init__(self):
        self.params: dict[str, torch.Tensor] = {}
        self.trainable: set[str] = set()

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.params = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}


def _part(name: str) -> str:
    for part in ("vision_tower", "multi_modal_projector", "language_model", "lm_head"):
        if part in name:
            return part
    return "other"


def test_align_trains_only_the_connector(tmp_path):
    base = tiny_llava()
    original = params_of(base)
    out = tmp_path / "aligned"
    params = Params()
    recipe = recipe_from_dict(fast_fields(base, adapted("caption_brief"), out, max_steps=3), "align")
    result = run_stage("align", recipe, callbacks=[params])

    assert {_part(n) for n in params.trainable} == {"multi_modal_projector"}
    changed = {_part(n) for n, t in params.params.items() if not torch.equal(t, original[n])}
    assert changed == {"multi_modal_projector"}
    saved = params_of(out)
    for name, tensor in params.params.items():
        assert torch.equal(saved[name], tensor), name
    assert result.summary["saved"].startswith("model") and (out / "processor_config.json").is_file()
    losses = [loss for _, loss in result.summary["loss_history"]]
    assert len(losses) == 3 and all(loss == loss for loss in losses)  # finite


@pytest.fixture(scope="module")
def llava_sft(tmp_path_factory):
    base = tiny_llava()
    out = tmp_path_factory.mktemp("llava-sft") / "adapter"
    params = Params()
    recipe = recipe_from_dict(
        fast_fields(base, adapted("vqa_short"), out, limit=8, max_steps=8, batch_size=4, learning_rate=3e-2), "sft"
    )
    result = run_stage("sft", recipe, callbacks=[params])
    return base, out, result, params


def test_sft_lora_on_language_model_connector_in_full_vision_frozen(llava_sft):
    base, _, result, params = llava_sft
    original = params_of(base)
    lora = {n for n in params.trainable if "lora_" in n}
    full = params.trainable - lora
    assert lora and {_part(n) for n in lora} == {"language_model"}
    assert full and {_part(n) for n in full} == {"multi_modal_projector"} and all("modules_to_save" in n for n in full)
    for name, tensor in params.params.items():
        if "lora_" in name or "modules_to_save" in name:
            continue
        key = name.replace("base_model.model.", "").replace(".base_layer", "").replace(".original_module", "")
        assert torch.equal(tensor, original[key]), name  # vision tower, language model and the frozen copy
    connector = [n for n in full if n.endswith("linear_1.weight")]
    key = connector[0].replace("base_model.model.", "").replace(".modules_to_save.default", "")
    assert not torch.equal(params.params[connector[0]], original[key])
    losses = [loss for _, loss in result.summary["loss_history"]]
    assert losses[-1] < losses[0]


def test_llava_adapter_reloads_with_connector(llava_sft):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    base, out, _, params = llava_sft
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(str(base)), str(out))
    reloaded = dict(model.named_parameters())
    for name, tensor in params.params.items():
        if "lora_" in name or "modules_to_save" in name:
            assert torch.equal(reloaded[name], tensor), name


def test_image_rows_longer_than_max_length_are_dropped_not_truncated(tmp_path):
    from transformers import AutoProcessor

    from synth.data import load
    from synth.train.runner import prepare

    base = tiny_llava()
    processor = AutoProcessor.from_pretrained(str(base))
    rows = load(adapted("vqa_short")).select(range(8))
    lengths = []
    for row in rows:
        text = processor.apply_chat_template(row["messages"], tokenize=False)
        lengths.append(len(processor(text=[text], images=row["images"], add_special_tokens=False)["input_ids"][0]))
    limit = sorted(lengths)[3]
    expected = sum(n > limit for n in lengths)
    assert expected > 0
    plan = prepare(recipe_from_dict(fast_fields(base, adapted("vqa_short"), tmp_path / "o", limit=8, max_length=limit), "sft"), "sft")
    assert plan.report.dropped_too_long == expected and plan.report.longest == max(lengths)
    assert len(plan.train) == 8 - expected


def test_dpo_on_image_preference_pairs(tmp_path):
    pairs = image_pairs(6, tmp_path / "pairs")
    out = tmp_path / "dpo"
    recipe = recipe_from_dict(fast_fields(tiny_llava(), pairs, out, max_steps=2, batch_size=2), "dpo")
    result = run_stage("dpo", recipe)
    assert result.summary["steps"] == 2 and (out / "adapter_model.safetensors").is_file()
    assert result.summary["recipe"]["precompute_ref_log_probs"] == "auto"  # off for images
