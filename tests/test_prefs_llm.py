"""judge, pairwise, claims and hallucinate against scripted models on the loopback server (a fixture, not a model).

The planted sets have known right answers: a scripted sampler returns right and wrong responses, a
scripted judge rates, compares or checks claims by the truth, and the tests check that every pair
prefers the right response, that every drop reason is counted and written, and that failures are
retried by the next run.
"""

from __future__ import annotations

import json
import re

import pytest
from datasets import Dataset, load_from_disk

from synth.errors import SynthError
from synth.llm.testing import image_urls
from synth.prefs import (
    ClaimsConfig,
    ClaimsStrategy,
    HallucinateStrategy,
    JudgeConfig,
    JudgeStrategy,
    PairwiseConfig,
    PairwiseStrategy,
    Sampler,
    SceneIndex,
    build_preferences,
)
from tests.cli_helpers import run_cli
from tests.llm_fixtures import FAST_RETRY

OPTIONS = {**FAST_RETRY, "max_retries": 0, "breaker_requests": 1000, "breaker_failures": 1000}


# ---------------------------------------------------------------- the scripted models


def user_text(body: dict) -> str:
    content = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    return content if isinstance(content, str) else "".join(p.get("text") or "" for p in content if p.get("type") == "text")


def section(text: str, title: str) -> str:
    """The text under '### title' up to the next heading or the reply instruction."""
    body = text.split(f"### {title}\n", 1)[1]
    return re.split(r"\n\n(?:### |Reply with JSON)", body, maxsplit=1)[0].strip()


class Script:
    """Replies by what a request is: sampling (by question), rating, comparison, claims, rewrite."""

    def __init__(self, samples: dict[str, list[str]], truth=None, ratings=None, claims=None, answers=None,
                 rewrites=None, biased: bool = False):
        self.samples = samples
        self.truth = truth or (lambda response: None)
        self.ratings = ratings or {}
        self.claims = claims or {}
        self.answers = answers or {}
        self.rewrites = rewrites or {}
        self.biased = biased

    def __call__(self, body: dict):
        text = user_text(body)
        if "### Answer to rate" in text:
            response = section(text, "Answer to rate")
            if response in self.ratings:
                return json.dumps(self.ratings[response])
            r = 9 if self.truth(response) else 2
            return json.dumps({"helpfulness": r, "faithfulness": r, "honesty": r, "rationale": "right" if r > 5 else "wrong"})
        if "### Answer A" in text:
            a, b = section(text, "Answer A"), section(text, "Answer B")
            if self.biased:
                return json.dumps({"winner": "A", "rationale": "the first one"})
            ta, tb = self.truth(a), self.truth(b)
            winner = "tie" if ta == tb else ("A" if ta else "B")
            return json.dumps({"winner": winner, "rationale": f"{winner} is right"})
        if "### Answer to split" in text:
            response = section(text, "Answer to split")
            return json.dumps({"claims": [{"claim": c, "question": q} for c, q in self.claims.get(response, [])]})
        if "### Question\n" in text and "yes/no question" in text:
            question = section(text, "Question")
            return json.dumps({"answer": self.answers.get(question, "yes")})
        if "### Correct answer" in text:
            reference = section(text, "Correct answer")
            return json.dumps(self.rewrites.get(reference, {"rewritten": reference}))
        for question, answers in self.samples.items():
            if question in text:
                return answers
        return None


def sft(rows: list[dict], path, images: bool = False) -> str:
    data = [{"id": r["id"], "messages": r["messages"], "meta": json.dumps(r.get("meta") or {"source": "planted"})} for r in rows]
    if images:
        from datasets import Features, Image, Sequence, Value

        from synth.records import message_feature

        features = Features({"id": Value("string"), "messages": message_feature(True), "images": Sequence(Image()), "meta": Value("string")})
        data = [{**d, "images": r["images"]} for d, r in zip(data, rows)]
        Dataset.from_list(data, features=features).save_to_disk(str(path))
    else:
        Dataset.from_list(data).save_to_disk(str(path))
    return str(path)


