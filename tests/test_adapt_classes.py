"""Class lists of classification-style template sets come from the data (or --classes), never the demo."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from test_adapt_data import NLI_ROWS_INT, write_jsonl

from synth.adapt import adapt
from synth.errors import SynthError
from tests.cli_helpers import one_line_error, run_cli

DIGITS = [str(d) for d in range(10)]


def digit_png(digit: int, variant: int) -> bytes:
    """An 8x8-ish grey digit like sklearn's digits, drawn with PIL (scaled up so PIL can draw text)."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (32, 32), 0)
    ImageDraw.Draw(image).text((10 + variant % 3, 8 + variant % 2), str(digit), fill=255)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def digits_folder(root: Path, per_class: int = 2) -> Path:
    """An image folder with one sub-folder per digit (the layout of sklearn digits exported to disk)."""
    for digit in range(10):
        (root / str(digit)).mkdir(parents=True)
        for k in range(per_class):
            (root / str(digit) / f"{digit}_{k}.png").write_bytes(digit_png(digit, k))
    return root


def answers_and_prompts(result) -> tuple[list[str], list[str]]:
    messages = result.dataset["messages"]
    return [m[-1]["content"][0]["text"] for m in messages], [m[0]["content"][1]["text"] for m in messages]


def test_digits_image_folder_gets_its_own_classes(tmp_path):
    folder = digits_folder(tmp_path / "digits")
    result = adapt(folder, "classification", tmp_path / "out")
    answers, prompts = answers_and_prompts(result)
    assert sorted(answers) == sorted(DIGITS * 2)
    for prompt in prompts:
        assert "circle" not in prompt and "square" not in prompt
        assert all(d in prompt for d in DIGITS), prompt
    assert result.notes == []  # a ClassLabel column names its classes: nothing guessed


def csv_source(tmp_path: Path, labels: list) -> Path:
    folder = tmp_path / "csv"
    (folder / "img").mkdir(parents=True)
    with open(folder / "data.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label"])
        for i, label in enumerate(labels):
            (folder / "img" / f"{i}.png").write_bytes(digit_png(i % 10, i))
            writer.writerow([f"img/{i}.png", label])
    return folder / "data.csv"


def test_csv_string_labels_take_the_distinct_labels_with_a_note(tmp_path):
    source = csv_source(tmp_path, ["dog", "cat", "bird", "cat"])
    result = run_cli("adapt", source, "-t", "classification", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "note: classes taken from the 3 distinct values of 'label': bird, cat, dog" in result.output
    from datasets import load_from_disk

    rows = load_from_disk(str(tmp_path / "out"))
    assert [m[-1]["content"][0]["text"] for m in rows["messages"]] == ["dog", "cat", "bird", "cat"]
    assert all("bird" in m[0]["content"][1]["text"] and "circle" not in m[0]["content"][1]["text"]
               for m in rows["messages"])


def test_csv_integer_labels_sort_by_value(tmp_path):
    source = csv_source(tmp_path, [10, 2, 1, 2])
    result = adapt(source, "classification", tmp_path / "out")
    answers, prompts = answers_and_prompts(result)
    assert answers == ["10", "2", "1", "2"]
    assert "1, 2, 10" in " ".join(prompts) or "1 / 2 / 10" in " ".join(prompts)
    assert result.notes and "3 distinct values" in result.notes[0]


def test_class_label_dataset_saved_to_disk_uses_its_names(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Image

    images = [{"bytes": digit_png(i, 0), "path": None} for i in range(3)]
    features = Features({"image": Image(), "label": ClassLabel(names=["zero", "one", "two"])})
    Dataset.from_dict({"image": images, "label": [2, 0, 1]}, features=features).save_to_disk(str(tmp_path / "ds"))
    result = adapt(tmp_path / "ds", "classification", tmp_path / "out")
    answers, prompts = answers_and_prompts(result)
    assert answers == ["two", "zero", "one"]
    assert all("zero" in p and "two" in p and "circle" not in p for p in prompts)


def test_classes_option_and_a_label_outside_it(tmp_path):
    source = csv_source(tmp_path, ["cat", "dog", "cat"])
    ok = run_cli("adapt", source, "-t", "classification", "-o", tmp_path / "out", "--classes", "dog,cat,fox")
    assert ok.exit_code == 0, ok.output
    assert "note:" not in ok.output  # the user gave the list
    from datasets import load_from_disk

    prompt = load_from_disk(str(tmp_path / "out"))["messages"][0][0]["content"][1]["text"]
    assert "dog" in prompt and "fox" in prompt and prompt.index("dog") < prompt.index("cat")
    one_line_error(
        run_cli("adapt", source, "-t", "classification", "-o", tmp_path / "o2", "--classes", "dog,fox"),
        "record row-0", "label 'cat'", "not among the classes (dog, fox)", "--classes",
    )
    assert not (tmp_path / "o2").exists()
    skipped = adapt(source, "classification", tmp_path / "o3", classes=["dog"], on_error="skip")
    assert skipped.samples == 1 and skipped.reasons() == {"unknown_label": 2}


def test_classes_option_is_checked(tmp_path):
    source = csv_source(tmp_path, ["cat"])
    one_line_error(run_cli("adapt", source, "-t", "classification", "-o", tmp_path / "o", "--classes", "a,,b"),
                   "--classes", "separated by commas")
    one_line_error(run_cli("adapt", source, "-t", "classification", "-o", tmp_path / "o", "--classes", "a,a"),
                   "'a' is listed twice")
    rows = write_jsonl(tmp_path / "s.jsonl", [{"document": "d", "summary": "s"}])
    one_line_error(run_cli("adapt", rows, "-t", "summarization", "-o", tmp_path / "o", "--classes", "a"),
                   "template set 'summarization' has no class list")


def test_nli_integer_labels_without_names_and_other_label_sets(tmp_path):
    rows = write_jsonl(tmp_path / "nli.jsonl", NLI_ROWS_INT)
    result = adapt(rows, "nli", tmp_path / "out")
    assert [m[-1]["content"] for m in result.dataset["messages"]][:2] == ["entailment", "contradiction"]
    # RTE-style labels: --classes renames the list, and the instructions follow it
    rte = write_jsonl(tmp_path / "rte.jsonl", [{"premise": "p", "hypothesis": "h", "label": "not_entailment"}])
    out = adapt(rte, "nli", tmp_path / "rte-out", classes=["entailment", "not_entailment"])
    user, answer = out.dataset["messages"][0][-2]["content"], out.dataset["messages"][0][-1]["content"]
    assert answer == "not_entailment" and "neutral" not in user and "not_entailment" in user
    with pytest.raises(SynthError, match="label 'not_entailment'"):
        adapt(rte, "nli", tmp_path / "rte-bad")


def test_nli_class_label_names_win_over_the_sets_default(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"premise": Value("string"), "hypothesis": Value("string"),
                         "label": ClassLabel(names=["entailment", "not_entailment"])})
    Dataset.from_dict({"premise": ["p"], "hypothesis": ["h"], "label": [1]}, features=features).save_to_disk(
        str(tmp_path / "rte"))
    out = adapt(tmp_path / "rte", "nli", tmp_path / "out")
    user, answer = out.dataset["messages"][0][-2]["content"], out.dataset["messages"][0][-1]["content"]
    assert answer == "not_entailment" and "neutral" not in user and "not_entailment" in user
