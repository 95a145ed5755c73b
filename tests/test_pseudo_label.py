"""The pseudo_label stage: sampled answers vote, and the gate keeps and drops the right planted answers.

The loopback server plays the labelling model: each question carries a marker, and the script answers the
samples of a request (one request, n choices) with a planted list, so every gate outcome is known ahead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synth.data import build_dataset, load, save
from synth.errors import SynthError
from synth.generate.pseudo_label import (
    PseudoLabelConfig,
    compare_labels,
    label_records,
    pseudo_label,
    vote,
)
from synth.records import load_meta
from tests.cli_helpers import one_line_error, run_cli

# marker → the five sampled answers the "model" gives
PLANTED = {
    "Q-AGREE": ["3", "three", "3.", "4", "3\nBecause I counted."],  # 4 of 5 say 3 → kept, agreement 0.8
    "Q-SPLIT": ["red", "blue", "green", "red", "yellow"],  # 2 of 5 → low_agreement
    "Q-EMPTY": ["", "  ", "\n", "", ""],  # no_answer
    "Q-TIE": ["yes", "no", "yes", "no", ""],  # 2 vs 2: no majority → low_agreement
    "Q-YES": ["Yes", "yes.", "yes", "yes", "no"],  # kept, 0.8; the hidden label says "no": a wrong kept label
}
HIDDEN = {"Q-AGREE": "3", "Q-SPLIT": "red", "Q-EMPTY": "2", "Q-TIE": "yes", "Q-YES": "no"}


def user_text(body: dict) -> str:
    return "\n".join(m["content"] for m in body["messages"] if m["role"] == "user" and isinstance(m["content"], str))


def is_judge(body: dict) -> bool:
    return body.get("response_format") is not None


def labeller(body: dict):
    text = user_text(body)
    if is_judge(body):
        # the judge sees the kept answer: "3" is good, "Yes" is poor
        score = 9 if "Q-AGREE" in text else 2
        return json.dumps({"score": score, "reason": f"planted score {score}"})
    for marker, answers in PLANTED.items():
        if marker in text:
            return answers[: int(body.get("n") or 1)]
    return None


def question_records(labelled: bool) -> list[dict]:
    out = []
    for marker in PLANTED:
        messages = [{"role": "user", "content": f"Scene: two shapes. Question ({marker}): how many?"}]
        if labelled:
            messages.append({"role": "assistant", "content": HIDDEN[marker]})
        out.append({"id": f"id-{marker}", "messages": messages, "meta": json.dumps({"source": "test"})})
    return out


def write_questions(folder: Path, labelled: bool) -> Path:
    path = folder / ("labelled" if labelled else "unlabeled")
    save(build_dataset(iter(question_records(labelled)), kind="sft"), path)
    return path


@pytest.fixture
def server(llm_server):
    llm_server.script(labeller)
    return llm_server


def reasons(folder: Path) -> dict[str, str]:
    lines = [json.loads(line) for line in (folder / "rejects.jsonl").read_text().splitlines()]
    return {line["id"]: line["reason"] for line in lines}


# ---------------------------------------------------------------- voting


def test_vote_normalises_breaks_ties_and_ignores_empty_answers():
    result = vote(["3", "three", "3.", "4", "3\nbecause"], ["stop"] * 5)
    assert (result.answer, result.key, result.agreement, result.tie) == ("3", "3", 0.8, False)
    assert result.votes == {"3": 4, "4": 1}
    assert vote(["yes", "no", "", "yes", "no"], ["stop"] * 5).tie
    empty = vote(["", " ", "\n"], ["stop"] * 3)
    assert empty.answer is None and empty.agreement == 0.0
    # a whole reply cut at max_tokens is no vote (its first line still is)
    assert vote(["a long answer", "a long answer"], ["length", "stop"], "full").agreement == 0.5
    assert vote(["blue\nand more", "blue"], ["length", "stop"], "line").agreement == 1.0


def test_config_refuses_gates_that_cannot_gate():
    with pytest.raises(ValueError, match="temperature > 0"):
        PseudoLabelConfig(samples=5, temperature=0)
    with pytest.raises(ValueError, match="samples >= 2"):
        PseudoLabelConfig(samples=1)
    assert PseudoLabelConfig(samples=1, gate="score").samples == 1


# ---------------------------------------------------------------- the agreement gate


def test_agreement_gate_keeps_and_drops_the_planted_answers(server, llm_backend, tmp_path):
    source = write_questions(tmp_path, labelled=False)
    out = tmp_path / "pseudo"
    result = pseudo_label(source, out, llm_backend, PseudoLabelConfig(samples=5, min_agreement=0.6),
                          show_progress=False)

    kept = load(out)
    assert sorted(json.loads(m)["parent_id"] for m in kept["meta"]) == ["id-Q-AGREE", "id-Q-YES"]
    by_parent = {json.loads(r["meta"])["parent_id"]: r for r in kept}
    agree = by_parent["id-Q-AGREE"]
    assert agree["messages"][-1] == {"role": "assistant", "content": "3"}  # the majority's most common form
    assert agree["messages"][0]["content"].endswith("how many?")
    meta = json.loads(agree["meta"])
    assert meta["pseudo_label"] == {"gate": "agreement", "samples": 5, "votes": {"3": 4, "4": 1}, "agreement": 0.8}
    assert meta["model"] == "test-model" and meta["generation"]["n"] == 5 and meta["source"] == "test"
    assert by_parent["id-Q-YES"]["messages"][-1]["content"] == "yes"

    assert reasons(out) == {"id-Q-SPLIT": "low_agreement", "id-Q-EMPTY": "no_answer", "id-Q-TIE": "low_agreement"}
    report = json.loads((out / "report.json").read_text())
    assert report["asked"] == 5 and report["kept"] == 2 and report["kept_share"] == 0.4
    assert report["rejected"] == {"low_agreement": 2, "no_answer": 1} and report["gate"] == "agreement"
    assert "label_check" not in report and result.written == 2
    # one request per question, the samples asked with n
    assert server.request_count == 5 and {b["n"] for b in server.requests} == {5}
    assert {b["temperature"] for b in server.requests} == {0.7}


def test_hidden_labels_never_reach_prompt_or_output_and_are_checked_in_aggregate(server, llm_backend, tmp_path):
    source = write_questions(tmp_path, labelled=True)
    out = tmp_path / "pseudo"
    pseudo_label(source, out, llm_backend, PseudoLabelConfig(hide_labels=True), show_progress=False)

    for body in server.requests:  # the answer turn was dropped before asking
        assert [m["role"] for m in body["messages"]] == ["user"]
    rows = load(out)
    assert len(rows) == 2
    for row in rows:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert "hidden" not in row["meta"] and "label" not in json.loads(row["meta"])
    yes = next(r for r in rows if json.loads(r["meta"])["parent_id"] == "id-Q-YES")
    assert yes["messages"][-1]["content"] == "yes"  # the model's answer, not the hidden "no"

    check = json.loads((out / "report.json").read_text())["label_check"]
    # majority answers: Q-AGREE 3 (right), Q-SPLIT red (right, but dropped), Q-TIE yes (dropped), Q-YES yes (wrong)
    assert check == {"kept": 2, "kept_correct": 1, "kept_accuracy": 0.5, "majority": 4, "majority_correct": 3,
                     "majority_accuracy": 0.75}
    # the same figure from the outputs alone (what a loop's report uses)
    assert compare_labels(out, source) == {"compared": 2, "correct": 1, "accuracy": 0.5, "unmatched": 0}


def test_answered_records_pass_through_when_labels_are_not_hidden(server, llm_backend):
    records = question_records(labelled=True)[:1] + question_records(labelled=False)[1:2]
    kept, stage = label_records(records, llm_backend, {"samples": 5})
    assert kept == [records[0]] and stage.passed == 1 and dict(stage.stats.dropped) == {"low_agreement": 1}
    assert server.request_count == 1


# ---------------------------------------------------------------- the score gate


@pytest.mark.parametrize("gate", ["score", "both"])
def test_score_gate_keeps_what_the_judge_scores_well(server, llm_backend, tmp_path, gate):
    source = write_questions(tmp_path, labelled=False)
    out = tmp_path / gate
    pseudo_label(source, out, llm_backend, PseudoLabelConfig(gate=gate, threshold=6), show_progress=False)
    rows = load(out)
    assert [json.loads(m)["parent_id"] for m in rows["meta"]] == ["id-Q-AGREE"]
    meta = json.loads(rows[0]["meta"])
    assert meta["pseudo_label"]["score"] == 9 and meta["scores"] == {"quality": 9}
    got = reasons(out)
    assert got["id-Q-YES"] == "low_score" and got["id-Q-EMPTY"] == "no_answer"
    if gate == "both":  # agreement first: the split questions never reach the judge
        assert got["id-Q-SPLIT"] == "low_agreement" and got["id-Q-TIE"] == "low_agreement"
        assert sum(is_judge(b) for b in server.requests) == 2
    else:  # every majority answer is judged
        assert got["id-Q-SPLIT"] == "low_score" and got["id-Q-TIE"] == "low_score"
        assert sum(is_judge(b) for b in server.requests) == 4


def test_a_separate_judge_backend_gets_the_judge_requests(server, llm_server_factory, make_llm_backend, tmp_path):
    from synth.llm.openai_compat import OpenAIBackend, OpenAIConfig

    judge_server = llm_server_factory()
    judge_server.script(labeller)
    judge = OpenAIBackend(OpenAIConfig(model="judge-model", base_urls=[judge_server.base_url], backoff_base=0.01))
    kept, stage = label_records(question_records(False), make_llm_backend(),
                                {"gate": "score", "samples": 1}, judge_backend=judge)
    judge.close()
    assert [load_meta(r["meta"])["parent_id"] for r in kept] == ["id-Q-AGREE"]
    assert all(not is_judge(b) for b in server.requests) and all(is_judge(b) for b in judge_server.requests)
    assert {b.get("n", 1) for b in server.requests} == {1}


# ---------------------------------------------------------------- failures


def test_failed_requests_are_failures_not_rejects(server, llm_backend, tmp_path):
    server.fault("500", marker="Q-SPLIT")
    source = write_questions(tmp_path, labelled=False)
    out = tmp_path / "pseudo"
    result = pseudo_label(source, out, llm_backend, show_progress=False)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [f["id"] for f in failures] == ["id-Q-SPLIT"] and failures[0]["stage"] == "pseudo_label"
    assert "id-Q-SPLIT" not in reasons(out) and result.written == 2


def test_nothing_kept_is_an_error_and_writes_nothing(server, llm_backend, tmp_path):
    records = [r for r in question_records(False) if "Q-SPLIT" in r["messages"][0]["content"]]
    source = tmp_path / "split"
    save(build_dataset(iter(records), kind="sft"), source)
    with pytest.raises(SynthError, match="no question got a kept pseudo-label.*low_agreement: 1"):
        pseudo_label(source, tmp_path / "out", llm_backend, show_progress=False)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- CLI and recipe


def test_cli_writes_the_dataset_and_says_the_kept_share(server, tmp_path):
    source = write_questions(tmp_path, labelled=True)
    out = tmp_path / "cli"
    result = run_cli("pseudo-label", source, "-o", out, "--base-url", server.base_url, "--model", "test-model",
                     "--hide-labels", "--no-cache")
    assert result.exit_code == 0, result.output
    assert "kept 2 pseudo-labels (40% of 5 asked)" in result.output
    assert "against the hidden labels: kept 50% correct" in result.output
    assert len(load(out)) == 2
    bad = run_cli("pseudo-label", source, "-o", tmp_path / "bad", "--base-url", server.base_url, "--model", "m",
                  "--temperature", "0")
    one_line_error(bad, "pseudo_label:", "temperature > 0")


def test_recipe_stage_on_demo_scene_questions(server, tmp_path):
    from synth.run import RunOptions, run_recipe
    from tests.run_helpers import backend_block, write_recipe

    server.script(lambda body: None if is_judge(body) else ["3", "3", "3", "4", "3"][: int(body.get("n") or 1)])
    recipe = write_recipe(tmp_path, backend_block(server) + """
