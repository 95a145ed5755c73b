"""MMEvol through the loopback OpenAI-compatible test server (a fixture, not a model): MMEvol's prompt
scaffold and demos (golden files), a whole image's items per request and per judge call, per-item verdicts
(a bad score eliminates only its item), box formats, interaction forms, per-round data statistics, lineage.

Regenerate the golden prompts after an intended template change (then review the diff):

    SYNTH_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_mmevol.py -k golden
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from synth.boxes import read_objects
from synth.data import ImageError, decode_image
from synth.data.writer import RecordLog
from synth.generate.evolution.mmevol import (
    DEFAULT_OPERATORS,
    FORMS,
    INTERACTION_FORMS,
    NO_ITEM_KEPT,
    EvolvedItem,
    MMEvol,
    demos_text,
    normalise_objects,
)
from synth.llm.base import Completion
from synth.llm.testing import image_urls
from synth.pipeline import Failed, Rejected, run_stages

GOLDEN = Path(__file__).parent / "golden" / "mmevol"
UPDATE = os.environ.get("SYNTH_UPDATE_GOLDEN", "") not in ("", "0")
COLOURS = {"ALPHA": "red", "BRAVO": "blue", "CHARLIE": "green"}


def scene(name: str, colour: str, size: int = 64) -> dict:
    """A tiny drawn scene: a coloured circle and a black square, with caption, boxes and two QA items."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse([6, 12, 32, 38], fill=colour)
    draw.rectangle([40, 6, 52, 18], fill="black")
    return {
        "id": f"scene-{name.lower()}",
        "image": image,
        "caption": f"Scene {name}: a large {colour} circle and a small black square.",
        "objects": [
            {"label": f"{colour} circle", "box": [0.1, 0.2, 0.5, 0.6]},
            {"label": "black square", "box": [0.625, 0.094, 0.812, 0.281]},
        ],
        "qa": [
            {"question": f"What colour is the circle in scene {name}?", "answer": colour},
            {"question": f"How many squares are in scene {name}?", "answer": "1"},
        ],
    }


SCENES = [scene(name, colour) for name, colour in COLOURS.items()]


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing: run with SYNTH_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), f"prompt differs from {path}"


def item(question="How many shapes are darker than the circle? Let's think step by step.", answer="1", steps=None, **extra):
    steps = steps if steps is not None else [
        {"manipulation": "grounding_1(the circle)->bbx_1", "description": "Find the circle."},
        {"manipulation": "None", "description": "Only the black square is darker."},
    ]
    return {"image_position": "single", "objects": ["black square"], "skills": ["Grounding", "Calculating"],
            "format": "complex reasoning", "question": question, "steps": steps, "answer": answer, **extra}


# ---------------------------------------------------------------- MMEvol's scaffold (golden prompts, no backend)


@pytest.mark.parametrize(
    "case, operator, options",
    [
        ("perception", "perception", {}),
        ("reasoning", "reasoning", {}),
        ("interaction", "interaction", {}),
        ("interaction_drawn", "interaction", {"form_choice": "drawn", "interaction_forms": {"fill_in_the_blank": 1.0}}),
        ("reasoning_no_demos_image", "reasoning", {"demos": False, "image_input": "image"}),
    ],
)
def test_golden_evolve_prompts(case, operator, options):
    stage = MMEvol(None, **options)
    seed = stage.seed_version(SCENES[0])
    request = stage.format_evolve_input(seed, operator, 1)
    if stage.show_image:
        image_part, text_part = request.messages[0].content
        assert image_part.type == "image" and request.images == [seed.seed["image"]]
        text = text_part.text
    else:
        text, = [request.messages[0].content]
        assert request.images == []
    assert request.schema_model.__name__ == "EvolvedItems"
    check_golden(case, text)
    # The whole list of the image's items goes in one request.
    assert all(qa["question"] in text for qa in SCENES[0]["qa"])
    if options.get("demos", True):
        assert (demos_text(operator) if case != "interaction_drawn" else '"format": "fill_in_the_blank"') in text


def test_golden_judge_prompts_text_and_image():
    stage = MMEvol(None)
    seed = stage.seed_version(SCENES[0])
    candidate = stage.child(seed, "reasoning", 1, {"items": [item(), item("Is the square above the circle? Let's think step by step.", "yes")]})
    request = stage.format_judge_input([("1", seed, candidate)])
    check_golden("judge_text", request.messages[0].content)
    assert request.images == [] and request.schema_model.__name__ == "ImageJudgeReply"

    image_stage = MMEvol(None, image_input="image")
    request = image_stage.format_judge_input([("1", seed, candidate)])
    parts = request.messages[0].content
    assert [p.type for p in parts] == ["text", "image", "text"] and request.images == [seed.seed["image"]]
    check_golden("judge_image", parts[0].text + "<<image>>" + parts[2].text)


