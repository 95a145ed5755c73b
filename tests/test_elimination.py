"""Shared elimination rules, verdict matching by id, deterministic operator choice, weights parsing."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from synth.errors import SynthError
from synth.generate.evolution.elimination import (
    EliminationRules,
    JudgeReply,
    Verdict,
    Verdicts,
    check_items,
    judge_outcomes,
    match_verdicts,
    parse_structured,
    same_text,
)
from synth.generate.evolution.operators import check_weights, parse_weights, pick_weighted
from synth.generate.evolution.report import EvolutionReport
from synth.llm.base import Completion
from synth.pipeline import Failed, Rejected

RULES = EliminationRules()


@pytest.mark.parametrize(
    "answer, reason",
    [
        ("", "empty_answer"),
        ("   \n ", "empty_answer"),
        ("?!...", "answer_only_punctuation"),
        ("--- ***", "answer_only_punctuation"),
        ("The and of it.", "answer_only_stop_words"),
        ("It is what it is.", "answer_only_stop_words"),
        ("I'm sorry, but I cannot help with that request.", "answer_refusal"),
        ("As an AI language model, I do not have opinions about this.", "answer_refusal"),
        ("Unfortunately, I do not know the population of that town.", "answer_refusal"),
        ("I apologise, the question is unclear to me.", "answer_refusal"),
        ("Paris.", "answer_too_short"),
        ("Paris, France", "answer_too_short"),
    ],
)
def test_check_answer_eliminates_with_the_right_reason(answer, reason):
    rejected = RULES.check_answer(answer)
    assert isinstance(rejected, Rejected)
    assert rejected.reason == reason


@pytest.mark.parametrize(
    "answer",
    [
        "Paris is the capital of France.",
        "1. Preheat the oven.\n2. Mix the flour and eggs.\n3. Bake for 20 minutes.",
        # A long, useful answer that happens to contain "I cannot" is not a refusal.
        "Here is the plan. " + "Step by step we move forward. " * 20 + "I cannot stress enough how useful this is.",
    ],
)
def test_check_answer_keeps_real_answers(answer):
    assert RULES.check_answer(answer) is None


def test_yes_and_no_are_answers_not_stop_words():
    rules = EliminationRules(min_answer_words=1)
    assert rules.check_answer("Yes.") is None and rules.check_answer("No") is None


def test_min_answer_words_is_configurable():
    assert EliminationRules(min_answer_words=1).check_answer("42") is None
    assert EliminationRules(min_answer_words=2).check_answer("42").reason == "answer_too_short"


@pytest.mark.parametrize(
    "text",
    [
        "#Rewritten Prompt#: Write a poem about rain.",
        "Here is the rewritten prompt: write a poem.",
        "Rewrite the given prompt so that it asks for two poems.",
        "#Created Prompt#\nWrite a limerick about snow.",
    ],
)
def test_leak_of_scaffolding_is_caught(text):
    rejected = RULES.check_leak(text)
    assert rejected is not None and rejected.reason == "prompt_leak"


def test_plain_prompt_does_not_leak():
    assert RULES.check_leak("Write a poem about rain in exactly four lines, each rhyming with 'grey'.") is None


def test_same_text_ignores_case_spacing_and_punctuation():
    assert same_text("Write a poem.", "  write a POEM ")
    assert not same_text("Write a poem.", "Write two poems.")


def verdict(id, improved=True, score=7, reason="ok"):
    return Verdict(id=id, improved=improved, score=score, reason=reason)


def test_verdicts_are_matched_by_id_not_position():
    result = match_verdicts(["1", "2", "3"], [verdict("3", False, 2), verdict("1", True, 9), verdict("2", True, 5)])
    assert [result[i].score for i in ("1", "2", "3")] == [9, 5, 2]
    assert result["3"].improved is False


def test_missing_conflicting_and_unknown_ids():
    result = match_verdicts(
        ["1", "2", "3"],
        [verdict("1"), verdict("1"), verdict("2", True), verdict("2", False, 3), verdict("99")],
    )
    assert isinstance(result["1"], Verdict)  # the same verdict twice is still one clear answer
    assert result["2"] == Rejected("judge_conflicting_verdicts", "the judge gave 2 different verdicts for item 2")
    assert result["3"].reason == "judge_missing_verdict"
    assert "99" not in result


def test_verdict_ids_written_as_numbers_are_accepted():
    parsed = Verdicts.model_validate({"verdicts": [{"id": 1, "improved": True, "score": 8, "reason": "x"}]})
    assert parsed.verdicts[0].id == "1"


def test_parse_structured_repairs_near_json_and_fails_on_garbage():
    near = Completion(texts=['```json\n{"verdicts": [{"id": "1", "improved": true, "score": 6, "reason": "more detail",},]}\n```'])
    parsed = parse_structured(near, Verdicts)
    assert isinstance(parsed, Verdicts) and parsed.verdicts[0].score == 6
    garbage = parse_structured(Completion(texts=["I think it is better."]), Verdicts)
    assert isinstance(garbage, Failed) and garbage.reason == "unparseable"  # failed, not a decision: retried
    assert parse_structured(Completion(texts=[""]), Verdicts) == Rejected("empty_reply", "the model returned no text")


def test_a_bad_score_eliminates_only_its_own_item():
    reply = json.dumps({"verdicts": [
        {"id": "1", "improved": True, "score": 42, "reason": "way better"},  # out of range
        {"id": "2", "improved": True, "score": "high"},  # not a number
        {"id": 3, "improved": True, "score": 8, "reason": "more detail"},
        {"id": "4", "improved": False, "score": 0, "reason": "MMEvol's rubric starts at 0"},
        {"id": "5", "score": 7},  # no 'improved'
        "a stray sentence",  # not an item at all
    ]})
    outcome = judge_outcomes(["1", "2", "3", "4", "5", "6"], Completion(texts=[reply]))
    assert outcome["1"].reason == "judge_invalid_verdict" and "score" in outcome["1"].detail and "42" in outcome["1"].detail
    assert outcome["2"].reason == "judge_invalid_verdict" and "'high'" in outcome["2"].detail
    assert outcome["3"] == Verdict(id="3", improved=True, score=8, reason="more detail")
    assert outcome["4"].score == 0 and outcome["4"].improved is False
    assert outcome["5"].reason == "judge_invalid_verdict" and "improved" in outcome["5"].detail
    assert outcome["6"].reason == "judge_missing_verdict"
    # The schema sent to the server still says what a verdict is.
    schema = JudgeReply.model_json_schema()["$defs"]["JudgeItem"]
    assert schema["properties"]["score"] == {"maximum": 10, "minimum": 0, "title": "Score", "type": "integer"}
    assert schema["required"] == ["id", "improved", "score"]


def test_an_unreadable_judge_reply_fails_every_item_of_its_batch():
    outcome = judge_outcomes(["1", "2"], Completion(texts=["Both look fine to me!"]))
    assert {k: type(v) for k, v in outcome.items()} == {"1": Failed, "2": Failed}
    assert outcome["1"].reason == "unparseable"
    assert judge_outcomes(["1"], Completion(texts=[""]))["1"].reason == "judge_empty_reply"


def test_valid_and_invalid_verdicts_for_one_id():
    items = check_items([{"id": "1", "improved": True, "score": 99}, {"id": "1", "improved": True, "score": 9}])
    assert isinstance(match_verdicts(["1"], items)["1"], Verdict)  # the valid one answers for the item


def test_pick_weighted_is_deterministic_and_follows_weights():
    weights = {"a": 3.0, "b": 1.0, "c": 0.0}
    picks = [pick_weighted(weights, 0, f"sample-{i}", 1) for i in range(4000)]
    assert picks == [pick_weighted(weights, 0, f"sample-{i}", 1) for i in range(4000)]
    counts = Counter(picks)
    assert counts["c"] == 0
    assert 0.70 < counts["a"] / len(picks) < 0.80
    # Another seed or another round draws differently.
    assert picks != [pick_weighted(weights, 1, f"sample-{i}", 1) for i in range(4000)]
    assert picks != [pick_weighted(weights, 0, f"sample-{i}", 2) for i in range(4000)]


def test_weights_parsing_and_checks():
    assert parse_weights("deepen=2, concretize ,in_breadth=0.5", "--operators") == {
        "deepen": 2.0,
        "concretize": 1.0,
        "in_breadth": 0.5,
    }
    assert parse_weights(None, "--operators") is None
    with pytest.raises(SynthError, match="not a number"):
        parse_weights("deepen=lots", "--operators")
    with pytest.raises(ValueError, match="unknown operator deepn"):
        check_weights({"deepn": 1.0}, ["deepen"], "operator")
    with pytest.raises(ValueError, match="at least one above 0"):
        check_weights({"deepen": 0.0}, ["deepen"], "operator")


def test_report_counts():
    report = EvolutionReport("evol-instruct")
    report.attempt("deepen", 1)
    report.attempt("deepen", 1)
    report.attempt("concretize", 2)
    report.keep("deepen", 1)
    report.eliminate("deepen", 1, "judge_not_improved")
    report.eliminate("concretize", 2, "prompt_leak")
    report.add_usage("evolve", Completion(usage={"prompt_tokens": 10, "completion_tokens": 4}))
    data = report.as_dict()
    assert data["generated"] == 3 and data["kept"] == 1
    assert data["eliminated"] == {"judge_not_improved": 1, "prompt_leak": 1}
    assert data["per_operator"]["deepen"] == {"generated": 2, "kept": 1, "eliminated": 1}
    assert data["per_round"]["2"] == {"generated": 1, "eliminated": 1}
    assert data["tokens"]["evolve"] == {"requests": 1, "prompt_tokens": 10, "completion_tokens": 4}