stages:
  - {type: demo, name: heldout, count: 3, offset: 7, size: 64}
  - {type: adapt, name: qa, input: heldout, template: scene_qa_text}
  - type: pseudo_label
    name: pseudo
    input: qa
    hide_labels: true
    samples: 5
    max_tokens: 8
""")
    result = run_recipe(recipe, options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    out = result.run_dir / "pseudo"
    rows = load(out)
    qa = load(result.run_dir / "qa")
    assert len(rows) == len(qa) > 0 and {r["messages"][-1]["content"] for r in rows} == {"3"}
    assert {json.loads(m)["source_id"] for m in qa["meta"]} == {"shapes-00007", "shapes-00008", "shapes-00009"}
    for body in server.requests:
        assert body["messages"][-1]["role"] == "user" and body["n"] == 5
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["read"] == report["counts"]["kept"] == len(qa)
    assert report["details"]["kept_share"] == 1.0 and report["details"]["label_check"]["kept"] == len(qa)
    check = compare_labels(out, result.run_dir / "qa")
    assert check["compared"] == len(qa) and check["correct"] == sum(
        r["messages"][-1]["content"] == "3" for r in qa)


def test_report_over_several_shards_sums_counts_and_recomputes_shares(server, tmp_path):
    """A stage split into shards reports the whole stage: counts summed, shares of the whole."""
    from synth.run import RunOptions, run_recipe
    from tests.run_helpers import backend_block, write_recipe

    def reply(body):
        if is_judge(body):
            return None
        n = int(body.get("n") or 1)
        # questions about colour get five different answers (no majority), the rest agree on "3"
        return ["red", "blue", "green", "pink", "gray"][:n] if "colo" in str(body["messages"]) else ["3"] * n

    server.script(reply)
    recipe = write_recipe(tmp_path, backend_block(server) + """
