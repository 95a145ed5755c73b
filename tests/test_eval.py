"""`synth eval` metrics on planted cases: answers the model is known to give, log-likelihoods computed
independently with a plain forward pass, preference and DPO reward accuracies against hand computations."""

from __future__ import annotations

import json

import pytest
import torch

from synth.train.evaluate import (
    ModelSpec,
    Scorer,
    contains_answer,
    evaluate,
    extract_answer,
    normalize_answer,
    resolve_specs,
    score_answer,
)
from tests.cli_helpers import one_line_error, run_cli
from tests.train_helpers import (
    one_torch_thread,  # noqa: F401  (autouse: one torch thread)
    save_pairs,
    tiny_text_model,
)


def test_answer_normalisation_and_scoring():
    assert normalize_answer("The Purple triangle.") == "purple triangle"
    assert normalize_answer("Two") == "2"
    assert score_answer("purple", "purple") == (True, True)
    assert score_answer("Purple.", "purple") == (False, True)
    assert score_answer("three", "3") == (False, True)
    assert score_answer("4", "3") == (False, False)
    assert score_answer("B) blue", "B") == (False, True)
    assert score_answer("(c)", "C") == (False, True)
    assert score_answer("Blue", "B") == (False, False)  # a word starting with B is not the choice B
    assert contains_answer("The answer is 3.", "3") and not contains_answer("The answer is 13.", "3")
    assert extract_answer("purple\n\n### Instruction:\nmore") == "purple"
    assert extract_answer("  \nyes<|im_end|>junk") == "yes"


def _rows(n: int) -> list[dict]:
    return [{"role": "user", "content": f"Scene: {i} red circles. How many circles? Answer with a number."} for i in range(n)]


def _sft_dataset(path, prompts, answers):
    from synth.data import build_dataset, save

    records = [{"messages": [p, {"role": "assistant", "content": a}]} for p, a in zip(prompts, answers)]
    save(build_dataset(iter(records), kind="sft"), path)
    return path


@pytest.fixture(scope="module")
def scorer():
    return Scorer(ModelSpec("base", str(tiny_text_model())), device="cpu", batch_size=3, precision="fp32")


