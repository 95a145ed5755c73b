"""Self-Instruct: seed file, golden prompts, reply parsing, filters, full runs through the loopback server."""

from __future__ import annotations

import json
import re

import pytest

from synth.data import RecordLog
from synth.errors import SynthError
from synth.generate.self_instruct import (
    InstructionFilter,
    SelfInstruct,
    SelfInstructConfig,
    load_seed_tasks,
    parse_instances,
    parse_numbered_list,
    parse_yes_no,
    run_self_instruct,
    self_instruct,
    write_self_instruct,
)
from synth.llm.base import Completion
from synth.pipeline import Rejected

# ---------------------------------------------------------------- a scripted "model" for the test server

NEW_TASKS = [
    "Explain how compound interest works using a savings account example.",
    "Classify the movie title as comedy, drama, or horror.",
    "Write a limerick about a forgetful astronaut.",
    "Suggest five questions to ask when adopting a rescue dog.",
    "Decide whether the sentence uses correct subject-verb agreement.",
    "Draft a short apology message for missing a friend's birthday party.",
    "Estimate how many tennis balls fit in a school bus and explain your reasoning.",
    "Give a beginner-friendly definition of recursion with an analogy.",
    "Rewrite the paragraph for a fifth-grade reading level.",
    "List the steps to brew pour-over coffee at home.",
    "Identify the logical fallacy in the argument.",
    "Create a packing checklist for a three-day camping trip in autumn.",
    "Compare renting and buying a home for a young couple.",
    "Detect whether the tweet expresses sarcasm; answer yes or no.",
    "Invent a board game for four players that teaches fractions.",
    "Translate the idiom into plain English and explain its origin.",
]


def is_classification_task(instruction: str) -> bool:
    return instruction.split()[0] in {"Classify", "Decide", "Identify", "Detect", "Tell", "Is"}


class ScriptedModel:
    """Answers the three kinds of Self-Instruct prompts like a cooperative chat model (a test double
    for the LLM behind the real HTTP server), with optional noise in the instruction lists."""

    def __init__(self, tasks=NEW_TASKS, noise=()):
        self.tasks = list(tasks)
        self.noise = list(noise)

    def __call__(self, body):
        text = body["messages"][-1]["content"]
        if "Continue the list with" in text:
            # Request k (its seed, with --seed 0) gets noise items 2k, 2k+1 and tasks 3k..3k+2, whatever
            # order the concurrent requests arrive in.
            k = body["seed"]
            number = int(re.search(r"starting at number (\d+)", text).group(1))
            items = self.noise[2 * k : 2 * k + 2] + self.tasks[3 * k : 3 * k + 3]
            return "\n".join(f"{number + i}. {item}" for i, item in enumerate(items))
        tasks = re.findall(r"^Task: (.*)$", text, re.M)
        if not tasks:
            return f"Direct answer to: {text}"  # a plain instruction (response generation)
        last_task = tasks[-1]
        if text.endswith("Classification task:"):
            return "Yes" if is_classification_task(last_task) else "No, it is open-ended."
        if text.endswith("Label:"):
            return (
                "Positive\nInput: A sample that is clearly positive.\n"
                "Label: Negative\nInput: A sample that is clearly negative."
            )
        if text.endswith("Input:"):
            return (
                f"(none)\nOutput: A careful answer to: {last_task}\n\nTask: something the model ran on with"
            )
        return None


# ---------------------------------------------------------------- seed tasks


def test_shipped_seed_tasks_are_valid_and_diverse():
    seeds = load_seed_tasks()
    assert len(seeds) >= 40
    classification = [s for s in seeds if s.is_classification]
    assert 10 <= len(classification) <= len(seeds) - 20
    assert len({s.instruction for s in seeds}) == len(seeds)
    assert len({s.instruction.split()[0] for s in seeds}) >= 20  # many different task verbs
    # The seeds pass the filters they seed (a text-only model can serve all of them).
    f = InstructionFilter(SelfInstructConfig())
    assert [f.check({"instruction": s.instruction}) for s in seeds] == [None] * len(seeds)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"instruction": "x", "instances": [{"input": "", "output": "y"}]', "not valid JSON"),
        ('{"instruction": "x", "instances": []}', "instances"),
        (
            '{"instruction": "x", "instances": [{"input": "", "output": "y"}], "is_clasification": true}',
            "unknown key",
        ),
        ('["x"]', "expected a JSON object"),
        ('{"instruction": "  ", "instances": [{"output": "y"}]}', "instruction"),
    ],
)
def test_seed_file_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "seeds.jsonl"
    good = json.dumps({"instruction": "Say hi.", "instances": [{"input": "", "output": "Hi!"}]})
    path.write_text(f"{good}\n\n{line}\n")
    with pytest.raises(SynthError) as info:
        load_seed_tasks(path)
    assert f"{path}:3" in str(info.value) and message in str(info.value)


