"""What a long command writes to a log file or a pipe (no terminal): a plain progress line every few
seconds (SYNTH_PROGRESS_INTERVAL) while it works, and its tables whole, never cut to 80 columns."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from synth.llm.testing import LLMTestServer
from tests.cli_helpers import one_line_error, run_cli
from tests.run_helpers import backend_block, write_recipe


@pytest.fixture
def slow_server():
    server = LLMTestServer(latency=0.15).start()
    yield server
    server.stop()


def questions(path: Path, n: int) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"Question number {i}?"}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def synth_to_file(tmp_path: Path, *args, interval: str = "0.3") -> tuple[int, str]:
    """`synth ARGS` in its own process, stdout and stderr into a log file (not a terminal)."""
    log = tmp_path / "synth.log"
    env = {**os.environ, "SYNTH_DEBUG": "", "SYNTH_PROGRESS_INTERVAL": interval, "COLUMNS": ""}
    with open(log, "w") as f:
        code = subprocess.run([sys.executable, "-m", "synth", *map(str, args)], env=env, stdout=f,
                              stderr=subprocess.STDOUT, timeout=300).returncode
    return code, log.read_text()


GENERATING = re.compile(r"^generate: (\d+)/12 \(\d+%\)( · [\d.]+/s)? · [\d.]+ s elapsed( · ~.* left)? · [\d,]+ tok",
                        re.MULTILINE)


def test_generate_into_a_log_file_prints_progress_lines_while_it_works(slow_server, tmp_path):
    code, log = synth_to_file(tmp_path, "generate", questions(tmp_path / "q.jsonl", 12), "-o", tmp_path / "out",
                              "--base-url", slow_server.base_url, "-m", "test-model", "--no-cache",
                              "--concurrency", "1")
    assert code == 0, log
    lines = GENERATING.findall(log)
    assert len(lines) >= 3, log  # 12 requests of 0.15 s, one at a time: a line every 0.3 s
    done = [int(m.group(1)) for m in GENERATING.finditer(log)]
    assert done == sorted(done) and done[-1] > done[0]  # counts that move on
    assert not any("\x1b[" in line for line in log.splitlines() if line.startswith("generate:"))  # plain text


def test_no_progress_lines_when_the_interval_is_0_or_the_command_is_short(slow_server, tmp_path):
    args = ["generate", questions(tmp_path / "q.jsonl", 3), "--base-url", slow_server.base_url, "-m", "test-model",
            "--no-cache", "--concurrency", "1"]
    code, log = synth_to_file(tmp_path, *args, "-o", tmp_path / "a", interval="0")
    assert code == 0 and "generate:" not in log, log
    code, log = synth_to_file(tmp_path, *args, "-o", tmp_path / "b", interval="30")
    assert code == 0 and "generate:" not in log, log


def test_a_bad_interval_is_one_clear_error(monkeypatch, tmp_path, slow_server):
    monkeypatch.setenv("SYNTH_PROGRESS_INTERVAL", "often")
    one_line_error(run_cli("generate", questions(tmp_path / "q.jsonl", 1), "-o", tmp_path / "out", "--base-url",
                           slow_server.base_url, "-m", "test-model", "--no-cache"),
                   "SYNTH_PROGRESS_INTERVAL='often'", "number of seconds")


RECIPE = """\
name: logged
{backends}
stages:
  - {{type: source, name: questions, path: {questions}}}
  - {{type: generate, name: answers_for_the_questions, input: questions}}
"""


def test_synth_run_into_a_log_file_prints_running_stage_lines_and_whole_tables(slow_server, tmp_path):
    recipe = write_recipe(tmp_path, RECIPE, backends=backend_block(slow_server, concurrency=1),
                          questions=questions(tmp_path / "q.jsonl", 12))
    code, log = synth_to_file(tmp_path, "run", recipe, "--runs-dir", tmp_path / "runs")
    assert code == 0, log
    running = re.findall(r"^answers_for_the_questions \(generate\): running, shards 0/1, \d+/12 records read, "
                         r"[\d.,-]+ rec/s(?:, (\d+) requests done)?, [\d,-]+ tokens, [\d.,-]+ tok/s, 0 failed, "
                         r"[\d.]+ s elapsed, ETA ", log, re.MULTILINE)
    assert len(running) >= 3, log
    done = [int(n or 0) for n in running]
    assert done == sorted(done) and done[-1] > done[0], log  # requests that move on
    assert "answers_for_the_questions (generate): done, 12 read → 12 rows" in log
    assert "…" not in log  # the final table is whole, though wider than 80 columns
    header = next(line for line in log.splitlines() if line.startswith("stage ") and "failed" in line)
    assert len(header.rstrip()) > 80 and "time" in header


def test_tables_off_a_terminal_keep_every_figure_whole():
    from synth.console import Console
    from synth.run.progress import summary_table

    stages = [{"name": "prefs_hallucinate", "state": "ran", "seconds": 457.0,
               "counts": {"read": 1500, "kept": 1679, "rows": 1679, "rejected": {}, "failed": {"http_500": 3}},
               "usage": {"prompt_tokens": 3000, "completion_tokens": 89}}]
    out = io.StringIO()
    Console(file=out).print(summary_table(stages))
    text = out.getvalue()
    assert "…" not in text, text
    assert "1,500" in text and "1,679" in text and "7 min 37 s" in text and "failed" in text
    narrow = io.StringIO()
    Console(file=narrow, width=60).print("a plain line is printed as it is")
    assert narrow.getvalue() == "a plain line is printed as it is\n"