def test_demos_are_valid_items_and_cover_every_form():
    for operator in ("perception", "reasoning", "interaction"):
        demos = json.loads(demos_text(operator))
        assert demos and all(isinstance(EvolvedItem.model_validate(d), EvolvedItem) for d in demos)
        assert all(d["steps"] and all("manipulation" in s and "description" in s for s in d["steps"]) for d in demos)
    forms = [d["format"] for d in json.loads(demos_text("interaction"))]
    assert sorted(forms) == sorted(INTERACTION_FORMS) and len(FORMS) == 17
    # Reasoning demos end with a step-by-step cue, as the prompt asks.
    assert all("step by step" in d["question"].lower() for d in json.loads(demos_text("reasoning")))


def test_operator_odds_default_to_mmevols():
    stage = MMEvol(None)
    assert stage.config.operators == DEFAULT_OPERATORS == {"perception": 0.5, "reasoning": 0.25, "interaction": 0.25}
    seeds = [stage.seed_version({**SCENES[0], "id": f"s{i}"}) for i in range(2000)]
    counts = Counter(stage.choose_operator(v, 1) for v in seeds)
    assert 0.46 < counts["perception"] / 2000 < 0.54
    assert 0.21 < counts["reasoning"] / 2000 < 0.29 and 0.21 < counts["interaction"] / 2000 < 0.29


# ---------------------------------------------------------------- parsing and per-item rules


def parse(stage, seed, text, operator="reasoning"):
    return stage.parse_evolve_output(seed, operator, 1, Completion(texts=[text]))


def test_reply_shapes_clean_bare_list_single_item_noisy_and_broken():
    stage = MMEvol(None)
    seed = stage.seed_version(SCENES[0])
    clean = parse(stage, seed, json.dumps({"items": [item(), item("Is the square above the circle? Think step by step.", "yes")]}))
    assert [i["question"][:8] for i in clean.fields["items"]] == ["How many", "Is the s"]
    assert clean.fields["items"][0]["steps"][0] == {"manipulation": "grounding_1(the circle)->bbx_1", "description": "Find the circle."}
    assert clean.fields["items"][0]["steps"][1]["manipulation"] is None  # "None" means no manipulation
    bare = parse(stage, seed, json.dumps([item()]))
    assert len(bare.fields["items"]) == 1
    single = parse(stage, seed, json.dumps({"question": "How many squares?", "answer": 1, "steps": ["One square.", "So 1."]}))
    assert single.fields["items"][0]["answer"] == "1"
    assert single.fields["items"][0]["steps"] == [{"manipulation": None, "description": "One square."},
                                                  {"manipulation": None, "description": "So 1."}]
    noisy = 'Sure!\n```json\n{"items": [{"question": "How many squares?", "answer": 1, "steps": [“One.”, "So 1.",],},]}\n```'
    assert parse(stage, seed, noisy).fields["items"][0]["answer"] == "1"
    garbage = parse(stage, seed, "The circle is red, so one.")
    assert isinstance(garbage, Failed) and garbage.reason == "unparseable"  # retried next run
    assert parse(stage, seed, "").reason == "empty_reply"
    assert parse(stage, seed, json.dumps({"items": []})).reason == "no_items"


def test_a_malformed_item_or_a_rule_eliminates_only_that_item(tmp_path):
    stage = MMEvol(None)
    stage.rejects = RecordLog(tmp_path / "rejects.jsonl")
    seed = stage.seed_version(SCENES[0])
    reply = {"items": [
        item(),                                                           # kept
        {"question": "Where?"},                                            # no answer: invalid_item
        item("What colour is the circle in scene ALPHA?"),                # unchanged
        item("According to the caption, what is red? Step by step."),     # prompt_leak
        item(answer="I'm sorry, I cannot see images."),                   # answer_refusal (and a duplicate question)
        item("Which shape is larger? Let's think step by step.", steps=[{"manipulation": None, "description": "Look."}]),
    ]}
    candidate = parse(stage, seed, json.dumps(reply))
    assert isinstance(candidate, type(seed)) and len(candidate.fields["items"]) == 5
    assert stage.check_candidate(seed, candidate) is None
    assert [i["question"] for i in candidate.fields["items"]] == [item()["question"]]
    stage.rejects.close()
    lines = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [(r["reason"], r["item"]) for r in lines] == [
        ("invalid_item", 2), ("unchanged", 3), ("prompt_leak", 4), ("duplicate_item", 5), ("missing_steps", 6)
    ]
    assert all(r["round"] == 1 and r["operator"] == "reasoning" and r["id"] == seed.id for r in lines)
    # Nothing left: the candidate goes, without a line of its own (each item has one).
    lone = parse(stage, seed, json.dumps([item("What colour is the circle in scene ALPHA?")]))
    assert stage.check_candidate(seed, lone).reason == NO_ITEM_KEPT


# ---------------------------------------------------------------- interaction forms


