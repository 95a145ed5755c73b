"""LLM layer throughput: synth's OpenAI-compatible backend vs a bare `AsyncOpenAI` + semaphore loop.

One invocation starts the loopback test server (a fixture, not a model) in its own process with a fixed
latency, then sends the same N chat requests at the same concurrency through

  (a) synth: `OpenAIBackend.acomplete` (cache off; retries, rate-limit hooks, replica picking, accounting on),
  (b) bare:  `AsyncOpenAI.chat.completions.create` under an `asyncio.Semaphore`, one task per request,
  (c) cached: (a) wrapped in `CachedBackend` on a fresh SQLite file, so every request is a miss and every
      completion is one committed WAL transaction (the price of losing nothing to ``kill -9``),

each measured run in a fresh process after a short warm-up, alternating the sides (best of `--repeats`),
and prints the wall times, the throughput ratios synth/bare and cached/synth, each against the ideal
N·latency/concurrency, the peak RSS growth of each side at N/4 and N, and the time spent committing
(per completion, and in all). Then the local-backend part (batched vs one prompt at a time), provided by
`bench/local_llm_bench.py`, unless `--skip-local`.

    .venv/bin/python bench/llm_bench.py               # 8,000 requests, 50 ms, concurrency 64
    .venv/bin/python bench/llm_bench.py --quick       # 1,000 requests, a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from synth.llm.base import ChatRequest  # noqa: E402
from synth.llm.cache import CachedBackend, RequestCache  # noqa: E402
from synth.llm.openai_compat import OpenAIBackend, OpenAIConfig  # noqa: E402
from synth.llm.testing import ServerProcess  # noqa: E402
from synth.records import Message  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Samples this process's RSS in a thread while a run goes on; `growth` = peak - start."""

    def __init__(self, every: float = 0.02):
        self.every = every

    def __enter__(self):
        gc.collect()
        self.start = self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())
        self.growth = self.peak - self.start


def make_prompts(n: int, tag: str = "") -> list[str]:
    return [f"Write one sentence about item number {i}{tag}." for i in range(n)]


class CommitTimer:
    """Wraps `RequestCache.put` to add up the time spent committing completions."""

    def __init__(self):
        self.seconds, self.commits = 0.0, 0
        original = RequestCache.put

        def put(cache, rows):
            started = time.perf_counter()
            original(cache, rows)
            self.seconds += time.perf_counter() - started
            self.commits += 1

        RequestCache.put = put


async def run_synth(base_url: str, n: int, concurrency: int, cache_dir: str | None = None) -> dict:
    backend = OpenAIBackend(OpenAIConfig(model="test-model", base_urls=[base_url], concurrency=concurrency,
                                         max_retries=3, timeout=60))
    timer = None
    if cache_dir is not None:
        timer = CommitTimer()
        backend = CachedBackend(backend, Path(cache_dir) / "llm-cache.sqlite")
    warmup = [ChatRequest(messages=[Message(role="user", content=p)]) for p in make_prompts(2 * concurrency, "w")]
    await backend.acomplete(warmup)  # connections open, code paths warm (and the cache file created)
    requests = [ChatRequest(messages=[Message(role="user", content=p)]) for p in make_prompts(n)]
    if timer is not None:
        timer.seconds, timer.commits = 0.0, 0
    with PeakRSS() as rss:
        started = time.perf_counter()
        out = await backend.acomplete(requests)
        wall = time.perf_counter() - started
    await backend.aclose()
    result = {"wall": wall, "ok": sum(c.ok for c in out), "rss_growth": rss.growth}
    if timer is not None:
        result.update(commit_seconds=timer.seconds, commits=timer.commits, cached=sum(c.cached for c in out))
    return result


async def run_bare(base_url: str, n: int, concurrency: int) -> dict:
    import openai

    limits = type(openai.DEFAULT_CONNECTION_LIMITS)(max_connections=concurrency,
                                                     max_keepalive_connections=concurrency)
    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-no-key", max_retries=0, timeout=60,
                                http_client=openai.DefaultAsyncHttpxClient(limits=limits, timeout=60))
    semaphore = asyncio.Semaphore(concurrency)

    async def one(prompt: str):
        async with semaphore:
            return await client.chat.completions.create(model="test-model",
                                                        messages=[{"role": "user", "content": prompt}])

    await asyncio.gather(*(one(p) for p in make_prompts(2 * concurrency, "w")))
    prompts = make_prompts(n)
    with PeakRSS() as rss:
        started = time.perf_counter()
        out = await asyncio.gather(*(one(p) for p in prompts), return_exceptions=True)
        wall = time.perf_counter() - started
    await client.close()
    return {"wall": wall, "ok": sum(not isinstance(r, BaseException) for r in out), "rss_growth": rss.growth}


