"""The adaptation engine and the `synth adapt` / `synth templates` commands, on real files on disk."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_adapt_data import (
    NLI_ROWS_INT,
    SQUAD_ROWS,
    SUMMARY_ROWS,
    draw_scene,
    make_shapes_dataset,
    shapes_rows,
    write_jsonl,
)

from synth.adapt import adapt, load_template_set, shipped_names
from synth.adapt.engine import Renderer, choose_variant
from synth.errors import SynthError
from synth.records import load_meta, row_to_sample
from tests.cli_helpers import one_line_error, run_cli


@pytest.fixture()
def shapes(tmp_path) -> Path:
    return make_shapes_dataset(tmp_path / "shapes", 6)


def custom_set(path: Path, **overrides) -> Path:
    """A template set YAML built from the shipped vqa_open set with some keys changed."""
    import yaml

    data = yaml.safe_load((Path(load_template_set("vqa_open").origin)).read_text())
    data.update(overrides)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def image_folder_jsonl(tmp_path: Path, images: dict[str, bytes], rows: list[dict]) -> Path:
    """A folder with image files and a data.jsonl whose `image` column holds relative paths."""
    folder = tmp_path / "folder"
    (folder / "imgs").mkdir(parents=True)
    for name, data in images.items():
        (folder / "imgs" / name).write_bytes(data)
    write_jsonl(folder / "data.jsonl", rows)
    return folder


# ---------------------------------------------------------------- commands


def test_templates_lists_every_shipped_set():
    result = run_cli("templates")
    assert result.exit_code == 0, result.output
    for name in shipped_names():
        assert name in result.output
    assert "multiple-choice" in result.output


def test_adapt_cli_writes_dataset_and_summary(shapes, tmp_path):
    out = tmp_path / "out"
    result = run_cli("adapt", shapes, "--template", "vqa_open", "--out", out)
    assert result.exit_code == 0, result.output
    assert "wrote 15 samples from 6 records" in result.output and str(out) in result.output
    assert "skipped 0" in result.output
    from datasets import load_from_disk

    ds = load_from_disk(str(out))
    assert set(ds.column_names) == {"id", "messages", "images", "meta"}
    sample = row_to_sample(ds[0])  # validates against the pydantic data model
    assert sample.messages[0].image_count == 1 and len(sample.images) == 1
    assert not Path(str(out) + ".rejects.jsonl").exists() and not (out / "rejects.jsonl").exists()
    report = json.loads((out / "report.json").read_text())
    assert report == {"stage": "adapt", "template": "vqa_open", "task": report["task"], "seed": 0,
                      "records": 6, "samples": 15, "skipped": {}}


def test_adapt_leaves_the_source_untouched_and_result_memory_mapped(shapes, tmp_path):
    before = _files(shapes)
    result = adapt(shapes, "vqa_conversation", tmp_path / "out")
    assert _files(shapes) == before  # no map cache files written into the user's folder
    assert result.dataset.cache_files and all(
        Path(f["filename"]).resolve().parent == (tmp_path / "out").resolve()
        for f in result.dataset.cache_files
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "shapes"]  # temporary folders are gone


def test_an_empty_source_is_one_clear_error(tmp_path):
    from datasets import Dataset

    from synth.adapt import adapt_dataset

    (tmp_path / "empty.jsonl").write_text("")
    one_line_error(run_cli("adapt", tmp_path / "empty.jsonl", "-t", "summarization", "-o", tmp_path / "o1"),
                   "empty.jsonl: the file is empty")
    rows = Dataset.from_dict({"id": [], "document": [], "summary": []})
    rows.save_to_disk(str(tmp_path / "zero"), num_shards=1)
    one_line_error(run_cli("adapt", tmp_path / "zero", "-t", "summarization", "-o", tmp_path / "o2"),
                   "the dataset is empty (0 rows)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl", "zero"]
    # The library function on an empty Dataset gives an empty result in the SFT layout.
    result = adapt_dataset(rows, load_template_set("summarization"))
    assert (result.records, result.samples) == (0, 0) and "messages" in result.dataset.column_names


def test_template_set_by_path_and_limit(shapes, tmp_path):
    path = custom_set(tmp_path / "mine.yaml", name="mine")
    result = run_cli("adapt", shapes, "-t", path, "-o", tmp_path / "out", "--limit", "2")
    assert result.exit_code == 0, result.output
    assert "wrote 5 samples from 2 records" in result.output


def test_text_sets_with_map_for_other_column_names(tmp_path):
    rows = [{"id": r["id"], "article": r["document"], "highlights": r["summary"]} for r in SUMMARY_ROWS]
    source = write_jsonl(tmp_path / "cnn.jsonl", rows)
    out = tmp_path / "out"
    result = run_cli(
        "adapt",
        source,
        "-t",
        "summarization",
        "-o",
        out,
        "--map",
        "document=article",
        "--map",
        "summary=highlights",
    )
    assert result.exit_code == 0, result.output
    from datasets import load_from_disk

    ds = load_from_disk(str(out))
    assert "images" not in ds.column_names
    first = ds[0]["messages"]
    assert isinstance(first[0]["content"], str) and SUMMARY_ROWS[0]["document"] in first[0]["content"]
    assert first[1] == {"role": "assistant", "content": SUMMARY_ROWS[0]["summary"]}


def test_map_to_a_plain_answer_column_and_csv(tmp_path):
    import csv

    source = tmp_path / "qa.csv"
    with open(source, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["context", "question", "answer"])
        writer.writeheader()
        for r in SQUAD_ROWS:
            writer.writerow(
                {"context": r["context"], "question": r["question"], "answer": r["answers"]["text"][0]}
            )
    result = run_cli(
        "adapt", source, "-t", "text_qa_extractive", "-o", tmp_path / "out", "--map", "answer=answer"
    )
    assert result.exit_code == 0, result.output
    from datasets import load_from_disk

    answers = [m[-1]["content"] for m in load_from_disk(str(tmp_path / "out"))["messages"]]
    assert answers == ["the Atlantic", "1911"]


def test_relative_image_paths_resolve_against_the_dataset_folder(tmp_path):
    rows = shapes_rows(2)
    images = {f"{r['id']}.png": r["image"]["bytes"] for r in rows}
    folder = image_folder_jsonl(
        tmp_path, images, [{"id": r["id"], "image": f"imgs/{r['id']}.png", "text": r["text"]} for r in rows]
    )
    out = tmp_path / "out"
    result = run_cli("adapt", folder, "-t", "ocr", "-o", out)
    assert result.exit_code == 0, result.output
    from datasets import Image, List, load_from_disk

    ds = load_from_disk(str(out)).cast_column("images", List(Image(decode=False)))
    assert [r["images"][0]["bytes"] for r in ds] == [images["shapes-00000.png"], images["shapes-00001.png"]]


def test_classlabel_ints_become_names(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features(
        {
            "premise": Value("string"),
            "hypothesis": Value("string"),
            "label": ClassLabel(names=["entailment", "neutral", "contradiction"]),
        }
    )
    rows = [{k: r[k] for k in ("premise", "hypothesis", "label")} for r in NLI_ROWS_INT]
    Dataset.from_list(rows, features=features).save_to_disk(str(tmp_path / "nli"))
    result = adapt(tmp_path / "nli", "nli", tmp_path / "out")
    answers = [m[-1]["content"] for m in result.dataset["messages"]]
    assert answers == ["entailment", "contradiction", "neutral"]
    # no id column: records are named by their row
    assert [load_meta(m)["source_id"] for m in result.dataset["meta"]] == ["row-0", "row-1", "row-2"]


# ---------------------------------------------------------------- errors: one line, exit 1


def test_error_unknown_template_set(shapes, tmp_path):
    result = run_cli("adapt", shapes, "-t", "captoin", "-o", tmp_path / "out")
    one_line_error(result, "unknown template set 'captoin'", "caption_brief", "vqa_open")


def test_error_unknown_item_variable_names_set_variant_and_line_before_any_record(shapes, tmp_path):
    good = load_template_set("vqa_open").instructions
    bad = "Look at the picture.\n{{ questoin }}"
    # only the last variant is wrong: a record that draws another one would render fine
    path = custom_set(tmp_path / "bad.yaml", name="bad", instructions=good[:5] + [bad])
    result = run_cli("adapt", shapes, "-t", path, "-o", tmp_path / "out", "--limit", "1")
    line = one_line_error(result, "template set 'bad'", "instructions[5], line 2", "undefined template variable 'questoin'",
                          "the items of 'qa' have: answer, kind, options, question")
    assert "record" not in line
    assert not (tmp_path / "out").exists()


def test_error_undefined_variable_is_found_when_the_set_is_loaded(tmp_path):
    import yaml

    data = yaml.safe_load(Path(load_template_set("summarization").origin).read_text())
    data["instructions"] = data["instructions"][:5] + ["Summarise {{ documnet }} briefly."]
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump({**data, "name": "typo"}, sort_keys=False))
    with pytest.raises(SynthError, match=r"template set 'typo' .*instructions\[5\], line 1: undefined template variable "
                                         r"'documnet' \(defined: document, summary\); add it under 'variables:'"):
        load_template_set(path)
    # `--limit 5` over rows that would never draw the bad variant still fails, before reading the source
    source = write_jsonl(tmp_path / "d.jsonl", [{"id": f"s{i}", "document": "d", "summary": "s"} for i in range(5)])
    one_line_error(run_cli("adapt", source, "-t", path, "-o", tmp_path / "out", "--limit", "5"), "'documnet'")


def test_a_duplicate_key_in_a_template_set_is_an_error(tmp_path):
    text = Path(load_template_set("summarization").origin).read_text()
    path = tmp_path / "dup.yaml"
    path.write_text(text + "answer: \"{{ document }}\"\n")
    with pytest.raises(SynthError, match=r"dup\.yaml:\d+: invalid template set: answer: duplicate key \(first at line \d+\)"):
        load_template_set(path)


def test_error_missing_column_suggests_map(tmp_path):
    source = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "article": "x", "highlights": "y"}])
    result = run_cli("adapt", source, "-t", "summarization", "-o", tmp_path / "out")
    one_line_error(result, "column 'document'", "columns: id, article, highlights", "--map document=COLUMN")


def test_error_map_unknown_variable(shapes, tmp_path):
    result = run_cli(
        "adapt", shapes, "-t", "caption_brief", "-o", tmp_path / "out", "--map", "captoin=caption"
    )
    one_line_error(result, "no variable 'captoin'", "caption, image")
    result = run_cli("adapt", shapes, "-t", "caption_brief", "-o", tmp_path / "out", "--map", "caption")
    one_line_error(result, "expected VARIABLE=COLUMN")


def test_error_missing_nested_field_names_record(tmp_path):
    rows = [dict(r) for r in SQUAD_ROWS]
    rows[1] = {**rows[1], "answers": {"text": [], "answer_start": []}}
    source = write_jsonl(tmp_path / "squad.jsonl", rows)
    result = run_cli("adapt", source, "-t", "text_qa_extractive", "-o", tmp_path / "out")
    one_line_error(result, "record sq-2", "answers.text.0")


def test_error_corrupt_image_names_record_and_path(tmp_path):
    good = draw_scene([], "OK")
    folder = image_folder_jsonl(
        tmp_path,
        {"a.png": good, "b.png": good[:40]},  # b.png is truncated
        [{"id": "a", "image": "imgs/a.png", "text": "OK"}, {"id": "b", "image": "imgs/b.png", "text": "OK"}],
    )
    result = run_cli("adapt", folder, "-t", "ocr", "-o", tmp_path / "out")
    one_line_error(result, "record b", "corrupt image", "imgs/b.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]  # no output, no temporary leftovers


def test_error_missing_and_escaping_image_paths(tmp_path):
    folder = image_folder_jsonl(tmp_path, {}, [{"id": "x", "image": "imgs/nope.png", "text": "T"}])
    one_line_error(run_cli("adapt", folder, "-t", "ocr", "-o", tmp_path / "o1"), "record x", "nope.png")
    (tmp_path / "secret.png").write_bytes(draw_scene([], "S"))
    write_jsonl(folder / "data.jsonl", [{"id": "y", "image": "../secret.png", "text": "T"}])
    one_line_error(
        run_cli("adapt", folder, "-t", "ocr", "-o", tmp_path / "o2"), "record y", "outside the dataset folder"
    )


def test_error_malformed_jsonl_line(tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps(SQUAD_ROWS[0]) + "\n{not json\n")
    result = run_cli("adapt", source, "-t", "text_qa_extractive", "-o", tmp_path / "out")
    one_line_error(result, f"{source}:2", "malformed JSON line")


def test_error_output_exists_without_overwrite(shapes, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    one_line_error(run_cli("adapt", shapes, "-t", "ocr", "-o", out), "already exists", "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"
    # --overwrite replaces only a folder synth wrote: this one is the user's, and stays as it is.
    one_line_error(run_cli("adapt", shapes, "-t", "ocr", "-o", out, "--overwrite"), "not written by synth",
                   "choose another --out")
    assert (out / "keep.txt").read_text() == "mine"
    synth_out = tmp_path / "synth_out"
    assert run_cli("adapt", shapes, "-t", "ocr", "-o", synth_out).exit_code == 0
    (synth_out / "stale.txt").write_text("old run")
    result = run_cli("adapt", shapes, "-t", "ocr", "-o", synth_out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (synth_out / "stale.txt").exists()
    # ... and never the input it reads (here: the output of the previous run)
    before = sorted(p.name for p in synth_out.iterdir())
    one_line_error(run_cli("adapt", synth_out, "-t", "caption_brief", "-o", synth_out, "--overwrite"),
                   "is the input", "choose another --out")
    assert sorted(p.name for p in synth_out.iterdir()) == before


def test_overwrite_refuses_the_current_folder_and_files(shapes, tmp_path, monkeypatch):
    """`-o .` or `-o notes.txt` with --overwrite: refused, nothing deleted (export, clean, report alike)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "notes.txt").write_text("mine")
    one_line_error(run_cli("adapt", shapes, "-t", "ocr", "-o", ".", "--overwrite"), "not written by synth")
    one_line_error(run_cli("export", shapes, "-o", ".", "-f", "llava", "--overwrite"), "not written by synth")
    one_line_error(run_cli("filter", shapes, "--out", "notes.txt", "--filter", "length", "--overwrite"),
                   "is a file")
    one_line_error(run_cli("report", shapes, "-o", "."), "is a folder", "give a file path")
    assert [p.name for p in work.iterdir()] == ["notes.txt"] and (work / "notes.txt").read_text() == "mine"