def ask(question: str, rid: str) -> dict:
    return {"id": rid, "messages": [{"role": "user", "content": question}]}


def cached_backend(server, cache_dir, model: str = "test-model", **options):
    from synth.llm.factory import make_backend

    return make_backend("openai", model, server.base_url, cache_dir=cache_dir, **{**OPTIONS, **options})


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


CAPITAL = "What is the capital of France?"
SPIDER = "How many legs does a spider have?"
PLANTED = {
    CAPITAL: ["London.", "Paris.", "The capital of France is Paris.", "Berlin."],
    SPIDER: ["Six.", "Spiders have eight legs.", "Eight.", "Ten legs."],
}


def right(response: str) -> bool:
    return "Paris" in response or "eight" in response.lower()


# ---------------------------------------------------------------- judge


def test_judge_pairs_prefer_the_right_answer(llm_server, make_llm_backend, tmp_path):
    llm_server.script(Script(PLANTED, truth=right))
    llm = make_llm_backend(**OPTIONS)
    source = sft([ask(CAPITAL, "q1"), ask(SPIDER, "q2")], tmp_path / "in")
    stage = JudgeStrategy([Sampler(llm, 0.7)], llm, JudgeConfig(pairing="gap", pairs_per_prompt=4))
    result = build_preferences(source, tmp_path / "out", stage, show_progress=False)
    ds = load_from_disk(str(tmp_path / "out"))
    assert result.pairs == len(ds) == 8  # 2 right x 2 wrong per prompt, all 7 apart
    for row in ds:
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert right(chosen) and not right(rejected)
        meta = json.loads(row["meta"])
        assert meta["strategy"] == "judge" and meta["prompt_id"] in ("q1", "q2") and meta["source"] == "planted"
        assert meta["ratings"] == {"chosen": 9.0, "rejected": 2.0}
        assert meta["aspects"]["chosen"] == {"helpfulness": 9.0, "faithfulness": 9.0, "honesty": 9.0}
        assert meta["rationale"] == {"chosen": "right", "rejected": "wrong"}
        assert meta["models"] == {"chosen": "test-model", "rejected": "test-model", "judge": "test-model"}
        assert row["prompt"] == [{"role": "user", "content": CAPITAL if meta["prompt_id"] == "q1" else SPIDER}]
    # 1 sampling request (n=4) + 4 judge requests per prompt
    assert result.report["requests"] == 10 and llm_server.request_count == 10
    assert all(body["n"] == 4 for body in llm_server.requests if "### Answer" not in user_text(body))
    # best-worst: one pair per prompt, a best one against a worst one
    stage = JudgeStrategy([Sampler(llm, 0.7)], llm)
    build_preferences(source, tmp_path / "bw", stage, show_progress=False)
    pairs = load_from_disk(str(tmp_path / "bw"))
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in pairs] == [("Paris.", "London."), ("Spiders have eight legs.", "Six.")]


def test_judge_prompt_is_the_rendered_rubric(llm_server, make_llm_backend):
    llm = make_llm_backend(**OPTIONS)
    stage = JudgeStrategy([Sampler(llm)], llm)
    from synth.prefs.items import items_from_record

    (item,) = items_from_record({"id": "q", "messages": [{"role": "user", "content": CAPITAL}], "meta": {}})
    request = stage.judge_request(item, "Paris.", 0)
    text = request.messages[0].content
    assert text.startswith("You are an impartial judge of answers given by an AI assistant. Rate the answer")
    assert "- faithfulness: is it consistent with the information given in the conversation" in text
    assert text.endswith(
        f"### Conversation\n{CAPITAL}\n\n### Answer to rate\nParis.\n\nReply with JSON only, each rating a whole number "
        'from 1 to 10: {"helpfulness": N, "faithfulness": N, "honesty": N, "rationale": "<one or two sentences explaining the ratings>"}'
    )
    assert request.schema_model.__name__ == "AspectRatings" and request.temperature == 0.0


