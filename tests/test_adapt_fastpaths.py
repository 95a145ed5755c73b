"""The adaptation hot paths write by hand what the general code computes: they must agree byte for byte."""

from __future__ import annotations

import hashlib
import json
import random
import threading

import pytest

from synth.adapt import load_template_set
from synth.adapt.engine import Renderer
from synth.adapt.template_set import is_plain_text
from synth.errors import SynthError
from synth.records import ImagePart, Message, TextPart, content_id, dump_meta
from synth.templating import compile_template, environment, fast_renderer, render

# Characters JSON escapes (or may be tempted to): quotes, backslashes, controls, non-ASCII, line separators.
TRICKY = ["a", " ", '"', "\\", "\n", "\t", "\x00", "\x1f", "\x7f", "é", "☃", "😀", "\u2028", "/", "<"]


def reference_id(messages: list[dict]) -> str:
    """The documented id: sha256 of the sorted-key JSON of the messages as text/image parts."""
    plain = []
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        else:
            parts = [
                {"type": "text", "text": p["text"] or ""} if p["type"] == "text" else {"type": "image"}
                for p in content
            ]
        plain.append({"role": m["role"], "content": parts})
    text = json.dumps(plain, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_content_id_fast_path_matches_json_dumps_form():
    rng = random.Random(7)

    def text():
        return "".join(rng.choice(TRICKY) for _ in range(rng.randint(0, 10)))

    for _ in range(2000):
        messages = []
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.5:
                content = text()
            else:
                content = [
                    {"type": "text", "text": rng.choice([text(), None])}
                    if rng.random() < 0.6
                    else {"type": "image", "text": None}
                    for _ in range(rng.randint(0, 3))
                ]
            messages.append({"role": rng.choice(["system", "user", "assistant"]), "content": content})
        assert content_id(messages) == reference_id(messages)
    # pydantic messages hash like their dict form
    model = [Message(role="user", content=[ImagePart(), TextPart(text='say "hi"\n')])]
    assert content_id(model) == reference_id(
        [
            {
                "role": "user",
                "content": [{"type": "image", "text": None}, {"type": "text", "text": 'say "hi"\n'}],
            }
        ]
    )


def test_content_id_with_precomputed_image_digests_is_the_same_id():
    from synth.records import image_hash

    messages = [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "q"}]}]
    images = [b"\x89PNG fake one", b"two"]
    assert content_id(messages, images) == content_id(messages, image_digests=[image_hash(i) for i in images])
    assert content_id(messages, images) != content_id(messages, images[:1])


def test_meta_json_matches_dump_meta():
    renderer = Renderer(load_template_set("vqa_conversation"), seed=0, source_name='data "x"\\é')
    base = {"source": renderer.source_name, "source_id": "r\n1", "template": "t", "task": "k"}
    for extra in ({"variant": 3}, {"variant": 0, "item": 12}, {"variants": [1, 0, 4], "items": [0, 2, 5]}):
        meta = {**base, **extra, "template": renderer.ts.name, "task": renderer.ts.task}
        assert renderer.meta_json(meta) == dump_meta(meta)


def test_fast_renderer_reuses_contexts_without_leaking_state():
    cases = [
        # a top-level {% set %} must not leak into the next render
        (
            "{% if flag %}{% set x = 'set' %}{% endif %}{{ x }}",
            [{"flag": True, "x": "p"}, {"flag": False, "x": "p"}],
        ),
        # an error inside an autoescape block must not leave autoescape on for the next render
        (
            "{% autoescape true %}{{ h }}{{ boom }}{% endautoescape %}|{{ h }}",
            [{"h": "<b>"}, {"h": "<i>", "boom": 1}],
        ),
        ("{% block b %}B{{ v }}{% endblock %}", [{"v": 1}, {"v": 2}]),
        ("{{ y }}", [{"y": 1}, {}, {"y": 3}]),
    ]
    for source, runs in cases:
        template = compile_template(source, "t")
        fast = fast_renderer(template, "t")
        for variables in runs * 2:
            try:
                expected = render(template, variables, "t", "r")
            except SynthError as e:
                expected = str(e)
            try:
                got = fast(variables, "r")
            except SynthError as e:
                got = str(e)
            assert got == expected, (source, variables)

    base = environment().from_string("A{% block x %}base{% endblock %}Z")
    child = environment().from_string("{% extends base %}{% block x %}c-{{ super() }}-{{ v }}{% endblock %}")
    fast = fast_renderer(child, "child")
    assert [fast({"base": base, "v": v}) for v in (1, 2)] == ["Ac-base-1Z", "Ac-base-2Z"]


def test_fast_renderer_nested_and_threaded_calls_get_their_own_context():
    fast = fast_renderer(compile_template("{{ g(v) }}", "n"), "n")
    assert fast({"v": 1, "g": lambda x: fast({"v": x + 1, "g": str})}) == "2"
    wrong = []

    def work():
        for i in range(500):
            if fast({"v": i, "g": str}) != str(i):
                wrong.append(i)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong


@pytest.mark.parametrize(
    "source, plain",
    [
        ("Answer briefly.", True),
        ("two\n{# note #}\nlines", True),
        ("{% raw %}{{ x }}{% endraw %}", True),
        ("{{ x }}", False),
        ('{{ "a" }}', False),
        ("{{ [1, 2] | random }}", False),
        ("a{% if 1 %}b{% endif %}", False),
    ],
)
def test_plain_text_detection(source, plain):
    assert is_plain_text(environment().parse(source)) is plain
