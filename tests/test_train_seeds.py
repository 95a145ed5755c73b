"""`synth train STAGE RECIPE --seeds N` and `synth eval --compare` on its output: per-run intervals beside
mean ± sd across seeds, on a tiny random model."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from tests.cli_helpers import one_line_error, run_cli
from tests.train_helpers import (
    adapted,
    fast_fields,
    one_torch_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_text_model,
    write_recipe,
)


def test_seeds_train_each_seed_and_eval_reports_mean_and_sd(tmp_path):
    model, data = tiny_text_model(), adapted("scene_qa_text")
    out = tmp_path / "runs"
    recipe = write_recipe(tmp_path, **fast_fields(model, data, out, limit=4, max_steps=2, batch_size=2, seed=7,
                                                  lora={"r": 4, "alpha": 8}))
    result = run_cli("train", "sft", recipe, "--seeds", 2)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "seeds.json").read_text())
    assert summary["seeds"] == [7, 8] and [r["output_dir"] for r in summary["runs"]] == [
        str(out / "seed-7"), str(out / "seed-8")]
    losses = [r["final_train_loss"] for r in summary["runs"]]
    spread = summary["across_seeds"]["final_train_loss"]
    assert spread["mean"] == sum(losses) / 2 and spread["sd"] == abs(losses[0] - losses[1]) / 2**0.5
    assert "2 seeds" in result.output and "±" in result.output
    first, second = (load_file(str(out / s / "adapter_model.safetensors")) for s in ("seed-7", "seed-8"))
    assert any(not torch.equal(first[k], second[k]) for k in first)  # another seed, another adapter
    # seed 7 of --seeds is the plain run with seed 7, bit for bit
    plain = write_recipe(tmp_path, "plain.yaml", **fast_fields(model, data, tmp_path / "plain", limit=4, max_steps=2,
                                                               batch_size=2, seed=7, lora={"r": 4, "alpha": 8}))
    assert run_cli("train", "sft", plain).exit_code == 0
    again = load_file(str(tmp_path / "plain" / "adapter_model.safetensors"))
    assert all(torch.equal(first[k], again[k]) for k in first)

    result = run_cli("eval", model, data, "--compare", "base", f"tuned={out}", "--out", tmp_path / "ev",
                     "--max-new-tokens", 3, "--precision", "fp32", "--device", "cpu", "--limit", 6)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert list(report["models"]) == ["base", "tuned@seed-7", "tuned@seed-8"]
    assert report["models"]["tuned@seed-8"]["adapter"] == str(out / "seed-8")
    group = report["seeds"]["tuned"]
    assert group["runs"] == ["tuned@seed-7", "tuned@seed-8"]
    values = [report["models"][label]["mean_logprob_per_token"] for label in group["runs"]]
    assert group["mean_logprob_per_token"]["values"] == values
    assert group["mean_logprob_per_token"]["mean"] == sum(values) / 2
    assert set(report["comparisons"]["models"]) == {"tuned@seed-7", "tuned@seed-8"}  # each run against base
    assert "mean ± sd (2 seeds)" in " ".join(result.output.split())


def test_seeds_refuse_a_folder_holding_other_files(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    recipe = write_recipe(tmp_path, **fast_fields(tiny_text_model(), adapted("scene_qa_text"), out, limit=4))
    one_line_error(run_cli("train", "sft", recipe, "--seeds", 2), str(out), "notes.txt", "new folder")
    assert (out / "notes.txt").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_seeds_replace_a_plain_run_only_with_overwrite(tmp_path):
    """A plain `synth train` output in OUT: --seeds refuses it, unless overwrite: true (then it replaces it)."""
    out = tmp_path / "sft"
    fields = fast_fields(tiny_text_model(), adapted("scene_qa_text"), out, limit=4, max_steps=1, batch_size=2)
    recipe = write_recipe(tmp_path, **fields)
    assert run_cli("train", "sft", recipe).exit_code == 0
    one_line_error(run_cli("train", "sft", recipe, "--seeds", 2), str(out), "not runs of --seeds")
    assert (out / "adapter_model.safetensors").is_file()
    result = run_cli("train", "sft", recipe, "--seeds", 2, "-s", "overwrite=true")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [".synth-output", "seed-0", "seed-1", "seeds.json"]