def test_every_drop_reason_is_counted_and_written(llm_server, make_llm_backend, tmp_path):
    long_wrong = "No. " + "It is a long and winding explanation that never gets to the point. " * 4
    samples = {
        "Q-tie": ["a1", "a2", "a3", "a4"],
        "Q-missing": ["Paris m1", "Rome m2", "Paris m3", "Rome m4"],
        "Q-unparseable": ["Paris u1", "Rome u2", "Paris u3", "Rome u4"],
        "Q-norating": ["n1", "n2", "n3", "n4"],
        "Q-same": ["Same answer.", "same answer", "Same answer.", "Same answer!"],
        "Q-long": ["Paris.", long_wrong, long_wrong + " More.", long_wrong + " Even more."],
        "Q-BOOM": ["Paris b1", "Rome b2", "Paris b3", "Rome b4"],
    }
    ratings = {f"a{i}": {"helpfulness": 5, "faithfulness": 5, "honesty": 5} for i in range(1, 5)}
    ratings["Paris m1"] = {"helpfulness": 9, "faithfulness": 9}  # no honesty
    ratings["Rome u2"] = {"helpfulness": 11, "faithfulness": 2, "honesty": 2}  # out of the 1-10 range
    ratings.update({f"n{i}": {} for i in range(1, 5)})
    llm_server.script(Script(samples, truth=right, ratings=ratings))
    llm_server.fault("500", marker="Q-BOOM", times=1)
    llm = cached_backend(llm_server, tmp_path / "cache")
    rows = [ask(q, q) for q in samples]
    source = sft(rows, tmp_path / "in")
    stage = JudgeStrategy([Sampler(llm, 0.7)], llm)
    result = build_preferences(source, tmp_path / "out", stage, max_length_ratio=3.0, show_progress=False)
    report = result.report
    assert report["dropped"] == {
        "tie": 1, "missing_rating": 5, "unparseable_rating": 1, "identical": 1, "length_ratio": 1,
    }
    assert report["failed"] == {"http_500": 1}
    assert report["prompts"] == 7 and report["pairs"] == result.pairs == 2  # Q-missing and Q-unparseable
    rejects = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    by = {(r["id"], r["reason"], r["level"]) for r in rejects}
    assert ("Q-tie", "tie", "prompt") in by and ("Q-same", "identical", "prompt") in by
    assert ("Q-missing", "missing_rating", "response") in by and ("Q-unparseable", "unparseable_rating", "response") in by
    assert sum(1 for r in rejects if r["id"] == "Q-norating" and r["reason"] == "missing_rating") == 4
    length = next(r for r in rejects if r["reason"] == "length_ratio")
    assert length["level"] == "pair" and length["prompt_id"] == "Q-long" and length["stage"] == "length-balance"
    missing = next(r for r in rejects if r["id"] == "Q-missing")
    assert missing["response"] == 0 and "honesty" in missing["detail"]
    failures = read_jsonl(tmp_path / "out" / "failures.jsonl")
    assert [(f["id"], f["reason"]) for f in failures] == [("Q-BOOM", "http_500")]
    pairs = load_from_disk(str(tmp_path / "out"))
    assert {json.loads(r["meta"])["prompt_id"] for r in pairs} == {"Q-missing", "Q-unparseable"}
    assert all(right(r["chosen"][0]["content"]) and not right(r["rejected"][0]["content"]) for r in pairs)

    # The next run retries the failed prompt; everything else replays from the request cache.
    before = llm_server.request_count
    again = build_preferences(source, tmp_path / "out2", JudgeStrategy([Sampler(llm, 0.7)], llm),
                              max_length_ratio=3.0, show_progress=False)
    assert again.report["failed"] == {} and again.pairs == 3
    assert llm_server.request_count - before == 5  # Q-BOOM: 1 sampling + 4 judge requests, nothing else
    llm.close()


def test_every_request_failed_is_an_error_and_writes_nothing(llm_server, make_llm_backend, tmp_path):
    llm_server.fault("500")
    llm = make_llm_backend(**OPTIONS)
    source = sft([ask(CAPITAL, "q1"), ask(SPIDER, "q2")], tmp_path / "in")
    with pytest.raises(SynthError, match="every LLM request failed"):
        build_preferences(source, tmp_path / "out", JudgeStrategy([Sampler(llm)], llm), show_progress=False)
    assert not (tmp_path / "out").exists()