def test_interaction_form_chosen_by_the_model_is_recorded_canonically():
    stage = MMEvol(None)
    seed = stage.seed_version(SCENES[0])
    reply = [item("Is the circle red? A) yes B) no", "A", format="Multi-choice"), item("Fill in: the square is ____.", "black", format="fill in the blank"),
             item("Which box holds the circle? A) [0.1, 0.2, 0.5, 0.6] B) [0.6, 0.1, 0.8, 0.3]", "A", format="")]
    candidate = parse(stage, seed, json.dumps(reply), "interaction")
    assert [i["format"] for i in candidate.fields["items"]] == ["multi_choice", "fill_in_the_blank", "multi_choice"]
    # All 17 forms are offered; region forms only where the image has boxes.
    text = stage.render_evolve_prompt(seed, "interaction", 1)
    assert all(f"{name}: " in text for name in INTERACTION_FORMS)
    no_boxes = stage.seed_version({**SCENES[0], "objects": []})
    assert "region_selection" not in stage.render_evolve_prompt(no_boxes, "interaction", 1).split("## Examples")[0]


def test_drawn_forms_follow_weights_and_skip_region_forms_without_boxes():
    stage = MMEvol(None, seed=1, form_choice="drawn", interaction_forms={"multiple_choice": 1.0, "region_selection": 1.0, "depth_order": 2.0})
    assert stage.config.interaction_forms == {"multi_choice": 1.0, "region_selection": 1.0, "depth_order": 2.0}  # alias
    forms = Counter(stage.choose_form(stage.seed_version({**SCENES[0], "id": f"s{i}"}), 1) for i in range(400))
    assert set(forms) == {"multi_choice", "region_selection", "depth_order"} and forms["depth_order"] > forms["multi_choice"]
    no_boxes = {stage.choose_form(stage.seed_version({**SCENES[0], "objects": [], "id": f"s{i}"}), 1) for i in range(100)}
    assert no_boxes == {"multi_choice", "depth_order"}
    seed = stage.seed_version(SCENES[0])
    candidate = parse(stage, seed, json.dumps([item(format="whatever")]), "interaction")
    assert candidate.fields["items"][0]["format"] == stage.choose_form(seed, 1)
    with pytest.raises(ValueError, match="unknown interaction form"):
        MMEvol(None, interaction_forms={"true_or_not": 1.0})


# ---------------------------------------------------------------- seeds and boxes


