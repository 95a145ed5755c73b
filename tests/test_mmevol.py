"""MMEvol through the loopback OpenAI-compatible test server (a fixture, not a model): golden prompts,
images as data URLs or as text, structured replies (clean, near-JSON, broken), judge verdicts matched by
id, lineage and counts over several rounds."""

from __future__ import annotations

import base64
import io
import json
import re

import pytest
from PIL import Image, ImageDraw

from synth.data import ImageError, decode_image
from synth.generate.evolution.mmevol import INTERACTION_FORMS, MMEvol, normalise_objects
from synth.llm.base import Completion
from synth.llm.testing import image_urls
from synth.pipeline import Failed, Rejected, run_stages

COLOURS = {"ALPHA": "red", "BRAVO": "blue", "CHARLIE": "green"}


def scene(name: str, colour: str, size: int = 64) -> dict:
    """A tiny drawn scene: a coloured circle and a black square, with caption, boxes and one QA."""
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
        "qa": [{"question": f"What colour is the circle in scene {name}?", "answer": colour}],
    }


SCENES = [scene(name, colour) for name, colour in COLOURS.items()]

SCENE_TEXT = (
    "You create visual question-answer data for training image-text assistants.\n"
    "You cannot see the image, so it is described in text below. Write as if you were looking at it, and never\n"
    "mention the description, the caption or the coordinates list in your question.\n"
    "Image description: Scene ALPHA: a large red circle and a small black square.\n"
    "Objects, with boxes as normalised [x0, y0, x1, y1] coordinates (0 = left/top, 1 = right/bottom):\n"
    "- red circle: [0.10, 0.20, 0.50, 0.60]\n"
    "- black square: [0.62, 0.09, 0.81, 0.28]\n"
    "\n"
    "Current question: What colour is the circle in scene ALPHA?\n"
    "Current answer: red\n"
    "\n"
)
IMAGE_SCENE_TEXT = SCENE_TEXT.replace(
    "You cannot see the image, so it is described in text below. Write as if you were looking at it, and never\n"
    "mention the description, the caption or the coordinates list in your question.\n",
    "Look at the image. A description of it follows, to help you; trust the image where they differ.\n",
)
OUTPUT_TEXT = (
    "\n\nReply with one JSON object only, with these keys:\n"
    '- "question": the new question, as it will be shown to a user together with the image\n'
    '- "answer": the correct answer, as the assistant should give it\n'
    '- "steps": the reasoning steps that lead to the answer, one short sentence each ([] if there are none)\n'
    '- "objects": the objects of the image the question is about\n'
    '- "skills": the abilities the question tests (e.g. counting, colour, spatial relation, reading text, comparison)\n'
    '- "format": {format}'
)
TASKS = {
    "perception": (
        "Task: fine-grained perception evolution. Write a new question about a rarer, finer visual detail of the\n"
        "image than the current question uses: a small object, an exact colour, a relative position, a count of a\n"
        "subset, a part of an object, or written text. Keep the difficulty similar. The question must need the image\n"
        "to be answered, and the answer must follow from what the image shows."
    ),
    "reasoning": (
        "Task: cognitive reasoning evolution. Rewrite the question so that answering it takes more reasoning\n"
        "steps over what the image shows: combine several objects, compare, count then compare, or chain spatial\n"
        'relations. The question must need the image to be answered. In "steps", give every reasoning step in\n'
        'order (at least two), each grounded in the image; "answer" states the final answer.'
    ),
    "interaction": (
        "Task: interaction evolution. Rewrite the question into another form of interaction: a fill-in-the-blank "
        "statement about the image with one blank written as ___; the answer is the missing word or words.\n"
        "Keep it about the same content of the image, and make sure it still needs the image to be answered."
    ),
}