def test_samples_spread_over_models_and_temperatures(llm_server, make_llm_backend, tmp_path):
    def reply(body):
        if "### Answer to rate" in user_text(body):
            return Script({}, truth=right)(body)
        return [f"{body['model']} at {body['temperature']}: {'Paris' if body['model'] == 'good' else 'Rome'}"] * body.get("n", 1)

    llm_server.script(reply)
    good, bad = make_llm_backend(**OPTIONS, model="good"), make_llm_backend(**OPTIONS, model="bad")
    samplers = [Sampler(good, 0.2), Sampler(good, 1.0), Sampler(bad, 0.2), Sampler(bad, 1.0)]
    stage = JudgeStrategy(samplers, good, JudgeConfig(n=4))
    pairs = list(stage.run([ask(CAPITAL, "q")]))
    sampling = [b for b in llm_server.requests if "### Answer" not in user_text(b)]
    assert sorted((b["model"], b["temperature"], b.get("n", 1)) for b in sampling) == [
        ("bad", 0.2, 1), ("bad", 1.0, 1), ("good", 0.2, 1), ("good", 1.0, 1)]
    assert len(pairs) == 1 and pairs[0]["meta"]["models"] == {"chosen": "good", "rejected": "bad", "judge": "good"}
    assert stage.report()["models"]["samplers"][0] == {"model": "good", "temperature": 0.2}


# ---------------------------------------------------------------- images


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from synth.adapt.engine import adapt
    from synth.demo_data import write_demo_data

    root = tmp_path_factory.mktemp("prefs-llm-demo")
    shapes = write_demo_data(root / "shapes", count=2, show_progress=False)
    return {"shapes": shapes, "vqa_short": adapt(shapes, "vqa_short", root / "vqa_short", limit=1).out}


def test_image_prompts_reach_vision_models_and_text_models_get_the_scene(llm_server, make_llm_backend, demo, tmp_path):
    truth = {}
    for row in load_from_disk(str(demo["shapes"])):
        for qa in row["qa"]:
            truth[qa["question"]] = qa["answer"]

    def reply(body):
        text = user_text(body)
        if "### Answer to rate" in text:
            response = section(text, "Answer to rate")
            question = next(q for q in truth if q in text)
            r = 9 if response == truth[question] else 1
            return json.dumps({"helpfulness": r, "faithfulness": r, "honesty": r, "rationale": "checked"})
        question = next(q for q in truth if q in text)
        return [truth[question], "7", "purple", "banana"]

    llm_server.script(reply)
    vision = make_llm_backend(**OPTIONS)
    result = build_preferences(demo["vqa_short"], tmp_path / "v", JudgeStrategy([Sampler(vision)], vision), show_progress=False)
    ds = load_from_disk(str(tmp_path / "v"))
    assert result.pairs == len(ds) > 0
    for row in ds:
        question = next(q for q in truth if q in row["prompt"][0]["content"][1]["text"])
        assert row["chosen"][0]["content"][0]["text"] == truth[question]
        assert len(row["images"]) == 1
    assert all(len(image_urls(b)) == 1 for b in llm_server.requests)  # sampler and judge both saw the image

    # A text-only model: without a scene the prompt is dropped; with --scenes it reads the caption instead.
    llm_server.requests.clear()
    before = llm_server.request_count
    blind = make_llm_backend(**OPTIONS, supports_images=False)
    result = build_preferences(demo["vqa_short"], tmp_path / "b", JudgeStrategy([Sampler(blind)], blind), show_progress=False)
    assert result.pairs == 0 and set(result.report["dropped"]) == {"images_unsupported"}
    assert llm_server.request_count == before
    scenes = SceneIndex.from_source(demo["shapes"])
    stage = JudgeStrategy([Sampler(blind)], blind, scenes=scenes)
    result = build_preferences(demo["vqa_short"], tmp_path / "s", stage, show_progress=False)
    assert result.pairs > 0
    caption = load_from_disk(str(demo["shapes"]))[0]["detailed_caption"]
    for body in llm_server.requests:
        assert not image_urls(body) and caption in user_text(body)
    judge_texts = [user_text(b) for b in llm_server.requests if "### Answer to rate" in user_text(b)]
    assert all("You cannot see the image, so it is described in text below" in t for t in judge_texts)
    sample_texts = [user_text(b) for b in llm_server.requests if "### Answer to rate" not in user_text(b)]
    assert all(t.startswith("[Image, described in text: ") for t in sample_texts)


