"""The runner's overhead and its resume, measured in one run (every step is a real `synth` process).

1. The same 100k-record chain, adapt → filter → dedup, as three separate commands (`synth adapt`,
   `synth filter`, `synth dedup`) vs one `synth run` with 2 local workers (shards, markers, manifest).
2. The same `synth run`, killed with SIGKILL at 50% of its uninterrupted wall time, then resumed with the
   same command: the resume's time, and killed part + resume vs the uninterrupted run. The resumed
   outputs must hash the same as the uninterrupted run's (checked).

    .venv/bin/python bench/run_bench.py              # 100k records
    .venv/bin/python bench/run_bench.py --rows 5000  # a smoke run

Wall times on a shared machine move with its load (printed before and after); each figure is one run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

WORDS = ("river city council library bridge museum garden station market harbour valley forest mountain school "
         "engine signal window letter summer winter morning evening festival village island castle tower road").split()

RECIPE = """\
name: {name}
shard_size: {shard_size}
stages:
  - {{type: source, name: squad, path: {source}}}
  - {{type: adapt, name: adapted, input: squad, template: text_qa_extractive}}
  - type: filter
    name: filtered
    input: adapted
    filters:
      - {{name: length, min_answer_chars: 4, max_instruction_words: 120}}
      - repetition
  - {{type: dedup, name: unique, input: filtered}}
"""


def make_source(folder: Path, rows: int) -> Path:
    """SQuAD-shaped rows as Parquet: 3% repeat an earlier row's text (dedup has work), short answers
    and long passages for the filters."""
    from datasets import Dataset

    rng = random.Random(0)
    out = []
    for i in range(rows):
        if out and rng.random() < 0.03:
            twin = dict(out[rng.randrange(len(out))])
            twin["id"] = f"q{i}"
            out.append(twin)
            continue
        context = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 130))) + "."
        answer = rng.choice(WORDS + ["ok", "no"])
        out.append({"id": f"q{i}", "context": context,
                    "question": f"Which {rng.choice(WORDS)} is near the {rng.choice(WORDS)}?",
                    "answers": {"text": [answer], "answer_start": [0]}})
    path = folder / "squad.parquet"
    Dataset.from_list(out).to_parquet(str(path))
    return path


def synth(*args, env=None, cwd=None, kill_after: float | None = None) -> tuple[float, int]:
    """Run `synth ARGS` to its end (or SIGKILL its process group after `kill_after` s): (seconds, exit code)."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "synth", *map(str, args)], cwd=cwd, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return time.perf_counter() - started, -9
    if proc.returncode:
        raise SystemExit(f"synth {' '.join(map(str, args))} failed:\n{err[-2000:]}")
    return time.perf_counter() - started, proc.returncode


def hashes(run_dir: Path) -> dict[str, str]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return {name: entry.get("hash") for name, entry in manifest["stages"].items()}


def rows_of(path: Path) -> int:
    from datasets import load_from_disk

    return len(load_from_disk(str(path)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=10_000)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()

    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    work = Path(tempfile.mkdtemp(prefix="synth-run-bench-"))
    try:
        source = make_source(work, args.rows)
        print(f"{args.rows:,} SQuAD-shaped rows; chain: adapt (text_qa_extractive) → filter (length, repetition) → dedup")

        # 1. three commands, one after the other (each its own process, as a user types them)
        steps = [
            ("synth adapt", ["adapt", source, "-t", "text_qa_extractive", "-o", work / "adapted"]),
            ("synth filter", ["filter", work / "adapted", "-f", "length:min_answer_chars=4,max_instruction_words=120",
                              "-f", "repetition", "-o", work / "filtered"]),
            ("synth dedup", ["dedup", work / "filtered", "-o", work / "unique"]),
        ]
        separate = {}
        for label, command in steps:
            separate[label], _ = synth(*command)
        total_separate = sum(separate.values())
        separate_rows = rows_of(work / "unique")

        # 2. one recipe, 2 local workers
        recipe = work / "chain.yaml"
        recipe.write_text(RECIPE.format(name="chain", shard_size=args.shard_size, source=source))
        runs = work / "runs"
        run_time, _ = synth("run", recipe, "--workers", args.workers, "--runs-dir", runs)
        run_rows = rows_of(runs / "chain" / "unique")
        expected = hashes(runs / "chain")
        chain = json.loads((runs / "chain" / "manifest.json").read_text())
        stage_seconds = {n: s.get("seconds", 0.0) for n, s in chain["stages"].items() if s.get("state") == "ran"}

        # 3. the same run killed at 50% of that time, then resumed
        recipe2 = work / "chain2.yaml"
        recipe2.write_text(RECIPE.format(name="chain2", shard_size=args.shard_size, source=source))
        killed_after, code = synth("run", recipe2, "--workers", args.workers, "--runs-dir", runs, kill_after=run_time / 2)
        manifest = json.loads((runs / "chain2" / "manifest.json").read_text())
        done_before = [n for n, s in manifest["stages"].items() if s.get("state") in ("ran", "source")]
        shard_markers = sum(1 for _ in (runs / "chain2" / "shards").rglob("*.done"))
        resume_time, _ = synth("run", recipe2, "--workers", args.workers, "--runs-dir", runs)
        resumed = hashes(runs / "chain2")
        same = {k: v for k, v in resumed.items()} == {k: v for k, v in expected.items()}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print("separate commands:")
    for label, seconds in separate.items():
        print(f"  {label:<14} {seconds:7.1f} s")
    print(f"  {'total':<14} {total_separate:7.1f} s   ({separate_rows:,} rows out)")
    print(f"synth run, local executor, {args.workers} workers, {args.shard_size:,} rows per shard:")
    for name, seconds in stage_seconds.items():
        print(f"  {name:<14} {seconds:7.1f} s")
    print(f"  {'one command':<14} {run_time:7.1f} s   ({run_rows:,} rows out; "
          f"{run_time / total_separate:.2f}x the separate commands)")
    print("kill -9 at 50% and resume:")
    print(f"  killed after   {killed_after:7.1f} s   (finished stages: {', '.join(done_before) or 'none'}; "
          f"{shard_markers} shard markers of the running stage)")
    print(f"  resume         {resume_time:7.1f} s   ({resume_time / run_time:.0%} of the uninterrupted run)")
    print(f"  killed + resume {killed_after + resume_time:6.1f} s   ({(killed_after + resume_time) / run_time:.2f}x uninterrupted)")
    print(f"  outputs identical to the uninterrupted run: {'yes' if same else 'NO'}")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