def test_seed_file_missing_or_empty(tmp_path):
    with pytest.raises(SynthError, match="not found"):
        load_seed_tasks(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(SynthError, match="no tasks"):
        load_seed_tasks(tmp_path / "empty.jsonl")


# ---------------------------------------------------------------- golden prompts

TASK_TEXT = (
    "Below is a numbered list of tasks that people ask a helpful AI assistant to do. Continue the list "
    "with 3 new tasks, starting at number 3. Make each new task different from every task above: another "
    "topic, another kind of work (writing, reasoning, coding, classifying, advising, editing, explaining), "
    "another way of asking. Write each task as one self-contained instruction of one or two sentences "
    "that a text-only assistant can carry out."
)
LIST_TEXT = "1. Write a haiku about snow.\n2. Sort the words in alphabetical order.\n3."


class _NoBackend:
    model_name = "none"

    def complete(self, requests):  # pragma: no cover - never called by these tests
        raise AssertionError("no LLM call expected")


def make_run(**config) -> SelfInstruct:
    return SelfInstruct(
        _NoBackend(), {"new_per_request": 3, **config}, seeds=load_seed_tasks(), show_progress=False
    )


def test_golden_instruction_prompt_in_both_layouts():
    examples = [("a", "Write a haiku about snow."), ("b", "Sort the words in alphabetical order.")]
    chat = make_run(prompt_style="chat").instruction_request(examples, 4)
    assert [(m.role, m.content) for m in chat.messages] == [("user", TASK_TEXT + "\n\n" + LIST_TEXT)]
    assert chat.stop == ["\n6."] and chat.max_tokens == 384 and chat.seed == 4 and chat.temperature == 0.7
    base = make_run(prompt_style="continuation").instruction_request(examples, 0)
    # A base model continues the list in an assistant prefix.
    assert [(m.role, m.content) for m in base.messages] == [("user", TASK_TEXT), ("assistant", LIST_TEXT)]


def test_golden_classification_and_instance_prompts():
    run = make_run(
        prompt_style="continuation", classification_examples=1, instance_examples=1, max_instances=1
    )
    request = run.classify.format_input({"id": "t1", "instruction": "Tell if the word is a noun."})
    assert [(m.role, m.content) for m in request.messages] == [
        (
            "user",
            "A classification task asks for one answer picked from a small, fixed set of labels (for "
            "example positive or negative, yes or no, one of a few categories). For each task below, "
            "answer Yes if it is a classification task and No otherwise.",
        ),
        (
            "assistant",
            "Task: Rewrite the sentence in the passive voice.\nClassification task: No\n\n"
            "Task: Decide whether the following restaurant review is positive, negative, or mixed.\n"
            "Classification task: Yes\n\nTask: Tell if the word is a noun.\nClassification task:",
        ),
    ]
    assert request.temperature == 0.0 and request.key == "t1"

    record = {"id": "t2", "instruction": "Tell if the word is a noun.", "is_classification": True}
    example = run.instances.examples_for(record)[0]
    assert example.is_classification
    request = run.instances.format_input(record)
    instance = example.instances[0]
    assert [(m.role, m.content) for m in request.messages] == [
        (
            "user",
            "Each task below is a classification task. For each one, first pick a class label, then write an "
            "input that belongs to that label. Use different labels for different examples.",
        ),
        (
            "assistant",
            f"Task: {example.instruction}\nLabel: {instance.output}\nInput: {instance.input or '(none)'}\n\n"
            "Task: Tell if the word is a noun.\nLabel:",
        ),
    ]
    assert request.stop == ["\nTask:", "\nLabel:"]  # one instance wanted: stop at the second
    assert (request.temperature, request.top_p, request.presence_penalty) == (0.0, None, None)  # greedy

    record = {"id": "t3", "instruction": "Write a toast for a wedding.", "is_classification": False}
    example = run.instances.examples_for(record)[0]
    assert not example.is_classification
    request = run.instances.format_input(record)
    instance = example.instances[0]
    assert request.stop == ["\nTask:", "\nInput:"]
    assert make_run(max_instances=2).instances.format_input(record).stop == ["\nTask:"]
    assert request.messages[0].content.startswith(
        "For each task below, write an example input and the correct output"
    )
    assert request.messages[1].content == (
        f"Task: {example.instruction}\nInput: {instance.input or '(none)'}\nOutput: {instance.output}\n\n"
        "Task: Write a toast for a wedding.\nInput:"
    )


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text, open_item, truncated, expected",
    [
        # a base model continuing "9."
        (
            " Write a poem about rain.\n10. Translate 'hello' into French.\n11. Name three primes.",
            True,
            False,
            ["Write a poem about rain.", "Translate 'hello' into French.", "Name three primes."],
        ),
        # a chat model restating the numbers, with a preamble and closing remarks
        (
            "Sure! Here are some new tasks:\n\n9. Write a poem about rain.\n10. Name three primes.\n\n"
            "Let me know if you need more!",
            True,
            False,
            ["Write a poem about rain.", "Name three primes."],
        ),
        # other numbering styles, markdown, quotes, multi-line items
        (
            '1) First task here.\n(2) Second one\n   continues here.\n**3.** "Third task."\n'
            "Task 4: Fourth.\n5 - Fifth task.",
            False,
            False,
            ["First task here.", "Second one continues here.", "Third task.", "Fourth.", "Fifth task."],
        ),
        # the model starts answering a task: those lines are not part of it
        (
            "9. Classify the word.\nInput: run\nOutput: verb\n10. Summarize the text.",
            True,
            False,
            ["Classify the word.", "Summarize the text."],
        ),
        # cut off by the token limit: the last item is dropped
        (
            "9. Write a story.\n10. Explain the rules of chess to a child who has never",
            True,
            True,
            ["Write a story."],
        ),
        ("", True, False, []),
        ("   \n\n", True, False, []),
        ("I cannot help with that.", False, False, []),
        ("1.5 cups of flour\n2020 was a year", False, False, []),  # numbers that are not list items
    ],
)
def test_parse_numbered_list(text, open_item, truncated, expected):
    items, dropped = parse_numbered_list(text, open_item=open_item, truncated=truncated)
    assert items == expected
    assert dropped == (1 if truncated else 0)


