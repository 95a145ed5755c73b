"""LoRA SFT of the real embedded Gemma 3 270M for a few steps on CPU, then the adapter answers.
Slow (model load + a few CPU steps): run with ``-m slow``."""

from __future__ import annotations

import pytest

from synth.train import recipe_from_dict, run_stage
from tests.train_helpers import adapted

pytestmark = pytest.mark.slow


def test_lora_sft_on_gemma_270m(tmp_path):
    from synth.train.evaluate import ModelSpec, evaluate

    out = tmp_path / "sft"
    recipe = recipe_from_dict(
        dict(model="embedded", dataset=str(adapted("scene_qa_text", count=8)), output_dir=str(out), chat_template="default",
             limit=24, max_steps=4, batch_size=2, max_length=256, learning_rate=1e-3, logging_steps=1,
             lora={"r": 8, "alpha": 16, "dropout": 0.0}, device="cpu"),
        "sft",
    )
    result = run_stage("sft", recipe)
    losses = [loss for _, loss in result.summary["loss_history"]]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    assert (out / "adapter_model.safetensors").is_file() and result.summary["model"] == "embedded"

    # The adapter loads on the base and answers a held-out question (any answer: 4 steps teach the format).
    report = evaluate([ModelSpec("sft", "embedded", str(out))], str(adapted("scene_qa_text", count=4, seed=1)),
                      limit=4, max_new_tokens=6, batch_size=4)
    metrics = report.metrics["sft"]
    assert metrics["short_answer_rows"] == 4 and metrics["mean_logprob_per_token"] < 0
    assert all(p["reply"] is not None for p in report.predictions["sft"])
