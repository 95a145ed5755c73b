"""Decontamination: n-gram hits against benchmark files, attribution to file and item, summary per benchmark."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth.clean.decontam import Decontaminate
from synth.data import RecordLog
from synth.errors import SynthError
from synth.pipeline import run_stages

MMLU_Q = "Which of the following best describes the role of mitochondria in eukaryotic cells during aerobic respiration"
GSM_Q = "Natalia sold clips to 48 of her friends in April and then she sold half as many clips in May how many clips did she sell"


def sft(rid: str, user: str, answer: str = "An answer.") -> dict:
    return {"id": rid, "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}], "meta": {}}


@pytest.fixture
def benchmarks(tmp_path):
    mmlu = tmp_path / "mmlu_test.jsonl"
    mmlu.write_text(
        "\n".join(
            json.dumps(row)
            for row in [
                {"id": "mmlu-1", "question": MMLU_Q + "?", "choices": ["a", "b"]},
                {"id": "mmlu-2", "question": "Short one?"},  # too short to use
            ]
        )
        + "\n"
    )
    gsm = tmp_path / "gsm8k.parquet"
    pq.write_table(pa.Table.from_pylist([{"problem": "Unrelated question about trains and apples at noon today " * 2}, {"problem": GSM_Q}]), gsm)
    return mmlu, gsm


def test_hits_are_dropped_and_attributed(tmp_path, benchmarks):
    mmlu, gsm = benchmarks
    stage = Decontaminate(benchmarks=[str(mmlu), str(gsm)], ngram=13, fields=["question", "problem"])
    records = [
        sft("clean", "Explain how photosynthesis turns light into chemical energy in green plants."),
        # Punctuation and case differ from the benchmark; the 13-gram still matches.
        sft("leak_mmlu", "Quiz: which of the following BEST describes the role of mitochondria in eukaryotic cells, during aerobic respiration? Explain."),
        sft("leak_gsm", "Solve this.", "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. 72."),
        sft("near_miss", "Which of the following best describes the role of the nucleus?"),
    ]
    rejects = tmp_path / "rejects.jsonl"
    with RecordLog(rejects) as log:
        kept = [r["id"] for r in run_stages([stage], records, log)]
    assert kept == ["clean", "near_miss"]
    lines = {json.loads(line)["id"]: json.loads(line) for line in rejects.read_text().splitlines()}
    assert lines["leak_mmlu"]["reason"] == "contaminated"
    assert lines["leak_mmlu"]["detail"].startswith("benchmark=mmlu_test.jsonl item=mmlu-1 ngram='")
    assert "mitochondria" in lines["leak_mmlu"]["detail"]
    assert lines["leak_gsm"]["detail"].startswith("benchmark=gsm8k.parquet item=row 2 ")
    summary = {row["benchmark"]: row for row in stage.summary()}
    assert summary["mmlu_test.jsonl"] == {"benchmark": "mmlu_test.jsonl", "items": 2, "items_skipped": 1, "samples_dropped": 1, "items_hit": 1}
    assert summary["gsm8k.parquet"]["samples_dropped"] == 1


def test_short_items_match_as_one_ngram_and_ngram_is_configurable(tmp_path):
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"prompt": "name the largest planet in our solar system"}) + "\n")  # 8 words
    stage = Decontaminate(benchmarks=[str(bench)])
    records = [sft("hit", "Please name the largest planet in our solar system."), sft("miss", "Name the largest planet.")]
    assert [r["id"] for r in stage.run(records)] == ["miss"]
    # A larger min_item_words skips the item entirely.
    stage = Decontaminate(benchmarks=[str(bench)], min_item_words=9)
    assert [r["id"] for r in stage.run(records)] == ["hit", "miss"]
    # Only the answer side can be checked.
    stage = Decontaminate(benchmarks=[str(bench)], sample_text="answer", ngram=5)
    assert [r["id"] for r in stage.run(records)] == ["hit", "miss"]


def test_default_fields_and_messages_benchmarks(tmp_path):
    bench = tmp_path / "chat.jsonl"
    bench.write_text(json.dumps({"messages": [{"role": "user", "content": MMLU_Q}]}) + "\n")
    stage = Decontaminate(benchmarks=[str(bench)])
    assert [r["id"] for r in stage.run([sft("leak", MMLU_Q)])] == []


def test_bad_benchmarks_are_clear_errors(tmp_path):
    with pytest.raises(SynthError, match="benchmark file not found"):
        Decontaminate(benchmarks=[str(tmp_path / "missing.jsonl")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok"}\n{"question": broken\n')
    with pytest.raises(SynthError, match=r"bad.jsonl:2: not valid JSON"):
        Decontaminate(benchmarks=[str(bad)])
    cols = tmp_path / "cols.jsonl"
    cols.write_text(json.dumps({"q": "text"}) + "\n")
    with pytest.raises(SynthError, match=r"none of the fields .* found \(columns: q\); pass fields"):
        Decontaminate(benchmarks=[str(cols)])
    with pytest.raises(SynthError, match="unknown benchmark file type"):
        other = tmp_path / "b.txt"
        other.write_text("x")
        Decontaminate(benchmarks=[str(other)])