def test_chat_replies_need_a_numbered_line():
    refusal = "I'm sorry, I can't produce a list right now."
    assert parse_numbered_list(refusal, open_item=True) == ([refusal], 0)  # a base model's continuation
    assert parse_numbered_list(refusal, open_item=True, require_numbered=True) == ([], 0)
    assert parse_numbered_list("Write a poem.\n10. Name a river.", open_item=True, require_numbered=True) == (
        ["Write a poem.", "Name a river."],
        0,
    )


def test_parse_instances_input_first_output_first_and_broken():
    assert parse_instances(
        " The movie was great\nOutput: positive\nInput: (none)\nOutput: x\n\nTask: other\nInput: 1", False
    ) == [
        {"input": "The movie was great", "output": "positive"},
        {"input": "", "output": "x"},
    ]
    assert parse_instances("Positive\nInput: I love it\nLabel: Negative\nInput: meh\nawful", True) == [
        {"input": "I love it", "output": "Positive"},
        {"input": "meh\nawful", "output": "Negative"},
    ]
    # A chat model that repeats the opening field label.
    assert parse_instances("Input: 2 + 2\nOutput: 4", False) == [{"input": "2 + 2", "output": "4"}]
    assert parse_instances("", False) == []
    assert parse_instances("just some text with no fields", False) == []
    assert parse_instances("Output: orphan output\nInput: orphan input", False) == []


def test_parse_yes_no():
    assert parse_yes_no("Yes") is True
    assert parse_yes_no(" **No**, it is open-ended.") is False
    assert parse_yes_no("yes.\n\nTask: more") is True
    assert parse_yes_no("Maybe") is None
    assert parse_yes_no("") is None
    assert parse_yes_no("Nope") is None


# ---------------------------------------------------------------- filters


