"""Evol-Instruct through the loopback OpenAI-compatible test server (a fixture, not a model): golden
prompts, realistic and broken replies, lineage and counts over several rounds."""

from __future__ import annotations

import json
import re

import pytest

from synth.data import RecordLog
from synth.generate.evolution.driver import make_stage
from synth.generate.evolution.evol_instruct import OPERATORS, EvolInstruct
from synth.generate.evolution.operators import pick_weighted
from synth.llm.base import Completion
from synth.pipeline import Failed, Rejected, run_stages

SEEDS = [
    {"id": "seed-1", "instruction": "Write a haiku about rain.", "output": "Rain taps on the roof."},
    {"id": "seed-2", "instruction": "Explain what a prime number is.", "output": "A number with two divisors."},
    {"id": "seed-3", "instruction": "List three uses of vinegar.", "output": "Cleaning, cooking, pickling."},
    {"id": "seed-4", "instruction": "Summarise the plot of Hamlet.", "output": "A prince avenges his father."},
]

HEADER = (
    "You are rewriting a prompt to make it a harder task for a capable AI assistant.\n"
    "The rewritten prompt must stay reasonable: a person must be able to understand it and answer it.\n"
    "Keep every non-text part of the given prompt, such as tables and code, exactly as it is, and keep its inputs.\n"
    "\n"
    "How to make it harder: {method}\n"
    "\n"
    "Keep it concise: the rewritten prompt may be at most about 20 words longer than the given one.\n"
    "Reply with the rewritten prompt only. Do not mention the given prompt, the rewritten prompt, or these instructions.\n"
    "\n"
    "#Given Prompt#:\n"
    "Write a haiku about rain.\n"
    "\n"
    "#Rewritten Prompt#:"
)

METHODS = {
    "add_constraints": "add one more constraint or requirement that the answer must satisfy.",
    "deepen": "if the prompt asks about a specific issue, widen and deepen the inquiry into it.",
    "concretize": "replace general concepts in the prompt with more specific ones.",
    "increase_reasoning": (
        "if the prompt can be solved with a few simple thinking steps, rewrite it so that it explicitly asks "
        "for reasoning over several steps."
    ),
    "complicate_input": (
        "add a concrete input the task must work on, in a fitting format (a table, code, JSON, a list of data, "
        "or a formula), and refer to it in the prompt."
    ),
}

IN_BREADTH = (
    "You are a prompt creator. Draw inspiration from the given prompt to create a brand-new prompt.\n"
    "The new prompt must belong to the same domain as the given prompt, but be rarer and less common.\n"
    "It must be of similar length and difficulty, and a person must be able to understand it and answer it.\n"
    "Reply with the new prompt only. Do not mention the given prompt, the created prompt, or these instructions.\n"
    "\n"
    "#Given Prompt#:\n"
    "Write a haiku about rain.\n"
    "\n"
    "#Created Prompt#:"
)

COMPLICATE_INPUT = r"""You are rewriting a prompt to make it a harder task for a capable AI assistant.
The rewritten prompt must stay reasonable: a person must be able to understand it and answer it.
Keep every non-text part of the given prompt, such as tables and code, exactly as it is, and keep its inputs.

How to make it harder: add a concrete input the task must work on, in a fitting format (a table, code, JSON, a list of data, or a formula), and refer to it in the prompt.

Keep it concise: apart from the added input, the rewritten prompt may be at most about 20 words longer than the given one.
Reply with the rewritten prompt only. Do not mention the given prompt, the rewritten prompt, or these instructions.

Examples of such rewrites:

#Given Prompt#:
Find the month with the highest sales.

#Rewritten Prompt#:
Using the table below, find the month with the highest sales and say by how many units it beat the month before it.

| Month | Sales (units) |
|-------|---------------|
| March | 1,240 |
| April | 1,515 |
| May | 1,380 |

#Given Prompt#:
Explain why a recursive function can run out of memory.

#Rewritten Prompt#:
Explain why the Python function below fails with a RecursionError for large n, and rewrite it so that it does not.

```python
def total(n):
    if n == 0:
        return 0
    return n + total(n - 1)
```

#Given Prompt#:
Suggest a name for a new coffee shop.

#Rewritten Prompt#:
Suggest a name for the coffee shop described in the JSON below that suits both its neighbourhood and its customers.

```json
{"city": "Lisbon", "near": "the university", "customers": ["students", "lecturers"], "specialty": "cold brew"}
```

#Given Prompt#:
Calculate the area of a circle.

#Rewritten Prompt#:
Using $A = \pi r^2$, calculate the area of a round garden bed that is 7.4 m across, to two decimal places, and say how the area changes if the diameter doubles.

Now rewrite this prompt the same way.

#Given Prompt#:
Write a haiku about rain.

#Rewritten Prompt#:"""

