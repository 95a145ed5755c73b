"""DPO with PEFT on a tiny random Llama: the reference is the model with the adapter disabled (no second
copy), reference log-probs are precomputed for text, the loss goes down, and DPO can start from an SFT
adapter (then frozen as the reference)."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from synth.train import recipe_from_dict, run_stage
from tests.train_helpers import (
    adapted,
    fast_fields,
    one_torch_thread,  # noqa: F401  (autouse: one torch thread)
    scene_pairs,
    tiny_text_model,
)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return scene_pairs(adapted("scene_qa_text"), tmp_path_factory.mktemp("pairs") / "pairs", limit=8)


def test_dpo_new_adapter_reference_is_the_base_and_loss_drops(tmp_path, pairs):
    from synth.train.dpo import build_trainer
    from synth.train.models import load_weights
    from synth.train.runner import prepare

    fields = fast_fields(tiny_text_model(), pairs, tmp_path / "dpo", max_steps=10, batch_size=4, learning_rate=2e-2,
                         beta=0.5)
    plan = prepare(recipe_from_dict(fields, "dpo"), "dpo")
    trainer, _ = build_trainer(plan, load_weights(plan.info, device="cpu"))
    assert trainer.ref_model is None  # PEFT: adapters disabled give the reference
    assert {"ref_chosen_logps", "ref_rejected_logps"} <= set(trainer.train_dataset.column_names)

    result = run_stage("dpo", recipe_from_dict(fields, "dpo"))
    losses = [loss for _, loss in result.summary["loss_history"]]
    assert abs(losses[0] - 0.6931) < 0.02  # policy == reference at step 1: -log sigmoid(0)
    assert losses[-1] < losses[0] - 0.1, losses
    assert (tmp_path / "dpo" / "adapter_model.safetensors").is_file()


class RefAdapter(TrainerCallback):
    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.ref = {n: p.detach().clone() for n, p in model.named_parameters() if ".ref." in n}
        self.default = {n: p.detach().clone() for n, p in model.named_parameters() if ".default." in n}


def test_dpo_from_an_sft_adapter_keeps_it_as_frozen_reference(tmp_path, pairs):
    from safetensors.torch import load_file

    sft_out = tmp_path / "sft"
    run_stage("sft", recipe_from_dict(fast_fields(tiny_text_model(), adapted("scene_qa_text"), sft_out, limit=8), "sft"))
    sft_weights = load_file(str(sft_out / "adapter_model.safetensors"))

    callback = RefAdapter()
    out = tmp_path / "dpo"
    fields = fast_fields(tiny_text_model(), pairs, out, max_steps=3, batch_size=4, adapter=str(sft_out))
    result = run_stage("dpo", recipe_from_dict(fields, "dpo"), callbacks=[callback])
    assert result.summary["adapter_of"] == str(sft_out)
    assert callback.ref and len(callback.ref) == len(callback.default)
    for name, tensor in callback.ref.items():
        saved_key = name.replace(".ref.", ".")
        assert torch.equal(tensor, sft_weights[saved_key]), name  # the reference never moved
    moved = [n for n, t in callback.default.items() if not torch.equal(t, sft_weights[n.replace(".default.", ".")])]
    assert moved  # the policy did
    assert not (out / "ref").exists()  # only the trained adapter is saved
    assert (out / "chat_template.jinja").read_text() == (sft_out / "chat_template.jinja").read_text()
