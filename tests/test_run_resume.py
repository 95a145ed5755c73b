"""Resume after SIGKILL: a `synth run` subprocess is killed at named points (and once with LLM requests in
flight); the same command then finishes it. Every output must equal an uninterrupted run's, byte for
byte, and the loopback server must not see any finished request twice."""

from __future__ import annotations

import signal
import sqlite3
import time

import pytest

from synth.run import RunOptions, run_recipe
from synth.run.status import list_runs
from tests.cli_helpers import run_cli
from tests.run_helpers import backend_block, rows, stage_hashes, start_server, synth_command, write_recipe

RECIPE = """\
name: resume
shard_size: 8
llm_shard_size: 6
{backends}
stages:
  - {{type: demo, name: shapes, count: 20}}
  - {{type: adapt, name: vqa, input: shapes, template: [vqa_short, caption_brief]}}
  - {{type: generate, name: answers, input: vqa, regenerate: true, limit: 18, max_tokens: 16, temperature: 0}}
  - type: filter
    name: clean
    input: answers
    filters:
      - {{name: length, min_answer_words: 1}}
  - {{type: dedup, name: unique, input: clean}}
"""
REQUESTS = 18


@pytest.fixture(scope="module")
def server():
    s = start_server(latency=0.02)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def baseline(server, tmp_path_factory):
    """The uninterrupted run."""
    folder = tmp_path_factory.mktemp("baseline")
    recipe = write_recipe(folder, RECIPE, backends=backend_block(server, concurrency=3))
    before = server.request_count
    run_recipe(recipe, options=RunOptions(runs_dir=folder / "runs", live=False))
    assert server.request_count - before == REQUESTS
    return folder / "runs" / "resume"


def killed_run(server, folder, kill_at: str | None = None, kill_when=None):
    """Start `synth run` in a subprocess and SIGKILL it at a named point, or when `kill_when()` says."""
    recipe = write_recipe(folder, RECIPE, backends=backend_block(server, concurrency=3))
    env = {"SYNTH_RUN_KILL": kill_at} if kill_at else {}
    proc = synth_command("run", recipe, "--runs-dir", folder / "runs", env=env, cwd=folder)
    if kill_when is not None:
        deadline = time.time() + 120
        while not kill_when() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == -signal.SIGKILL, output
    return recipe


def resume_and_compare(server, recipe, folder, baseline):
    run_dir = folder / "runs" / "resume"
    assert [r["state"] for r in list_runs(folder / "runs")] == ["interrupted"]
    before = server.request_count
    result = run_recipe(recipe, options=RunOptions(runs_dir=folder / "runs", live=False))
    sent = server.request_count - before
    assert result.manifest["state"] == "done"
    assert stage_hashes(run_dir) == stage_hashes(baseline)  # same files, byte for byte, every stage
    for stage in ("vqa", "answers", "unique"):
        assert rows(run_dir / stage) == rows(baseline / stage)  # same ids, order and content
    assert not any((run_dir / "shards").iterdir())
    return result, sent


def test_killed_during_adapt_between_a_shard_and_its_marker(server, baseline, tmp_path):
    before = server.request_count
    recipe = killed_run(server, tmp_path, "shard_done:stage=vqa:shard=1")
    assert server.request_count == before  # killed before the LLM stage
    shards = tmp_path / "runs" / "resume" / "shards" / "vqa"
    (fp_dir,) = shards.iterdir()
    assert (fp_dir / "shard-00000.done").is_file() and (fp_dir / "shard-00001").is_dir()
    assert not (fp_dir / "shard-00001.done").exists()
    status = run_cli("run", "--status", "resume", "--runs-dir", tmp_path / "runs")
    assert "run resume: interrupted" in status.output and "killed (1 shards done)" in status.output
    result, sent = resume_and_compare(server, recipe, tmp_path, baseline)
    assert sent == REQUESTS
    vqa = {s.name: s for s in result.stages}["vqa"]
    assert vqa.state == "ran" and vqa.report["shards"] == 3


def test_killed_with_llm_requests_in_flight(server, baseline, tmp_path):
    cache = tmp_path / "runs" / "resume" / "cache" / "llm-cache.sqlite"
    server.latency = 0.3
    start = server.request_count

    def cached_rows() -> int:
        if not cache.exists():
            return 0
        try:
            with sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=1) as conn:
                return conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
        except sqlite3.Error:
            return 0

    try:
        # some answers committed, others on the wire (each takes 0.3 s: the kill lands long before they end)
        recipe = killed_run(server, tmp_path, kill_when=lambda: server.in_flight > 0 and cached_rows() >= 3)
        in_flight = server.in_flight
        sent_first = server.request_count - start
    finally:
        server.latency = 0.02
    committed = cached_rows()
    assert committed >= 3 and in_flight > 0 and sent_first > committed  # some were on the wire at the kill
    result, sent = resume_and_compare(server, recipe, tmp_path, baseline)
    assert sent == REQUESTS - committed  # every finished request came from the cache, none was sent again


def test_killed_during_a_shard_write_of_the_llm_stage(server, baseline, tmp_path):
    start = server.request_count
    recipe = killed_run(server, tmp_path, "shard_write:stage=answers:shard=1")
    first = server.request_count - start
    assert 0 < first < REQUESTS  # shards 0 and 1 asked; shard 1 was killed while its files were being written
    result, sent = resume_and_compare(server, recipe, tmp_path, baseline)
    assert first + sent == REQUESTS  # the killed shard's requests were replayed from the cache


def test_killed_after_an_output_landed_before_its_marker(server, baseline, tmp_path):
    start = server.request_count
    recipe = killed_run(server, tmp_path, "stage_output:stage=clean")
    assert server.request_count - start == REQUESTS
    assert (tmp_path / "runs" / "resume" / "clean").is_dir()
    assert not (tmp_path / "runs" / "resume" / "state" / "clean.json").exists()
    result, sent = resume_and_compare(server, recipe, tmp_path, baseline)
    assert sent == 0
    states = {s.name: s.state for s in result.stages}
    assert states["answers"] == "reused" and states["clean"] == "ran" and states["unique"] == "ran"