JUDGE = """You compare pairs of prompts for an instruction-tuning dataset. In each item, the second prompt was made
from the first by the named method. Decide for each item whether the second prompt is an improvement:
it must add information or difficulty (new constraints, more depth, more specific requirements, more
reasoning, a richer input), or for "in_breadth" be a different and rarer task of the same domain. It is NOT
an improvement when it says the same thing in other words, drops requirements, cannot be understood or
answered, or talks about prompts and rewriting instead of being a task.

### Item 1 (method: deepen)
First prompt:
Write a haiku about rain.

Second prompt:
Write a haiku about rain that contrasts a storm with a drizzle.

### Item 2 (method: in_breadth)
First prompt:
Explain what a prime number is.

Second prompt:
Explain what a Carmichael number is.

Reply with JSON only, one verdict per item, using the item ids above:
{"verdicts": [{"id": "<item id>", "improved": true or false, "score": <1-10, how much better the second prompt is>, "reason": "<one short sentence>"}]}"""


# ---------------------------------------------------------------- golden prompts (no backend)


@pytest.mark.parametrize("operator", sorted(set(METHODS) - {"complicate_input"}))
def test_in_depth_prompts_render_exactly(operator):
    stage = EvolInstruct(None)
    seed = stage.seed_version(SEEDS[0])
    request = stage.format_evolve_input(seed, operator, 1)
    assert request.messages[0].role == "user"
    assert request.messages[0].content == HEADER.format(method=METHODS[operator])
    assert request.schema_model is None and request.temperature == 0.7


def test_in_breadth_prompt_renders_exactly():
    stage = EvolInstruct(None)
    request = stage.format_evolve_input(stage.seed_version(SEEDS[0]), "in_breadth", 1)
    assert request.messages[0].content == IN_BREADTH


def test_judge_prompt_renders_exactly_and_asks_for_a_schema():
    stage = EvolInstruct(None)
    a, b = stage.seed_version(SEEDS[0]), stage.seed_version(SEEDS[1])
    ca = stage.child(a, "deepen", 1, {"instruction": "Write a haiku about rain that contrasts a storm with a drizzle.", "answer": ""})
    cb = stage.child(b, "in_breadth", 1, {"instruction": "Explain what a Carmichael number is.", "answer": ""})
    request = stage.format_judge_input([("1", a, ca), ("2", b, cb)])
    assert request.messages[0].content == JUDGE
    assert request.schema_model.__name__ == "JudgeReply"
    assert request.temperature == 0.0


def test_format_output_and_checks_over_clean_noisy_and_broken_text():
    stage = EvolInstruct(None)
    seed = stage.seed_version(SEEDS[0])

    def evolve(text):
        candidate = stage.parse_evolve_output(seed, "deepen", 1, Completion(texts=[text]))
        if isinstance(candidate, Rejected):
            return candidate.reason
        rejected = stage.check_candidate(seed, candidate)
        return rejected.reason if rejected else candidate.fields["instruction"]

    assert evolve('  "Write a haiku about rain at dawn in a city."  ') == "Write a haiku about rain at dawn in a city."
    assert evolve("") == "empty_reply"
    assert evolve("write a HAIKU about rain") == "unchanged"
    assert evolve("#Rewritten Prompt#: Write a haiku about rain at night.") == "prompt_leak"

    answer = stage.parse_answer_output
    candidate = stage.child(seed, "deepen", 1, {"instruction": "Write a haiku about rain at dawn.", "answer": ""})
    assert answer(candidate, Completion(texts=["I'm sorry, I can't write poems."])).reason == "answer_refusal"
    assert answer(candidate, Completion(texts=["..."])).reason == "answer_only_punctuation"
    assert answer(candidate, Completion(texts=["a long answer cut"], finish_reasons=["length"])).reason == "answer_truncated"
    failed = answer(candidate, Completion(error="timed out after 120 s", error_kind="timeout"))
    assert failed == Failed("timeout", "timed out after 120 s")  # a failure, not a decision: retried next run
    kept = answer(candidate, Completion(texts=["Grey dawn, soft rain falls\non tin roofs of sleeping streets\nthe city breathes slow"]))
    assert kept.fields["answer"].startswith("Grey dawn")


