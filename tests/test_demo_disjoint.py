"""Disjoint demo sets for a closed loop: labelled, unlabeled and held-out scenes by index range (`offset`)."""

from __future__ import annotations

from synth.demo_data import _fingerprint, iter_rows, make_demo_dataset


def test_offset_ranges_are_the_same_scenes_as_one_long_run():
    whole = list(iter_rows(5, seed=3, size=64))
    tail = list(iter_rows(3, seed=3, size=64, offset=2))
    assert [r["id"] for r in tail] == ["shapes-00002", "shapes-00003", "shapes-00004"]
    assert tail == whole[2:]


def test_disjoint_ranges_give_distinct_ids_and_scenes():
    sets = [make_demo_dataset(4, seed=0, size=64, show_progress=False, offset=o) for o in (0, 4, 8)]
    ids = [set(s["id"]) for s in sets]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    captions = [set(s["detailed_caption"]) for s in sets]
    assert not (captions[0] & captions[1] or captions[0] & captions[2] or captions[1] & captions[2])
    images = [{row["image"]["bytes"] for row in s.cast_column("image", s.features["image"].__class__(decode=False))}
              for s in sets]
    assert not (images[0] & images[1] or images[1] & images[2])


def test_offset_zero_keeps_the_old_fingerprint_and_others_differ():
    import hashlib

    assert _fingerprint(10, 0, 64) == hashlib.sha256(b"synth-demo:10:0:64").hexdigest()[:16]
    assert _fingerprint(10, 0, 64, 0) == _fingerprint(10, 0, 64)
    assert _fingerprint(10, 0, 64, 10) != _fingerprint(10, 0, 64)


def test_recipe_demo_stage_takes_an_offset():
    from synth.run.adapters.sources import DemoAdapter, DemoSpec

    spec = DemoSpec(type="demo", name="heldout", count=2, offset=40, size=64)
    rows = DemoAdapter().sample(spec, None, [], None)
    assert [r["id"] for r in rows] == ["shapes-00040", "shapes-00041"]


def test_cli_offset(tmp_path):
    from datasets import load_from_disk

    from tests.cli_helpers import run_cli

    result = run_cli("demo-data", str(tmp_path / "d"), "--count", "3", "--offset", "7", "--size", "64")
    assert result.exit_code == 0, result.output
    assert load_from_disk(str(tmp_path / "d"))["id"] == ["shapes-00007", "shapes-00008", "shapes-00009"]
