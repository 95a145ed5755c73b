"""One image-text model through the path a user takes, as CLI commands: demo images → `synth adapt` →
`synth train sft` (recipe) → `synth eval` with the adapter → `synth generate --backend local` with base +
adapter on image rows. A tiny random Qwen2-VL (synth.train.tiny.build_vlm): the point is the path, not
the score."""

from __future__ import annotations

import json

from safetensors import safe_open

from tests.cli_helpers import run_cli
from tests.run_helpers import rows
from tests.train_helpers import one_torch_thread, tiny_vlm, write_recipe  # noqa: F401 - a fixture


def test_sft_eval_generate_on_demo_images(tmp_path):
    model = tiny_vlm("qwen2_vl")

    shapes, train, held_out = tmp_path / "shapes", tmp_path / "vqa", tmp_path / "held_out"
    result = run_cli("demo-data", shapes, "--count", 6, "--size", 64)
    assert result.exit_code == 0, result.output
    assert len(rows(shapes)) == 6
    result = run_cli("adapt", shapes, "-t", "vqa_short", "-o", train)
    assert result.exit_code == 0, result.output
    result = run_cli("demo-data", tmp_path / "other", "--count", 2, "--size", 64, "--seed", 1)
    assert result.exit_code == 0, result.output
    result = run_cli("adapt", tmp_path / "other", "-t", "vqa_short", "-o", held_out)
    assert result.exit_code == 0, result.output
    samples = rows(train)
    assert samples and all(len(row["images"]) == 1 for row in samples)

    out = tmp_path / "sft"
    recipe = write_recipe(tmp_path, model=str(model), dataset=str(train), output_dir=str(out), max_steps=3,
                          batch_size=4, max_length=512, learning_rate=1e-2, precision="fp32", device="cpu",
                          logging_steps=1, warmup_ratio=0.0, lora={"r": 4, "alpha": 8, "dropout": 0.0})
    result = run_cli("train", "sft", recipe)
    assert result.exit_code == 0, result.output
    assert "connector" in result.output  # the parts table: LoRA on the language model, the merger in full
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as saved:
        names = list(saved.keys())
    assert any("lora_A" in n and "language_model" in n for n in names)
    assert any("visual.merger" in n and "lora" not in n for n in names)  # the connector, saved in full
    assert not any("visual.blocks" in n for n in names)  # the vision tower stays frozen
    summary = json.loads((out / "train_summary.json").read_text())
    assert len(summary["loss_history"]) == 3 and all(loss > 0 for _, loss in summary["loss_history"])

    report_path = tmp_path / "ev" / "eval.json"
    result = run_cli("eval", model, held_out, "--adapter", out, "--out", report_path, "--max-new-tokens", 2,
                     "--batch-size", 2, "--device", "cpu", "--precision", "fp32")
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    (metrics,) = report["models"].values()
    n_held_out = len(rows(held_out))
    assert report["rows"] == n_held_out and metrics["adapter"] == str(out)
    assert metrics["mean_logprob_per_token"] < 0
    predictions = (tmp_path / "ev" / "eval_predictions.jsonl").read_text().splitlines()
    assert len(predictions) == n_held_out

    answers = tmp_path / "answers"
    result = run_cli("generate", held_out, "-o", answers, "--backend", "local", "--model", out, "--regenerate",
                     "--temperature", "0", "--max-tokens", "4", "--keep-truncated", "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    written = rows(answers)
    assert len(written) == n_held_out and all(len(row["images"]) == 1 for row in written)
    assert all(row["messages"][-1]["role"] == "assistant" for row in written)
    assert all(isinstance(row["messages"][-1]["content"], (str, list)) for row in written)
    # the questions went through unchanged; only the answers are the model's
    assert [row["messages"][:-1] for row in written] == [row["messages"][:-1] for row in rows(held_out)]