def test_each_filter_reason_is_counted(tmp_path):
    f = InstructionFilter(SelfInstructConfig(min_words=3, max_words=12))
    f.prime(["Write a haiku about the first snow of the year."])
    f.rejects = RecordLog(tmp_path / "rejects.jsonl")
    cases = {
        "": "empty",
        "Do it.": "too_short",
        "Write " + "very " * 20 + "long instruction.": "too_long",
        "«Translate this sentence into German please»": "non_ascii_start",
        "- Translate this sentence into German": "punctuation_start",
        "Draw a picture of a cat wearing a hat.": "unsupported_keyword",
        "Summarize the attached file in three bullet points.": "unsupported_keyword",
        "Plan a trip and go to the museum first.": "unsupported_keyword",
        "write a haiku about the first snow of the year": "duplicate",
        "Write a haiku about the first snow this year.": "rouge_similar",
        "Explain how vaccines train the immune system.": None,
        "Explain how vaccines train the immune system!": "duplicate",
        "Explain how vaccines train our immune systems.": "rouge_similar",
        "Name three rivers in Africa and their lengths.": None,
    }
    records = [{"id": f"r{i}", "instruction": text} for i, text in enumerate(cases)]
    kept = list(f.run(records))
    f.rejects.close()
    assert [r["instruction"] for r in kept] == [t for t, why in cases.items() if why is None]
    expected = {}
    for why in cases.values():
        if why:
            expected[why] = expected.get(why, 0) + 1
    assert dict(f.stats.dropped) == expected
    assert f.stats.kept == 2 and f.stats.seen == len(cases)
    lines = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert len(lines) == sum(expected.values())
    similar = next(x for x in lines if x["reason"] == "rouge_similar")
    assert "ROUGE-L" in similar["detail"] and "first snow" in similar["detail"]


def test_multimodal_target_keeps_image_instructions():
    f = InstructionFilter(SelfInstructConfig(text_only=False))
    assert f.check({"instruction": "Describe the picture in two sentences."}) is None


# ---------------------------------------------------------------- full runs through the test server


def test_full_run_counts_lineage_and_instance_order(llm_server, make_llm_backend, tmp_path):
    noise = [
        "Draw a map of your neighbourhood.",  # keyword
        "Write a haiku about the first snow of the year.",  # a seed: duplicate
        "Write a haiku about the first snowfall of the year.",  # close to a seed: ROUGE-L
        "Hi.",  # too short
    ]
    model = ScriptedModel(noise=noise)
    llm_server.script(model)
    backend = make_llm_backend()
    config = {"count": 8, "concurrency": 2, "new_per_request": 4}
    out = tmp_path / "out"
    result = run_self_instruct(backend, out, config, show_progress=False)

    stats = result.stats
    assert stats["prompt_style"] == "chat"
    assert stats["instructions"]["kept"] == 8
    assert stats["instructions"]["rejected"] == {
        "unsupported_keyword": 1,
        "duplicate": 1,
        "rouge_similar": 1,
        "too_short": 1,
    }
    assert [t["instruction"] for t in result.tasks] == NEW_TASKS[:8]
    # 2 rounds of 2 requests; the last round's extra items were not needed.
    assert stats["rounds"] == 2 and stats["instructions"]["requests"] == 4
    assert stats["instructions"]["parsed"] == 5 + 5 + 3 + 3 and stats["instructions"]["surplus"] == 4

    classified = {t["instruction"]: t["is_classification"] for t in result.tasks}
    assert classified == {t: is_classification_task(t) for t in NEW_TASKS[:8]}
    assert stats["classification"]["classification"] == 2 and stats["classification"]["tasks"] == 8
    # Output-first prompts (ending "Label:") for classification tasks, input-first otherwise.
    instance_prompts = [
        r["messages"][-1]["content"]
        for r in llm_server.requests
        if r["messages"][-1]["content"].endswith(("Label:", "Input:"))
    ]
    for prompt in instance_prompts:
        task = re.findall(r"^Task: (.*)$", prompt, re.M)[-1]
        assert prompt.endswith("Label:") == is_classification_task(task)

    # up to 5 instances per task: the scripted classification reply has two, the others one
    assert len(result.samples) == 6 + 2 * 2 and stats["instances"]["instances"] == 10
    for sample in result.samples:
        user, assistant = sample.messages
        meta = sample.meta
        assert meta["operator"] == "self-instruct" and meta["source"] == "self-instruct"
        assert meta["model"] == "test-model" and meta["round"] in (1, 2)
        assert meta["is_classification"] == is_classification_task(user.content)
        assert len(meta["examples"]) == 8  # 6 seed + 2 machine (or seeds while there are none)
        if meta["is_classification"]:
            label = ("Positive", "Negative")[meta["instance"]]
            assert user.content.endswith(f"\n\nA sample that is clearly {label.lower()}.")
            assert assistant.content == label
        else:
            assert user.content in NEW_TASKS and assistant.content == f"A careful answer to: {user.content}"
    round2 = [s for s in result.samples if s.meta["round"] == 2]
    assert round2  # machine-written tasks were shown in round 2
    assert stats["usage"]["requests"] == 4 + 8 + 8 and stats["usage"]["completion_tokens"] > 0

    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # everything inside the output folder
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejects) == [
        "duplicate",
        "rouge_similar",
        "too_short",
        "unsupported_keyword",
    ]

    from synth.io import read_dataset

    dataset = read_dataset(out)
    assert len(dataset) == 10 and set(dataset.column_names) == {"id", "messages", "meta"}
    assert json.loads(dataset[0]["meta"])["operator"] == "self-instruct"
    written = json.loads((out / "report.json").read_text())
    assert written["instructions"]["kept"] == 8
    assert json.loads((out / "usage.json").read_text())["requests"] == 4 + 8 + 8
    assert len((out / "self_instruct_tasks.jsonl").read_text().splitlines()) == 8
    with pytest.raises(SynthError, match="already exists"):
        write_self_instruct(result, out)
    # A result made in memory writes the same dataset.
    again = write_self_instruct(result, tmp_path / "again")
    assert read_dataset(again)["messages"] == dataset["messages"]


