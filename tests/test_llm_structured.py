"""Structured output: repair of near-JSON, validation, re-ask through the real test server."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from synth.llm.base import ChatRequest
from synth.llm.structured import json_values, parse_structured, reask_messages, response_format
from synth.records import Message


class Answer(BaseModel):
    answer: str
    score: int


@pytest.mark.parametrize("text", [
    '{"answer": "yes", "score": 3}',
    '```json\n{"answer": "yes", "score": 3}\n```',
    'Sure! Here is the JSON:\n{"answer": "yes", "score": 3}\nHope this helps.',
    '{"answer": "yes", "score": 3,}',
    '{\u201canswer\u201d: \u201cyes\u201d, \u201cscore\u201d: 3}',
    "{'answer': 'yes', 'score': 3}",
    '```\n{"answer": "yes",\n "score": 3,\n}\n```',
    '{"answer": "yes" "score": 3}',  # missing comma
    "{'answer': 'yes', 'score': 3, 'extra': None, 'flag': True}",  # Python literals
    '{"answer": "yes", "score": 3',  # cut off at max_tokens: the object is closed
    '```json\n{"answer": "yes", "score": 3',  # cut off inside an unclosed code fence
    'Use {braces} like this:\n```json\n{"answer": "yes", "score": 3}\n```',  # braces in the prose
    '```python\nprint(1)\n```\nThe answer: {"answer": "yes", "score": 3}',  # the fence holds code
    'Example: {"note": "x"}\nAnswer: {"answer": "yes", "score": 3}',  # the valid one of several objects
])
def test_repairs_near_json(text):
    value, error = parse_structured(text, Answer)
    assert error is None and value == Answer(answer="yes", score=3)


def test_repair_keeps_commas_and_braces_inside_strings():
    value, error = parse_structured('{"answer": "a, b,}", "score": 1,}', Answer)
    assert error is None and value.answer == "a, b,}"


@pytest.mark.parametrize("text, reason", [
    ('{"answer": "yes", "sco', "score: Field required"),  # cut off before the field: re-ask
    ('{"answer": "yes"}', "score"),
    ('{"answer": "yes", "score": "high"}', "score"),
    ("", "empty reply"),
    ("   \n", "empty reply"),
    ("no json at all", "not valid JSON"),
    ("I'm sorry, I can't rate this.", "not valid JSON"),
    ("42", "does not match the schema"),
])
def test_unrepairable_replies_give_a_reason(text, reason):
    value, error = parse_structured(text, Answer)
    assert value is None and reason in error


class Summary(BaseModel):
    title: str
    points: list[str]


def test_json_cut_at_max_tokens_is_closed():
    # The open string, list and object are closed; the caller still sees finish_reason "length".
    value, error = parse_structured('{"title": "Rivers", "points": ["long", "wet", "flo', Summary)
    assert error is None and value == Summary(title="Rivers", points=["long", "wet", "flo"])
    value, error = parse_structured('{"items": [1, 2, {"a": "x', dict)
    assert error is None and value == {"items": [1, 2, {"a": "x"}]}


def test_python_style_repair_leaves_string_contents_alone():
    value, error = parse_structured("{'answer': 'a true story, not null', 'score': 2, 'extra': null}", Answer)
    assert error is None and value.answer == "a true story, not null"


def test_list_schema_and_values():
    value, error = parse_structured("Result: [1, 2, 3,]", list[int])
    assert error is None and value == [1, 2, 3]
    assert json_values('x {"a": 1} y') == [{"a": 1}]
    assert json_values('{"a": 1}') == [{"a": 1}]  # strict JSON: no repair
    assert json_values("just words") == [] and json_values("") == []


def test_response_format_carries_the_schema():
    fmt = response_format(Answer)
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Answer"
    assert set(fmt["json_schema"]["schema"]["properties"]) == {"answer", "score"}


def test_reask_prompt_comes_from_the_template():
    messages = reask_messages([Message(role="user", content="rate it")], "{oops", "reply is not valid JSON", Answer)
    assert [m.role for m in messages] == ["user", "assistant", "user"]
    assert messages[1].content == "{oops"
    assert messages[2].content.startswith("Your previous reply could not be used: reply is not valid JSON")
    assert '"score"' in messages[2].content


def ask(text: str, **kw) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], key=text, schema_model=Answer, **kw)


def test_schema_sent_and_reply_validated(llm_server, llm_backend):
    llm_server.script('Here you go: ```json\n{"answer": "ok", "score": 2,}\n```')
    out = llm_backend.complete([ask("rate")])
    assert out[0].ok and out[0].parsed == [Answer(answer="ok", score=2)]
    assert llm_server.requests[0]["response_format"]["type"] == "json_schema"
    assert llm_server.request_count == 1


def test_reask_then_success(llm_server, llm_backend):
    llm_server.script({"rate": ['{"answer": "ok"}', '{"answer": "ok", "score": 5}']})
    out = llm_backend.complete([ask("rate this")])
    assert out[0].ok and out[0].parsed[0].score == 5 and out[0].text == '{"answer": "ok", "score": 5}'
    assert llm_server.request_count == 2
    reask = llm_server.requests[1]["messages"]
    assert reask[1] == {"role": "assistant", "content": '{"answer": "ok"}'}
    assert "score" in reask[2]["content"] and "Field required" in reask[2]["content"]


def test_broken_json_fault_then_reask(llm_server, llm_backend):
    llm_server.script('{"answer": "fine", "score": 1}')
    llm_server.fault("broken_json", first=1)
    out = llm_backend.complete([ask("rate")])
    assert out[0].ok and out[0].parsed[0].answer == "fine"
    assert llm_server.request_count == 2


def test_reask_exhausted_is_a_recorded_failure(llm_server, make_llm_backend):
    backend = make_llm_backend(max_reask=2)
    llm_server.script({"bad": "not json, sorry", "good": '{"answer": "a", "score": 1}'})
    out = backend.complete([ask("good one"), ask("bad one")])
    assert out[0].ok
    assert not out[1].ok and "invalid structured output" in out[1].error and "2 re-asks" in out[1].error
    assert out[1].texts == ["not json, sorry"] and out[1].parsed == [None]
    assert llm_server.request_count == 1 + 3
    assert backend.usage.failures == 1


def test_n_samples_each_validated(llm_server, llm_backend):
    llm_server.script(lambda body: ['{"answer": "x", "score": 1}', '{"answer": "y", "score": 2}']
                      if len(body["messages"]) == 1 else '{"answer": "z", "score": 3}')
    out = llm_backend.complete([ask("pick", n=2)])
    assert out[0].ok and [p.answer for p in out[0].parsed] == ["x", "y"]


def test_server_without_structured_output_falls_back_to_local_validation(llm_server_factory, make_llm_backend):
    server = llm_server_factory(reject_response_format=True)
    server.script('{"answer": "ok", "score": 1}')
    backend = make_llm_backend(base_urls=[server.base_url], concurrency=1)
    out = backend.complete([ask("a"), ask("b")])
    assert all(c.ok for c in out)
    assert "response_format" in server.requests[0]
    # After the first rejection the backend stops sending response_format.
    assert sum("response_format" in b for b in server.requests) == 1
    assert server.request_count == 3
