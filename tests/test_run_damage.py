"""A run folder damaged after the fact (an output truncated, deleted or edited; a shard's file truncated or
its positions.npy deleted while its .done marker stays) is never trusted: the rerun says what it found in
one line, redoes that stage or shard, and ends with the same outputs as an undamaged run, byte for byte."""

from __future__ import annotations

import shutil

import pytest

from synth.run import RunOptions, run_recipe
from synth.run.manifest import hash_files
from tests.run_helpers import rows, write_recipe

RECIPE = """\
name: damage
shard_size: 8
stages:
  - {type: demo, name: shapes, count: 20}
  - {type: adapt, name: vqa, input: shapes, template: [vqa_short, caption_brief]}
  - type: filter
    name: clean
    input: vqa
    filters:
      - {name: length, min_answer_words: 1}
  - {type: dedup, name: unique, input: clean}
"""
STAGES = ("vqa", "clean", "unique")


def run(folder, capsys=None):
    recipe = write_recipe(folder, RECIPE)
    result = run_recipe(recipe, options=RunOptions(runs_dir=folder / "runs", live=False))
    assert result.manifest["state"] == "done"
    return {s.name: s.state for s in result.stages}


def outputs(run_dir) -> dict[str, str]:
    """Each stage's output hashed from the files now on disk (not the manifest's word for it)."""
    return {name: hash_files(run_dir / name) for name in STAGES}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("baseline")
    run(folder)
    return folder / "runs" / "damage"


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def edit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(data))


def delete(path):
    shutil.rmtree(path) if path.is_dir() else path.unlink()


@pytest.mark.parametrize("damage, target", [
    (truncate, "vqa/data-00000-of-00001.arrow"),
    (delete, "vqa/data-00000-of-00001.arrow"),
    (edit, "vqa/data-00000-of-00001.arrow"),
    (edit, "clean/dataset_info.json"),
    (delete, "unique"),
])
def test_a_damaged_stage_output_is_redone_not_reused(baseline, tmp_path, capsys, damage, target):
    run(tmp_path)
    run_dir = tmp_path / "runs" / "damage"
    assert outputs(run_dir) == outputs(baseline)
    damage(run_dir / target)
    capsys.readouterr()
    states = run(tmp_path)
    stage = target.split("/")[0]
    assert states[stage] == "ran"
    assert all(states[s] == "reused" for s in STAGES if s != stage)  # the redo wrote the same bytes
    err = capsys.readouterr().err
    assert f"stage {stage}: " in err and "running the stage again" in err
    assert outputs(run_dir) == outputs(baseline)
    for name in STAGES:
        assert rows(run_dir / name) == rows(baseline / name)


def stopped_before_assembly(folder, monkeypatch, stage="vqa"):
    """Run until `stage`'s shards are all done and its output is in place, then stop (its shards, .done
    markers and positions.npy are still there; the stage has no marker yet)."""
    from synth.run import hooks

    real = hooks.point

    def stop(name, **values):
        if name == "stage_output" and values.get("stage") == stage:
            raise RuntimeError("stopped here by the test")
        real(name, **values)

    monkeypatch.setattr(hooks, "point", stop)
    with pytest.raises(RuntimeError, match="stopped here"):
        run(folder)
    monkeypatch.setattr(hooks, "point", real)
    (shards,) = (folder / "runs" / "damage" / "shards" / stage).iterdir()
    assert (shards / "shard-00001.done").is_file() and (shards / "shard-00001" / "positions.npy").is_file()
    return shards


@pytest.mark.parametrize("damage, target", [
    (delete, "shard-00001/positions.npy"),
    (truncate, "shard-00001/data-00000-of-00001.arrow"),
    (edit, "shard-00002/data-00000-of-00001.arrow"),
    (delete, "shard-00000/state.json"),
])
def test_a_damaged_finished_shard_is_redone(baseline, tmp_path, monkeypatch, capsys, damage, target):
    shards = stopped_before_assembly(tmp_path, monkeypatch)
    damage(shards / target)
    capsys.readouterr()
    states = run(tmp_path)
    assert states["vqa"] == "ran"
    rank = int(target.split("/")[0].split("-")[1])
    assert f"stage vqa: shard {rank}: " in capsys.readouterr().err
    run_dir = tmp_path / "runs" / "damage"
    assert outputs(run_dir) == outputs(baseline)
    assert rows(run_dir / "vqa") == rows(baseline / "vqa")  # same order: positions were rewritten, not lost
    assert not any((run_dir / "shards").iterdir())