def test_seeds_keep_the_whole_item_list_from_demo_columns_sft_turns_and_mapping():
    stage = MMEvol(None)
    seed = stage.seed_version(SCENES[1])
    assert seed.id == seed.root_id == "scene-bravo"
    assert [i["question"] for i in seed.fields["items"]] == [qa["question"] for qa in SCENES[1]["qa"]]
    assert seed.seed["objects"][0] == {"label": "blue circle", "box": [0.1, 0.2, 0.5, 0.6]}
    assert len(MMEvol(None, max_items=1).seed_version(SCENES[1]).fields["items"]) == 1

    sft = {
        "images": [SCENES[0]["image"]],
        "messages": [
            {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "What is shown?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A red circle."}]},
            {"role": "user", "content": [{"type": "text", "text": "Where is it?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "On the left."}]},
        ],
        "description": "A red circle.",
    }
    from_sft = MMEvol(None).seed_version(sft)
    assert [(i["question"], i["answer"]) for i in from_sft.fields["items"]] == [("What is shown?", "A red circle."), ("Where is it?", "On the left.")]
    assert from_sft.seed["caption"] == "A red circle." and len(from_sft.id) == 16

    mapped = MMEvol(None, image_column="pic", caption_column="text", question_column="q", answer_column="a")
    version = mapped.seed_version({"pic": SCENES[0]["image"], "text": "Two shapes.", "q": "How many shapes?", "a": "2"})
    assert (version.seed["caption"], version.fields["items"][0]["question"]) == ("Two shapes.", "How many shapes?")
    arrow = {**SCENES[0], "qa": {"question": ["Q1?", "Q2?"], "answer": ["a1", "a2"]}}  # Arrow's list of structs
    assert [i["question"] for i in MMEvol(None).seed_version(arrow).fields["items"]] == ["Q1?", "Q2?"]
    no_qa = MMEvol(None).seed_version({**SCENES[0], "qa": []})
    assert no_qa.fields["items"] == [] and "write 3 new items" in MMEvol(None).render_evolve_prompt(no_qa, "perception", 1)

    assert MMEvol(None).seed_version({"caption": "no image"}).reason == "missing_image"
    with pytest.raises(ImageError, match="unreadable or corrupt image"):  # the run stops, naming the record
        MMEvol(None).seed_version({"id": "bad-1", "image": b"not a png", "caption": "x"})
    assert MMEvol(None).seed_version({"image": SCENES[0]["image"]}).reason == "no_image_description"
    assert not isinstance(MMEvol(None, image_input="image").seed_version({"image": SCENES[0]["image"]}), Rejected)


def test_coco_xywh_pixel_boxes_are_converted_and_malformed_boxes_counted():
    # COCO: bbox = [x, y, width, height] in pixels, on a 200 x 100 image.
    coco = [{"category": "dog", "bbox": [20, 10, 100, 50]}, {"category": "cat", "bbox": [150, 60, 50, 40]}]
    assert normalise_objects(coco, (200, 100), box_format="xywh") == [
        {"label": "dog", "box": [0.1, 0.1, 0.6, 0.6]},
        {"label": "cat", "box": [0.75, 0.6, 1.0, 1.0]},
    ]
    # Read as corners, the same numbers are a different (wrong) box: the format must be said.
    assert normalise_objects(coco, (200, 100))[0]["box"] != [0.1, 0.1, 0.6, 0.6]
    # Small pixel boxes near the corner look normalised to `auto`; say pixels.
    tiny = [{"label": "dot", "box": [0, 0, 1, 1]}]
    assert normalise_objects(tiny, (100, 100), box_units="pixels") == [{"label": "dot", "box": [0.0, 0.0, 0.01, 0.01]}]
    assert normalise_objects(tiny, (100, 100)) == [{"label": "dot", "box": [0.0, 0.0, 1.0, 1.0]}]
    bad = [
        {"label": "ok", "box": [0.1, 0.1, 0.2, 0.2]},
        {"box": [0.1, 0.1, 0.2, 0.2]},                     # no label
        {"label": "short", "box": [1, 2]},                 # not 4 numbers
        {"label": "text", "box": ["a", "b", "c", "d"]},    # not numbers
        {"label": "flat", "box": [0.5, 0.5, 0.5, 0.9]},    # zero width
        {"label": "inverted", "box": [0.6, 0.1, 0.2, 0.3]},
        "a stray string",
    ]
    read = read_objects(bad, (10, 10))
    assert [o["label"] for o in read.objects] == ["ok"]
    assert read.malformed == Counter({"no_box": 3, "empty_box": 2, "no_label": 1})
    assert read_objects([{"label": "px", "box": [5, 5, 20, 20]}]).malformed == Counter({"pixels_without_image_size": 1})
    arrow = {"label": ["a", "b"], "box": [[0.1, 0.1, 0.2, 0.2], [0.3, 0.3, 0.4, 0.4]]}
    assert [o["label"] for o in normalise_objects(arrow, (10, 10))] == ["a", "b"]
    assert normalise_objects(None, (10, 10)) == []

    # The stage reads boxes in the configured format and reports what it left out.
    stage = MMEvol(None, box_format="xywh", box_units="pixels")
    seed = stage.seed_version({**SCENES[0], "objects": [{"label": "circle", "bbox": [6, 12, 26, 26]}, {"label": "bad", "bbox": [1, 2, 3]}]})
    assert seed.seed["objects"] == [{"label": "circle", "box": [0.094, 0.188, 0.5, 0.594]}]
    assert stage.report.as_dict()["boxes"] == {"read": 1, "malformed": {"no_box": 1}}
    with pytest.raises(ValueError):
        MMEvol(None, box_format="cxcywh")


# ---------------------------------------------------------------- through the test server

ITEM = re.compile(r"### Item (\S+) \(evolution: (\w+)")
CURRENT = re.compile(r"## Given Q&A&S\n(\[.*?\n\]|\(none)", re.DOTALL)
DRAWN = re.compile(r"Rewrite each given item into the form (\w+),")


def user_text(body: dict) -> str:
    content = next(m for m in body["messages"] if m["role"] == "user")["content"]  # re-asks append turns
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content if p.get("type") == "text")


def given_items(text: str) -> list[dict]:
    found = CURRENT.search(text).group(1)
    return json.loads(found) if found.startswith("[") else []


def judged_questions(text: str) -> dict[str, str]:
    """The judge prompt's items: label -> question."""
    return dict(re.findall(r"### Item (\S+) .*\nQuestion: (.*)", text))


def is_judge(body: dict) -> bool:
    return user_text(body).startswith("You review visual")


def realistic(body: dict, judge=None, evolve=None) -> str:
    """Structured replies as a capable model gives them; hooks change one kind of reply."""
    text = user_text(body)
    if text.startswith("You review visual"):
        items = ITEM.findall(text)
        previous = re.findall(r"^- Q: (.*)", text, re.MULTILINE)
        verdicts = [{"id": i, "improved": True, "score": 7, "answerable_without_image": False, "reason": f"{op} is harder"} for i, op in items]
        if judge:
            return judge(verdicts, previous, text)
        return json.dumps({"verdicts": verdicts[::-1]})  # reversed on purpose: verdicts are matched by id
    given = given_items(text) or [{"question": "What is in the image?", "answer": "shapes"}]
    if evolve:
        out = evolve(given, text)
        if out is not None:
            return out
    replies = []
    for qa in given:
        current = qa["question"]
        if "## Task: cognitive reasoning" in text:
            replies.append(item(f"{current} Then, how many shapes are smaller than it? Let's think step by step.", "1"))
        elif "## Task: interaction" in text:
            drawn = DRAWN.search(text)
            form = drawn.group(1) if drawn else "multi_choice"
            replies.append(item(f"({form}) {current} A. red B. blue C. green", "A. red", steps=[], format=form))
        else:
            replies.append(item(f"{current} And what colour is the small square?", "black", steps=[], format="normal"))
    return "```json\n" + json.dumps({"items": replies}) + "\n```"