def test_seeds_from_sft_rows_and_alpaca_columns():
    stage = EvolInstruct(None)
    sft = stage.seed_version({"id": "x", "messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello"}]})
    assert sft.fields == {"instruction": "Hi there", "answer": "Hello"}
    alpaca = stage.seed_version({"instruction": "Sort the numbers.", "input": "3, 1, 2", "output": "1, 2, 3"})
    assert alpaca.fields["instruction"] == "Sort the numbers.\n\n3, 1, 2"
    assert alpaca.id == alpaca.root_id and len(alpaca.id) == 16  # a content hash when the row has no id
    assert stage.seed_version({"instruction": "  "}).reason == "missing_instruction"
    mapped = EvolInstruct(None, instruction_column="task", answer_column="solution").seed_version({"task": "Do X.", "solution": "Done."})
    assert mapped.fields == {"instruction": "Do X.", "answer": "Done."}


def test_operator_choice_is_deterministic_and_weighted():
    stage = EvolInstruct(None, operators={"deepen": 1.0, "in_breadth": 0.0})
    seed = stage.seed_version(SEEDS[0])
    assert {stage.choose_operator(seed, r) for r in range(1, 20)} == {"deepen"}
    everything = EvolInstruct(None, seed=3)
    picks = [everything.choose_operator(everything.seed_version({"id": f"s{i}", "instruction": "x"}), 1) for i in range(300)]
    assert set(picks) == set(OPERATORS)
    assert picks == [pick_weighted({op: 1.0 for op in OPERATORS}, 3, f"s{i}", 1, "operator") for i in range(300)]


def test_unknown_operator_is_a_clear_error():
    from synth.errors import SynthError

    with pytest.raises(SynthError, match="unknown operator deepn"):
        make_stage("evol-instruct", None, {"operators": {"deepn": 1}})
    with pytest.raises(SynthError, match="rounds"):
        make_stage("evol-instruct", None, {"rounds": 0})


# ---------------------------------------------------------------- the paper's rules (WizardLM)


def test_rounds_default_to_the_papers_four():
    assert EvolInstruct(None).config.rounds == 4  # the paper's M
    assert make_stage("evol-instruct", None, {}).config.rounds == 4
    assert make_stage("evol-instruct", None, {"rounds": 2}).config.rounds == 2


def test_complicate_input_shows_demonstrations():
    stage = EvolInstruct(None)
    text = stage.format_evolve_input(stage.seed_version(SEEDS[0]), "complicate_input", 1).messages[0].content
    assert text == COMPLICATE_INPUT
    # the demonstrations add data in several formats, each before the real prompt
    assert text.count("#Given Prompt#:") == 5 and text.endswith("#Given Prompt#:\nWrite a haiku about rain.\n\n#Rewritten Prompt#:")
    for other in ("add_constraints", "deepen", "in_breadth"):
        assert "Examples" not in stage.format_evolve_input(stage.seed_version(SEEDS[0]), other, 1).messages[0].content


def _answer(stage, text):
    seed = stage.seed_version(SEEDS[1])
    candidate = stage.child(seed, "deepen", 1, {"instruction": "What is 2 + 2? Answer with the number only.", "answer": ""})
    out = stage.parse_answer_output(candidate, Completion(texts=[text]))
    return out.reason if isinstance(out, Rejected) else out.fields["answer"]


def test_short_valid_answers_are_kept():
    stage = EvolInstruct(None)
    for short in ("4", "Paris", "Yes.", "O(n log n)"):
        assert _answer(stage, short) == short
    # Opt-in: a minimum answer length (not a rule of the paper).
    strict = EvolInstruct(None, rules={"min_answer_words": 3})
    assert _answer(strict, "4") == "answer_too_short" and _answer(strict, "It is four.") == "It is four."
    # Setting another rule keeps the Evol-Instruct defaults of the rest.
    partial = EvolInstruct(None, rules={"refusal_max_words": 50})
    assert partial.config.rules.min_answer_words == 0 and _answer(partial, "4") == "4"


