"""hallucinate on the real embedded model (Gemma 3 270M, in-process, text only): the `make demo` step.

Slow: run with ``-m slow``. The model is weak; what is checked is the mechanics: its grammar-constrained
JSON always parses (no failures), every pair keeps the reference as chosen and differs from it, and every
prompt ends as a pair or a counted drop.
"""

from __future__ import annotations

import json

import pytest
from datasets import load_from_disk

pytestmark = pytest.mark.slow


def test_hallucinate_on_the_embedded_model(tmp_path):
    from synth.adapt.engine import adapt
    from synth.demo_data import write_demo_data
    from synth.llm.factory import make_backend
    from synth.prefs import HallucinateConfig, HallucinateStrategy, SceneIndex, build_preferences

    shapes = write_demo_data(tmp_path / "shapes", count=1, show_progress=False)
    vqa = adapt(shapes, "vqa_short", tmp_path / "vqa_short").out
    llm = make_backend("local", cache_dir=tmp_path / "cache", batch_size=4)
    try:
        stage = HallucinateStrategy(llm, HallucinateConfig(max_tokens=48), scenes=SceneIndex.from_source(shapes))
        result = build_preferences(vqa, tmp_path / "out", stage, limit=3, show_progress=False)
    finally:
        llm.close()
    report = result.report
    assert report["prompts"] == 3 and report["failed"] == {}
    assert result.pairs + sum(report["dropped"].values()) == 3
    source = {r["id"]: r for r in load_from_disk(str(vqa))}
    for row in load_from_disk(str(tmp_path / "out")):
        meta = json.loads(row["meta"])
        reference = source[meta["prompt_id"]]["messages"][-1]["content"][0]["text"]
        assert row["chosen"][0]["content"][0]["text"] == reference
        assert row["rejected"][0]["content"][0]["text"].strip().lower() != reference.lower()
        assert set(meta["injected"]) == {"type", "stated_type", "original", "injected"}
        assert meta["models"]["rejected"].startswith("gemma-3-270m")
