"""LLM-judge filter through the loopback OpenAI-compatible test server (a fixture, never a model):
exact prompt, structured output, scores in meta, threshold, and broken replies as failures (not drops)."""

from __future__ import annotations

import json

from synth.clean.judge import JudgeFilter, JudgeScore
from synth.clean.registry import build_filter
from synth.data import RecordLog
from synth.llm.base import Completion
from synth.pipeline import Failed, Rejected, run_stages

EXPECTED_PROMPT = """You are a strict reviewer of training data for an AI assistant. Rate the QUALITY of the assistant's answer to the instruction below on a scale from 1 to 10.

Rubric:
- 9-10: correct, complete, directly answers the instruction, clear and well organised.
- 7-8: correct and helpful, with minor omissions or style problems.
- 5-6: partly correct or partly off-topic; useful but needs work.
- 3-4: mostly wrong, vague, or ignores important parts of the instruction.
- 1-2: wrong, empty, a refusal, nonsense, or unrelated to the instruction.

### Instruction
What is 2+2?

### Answer
4

Reply with JSON only: {"score": <integer 1-10>, "reason": "<one sentence>"}"""


def sft(rid: str, user: str, answer: str, meta: dict | None = None) -> dict:
    return {"id": rid, "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}], "meta": meta or {}}


def judge_replies(body: dict):
    """Scripted judge: the score depends on a marker in the judged sample's text."""
    texts = []
    for message in body["messages"]:  # a re-ask repeats the conversation: look at every turn
        content = message["content"]
        texts.append(content if isinstance(content, str) else " ".join(p.get("text", "") for p in content if p.get("type") == "text"))
    text = " ".join(texts)
    if "GOOD" in text:
        return json.dumps({"score": 8, "reason": "correct and clear"})
    if "OKAY" in text:
        return 'Here is my rating:\n```json\n{"score": 6, "reason": "acceptable",}\n```'  # noisy but repairable
    if "BAD" in text:
        return json.dumps({"score": 2, "reason": "wrong answer"})
    if "RANGE" in text:
        return json.dumps({"score": 11, "reason": "too enthusiastic"})
    return "I think this is fine."  # not JSON at all


def test_exact_prompt_and_request(llm_server, llm_backend):
    stage = JudgeFilter(llm_backend)
    record = sft("r1", "What is 2+2?", "4")
    assert stage.prompt(record) == EXPECTED_PROMPT
    request = stage.format_input(record)
    assert request.schema_model is JudgeScore and request.temperature == 0.0 and request.key == "r1"
    assert request.messages[0].content == EXPECTED_PROMPT


def test_scores_threshold_and_failures_through_the_server(llm_server, make_llm_backend, tmp_path):
    llm_server.script(judge_replies)
    backend = make_llm_backend(max_reask=1)
    stage = build_filter("judge", {"threshold": 6}, backend_factory=lambda: backend)
    records = [
        sft("good", "Capital of France? GOOD", "Paris.", meta={"source": "web", "scores": {"clip": 0.3}}),
        sft("okay", "Capital of Italy? OKAY", "Rome."),
        sft("bad", "Capital of Spain? BAD", "Lisbon."),
        sft("range", "Capital of Peru? RANGE", "Lima."),
        sft("broken", "Capital of Chile?", "Santiago."),
    ]
    rejects, failures = tmp_path / "rejects.jsonl", tmp_path / "failures.jsonl"
    with RecordLog(rejects) as reject_log, RecordLog(failures) as failure_log:
        kept = {r["id"]: r for r in run_stages([stage], records, reject_log, failure_log)}
    assert list(kept) == ["good", "okay"]
    assert kept["good"]["meta"] == {
        "source": "web", "scores": {"clip": 0.3, "quality": 8}, "score_reasons": {"quality": "correct and clear"}
    }
    assert kept["okay"]["meta"]["scores"] == {"quality": 6}
    lines = {json.loads(line)["id"]: json.loads(line) for line in rejects.read_text().splitlines()}
    assert list(lines) == ["bad"]
    assert lines["bad"]["reason"] == "low_score" and lines["bad"]["detail"] == "quality=2 < 6: wrong answer"
    # Out-of-range and non-JSON replies are re-asked once, then failures (retried next run), never drops.
    failed = {json.loads(line)["id"]: json.loads(line) for line in failures.read_text().splitlines()}
    assert set(failed) == {"range", "broken"}
    assert failed["range"]["reason"] == "unparseable" and "score" in failed["range"]["detail"]
    assert failed["broken"]["reason"] == "unparseable" and failed["broken"]["stage"] == "judge"
    assert stage.stats.as_dict() == {"seen": 5, "kept": 2, "dropped": {"low_score": 1}, "failed": {"unparseable": 2}}
    # The structured-output schema reached the server, and the bad replies were re-asked once each.
    first = llm_server.requests[0]
    assert first["response_format"]["type"] == "json_schema"
    assert llm_server.request_count == 5 + 2


def test_server_faults_are_retried_not_lost(llm_server, llm_backend):
    llm_server.script(judge_replies)
    llm_server.fault("500", first=2)
    stage = JudgeFilter(llm_backend, threshold=5)
    kept = list(stage.run([sft("a", "Q GOOD", "A"), sft("b", "Q BAD", "A")]))
    assert [r["id"] for r in kept] == ["a"]
    assert stage.stats.dropped == {"low_score": 1}


def test_format_output_on_clean_noisy_empty_and_broken_text(llm_backend):
    stage = JudgeFilter(llm_backend, aspect="difficulty", threshold=7)
    record = sft("r", "Prove Fermat's last theorem.", "...")
    high = stage.format_output(record, Completion(texts=['{"score": 9, "reason": "hard"}']))
    assert high["meta"]["scores"] == {"difficulty": 9}
    noisy = stage.format_output(record, Completion(texts=["Sure! {'score': 7, 'reason': 'tricky'}"]))
    assert noisy["meta"]["score_reasons"] == {"difficulty": "tricky"}
    low = stage.format_output(record, Completion(texts=['{"score": 3}']))
    assert low == Rejected("low_score", "difficulty=3 < 7: ")
    zero = stage.format_output(record, Completion(texts=['{"score": 0, "reason": "empty"}']))
    assert zero == Rejected("low_score", "difficulty=0 < 7: empty")  # 0 is on the scale
    half = stage.format_output(record, Completion(texts=['{"score": 7.5, "reason": "x"}']))
    assert half["meta"]["scores"] == {"difficulty": 7.5}
    for text in ["", "no idea", '{"score": "high"}', '{"score": 11}', '{"score": -1}']:
        verdict = stage.format_output(record, Completion(texts=[text]))
        assert isinstance(verdict, Failed) and verdict.reason == "unparseable", text
    parsed = stage.format_output(record, Completion(texts=["ignored"], parsed=[JudgeScore(score=8, reason="p")]))
    assert parsed["meta"]["scores"] == {"difficulty": 8}


def test_custom_rubric_template_file(tmp_path, llm_backend):
    template = tmp_path / "rubric.jinja"
    template.write_text("Rate {{ instruction }} => {{ answer }} ({{ image_count }} images)")
    stage = JudgeFilter(llm_backend, template=str(template))
    assert stage.prompt(sft("r", "Q", "A")) == "Rate Q => A (0 images)"


def test_images_are_attached_when_the_backend_takes_them(llm_server, make_llm_backend):
    import io

    from PIL import Image

    from synth.llm.testing import image_urls

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (0, 0, 255)).save(buf, format="PNG")
    record = {
        "id": "img",
        "messages": [
            {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "What colour? GOOD"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Blue."}]},
        ],
        "images": [{"bytes": buf.getvalue(), "path": None}],
    }
    llm_server.script(judge_replies)
    stage = JudgeFilter(make_llm_backend(supports_images=True))
    assert "refers to 1 image(s), attached" in stage.prompt(record)
    assert [r["id"] for r in stage.run([record])] == ["img"]
    assert len(image_urls(llm_server.requests[0])) == 1
    # A text-only backend gets the prompt alone, told that it cannot see the image.
    text_only = JudgeFilter(make_llm_backend(supports_images=False))
    assert "that you cannot see" in text_only.prompt(record)
    assert text_only.format_input(record).images == []