def test_error_invalid_template_set_file_names_file_and_key(tmp_path, shapes):
    path = custom_set(tmp_path / "typo.yaml", name="typo", answr="{{ answer }}")
    one_line_error(
        run_cli("adapt", shapes, "-t", path, "-o", tmp_path / "out"), str(path), "answr", "unknown key"
    )
    path = custom_set(tmp_path / "few.yaml", name="few", instructions=["{{ question }}"] * 3)
    one_line_error(run_cli("adapt", shapes, "-t", path, "-o", tmp_path / "out"), str(path), "instructions")
    path = custom_set(tmp_path / "syntax.yaml", name="syntax", instructions=["{{ question }"] * 5)
    one_line_error(
        run_cli("adapt", shapes, "-t", path, "-o", tmp_path / "out"),
        "template syntax error",
        "instructions[0]",
    )


def test_error_in_worker_process_is_one_line(tmp_path):
    good = draw_scene([], "OK")
    rows = [{"id": f"r{i}", "image": f"imgs/{'bad' if i == 5 else 'a'}.png", "text": "OK"} for i in range(8)]
    folder = image_folder_jsonl(tmp_path, {"a.png": good, "bad.png": b"not an image"}, rows)
    result = run_cli("adapt", folder, "-t", "ocr", "-o", tmp_path / "out", "--num-proc", "2")
    one_line_error(result, "record r5", "bad.png")