def run(stage, seeds=SCENES):
    return list(run_stages([stage], [dict(s) for s in seeds]))


def decoded(url: str) -> Image.Image:
    assert url.startswith("data:image/")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def test_three_rounds_one_request_and_one_judge_call_per_image(llm_server, make_llm_backend):
    llm_server.script(realistic)
    backend = make_llm_backend()
    assert backend.supports_images
    stage = MMEvol(backend, rounds=3, seed=5)
    records = run(stage)
    report = stage.report.as_dict()
    assert report["generated"] == 9 and report["kept"] == 9 and report["eliminated"] == {}
    assert report["per_round"] == {str(r): {"generated": 3, "kept": 3} for r in (1, 2, 3)}
    # One evolution request and one judge request per image and round, each image's 2 items together.
    assert report["tokens"]["evolve"]["requests"] == 9 and report["tokens"]["judge"]["requests"] == 9
    assert report["items_per_round"] == {str(r): {"generated": 6, "kept": 6} for r in (1, 2, 3)}
    assert sum(report["interaction_forms"].values()) == 2 * report["per_operator"].get("interaction", {}).get("generated", 0)

    for body in llm_server.requests:
        (url,) = image_urls(body)
        assert body["response_format"]["type"] == "json_schema"
        if is_judge(body):
            assert len(ITEM.findall(user_text(body))) == 2
            continue
        name = re.search(r"Scene (\w+):", user_text(body)).group(1)
        sent = decoded(url).getpixel((19, 25))  # the centre of the circle, in this scene's colour
        expected = Image.new("RGB", (1, 1), COLOURS[name]).getpixel((0, 0))
        assert max(abs(a - b) for a, b in zip(sent, expected, strict=True)) < 12  # lossy encoding allowed

    assert len(records) == 9
    by_id = {r["id"]: r for r in records}
    for record in records:
        meta, messages = record["meta"], record["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"] * 2  # one conversation, both items
        assert messages[0]["content"][0] == {"type": "image", "text": None} and len(record["images"]) == 1
        assert meta["source"] == "mmevol" and meta["judge"]["score"] == 7 and meta["model"] == "test-model"
        assert len(meta["chain"]) == meta["round"] and meta["chain"][0]["id"] == meta["root_id"]
        assert [q["judge"]["score"] for q in meta["qa"]] == [7, 7]
        if meta["round"] > 1:
            assert by_id[meta["parent_id"]]["meta"]["round"] == meta["round"] - 1
        if meta["operator"] == "interaction":
            assert all(q["format"] in INTERACTION_FORMS for q in meta["qa"])
        if meta["operator"] == "reasoning":
            assert messages[0]["content"][1]["text"].endswith("Let's think step by step.")
            assert [s["manipulation"] for s in meta["qa"][0]["steps"]] == ["grounding_1(the circle)->bbx_1", None]


def test_answer_with_steps_writes_the_steps_out(llm_server, make_llm_backend):
    llm_server.script(realistic)
    stage = MMEvol(make_llm_backend(), rounds=1, operators={"reasoning": 1.0}, answer_with_steps=True)
    records = run(stage, SCENES[:1])
    assert records[0]["messages"][1]["content"][0]["text"] == "Step 1: Find the circle.\nStep 2: Only the black square is darker.\nAnswer: 1"


def test_text_only_backend_gets_the_image_as_text(llm_server, make_llm_backend):
    llm_server.script(realistic)
    stage = MMEvol(make_llm_backend(supports_images=False), rounds=1)
    records = run(stage, SCENES[:2])
    assert len(records) == 2
    for body in llm_server.requests:
        assert image_urls(body) == []
        text = user_text(body)
        assert "black square: [0.625, 0.094, 0.812, 0.281]" in text
        assert "Scene ALPHA" in text or "Scene BRAVO" in text
    assert "You cannot see the image" in user_text(next(b for b in llm_server.requests if not is_judge(b)))
    assert "Detailed description: Scene" in user_text(next(b for b in llm_server.requests if is_judge(b)))
    assert decode_image(records[0]["images"][0]).size == (64, 64)  # the output still carries the image


def test_a_score_outside_1_to_10_eliminates_only_its_item(llm_server, make_llm_backend):
    """The bug: one bad score must not invalidate the image's other verdicts; 0 (MMEvol's rubric) is valid."""
    four = [item(f"Question {k} about the circle? Let's think step by step.", str(k)) for k in range(1, 5)]

    def judge(verdicts, previous, text):
        scores = {"1": 0, "2": 11, "3": "8", "4": 10}
        improved = {"1": False}
        return json.dumps({"verdicts": [{**v, "score": scores[v["id"]], "improved": improved.get(v["id"], True)} for v in verdicts]})

    llm_server.script(lambda body: realistic(body, judge=judge, evolve=lambda given, text: json.dumps({"items": four})))
    stage = MMEvol(make_llm_backend(), rounds=1, operators={"reasoning": 1.0})
    records = run(stage, SCENES[:1])
    report = stage.report.as_dict()
    assert report["eliminated"] == {"judge_not_improved": 1, "judge_invalid_verdict": 1}
    assert report["items_per_round"]["1"] == {"generated": 4, "eliminated": 2, "kept": 2}
    (record,) = records
    assert [q["judge"]["score"] for q in record["meta"]["qa"]] == [8, 10]
    assert [m["content"][-1]["text"] for m in record["messages"][::2]] == [four[2]["question"], four[3]["question"]]
    assert record["meta"]["judge"]["score"] == 9.0


