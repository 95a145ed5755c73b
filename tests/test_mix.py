"""Mixture recipes end to end: real datasets on disk, the real CLI, the real filters and dedup."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from datasets import load_from_disk
from PIL import Image
from typer.testing import CliRunner

import synth.cli.mix  # noqa: F401  (registers the command until the lead wires it in synth.cli)
from synth.cli import app
from synth.errors import SynthError
from synth.mix import apportion, load_recipe, sample_plan, source_probabilities
from synth.records import Message, PreferencePair, Sample, pairs_to_dataset, samples_to_dataset
from tests.cli_helpers import one_line_error

runner = CliRunner()


def write_sft(path: Path, prefix: str, n: int, answers=None, images: bool = False) -> Path:
    samples = []
    for i in range(n):
        answer = answers[i] if answers else f"{prefix} answer number {i} with several words"
        if images:
            user = Message(role="user", content=[{"type": "image"}, {"type": "text", "text": f"{prefix} question {i}"}])
            picture = Image.new("RGB", (8, 8), (i * 7 % 256, 40, 90))
            samples.append(Sample(messages=[user, Message(role="assistant", content=answer)], images=[picture], meta={"source": "raw"}))
        else:
            user = Message(role="user", content=f"{prefix} question {i}")
            samples.append(Sample(messages=[user, Message(role="assistant", content=answer)], meta={"template": "t"}))
    samples_to_dataset(samples).save_to_disk(str(path))
    return path


def write_pairs(path: Path, prefix: str, n: int) -> Path:
    pairs = [
        PreferencePair(
            prompt=[Message(role="user", content=f"{prefix} prompt {i}")],
            chosen=[Message(role="assistant", content=f"good {prefix} {i}")],
            rejected=[Message(role="assistant", content=f"bad {prefix} {i}")],
        )
        for i in range(n)
    ]
    pairs_to_dataset(pairs).save_to_disk(str(path))
    return path


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def mix(tmp_path: Path, recipe: dict, *extra: str, name: str = "recipe.yaml"):
    recipe_file = write_recipe(tmp_path / name, recipe)
    out = tmp_path / "out"
    result = runner.invoke(app, ["mix", str(recipe_file), "--out", str(out), "--overwrite", *extra])
    return result, out


def sources_of(split) -> Counter:
    return Counter(json.loads(m)["source"] for m in split["meta"])


@pytest.fixture
def two_sources(tmp_path):
    return write_sft(tmp_path / "alpha", "alpha", 400), write_sft(tmp_path / "beta", "beta", 600)


# ---------------------------------------------------------------- proportions, split, determinism


def test_weights_give_the_mixture_proportions(tmp_path, two_sources):
    recipe = {
        "sources": [{"path": "alpha", "weight": 1}, {"path": "beta", "weight": 3}],
        "total": 400,
        "validation": 0.2,
    }
    result, out = mix(tmp_path, recipe)
    assert result.exit_code == 0, result.output
    dsd = load_from_disk(str(out))
    assert (len(dsd["train"]), len(dsd["validation"])) == (320, 80)
    overall = sources_of(dsd["train"]) + sources_of(dsd["validation"])
    assert overall == {"alpha": 100, "beta": 300}
    # The validation split is a random share of the mix: its composition is within sampling tolerance
    # (binomial sd of the alpha count is sqrt(80 * 0.25 * 0.75) ~ 3.9; allow about 3.5 sd).
    assert abs(sources_of(dsd["validation"])["alpha"] - 20) <= 14
    assert len(set(dsd["train"]["id"]) | set(dsd["validation"]["id"])) == 400  # no row twice
    report = json.loads((out / "mix_report.json").read_text())
    assert [(s["name"], s["read"], s["in_mix"]) for s in report["sources"]] == [("alpha", 400, 100), ("beta", 600, 300)]
    assert report["sources"][0]["share"] == pytest.approx(0.25)
    assert "alpha" in result.output and "25.0%" in result.output  # the printed table


def test_without_total_the_mix_is_the_largest_that_needs_no_upsampling(tmp_path, two_sources):
    result, out = mix(tmp_path, {"sources": [{"path": "alpha", "weight": 1}, {"path": "beta", "weight": 1}]})
    assert result.exit_code == 0, result.output
    assert sources_of(load_from_disk(str(out))["train"]) == {"alpha": 400, "beta": 400}


def test_same_seed_is_byte_identical_and_another_seed_differs(tmp_path, two_sources):
    recipe = {"sources": [{"path": "alpha", "weight": 2}, {"path": "beta", "count": 50}], "total": 150, "validation": 10}
    recipe_file = write_recipe(tmp_path / "r.yaml", recipe)

    def files(out: Path) -> dict[str, bytes]:
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    runs = []
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        result = runner.invoke(app, ["mix", str(recipe_file), "--out", str(tmp_path / name), "--seed", seed])
        assert result.exit_code == 0, result.output
        runs.append(files(tmp_path / name))
    assert runs[0] == runs[1]
    assert runs[0]["train/data-00000-of-00001.arrow"] != runs[2]["train/data-00000-of-00001.arrow"]


@pytest.mark.parametrize("validation, expected", [(7, 7), (0.25, 25), (0, 0)])
def test_validation_split_sizes(tmp_path, two_sources, validation, expected):
    result, out = mix(tmp_path, {"sources": [{"path": "alpha", "count": 60}, {"path": "beta", "count": 40}], "validation": validation})
    assert result.exit_code == 0, result.output
    dsd = load_from_disk(str(out))
    assert len(dsd.get("validation", [])) == expected
    assert len(dsd["train"]) == 100 - expected


# ---------------------------------------------------------------- sampling


def test_upsampling_repeats_the_source_and_records_copies(tmp_path):
    write_sft(tmp_path / "small", "small", 10)
    write_sft(tmp_path / "big", "big", 100)
    recipe = {"sources": [{"path": "small", "count": 25, "upsample": True}, {"path": "big", "count": 20}], "validation": 5}
    result, out = mix(tmp_path, recipe)
    assert result.exit_code == 0, result.output
    dsd = load_from_disk(str(out))
    rows = [r for split in dsd.values() for r in split]
    small = [r for r in rows if json.loads(r["meta"])["source"] == "small"]
    assert len(small) == 25
    per_id = Counter(r["id"] for r in small)
    assert len(per_id) == 10 and set(per_id.values()) <= {2, 3}  # whole repeats + a remainder
    copies = Counter(json.loads(r["meta"]).get("mix", {}).get("upsampled_copy", 0) for r in small)
    assert copies == {0: 10, 1: 10, 2: 5}
    # Copies of one sample stay in one split (no train/validation leak).
    assert not set(dsd["train"]["id"]) & set(dsd["validation"]["id"])
    report = json.loads((out / "mix_report.json").read_text())
    assert report["sources"][0]["upsampled"] == 15
    assert "+15" in result.output


def test_caps_bound_a_source(tmp_path, two_sources):
    recipe = {"sources": [{"path": "alpha", "weight": 1, "cap": 30}, {"path": "beta", "weight": 1}], "total": 200}
    result, out = mix(tmp_path, recipe)
    assert result.exit_code == 0, result.output
    assert sources_of(load_from_disk(str(out))["train"]) == {"alpha": 30, "beta": 100}
    assert json.loads((out / "mix_report.json").read_text())["sources"][0]["capped"] is True


def test_temperature_sampling(tmp_path):
    write_sft(tmp_path / "small", "small", 100)
    write_sft(tmp_path / "large", "large", 900)
    recipe = {"sources": [{"path": "small"}, {"path": "large"}], "temperature": 2.0, "total": 400}
    result, out = mix(tmp_path, recipe)
    assert result.exit_code == 0, result.output
    # p ∝ n^(1/2): 10 : 30, so 100 : 300 (size-proportional would be 40 : 360).
    assert sources_of(load_from_disk(str(out))["train"]) == {"small": 100, "large": 300}


def test_temperature_math():
    assert source_probabilities([100, 900], [1, 1], 1.0) == pytest.approx([0.1, 0.9])
    assert source_probabilities([100, 900], [1, 1], 2.0) == pytest.approx([0.25, 0.75])
    assert source_probabilities([100, 900], [1, 1], 1e9) == pytest.approx([0.5, 0.5])
    assert source_probabilities([100, 900], [3, 1], None) == pytest.approx([0.75, 0.25])
    assert source_probabilities([100, 900], [2, 1], 2.0) == pytest.approx([20 / 50, 30 / 50])
    assert source_probabilities([0, 900], [1, 1], 2.0) == pytest.approx([0.0, 1.0])
    assert apportion(10, [1 / 3, 1 / 3, 1 / 3]) == [4, 3, 3]
    assert sum(apportion(997, source_probabilities([3, 7, 11], [1, 1, 1], 0.5))) == 997


def test_sample_plan_draws_without_replacement_then_repeats():
    import numpy as np

    down = sample_plan(50, 20, np.random.default_rng(0))
    assert len({i for i, _ in down}) == 20 and all(c == 0 for _, c in down)
    up = sample_plan(4, 10, np.random.default_rng(0))
    assert Counter(c for _, c in up) == {0: 4, 1: 4, 2: 2}
    assert sample_plan(0, 0, np.random.default_rng(0)) == []


# ---------------------------------------------------------------- filters, dedup, kinds


def test_global_dedup_across_sources_keeps_the_first_source(tmp_path):
    shared = ["the planted duplicate answer that both sources hold"]
    write_sft(tmp_path / "first", "x", 5, answers=shared + [f"first unique answer {i}" for i in range(4)])
    write_sft(tmp_path / "second", "x", 5, answers=shared + [f"second unique answer {i}" for i in range(4)])
    recipe = {"sources": [{"path": "first", "weight": 1}, {"path": "second", "weight": 1}], "dedup": {"near": False}}
    result, out = mix(tmp_path, recipe)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "mix_report.json").read_text())
    assert [(s["after_filters"], s["after_dedup"]) for s in report["sources"]] == [(5, 5), (5, 4)]
    rows = load_from_disk(str(out))["train"]
    holders = [json.loads(m)["source"] for m, msgs in zip(rows["meta"], rows["messages"], strict=True) if msgs[-1]["content"] == shared[0]]
    assert holders == ["first"]
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 1 and rejects[0]["reason"] == "exact_duplicate" and "source=first" in rejects[0]["detail"]


def test_filter_chain_applies_per_source(tmp_path):
    short = ["ok", "fine answer with enough words here", "no", "another long enough answer text", "yes"]
    write_sft(tmp_path / "filtered", "f", 5, answers=short)
    write_sft(tmp_path / "raw", "r", 5, answers=short)
    recipe = {
        "sources": [
            {"path": "filtered", "count": 2, "filters": [{"length": {"min_answer_words": 3}}]},
            {"path": "raw", "count": 5},
        ]
    }
    result, out = mix(tmp_path, recipe)
    assert result.exit_code == 0, result.output
    rows = load_from_disk(str(out))["train"]
    kept = sorted(m[-1]["content"] for m, meta in zip(rows["messages"], rows["meta"], strict=True) if json.loads(meta)["source"] == "filtered")
    assert kept == sorted(short[i] for i in (1, 3))
    report = json.loads((out / "mix_report.json").read_text())["sources"]
    assert report[0]["after_filters"] == 2 and report[0]["filters"]["length"]["kept"] == 2
    assert report[1]["after_filters"] == 5 and report[1]["filters"] == {}
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 3 and {r["stage"] for r in rejects} == {"length"}


def test_preference_sets_mix_and_keep_their_layout(tmp_path):
    write_pairs(tmp_path / "p1", "one", 6)
    write_pairs(tmp_path / "p2", "two", 6)
    result, out = mix(tmp_path, {"sources": [{"path": "p1", "count": 4}, {"path": "p2", "count": 2}]})
    assert result.exit_code == 0, result.output
    train = load_from_disk(str(out))["train"]
    assert {"prompt", "chosen", "rejected", "meta", "id"} <= set(train.column_names)
    assert sources_of(train) == {"p1": 4, "p2": 2}


def test_text_and_image_sources_mix_into_the_parts_layout(tmp_path):
    write_sft(tmp_path / "text", "t", 4)
    write_sft(tmp_path / "vision", "v", 4, images=True)
    result, out = mix(tmp_path, {"sources": [{"path": "text", "count": 4}, {"path": "vision", "count": 4, "name": "vis"}]})
    assert result.exit_code == 0, result.output
    train = load_from_disk(str(out))["train"]
    by_source = {json.loads(r["meta"])["source"]: r for r in train}
    assert by_source["text"]["images"] == [] and by_source["text"]["messages"][0]["content"][0]["type"] == "text"
    assert by_source["vis"]["images"][0].size == (8, 8)
    # An earlier source name is kept as the origin.
    assert json.loads(by_source["vis"]["meta"])["mix"]["origin"] == "raw"


# ---------------------------------------------------------------- bad recipes: one clear line each


@pytest.mark.parametrize(
    "recipe, message",
    [
        ({"sources": [{"path": "alpha"}, {"path": "beta", "weigth": 2}]}, "recipe.yaml:4: sources.1.weigth: unknown key"),
        ({"sources": [{"path": "alpha"}], "totl": 5}, "recipe.yaml:3: totl: unknown key"),
        ({"sources": [{"path": "./missing"}]}, "sources.0 (missing): ./missing: no such file or folder"),
        ({"sources": [{"path": "alpha", "count": 500}]}, "sources.0 (alpha): count 500 needs 500 samples but the source has only 400"),
        ({"sources": [{"path": "alpha", "weight": 1}, {"path": "beta", "weight": 1}], "total": 1000},
         "sources.0 (alpha): its weight needs 500 samples but the source has only 400 after filters and dedup; set upsample: true"),
        ({"sources": [{"path": "alpha", "weight": -1}]}, "recipe.yaml:3: sources.0.weight: Input should be greater than or equal to 0"),
        ({"sources": []}, "recipe.yaml:1: no sources"),
        ({"sources": [{"path": "alpha", "weight": 1, "count": 3}]}, "recipe.yaml:2: sources.0: give a weight or a count, not both"),
        ({"sources": [{"path": "alpha", "count": 5}, {"path": "pairs", "count": 5}]}, "sources.1 (pairs): a preference dataset, but sources.0 (alpha) is sft"),
        ({"sources": [{"path": "alpha", "weight": 0}, {"path": "beta", "weight": 0}]}, "zero total weight"),
        ({"sources": [{"path": "alpha"}, {"path": "alpha"}]}, "source name 'alpha' is used twice"),
        ({"sources": [{"path": "alpha", "filters": ["lenght"]}]}, "sources.0 (alpha): unknown filter 'lenght'"),
        ({"sources": [{"path": "alpha", "filters": [{"length": {"min_answer_words": 99}}]}, {"path": "beta"}]},
         "sources.0 (alpha): no samples left after filters and dedup"),
        ({"sources": [{"path": "alpha", "count": 10}], "validation": 20}, "recipe.yaml: validation: 20 samples asked but the mix has only 10"),
        ({"sources": [{"path": "alpha", "count": 10}], "validation": 1.5}, "validation: a fraction must be in [0, 1)"),
        ({"sources": [{"path": "alpha", "count": 10}], "dedup": {"treshold": 0.5}}, "recipe.yaml: dedup: treshold: unknown key"),
    ],
)
def test_bad_recipes_fail_with_one_clear_line(tmp_path, two_sources, recipe, message):
    write_pairs(tmp_path / "pairs", "p", 5)
    result, out = mix(tmp_path, recipe)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert message in " ".join(result.output.split()), result.output
    assert not out.exists()
    assert not list(tmp_path.glob(".out.*"))  # no temporary left behind


def test_bad_yaml_and_missing_recipe_file(tmp_path):
    (tmp_path / "broken.yaml").write_text("sources:\n  - path: a\n    weight: [1\n")
    result = runner.invoke(app, ["mix", str(tmp_path / "broken.yaml"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "broken.yaml:" in result.output and "invalid recipe" in result.output
    result = runner.invoke(app, ["mix", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "no such recipe file" in result.output


def test_existing_output_needs_overwrite(tmp_path, two_sources):
    recipe_file = write_recipe(tmp_path / "r.yaml", {"sources": [{"path": "alpha", "count": 3}]})
    (tmp_path / "out").mkdir()
    result = runner.invoke(app, ["mix", str(recipe_file), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "--overwrite" in result.output


def test_shipped_recipes_parse():
    for path in sorted(Path(__file__).resolve().parents[1].joinpath("recipes").glob("mix_*.yaml")):
        try:
            load_recipe(path)
        except SynthError as e:  # pragma: no cover - the message is the failure
            pytest.fail(str(e))


def test_sources_without_ids_or_meta_get_content_ids(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]} for i in range(6)]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result, out = mix(tmp_path, {"sources": [{"path": "chat.jsonl", "count": 6}], "validation": 2})
    assert result.exit_code == 0, result.output
    dsd = load_from_disk(str(out))
    ids = list(dsd["train"]["id"]) + list(dsd["validation"]["id"])
    assert len(set(ids)) == 6 and all(len(i) == 16 for i in ids)
    assert sources_of(dsd["train"]) == {"chat": 4}


# ---------------------------------------------------------------- the record spine: reader, writer, bad input


def test_a_duplicate_key_in_a_recipe_is_an_error(tmp_path, two_sources):
    (tmp_path / "dup.yaml").write_text("sources:\n  - path: alpha\n    weight: 1\n    weight: 3\n")
    result = runner.invoke(app, ["mix", str(tmp_path / "dup.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    line = " ".join(result.output.split())
    assert "dup.yaml:4: invalid recipe: sources.0.weight: duplicate key (first at line 3)" in line
    assert not (tmp_path / "out").exists()


def test_a_wrong_type_names_its_line_and_set_overrides_the_recipe(tmp_path, two_sources):
    """`synth mix` reads its recipe with the loader of `synth run` and `synth train`: file:line errors and
    ``-s path=value`` overrides, checked like file values."""
    recipe = write_recipe(tmp_path / "r.yaml", {"sources": [{"path": "alpha", "count": 3}, {"path": "beta", "count": 2}]})
    out = tmp_path / "out"
    recipe.write_text(recipe.read_text().replace("count: 2", "count: two"))
    line = one_line_error(runner.invoke(app, ["mix", str(recipe), "-o", str(out)]),
                          f"error: {recipe}:5: sources.1.count: Input should be a valid integer")
    assert not out.exists(), line
    result = runner.invoke(app, ["mix", str(recipe), "-o", str(out), "-s", "sources.1.count=4", "--set", "validation=1"])
    assert result.exit_code == 0, result.output
    dsd = load_from_disk(str(out))
    assert (len(dsd["train"]), len(dsd["validation"])) == (6, 1)
    assert sources_of(dsd["train"]) + sources_of(dsd["validation"]) == {"alpha": 3, "beta": 4}
    recipe.write_text(recipe.read_text().replace("count: two", "count: 2"))
    one_line_error(runner.invoke(app, ["mix", str(recipe), "-o", str(out), "--overwrite", "-s", "sources.0.count=many"]),
                   "error: -s sources.0.count=many: sources.0.count: Input should be a valid integer")
    one_line_error(runner.invoke(app, ["mix", str(recipe), "-o", str(out), "--overwrite", "-s", "totl=5"]),
                   "error: -s totl=5: totl: unknown key (did you mean 'total'?)")


def test_peer_layout_sources_with_relative_images_from_another_directory(tmp_path, monkeypatch):
    """A TRL-style JSONL (content parts, image parts without a text key, relative image paths: datasets 5
    reads `content` as Json) and a sharegpt file mix into one dataset, run from elsewhere."""
    import io

    folder = tmp_path / "data"
    (folder / "img").mkdir(parents=True)
    pictures = []
    for i in range(3):
        buf = io.BytesIO()
        Image.new("RGB", (6 + i, 6), (i * 60, 0, 0)).save(buf, format="JPEG")
        pictures.append(buf.getvalue())
        (folder / "img" / f"{i}.jpg").write_bytes(pictures[-1])
    trl = [{"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"q{i}"}]},
                         {"role": "assistant", "content": [{"type": "text", "text": f"a{i}"}]}], "images": [f"img/{i}.jpg"]}
           for i in range(3)]
    trl.append({"messages": [{"role": "user", "content": "text q"}, {"role": "assistant", "content": "text a"}], "images": []})
    (folder / "trl.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trl))
    sharegpt = [{"conversations": [{"from": "human", "value": f"s{i}"}, {"from": "gpt", "value": f"t{i}"}]} for i in range(2)]
    (folder / "sg.json").write_text(json.dumps(sharegpt))
    write_recipe(tmp_path / "r.yaml", {"sources": [{"path": "data/trl.jsonl", "count": 4}, {"path": "data/sg.json", "count": 2}]})
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "img").mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(app, ["mix", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    from datasets import Image as ImageFeature
    from datasets import List

    train = load_from_disk(str(tmp_path / "out"))["train"].cast_column("images", List(ImageFeature(decode=False)))
    assert sources_of(train) == {"trl": 4, "sg": 2}
    by_question = {}
    for row in train:
        texts = [p["text"] for p in row["messages"][0]["content"] if p["type"] == "text"]
        by_question[texts[0]] = row
    for i in range(3):
        row = by_question[f"q{i}"]
        assert [p["type"] for p in row["messages"][0]["content"]] == ["image", "text"]
        assert [img["bytes"] for img in row["images"]] == [pictures[i]]  # a JPEG stays that JPEG
    assert by_question["s0"]["images"] == [] and by_question["text q"]["messages"][1]["content"] == [{"type": "text", "text": "text a"}]


def test_a_truncated_jpeg_in_a_source_is_one_clear_line_and_nothing_is_written(tmp_path):
    import io

    buf = io.BytesIO()
    Image.effect_noise((128, 128), 80).convert("RGB").save(buf, format="JPEG")
    data = buf.getvalue()
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "cut.jpg").write_bytes(data[: len(data) // 2])
    rows = [{"id": "cut-1", "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]},
                                         {"role": "assistant", "content": "a"}], "images": ["img/cut.jpg"]}]
    (tmp_path / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result, out = mix(tmp_path, {"sources": [{"path": "bad.jsonl", "count": 1}]})
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    line = " ".join(result.output.split())
    assert "sources.0 (bad)" in line and "row 1 (id cut-1)" in line and "truncated JPEG" in line
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_rejects_live_inside_the_output_and_stale_sidecars_go(tmp_path):
    write_sft(tmp_path / "src", "s", 5, answers=["ok", "no", "a long enough answer here", "another long enough answer", "yes"])
    (tmp_path / "out.rejects.jsonl").write_text('{"stale": true}\n')  # an older synth wrote it beside OUT
    result, out = mix(tmp_path, {"sources": [{"path": "src", "count": 2, "filters": [{"length": {"min_answer_words": 3}}]}]})
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.name != ".synth-output") == ["dataset_dict.json", "mix_report.json", "rejects.jsonl", "train"]
    assert len((out / "rejects.jsonl").read_text().splitlines()) == 3
    assert f"rejects: {out / 'rejects.jsonl'}" in " ".join(result.output.split())
    assert not (tmp_path / "out.rejects.jsonl").exists()
    result, out = mix(tmp_path, {"sources": [{"path": "src", "count": 5}]})
    assert result.exit_code == 0 and not (out / "rejects.jsonl").exists()


def test_an_empty_source_is_one_clear_line(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    result, out = mix(tmp_path, {"sources": [{"path": "empty.jsonl", "count": 1}]})
    assert result.exit_code == 1
    assert "sources.0 (empty):" in result.output and "the file is empty" in result.output
    assert not out.exists()