def test_the_papers_refusal_rule_sorry_in_a_short_answer():
    stage = EvolInstruct(None)
    assert _answer(stage, "Sorry, that is beyond what I know.") == "answer_refusal"
    assert _answer(stage, "I'm sorry, but I cannot answer that.") == "answer_refusal"
    # fewer than 80 words: a refusal; 80 words or more: an answer that happens to say sorry
    short = "Sorry to say it, but " + " ".join(["word"] * 74)
    assert len(short.split()) == 79 and _answer(stage, short) == "answer_refusal"
    long = short + " more"
    assert _answer(stage, long) == long
    assert _answer(stage, "...") == "answer_only_punctuation"
    assert _answer(stage, "it is what it is") == "answer_only_stop_words"


# ---------------------------------------------------------------- through the test server

GIVEN = re.compile(r"#Given Prompt#:\n(.*?)\n\n#(?:Rewritten|Created) Prompt#:", re.DOTALL)
ITEM = re.compile(r"### Item (\S+) \(method: (\w+)\)\nFirst prompt:\n(.*?)\n\nSecond prompt:\n(.*?)\n\n", re.DOTALL)


def user_text(body: dict) -> str:
    content = next(m for m in body["messages"] if m["role"] == "user")["content"]  # re-asks append turns
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


def realistic(body: dict, judge=None, answer=None, evolve=None):
    """Replies as a capable model would give them; hooks override one kind of reply."""
    text = user_text(body)
    given = GIVEN.findall(text)  # the last one: complicate_input shows demonstrations first
    if given:
        prompt = given[-1]
        if evolve:
            out = evolve(prompt)
            if out is not None:
                return out
        if "#Created Prompt#" in text:
            return f"Create a new riddle inspired by: {prompt}"
        return f"{prompt} Answer in exactly three numbered points."
    if text.startswith("You compare pairs of prompts"):
        items = ITEM.findall(text)
        verdicts = [{"id": i, "improved": True, "score": 8, "reason": f"{op} adds a requirement"} for i, op, _, _ in items]
        if judge:
            return judge(items, verdicts)
        return json.dumps({"verdicts": verdicts[::-1]})  # out of order on purpose: matched by id
    if answer:
        out = answer(text)
        if out is not None:
            return out
    return f"Here is a careful answer. 1. First point about {text[:30]}. 2. Second point. 3. Third point."


def run(stage, seeds=SEEDS):
    return list(run_stages([stage], [dict(s) for s in seeds]))


def test_three_rounds_lineage_and_counts(llm_server, make_llm_backend):
    llm_server.script(realistic)
    backend = make_llm_backend()
    stage = EvolInstruct(backend, rounds=3, seed=7, judge_batch_size=3)
    records = run(stage)

    report = stage.report.as_dict()
    assert report["seeds"] == 4 and report["generated"] == 12 and report["kept"] == 12
    assert report["eliminated"] == {}
    assert report["per_round"] == {str(r): {"generated": 4, "kept": 4} for r in (1, 2, 3)}
    assert sum(c["generated"] for c in report["per_operator"].values()) == 12
    # evolve 12 + judge ceil(4/3)=2 per round + answer 12
    assert report["tokens"]["evolve"]["requests"] == 12
    assert report["tokens"]["judge"]["requests"] == 6
    assert report["tokens"]["answer"]["requests"] == 12
    assert report["tokens"]["answer"]["completion_tokens"] > 0
    assert llm_server.request_count == 30

    assert len(records) == 12
    by_id = {r["id"]: r for r in records}
    for record in records:
        meta = record["meta"]
        assert meta["source"] == "evol-instruct" and meta["model"] == "test-model"
        assert meta["operator"] in OPERATORS
        assert meta["judge"]["improved"] is True and meta["scores"] == {"evol_judge": 8.0}
        assert len(meta["chain"]) == meta["round"]
        assert meta["chain"][0]["id"] == meta["root_id"]
        if meta["round"] > 1:
            parent = by_id[meta["parent_id"]]
            assert parent["meta"]["round"] == meta["round"] - 1
            assert meta["chain"][-1]["instruction"] == parent["messages"][0]["content"]
        else:
            assert meta["parent_id"] == meta["root_id"]
        assert record["messages"][1]["content"].startswith("Here is a careful answer.")
    # Operators are the deterministic draw (seed, sample id, round).
    for record in records:
        meta = record["meta"]
        assert meta["operator"] == stage.choose_operator(type("V", (), {"root_id": meta["root_id"]})(), meta["round"])
    # The same seed reproduces the same work; ids are stable content hashes.
    again = run(EvolInstruct(make_llm_backend(), rounds=3, seed=7, judge_batch_size=3))
    assert [r["id"] for r in again] == [r["id"] for r in records]