JUDGE_HEAD = (
    "You review visual question-answer data for training image-text assistants. Each item shows an image{described},\n"
    "its previous question-answer pair and an evolved pair made from it. Decide for each item whether the\n"
    "evolved pair is better: harder or finer-grained, more reasoning, or a useful new form, while still correct\n"
    "for the image and clearly written. It is NOT better when it is wrong for the image, vague, the same as\n"
    "before, or when it can be answered without the image (from the question text or common knowledge alone).\n"
    "\n"
)
JUDGE_TAIL = (
    "Reply with JSON only, one verdict per item, using the item ids above:\n"
    '{"verdicts": [{"id": "<item id>", "improved": true or false, "score": <1-10, quality of the evolved pair>, '
    '"answerable_without_image": true or false, "reason": "<one short sentence>"}]}'
)
JUDGE_ITEM = (
    "Previous question: What colour is the circle in scene ALPHA?\n"
    "Previous answer: red\n"
    "Evolved question: How many shapes are darker than the circle?\n"
    "Evolved answer: 1\n"
    "Evolved reasoning steps: The circle is red. | Only the black square is darker.\n"
    "\n"
)


def evolved(question="How many shapes are darker than the circle?", answer="1", steps=("The circle is red.", "Only the black square is darker.")):
    return {"question": question, "answer": answer, "steps": list(steps), "objects": ["black square"], "skills": ["comparison"], "format": "open question"}


# ---------------------------------------------------------------- golden prompts (no backend)


@pytest.mark.parametrize("operator", ["perception", "reasoning", "interaction"])
def test_evolve_prompts_render_exactly_as_text(operator):
    stage = MMEvol(None, interaction_forms={"fill_in_the_blank": 1.0})
    request = stage.format_evolve_input(stage.seed_version(SCENES[0]), operator, 1)
    fmt = '"fill_in_the_blank"' if operator == "interaction" else 'the question form, e.g. "open question"'
    assert request.messages[0].content == SCENE_TEXT + TASKS[operator] + OUTPUT_TEXT.format(format=fmt)
    assert request.images == [] and request.schema_model.__name__ == "EvolvedQA"


def test_evolve_prompt_with_image_puts_the_image_first():
    stage = MMEvol(None, image_input="image")
    seed = stage.seed_version(SCENES[0])
    request = stage.format_evolve_input(seed, "perception", 2)
    image_part, text_part = request.messages[0].content
    assert image_part.type == "image" and request.images == [seed.seed["image"]]
    fmt = 'the question form, e.g. "open question"'
    assert text_part.text == IMAGE_SCENE_TEXT + TASKS["perception"] + OUTPUT_TEXT.format(format=fmt)


def test_judge_prompts_render_exactly_text_and_image():
    text_stage = MMEvol(None)
    seed = text_stage.seed_version(SCENES[0])
    candidate = text_stage.child(seed, "reasoning", 1, evolved())
    request = text_stage.format_judge_input([("1", seed, candidate)])
    assert request.messages[0].content == (
        JUDGE_HEAD.format(described=" (described in text)")
        + "### Item 1 (evolution: reasoning)\n"
        "Image description: Scene ALPHA: a large red circle and a small black square.\n"
        "Objects (normalised [x0, y0, x1, y1] boxes):\n"
        "- red circle: [0.10, 0.20, 0.50, 0.60]\n"
        "- black square: [0.62, 0.09, 0.81, 0.28]\n" + JUDGE_ITEM + JUDGE_TAIL
    )
    assert request.images == [] and request.schema_model.__name__ == "ImageJudgeReply"

    image_stage = MMEvol(None, image_input="image")
    other = image_stage.seed_version(SCENES[1])
    other_candidate = image_stage.child(other, "interaction", 1, evolved("Fill in: the circle is ___.", "blue", ()), form="fill_in_the_blank")
    request = image_stage.format_judge_input([("1", seed, candidate), ("2", other, other_candidate)])
    parts = request.messages[0].content
    assert [p.type for p in parts] == ["text", "image", "text", "image", "text"]
    assert request.images == [seed.seed["image"], other.seed["image"]]
    assert parts[0].text == JUDGE_HEAD.format(described="") + "### Item 1 (evolution: reasoning)\nImage: "
    assert parts[2].text == (
        "\n" + JUDGE_ITEM + "### Item 2 (evolution: interaction, form: fill_in_the_blank)\nImage: "
    )
    assert parts[4].text.startswith("\nPrevious question: What colour is the circle in scene BRAVO?\n")
    assert parts[4].text.endswith(JUDGE_TAIL)