# ---------------------------------------------------------------- --on-error skip


def test_on_error_skip_writes_rejects_and_keeps_good_records(tmp_path):
    good = draw_scene([], "OK")
    rows = [
        {"id": "a", "image": "imgs/a.png", "text": "OK"},
        {"id": "b", "image": "imgs/b.png", "text": "OK"},
        {"id": "c", "image": "imgs/a.png", "text": "FINE"},
    ]
    folder = image_folder_jsonl(tmp_path, {"a.png": good, "b.png": b"\x89PNG garbage"}, rows)
    out = tmp_path / "out"
    result = run_cli("adapt", folder, "-t", "ocr", "-o", out, "--on-error", "skip")
    assert result.exit_code == 0, result.output
    assert "wrote 2 samples from 3 records" in result.output and "skipped 1 (bad_image: 1)" in result.output
    assert f"see {out / 'rejects.jsonl'}" in " ".join(result.output.split())
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 1
    assert rejects[0]["id"] == "b" and rejects[0]["reason"] == "bad_image" and rejects[0]["stage"] == "adapt"
    assert "record b" in rejects[0]["detail"] and "b.png" in rejects[0]["detail"]
    from datasets import load_from_disk

    ds = load_from_disk(str(out))
    assert [load_meta(m)["source_id"] for m in ds["meta"]] == ["a", "c"]
    assert [m[-1]["content"][0]["text"] for m in ds["messages"]] == ["OK", "FINE"]