# ---------------------------------------------------------------- pairwise


def test_pairwise_decides_only_when_both_orders_agree(llm_server, make_llm_backend, tmp_path):
    samples = {CAPITAL: ["London.", "Paris.", "Berlin.", "Rome."]}
    llm_server.script(Script(samples, truth=right))
    llm = make_llm_backend(**OPTIONS)
    source = sft([ask(CAPITAL, "q1")], tmp_path / "in")
    stage = PairwiseStrategy([Sampler(llm)], llm, PairwiseConfig(pairing="gap", pairs_per_prompt=5))
    result = build_preferences(source, tmp_path / "out", stage, show_progress=False)
    ds = load_from_disk(str(tmp_path / "out"))
    assert result.report["requests"] == 1 + 12  # sampling + 6 pairs in both orders
    assert [r["chosen"][0]["content"] for r in ds] == ["Paris."] * 3  # Paris beats each of the others
    assert sorted(r["rejected"][0]["content"] for r in ds) == ["Berlin.", "London.", "Rome."]
    assert result.report["dropped"] == {"tie": 3}  # wrong vs wrong: the judge says tie
    orders = [(section(user_text(b), "Answer A"), section(user_text(b), "Answer B")) for b in llm_server.requests if "### Answer A" in user_text(b)]
    assert all((b, a) in orders for a, b in orders)  # every comparison was asked in both orders

    # A judge that always picks the first answer: every verdict flips with the order, so all are ties.
    llm_server.script(Script(samples, biased=True))
    stage = PairwiseStrategy([Sampler(llm)], llm)
    result = build_preferences(source, tmp_path / "biased", stage, show_progress=False)
    assert result.pairs == 0 and result.report["dropped"] == {"tie": 6}
    rejects = read_jsonl(tmp_path / "biased" / "rejects.jsonl")
    assert all(r["level"] == "pair" and "depend on the order" in r["detail"] for r in rejects)


def test_pairwise_unreadable_verdicts_are_counted(llm_server, make_llm_backend, tmp_path):
    samples = {CAPITAL: ["London.", "Paris."]}

    def reply(body):
        if "### Answer A" in user_text(body):
            return json.dumps({"winner": "C"}) if section(user_text(body), "Answer A") == "Paris." else json.dumps({})
        return Script(samples)(body)

    llm_server.script(reply)
    llm = make_llm_backend(**OPTIONS)
    stage = PairwiseStrategy([Sampler(llm)], llm, PairwiseConfig(n=2))
    assert list(stage.run([ask(CAPITAL, "q")])) == []
    assert stage.stats.dropped == {"missing_rating": 1}  # one pair, read as missing (first order) before C


# ---------------------------------------------------------------- claims


