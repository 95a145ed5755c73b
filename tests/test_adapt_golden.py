"""Golden rendering of every shipped template set on small fixed inputs.

Each set is run through `synth.adapt.adapt` (real files on disk) and the rendered samples, plus the first
record's instruction under every variant, are compared with tests/golden/adapt/<case>.json.

Regenerate after an intended template change (then review the diff):

    SYNTH_UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/test_adapt_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_adapt_data import (
    NLI_ROWS_INT,
    NLI_ROWS_STR,
    SQUAD_ROWS,
    SUMMARY_ROWS,
    make_shapes_dataset,
    write_jsonl,
)

from synth.adapt import adapt, class_list, load_template_set, shipped_names
from synth.adapt.engine import Renderer
from synth.records import content_id, load_meta

GOLDEN_DIR = Path(__file__).parent / "golden" / "adapt"
UPDATE = os.environ.get("SYNTH_UPDATE_GOLDEN", "") not in ("", "0")

TEXT_SOURCES = {"text_qa_extractive": SQUAD_ROWS, "summarization": SUMMARY_ROWS, "nli": NLI_ROWS_INT}
# case name -> (template set, rows for a text set or None for the shapes dataset)
CASES = {name: (name, TEXT_SOURCES.get(name)) for name in shipped_names()}
CASES["nli_string_labels"] = ("nli", NLI_ROWS_STR)


def _source(tmp_path: Path, rows) -> Path:
    if rows is None:
        return make_shapes_dataset(tmp_path / "shapes", 2)
    return write_jsonl(tmp_path / "rows.jsonl", rows)


def _first_row(source: Path, rows) -> dict:
    from synth.io import read_dataset

    ds = read_dataset(source)
    return ds[0] if rows is None else rows[0]


def _all_variants(template: str, row: dict, source: Path) -> list[str]:
    """The first record (and its first item) rendered with every instruction variant."""
    from synth.io import read_dataset

    ts = load_template_set(template)
    classes, _ = class_list(read_dataset(source), ts)  # as `adapt` reads it from the source
    renderer = Renderer(ts, seed=0, classes=classes)
    base = renderer.variables(row, "golden")
    item = None
    if ts.items:
        item = base[ts.items.variable][0]
    v = renderer.turn_variables(base, item, "golden", 0)
    return [instruction(v, "golden").strip() for instruction in ts.compiled.instructions]


def _rendered(result, multimodal: bool) -> list[dict]:
    from datasets import Image, List

    dataset = result.dataset
    if multimodal:
        dataset = dataset.cast_column("images", List(Image(decode=False)))
    samples = []
    for row in dataset:
        meta = load_meta(row["meta"])
        meta.pop("source")  # a temporary path
        entry = {"messages": row["messages"], "meta": meta}
        if multimodal:
            # PNG bytes depend on the Pillow version, so image ids are checked, not stored.
            images = [img["bytes"] for img in row["images"]]
            assert row["id"] == content_id(row["messages"], images)
            entry["images"] = len(images)
        else:
            entry["id"] = row["id"]
        samples.append(entry)
    return samples


def test_every_shipped_set_has_a_golden_case():
    assert set(shipped_names()) <= {template for template, _ in CASES.values()}
    assert len(shipped_names()) >= 12


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_rendering(case, tmp_path):
    template, rows = CASES[case]
    source = _source(tmp_path, rows)
    result = adapt(source, template, tmp_path / "out", seed=0)
    ts = load_template_set(template)
    actual = {
        "template": template,
        "samples": _rendered(result, ts.multimodal),
        "all_variants": _all_variants(template, _first_row(source, rows), source),
    }
    assert len(actual["all_variants"]) >= 5
    assert len(set(actual["all_variants"])) == len(actual["all_variants"]), "variants must differ"
    golden = GOLDEN_DIR / f"{case}.json"
    text = json.dumps(actual, indent=2, ensure_ascii=False) + "\n"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden}; run with SYNTH_UPDATE_GOLDEN=1 and review it"
    assert json.loads(golden.read_text(encoding="utf-8")) == json.loads(text)
