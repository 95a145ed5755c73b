"""A whole recipe through the loopback OpenAI-compatible server: every stage type that runs offline,
the manifest, reuse, a changed stage, --dry-run, and the status commands."""

from __future__ import annotations

import json
import re

import pytest

from synth.run import RunOptions, run_recipe
from tests.cli_helpers import run_cli
from tests.run_helpers import backend_block, rows, start_server, write_recipe

FULL = """\
name: full
seed: 1
llm_shard_size: 6
{backends}
stages:
  - {{type: demo, name: shapes, count: 10}}
  - {{type: adapt, name: vqa, input: shapes, template: [vqa_short, caption_brief]}}
  - {{type: adapt, name: scene_qa, input: shapes, template: scene_qa_text}}
  - type: self_instruct
    name: self_instruct
    count: 3
    concurrency: 2
  - type: evolve
    name: mmevol
    input: shapes
    method: mmevol
    rounds: 1
    limit: 4
    judge_batch_size: 2
  - type: generate
    name: answers
    input: scene_qa
    regenerate: true
    limit: 14
    max_tokens: 32
    temperature: 0
  - type: filter
    name: clean
    input: answers
    filters:
      - {{name: length, min_answer_words: 2}}
      - repetition
  - {{type: dedup, name: unique, input: clean}}
  - type: mix
    name: mix
    sources:
      - {{input: vqa, weight: 3}}
      - {{input: unique, name: answers, weight: 1}}
      - {{input: self_instruct, count: 3}}
      - {{input: mmevol, count: 4}}
    total: 40
    validation: 0.1
  - {{type: export, name: llamafactory, input: mix, format: llamafactory}}
"""