def test_claims_rank_responses_by_wrong_claims_and_check_them_against_the_image(llm_server, make_llm_backend, demo, tmp_path):
    from synth.data import open_source

    image = next(open_source(demo["shapes"]).records())["image"]  # a {"bytes", "path"} ref
    responses = ["A red circle and a blue square.", "A green circle and a blue square.", "A green star and a yellow square.", "An image."]
    claims = {
        responses[0]: [("There is a red circle.", "Is there a red circle?"), ("There is a blue square.", "Is there a blue square?")],
        responses[1]: [("There is a green circle.", "Is there a green circle?"), ("There is a blue square.", "Is there a blue square?")],
        responses[2]: [("There is a green star.", "Is there a green star?"), ("There is a yellow square.", "Is there a yellow square?")],
        responses[3]: [],
    }
    answers = {"Is there a red circle?": "yes", "Is there a blue square?": "Yes.", "Is there a green circle?": "no",
               "Is there a green star?": "no", "Is there a yellow square?": False}
    llm_server.script(Script({"Describe": responses}, claims=claims, answers=answers))
    llm = make_llm_backend(**OPTIONS)
    record = {"id": "img", "images": [image], "meta": "{}",
              "messages": [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "Describe the picture."}]}]}
    source = sft([record], tmp_path / "in", images=True)
    stage = ClaimsStrategy([Sampler(llm)], llm, ClaimsConfig(pairing="gap", pairs_per_prompt=5))
    result = build_preferences(source, tmp_path / "out", stage, show_progress=False)
    ds = load_from_disk(str(tmp_path / "out"))
    pairs = [(r["chosen"][0]["content"][0]["text"], r["rejected"][0]["content"][0]["text"]) for r in ds]
    # scores: 0, -1, -2, 0 (no claims): every pair at least one wrong claim apart, most apart first
    assert pairs == [(responses[0], responses[2]), (responses[3], responses[2]), (responses[0], responses[1]),
                     (responses[1], responses[2]), (responses[3], responses[1])]
    meta = json.loads(ds[0]["meta"])
    assert meta["ratings"] == {"chosen": 0.0, "rejected": -2.0}
    assert meta["wrong_claims"]["rejected"] == ["There is a green star.", "There is a yellow square."]
    assert meta["rationale"]["rejected"].startswith("2 of 2 claims judged wrong")
    assert result.report["requests"] == 1 + 4 + 6  # sampling, 4 splits, 6 claims
    for body in llm_server.requests:
        text = user_text(body)
        expected = 0 if "### Answer to split" in text else 1  # splitting is text work; answering looks at the image
        assert len(image_urls(body)) == expected, text[:80]
    assert result.report["dropped"] == {}


def test_claims_unreadable_answers_and_blind_judges(llm_server, make_llm_backend, tmp_path):
    responses = ["Paris is the capital.", "Lyon is the capital."]
    claims = {r: [(r, f"Is it true that {r.lower()}")] for r in responses}
    llm_server.script(Script({CAPITAL: responses}, claims=claims, answers={"Is it true that lyon is the capital.": "maybe"}))
    llm = make_llm_backend(**OPTIONS)
    stage = ClaimsStrategy([Sampler(llm)], llm, ClaimsConfig(n=2))
    assert list(stage.run([ask(CAPITAL, "q")])) == []
    assert stage.stats.dropped == {"unparseable_rating": 1}
    # text prompts: the answer prompt carries the conversation as its context
    answer_prompts = [user_text(b) for b in llm_server.requests if "yes/no question" in user_text(b) and "### Context" in user_text(b)]
    assert len(answer_prompts) == 2 and all(CAPITAL in t for t in answer_prompts)


# ---------------------------------------------------------------- hallucinate