def test_format_output_and_checks_over_clean_noisy_and_broken_json():
    stage = MMEvol(None)
    seed = stage.seed_version(SCENES[0])

    def outcome(text, operator="reasoning"):
        candidate = stage.parse_evolve_output(seed, operator, 1, Completion(texts=[text]))
        if isinstance(candidate, Failed):
            return f"failed: {candidate.reason}"
        if isinstance(candidate, Rejected):
            return candidate.reason
        rejected = stage.check_candidate(seed, candidate)
        return rejected.reason if rejected else candidate

    clean = outcome(json.dumps(evolved()))
    assert clean.fields["steps"] == ["The circle is red.", "Only the black square is darker."]
    assert stage.answer_text(clean) == "Step 1: The circle is red.\nStep 2: Only the black square is darker.\nAnswer: 1"
    noisy = 'Sure! Here it is:\n```json\n{"question": "How many squares?", "answer": 1, "steps": [“One square.”, "So 1.",],}\n```'
    assert outcome(noisy).fields["answer"] == "1"
    assert outcome("The circle is red, so the answer is one.") == "failed: unparseable"  # retried next run
    assert outcome("") == "empty_reply"
    assert outcome(json.dumps(evolved(steps=["Only one step."]))) == "missing_steps"
    assert outcome(json.dumps(evolved(steps=[])), "perception").fields["steps"] == []
    assert outcome(json.dumps(evolved(question="What colour is the circle in scene ALPHA?"))) == "unchanged"
    assert outcome(json.dumps(evolved(question="According to the caption, what is red?"))) == "prompt_leak"
    assert outcome(json.dumps(evolved(answer="I'm sorry, I cannot see images."))) == "answer_refusal"
    assert outcome(json.dumps(evolved(answer="?"))) == "answer_only_punctuation"
    assert outcome(json.dumps(evolved(question=""))) == "empty_question"


def test_interaction_form_is_recorded_and_region_forms_need_boxes():
    stage = MMEvol(None, seed=1)
    seed = stage.seed_version(SCENES[0])
    forms = {stage.choose_form(stage.seed_version({**SCENES[0], "id": f"s{i}"}), 1) for i in range(200)}
    assert forms == set(INTERACTION_FORMS)
    no_boxes = stage.seed_version({**SCENES[0], "objects": []})
    assert {stage.choose_form(stage.seed_version({**SCENES[0], "objects": [], "id": f"s{i}"}), 1) for i in range(200)}.isdisjoint(
        {"region_selection", "object_region_matching"}
    )
    candidate = stage.parse_evolve_output(seed, "interaction", 1, Completion(texts=[json.dumps(evolved())]))
    assert candidate.extra == {"form": stage.choose_form(seed, 1)}
    assert no_boxes.seed["objects"] == []


def test_seeds_from_demo_columns_sft_rows_and_mapping():
    stage = MMEvol(None, seed_qa="first")
    seed = stage.seed_version(SCENES[1])
    assert seed.id == seed.root_id == "scene-bravo"
    assert seed.fields["question"] == "What colour is the circle in scene BRAVO?"
    assert seed.seed["objects"][0] == {"label": "blue circle", "box": [0.1, 0.2, 0.5, 0.6]}

    sft = {
        "images": [SCENES[0]["image"]],
        "messages": [
            {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "What is shown?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A red circle."}]},
        ],
        "description": "A red circle.",
    }
    from_sft = MMEvol(None).seed_version(sft)
    assert from_sft.fields["question"] == "What is shown?" and from_sft.fields["answer"] == "A red circle."
    assert from_sft.seed["caption"] == "A red circle." and len(from_sft.id) == 16

    mapped = MMEvol(None, image_column="pic", caption_column="text", question_column="q", answer_column="a")
    version = mapped.seed_version({"pic": SCENES[0]["image"], "text": "Two shapes.", "q": "How many shapes?", "a": "2"})
    assert (version.seed["caption"], version.fields["question"], version.fields["answer"]) == ("Two shapes.", "How many shapes?", "2")

    assert MMEvol(None).seed_version({"caption": "no image"}).reason == "missing_image"
    with pytest.raises(ImageError, match="unreadable or corrupt image"):  # the run stops, naming the record
        MMEvol(None).seed_version({"id": "bad-1", "image": b"not a png", "caption": "x"})
    assert MMEvol(None).seed_version({"image": SCENES[0]["image"]}).reason == "no_image_description"
    assert not isinstance(MMEvol(None, image_input="image").seed_version({"image": SCENES[0]["image"]}), Rejected)