@pytest.fixture(scope="module")
def server():
    s = start_server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def full_run(server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("full")
    recipe = write_recipe(folder, FULL, backends=backend_block(server))
    before = server.request_count
    result = run_recipe(recipe, options=RunOptions(runs_dir=folder / "runs", live=False))
    return folder, recipe, result, server.request_count - before


def test_every_stage_runs_and_the_manifest_says_what_happened(full_run, server):
    folder, recipe, result, sent = full_run
    run_dir = folder / "runs" / "full"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    stages = manifest["stages"]
    assert manifest["state"] == "done" and manifest["seed"] == 1
    assert {"synth", "python", "datasets", "pyarrow", "pydantic"} <= set(manifest["versions"])
    assert [stages[n]["state"] for n in manifest["order"]] == ["ran"] * 10
    # LLM stages: the model, its sampling, tokens; every request the server saw is in the manifest
    llm = {n: stages[n] for n in ("self_instruct", "mmevol", "answers")}
    assert all(s["model"]["model"] == "test-model" and s["usage"]["completion_tokens"] > 0 for s in llm.values())
    assert sum(s["usage"]["requests"] for s in llm.values()) == sent > 0
    assert stages["answers"]["sampling"]["max_tokens"] == 32 and stages["answers"]["shards"] == 3
    assert stages["answers"]["counts"]["read"] == 14 and stages["answers"]["counts"]["rows"] == 14
    assert stages["mmevol"]["counts"]["rows"] == 4 and stages["self_instruct"]["counts"]["rows"] == 4
    # outputs in the spine's layout, with their sidecars and file hashes
    answers = rows(run_dir / "answers")
    assert answers[0]["messages"][-1]["role"] == "assistant"
    assert json.loads(answers[0]["meta"])["model"] == "test-model"
    clean = stages["clean"]["counts"]
    assert clean["read"] == 14 and clean["kept"] + sum(clean["rejected"].values()) == 14
    mix = rows(run_dir / "mix")
    assert len(mix) == 40 and {r["split"] for r in mix} == {"train", "validation"}
    sources = {json.loads(r["meta"])["source"] for r in mix}
    assert {"vqa", "answers", "self_instruct", "mmevol"} <= sources
    assert (run_dir / "llamafactory" / "dataset_info.json").is_file()
    assert stages["llamafactory"]["counts"]["rows"] == 40
    assert all(stages[n]["hash"] and stages[n]["files"] for n in manifest["order"])
    recipe_copy = (run_dir / "recipe.yaml").read_text()
    assert "self_instruct" in recipe_copy and server.base_url in recipe_copy
    assert not any((run_dir / "shards").iterdir())  # shards go once their stage is assembled


def test_a_second_run_reuses_everything_and_sends_nothing(full_run, server):
    folder, recipe, first, _ = full_run
    before = server.request_count
    again = run_recipe(recipe, options=RunOptions(runs_dir=folder / "runs", live=False))
    assert server.request_count == before
    assert [s.state for s in again.stages] == ["reused"] * 10
    assert {s.name: s.fingerprint for s in again.stages} == {s.name: s.fingerprint for s in first.stages}


def test_a_changed_stage_reruns_with_its_dependents_only(full_run, server, tmp_path):
    folder, recipe, first, _ = full_run
    before = server.request_count
    result = run_recipe(recipe, ["stages.answers.max_tokens=48"],
                        RunOptions(runs_dir=folder / "runs", name="full", live=False))
    states = {s.name: s.state for s in result.stages}
    assert states == {"shapes": "reused", "vqa": "reused", "scene_qa": "reused", "self_instruct": "reused",
                      "mmevol": "reused", "answers": "ran", "clean": "ran", "unique": "ran", "mix": "ran",
                      "llamafactory": "ran"}
    # only the changed stage asked the LLM (max_tokens is part of each request, so none was cached)
    assert server.request_count - before == 14
    meta = json.loads(rows(folder / "runs" / "full" / "answers")[0]["meta"])
    assert meta["generation"]["max_tokens"] == 48


def test_dry_run_sends_nothing_and_writes_nothing(server, tmp_path, monkeypatch):
    recipe = write_recipe(tmp_path, FULL, backends=backend_block(server))
    monkeypatch.chdir(tmp_path)
    before = server.request_count
    files_before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli("run", recipe, "--dry-run")
    assert result.exit_code == 0, result.output
    assert server.request_count == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files_before  # no runs/ folder
    for stage in ("self_instruct", "mmevol", "answers"):
        assert stage in result.output
    assert "[user] Using only the scene description below" in result.output or "Scene:" in result.output
    assert "## Given Q&A&S" in result.output  # MMEvol's prompt rendered from a real demo scene


def test_runs_and_status(full_run):
    folder, recipe, result, _ = full_run
    listing = run_cli("runs", "--runs-dir", folder / "runs")
    assert listing.exit_code == 0 and "full" in listing.output and "done" in listing.output
    status = run_cli("run", "--status", "full", "--runs-dir", folder / "runs")
    assert status.exit_code == 0, status.output
    for name in ("shapes", "self_instruct", "mmevol", "answers", "llamafactory"):
        assert name in status.output


OFFLINE_PREFS = """\
name: prefs
stages:
  - {type: demo, name: shapes, count: 8}
  - {type: adapt, name: vqa, input: shapes, template: vqa_short}
  - {type: prefs, name: pairs, input: vqa, strategy: perturb, scenes: shapes}
  - {type: push, name: hub, inputs: [vqa, pairs], repo: someone/shapes-demo, to_dir: true}
"""


def test_preference_pairs_and_a_hub_repository_offline(tmp_path):
    recipe = write_recipe(tmp_path, OFFLINE_PREFS)
    result = run_recipe(recipe, options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    stages = {s.name: s for s in result.stages}
    pairs = rows(tmp_path / "runs" / "prefs" / "pairs")
    assert pairs and stages["pairs"].report["kind"] == "preference"
    assert {"prompt", "chosen", "rejected", "images"} <= set(pairs[0])
    assert pairs[0]["chosen"] != pairs[0]["rejected"]
    repo = tmp_path / "runs" / "prefs" / "hub" / "repo"
    assert (repo / "README.md").is_file() and list(repo.rglob("*.parquet"))


REJECTED_AND_FAILED = """\
name: rejected
{backends}
stages:
  - {{type: demo, name: shapes, count: 4}}
  - {{type: adapt, name: vqa, input: shapes, template: vqa_short}}
  - {{type: evolve, name: mmevol, input: shapes, method: mmevol, rounds: 1}}
  - {{type: dedup, name: unique, input: mmevol}}
  - {{type: mix, name: mix, sources: [{{input: vqa}}]}}
"""


def test_a_stage_whose_replies_were_rejected_beside_failures_does_not_stop_the_run(tmp_path):
    """The bug: MMEvol's judge rejected 2 images' items and 2 images' requests failed; the run stopped with
    "every LLM request failed (2)" and the later stages never ran. Only a stage whose every request failed stops."""
    from datasets import load_from_disk

    from synth.demo_data import write_demo_data
    from synth.errors import SynthError
    from tests.test_mmevol import realistic, rejecting_judge

    server = start_server()
    try:
        server.script(lambda body: realistic(body, judge=rejecting_judge))
        scenes = load_from_disk(str(write_demo_data(tmp_path / "same", count=4)))  # the recipe's demo scenes
        for scene in scenes.select(range(2)):
            server.fault("500", marker=scene["detailed_caption"])
        recipe = write_recipe(tmp_path, REJECTED_AND_FAILED, backends=backend_block(server))
        result = run_recipe(recipe, options=RunOptions(runs_dir=tmp_path / "runs", live=False))
        stages = json.loads((result.run_dir / "manifest.json").read_text())["stages"]
        counts = stages["mmevol"]["counts"]
        assert counts["failed"] == {"http_500": 2} and set(counts["rejected"]) == {"judge_not_improved"}
        assert counts["rows"] == 0 and stages["unique"]["state"] == "ran" and stages["mix"]["state"] == "ran"

        server.clear_faults()
        server.fault("broken_json")  # every reply unparseable: now the stage stops the run
        with pytest.raises(SynthError, match=r"stage mmevol: every LLM request failed \(4; unparseable: 4\)"):
            run_recipe(recipe, options=RunOptions(runs_dir=tmp_path / "runs2", live=False))
    finally:
        server.stop()


def mix_sources(output: str) -> dict[str, tuple[str, str]]:
    """The dry run's "mix sources" table: source label -> (stage it reads, rows)."""
    rows = re.findall(r"^mix +(\S+) +(\S+) +(.+?)\s*$", output.split("mix sources", 1)[1], re.MULTILINE)
    return {label: (stage, count) for label, stage, count in rows if label != "source"}


def test_dry_run_lists_every_mix_source_with_its_rows_or_not_yet_built(full_run, server, tmp_path, monkeypatch):
    folder, recipe, _, _ = full_run
    monkeypatch.chdir(tmp_path)
    fresh = run_cli("run", recipe, "--dry-run", "--runs-dir", tmp_path / "none")
    assert fresh.exit_code == 0, fresh.output
    listed = mix_sources(fresh.output)
    assert listed.keys() == {"vqa", "answers", "self_instruct", "mmevol"} and listed["answers"][0] == "unique"
    assert re.fullmatch(r"\(not yet built; ~[\d,]+ planned\)", listed["vqa"][1])  # offline: estimated from a sample
    assert listed["self_instruct"][1] == listed["mmevol"][1] == listed["answers"][1] == "(not yet built)"

    again = run_cli("run", recipe, "--dry-run", "--runs-dir", folder / "runs")
    assert again.exit_code == 0, again.output
    stages = json.loads((folder / "runs" / "full" / "manifest.json").read_text())["stages"]
    for label, (stage, count) in mix_sources(again.output).items():
        assert count == f"{stages[stage]['counts']['rows']:,} (last run)", label