def test_judge_not_improved_image_free_missing_and_conflicting(llm_server, make_llm_backend, tmp_path):
    def judge(verdicts, previous, text):
        if "scene ALPHA" in previous[0]:
            return json.dumps({"verdicts": [{**v, "improved": False, "score": 3, "reason": "not harder"} for v in verdicts]})
        if "scene BRAVO" in previous[0]:  # only the item evolved from the colour question needs no image
            questions = judged_questions(text)
            return json.dumps({"verdicts": [
                {**v, "answerable_without_image": True, "reason": "common knowledge"} if "colour is the circle" in questions[v["id"]] else v
                for v in verdicts
            ]})
        # CHARLIE: item 1 judged twice differently, item 2 not at all, plus an id nobody asked about
        return json.dumps({"verdicts": [verdicts[0], {**verdicts[0], "improved": False, "score": 2}, {"id": "77", "improved": True, "score": 9}]})

    llm_server.script(lambda body: realistic(body, judge=judge))
    stage = MMEvol(make_llm_backend(), rounds=2)
    stage.rejects = RecordLog(tmp_path / "rejects.jsonl")
    records = run(stage)
    report = stage.report.as_dict()
    # Round 1: ALPHA loses both items (and is evolved from its seed again in round 2), BRAVO keeps one.
    assert report["per_round"]["1"] == {"generated": 3, "eliminated": 2, "kept": 1}
    assert report["eliminated"]["judge_not_improved"] == 4 and report["eliminated"]["answerable_without_image"] == 1
    assert report["eliminated"]["judge_conflicting_verdicts"] == 2 and report["eliminated"]["judge_missing_verdict"] == 2
    assert [r["meta"]["root_id"] for r in records] == ["scene-bravo", "scene-bravo"]
    assert len(records[0]["meta"]["qa"]) == 1
    stage.rejects.close()
    lines = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert len(lines) == sum(report["eliminated"].values()) and all(r["phase"] == "judge" and r["item"] in (1, 2) for r in lines)
    # Round 2 evolves ALPHA's and CHARLIE's seeds again, BRAVO's kept item.
    round_two = [given_items(user_text(b)) for b in llm_server.requests if not is_judge(b)][3:]
    assert sorted(len(g) for g in round_two) == [1, 2, 2]


def test_garbage_judge_fails_the_image_and_broken_or_slow_evolutions_fail(llm_server, make_llm_backend):
    def judge(verdicts, previous, text):
        return "Both look fine to me!" if "scene CHARLIE" in previous[0] else None

    def evolve(given, text):
        return json.dumps({"items": []}) if "BRAVO" in text else None

    llm_server.script(lambda body: realistic(body, judge=lambda v, p, t: judge(v, p, t) or json.dumps({"verdicts": v}), evolve=evolve))
    llm_server.fault("broken_json", marker="Scene ALPHA")  # every try, re-asks included
    stage = MMEvol(make_llm_backend(max_reask=0), rounds=1)
    assert run(stage) == []
    report = stage.report.as_dict()
    assert report["failed"] == {"unparseable": 2}  # ALPHA's evolution and CHARLIE's judge reply: asked again next run
    assert report["eliminated"] == {"no_items": 1}  # BRAVO's evolution without items
    assert report["tokens"]["judge"]["requests"] == 1


def test_a_timeout_is_a_failure_not_an_elimination(llm_server, make_llm_backend):
    llm_server.script(realistic)
    llm_server.fault("slow", marker="Scene CHARLIE", delay=3.0)
    stage = MMEvol(make_llm_backend(timeout=0.5, max_retries=1), rounds=1)
    records = run(stage)
    assert {r["meta"]["root_id"] for r in records} == {"scene-alpha", "scene-bravo"}
    assert stage.report.as_dict()["failed"] == {"timeout": 1}


def test_a_later_round_evolves_the_previous_rounds_items(llm_server, make_llm_backend):
    seen: list[list[str]] = []

    def judge(verdicts, previous, text):
        seen.append(previous)
        return json.dumps({"verdicts": verdicts})

    llm_server.script(lambda body: realistic(body, judge=judge))
    stage = MMEvol(make_llm_backend(), rounds=2, operators={"perception": 1.0})
    records = run(stage, SCENES[:1])
    assert [r["meta"]["round"] for r in records] == [1, 2]
    first = [qa["question"] for qa in SCENES[0]["qa"]]
    assert seen == [first, [f"{q} And what colour is the small square?" for q in first]]
    assert records[1]["meta"]["parent_id"] == records[0]["id"]