def test_normalise_objects_accepts_pixels_and_arrow_layout_and_skips_bad_boxes():
    pixels = [{"name": "cat", "bbox": [32, 0, 64, 16]}, {"label": "bad", "box": [1, 2]}, {"label": "flat", "box": [0.5, 0.5, 0.5, 0.9]}]
    assert normalise_objects(pixels, (64, 32)) == [{"label": "cat", "box": [0.5, 0.0, 1.0, 0.5]}]
    arrow = {"label": ["a", "b"], "box": [[0.1, 0.1, 0.2, 0.2], [0.3, 0.3, 0.4, 0.4]]}
    assert [o["label"] for o in normalise_objects(arrow, (10, 10))] == ["a", "b"]
    assert normalise_objects(None, (10, 10)) == []


# ---------------------------------------------------------------- through the test server

ITEM = re.compile(r"### Item (\S+) \(evolution: (\w+)")
CURRENT = re.compile(r"Current question: (.*)")
FORM = re.compile(r'- "format": "(\w+)"')


def user_text(body: dict) -> str:
    content = next(m for m in body["messages"] if m["role"] == "user")["content"]  # re-asks append turns
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content if p.get("type") == "text")


def realistic(body: dict, judge=None, evolve=None) -> str:
    """Structured replies as a capable model gives them; hooks change one kind of reply."""
    text = user_text(body)
    if text.startswith("You review visual"):
        items = ITEM.findall(text)
        previous = re.findall(r"Previous question: (.*)", text)
        verdicts = [
            {"id": i, "improved": True, "score": 7, "answerable_without_image": False, "reason": f"{op} is harder"}
            for i, op in items
        ]
        if judge:
            return judge(verdicts, previous)
        return json.dumps({"verdicts": verdicts[::-1]})  # reversed on purpose: verdicts are matched by id
    current = CURRENT.search(text).group(1)
    if evolve:
        out = evolve(current, text)
        if out is not None:
            return out
    if "Task: cognitive reasoning" in text:
        reply = evolved(f"{current} Then, how many shapes are smaller than it?", "1", ["Find the circle.", "Compare sizes."])
    elif "Task: interaction" in text:
        form = FORM.search(text).group(1)
        reply = {**evolved(f"({form}) {current} A. red B. blue C. green", "A. red", []), "format": form}
    else:
        reply = evolved(f"{current} And what colour is the small square?", "black", [])
    return "```json\n" + json.dumps(reply) + "\n```"


def run(stage, seeds=SCENES):
    return list(run_stages([stage], [dict(s) for s in seeds]))


