"""Peak memory of `synth mix` and `synth generate` over an image-text dataset of N and 4N rows.

The spine streams records (reader → stages → writer) and mix selects rows by index, so peak RSS should
not grow with the dataset. One invocation builds a TRL-style image-text JSONL of 4N rows (one distinct
JPEG per row, on disk, relative paths) and its first N rows, then runs each command on both sizes as a
fresh process and reads its peak RSS from the kernel (`wait4` → ``ru_maxrss``). `generate` talks to the
loopback OpenAI-compatible test server (a fixture, not a model) in its own process.

    .venv/bin/python bench/memory_bench.py             # N = 50,000 (4N = 200,000): about 15 minutes
    .venv/bin/python bench/memory_bench.py --n 5000    # a smoke run

Target: peak RSS growth from N to 4N under 1.3x for both commands.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synth.llm.testing import ServerProcess  # noqa: E402

SYNTH = [sys.executable, "-m", "synth.cli"] if not (ROOT / ".venv/bin/synth").exists() else [str(ROOT / ".venv/bin/synth")]


def make_images(folder: Path, count: int) -> None:
    """`count` distinct small JPEGs (a colour and a number drawn per row), kept between runs."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    have = len(list(folder.glob("*.jpg")))
    for i in range(have, count):
        image = Image.new("RGB", (48, 48), ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256))
        ImageDraw.Draw(image).text((4, 16), str(i), fill=(255, 255, 255))
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=85)
        (folder / f"{i:07d}.jpg").write_bytes(buf.getvalue())


def write_jsonl(path: Path, count: int, answered: bool) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(count):
            user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"Describe picture {i} in detail."}]}
            messages = [user]
            if answered:
                messages.append({"role": "assistant", "content": [{"type": "text", "text": f"Picture {i} is a square of one colour with the number {i} on it."}]})
            f.write(json.dumps({"messages": messages, "images": [f"img/{i:07d}.jpg"]}) + "\n")


def peak_rss_mb(args: list[str], cwd: Path, log: Path) -> tuple[float, float]:
    """Run a command as a fresh process; (peak RSS in MB, seconds)."""
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed ({' '.join(args)}); see {log}:\n{log.read_text()[-2000:]}")
    return usage.ru_maxrss / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--work", type=Path, default=ROOT / ".bench-out" / "memory")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    n, work = args.n, args.work
    work.mkdir(parents=True, exist_ok=True)

    t0 = time.monotonic()
    make_images(work / "img", 4 * n)
    sizes = {"N": n, "4N": 4 * n}
    for label, count in sizes.items():
        write_jsonl(work / f"sft_{label}.jsonl", count, answered=True)
        write_jsonl(work / f"prompts_{label}.jsonl", count, answered=False)
        (work / f"mix_{label}.yaml").write_text(
            f"sources:\n  - path: sft_{label}.jsonl\n    name: pictures\n    weight: 1\n"
            f"total: {count}\nvalidation: 0.05\nseed: 0\n"
        )
    print(f"data: {4 * n:,} JPEGs and JSONL files in {work} ({time.monotonic() - t0:.0f} s)")

    results: dict[str, dict[str, tuple[float, float]]] = {"mix": {}, "generate": {}}
    for label in sizes:
        out = work / f"out_mix_{label}"
        shutil.rmtree(out, ignore_errors=True)
        results["mix"][label] = peak_rss_mb(
            [*SYNTH, "mix", f"mix_{label}.yaml", "--out", str(out), "--overwrite"], work, work / f"mix_{label}.log"
        )
        shutil.rmtree(out, ignore_errors=True)
    with ServerProcess(latency=0.0) as server:
        for label in sizes:
            out = work / f"out_generate_{label}"
            shutil.rmtree(out, ignore_errors=True)
            results["generate"][label] = peak_rss_mb(
                [*SYNTH, "generate", f"prompts_{label}.jsonl", "--out", str(out), "--base-url", server.base_url,
                 "--model", "test-model", "--concurrency", str(args.concurrency), "--no-cache", "--max-tokens", "32",
                 "--overwrite"],
                work, work / f"generate_{label}.log",
            )
            shutil.rmtree(out, ignore_errors=True)

    print(f"\npeak RSS, image-text rows with one JPEG each on disk (N = {n:,})")
    print(f"{'command':<10} {'N: MB':>9} {'N: s':>8} {'4N: MB':>9} {'4N: s':>8} {'4N/N':>7}  target < 1.30x")
    for command, by_size in results.items():
        (mb1, s1), (mb4, s4) = by_size["N"], by_size["4N"]
        ratio = mb4 / mb1
        print(f"{command:<10} {mb1:>9,.0f} {s1:>8,.1f} {mb4:>9,.0f} {s4:>8,.1f} {ratio:>6.2f}x  {'met' if ratio < 1.3 else 'MISSED'}")


if __name__ == "__main__":
    main()