# ---------------------------------------------------------------- per-round data statistics on a planted set


def planted(body: dict) -> str:
    """Round r (read from the given items' marks) evolves each item into one with r+1 steps and r skills;
    the judge rates it 4 + r, except item 2 of scene CHARLIE, which it eliminates every round."""
    text = user_text(body)
    if text.startswith("You review visual"):
        verdicts = []
        for label, _ in ITEM.findall(text):
            question = re.search(rf"### Item {label} .*\nQuestion: (.*)", text).group(1)
            r = int(re.search(r"\[r(\d)\]", question).group(1))
            drop = label == "2" and "CHARLIE" in question
            verdicts.append({"id": label, "improved": not drop, "score": 4 + r, "reason": "planted"})
        return json.dumps({"verdicts": verdicts})
    out = []
    for qa in given_items(text):
        base = re.sub(r" \[r\d\].*", "", qa["question"])
        r = int(m.group(1)) + 1 if (m := re.search(r"\[r(\d)\]", qa["question"])) else 1
        scene_name = re.search(r"scene (\w+)", base).group(1)
        steps = [{"manipulation": "None", "description": f"step {k}"} for k in range(r + 1)]
        out.append(item(f"{base} [r{r}] {scene_name} Let's think step by step.", f"answer {r}", steps=steps,
                        skills=[f"skill {k}" for k in range(r)]))
    return json.dumps({"items": out})


def test_per_round_statistics_on_a_planted_set(llm_server, make_llm_backend):
    llm_server.script(planted)
    seeds = [{**s, "qa": [{**qa, "steps": ["seen"], "skills": ["Existence"]} for qa in s["qa"]]} for s in SCENES]
    stage = MMEvol(make_llm_backend(), rounds=3, operators={"reasoning": 1.0})
    run(stage, seeds)
    stats = stage.report.as_dict()["data_statistics"]
    # Seeds: 6 items, 1 step and 1 skill each, not judged. Each round keeps 5 items (CHARLIE's second is
    # eliminated in round 1, and CHARLIE then evolves only its first): r+1 steps, r skills, difficulty 4+r.
    assert stats["0"] == {"items": 6, "difficulty": None, "steps": 1.0, "skills": 1.0,
                          "change": {"difficulty": None, "steps": None, "skills": None}}
    assert stats["1"] == {"items": 5, "difficulty": 5.0, "steps": 2.0, "skills": 1.0,
                          "change": {"difficulty": None, "steps": 1.0, "skills": 0.0}}
    assert stats["2"] == {"items": 5, "difficulty": 6.0, "steps": 3.0, "skills": 2.0,
                          "change": {"difficulty": 1.0, "steps": 1.0, "skills": 1.0}}
    assert stats["3"]["items"] == 5 and stats["3"]["difficulty"] == 7.0 and stats["3"]["change"] == {"difficulty": 1.0, "steps": 1.0, "skills": 1.0}
    items = stage.report.as_dict()["items_per_round"]
    assert items["1"] == {"generated": 6, "eliminated": 1, "kept": 5} and items["2"] == {"generated": 5, "kept": 5}


# ---------------------------------------------------------------- CLI on the demo shapes data