def test_failures_empty_and_broken_replies_are_counted_not_fatal(llm_server, make_llm_backend):
    model = ScriptedModel()
    calls = {"n": 0}

    def flaky(body):
        text = body["messages"][-1]["content"]
        if "Continue the list with" in text:
            calls["n"] += 1
            if calls["n"] == 1:
                return ""  # empty reply
            if calls["n"] == 2:
                return "I'm sorry, I can't produce a list right now."  # no list at all
            if calls["n"] == 3:
                return {
                    "content": "9. Outline a study plan for a history exam.\n10. Explain why the",
                    "finish_reason": "length",
                }
            start = 3 * (calls["n"] - 4)  # in arrival order: tasks 0-2, then 3-5
            return "\n".join(f"{9 + i}. {t}" for i, t in enumerate(NEW_TASKS[start : start + 3]))
        if text.endswith("Classification task:") and "study plan" in text:
            return "Hmm, hard to say."  # unclear: falls back to input-first
        if text.endswith("Input:") and "compound interest" in text:
            return "no fields here at all"  # broken instance reply
        return model(body)

    llm_server.script(flaky)
    # The instance request of one task times out; the first instruction request fails for good.
    llm_server.fault("slow", marker="forgetful astronaut.\nInput:", delay=2.0)
    llm_server.fault("500", marker="Continue the list with", first=1)
    backend = make_llm_backend(timeout=0.5, max_retries=0)
    result = self_instruct(backend, {"count": 7, "concurrency": 3}, show_progress=False)

    gen = result.stats["instructions"]
    assert gen["failed_requests"] == 1 and gen["empty_replies"] == 1 and gen["unparseable_replies"] == 1
    assert gen["truncated_items"] == 1 and gen["kept"] == 7
    assert result.stats["classification"]["unclear"] == 1
    unclear = next(t for t in result.tasks if "study plan" in t["instruction"])
    assert unclear["is_classification"] is False and unclear["meta"]["classification_unclear"] is True
    # A broken reply is a decision about that task; a timed-out request is a failure (asked again next run).
    assert result.stats["instances"]["rejected"] == {"no_instances": 1}
    assert result.stats["instances"]["failed"] == {"timeout": 1}
    assert result.stats["failed"] == {"http_500": 1, "timeout": 1}
    assert len(result.samples) == 5 + 2  # 5 tasks; the two classification ones have two instances
    assert result.stats["usage"]["failures"] >= 2