def test_on_error_skip_counts_render_and_field_errors(tmp_path):
    # integer labels: -1 (SNLI's "no gold label") is not among the classes
    rows = [dict(r) for r in NLI_ROWS_INT] + [{"id": "nli-x", "premise": "p", "hypothesis": "h", "label": -1}]
    result = adapt(write_jsonl(tmp_path / "ints.jsonl", rows), "nli", tmp_path / "o1", on_error="skip")
    assert (result.samples, result.skipped) == (3, 1)
    assert result.rejects[0]["id"] == "nli-x" and result.rejects[0]["reason"] == "unknown_label"
    # a null field is an error (never the text "None"); so is an empty answer
    rows = [
        {"id": "ok", "premise": "p", "hypothesis": "h", "label": "neutral"},
        {"id": "nli-y", "premise": None, "hypothesis": "h", "label": "neutral"},
        {"id": "nli-z", "premise": "p", "hypothesis": "h", "label": ""},
    ]
    classes = ["", "neutral"]  # a class list that allows an empty label: the answer renders empty
    result = adapt(write_jsonl(tmp_path / "strs.jsonl", rows), "nli", tmp_path / "o2", on_error="skip",
                   classes=classes)
    assert result.samples == 1
    by_id = {r["id"]: r for r in result.rejects}
    assert set(by_id) == {"nli-y", "nli-z"}
    assert by_id["nli-y"]["reason"] == "missing_field" and "null" in by_id["nli-y"]["detail"]
    assert by_id["nli-z"]["reason"] == "missing_field" and "rendered empty" in by_id["nli-z"]["detail"]