def test_broken_replies_eliminate_and_keep_the_previous_version(llm_server, make_llm_backend):
    def evolve(prompt):
        if prompt.startswith("Write a haiku"):
            return "#Rewritten Prompt#: " + prompt + " In Japanese."
        if prompt.startswith("List three"):
            return ""  # empty reply
        return None

    def answer(text):
        if text.startswith("Explain what a prime"):
            return "I'm sorry, but I cannot answer that."
        return None

    def judge(items, verdicts):
        for v, (_, _, first, _) in zip(verdicts, items, strict=True):
            if first.startswith("Summarise"):
                v.update(improved=False, score=2, reason="same task in other words")
        return json.dumps({"verdicts": verdicts})

    llm_server.script(lambda body: realistic(body, judge=judge, answer=answer, evolve=evolve))
    stage = EvolInstruct(make_llm_backend(), rounds=2, judge_batch_size=2)
    records = run(stage)
    report = stage.report.as_dict()
    # every seed fails the same way in both rounds, always from the unchanged seed
    assert report["generated"] == 8 and report["kept"] == 0 and records == []
    assert report["eliminated"] == {
        "prompt_leak": 2,
        "empty_reply": 2,
        "answer_refusal": 2,
        "judge_not_improved": 2,
    }
    assert report["per_round"]["2"] == {"generated": 4, "eliminated": 4}
    round_two = [b for b in llm_server.requests if GIVEN.search(user_text(b))][4:]
    assert sorted(GIVEN.findall(user_text(b))[-1] for b in round_two) == sorted(s["instruction"] for s in SEEDS)


def test_judge_missing_and_garbled_verdicts_and_timeouts(llm_server, make_llm_backend):
    def judge(items, verdicts):
        if any(first.startswith("Write a haiku") for _, _, first, _ in items):
            return "The second prompt is clearly better, trust me."  # not JSON at all
        return json.dumps({"verdicts": [v for v, item in zip(verdicts, items, strict=True) if not item[2].startswith("Summarise")]})

    llm_server.script(lambda body: realistic(body, judge=judge))
    llm_server.fault("slow", marker="Explain what a prime", delay=3.0)  # the evolve request times out
    backend = make_llm_backend(timeout=0.5, max_retries=1, max_reask=1)
    stage = EvolInstruct(backend, rounds=1, judge_batch_size=1)
    records = run(stage)
    report = stage.report.as_dict()
    # A judge reply that stays unreadable after re-asks, and a request that times out, are failures (asked
    # again next run); a verdict the judge left out is a decision about that item only.
    assert report["eliminated"] == {"judge_missing_verdict": 1}
    assert report["failed"] == {"unparseable": 1, "timeout": 1}
    assert stage.stats.failed == report["failed"] and stage.answered > 0
    assert report["kept"] == 1
    assert [r["meta"]["root_id"] for r in records] == ["seed-3"]


def test_a_bad_score_in_a_judge_batch_eliminates_only_its_item(llm_server, make_llm_backend):
    def judge(items, verdicts):
        for v, (_, _, first, _) in zip(verdicts, items, strict=True):
            if first.startswith("List three"):
                v["score"] = 42  # out of range
            if first.startswith("Summarise"):
                v["score"] = "very high"  # not a number
        return json.dumps({"verdicts": verdicts})

    llm_server.script(lambda body: realistic(body, judge=judge))
    stage = EvolInstruct(make_llm_backend(max_reask=0), rounds=1, judge_batch_size=4)
    records = run(stage)
    report = stage.report.as_dict()
    assert report["tokens"]["judge"]["requests"] == 1  # all four in one batch
    assert report["eliminated"] == {"judge_invalid_verdict": 2} and report["failed"] == {}
    assert sorted(r["meta"]["root_id"] for r in records) == ["seed-1", "seed-2"]


def test_rejects_file_names_reason_round_and_operator(llm_server, make_llm_backend, tmp_path):
    llm_server.script(lambda body: realistic(body, answer=lambda text: "..."))
    stage = EvolInstruct(make_llm_backend(), rounds=1)
    path = tmp_path / "rejects.jsonl"
    with RecordLog(path) as rejects:
        assert list(run_stages([stage], [dict(s) for s in SEEDS[:2]], rejects)) == []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x["id"], x["reason"], x["stage"]) for x in lines] == [
        ("seed-1", "answer_only_punctuation", "evol-instruct"),
        ("seed-2", "answer_only_punctuation", "evol-instruct"),
    ]
    assert lines[0]["detail"].startswith("round 1, ")
    assert (lines[0]["round"], lines[0]["phase"]) == (1, "answer") and lines[0]["operator"] in OPERATORS