def test_responses_option_answers_each_instruction_again(llm_server, make_llm_backend):
    llm_server.script(ScriptedModel())
    backend = make_llm_backend()
    result = self_instruct(backend, {"count": 3, "concurrency": 1, "responses": True}, show_progress=False)
    assert len(result.samples) == 4 and result.stats["responses"]["kept"] == 4  # one task has 2 instances
    for sample in result.samples:
        user, assistant = sample.messages
        assert assistant.content == f"Direct answer to: {user.content}"
        assert sample.meta["operator"] == "self-instruct" and sample.meta["parent_id"]
    assert result.stats["usage"]["requests"] == 1 + 3 + 3 + 4


def test_run_stops_when_nothing_new_comes(llm_server, make_llm_backend):
    llm_server.script(ScriptedModel(tasks=NEW_TASKS[:2]))  # the model runs dry after two tasks
    backend = make_llm_backend()
    run = SelfInstruct(backend, {"count": 50, "concurrency": 2, "patience": 2}, show_progress=False)
    result = run.generate()
    assert result.stats["instructions"]["kept"] == 2
    assert result.stats["rounds"] == 3  # one productive round, then `patience` idle ones


def test_format_output_of_stages_without_a_backend():
    run = make_run()
    record = {"id": "x", "instruction": "Classify the word.", "meta": {"round": 1, "examples": []}}
    out = run.classify.format_output(record, Completion(texts=["Yes"]))
    assert out["is_classification"] is True
    record = {**out}
    out = run.instances.format_output(
        record, Completion(texts=["noun\nInput: table\nLabel: verb\nInput: run"])
    )
    assert out["instances"] == [{"input": "table", "output": "noun"}, {"input": "run", "output": "verb"}]
    out = run.instances.format_output(record, Completion(texts=[""]))
    assert out.reason == "no_instances"
    # a truncated reply loses its possibly cut-off last instance
    out = run.instances.format_output(
        record, Completion(texts=["noun\nInput: table\nLabel: verb\nInput: ru"], finish_reasons=["length"])
    )
    assert out["instances"] == [{"input": "table", "output": "noun"}]


# ---------------------------------------------------------------- the published rules (yizhongw/self-instruct)


def test_word_limits_are_the_published_ones():
    """The original drops instructions of 3 words or fewer and of more than 150 words."""
    f = InstructionFilter(SelfInstructConfig())
    assert f.check({"instruction": "Write a poem."}).reason == "too_short"  # 3 words
    assert f.check({"instruction": "Write a sad poem."}) is None  # 4 words
    long = "Explain " + "why " * 148 + "it."  # 150 words
    assert len(long.split()) == 150 and f.check({"instruction": long}) is None
    assert f.check({"instruction": "Explain " + "why " * 149 + "it."}).reason == "too_long"


def test_write_a_program_filter_rejects_a_planted_case():
    f = InstructionFilter(SelfInstructConfig())
    assert f.check({"instruction": "Write a program that sorts a list of names."}).reason == "blocked_prefix"
    assert f.check({"instruction": "write a Program to count vowels in a word."}).reason == "blocked_prefix"
    assert f.check({"instruction": "Write a Python function that counts vowels in a word."}) is None
    assert (
        InstructionFilter(SelfInstructConfig(blocked_prefixes=[])).check(
            {"instruction": "Write a program that sorts a list of names."}
        )
        is None
    )


def test_original_keyword_list_is_available():
    from synth.generate.self_instruct import ORIGINAL_BLOCKED_KEYWORDS

    f = InstructionFilter(SelfInstructConfig(blocked_keywords=ORIGINAL_BLOCKED_KEYWORDS))
    assert f.check({"instruction": "Plot the sales figures by month."}).reason == "unsupported_keyword"
    assert (
        f.check({"instruction": "Describe the sound of rain on a tin roof."}) is None
    )  # synth's list has "sound"


def test_sampling_defaults_are_the_published_ones():
    cfg = SelfInstructConfig()
    assert (cfg.temperature, cfg.top_p, cfg.presence_penalty) == (0.7, 0.5, 2.0)
    assert (cfg.instance_temperature, cfg.instance_presence_penalty) == (0.0, 1.5)
    assert cfg.max_instances == 5 and cfg.min_words == 4 and cfg.max_words == 150