# ---------------------------------------------------------------- determinism and parallelism


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_output(shapes, tmp_path):
    for name in ("a", "b"):
        assert run_cli("adapt", shapes, "-t", "vqa_open", "-o", tmp_path / name, "--seed", "7").exit_code == 0
    files_a, files_b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert files_a and files_a == files_b


def test_different_seed_changes_variants(shapes, tmp_path):
    variants = {}
    for seed in (0, 1):
        result = adapt(shapes, "vqa_open", tmp_path / f"s{seed}", seed=seed)
        variants[seed] = [load_meta(m)["variant"] for m in result.dataset["meta"]]
    assert len(variants[0]) == len(variants[1]) == 15
    assert variants[0] != variants[1]
    # and the choice is spread over the variants, not stuck on one
    assert len(set(variants[0])) >= 3


def test_variant_choice_is_stable_and_per_turn():
    assert choose_variant(0, "vqa_open", "rec-1", 0, 6) == choose_variant(0, "vqa_open", "rec-1", 0, 6)
    picks = {choose_variant(0, "vqa_open", "rec-1", turn, 6) for turn in range(40)}
    assert len(picks) > 1


def test_num_proc_2_equals_num_proc_1(tmp_path):
    shapes = make_shapes_dataset(tmp_path / "shapes", 9)
    one = adapt(shapes, "vqa_conversation", tmp_path / "p1", num_proc=1)
    two = adapt(shapes, "vqa_conversation", tmp_path / "p2", num_proc=2)
    assert one.dataset.to_dict() == two.dataset.to_dict()
    assert one.samples == 9


