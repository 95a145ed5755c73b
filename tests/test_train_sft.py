"""LoRA SFT on a tiny random Llama: trains, only LoRA moves, saves/reloads/merges, resumes, masks labels.

The data is the demo's text scene QA (`synth adapt -t scene_qa_text`), a handful of rows the model can
overfit in a few steps.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainerCallback

from synth.train import recipe_from_dict, run_stage
from tests.train_helpers import (
    adapted,
    fast_fields,
    one_torch_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_text_model,
)

PROBE = "### Instruction:\nHow many shapes are there?\n\n### Response:\n"


def _probe_ids(tokenizer) -> torch.Tensor:
    return torch.tensor([tokenizer(PROBE, add_special_tokens=False)["input_ids"]])


class Snapshot(TrainerCallback):
    """At the end of training: every parameter, and the logits on a fixed probe."""

    def __init__(self, tokenizer):
        self.ids = _probe_ids(tokenizer)
        self.params: dict[str, torch.Tensor] = {}
        self.trainable: set[str] = set()
        self.logits = None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.params = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        model.eval()
        with torch.no_grad():
            self.logits = model(input_ids=self.ids).logits.clone()


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    """One LoRA SFT run (packing on, the default for text) shared by the checks below."""
    from transformers import AutoTokenizer

    base = tiny_text_model()
    out = tmp_path_factory.mktemp("sft") / "adapter"
    snapshot = Snapshot(AutoTokenizer.from_pretrained(str(base)))
    recipe = recipe_from_dict(
        fast_fields(base, adapted("scene_qa_text"), out, limit=8, max_steps=8, batch_size=4, learning_rate=2e-2), "sft"
    )
    result = run_stage("sft", recipe, callbacks=[snapshot])
    return base, out, result, snapshot


def test_loss_goes_down_on_a_tiny_overfit_set(sft_run):
    _, out, result, _ = sft_run
    history = [loss for _, loss in result.summary["loss_history"]]
    assert len(history) == 8
    assert history[-1] < 0.7 * history[0], history
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 8 and summary["saved"] == "adapter" and summary["tokens"] > 0
    assert summary["data"]["train_rows"] == 8 and summary["data"]["dropped_too_long"] == 0


def test_only_lora_weights_train_and_base_stays_bit_identical(sft_run):
    from safetensors.torch import load_file

    base, _, _, snapshot = sft_run
    original = load_file(str(base / "model.safetensors"))
    assert snapshot.trainable and all("lora_" in n for n in snapshot.trainable)
    compared = 0
    for name, tensor in snapshot.params.items():
        if "lora_" in name:
            continue
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(tensor, original[key]), name
        compared += 1
    assert compared == len(original)
    lora_b = [t for n, t in snapshot.params.items() if "lora_B" in n]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: nonzero means it trained


def test_adapter_saves_reloads_and_merges(sft_run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from synth.train.merge import merge_adapter

    base, out, _, snapshot = sft_run
    assert (out / "adapter_config.json").is_file() and (out / "chat_template.jinja").is_file()
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)), str(out)).eval()
    with torch.no_grad():
        adapted_logits = reloaded(input_ids=snapshot.ids).logits
    torch.testing.assert_close(adapted_logits, snapshot.logits, rtol=0, atol=1e-5)

    merged_dir = merge_adapter(out, tmp_path / "merged", model=str(base))
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    with torch.no_grad():
        merged_logits = merged(input_ids=snapshot.ids).logits
    torch.testing.assert_close(merged_logits, adapted_logits, rtol=0, atol=1e-4)
    assert (merged_dir / "chat_template.jinja").read_text() == (out / "chat_template.jinja").read_text()
    base_model = AutoModelForCausalLM.from_pretrained(str(base)).eval()
    with torch.no_grad():
        assert not torch.allclose(base_model(input_ids=snapshot.ids).logits, merged_logits, atol=1e-3)


def test_merge_through_the_cli(sft_run, tmp_path):
    from tests.cli_helpers import run_cli
    from tests.train_helpers import write_recipe

    base, out, _, _ = sft_run
    recipe = write_recipe(tmp_path, adapter=str(out), output_dir=str(tmp_path / "m"), model=str(base))
    result = run_cli("train", "merge", recipe)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / "model.safetensors").is_file() and (tmp_path / "m" / "tokenizer.json").is_file()


class StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step
        self.seen: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.seen.append(state.global_step)
        if state.global_step >= self.step:
            control.should_training_stop = True


def test_resume_from_a_checkpoint_continues_the_step_count(tmp_path):
    out = tmp_path / "run"
    fields = fast_fields(tiny_text_model(), adapted("scene_qa_text"), out, limit=8, max_steps=4, save_steps=2,
                         packing=False)
    first = StopAt(2)
    run_stage("sft", recipe_from_dict(fields, "sft"), callbacks=[first])
    assert first.seen == [1, 2]
    assert (out / "checkpoints" / "checkpoint-2").is_dir()

    # A run killed while saving leaves a newer checkpoint folder that is empty or lacks its trainer state.
    (out / "checkpoints" / "checkpoint-4").mkdir()
    (out / "checkpoints" / "checkpoint-3").mkdir()
    (out / "checkpoints" / "checkpoint-3" / "adapter_config.json").write_text("{}")
    second = StopAt(99)
    result = run_stage("sft", recipe_from_dict({**fields, "resume": True}, "sft"), callbacks=[second])
    assert second.seen == [3, 4]
    assert result.summary["steps"] == 4
    assert result.summary["resumed_from"].endswith("checkpoint-2")


def test_overwrite_replaces_a_training_output_synth_wrote(tmp_path):
    from tests.cli_helpers import run_cli
    from tests.train_helpers import write_recipe

    out = tmp_path / "run"
    fields = fast_fields(tiny_text_model(), adapted("scene_qa_text"), out, limit=4, max_steps=1, packing=False)
    recipe = write_recipe(tmp_path, **fields)
    assert run_cli("train", "sft", recipe).exit_code == 0
    assert (out / ".synth-output").is_file()
    (out / "stale.txt").write_text("from the first run")
    result = run_cli("train", "sft", recipe, "-s", "overwrite=true")
    assert result.exit_code == 0, result.output
    assert not (out / "stale.txt").exists() and (out / "train_summary.json").is_file()


def _plan_and_trainer(tmp_path, model, name="o", limit=6, **extra):
    from synth.train.models import load_weights
    from synth.train.runner import prepare
    from synth.train.sft import build_trainer

    fields = fast_fields(model, adapted("scene_qa_text"), tmp_path / name, limit=limit, **extra)
    plan = prepare(recipe_from_dict(fields, "sft"), "sft")
    trainer, _ = build_trainer(plan, load_weights(plan.info, device="cpu"))
    return plan, trainer


def test_loss_is_on_the_assistant_reply_and_its_eos(tmp_path):
    from synth.data import load

    plan, trainer = _plan_and_trainer(tmp_path, tiny_text_model(), packing=False)
    tokenizer = plan.processing
    answers = [row["messages"][-1]["content"] for row in load(adapted("scene_qa_text")).select(range(6))]
    for row, answer in zip(trainer.train_dataset, answers):
        trained = [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
        assert tokenizer.decode(trained) == answer + tokenizer.eos_token


def test_template_with_markers_is_kept_and_unknown_template_falls_back(tmp_path):
    plan, trainer = _plan_and_trainer(tmp_path, tiny_text_model("chatml"), packing=False)
    assert trainer.args.assistant_only_loss and "<|im_start|>" in plan.processing.chat_template
    row = trainer.train_dataset[0]
    trained = [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
    assert plan.processing.decode(trained).endswith("<|im_end|>")

    # A template without {% generation %} markers that TRL cannot patch: the last reply becomes the completion.
    plain = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    from synth.train.tiny import build_text_model

    model = build_text_model(tmp_path / "plain", chat_template=plain)
    plan, trainer = _plan_and_trainer(tmp_path, model, name="o2", packing=False)
    assert trainer.args.completion_only_loss and any("prompt-completion" in n for n in plan.notes)
    assert set(trainer.train_dataset.column_names) >= {"input_ids", "labels"}


def test_long_rows_are_dropped_and_counted(tmp_path):
    from transformers import AutoTokenizer

    from synth.data import load
    from synth.train.models import default_template_text

    model = tiny_text_model()
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    rows = load(adapted("scene_qa_text")).select(range(8))
    lengths = [
        len(tokenizer(tokenizer.apply_chat_template(r["messages"], tokenize=False, chat_template=default_template_text()),
                      add_special_tokens=False)["input_ids"])
        for r in rows
    ]
    limit = sorted(lengths)[4]
    expected = sum(n > limit for n in lengths)
    assert 0 < expected < 8
    plan, _ = _plan_and_trainer(tmp_path, model, limit=8, max_length=limit, packing=False)
    assert plan.report.dropped_too_long == expected and plan.report.longest == max(lengths)
    assert any(f"dropped {expected} of 8 rows" in note for note in plan.notes)


def test_cpu_compact_lm_head_gives_trl_loss_and_gradients(tmp_path):
    from synth.train.runner import compact_lm_head

    plan, trainer = _plan_and_trainer(tmp_path, tiny_text_model(), packing=False)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    model = trainer.model.eval()  # no dropout: both passes see the same function

    def loss_and_grads():
        model.zero_grad()
        loss = model(**batch, fused_lm_head=True).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain_loss, plain_grads = loss_and_grads()
    with compact_lm_head("cpu"):
        compact_loss, compact_grads = loss_and_grads()
    torch.testing.assert_close(compact_loss, plain_loss, rtol=1e-5, atol=1e-6)
    assert compact_grads.keys() == plain_grads.keys()
    for name in plain_grads:
        torch.testing.assert_close(compact_grads[name], plain_grads[name], rtol=1e-4, atol=1e-6)


def test_packed_rows_do_not_attend_to_each_other():
    """Padding-free packing relies on position_ids resets separating the rows (sdpa on CPU here)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_text_model()), attn_implementation="sdpa").eval()
    a, b = torch.tensor([[5, 9, 14, 30, 7]]), torch.tensor([[11, 3, 8]])
    packed = torch.cat([a, b], dim=1)
    positions = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]])
    with torch.no_grad():
        together = model(input_ids=packed, position_ids=positions, use_cache=False).logits  # as in training
        alone = torch.cat([model(input_ids=a).logits, model(input_ids=b).logits], dim=1)
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_cli_sft_one_step(tmp_path):
    from tests.cli_helpers import run_cli
    from tests.train_helpers import write_recipe

    recipe = write_recipe(tmp_path, **fast_fields(tiny_text_model(), adapted("scene_qa_text"), tmp_path / "cli", limit=4))
    result = run_cli("train", "sft", recipe, "-s", "max_steps=1", "-s", "lora.r=4")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "cli" / "train_summary.json").read_text())
    assert summary["steps"] == 1 and summary["recipe"]["lora"]["r"] == 4
    assert "sft done: 1 steps" in result.output


