"""Executors run the same shard tasks: worker processes and Ray tasks write exactly what one process writes."""

from __future__ import annotations

import pytest

from synth.run import RunOptions, run_recipe
from tests.run_helpers import rows, stage_hashes, write_recipe

RECIPE = """\
name: exec
shard_size: 6
stages:
  - {type: demo, name: shapes, count: 16}
  - {type: adapt, name: vqa, input: shapes, template: [vqa_short, ocr]}
  - type: filter
    name: clean
    input: vqa
    filters:
      - {name: length, min_answer_words: 2}
      - image_tokens
  - {type: dedup, name: unique, input: clean}
"""


@pytest.fixture(scope="module")
def inline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inline")
    recipe = write_recipe(folder, RECIPE)
    run_recipe(recipe, options=RunOptions(runs_dir=folder / "runs", live=False))
    return recipe, folder / "runs" / "exec"


def test_worker_processes_write_what_one_process_writes(inline, tmp_path):
    recipe, expected = inline
    result = run_recipe(recipe, options=RunOptions(runs_dir=tmp_path, workers=2, live=False))
    assert result.manifest["executor"] == {"executor": "local", "workers": 2}
    vqa = {s.name: s for s in result.stages}["vqa"]
    assert vqa.report["shards"] == 3  # 16 rows, 6 per shard
    assert stage_hashes(tmp_path / "exec") == stage_hashes(expected)
    assert rows(tmp_path / "exec" / "unique") == rows(expected / "unique")


def test_ray_tasks_write_what_the_local_executor_writes(inline, tmp_path):
    pytest.importorskip("ray")
    import ray

    recipe, expected = inline
    try:
        result = run_recipe(recipe, options=RunOptions(runs_dir=tmp_path, executor="ray", workers=2, live=False))
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert result.manifest["executor"]["executor"] == "ray"
    assert [s.state for s in result.stages] == ["ran"] * 4
    assert stage_hashes(tmp_path / "exec") == stage_hashes(expected)
    assert rows(tmp_path / "exec" / "unique") == rows(expected / "unique")