# ---------------------------------------------------------------- grouping and multiple choice


def test_group_mode_builds_multi_turn_conversations(shapes, tmp_path):
    result = adapt(shapes, "vqa_conversation", tmp_path / "out")
    rows = shapes_rows(1)
    sample = row_to_sample(result.dataset[0])
    qa = rows[0]["qa"]
    assert [m.role for m in sample.messages] == ["user", "assistant"] * len(qa)
    assert [m.image_count for m in sample.messages] == [1] + [0] * (2 * len(qa) - 1)
    assert len(sample.images) == 1
    assert [m.text for m in sample.messages[1::2]] == [q["answer"] for q in qa]
    for message, q in zip(sample.messages[0::2], qa):
        assert q["question"][1:] in message.text
    meta = sample.meta
    assert meta["items"] == [0, 1, 2] and len(meta["variants"]) == 3


def test_group_mode_splits_at_max_turns(shapes, tmp_path):
    path = custom_set(
        tmp_path / "pairs.yaml", name="pairs", items={"variable": "qa", "mode": "group", "max_turns": 2}
    )
    result = adapt(shapes, path, tmp_path / "out", limit=1)
    samples = [row_to_sample(r) for r in result.dataset]
    assert [len(s.messages) for s in samples] == [4, 2]
    for s in samples:  # each conversation carries the image in its first user turn
        assert s.messages[0].image_count == 1 and len(s.images) == 1
    assert [s.meta["items"] for s in samples] == [[0, 1], [2]]


def test_image_position_after(shapes, tmp_path):
    path = custom_set(tmp_path / "after.yaml", name="after", image_position="after")
    result = adapt(shapes, path, tmp_path / "out", limit=1)
    content = result.dataset[0]["messages"][0]["content"]
    assert [p["type"] for p in content] == ["text", "image"]


def test_multiple_choice_letter_points_at_the_answer(tmp_path):
    shapes = make_shapes_dataset(tmp_path / "shapes", 10)
    result = adapt(shapes, "multiple_choice", tmp_path / "out")
    ts = load_template_set("multiple_choice")
    renderer = Renderer(ts, seed=0)
    source = {r["id"]: r for r in shapes_rows(10)}
    orders = set()
    for row in result.dataset:
        meta = load_meta(row["meta"])
        item = source[meta["source_id"]]["qa"][meta["item"]]
        letter = row["messages"][1]["content"][0]["text"]
        instruction = row["messages"][0]["content"][1]["text"]
        index = "ABCD".index(letter)
        v = renderer.turn_variables({}, item, meta["source_id"], meta["item"])
        assert v["options"][index] == item["answer"] and v["answer_letter"] == letter
        assert sorted(v["options"]) == sorted(item["options"])
        # the letter shown next to the answer in the prompt is the answer's letter
        assert re.search(rf"\(?{letter}[.)]\)? {re.escape(item['answer'])}\b", instruction), instruction
        orders.add(tuple(v["options"]))
    assert any(list(o) != sorted(o) for o in orders)  # options really are shuffled