def decoded(url: str) -> Image.Image:
    assert url.startswith("data:image/")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def test_three_rounds_with_images_lineage_counts_and_data_urls(llm_server, make_llm_backend):
    llm_server.script(realistic)
    backend = make_llm_backend()
    assert backend.supports_images
    stage = MMEvol(backend, rounds=3, seed=5, judge_batch_size=2, judge_images_per_request=2)
    records = run(stage)
    report = stage.report.as_dict()
    assert report["generated"] == 9 and report["kept"] == 9 and report["eliminated"] == {}
    assert report["per_round"] == {str(r): {"generated": 3, "kept": 3} for r in (1, 2, 3)}
    assert report["tokens"]["evolve"]["requests"] == 9 and report["tokens"]["judge"]["requests"] == 6
    assert sum(report["interaction_forms"].values()) == report["per_operator"].get("interaction", {}).get("generated", 0)

    evolve_bodies = [b for b in llm_server.requests if not user_text(b).startswith("You review")]
    judge_bodies = [b for b in llm_server.requests if user_text(b).startswith("You review")]
    for body in evolve_bodies:
        (url,) = image_urls(body)
        name = re.search(r"Scene (\w+):", user_text(body)).group(1)
        sent = decoded(url).getpixel((19, 25))  # the centre of the circle, in this scene's colour
        expected = Image.new("RGB", (1, 1), COLOURS[name]).getpixel((0, 0))
        assert max(abs(a - b) for a, b in zip(sent, expected, strict=True)) < 12  # lossy encoding allowed
        assert body["response_format"]["type"] == "json_schema"
    for body in judge_bodies:
        assert len(image_urls(body)) == len(ITEM.findall(user_text(body))) in (1, 2)

    assert len(records) == 9
    by_id = {r["id"]: r for r in records}
    for record in records:
        meta = record["meta"]
        assert record["messages"][0]["content"][0] == {"type": "image", "text": None}
        assert len(record["images"]) == 1
        assert meta["source"] == "mmevol" and meta["judge"]["score"] == 7 and meta["model"] == "test-model"
        assert len(meta["chain"]) == meta["round"] and meta["chain"][0]["id"] == meta["root_id"]
        if meta["round"] > 1:
            assert by_id[meta["parent_id"]]["meta"]["round"] == meta["round"] - 1
        if meta["operator"] == "interaction":
            assert meta["form"] in INTERACTION_FORMS and meta["qa"]["format"] == meta["form"]
        if meta["operator"] == "reasoning":
            assert record["messages"][1]["content"][0]["text"].startswith("Step 1: Find the circle.\nStep 2: ")


def test_text_only_backend_gets_the_image_as_text(llm_server, make_llm_backend):
    llm_server.script(realistic)
    stage = MMEvol(make_llm_backend(supports_images=False), rounds=1)
    records = run(stage, SCENES[:2])
    assert len(records) == 2
    for body in llm_server.requests:
        assert image_urls(body) == []
        text = user_text(body)
        assert "- black square: [0.62, 0.09, 0.81, 0.28]" in text
        assert "Scene ALPHA" in text or "Scene BRAVO" in text
    assert "You cannot see the image" in user_text(llm_server.requests[0])
    assert "(described in text)" in user_text(llm_server.requests[-1])
    # The output still carries the image itself, encoded.
    assert decode_image(records[0]["images"][0]).size == (64, 64)


def test_judge_no_out_of_order_missing_duplicate_and_image_free_questions(llm_server, make_llm_backend):
    def judge(verdicts, previous):
        out = []
        for v, question in zip(verdicts, previous, strict=True):
            if "ALPHA" in question:
                out.append({**v, "improved": False, "score": 3, "reason": "not harder"})
            elif "BRAVO" in question:
                out.append({**v, "answerable_without_image": True, "reason": "common knowledge"})
            # CHARLIE: no verdict at all
        out.append({"id": "77", "improved": True, "score": 9})  # an id nobody asked about
        return json.dumps({"verdicts": out[::-1]})

    llm_server.script(lambda body: realistic(body, judge=judge))
    stage = MMEvol(make_llm_backend(), rounds=2, judge_batch_size=3, judge_images_per_request=3)
    assert run(stage) == []
    report = stage.report.as_dict()
    assert report["eliminated"] == {"judge_not_improved": 2, "answerable_without_image": 2, "judge_missing_verdict": 2}
    # Round 2 evolves the seeds again, since round 1 kept nothing.
    round_two = [b for b in llm_server.requests if not user_text(b).startswith("You review")][3:]
    assert sorted(CURRENT.search(user_text(b)).group(1) for b in round_two) == sorted(s["qa"][0]["question"] for s in SCENES)


def test_conflicting_duplicates_and_garbage_judge(llm_server, make_llm_backend):
    def judge(verdicts, previous):
        if any("CHARLIE" in q for q in previous):
            return "Both look fine to me!"
        return json.dumps({"verdicts": verdicts + [{**verdicts[0], "improved": False, "score": 2}]})

    llm_server.script(lambda body: realistic(body, judge=judge))
    stage = MMEvol(make_llm_backend(max_reask=0), rounds=1, judge_batch_size=2, judge_images_per_request=2)
    records = run(stage)
    report = stage.report.as_dict()
    assert report["eliminated"] == {"judge_conflicting_verdicts": 1}
    assert report["failed"] == {"unparseable": 1}  # the garbage reply: a failure, asked again next run
    assert [r["meta"]["root_id"] for r in records] == ["scene-bravo"]