def test_hallucinate_pairs_the_reference_with_an_injected_error(llm_server, make_llm_backend, tmp_path):
    rewrites = {
        "The circle is red.": {"rewritten": "The circle is blue.", "error_type": "attribute", "original": "red", "injected": "blue"},
        "There are two stars.": {"rewritten": "There are two stars.", "error_type": "count"},  # unchanged
        "A dog.": {"rewritten": "  "},
        "The cup is blue.": {"rewritten": "The red circle is to the right of the blue square."},  # an example, copied
        "Two.": {"rewritten": "<the answer with one injected error>"},
        "3": {"rewritten": "4", "error_type": "count", "original": "3", "injected": "4"},  # short, like an example: fine
    }
    llm_server.script(Script({}, rewrites=rewrites))
    llm = make_llm_backend(**OPTIONS)
    rows = [
        {"id": "h1", "messages": [{"role": "user", "content": "Colour?"}, {"role": "assistant", "content": "The circle is red."}]},
        {"id": "h2", "messages": [{"role": "user", "content": "Count?"}, {"role": "assistant", "content": "There are two stars."}]},
        {"id": "h3", "messages": [{"role": "user", "content": "What?"}, {"role": "assistant", "content": "A dog."}]},
        {"id": "h4", "messages": [{"role": "user", "content": "No answer yet"}]},
        {"id": "h5", "messages": [{"role": "user", "content": "Cup?"}, {"role": "assistant", "content": "The cup is blue."}]},
        {"id": "h6", "messages": [{"role": "user", "content": "How many?"}, {"role": "assistant", "content": "Two."}]},
        {"id": "h7", "messages": [{"role": "user", "content": "How many cats?"}, {"role": "assistant", "content": "3"}]},
    ]
    source = sft(rows, tmp_path / "in")
    result = build_preferences(source, tmp_path / "out", HallucinateStrategy(llm), show_progress=False)
    ds = load_from_disk(str(tmp_path / "out"))
    assert len(ds) == 2 and ds[1]["rejected"] == [{"role": "assistant", "content": "4"}]
    assert ds[0]["chosen"] == [{"role": "assistant", "content": "The circle is red."}]
    assert ds[0]["rejected"] == [{"role": "assistant", "content": "The circle is blue."}]
    meta = json.loads(ds[0]["meta"])
    assert meta["injected"] == {"type": "attribute", "stated_type": "attribute", "original": "red", "injected": "blue"}
    assert meta["models"] == {"chosen": "reference", "rejected": "test-model"} and meta["strategy"] == "hallucinate"
    assert result.report["dropped"] == {"identical": 1, "empty_rewrite": 1, "no_reference": 1, "copied_prompt": 2}
    assert result.report["requests"] == 6
    rejects = {r["id"]: (r["reason"], r["level"]) for r in read_jsonl(tmp_path / "out" / "rejects.jsonl")}
    assert rejects == {"h2": ("identical", "prompt"), "h3": ("empty_rewrite", "prompt"), "h4": ("no_reference", "prompt"),
                       "h5": ("copied_prompt", "prompt"), "h6": ("copied_prompt", "prompt")}
    # requests run concurrently: take h1's by its question, not by arrival order
    body = next(b for b in llm_server.requests if "### Question\nColour?" in user_text(b))
    prompt = user_text(body)
    assert "### Correct answer\nThe circle is red." in prompt and prompt.endswith("Reply with JSON only, as before.")
    assert "exactly one plausible but wrong detail" in body["messages"][0]["content"]  # the instructions, once
    # four solved examples, one per error type, go first as earlier turns (base models follow them)
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant"] * 4 + ["user"]
    examples = [json.loads(m["content"]) for m in body["messages"] if m["role"] == "assistant"]
    assert sorted(e["error_type"] for e in examples) == ["attribute", "count", "object", "relation"]
    assert "### Correct answer\nThe red circle is to the left of the blue square." in body["messages"][0]["content"]


def test_hallucinate_on_demo_images_gets_the_image_or_the_scene(llm_server, make_llm_backend, demo, tmp_path):
    def reply(body):
        reference = section(user_text(body), "Correct answer")
        return json.dumps({"rewritten": reference + " And a cat.", "error_type": "object", "original": "", "injected": "a cat"})

    llm_server.script(reply)
    vision = make_llm_backend(**OPTIONS)
    result = build_preferences(demo["shapes"], tmp_path / "v", HallucinateStrategy(vision), show_progress=False)
    assert result.pairs == result.report["prompts"] > 0
    assert all(len(image_urls(b)) == 1 for b in llm_server.requests)
    llm_server.requests.clear()
    blind = make_llm_backend(**OPTIONS, supports_images=False)
    result = build_preferences(demo["shapes"], tmp_path / "b", HallucinateStrategy(blind), show_progress=False)
    assert result.pairs == result.report["prompts"]
    assert all(not image_urls(b) and "Image description: The image shows" in user_text(b) for b in llm_server.requests)


# ---------------------------------------------------------------- CLI