def test_multiple_choice_answer_not_in_options_is_an_error(tmp_path):
    rows = shapes_rows(1)
    rows[0]["qa"][0]["options"] = ["7", "8"]
    renderer = Renderer(load_template_set("multiple_choice"), seed=0)
    with pytest.raises(SynthError, match="not among the options"):
        renderer.render_record({"image": rows[0]["image"], "qa": rows[0]["qa"]}, "r")


def test_grounding_box_drops_ambiguous_objects(shapes, tmp_path):
    result = adapt(shapes, "grounding_box", tmp_path / "out", limit=2)
    labels = [m[0]["content"][1]["text"] for m in result.dataset["messages"]]
    assert len(labels) == 3 and not any("red circle" in t for t in labels[2:])


def test_image_folder_with_class_subfolders(tmp_path):
    """An image folder (labels from sub-folder names, a ClassLabel) through the classification set."""
    for label in ("circle", "square"):
        (tmp_path / "folder" / label).mkdir(parents=True)
        (tmp_path / "folder" / label / f"{label}.png").write_bytes(draw_scene([], label[:3].upper()))
    result = adapt(tmp_path / "folder", "classification", tmp_path / "out")
    answers = sorted(m[-1]["content"][0]["text"] for m in result.dataset["messages"])
    assert answers == ["circle", "square"]
    assert all(len(images) == 1 for images in result.dataset["images"])


def test_split_option_picks_a_split(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = [{"id": r["id"], "document": r["document"], "summary": r["summary"]} for r in SUMMARY_ROWS]
    DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows[:1])}).save_to_disk(
        str(tmp_path / "dd")
    )
    result = run_cli(
        "adapt", tmp_path / "dd", "-t", "summarization", "-o", tmp_path / "out", "--split", "test"
    )
    assert result.exit_code == 0, result.output
    assert "wrote 1 samples from 1 records" in result.output
    one_line_error(
        run_cli("adapt", tmp_path / "dd", "-t", "summarization", "-o", tmp_path / "o2", "--split", "dev"),
        "no split 'dev'",
    )


def test_fast_renderer_matches_render_output_and_errors():
    from synth.templating import compile_template, fast_renderer, render

    source = "{% for o in options %}{{ loop.index0 | letter }}. {{ o }}\n{% endfor %}{{ range(2) | list }}\n{{ nope }}"
    template = compile_template(source, "t")
    fast = fast_renderer(template, "t")
    variables = {"options": ["x", "y"], "nope": 1}
    assert fast(variables) == render(template, variables, "t") == "A. x\nB. y\n[0, 1]\n1"
    with pytest.raises(SynthError) as slow_error:
        render(template, {"options": []}, "t", "r9")
    with pytest.raises(SynthError) as fast_error:
        fast({"options": []}, "r9")
    assert str(fast_error.value) == str(slow_error.value)
    assert "t, line 3: unknown template variable" in str(fast_error.value) and "record r9" in str(
        fast_error.value
    )


# ---------------------------------------------------------------- bad input (the record spine)