def child(kind: str, base_url: str, n: int, concurrency: int) -> None:
    """One measured run in a fresh process (clean memory figures; the sides never share a heap)."""
    if kind == "bare":
        result = asyncio.run(run_bare(base_url, n, concurrency))
    elif kind == "cached":
        with tempfile.TemporaryDirectory(prefix="synth-bench-cache-") as folder:  # fresh file: all misses
            result = asyncio.run(run_synth(base_url, n, concurrency, cache_dir=folder))
    else:
        result = asyncio.run(run_synth(base_url, n, concurrency))
    print(json.dumps(result), flush=True)


def measure(kind: str, server: ServerProcess, n: int, concurrency: int) -> dict:
    before = server.stats()["requests"]
    proc = subprocess.run([sys.executable, __file__, "--child", kind, "--url", server.base_url, "--n", str(n),
                           "--concurrency", str(concurrency)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["sent"] = server.stats()["requests"] - before - 2 * concurrency  # minus the warm-up
    return result


def http_part(args) -> None:
    n, concurrency, latency = args.n, args.concurrency, args.latency
    ideal = n * latency / concurrency
    with ServerProcess(latency=latency) as server:
        print(f"test server (own process) at {server.base_url}, latency {latency * 1000:.0f} ms; "
              f"each run in a fresh process after a {2 * concurrency}-request warm-up")
        kinds = ("synth", "bare", "cached")
        best: dict[str, dict] = {}
        for _ in range(args.repeats):  # alternate the sides so load changes hit all of them
            for kind in kinds:
                result = measure(kind, server, n, concurrency)
                if kind not in best or result["wall"] < best[kind]["wall"]:
                    best[kind] = result
        small = {kind: measure(kind, server, n // 4, concurrency) for kind in kinds}

    print(f"\n{n:,} chat requests, concurrency {concurrency}, ideal N·latency/concurrency = {ideal:.2f} s "
          f"(best of {args.repeats})")
    print(f"{'':6} {'wall s':>7} {'req/s':>7} {'ideal/wall':>10} {'ok':>6} {'sent':>6} "
          f"{'RSS +MB @N/4':>12} {'RSS +MB @N':>10}")
    for kind in kinds:
        r = best[kind]
        print(f"{kind:6} {r['wall']:7.2f} {n / r['wall']:7.0f} {ideal / r['wall']:9.2f}x {r['ok']:6,} "
              f"{r['sent']:6,} {small[kind]['rss_growth']:12.1f} {r['rss_growth']:10.1f}")
    ratio = best["bare"]["wall"] / best["synth"]["wall"]
    verdict = "meets" if ratio >= 0.9 else "BELOW"
    print(f"\nsynth / bare throughput: {ratio:.2f}x ({verdict} the 0.9x target)")
    cached = best["cached"]
    per_commit = cached["commit_seconds"] / max(1, cached["commits"]) * 1e6
    print(f"cached / synth throughput: {best['synth']['wall'] / cached['wall']:.2f}x "
          f"({cached['commits']:,} commits, one per completion, {per_commit:.0f} µs each, "
          f"{cached['commit_seconds']:.2f} s of the {cached['wall']:.2f} s run; {cached['cached']} hits)")
    print("RSS growth includes the N results each side returns; synth keeps `concurrency` workers in flight, "
          "the bare loop one task per request.")


# ---------------------------------------------------------------- local backend part
# Provided by the local-backend engineer in bench/local_llm_bench.py as `run_local_bench(quick: bool)`:
# it prints tokens/s of the local backend batched vs one prompt at a time on the same model.


def local_part(args) -> None:
    path = Path(__file__).resolve().parent / "local_llm_bench.py"
    if not path.exists():
        print("\nlocal backend part: bench/local_llm_bench.py not found, skipped")
        return
    spec = importlib.util.spec_from_file_location("local_llm_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print("\nlocal backend: batched vs one prompt at a time")
    module.run_local_bench(quick=args.quick)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=8000, help="chat requests per run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.05, help="server latency in seconds")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side (best is reported)")
    parser.add_argument("--quick", action="store_true", help="1,000 requests, one run per side")
    parser.add_argument("--skip-local", action="store_true", help="skip the local-backend part")
    parser.add_argument("--child", choices=["synth", "bare", "cached"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.url, args.n, args.concurrency)
        return
    if args.quick:
        args.n, args.repeats = min(args.n, 1000), 1
    http_part(args)
    if not args.skip_local:
        local_part(args)


if __name__ == "__main__":
    main()