def test_output_final_and_include_seeds(llm_server, make_llm_backend):
    llm_server.script(realistic)
    final = run(EvolInstruct(make_llm_backend(), rounds=2, output="final", include_seeds=True), SEEDS[:2])
    assert [r["meta"].get("round") for r in final] == [None, None, 2, 2]
    assert final[0]["messages"] == [
        {"role": "user", "content": "Write a haiku about rain."},
        {"role": "assistant", "content": "Rain taps on the roof."},
    ]


def test_without_judge_only_rules_apply(llm_server, make_llm_backend):
    llm_server.script(realistic)
    stage = EvolInstruct(make_llm_backend(), rounds=1, judge=False)
    assert len(run(stage)) == 4
    assert not any(user_text(b).startswith("You compare") for b in llm_server.requests)


# ---------------------------------------------------------------- CLI


def test_cli_end_to_end(llm_server, tmp_path):
    from typer.testing import CliRunner

    from synth.cli import app
    from synth.io import read_dataset

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps(s) + "\n" for s in SEEDS))

    def answer(text):
        return "Sorry, I cannot do that." if "vinegar" in text else None

    llm_server.script(lambda body: realistic(body, answer=answer))
    out = tmp_path / "evolved"
    args = ["evolve", str(seeds), "--method", "evol-instruct", "--out", str(out), "--base-url", llm_server.base_url,
            "--model", "test-model", "--rounds", "2", "--operators", "deepen=3,in_breadth=1", "--seed", "1",
            "--limit", "3", "--concurrency", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "evol-instruct: evolution" in result.output and "per operator" in result.output
    assert "answer_refusal" in result.output and "tokens by step" in result.output

    data = read_dataset(str(out))
    assert len(data) == 4  # 3 seeds x 2 rounds, minus the refused one in both rounds
    assert set(data.column_names) == {"id", "messages", "meta"}
    metas = [json.loads(m) for m in data["meta"]]
    assert {m["operator"] for m in metas} <= {"deepen", "in_breadth"}
    assert {m["root_id"] for m in metas} == {"seed-1", "seed-2"}

    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("evolved")) == ["evolved"]  # sidecars inside
    report = json.loads((out / "report.json").read_text())
    assert report["generated"] == 6 and report["kept"] == 4 and report["eliminated"] == {"answer_refusal": 2}
    assert report["usage"]["requests"] == llm_server.request_count
    assert report["config"]["operators"] == {"deepen": 3.0, "in_breadth": 1.0}
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rejects] == ["seed-3", "seed-3"]

    # A rerun is served from the request cache: no new request reaches the server.
    before = llm_server.request_count
    again = CliRunner().invoke(app, [*args, "--overwrite"])
    assert again.exit_code == 0, again.output
    assert llm_server.request_count == before
    assert read_dataset(str(out))["id"] == data["id"]

    # Errors are one clear line.
    taken = CliRunner().invoke(app, args)
    assert taken.exit_code == 1 and "already exists" in taken.output
    wrong = CliRunner().invoke(app, [*args, "--overwrite", "--image-column", "pic"])
    assert wrong.exit_code == 1 and "image_column: not an option of method evol-instruct" in wrong.output
    # (a one-value flag given twice is an error of its own, so the weights are replaced, not repeated)
    bad = CliRunner().invoke(app, [*(a if a != "deepen=3,in_breadth=1" else "deepest=1" for a in args), "--overwrite"])
    assert bad.exit_code == 1 and "unknown operator deepest" in bad.output


def test_cli_default_rounds_are_the_papers_four(llm_server, tmp_path):
    from typer.testing import CliRunner

    from synth.cli import app

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps(SEEDS[0]) + "\n")
    # A short valid answer is kept (no answer-length rule by default).
    llm_server.script(lambda body: realistic(body, answer=lambda text: "Rain."))
    out = tmp_path / "evolved"
    args = ["evolve", str(seeds), "--out", str(out), "--base-url", llm_server.base_url, "--model", "test-model",
            "--no-judge", "--no-cache"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["rounds"] == 4 and report["generated"] == 4 and report["kept"] == 4
    assert set(report["per_round"]) == {"1", "2", "3", "4"}
