"""The closed loop (`synth loop`, a recipe's ``loop:`` block) on tiny random models built from configs.

Round k pseudo-labels questions with model k (the loopback server answers per round's model name, or the
local backend serves the previous round's adapter), trains model k+1 from model k's adapter, and scores
it on a fixed held-out split. The answers are planted, so the gate's keeps and drops are known exactly.
"""

from __future__ import annotations

import json
import re
import signal
from collections import Counter
from pathlib import Path

import pytest

from synth.errors import SynthError
from synth.llm.testing import LLMTestServer
from synth.run import RunOptions, run_recipe
from tests.run_helpers import rows, synth_command
from tests.train_helpers import one_torch_thread, tiny_text_model  # noqa: F401 - a fixture

TRAIN = ("max_steps: 2, batch_size: 4, max_length: 256, learning_rate: 0.01, precision: fp32, device: cpu, "
         "logging_steps: 1, warmup_ratio: 0.0")

RECIPE = """\
name: loopy
backends:
  student: {{backend: openai, model: loop, base_url: {url}, max_retries: 1, timeout: 10, backoff_base: 0.01}}
stages:
  - {{type: demo, name: shapes, count: 4, size: 64}}
  - {{type: demo, name: other, count: 4, size: 64, offset: 4}}
  - {{type: demo, name: held, count: 3, size: 64, offset: 8}}
  - {{type: adapt, name: labelled, input: shapes, template: scene_qa_text}}
  - {{type: adapt, name: questions, input: other, template: scene_qa_text}}
  - {{type: adapt, name: heldout, input: held, template: scene_qa_text}}
  - {{type: pseudo_label, name: pseudo, input: questions, backend: student, hide_labels: true, samples: 5,
      min_agreement: 0.6, max_tokens: 4}}
loop:
  rounds: {rounds}
  model: {model}
  sft: {{data: [labelled, pseudo], {train}}}
  eval: {{data: heldout, limit: 4, max_new_tokens: 4, device: cpu, precision: fp32}}
  serve: {{command: "echo {{round}} {{model}} {{adapter}} >> served.txt"}}
{extra}"""


def planted(body: dict) -> list[str]:
    """Five sampled answers per question, by question kind and by the round's model name.
    Counts: 3 of 5 agree on "2" (kept). Colours: no majority in round 0, 4 of 5 "red" later. Other
    questions: a 2-2 tie (dropped)."""
    question = body["messages"][-1]["content"].lower()
    n = body.get("n") or 1
    first_round = body["model"].endswith("-round-0")
    if "how many" in question:
        replies = ["2", "2", "2", "3", "1"]
    elif "what color" in question:
        replies = ["red", "blue", "green", "red", "yellow"] if first_round else ["red", "red", "red", "red", "blue"]
    else:
        replies = ["yes", "no", "yes", "no", "maybe"]
    return replies[:n]


@pytest.fixture(scope="module")
def server():
    s = LLMTestServer()
    s.script(planted)
    s.start()
    yield s
    s.stop()


def write(folder: Path, server, rounds: int = 3, model: str | None = None, extra: str = "") -> Path:
    path = folder / "loop.yaml"
    path.write_text(RECIPE.format(url=server.base_url, rounds=rounds, model=model or tiny_text_model(),
                                  train=TRAIN, extra=extra), encoding="utf-8")
    return path


def kinds(run_dir: Path, k: int) -> Counter:
    """What round k kept, by question kind."""
    out = Counter()
    for row in rows(run_dir / f"round_{k}" / "pseudo"):
        question = row["messages"][-2]["content"].lower()
        kind = "count" if "how many" in question else "color" if "what color" in question else "other"
        out[(kind, row["messages"][-1]["content"])] += 1
    return out


@pytest.fixture(scope="module")
def baseline(server, tmp_path_factory):
    """Three uninterrupted rounds through the loopback server."""
    folder = tmp_path_factory.mktemp("loop-baseline")
    before = len(server.requests)
    result = run_recipe(write(folder, server), options=RunOptions(runs_dir=folder / "runs", live=False))
    return folder / "runs" / "loopy", result, server.requests[before:]