def _independent_logprob(scorer: Scorer, prompt: list[dict], completion: list[dict]) -> float:
    """Sum of log p(completion tokens) from one unpadded forward pass over the whole sequence."""
    tok = scorer.tokenizer
    p_ids = tok(scorer.processing.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True),
                add_special_tokens=False)["input_ids"]
    f_ids = tok(scorer.processing.apply_chat_template(prompt + completion, tokenize=False),
                add_special_tokens=False)["input_ids"]
    assert f_ids[: len(p_ids)] == p_ids
    with torch.no_grad():
        logits = scorer.model(input_ids=torch.tensor([f_ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, -1)
    return float(sum(logprobs[t - 1, f_ids[t]] for t in range(len(p_ids), len(f_ids))))


def test_planted_exact_match_and_loglik(tmp_path, scorer):
    prompts = [[m] for m in _rows(6)]
    replies = scorer.generate(prompts, [[] for _ in prompts], max_new_tokens=6)
    answers = [extract_answer(r) for r in replies]
    assert all(answers)
    # Rows 0, 2, 4 carry the answer the model gives; rows 1, 3, 5 an answer it never gives.
    references = [a if i % 2 == 0 else "qqq zzz" for i, a in enumerate(answers)]
    data = _sft_dataset(tmp_path / "planted", [p[0] for p in prompts], references)
    report = evaluate([scorer.spec], str(data), max_new_tokens=6, batch_size=3, short_answer_words=50,
                      device="cpu", precision="fp32")
    metrics = report.metrics["base"]
    assert metrics["short_answer_rows"] == 6
    assert metrics["exact_match"] == pytest.approx(0.5)
    assert metrics["normalized_accuracy"] == pytest.approx(0.5)
    # 3 of 6 right: the Wilson interval by hand, centre (0.5 + z²/12) / (1 + z²/6) = 0.5, half-width 0.3457
    assert metrics["intervals"]["exact_match"] == pytest.approx([0.1876, 0.8124], abs=1e-4)
    low, high = metrics["intervals"]["mean_logprob_per_token"]
    assert low <= metrics["mean_logprob_per_token"] <= high

    completions = [[{"role": "assistant", "content": r}] for r in references]
    total = sum(_independent_logprob(scorer, p, c) for p, c in zip(prompts, completions))
    scored = scorer.completion_logprobs(prompts, completions, [[] for _ in prompts])
    assert sum(s for s, _ in scored) == pytest.approx(total, abs=1e-3)
    assert metrics["mean_logprob_per_token"] == pytest.approx(total / metrics["reference_tokens"], abs=1e-4)


def test_preference_and_dpo_reward_metrics(tmp_path, scorer):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    prompts = [[m] for m in _rows(5)]
    own = scorer.generate(prompts, [[] for _ in prompts], max_new_tokens=4)
    chosen = [[{"role": "assistant", "content": extract_answer(r) or "x"}] for r in own]
    rejected = [[{"role": "assistant", "content": "qqq zzz vvv"}] for _ in own]
    pairs = save_pairs(
        [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(prompts, chosen, rejected)], tmp_path / "pairs"
    )

    # An adapter with random (not zero) LoRA weights, so policy and reference differ.
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_text_model()))
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    scorer.tokenizer.save_pretrained(str(tmp_path / "adapter"))

    beta = 0.5
    specs = [ModelSpec("base", str(tiny_text_model())), ModelSpec("adapted", str(tiny_text_model()), str(tmp_path / "adapter"))]
    report = evaluate(specs, str(pairs), beta=beta, device="cpu", precision="fp32", batch_size=2)

    def logps(model_scorer, completions):
        return [_independent_logprob(model_scorer, p, c) for p, c in zip(prompts, completions)]

    base_c, base_r = logps(scorer, chosen), logps(scorer, rejected)
    assert report.metrics["base"]["preference_accuracy"] == pytest.approx(sum(c > r for c, r in zip(base_c, base_r)) / 5)
    assert "reward_accuracy" not in report.metrics["base"]  # no reference for a plain model

    adapted = Scorer(specs[1], device="cpu", precision="fp32")
    pol_c, pol_r = logps(adapted, chosen), logps(adapted, rejected)
    margins = [beta * ((pc - bc) - (pr - br)) for pc, pr, bc, br in zip(pol_c, pol_r, base_c, base_r)]
    metrics = report.metrics["adapted"]
    assert metrics["reward_margin"] == pytest.approx(sum(margins) / 5, abs=1e-3)
    assert metrics["reward_accuracy"] == pytest.approx(sum(m > 0 for m in margins) / 5)
    assert metrics["logprob_margin"] == pytest.approx(sum(c - r for c, r in zip(pol_c, pol_r)) / 5, abs=1e-3)