def test_broken_json_empty_replies_and_timeouts_fall_back(llm_server, make_llm_backend):
    def evolve(current, text):
        if "BRAVO" in current:
            return ""
        return None

    llm_server.script(lambda body: realistic(body, evolve=evolve))
    llm_server.fault("broken_json", marker="Scene ALPHA")  # every try, re-asks included
    llm_server.fault("slow", marker="Scene CHARLIE", delay=3.0)
    backend = make_llm_backend(timeout=0.5, max_retries=1, max_reask=1)
    stage = MMEvol(backend, rounds=1)
    assert run(stage) == []
    report = stage.report.as_dict()
    # Broken JSON (after re-asks), an empty reply and a timeout: failures, not eliminations.
    assert report["eliminated"] == {} and report["failed"] == {"unparseable": 2, "timeout": 1}
    assert stage.answered == 0
    assert report["tokens"].get("judge") is None  # nothing reached the judge


def test_a_later_round_compares_with_the_previous_round_not_the_seed(llm_server, make_llm_backend):
    seen_previous: list[list[str]] = []

    def judge(verdicts, previous):
        seen_previous.append(previous)
        return json.dumps({"verdicts": verdicts})

    llm_server.script(lambda body: realistic(body, judge=judge))
    stage = MMEvol(make_llm_backend(), rounds=2, operators={"perception": 1.0})
    records = run(stage, SCENES[:1])
    assert [r["meta"]["round"] for r in records] == [1, 2]
    assert seen_previous == [
        ["What colour is the circle in scene ALPHA?"],
        ["What colour is the circle in scene ALPHA? And what colour is the small square?"],
    ]
    assert records[1]["meta"]["parent_id"] == records[0]["id"]


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
            "--model", "test-model", "--rounds", "2", "--forms", "multiple_choice", "--no-cache", "--limit", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "mmevol: evolution" in result.output

    data = read_dataset(str(out))
    assert len(data) == 6
    assert set(data.column_names) == {"id", "messages", "images", "meta"}
    row = data[0]
    assert row["images"][0].size == (96, 96)
    assert row["images"][0].format == "PNG"  # the demo's encoding is kept
    assert row["messages"][0]["content"][0]["type"] == "image"
    metas = [json.loads(m) for m in data["meta"]]
    assert {m["root_id"] for m in metas} == {"shapes-00000", "shapes-00001", "shapes-00002"}
    assert all(m.get("form") == "multiple_choice" for m in metas if m["operator"] == "interaction")
    # Images went as data URLs, one per request (judge batches too, by default: servers often take one).
    assert all(len(image_urls(b)) == 1 for b in llm_server.requests)
    report = json.loads((out / "report.json").read_text())
    assert report["image_input"] == "image" and report["kept"] == 6

    text_out = tmp_path / "as-text"
    result = CliRunner().invoke(app, [*args[:5], str(text_out), *args[6:], "--image-input", "text"])
    assert result.exit_code == 0, result.output
    assert json.loads((text_out / "report.json").read_text())["image_input"] == "text"
    assert image_urls(llm_server.requests[-1]) == []


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
    mmevol = MMEvol(backend, rounds=1, max_tokens=24, judge_max_tokens=24, operators={"perception": 1.0})
    evol = EvolInstruct(backend, rounds=2, max_tokens=16, answer_max_tokens=16, judge=False)
    for stage, seeds, generated in ((mmevol, SCENES[:2], 2), (evol, SEEDS[:2], 4)):
        records = run(stage, seeds)
        report = stage.report.as_dict()
        assert report["generated"] == generated
        assert report["kept"] + sum(report["eliminated"].values()) + sum(report["failed"].values()) == generated
        assert len(records) == report["kept"]
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
    report = evolve_dataset(str(demo), tmp_path / "out", "mmevol", backend, {"rounds": 1, "max_tokens": 200})
    assert report.generated == 2 and report.kept + sum(report.eliminated.values()) + sum(report.failed.values()) == 2
    assert len(read_dataset(str(tmp_path / "out"))) == report.written
    backend.close()