def test_rounds_ask_each_rounds_model_and_the_gate_keeps_the_planted_majorities(baseline):
    run_dir, result, requests = baseline
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["state"] == "done" and [r["round"] for r in manifest["rounds"]] == [0, 1, 2]
    # the shared stages ran once, at the top; pseudo-labels live per round
    assert set(manifest["stages"]) == {"shapes", "other", "held", "labelled", "questions", "heldout"}
    questions = len(rows(run_dir / "questions"))
    by_model = Counter(r["model"] for r in requests)
    assert by_model == {"loopy-round-0": questions, "loopy-round-1": questions, "loopy-round-2": questions}
    assert all(r["n"] == 5 for r in requests)
    assert all(r["seed"] == 0 for r in requests)  # sampled with the recipe's seed (default 0)

    counts_asked = sum("how many" in r["messages"][-1]["content"].lower() for r in requests) // 3
    colours_asked = sum("what color" in r["messages"][-1]["content"].lower() for r in requests) // 3
    assert counts_asked and colours_asked
    assert kinds(run_dir, 0) == {("count", "2"): counts_asked}  # colours: 2 of 5; others: a tie
    assert kinds(run_dir, 1) == {("count", "2"): counts_asked, ("color", "red"): colours_asked}
    gate = manifest["rounds"][0]["stages"]["pseudo"]
    assert gate["counts"]["kept"] == counts_asked
    assert gate["counts"]["rejected"]["low_agreement"] == questions - counts_asked
    # the hidden labels, counted against the kept ones (every count question's label is "2" here)
    truth = [r["messages"][-1]["content"] for r in rows(run_dir / "questions")
             if "how many" in r["messages"][-2]["content"].lower()]
    assert gate["label_check"] == {"compared": counts_asked, "correct": truth.count("2"),
                                   "accuracy": round(truth.count("2") / counts_asked, 4), "unmatched": 0}

    # model k+1 trains from model k's adapter, on the labelled rows plus the round's pseudo-labels
    labelled = len(rows(run_dir / "labelled"))
    for k, row in enumerate(manifest["rounds"]):
        assert row["sft"]["data"] == {"labelled": labelled, "pseudo": len(rows(run_dir / f"round_{k}" / "pseudo"))}
        assert row["sft"]["from"] == (str(tiny_text_model()) if k == 0 else str(run_dir / f"round_{k - 1}" / "sft"))
        assert (run_dir / f"round_{k}" / "sft" / "adapter_model.safetensors").is_file()
        assert (run_dir / f"round_{k}" / "eval" / "eval.json").is_file()
        assert row["sft"]["tokens"] > 0 and row["eval"]["rows"] == 4
        before = manifest["base_eval"] if k == 0 else manifest["rounds"][k - 1]["eval"]
        assert row["change"]["mean_logprob_per_token"] == pytest.approx(
            row["eval"]["mean_logprob_per_token"] - before["mean_logprob_per_token"])
    # each round's change is tested on the same held-out rows against the model before (both prediction files)
    from synth.train.evaluate import compare_prediction_files

    for k, row in enumerate(manifest["rounds"]):
        before = run_dir / ("eval_base" if k == 0 else f"round_{k - 1}/eval") / "eval_predictions.jsonl"
        assert row["eval"]["predictions"] == f"round_{k}/eval/eval_predictions.jsonl"
        test = row["change_test"]["exact_match"]
        assert test == compare_prediction_files(before, run_dir / row["eval"]["predictions"])
        assert test["difference"] == pytest.approx(row["change"]["exact_match"])
        low, high = row["eval"]["intervals"]["exact_match"]
        assert low <= row["eval"]["exact_match"] <= high
    saved = json.loads((run_dir / "round_1" / "sft" / "train_summary.json").read_text())
    assert saved["adapter_of"] == str(run_dir / "round_0" / "sft")
    best = json.loads((run_dir / "best.json").read_text())
    assert best == manifest["best"] and best["metric"] == "exact_match"
    # before rounds 1 and 2 ask the server, the serve command got the model name and model k's adapter
    served = (run_dir.parent.parent / "served.txt").read_text().splitlines()
    assert served == [f"1 loopy-round-1 {run_dir}/round_0/sft", f"2 loopy-round-2 {run_dir}/round_1/sft"]