stages:
  - {type: demo, name: scenes, count: 6, size: 64}
  - {type: adapt, name: qa, input: scenes, template: scene_qa_text}
  - type: pseudo_label
    name: pseudo
    input: qa
    hide_labels: true
    samples: 5
    max_tokens: 8
    shard_size: 4
""")
    result = run_recipe(recipe, options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    out = result.run_dir / "pseudo"
    report = json.loads((out / "report.json").read_text())
    qa, rows = load(result.run_dir / "qa"), load(out)
    details = report["details"]
    assert report["shards"] > 1 and details["asked"] == len(qa) and details["kept"] == len(rows)
    assert 0 < len(rows) < len(qa) and details["rejected"]["low_agreement"] == len(qa) - len(rows)
    assert details["kept_share"] == round(len(rows) / len(qa), 4) and details["gate"] == "agreement"
    check = compare_labels(out, result.run_dir / "qa")
    assert details["label_check"]["kept"] == len(rows)
    assert details["label_check"]["kept_correct"] == check["correct"]
    assert details["label_check"]["kept_accuracy"] == round(check["correct"] / len(rows), 4)


# ---------------------------------------------------------------- one declaration: command, recipe, judge backend


def test_the_generated_command_offers_every_config_field_and_a_recipe_typo_names_its_line(tmp_path):
    import typer.main

    from synth.cli import app
    from synth.run.recipe import load_recipe

    command = typer.main.get_command(app).commands["pseudo-label"]
    params = {p.name: p for p in command.params}
    assert set(PseudoLabelConfig.model_fields) <= set(params)
    assert params["judge_backend"].opts == ["--judge-model"]  # the flag the hand-written command had
    assert {"adapter", "batch_size", "limit", "split"} <= set(params)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stages:\n  - {type: demo, name: shapes, count: 2}\n  - type: pseudo_label\n    name: pseudo\n"
                      "    input: shapes\n    min_agreemnt: 0.5\n")
    with pytest.raises(SynthError) as e:
        load_recipe(recipe)
    assert str(e.value) == f"{recipe}:6: stages.1.min_agreemnt: unknown key (did you mean 'min_agreement'?)"


def test_cli_judge_model_gets_the_judge_requests(server, tmp_path):
    source = write_questions(tmp_path, labelled=False)
    out = tmp_path / "judged"
    result = run_cli("pseudo-label", source, "-o", out, "--base-url", server.base_url, "--model", "test-model",
                     "--gate", "score", "--samples", "1", "--judge-model", "judge-model", "--no-cache")
    assert result.exit_code == 0, result.output
    assert [load_meta(m)["parent_id"] for m in load(out)["meta"]] == ["id-Q-AGREE"]
    assert {b["model"] for b in server.requests if is_judge(b)} == {"judge-model"}
    assert {b["model"] for b in server.requests if not is_judge(b)} == {"test-model"}
    [stage] = json.loads((out / "report.json").read_text())["stages"]
    assert stage["details"]["kept"] == 1 and stage["details"]["rejected"]["low_score"] == 3


def test_recipe_judge_backend_names_another_backend_of_the_recipe(server, llm_server_factory, tmp_path):
    from synth.run import RunOptions, run_recipe
    from tests.run_helpers import backend_block, write_recipe

    judge_server = llm_server_factory()
    judge_server.script(labeller)
    questions = write_questions(tmp_path, labelled=False)
    text = backend_block(server) + f"""  judge:
    backend: openai
    model: judge-model
    base_url: {judge_server.base_url}