def _jpeg() -> bytes:
    """A noisy JPEG: big enough that half of it is past the headers."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((128, 128), 80).convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_truncated_jpeg_is_one_clear_error_and_nothing_is_written(tmp_path):
    from PIL import Image

    good = _jpeg()
    cut = good[: len(good) // 2]
    import io

    Image.open(io.BytesIO(cut)).verify()  # what PIL's verify() alone lets through
    folder = image_folder_jsonl(
        tmp_path, {"a.jpg": good, "cut.jpg": cut},
        [{"id": "a", "image": "imgs/a.jpg", "text": "OK"}, {"id": "c", "image": "imgs/cut.jpg", "text": "OK"}],
    )
    (tmp_path / "out.rejects.jsonl").write_text('{"stale": true}\n')  # an older synth's sidecar
    one_line_error(run_cli("adapt", folder, "-t", "ocr", "-o", tmp_path / "out"), "record c", "truncated JPEG", "imgs/cut.jpg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "out.rejects.jsonl"]  # nothing half-written
    # the same image embedded in a saved dataset (bytes, no path)
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    features = Features({"id": Value("string"), "image": ImageFeature(), "text": Value("string")})
    Dataset.from_list([{"id": "e1", "image": {"bytes": cut, "path": None}, "text": "OK"}], features=features).save_to_disk(
        str(tmp_path / "saved")
    )
    one_line_error(run_cli("adapt", tmp_path / "saved", "-t", "ocr", "-o", tmp_path / "o2"), "record e1", "truncated JPEG")
    # --on-error skip: the row goes to rejects.jsonl inside the output; the stale sidecar beside it goes
    result = run_cli("adapt", folder, "-t", "ocr", "-o", tmp_path / "out", "--on-error", "skip")
    assert result.exit_code == 0, result.output
    assert "skipped 1 (bad_image: 1)" in result.output
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["id"], r["reason"]) for r in rejects] == [("c", "bad_image")] and "truncated JPEG" in rejects[0]["detail"]
    assert not (tmp_path / "out.rejects.jsonl").exists()
    # a clean rerun over it leaves no rejects file behind
    write_jsonl(folder / "data.jsonl", [{"id": "a", "image": "imgs/a.jpg", "text": "OK"}])
    assert run_cli("adapt", folder, "-t", "ocr", "-o", tmp_path / "out", "--overwrite").exit_code == 0
    assert not (tmp_path / "out" / "rejects.jsonl").exists()
    assert json.loads((tmp_path / "out" / "report.json").read_text())["skipped"] == {}


def test_corrupt_png_chunk_is_caught(tmp_path):
    good = draw_scene([], "OK")
    broken = bytearray(good)
    broken[60] ^= 0xFF  # inside the image data: the chunk checksum no longer matches
    folder = image_folder_jsonl(tmp_path, {"b.png": bytes(broken)}, [{"id": "p1", "image": "imgs/b.png", "text": "OK"}])
    one_line_error(run_cli("adapt", folder, "-t", "ocr", "-o", tmp_path / "out"), "record p1", "corrupt image", "imgs/b.png")
    assert not (tmp_path / "out").exists()


def test_relative_image_paths_work_from_another_directory(tmp_path, monkeypatch):
    rows = shapes_rows(2)
    images = {f"{r['id']}.png": r["image"]["bytes"] for r in rows}
    folder = image_folder_jsonl(
        tmp_path, images, [{"id": r["id"], "image": f"imgs/{r['id']}.png", "text": r["text"]} for r in rows]
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "imgs").mkdir()  # a decoy beside the CWD: it must not be read
    monkeypatch.chdir(elsewhere)
    result = run_cli("adapt", folder / "data.jsonl", "-t", "ocr", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "wrote 2 samples from 2 records" in result.output


def test_symlinks_and_absolute_paths_out_of_the_folder_are_refused(tmp_path):
    import os

    folder = image_folder_jsonl(tmp_path, {"a.png": draw_scene([], "A")}, [])
    (tmp_path / "secret.png").write_bytes(draw_scene([], "S"))
    os.symlink(tmp_path / "secret.png", folder / "imgs" / "link.png")
    for i, bad in enumerate(("imgs/link.png", str(tmp_path / "secret.png"), "../../etc/passwd")):
        write_jsonl(folder / "data.jsonl", [{"id": f"x{i}", "image": bad, "text": "T"}])
        one_line_error(run_cli("adapt", folder, "-t", "ocr", "-o", tmp_path / f"o{i}"), f"record x{i}", "outside the dataset folder")