def test_the_runs_seed_decides_sampling_and_training(server, tmp_path):
    """`seed:` of the recipe reaches the pseudo-labels' sampling requests and every round's training (data
    order, LoRA init, dropout), and the manifest and train summary record it."""
    before = len(server.requests)
    run_recipe(write(tmp_path, server, rounds=1, extra="seed: 5\n"), options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    requests = server.requests[before:]
    assert requests and all(r["seed"] == 5 for r in requests)
    run_dir = tmp_path / "runs" / "loopy"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["rounds"][0]["sft"]["seed"] == 5
    summary = json.loads((run_dir / "round_0" / "sft" / "train_summary.json").read_text())
    assert summary["recipe"]["seed"] == 5 and summary["reproducibility"]["seed"] == 5


def test_seeds_repeat_the_rounds_on_the_same_data_and_report_mean_and_sd(server, tmp_path):
    """`synth loop --seeds 2`: two runs whose rounds sample and train with seeds 0 and 1 while the shared data
    stages (the held-out split included) stay the same; NAME-seeds.json and the table hold each run's score
    with its interval and mean ± sd across them."""
    from tests.cli_helpers import run_cli

    before = len(server.requests)
    result = run_cli("loop", write(tmp_path, server, rounds=1), "--runs-dir", tmp_path / "runs", "--seeds", 2)
    assert result.exit_code == 0, result.output
    requests = server.requests[before:]
    assert sorted({r["seed"] for r in requests}) == [0, 1]
    runs = [tmp_path / "runs" / f"loopy-seed-{s}" for s in (0, 1)]
    manifests = [json.loads((run / "manifest.json").read_text()) for run in runs]
    assert [m["loop"]["seed"] for m in manifests] == [0, 1]
    assert [m["rounds"][0]["sft"]["seed"] for m in manifests] == [0, 1]
    assert manifests[0]["stages"]["heldout"]["hash"] == manifests[1]["stages"]["heldout"]["hash"]
    assert rows(runs[0] / "labelled") == rows(runs[1] / "labelled")
    assert manifests[0]["rounds"][0]["sft"]["weights"] != manifests[1]["rounds"][0]["sft"]["weights"]

    summary = json.loads((tmp_path / "runs" / "loopy-seeds.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["metric"] == "exact_match"
    scores = [m["rounds"][0]["eval"]["exact_match"] for m in manifests]
    round0 = next(a for a in summary["across_seeds"] if a["round"] == 0)
    assert round0["exact_match"]["values"] == scores and round0["exact_match"]["mean"] == pytest.approx(sum(scores) / 2)
    assert summary["runs"][1]["rounds"][1]["interval"] == manifests[1]["rounds"][0]["eval"]["intervals"]["exact_match"]
    text = " ".join(result.output.split())
    assert "exact_match over 2 seeds" in text and "mean ± sd" in text and "[a-b]: 95% interval" in text


def test_the_table_shows_every_round_and_gate(baseline):
    from rich.console import Console

    from synth.run.loop_report import loop_tables

    _, result, _ = baseline
    console = Console(width=120, record=True)
    console.print(loop_tables(result.manifest))
    text = console.export_text()
    assert "loop loopy: done" in text and "base" in text
    lines = [line.split() for line in text.splitlines()]
    gates = [cells for cells in lines if len(cells) > 2 and cells[1] == "pseudo"]
    assert [cells[0] for cells in gates] == ["0", "1", "2"]
    assert "low_agreement" in text
    assert "95%" in text and "McNemar" in text  # each round's exact match has its interval, its change a p-value


def test_resume_after_sigkill_in_round_2_skips_finished_rounds(server, baseline, tmp_path):
    base_dir, base_result, _ = baseline
    recipe = write(tmp_path, server)
    before = len(server.requests)
    proc = synth_command("loop", recipe, "--runs-dir", tmp_path / "runs", cwd=tmp_path,
                         env={"SYNTH_RUN_KILL": "loop:round=2:step=sft", "OMP_NUM_THREADS": "1"})
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == -signal.SIGKILL, output
    run_dir = tmp_path / "runs" / "loopy"
    assert (run_dir / "round_2" / "pseudo").is_dir() and not (run_dir / "round_2" / "sft").exists()
    sent_before_kill = len(server.requests) - before
    finished = {(k, f): (run_dir / f"round_{k}" / f).stat().st_mtime_ns
                for k in (0, 1) for f in ("sft/train_summary.json", "eval/eval.json")}

    before = len(server.requests)
    result = run_recipe(recipe, options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    assert len(server.requests) == before  # round 2's labels were in place; rounds 0 and 1 reused whole
    assert sent_before_kill == 3 * len(rows(base_dir / "questions"))  # every round's labels, once
    assert {(k, f): (run_dir / f"round_{k}" / f).stat().st_mtime_ns for k, f in finished} == finished  # not redone
    rounds, expected = result.manifest["rounds"], base_result.manifest["rounds"]
    assert [r["stages"]["pseudo"]["state"] for r in rounds] == ["reused", "reused", "reused"]
    for got, want in zip(rounds, expected):
        assert got["sft"]["weights"] == want["sft"]["weights"]  # the same adapters, bit for bit
        assert got["eval"] == {**want["eval"], "seconds": got["eval"]["seconds"]}
        assert got["stages"]["pseudo"]["hash"] == want["stages"]["pseudo"]["hash"]
    assert rows(run_dir / "round_2" / "pseudo") == rows(base_dir / "round_2" / "pseudo")


def test_patience_stops_the_loop_and_keeps_the_best_model(server, tmp_path):
    extra = "  stop: {metric: mean_logprob_per_token, margin: 100.0, patience: 1}\n"
    result = run_recipe(write(tmp_path, server, rounds=4, extra=extra),
                        options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    manifest = result.manifest
    assert [r["round"] for r in manifest["rounds"]] == [0]  # no round can gain 100 nats a token
    assert manifest["stopped"]["reason"] == "patience" and manifest["stopped"]["after_round"] == 0
    assert not (tmp_path / "runs" / "loopy" / "round_1").exists()
    base, first = manifest["base_eval"]["mean_logprob_per_token"], manifest["rounds"][0]["eval"]["mean_logprob_per_token"]
    best = json.loads((tmp_path / "runs" / "loopy" / "best.json").read_text())
    assert best["model"] == (1 if first > base else 0)


# ---------------------------------------------------------------- recipe errors (no model loads)


def test_recipe_mistakes_name_their_line(server, tmp_path):
    from synth.run import load_recipe

    path = write(tmp_path, server, extra="")
    text = path.read_text()
    bad = tmp_path / "bad.yaml"
    cases = {
        text.replace("{data: [labelled, pseudo],", "{data: [labelled, pseudo], max_step: 3,"):
            "loop.sft.max_step: unknown key (did you mean 'max_steps'?)",
        text.replace("{data: [labelled, pseudo],", "{data: [labelled, pseudo], lora: {r: eight},"):
            "loop.sft.lora.r: Input should be a valid integer",
        text.replace("data: heldout", "data: pseudo"): "the held-out split must be fixed",
        text.replace("[labelled, pseudo]", "[labeled, pseudo]"): "no stage named 'labeled' (did you mean 'labelled'?)",
        text.replace("{data: [labelled, pseudo],", "{data: [labelled, pseudo], output_dir: x,"):
            "the loop sets output_dir itself",
        text.split("loop:")[0]: "add a 'loop:' block",
    }
    for body, message in cases.items():
        bad.write_text(body)
        with pytest.raises(SynthError, match=re.escape(message)) as info:
            load_recipe(bad)
        assert str(info.value).startswith(f"{bad}:")


# ---------------------------------------------------------------- the local backend serves model k


LOCAL = """\
name: local
backends:
  student: {{backend: local, model: loop, device: cpu, max_tokens: 6}}
stages:
  - {{type: demo, name: shapes, count: 3, size: 64}}
  - {{type: demo, name: other, count: 2, size: 64, offset: 3}}
  - {{type: adapt, name: labelled, input: shapes, template: scene_qa_text}}
  - {{type: adapt, name: questions, input: other, template: scene_qa_text}}
  - {{type: generate, name: answers, input: questions, backend: student, regenerate: true, limit: 4,
      temperature: 0, max_tokens: 6, keep_truncated: true}}
{stages}loop:
  rounds: 2
  model: {model}
  sft: {{data: [labelled], {train}}}
  eval: {{data: labelled, limit: 2, max_new_tokens: 2, device: cpu, precision: fp32, base: false}}
"""


def planted_adapter(base: Path, out: Path) -> Path:
    """A LoRA adapter with large random weights: whatever the base answers, this answers otherwise."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synth.train.models import default_template_text

    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_pretrained(str(base))
    lora = LoraConfig(r=4, lora_alpha=64, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(model, lora)
    model.save_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    tokenizer.chat_template = default_template_text()
    tokenizer.save_pretrained(str(out))
    (out / "chat_template.jinja").write_text(default_template_text())
    return out


def answers(run_dir: Path, stage: str) -> list[str]:
    return [row["messages"][-1]["content"] for row in rows(run_dir / stage)]


def test_each_round_generates_with_the_previous_rounds_weights(tmp_path):
    base = tiny_text_model()
    adapter = planted_adapter(base, tmp_path / "planted")
    recipe = tmp_path / "local.yaml"
    recipe.write_text(LOCAL.format(model=adapter, train=TRAIN, stages=""), encoding="utf-8")
    result = run_recipe(recipe, options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    run_dir = tmp_path / "runs" / "local"
    assert [r["served"]["student"] for r in result.manifest["rounds"]] == [str(adapter), str(run_dir / "round_0" / "sft")]
    assert result.manifest["rounds"][0]["sft"]["from"] == str(adapter)  # model 1 continues the planted adapter

    # the same questions asked directly of the base, the planted adapter and round 0's adapter
    direct = tmp_path / "direct.yaml"
    lines = [f"  {name}: {{backend: local, model: {model}, device: cpu, max_tokens: 6}}\n"
             for name, model in (("base", base), ("planted", adapter), ("model1", run_dir / "round_0" / "sft"))]
    stages = "".join(f"  - {{type: generate, name: {name}, input: questions, backend: {name}, regenerate: true, "
                     f"limit: 4, temperature: 0, max_tokens: 6, keep_truncated: true}}\n" for name in ("base", "planted", "model1"))
    direct.write_text("name: direct\nbackends:\n" + "".join(lines) + "stages:\n"
                      "  - {type: demo, name: other, count: 2, size: 64, offset: 3}\n"
                      "  - {type: adapt, name: questions, input: other, template: scene_qa_text}\n" + stages)
    run_recipe(direct, options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    plain = tmp_path / "runs" / "direct"
    assert answers(plain, "planted") != answers(plain, "base")  # the planted adapter changes what is said
    assert answers(run_dir, "round_0/answers") == answers(plain, "planted")  # round 0 = model 0 = planted
    assert answers(run_dir, "round_1/answers") == answers(plain, "model1")  # round 1 = round 0's adapter


DPO = """\
name: dpo
stages:
  - {{type: demo, name: shapes, count: 3, size: 64}}
  - {{type: demo, name: held, count: 2, size: 64, offset: 3}}
  - {{type: adapt, name: labelled, input: shapes, template: scene_qa_text}}
  - {{type: adapt, name: heldout, input: held, template: scene_qa_text}}
  - {{type: prefs, name: prefs, input: labelled, strategy: perturb, scenes: shapes}}
  - {{type: prefs, name: prefs_held, input: heldout, strategy: perturb, scenes: held}}
loop:
  rounds: 2
  model: {model}
  sft: {{data: [labelled], {train}}}
  dpo: {{data: [prefs], {train}}}
  eval: {{data: heldout, preferences: prefs_held, limit: 3, max_new_tokens: 2, device: cpu, precision: fp32}}
"""


def test_dpo_after_sft_each_round_and_its_reward_accuracy_in_the_table(tmp_path):
    from rich.console import Console

    from synth.run.loop_report import loop_tables

    recipe = tmp_path / "dpo.yaml"
    recipe.write_text(DPO.format(model=tiny_text_model(), train=TRAIN), encoding="utf-8")
    result = run_recipe(recipe, options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    run_dir = tmp_path / "runs" / "dpo"
    first, second = result.manifest["rounds"]
    assert first["dpo"]["from"] == str(run_dir / "round_0" / "sft") and first["adapter"] == str(run_dir / "round_0" / "dpo")
    assert second["sft"]["from"] == str(run_dir / "round_0" / "dpo")  # model 1 is the DPO adapter
    assert first["dpo"]["data"] == {"prefs": len(rows(run_dir / "prefs"))} and first["dpo"]["tokens"]
    for row in (first, second):
        assert 0 <= row["eval"]["reward_accuracy"] <= 1 and row["eval"]["pairs"] == 3
        assert (Path(row["folder"]) / "eval" / "preferences.json").is_file()
    assert "reward_accuracy" in second["change"]
    console = Console(width=120, record=True)
    console.print(loop_tables(result.manifest))
    assert "reward" in console.export_text()


def test_loop_compare_pairs_two_arms_by_seed_on_the_same_rows(server, tmp_path):
    """Two arms of one recipe with the same two seeds (with pseudo-labels, and a control on the labelled rows
    only), then `synth loop-compare`: each round's per-seed difference is the two manifests' scores apart,
    with both intervals, and RUNS/A-vs-B.json holds it."""
    from tests.cli_helpers import run_cli

    recipe, runs = write(tmp_path, server, rounds=1), tmp_path / "runs"
    assert run_cli("loop", recipe, "--runs-dir", runs, "--seeds", 2).exit_code == 0
    control = run_cli("loop", recipe, "--runs-dir", runs, "--seeds", 2, "--name", "control",
                      "-s", "loop.start.pseudo=99", "-s", "loop.sft.data=[labelled]")
    assert control.exit_code == 0, control.output
    result = run_cli("loop-compare", "loopy", "control", "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    comparison = json.loads((runs / "loopy-vs-control.json").read_text())
    assert comparison["seeds"] == ["0", "1"] and [r["round"] for r in comparison["rounds"]] == ["base", "0"]
    base, round0 = comparison["rounds"]
    assert base["difference"] == 0 and base["distinguishable"] is False  # the same model 0 in both arms
    for seed, row in zip((0, 1), round0["seeds"]):
        scores = [json.loads((runs / f"{arm}-seed-{seed}" / "manifest.json").read_text())["rounds"][0]["eval"]["exact_match"]
                  for arm in ("loopy", "control")]
        assert row["treatment"] == pytest.approx(scores[0]) and row["control"] == pytest.approx(scores[1])
        assert row["difference"] == pytest.approx(scores[0] - scores[1])
    assert round0["row_interval"] and round0["seed_interval"] and round0["rows"] == base["rows"]
    text = " ".join(result.output.split())
    assert "loopy vs control" in text and "95% seeds" in text and "loopy-vs-control.json" in text

    missing = run_cli("loop-compare", "loopy", "nothing", "--runs-dir", runs)
    assert missing.exit_code == 1 and "no loop run 'nothing'" in missing.output and "Traceback" not in missing.output