def test_request_settings_reach_the_server(llm_server, make_llm_backend):
    llm_server.script(ScriptedModel())
    result = self_instruct(make_llm_backend(), {"count": 3, "concurrency": 1}, show_progress=False)
    kinds = {"instructions": [], "classification": [], "instances": []}
    for body in llm_server.requests:
        text = body["messages"][-1]["content"]
        kind = (
            "instructions"
            if "Continue the list with" in text
            else "classification"
            if text.endswith("Classification task:")
            else "instances"
        )
        kinds[kind].append(body)
    assert len(kinds["instructions"]) == 1 and len(kinds["classification"]) == len(kinds["instances"]) == 3
    for body in kinds["instructions"]:
        assert (body["temperature"], body["top_p"], body["presence_penalty"]) == (0.7, 0.5, 2.0)
    for body in kinds["classification"]:
        assert body["temperature"] == 0 and "presence_penalty" not in body
    for body in kinds["instances"]:
        assert body["temperature"] == 0 and body["presence_penalty"] == 1.5
    assert result.stats["sampling"]["presence_penalty_applied"] is True
    assert result.stats["instances"]["dropped_instances"] == {}  # the scripted instances are all valid


def test_presence_penalty_is_not_sent_where_the_backend_has_none():
    run = make_run(prompt_style="chat")  # _NoBackend: like the local backend, no presence penalty
    request = run.instruction_request([("a", "Write a haiku about snow.")], 0)
    assert request.presence_penalty is None and (request.temperature, request.top_p) == (0.7, 0.5)
    record = {"id": "t", "instruction": "Write a toast for a wedding.", "is_classification": False}
    assert run.instances.format_input(record).presence_penalty is None
    sampling = run.sampling()
    assert sampling["presence_penalty"] == 2.0 and sampling["presence_penalty_applied"] is False


def test_presence_penalty_is_part_of_the_cache_key():
    from synth.llm.base import ChatRequest, Message
    from synth.llm.cache import request_hash

    base = ChatRequest(messages=[Message(role="user", content="hi")], temperature=0.7)
    penalised = base.model_copy(update={"presence_penalty": 2.0})
    assert request_hash("m", base) != request_hash("m", penalised)
    assert request_hash("m", penalised) == request_hash(
        "m", base.model_copy(update={"presence_penalty": 2.0})
    )


def _instances(run, text, output_first=False):
    record = {"id": "x", "instruction": "Do the task.", "is_classification": output_first, "meta": {}}
    return run.instances.format_output(record, Completion(texts=[text]))


def test_instance_filters_drop_planted_bad_instances():
    run = make_run()
    reply = (
        " same text\nOutput: same text\n"  # input equals output
        "Input: an input\nOutput: \n"  # empty output
        "Input: Sentence:\nOutput: fine\n"  # a field ending with ":" (incomplete)
        "Input: another input\nOutput: The answer is:\n"
        "Input: good one\nOutput: a good answer\n"
        "Input: good one\nOutput: a good answer\n"  # an exact duplicate: kept once
        "Input: (none)\nOutput: first open answer\n"
        "Input: (none)\nOutput: second open answer\n"  # no input: different outputs are fine
    )
    out = _instances(run, reply)
    assert out["instances"] == [
        {"input": "good one", "output": "a good answer"},
        {"input": "", "output": "first open answer"},
        {"input": "", "output": "second open answer"},
    ]
    assert dict(run.instances.instance_drops) == {
        "input_equals_output": 1,
        "empty_output": 1,
        "ends_with_colon": 2,
        "duplicate_instance": 1,
    }


def test_task_whose_same_input_got_two_outputs_is_dropped():
    run = make_run()
    out = _instances(run, " 2 + 2\nOutput: 4\nInput: 3 + 3\nOutput: 6\nInput: 2 + 2\nOutput: 5")
    assert isinstance(out, Rejected) and out.reason == "conflicting_outputs"
    assert "2 + 2" in out.detail
    labels = _instances(
        run, "Positive\nInput: I love it\nLabel: Negative\nInput: I love it", output_first=True
    )
    assert labels.reason == "conflicting_outputs"


def test_up_to_max_instances_are_kept():
    reply = "\n".join(f"Input: question {i}\nOutput: answer {i}" for i in range(7))
    assert len(_instances(make_run(), reply)["instances"]) == 5
    assert len(_instances(make_run(max_instances=2), reply)["instances"]) == 2