def test_compare_cli_writes_table_and_json(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = tiny_text_model()
    data = _sft_dataset(tmp_path / "data", _rows(4), ["1", "2", "3", "4"])
    torch.manual_seed(1)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(model)),
                                LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    peft_model.save_pretrained(str(tmp_path / "sft"))
    AutoTokenizer.from_pretrained(str(model)).save_pretrained(str(tmp_path / "sft"))

    result = run_cli("eval", model, data, "--compare", "base", tmp_path / "sft", "again=base", "--out", tmp_path / "ev",
                     "--max-new-tokens", 3, "--precision", "fp32")
    assert result.exit_code == 0, result.output
    assert "exact match" in result.output and "Δ sft - base" in result.output and "Δ again - base" in result.output
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert set(report["models"]) == {"base", "sft", "again"} and report["rows"] == 4
    assert report["models"]["sft"]["adapter"] == str(tmp_path / "sft")
    lines = [json.loads(line) for line in (tmp_path / "ev" / "eval_predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 12 and {line["model"] for line in lines} == {"base", "sft", "again"}

    # The paired test counts the rows where exactly one model is right, as the predictions file shows them.
    from synth.train.stats import mcnemar_exact, wilson_interval

    right = {label: {line["id"]: line["exact"] for line in lines if line["model"] == label} for label in ("base", "sft")}
    only_base = sum(right["base"][i] and not right["sft"][i] for i in right["base"])
    only_sft = sum(right["sft"][i] and not right["base"][i] for i in right["base"])
    test = report["comparisons"]["models"]["sft"]["exact_match"]
    assert report["comparisons"]["against"] == "base"
    assert (test["only_first"], test["only_second"]) == (only_base, only_sft)
    assert test["p_value"] == mcnemar_exact(only_base, only_sft)
    assert test["difference"] == pytest.approx((only_sft - only_base) / 4)
    assert report["models"]["sft"]["intervals"]["exact_match"] == list(
        wilson_interval(sum(right["sft"].values()), 4))
    assert report["comparisons"]["models"]["sft"]["mean_logprob_per_token"]["test"] == "paired_bootstrap"
    # The base against itself: no row differs, nothing to tell from zero, and the table says so.
    same = report["comparisons"]["models"]["again"]
    assert same["exact_match"]["p_value"] == 1.0 and same["mean_logprob_per_token"]["interval"] == [0, 0]
    assert not any(t["distinguishable"] for t in same.values())
    assert "(noise)" in result.output and "95% interval" in " ".join(result.output.split())

    one_line_error(run_cli("eval", model, data, "sft"), "--compare")
    one_line_error(run_cli("eval", model, data, "--compare", "nope"), "--compare nope")


def test_collapsed_answers_are_printed_with_their_shares(tmp_path):
    """A model giving one answer to every question while the references hold six: exact match alone would
    hide it; the CLI prints the top answers with their shares and eval.json keeps the distribution."""
    question = {"role": "user", "content": "How many circles are there? Answer with a number."}
    data = _sft_dataset(tmp_path / "data", [question] * 6, ["0", "1", "2", "3", "4", "5"])
    result = run_cli("eval", tiny_text_model(), data, "--out", tmp_path / "ev", "--max-new-tokens", 3,
                     "--precision", "fp32", "--device", "cpu")
    assert result.exit_code == 0, result.output
    (label, metrics), = json.loads((tmp_path / "ev" / "eval.json").read_text())["models"].items()
    answers = metrics["answers"]
    assert answers["distinct_answers"] == 1 and answers["distinct_references"] == 6 and answers["collapsed"]
    (answer, share), = answers["top"]
    assert share == 1.0
    output = " ".join(result.output.split())
    assert f"{label}: answers collapsed to 1 distinct (the references hold 6)" in output
    assert f"{json.dumps(answer)} 100%" in output


def test_answer_distribution_rule():
    from synth.train.evaluate import answer_distribution

    refs = ["0", "1", "2", "3", "4"] * 4
    collapsed = answer_distribution(["3"] * 12 + ["4"] * 8, refs)
    assert collapsed["collapsed"] and collapsed["top"] == [["3", 0.6], ["4", 0.4]]
    assert not answer_distribution(["0", "1", "2", "3", "3"] * 4, refs)["collapsed"]  # 4 of 5 answers
    assert not answer_distribution(["yes"] * 6, ["yes", "no"] * 3)["collapsed"]  # two references say little
    assert answer_distribution([], []) is None


def test_resolve_specs_labels():
    specs = resolve_specs("embedded", None, ["base", "tuned=Qwen/Qwen2-0.5B"])
    assert [(s.label, s.model, s.adapter) for s in specs] == [("base", "embedded", None), ("tuned", "Qwen/Qwen2-0.5B", None)]
