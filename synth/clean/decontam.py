"""Decontamination: drop samples that share a long word n-gram with a benchmark's test items.

Benchmarks are user files (JSONL, JSON, Parquet, CSV) of test items; the text fields to read are
configurable (default: the usual question/prompt/input columns, and ``messages``). Words are tokenised
as in `synth.clean.minhash` (lower case, punctuation trimmed). An item with fewer than ``ngram`` words
but at least ``min_item_words`` counts as one n-gram of its own length; shorter items are skipped (too
likely to match by chance). Each hit names the benchmark file and the item (its ``id`` or row number).
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from synth.clean.common import answer_texts, instruction_text, record_text
from synth.clean.minhash import ngram_hashes, words_of
from synth.core.fields import FilePath
from synth.errors import SynthError
from synth.pipeline import Filter, Rejected, StageConfig

DEFAULT_FIELDS = ("question", "prompt", "instruction", "input", "problem", "query", "context", "text", "messages")


class DecontamConfig(StageConfig):
    benchmarks: list[FilePath] = Field(min_length=1, description="benchmark files (JSONL/JSON/Parquet/CSV)")
    ngram: int = Field(13, ge=1, le=64, description="words per n-gram")
    fields: list[str] | None = Field(None, description="benchmark text fields (default: common question columns)")
    min_item_words: int = Field(8, ge=1, description="benchmark items with fewer words are skipped")
    sample_text: Literal["all", "instruction", "answer"] = Field(
        "all", description="which text of a sample is compared with the benchmarks")


def _read_rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        from synth.io import read_jsonl

        return [row for _, row in read_jsonl(path, "benchmark")]
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise SynthError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
            data = next(iter(data.values()))
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise SynthError(f"{path}: expected a JSON list of objects")
        return data
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:
            raise SynthError(f"{path}: cannot read Parquet: {str(e).splitlines()[0]}") from None
    if suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    raise SynthError(f"{path}: unknown benchmark file type '{suffix}' (use .jsonl, .json, .parquet or .csv)")


def _field_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if "content" in value:
            return _field_text(value["content"])
        return value.get("text") or ""
    if isinstance(value, (list, tuple)):
        return "\n".join(_field_text(v) for v in value)
    return str(value)


def benchmark_items(path: Path, fields: Sequence[str] | None) -> list[tuple[str, str]]:
    """(item label, text) per row: label is the row's ``id`` or ``row N`` (1-based)."""
    rows = _read_rows(path)
    wanted = list(fields) if fields else list(DEFAULT_FIELDS)
    columns = {k for row in rows for k in row}
    present = [f for f in wanted if f in columns]
    if rows and not present:
        hint = "pass fields=[...]" if not fields else "check the field names"
        raise SynthError(
            f"{path}: none of the fields {', '.join(wanted)} found (columns: {', '.join(sorted(columns))}); {hint}"
        )
    items = []
    for number, row in enumerate(rows, 1):
        label = str(row["id"]) if row.get("id") not in (None, "") else f"row {number}"
        items.append((label, "\n".join(_field_text(row.get(f)) for f in present)))
    return items