def test_same_recipe_gives_the_same_adapter_whatever_the_global_rng(tmp_path):
    """A new adapter's initial LoRA weights come from the global RNG: the recipe's seed decides them."""
    from safetensors.torch import load_file

    base = tiny_text_model()
    adapters = []
    for noise in (1, 2):
        torch.manual_seed(noise)  # whatever ran before in this process
        torch.rand(noise * 7)
        out = tmp_path / f"run{noise}"
        recipe = recipe_from_dict(fast_fields(base, adapted("scene_qa_text"), out, limit=4, max_steps=1, batch_size=2), "sft")
        run_stage("sft", recipe)
        adapters.append(load_file(str(out / "adapter_model.safetensors")))
    assert adapters[0].keys() == adapters[1].keys()
    assert all(torch.equal(adapters[0][k], adapters[1][k]) for k in adapters[0])


def test_same_seed_same_adapter_bit_for_bit_with_cpu_bf16_autocast_and_dropout(tmp_path):
    """Every random source of a run (LoRA init, data order, dropout) follows the recipe's seed, also under CPU
    bf16 autocast: the same recipe and seed retrain the same tensors; another seed gives other ones. The
    summary records what decided them."""
    from safetensors.torch import load_file

    base = tiny_text_model()

    def train(seed: int, name: str) -> tuple[dict, dict]:
        out = tmp_path / name
        fields = fast_fields(base, adapted("scene_qa_text"), out, limit=8, max_steps=3, batch_size=2, seed=seed,
                             precision="bf16", lora={"r": 4, "alpha": 8, "dropout": 0.2})
        torch.manual_seed(1000 + len(name))  # whatever ran before in this process
        run_stage("sft", recipe_from_dict(fields, "sft"))
        return load_file(str(out / "adapter_model.safetensors")), json.loads((out / "train_summary.json").read_text())

    first, summary = train(3, "a")
    again, _ = train(3, "again")
    other, other_summary = train(4, "other")
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)
    record = summary["reproducibility"]
    assert record["seed"] == record["lora_init_seed"] == record["data_order_seed"] == 3
    assert record["cpu_bf16_autocast"] and record["precision"] == "bf16" and record["torch_threads"] >= 1
    assert other_summary["reproducibility"]["seed"] == 4
