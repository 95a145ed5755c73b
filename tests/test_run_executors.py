"""Executors run the same shard tasks: worker processes and Ray tasks write exactly what one process writes."""

from __future__ import annotations

import pytest

from synth.run import RunOptions, run_recipe
from tests import test_clean_capfilt
from tests.run_helpers import rows, stage_hashes, write_recipe
from tests.test_data_webdataset import make_shards

tiny_clip = test_clean_capfilt.tiny_clip  # the fixture: a tiny random CLIP saved to a folder

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


GPU_RECIPE = """\
name: gpu
shard_size: 4
stages:
  - {type: source, name: web, path: shards}
  - type: filter
    name: clean
    input: web
    resources: {gpus: 1}
    filters: [{name: capfilt, model: "{model}", score_only: true}]
"""


@pytest.fixture(scope="module")
def gpu_recipe(tmp_path_factory, tiny_clip):
    folder = tmp_path_factory.mktemp("gpu")
    make_shards(folder / "shards", counts=(5, 5, 2))
    return write_recipe(folder, GPU_RECIPE.replace("{model}", tiny_clip))


def test_gpu_stage_runs_in_order_on_the_local_executor(gpu_recipe, tmp_path):
    """With worker processes asked for, a GPU stage still runs here, shard after shard, on one model."""
    from synth.clean.capfilt import load_scorer

    load_scorer.cache_clear()
    result = run_recipe(gpu_recipe, options=RunOptions(runs_dir=tmp_path, workers=2, live=False))
    clean = {s.name: s for s in result.stages}["clean"]
    assert clean.report["shards"] == 3 and "placement" not in result.manifest["stages"]["clean"]
    assert load_scorer.cache_info().misses == 1  # loaded in this process, once for the three shards
    assert len(rows(tmp_path / "gpu" / "clean")) == 12


def test_gpu_stage_on_ray_gpu_actors_writes_what_the_local_executor_writes(gpu_recipe, tmp_path):
    """A local Ray with two fake GPUs (the model runs on CPU tensors): the GPU stage's three shards run on
    two actors, each holding one GPU; output, hashes and resume equal the local executor's. Scores are
    bit-identical for the same device and thread count: Ray gives a one-CPU actor one thread, so the
    local run uses one too (more threads sum in another order: equal within fp tolerance only)."""
    pytest.importorskip("ray")
    import ray
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run_recipe(gpu_recipe, options=RunOptions(runs_dir=tmp_path / "local", live=False))
    finally:
        torch.set_num_threads(threads)
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = run_recipe(gpu_recipe, options=RunOptions(runs_dir=tmp_path / "ray", executor="ray", live=False))
        again = run_recipe(gpu_recipe, options=RunOptions(runs_dir=tmp_path / "ray", executor="ray", live=False))
    finally:
        ray.shutdown()
    assert stage_hashes(tmp_path / "ray" / "gpu") == stage_hashes(tmp_path / "local" / "gpu")
    assert rows(tmp_path / "ray" / "gpu" / "clean") == rows(tmp_path / "local" / "gpu" / "clean")
    assert result.manifest["stages"]["clean"]["fingerprint"] == local.manifest["stages"]["clean"]["fingerprint"]
    placement = result.manifest["stages"]["clean"]["placement"]
    assert sorted(placement) == ["shard-00000", "shard-00001", "shard-00002"]
    assert {tuple(p["gpu_ids"]) for p in placement.values()} <= {("0",), ("1",)}
    assert all(len(p["gpu_ids"]) == 1 for p in placement.values())
    assert len({p["actor"] for p in placement.values()}) == 2  # three shards, two actors: one ran two
    assert [s.state for s in again.stages] == ["source", "reused"]


def test_gpu_stage_on_a_cluster_without_gpus_is_a_clear_error(gpu_recipe, tmp_path):
    pytest.importorskip("ray")
    import ray

    from synth.errors import SynthError

    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        with pytest.raises(SynthError, match="asks for 1 GPU.* the Ray cluster has 0; start Ray on GPU nodes"):
            run_recipe(gpu_recipe, options=RunOptions(runs_dir=tmp_path, executor="ray", live=False))
    finally:
        ray.shutdown()