def test_cli_end_to_end_on_demo_shapes(llm_server, tmp_path):
    from typer.testing import CliRunner

    from synth.cli import app
    from synth.demo_data import write_demo_data
    from synth.io import read_dataset

    demo = write_demo_data(tmp_path / "shapes", count=4, seed=0, size=96)

    llm_server.script(realistic)
    out = tmp_path / "evolved"
    args = ["evolve", str(demo), "--method", "mmevol", "--out", str(out), "--base-url", llm_server.base_url,
            "--model", "test-model", "--rounds", "2", "--forms", "multiple_choice", "--form-choice", "drawn",
            "--max-items", "2", "--no-cache", "--limit", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "mmevol: evolution" in result.output and "data statistics per round" in result.output

    data = read_dataset(str(out))
    assert len(data) == 6
    assert set(data.column_names) == {"id", "messages", "images", "meta"}
    row = data[0]
    assert row["images"][0].size == (96, 96) and row["images"][0].format == "PNG"  # the demo's encoding is kept
    assert row["messages"][0]["content"][0]["type"] == "image" and len(row["messages"]) == 4
    metas = [json.loads(m) for m in data["meta"]]
    assert {m["root_id"] for m in metas} == {"shapes-00000", "shapes-00001", "shapes-00002"}
    assert all(q["format"] == "multi_choice" for m in metas if m["operator"] == "interaction" for q in m["qa"])
    assert all(len(image_urls(b)) == 1 for b in llm_server.requests)
    report = json.loads((out / "report.json").read_text())
    assert report["image_input"] == "image" and report["kept"] == 6 and report["data_statistics"]["2"]["difficulty"] == 7.0
    assert report["boxes"]["malformed"] == {}

    text_out = tmp_path / "as-text"
    result = CliRunner().invoke(app, [*args[:5], str(text_out), *args[6:], "--image-input", "text", "--box-format", "xyxy"])
    assert result.exit_code == 0, result.output
    assert json.loads((text_out / "report.json").read_text())["image_input"] == "text"
    assert image_urls(llm_server.requests[-1]) == []
    bad = CliRunner().invoke(app, [*args[:5], str(tmp_path / "x"), *args[6:], "--box-format", "cxcy"])
    assert bad.exit_code == 1 and "box_format" in bad.output


# ---------------------------------------------------------------- local models


def test_tiny_local_model_smoke(tmp_path):
    """A random-weight model (mechanics only: it writes noise) runs both engines in-process: MMEvol gets the
    image as text (the local backend takes no images) and grammar-constrained JSON; counts add up."""
    from synth.generate.evolution.evol_instruct import EvolInstruct
    from synth.llm.local import LocalBackend, LocalConfig
    from synth.llm.tiny import build_tiny_model
    from tests.test_evol_instruct import SEEDS

    backend = LocalBackend(LocalConfig(model=str(build_tiny_model(tmp_path / "tiny")), batch_size=4))
    assert not backend.supports_images
    mmevol = MMEvol(backend, rounds=1, max_tokens=24, judge_max_tokens=24, operators={"perception": 1.0}, demos=False)
    evol = EvolInstruct(backend, rounds=2, max_tokens=16, answer_max_tokens=16, judge=False)
    for stage, seeds, generated in ((mmevol, SCENES[:2], 2), (evol, SEEDS[:2], 4)):
        records = run(stage, seeds)
        report = stage.report.as_dict()
        assert report["generated"] == generated
        per_round = report["per_round"]["1"]
        assert len(records) == report["kept"] == sum(r.get("kept", 0) for r in report["per_round"].values())
        assert sum(per_round.get(k, 0) for k in ("kept", "eliminated", "failed")) == per_round["generated"]
        assert report["tokens"]["evolve"]["completion_tokens"] > 0
    backend.close()


@pytest.mark.slow
def test_embedded_gemma_one_round_on_demo_shapes(tmp_path):
    """The real default model, offline (minutes on 2 cores): one MMEvol round writes a valid dataset."""
    from synth.demo_data import write_demo_data
    from synth.generate.evolution.driver import evolve_dataset
    from synth.io import read_dataset
    from synth.llm.factory import make_backend

    demo = write_demo_data(tmp_path / "shapes", count=2, seed=0, size=128)
    backend = make_backend(None, cache=False)
    report = evolve_dataset(str(demo), tmp_path / "out", "mmevol", backend, {"rounds": 1, "max_tokens": 300, "max_items": 2})
    per_round = report.as_dict()["per_round"]["1"]
    assert report.generated == 2 and sum(per_round.get(k, 0) for k in ("kept", "eliminated", "failed")) == 2
    assert len(read_dataset(str(tmp_path / "out"))) == report.written
    backend.close()



def rejecting_judge(verdicts, previous, text):
    return json.dumps({"verdicts": [{**v, "improved": False, "score": 2, "reason": "not harder"} for v in verdicts]})


def test_rejected_replies_beside_failed_requests_are_no_failed_command(llm_server, tmp_path):
    """The bug: the judge rejected the items of 2 images and the requests of 2 others failed (500); the
    command ended in an error and wrote nothing (a run said "every LLM request failed"). Rejections are
    decisions, not failures: the output is written (empty) with both sidecars; the next run retries the 2."""
    from datasets import load_from_disk

    from synth.demo_data import write_demo_data
    from tests.cli_helpers import one_line_error, run_cli

    demo = write_demo_data(tmp_path / "shapes", count=4, seed=0, size=64)
    llm_server.script(lambda body: realistic(body, judge=rejecting_judge))
    for scene in load_from_disk(str(demo)).select(range(2)):
        llm_server.fault("500", marker=scene["detailed_caption"])
    out = tmp_path / "evolved"
    result = run_cli("evolve", demo, "--method", "mmevol", "-o", out, "--base-url", llm_server.base_url,
                     "--model", "test-model", "--rounds", "1", "--no-cache")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["written"] == 0 and report["failed"] == {"http_500": 2}
    assert set(report["eliminated"]) == {"judge_not_improved"}
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert sorted(f["id"] for f in failures) == ["shapes-00000", "shapes-00001"]
    assert (out / "rejects.jsonl").read_text().count("judge_not_improved") == report["eliminated"]["judge_not_improved"]

    llm_server.clear_faults()
    llm_server.fault("broken_json")  # now every reply stays unparseable: that alone is "every LLM request failed"
    one_line_error(run_cli("evolve", demo, "--method", "mmevol", "-o", tmp_path / "none", "--base-url",
                           llm_server.base_url, "--model", "test-model", "--rounds", "1", "--no-cache"),
                   "every LLM request failed (4; unparseable: 4)")
    assert not (tmp_path / "none").exists()