def test_cli_judge_with_a_separate_judge_model(llm_server, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    llm_server.script(Script(PLANTED, truth=right))
    source = sft([ask(CAPITAL, "q1"), ask(SPIDER, "q2")], tmp_path / "in")
    result = run_cli("prefs", source, "-s", "judge", "-o", tmp_path / "out", "--base-url", llm_server.base_url,
                     "-m", "policy", "--judge-model", "critic", "--n", "4", "--temperature", "0.9",
                     "--cache-dir", tmp_path / "cache", "--max-length-ratio", "100")
    assert result.exit_code == 0, result.output
    assert "wrote 2 pairs (judge) from 2 prompts" in result.output
    models = {(b["model"], "### Answer to rate" in user_text(b)) for b in llm_server.requests}
    assert models == {("policy", False), ("critic", True)}
    assert all(b["temperature"] == 0.9 for b in llm_server.requests if b["model"] == "policy")
    usage = json.loads((tmp_path / "out" / "usage.json").read_text())
    assert [u["model"] for u in usage] == ["policy", "critic"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["models"]["judge"] == "critic" and report["config"]["n"] == 4

    bad = run_cli("prefs", source, "-s", "vote", "-o", tmp_path / "x")
    assert bad.exit_code == 1 and "unknown strategy 'vote'" in bad.output
    bad = run_cli("prefs", source, "-s", "hallucinate", "-o", tmp_path / "x", "--base-url", llm_server.base_url, "-m", "a", "-m", "b")
    assert bad.exit_code == 1 and "one model" in bad.output


# ---------------------------------------------------------------- prompts


def test_rendered_prompts_for_an_image_prompt_and_a_text_only_model(make_llm_backend):
    from synth.prefs.items import items_from_record
    from synth.prefs.sampling import prompt_messages
    from synth.prefs.scene import Scene

    blind = make_llm_backend(**OPTIONS, supports_images=False)
    record = {"id": "q", "meta": {}, "images": [{"bytes": b"\x89PNG", "path": None}],
              "messages": [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "What color is the star?"}]}]}
    (item,) = items_from_record(record)
    item.scene = Scene(caption="A red star.", objects=[{"label": "red star", "box": [0.1, 0.2, 0.3, 0.4]}])
    messages, images = prompt_messages(item, blind)
    assert images == [] and messages[0].content == (
        "[Image, described in text: A red star. Objects (normalised [x0, y0, x1, y1] boxes, 0 = left/top, "
        "1 = right/bottom): red star [0.10, 0.20, 0.30, 0.40].]\nWhat color is the star?"
    )
    request = PairwiseStrategy([Sampler(blind)], blind).compare_request(item, "Red.", "Blue.", "k")
    assert request.images == [] and request.messages[0].content == (
        "You are an impartial judge comparing two answers given by AI assistants to the same conversation about an "
        "image. Decide which answer is better: more helpful, more faithful to the image (no objects, colours, counts, "
        "positions or text that the image does not show), and more honest. Do not let the order of the answers, their "
        'length or their style decide; if they are equally good, say "tie".\n\n'
        "You cannot see the image, so it is described in text below; treat the description as what the image shows.\n"
        "Image description: A red star.\n"
        "Objects, with boxes as normalised [x0, y0, x1, y1] coordinates (0 = left/top, 1 = right/bottom):\n"
        "- red star: [0.10, 0.20, 0.30, 0.40]\n\n"
        "### Conversation\n[image] What color is the star?\n\n### Answer A\nRed.\n\n### Answer B\nBlue.\n\n"
        'Reply with JSON only: {"winner": "A" or "B" or "tie", "rationale": "<one or two sentences>"}'
    )
    vision = make_llm_backend(**OPTIONS)
    request = ClaimsStrategy([Sampler(vision)], vision).answer_request(item, "Is the star red?", "k")
    assert [p.type for p in request.messages[0].content] == ["image", "text"] and len(request.images) == 1
    assert request.messages[0].content[1].text == (
        'Answer the yes/no question about the image truthfully. Say "yes" only if the image clearly shows it; '
        'otherwise say "no".\n\nThe conversation refers to the attached image. Judge against what the image shows.\n\n'
        '### Question\nIs the star red?\n\nReply with JSON only: {"answer": "yes" or "no"}'
    )