class BenchmarkIndex:
    """Hashes of every benchmark n-gram, with where each came from (first occurrence wins)."""

    def __init__(self, paths: Sequence[str], ngram: int, fields: Sequence[str] | None, min_item_words: int):
        self.ngram = ngram
        self.names: list[str] = []
        self.item_counts: Counter = Counter()
        self.skipped: Counter = Counter()
        self.origin: dict[int, tuple[int, str]] = {}
        window_lengths: set[int] = set()
        for path in paths:
            path = Path(path)
            if not path.is_file():
                raise SynthError(f"benchmark file not found: {path}")
            bench = len(self.names)
            self.names.append(path.name if path.name not in self.names else str(path))
            items = benchmark_items(path, fields)
            self.item_counts[self.names[bench]] = len(items)
            texts = [text for _, text in items]
            hashes, owner = ngram_hashes(texts, ngram, short="whole")
            lengths = np.array([len(words_of(t)) for t in texts]) if texts else np.zeros(0, dtype=int)
            ok = lengths[owner] >= min_item_words if len(owner) else np.zeros(0, dtype=bool)
            self.skipped[self.names[bench]] = int(np.count_nonzero(lengths < min_item_words))
            window_lengths |= {min(int(n), ngram) for n in lengths.tolist() if n >= min_item_words}
            for value, item in zip(hashes[ok].tolist(), owner[ok].tolist(), strict=True):
                self.origin.setdefault(value, (bench, items[item][0]))
        self.keys = np.array(sorted(self.origin), dtype=np.uint64)
        # Short items were hashed as windows of their own length: look for those lengths in samples too.
        self.lengths = sorted(window_lengths)

    def hits(self, texts: Sequence[str]) -> list[tuple[int, str, int, int] | None]:
        """Per text: the first hit as (benchmark index, item label, window start, window length), or None."""
        found: list[tuple[int, str, int, int] | None] = [None] * len(texts)
        if len(self.keys) == 0:
            return found
        for length in self.lengths:
            hashes, owner = ngram_hashes(texts, length, short="skip")
            if len(hashes) == 0:
                continue
            pos = np.searchsorted(self.keys, hashes)
            pos[pos == len(self.keys)] = 0
            matched = np.flatnonzero(self.keys[pos] == hashes)
            if len(matched) == 0:
                continue
            firsts = np.searchsorted(owner, owner[matched], side="left")
            for hit, first in zip(matched.tolist(), firsts.tolist(), strict=True):
                record = int(owner[hit])
                if found[record] is None:
                    bench, item = self.origin[int(hashes[hit])]
                    found[record] = (bench, item, hit - first, length)
        return found


class Decontaminate(Filter):
    """Drop samples sharing a long n-gram with a benchmark's items (hits per benchmark in the report)."""

    name: ClassVar[str] = "decontaminate"
    Config: ClassVar[type[StageConfig]] = DecontamConfig
    reads: ClassVar[tuple[str, ...]] = ("messages", "prompt", "chosen", "rejected")
    batch_size: ClassVar[int] = 1024
    cli_flags: ClassVar[dict[str, list[str]]] = {"benchmarks": ["--benchmark", "-b"], "fields": ["--field"]}

    def __init__(self, config=None, **overrides: Any):
        super().__init__(config, **overrides)
        c: DecontamConfig = self.config
        self.index = BenchmarkIndex(c.benchmarks, c.ngram, c.fields, c.min_item_words)
        self.dropped_by_benchmark: Counter = Counter()
        self.items_hit: dict[str, set[str]] = defaultdict(set)

    def _text(self, record: dict) -> str:
        if self.config.sample_text == "instruction":
            return instruction_text(record)
        if self.config.sample_text == "answer":
            return "\n".join(answer_texts(record))
        return record_text(record)

    def check_batch(self, records: Sequence[dict]) -> list[Rejected | None]:
        texts = [self._text(r) for r in records]
        verdicts: list[Rejected | None] = []
        for text, hit in zip(texts, self.index.hits(texts), strict=True):
            if hit is None:
                verdicts.append(None)
                continue
            bench, item, start, length = hit
            name = self.index.names[bench]
            self.dropped_by_benchmark[name] += 1
            self.items_hit[name].add(item)
            ngram = " ".join(words_of(text)[start : start + length])
            verdicts.append(Rejected("contaminated", f"benchmark={name} item={item} ngram={ngram!r}"))
        return verdicts

    def summary(self) -> list[dict]:
        """One row per benchmark: items, items too short to use, samples dropped, distinct items hit."""
        return [
            {
                "benchmark": name,
                "items": self.index.item_counts[name],
                "items_skipped": self.index.skipped[name],
                "samples_dropped": self.dropped_by_benchmark[name],
                "items_hit": len(self.items_hit[name]),
            }
            for name in self.index.names
        ]


OPERATOR_CLASSES = (Decontaminate,)
