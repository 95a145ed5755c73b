"""perturb: offline pairs from the demo shapes data and sets adapted from it; one same-kind fact swapped."""

from __future__ import annotations

import json
import re

import pytest
from datasets import load_from_disk

from synth.demo_data import COLORS, SHAPES, SIZES
from synth.prefs import PerturbConfig, PerturbStrategy, SceneIndex, build_preferences
from synth.prefs.items import PromptItem, same_text
from synth.prefs.perturb import OPPOSITES, Vocabulary, number_value, singular
from tests.cli_helpers import run_cli

WORD = re.compile(r"[A-Za-z][A-Za-z\-]*|\d+")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo shapes data (8 scenes) and three sets adapted from it."""
    from synth.adapt.engine import adapt
    from synth.demo_data import write_demo_data

    root = tmp_path_factory.mktemp("prefs-demo")
    shapes = write_demo_data(root / "shapes", count=8, show_progress=False)
    sets = {"shapes": shapes}
    for template in ("vqa_short", "scene_qa_text", "caption_detailed"):
        sets[template] = adapt(shapes, template, root / template).out
    return sets


def text(messages: list[dict]) -> str:
    content = messages[0]["content"]
    return content if isinstance(content, str) else "".join(p["text"] or "" for p in content if p["type"] == "text")


def assert_one_same_kind_swap(chosen: str, rejected: str, swap: dict, vocabulary: Vocabulary) -> None:
    """rejected = chosen with the recorded word swapped for a different value of its kind, plus only the
    grammar that follows the swap (article, number agreement of the noun and verb)."""
    assert not same_text(chosen, rejected)
    kind, original, replacement = swap["kind"], swap["original"], swap["replacement"]
    assert original.lower() != replacement.lower()
    assert chosen[swap["offset"]: swap["offset"] + len(original)] == original
    assert rejected[swap["offset"]:].startswith(replacement) or rejected.lower().find(replacement.lower()) >= 0
    if kind in ("position", "yesno"):
        assert OPPOSITES[original.lower()] == replacement.lower()
    elif kind == "number":
        assert number_value(original) is not None and number_value(replacement) is not None
        assert number_value(original) != number_value(replacement)
        assert original.isdigit() == replacement.isdigit()  # digits stay digits, words stay words
    else:
        known = vocabulary.known(kind)
        assert singular(original.lower()) in known or original.lower() in known
        assert singular(replacement.lower()) in known or replacement.lower() in known
    a, b = WORD.findall(chosen), WORD.findall(rejected)
    assert len(a) == len(b)
    changed = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    at = len(WORD.findall(chosen[: swap["offset"]]))
    assert at in changed and a[at] == original and b[at] == replacement
    for i in changed:
        if i == at:
            continue
        if i == at - 1:  # the article or the verb before the swapped word
            assert {a[i].lower(), b[i].lower()} in ({"a", "an"}, {"is", "are"}, {"was", "were"}), (a[i], b[i])
        else:  # the counted noun after a number
            assert kind == "number" and at < i <= at + 4 and singular(a[i].lower()) == singular(b[i].lower()), (a[i], b[i])


def run(source, out, config=None, scenes=None):
    stage = PerturbStrategy(config or PerturbConfig(), scenes=scenes)
    result = build_preferences(source, out, stage, show_progress=False)
    return result, stage, load_from_disk(str(out))


def test_raw_demo_rows_give_one_pair_per_qa_item_and_caption(demo, tmp_path):
    result, stage, ds = run(demo["shapes"], tmp_path / "p")
    rows = load_from_disk(str(demo["shapes"]))
    expected = sum(len(r["qa"]) + 1 for r in rows)
    assert result.pairs == len(ds) == expected  # every demo answer has a swappable fact
    assert result.report["dropped"] == {}
    kinds = set()
    for row in ds:
        meta = json.loads(row["meta"])
        chosen, rejected = text(row["chosen"]), text(row["rejected"])
        swap = meta["perturb"]
        assert_one_same_kind_swap(chosen, rejected, swap, stage.vocabulary)
        kinds.add(swap["kind"])
        # values come from the dataset itself: colours, shapes and sizes its rows and answers use
        if swap["kind"] in ("color", "size"):
            assert swap["replacement"].lower() in stage.vocabulary.seen[swap["kind"]]
        if swap["kind"] == "object":
            assert singular(swap["replacement"].lower()) in SHAPES
            assert isinstance(swap["present"], bool)
        assert meta["strategy"] == "perturb" and meta["prompt_id"].startswith(meta["source_id"])
        assert len(row["images"]) == 1
        assert row["prompt"][0]["content"][0]["type"] == "image"
    assert {"number", "color", "yesno"} <= kinds
    assert set(COLORS) <= set(stage.vocabulary.seen["color"]) and set(SIZES) <= set(stage.vocabulary.seen["size"])
    qa_kinds = {json.loads(r["meta"]).get("qa_kind") for r in ds}
    assert {"count", "color", "exists"} <= qa_kinds


@pytest.mark.parametrize("name", ["vqa_short", "scene_qa_text", "caption_detailed"])
def test_adapted_sets_swap_only_same_kind_values(demo, tmp_path, name):
    scenes = SceneIndex.from_source(demo["shapes"])
    result, stage, ds = run(demo[name], tmp_path / "p", scenes=scenes)
    source = load_from_disk(str(demo[name]))
    assert result.pairs == len(ds) == len(source)
    for row in ds:
        meta = json.loads(row["meta"])
        assert_one_same_kind_swap(text(row["chosen"]), text(row["rejected"]), meta["perturb"], stage.vocabulary)
        assert meta["template"] == name  # the source's provenance stays
    # the vocabulary was learned from the data: every demo colour, the numbers the answers use
    assert set(stage.vocabulary.seen["color"]) >= {c for r in load_from_disk(str(demo["shapes"])) for o in r["objects"] for c in [o["color"]]}


def test_captions_swap_facts_inside_sentences_and_fix_the_grammar(demo, tmp_path):
    scenes = SceneIndex.from_source(demo["shapes"])
    _, stage, ds = run(demo["caption_detailed"], tmp_path / "p", scenes=scenes)
    kinds = {json.loads(r["meta"])["perturb"]["kind"] for r in ds}
    assert len(kinds) >= 3  # captions hold numbers, colours, sizes, positions and shapes
    vocabulary = Vocabulary()
    strategy = PerturbStrategy(vocabulary=vocabulary, kinds=["number"])
    item = PromptItem(id="x", prompt=[{"role": "user", "content": "How many?"}], reference="There is one red circle.")
    pair = strategy.perturb(item).pairs[0]
    rejected = text(pair["rejected"])
    assert re.fullmatch(r"There are (zero|two|three|four|five|six|seven|eight|nine|ten) red circles\.", rejected), rejected
    strategy = PerturbStrategy(vocabulary=vocabulary, kinds=["color"])
    item = PromptItem(id="y", prompt=[{"role": "user", "content": "q"}], reference="It is a red star.")
    rejected = text(strategy.perturb(item).pairs[0]["rejected"])
    article = "an" if rejected.split()[3][0] in "aeiou" else "a"
    assert rejected.split()[2] == article


def test_kinds_option_limits_the_swaps(demo, tmp_path):
    result, _, ds = run(demo["shapes"], tmp_path / "p", PerturbConfig(kinds=["color"]))
    assert len(ds) > 0 and {json.loads(r["meta"])["perturb"]["kind"] for r in ds} == {"color"}
    # count and yes/no answers have no colour in them: dropped, counted, written
    assert result.report["dropped"]["no_swappable_fact"] == result.report["prompts"] - len(ds)
    rejects = [json.loads(line) for line in (tmp_path / "p" / "rejects.jsonl").read_text().splitlines()]
    assert {r["reason"] for r in rejects} == {"no_swappable_fact"}
    assert all(r["level"] == "prompt" and r["stage"] == "prefs-perturb" for r in rejects)


def test_negated_statements_are_not_swapped():
    strategy = PerturbStrategy(vocabulary=Vocabulary())
    item = PromptItem(id="n", prompt=[{"role": "user", "content": "q"}], reference="No, there is no blue triangle.")
    outcome = strategy.perturb(item)
    assert not outcome.pairs and outcome.drops[0].verdict.reason == "no_swappable_fact"
    item = PromptItem(id="m", prompt=[{"role": "user", "content": "q"}], reference="There is a red circle, not a blue one.")
    swap = strategy.perturb(item).pairs[0]["meta"]["perturb"]
    assert swap["offset"] < item.reference.index("not")


def test_seeded_and_deterministic(demo, tmp_path):
    first = [r["rejected"] for r in run(demo["shapes"], tmp_path / "a")[2]]
    again = [r["rejected"] for r in run(demo["shapes"], tmp_path / "b")[2]]
    other = [r["rejected"] for r in run(demo["shapes"], tmp_path / "c", PerturbConfig(seed=7))[2]]
    assert first == again
    assert first != other


def test_every_drop_reason_is_counted_and_written(tmp_path):
    from datasets import Dataset

    rows = [
        {"id": "a", "messages": [{"role": "user", "content": "What colour is the car?"}, {"role": "assistant", "content": "The car is red."}]},
        {"id": "b", "messages": [{"role": "user", "content": "Say hello."}]},  # nothing to perturb
        {"id": "c", "messages": [{"role": "user", "content": "What does it say?"}, {"role": "assistant", "content": "It says HELLO."}]},
        {"id": "d", "messages": [{"role": "assistant", "content": "red"}]},  # no user turn
    ]
    Dataset.from_list([{**r, "meta": "{}"} for r in rows]).save_to_disk(str(tmp_path / "in"))
    result, _, ds = run(tmp_path / "in", tmp_path / "out")
    assert len(ds) == 1 and text(ds[0]["chosen"]) == "The car is red."
    assert result.report["dropped"] == {"no_reference": 1, "no_swappable_fact": 1, "no_prompt": 1}
    rejects = {json.loads(line)["id"]: json.loads(line)["reason"] for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()}
    assert rejects == {"b": "no_reference", "c": "no_swappable_fact", "d": "no_prompt"}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["prompts"] == 4 and report["pairs"] == 1 and report["strategy"] == "perturb"


def test_cli(demo, tmp_path):
    result = run_cli("prefs", demo["vqa_short"], "--strategy", "perturb", "--out", tmp_path / "p", "--scenes", demo["shapes"])
    assert result.exit_code == 0, result.output
    assert f"pairs (perturb) from {len(load_from_disk(str(demo['vqa_short'])))} prompts" in result.output
    again = run_cli("prefs", demo["vqa_short"], "-s", "perturb", "-o", tmp_path / "p")
    assert again.exit_code == 1 and "already exists" in again.output
    bad = run_cli("prefs", demo["vqa_short"], "-s", "perturb", "-o", tmp_path / "q", "--kinds", "colour")
    assert bad.exit_code == 1 and "kinds" in bad.output


def test_swaps_never_name_another_object_the_scene_has():
    from synth.prefs.scene import Scene

    scene = Scene(caption="", objects=[
        {"label": "red circle", "color": "red", "shape": "circle", "box": [0.1, 0.1, 0.2, 0.2]},
        {"label": "red square", "color": "red", "shape": "square", "box": [0.4, 0.4, 0.5, 0.5]},
        {"label": "yellow circle", "color": "yellow", "shape": "circle", "box": [0.7, 0.7, 0.8, 0.8]},
    ])
    vocabulary = Vocabulary()
    for obj in scene.objects:
        vocabulary.add("color", obj["color"])
        vocabulary.add("object", obj["shape"])
    reference = "The yellow circle is below the red circle."
    for seed in range(20):
        for kinds in (["object"], ["color"]):
            strategy = PerturbStrategy(PerturbConfig(seed=seed, kinds=kinds), vocabulary=vocabulary)
            item = PromptItem(id=f"s{seed}", prompt=[{"role": "user", "content": "Where?"}], reference=reference, scene=scene)
            outcome = strategy.perturb(item)
            for pair in outcome.pairs:
                # "below the red square" (or recolouring the yellow circle red) could be true: never produced
                new_labels = labels(text(pair["rejected"])) - labels(reference)
                assert new_labels and not new_labels & {"red circle", "red square", "yellow circle"}, text(pair["rejected"])


def labels(sentence: str) -> set[str]:
    words = WORD.findall(sentence.lower())
    return {f"{a} {b}" for a, b in zip(words, words[1:]) if a in COLORS and b in SHAPES}