stages:
  - {{type: source, name: questions, path: {questions}}}
  - {{type: pseudo_label, name: pseudo, input: questions, gate: score, samples: 1, judge_backend: judge}}
"""
    recipe = write_recipe(tmp_path, text)
    result = run_recipe(recipe, options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    assert [load_meta(m)["parent_id"] for m in load(result.run_dir / "pseudo")["meta"]] == ["id-Q-AGREE"]
    assert judge_server.requests and all(is_judge(b) for b in judge_server.requests)
    assert not any(is_judge(b) for b in server.requests)
    write_recipe(tmp_path, text.replace("judge_backend: judge", "judge_backend: jugde"))
    with pytest.raises(SynthError, match="jugde"):
        run_recipe(recipe, options=RunOptions(runs_dir=tmp_path / "runs", live=False))


def test_cli_that_keeps_no_pseudo_label_is_one_clear_error_and_writes_nothing(server, tmp_path):
    records = [r for r in question_records(False) if "Q-SPLIT" in r["messages"][0]["content"]]
    source = tmp_path / "split"
    save(build_dataset(iter(records), kind="sft"), source)
    result = run_cli("pseudo-label", source, "-o", tmp_path / "out", "--base-url", server.base_url, "--model",
                     "test-model", "--no-cache")
    one_line_error(result, "no question got a kept pseudo-label (low_agreement: 1)", "lower min_agreement")
    assert not (tmp_path / "out").exists()
