"""LLM layer throughput: synth's OpenAI-compatible backend vs a bare `AsyncOpenAI` + semaphore loop and the
peers a user would pick instead (Bespoke Curator, distilabel), plus batch mode's wall time and cost.

One invocation starts the loopback test server (a fixture, not a model) in its own process with a fixed
latency, then sends the same N chat requests at the same concurrency through

  (a) synth: `OpenAIBackend.acomplete` (cache off; retries, rate-limit hooks, replica picking, accounting on),
  (b) bare:  `AsyncOpenAI.chat.completions.create` under an `asyncio.Semaphore`, one task per request,
  (c) cached: (a) wrapped in `CachedBackend` on a fresh SQLite file, so every request is a miss and every
      completion is one committed WAL transaction (the price of losing nothing to ``kill -9``),

  (d) curator: Bespoke Curator's `curator.LLM(backend="openai")` online processor pointed at the server,
  (e) distilabel: distilabel's `TextGeneration` task with `OpenAILLM`, used standalone (``load()`` then
      ``process()`` over batches of `concurrency` inputs: its own concurrency model, without a Pipeline's
      extra processes),

each measured run in a fresh process after a short warm-up, alternating the sides (best of `--repeats`),
reporting wall time, requests/s and the client's CPU-seconds per 1,000 requests (its own process and any
it started, during the measured run). The peers run with the interpreter of ``--peers-python`` (or
``$SYNTH_BENCH_PEERS_PYTHON``): a separate venv holding bench/requirements-peers.txt, so they never enter
synth's own environment; without it they are skipped. Then batch mode: the same N requests as one
`--batch` call against a server whose batches complete after ``--batch-delay`` seconds (wall time from
submit to the last result), with the cost at illustrative online and batch prices.

and prints the wall times, the throughput ratios synth/bare and cached/synth, each against the ideal
N·latency/concurrency, the peak RSS growth of each side at N/4 and N, and the time spent committing
(per completion, and in all). Then the local-backend part (batched vs one prompt at a time), provided by
`bench/local_llm_bench.py`, unless `--skip-local`.

    .venv/bin/python bench/llm_bench.py               # 8,000 requests, 50 ms, concurrency 64
    .venv/bin/python bench/llm_bench.py --quick       # 1,000 requests, a smoke run
    .venv/bin/python bench/llm_bench.py --peers-python .venv-peers/bin/python --skip-local
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import resource
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


class CPU:
    """CPU-seconds (user + system) of this process and its reaped children over a block."""

    def __enter__(self):
        self.start = self._now()
        return self

    @staticmethod
    def _now() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    def __exit__(self, *exc):
        self.seconds = self._now() - self.start


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
    with PeakRSS() as rss, CPU() as cpu:
        started = time.perf_counter()
        out = await backend.acomplete(requests)
        wall = time.perf_counter() - started
    await backend.aclose()
    result = {"wall": wall, "ok": sum(c.ok for c in out), "rss_growth": rss.growth, "cpu": cpu.seconds}
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
    with PeakRSS() as rss, CPU() as cpu:
        started = time.perf_counter()
        out = await asyncio.gather(*(one(p) for p in prompts), return_exceptions=True)
        wall = time.perf_counter() - started
    await client.close()
    return {"wall": wall, "ok": sum(not isinstance(r, BaseException) for r in out), "rss_growth": rss.growth,
            "cpu": cpu.seconds}


def run_curator(base_url: str, n: int, concurrency: int) -> dict:
    """Bespoke Curator's OpenAI online processor, as its docs configure an OpenAI-compatible server."""
    os.environ.setdefault("TELEMETRY_ENABLED", "false")
    os.environ.setdefault("CURATOR_DISABLE_RICH_DISPLAY", "1")
    import importlib.util as util

    # Curator counts tokens with tiktoken's cl100k_base, which it would download; litellm (its dependency)
    # ships that file under tiktoken's cache name, and this machine has no internet.
    litellm_dir = os.path.dirname(util.find_spec("litellm").origin)
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(litellm_dir, "litellm_core_utils", "tokenizers"))
    from bespokelabs import curator

    params = {"base_url": base_url, "api_key": "sk-no-key", "max_concurrent_requests": concurrency,
              "max_requests_per_minute": 10_000_000, "max_tokens_per_minute": 10_000_000_000, "max_retries": 0}
    llm = curator.LLM(model_name="test-model", backend="openai", backend_params=params)
    with tempfile.TemporaryDirectory(prefix="curator-bench-") as folder:
        llm(make_prompts(2 * concurrency, "w"), working_dir=os.path.join(folder, "warm"))
        with PeakRSS() as rss, CPU() as cpu:
            started = time.perf_counter()
            out = llm(make_prompts(n), working_dir=os.path.join(folder, "run"))
            wall = time.perf_counter() - started
        ok = len(out.dataset) if hasattr(out, "dataset") else len(out)
    return {"wall": wall, "ok": ok, "rss_growth": rss.growth, "cpu": cpu.seconds}


def run_distilabel(base_url: str, n: int, concurrency: int) -> dict:
    """distilabel's `TextGeneration` + `OpenAILLM`, standalone: `process` over batches of `concurrency`."""
    os.environ.setdefault("DISTILABEL_TELEMETRY", "0")
    from distilabel.models.llms import OpenAILLM
    from distilabel.steps.tasks import TextGeneration

    llm = OpenAILLM(model="test-model", base_url=base_url, api_key="sk-no-key", max_retries=0, timeout=60)
    task = TextGeneration(llm=llm, input_batch_size=concurrency)
    task.load()

    def run(prompts: list[str]) -> int:
        ok = 0
        for start in range(0, len(prompts), concurrency):
            batch = [{"instruction": p} for p in prompts[start:start + concurrency]]
            for row in next(task.process(batch)):
                ok += row.get("generation") is not None
        return ok

    run(make_prompts(2 * concurrency, "w"))
    with PeakRSS() as rss, CPU() as cpu:
        started = time.perf_counter()
        ok = run(make_prompts(n))
        wall = time.perf_counter() - started
    task.unload()
    return {"wall": wall, "ok": ok, "rss_growth": rss.growth, "cpu": cpu.seconds}


def run_batch(base_url: str, n: int) -> dict:
    """synth's batch mode: the N requests as one `--batch` call; wall time from submit to the last result."""
    from synth.llm.factory import make_backend
    from synth.llm.usage import Prices

    with tempfile.TemporaryDirectory(prefix="synth-bench-batch-") as folder:
        backend = make_backend("openai", "test-model", base_url, cache_dir=folder, batch=True,
                               batch_poll_interval=0.2, prices=Prices(**ONLINE_PRICES),
                               batch_prices=Prices(**BATCH_PRICES))
        backend.console = _Quiet()
        requests = [ChatRequest(messages=[Message(role="user", content=p)]) for p in make_prompts(n)]
        with CPU() as cpu:
            started = time.perf_counter()
            out = backend.complete(requests)
            wall = time.perf_counter() - started
        usage = backend.usage
        online = Prices(**ONLINE_PRICES).cost(usage.prompt_tokens, usage.completion_tokens)
        backend.close()
    return {"wall": wall, "ok": sum(c.ok for c in out), "cpu": cpu.seconds, "batch_cost": usage.cost,
            "online_cost": online, "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}


class _Quiet:
    def print(self, *args, **kwargs):
        pass


# Illustrative prices per 1M tokens (OpenAI's gpt-4.1-mini list prices, online and batch, at the time).
ONLINE_PRICES = {"prompt": 0.40, "completion": 1.60}
BATCH_PRICES = {"prompt": 0.20, "completion": 0.80}
PEERS = ("curator", "distilabel")


def child(kind: str, base_url: str, n: int, concurrency: int) -> None:
    """One measured run in a fresh process (clean memory figures; the sides never share a heap)."""
    if kind == "curator":
        result = run_curator(base_url, n, concurrency)
    elif kind == "distilabel":
        result = run_distilabel(base_url, n, concurrency)
    elif kind == "batch":
        result = run_batch(base_url, n)
    elif kind == "bare":
        result = asyncio.run(run_bare(base_url, n, concurrency))
    elif kind == "cached":
        with tempfile.TemporaryDirectory(prefix="synth-bench-cache-") as folder:  # fresh file: all misses
            result = asyncio.run(run_synth(base_url, n, concurrency, cache_dir=folder))
    else:
        result = asyncio.run(run_synth(base_url, n, concurrency))
    print(json.dumps(result), flush=True)


def measure(kind: str, server: ServerProcess, n: int, concurrency: int, python: str = sys.executable) -> dict:
    before = server.stats()["requests"]
    proc = subprocess.run([python, __file__, "--child", kind, "--url", server.base_url, "--n", str(n),
                           "--concurrency", str(concurrency)], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return {"error": lines[-1][:300] if lines else f"exit {proc.returncode}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    warm = 0 if kind == "batch" else 2 * concurrency
    result["sent"] = server.stats()["requests"] - before - warm  # minus the warm-up
    return result


def http_part(args) -> None:
    n, concurrency, latency = args.n, args.concurrency, args.latency
    ideal = n * latency / concurrency
    peers_python = args.peers_python or os.environ.get("SYNTH_BENCH_PEERS_PYTHON")
    kinds = ["synth", "bare", "cached"] + (list(PEERS) if peers_python else [])
    python = {kind: (peers_python if kind in PEERS else sys.executable) for kind in kinds}
    with ServerProcess(latency=latency) as server:
        print(f"test server (own process) at {server.base_url}, latency {latency * 1000:.0f} ms; "
              f"each run in a fresh process after a {2 * concurrency}-request warm-up")
        best: dict[str, dict] = {}
        for _ in range(args.repeats):  # alternate the sides so load changes hit all of them
            for kind in kinds:
                result = measure(kind, server, n, concurrency, python[kind])
                if "error" in result:
                    best.setdefault(kind, result)
                elif kind not in best or "error" in best[kind] or result["wall"] < best[kind]["wall"]:
                    best[kind] = result
        small = {kind: measure(kind, server, n // 4, concurrency, python[kind]) for kind in ("synth", "bare", "cached")}

    print(f"\n{n:,} chat requests, concurrency {concurrency}, ideal N·latency/concurrency = {ideal:.2f} s "
          f"(best of {args.repeats})")
    print(f"{'':10} {'wall s':>7} {'req/s':>7} {'ideal/wall':>10} {'CPU s/1k':>8} {'ok':>6} {'sent':>6} "
          f"{'RSS +MB @N/4':>12} {'RSS +MB @N':>10}")
    for kind in kinds:
        r = best[kind]
        if "error" in r:
            print(f"{kind:10} failed: {r['error']}")
            continue
        rss_small = f"{small[kind]['rss_growth']:12.1f}" if kind in small and "rss_growth" in small[kind] else " " * 12
        print(f"{kind:10} {r['wall']:7.2f} {n / r['wall']:7.0f} {ideal / r['wall']:9.2f}x "
              f"{r['cpu'] / n * 1000:8.2f} {r['ok']:6,} {r['sent']:6,} {rss_small} {r['rss_growth']:10.1f}")
    ratio = best["bare"]["wall"] / best["synth"]["wall"]
    verdict = "meets" if ratio >= 0.9 else "BELOW"
    print(f"\nsynth / bare throughput: {ratio:.2f}x ({verdict} the 0.9x target)")
    for peer in PEERS:
        r = best.get(peer)
        if r and "error" not in r:
            print(f"synth / {peer}: {r['wall'] / best['synth']['wall']:.2f}x requests/s, "
                  f"{best['synth']['cpu'] / r['cpu']:.2f}x CPU per request ({peer} {r['cpu'] / n * 1000:.2f} "
                  f"CPU s/1k vs synth {best['synth']['cpu'] / n * 1000:.2f})")
    if not peers_python:
        print("peers skipped: pass --peers-python (a venv with bench/requirements-peers.txt)")
    cached = best["cached"]
    per_commit = cached["commit_seconds"] / max(1, cached["commits"]) * 1e6
    print(f"cached / synth throughput: {best['synth']['wall'] / cached['wall']:.2f}x "
          f"({cached['commits']:,} commits, one per completion, {per_commit:.0f} µs each, "
          f"{cached['commit_seconds']:.2f} s of the {cached['wall']:.2f} s run; {cached['cached']} hits)")
    print("RSS growth includes the N results each side returns; synth keeps `concurrency` workers in flight, "
          "the bare loop one task per request.")
    if args.batch_delay >= 0:
        batch_part(args)


def batch_part(args) -> None:
    with ServerProcess(latency=args.latency, batch_delay=args.batch_delay) as server:
        r = measure("batch", server, args.n, args.concurrency)
        stats = server.stats()
    if "error" in r:
        print(f"\nbatch mode failed: {r['error']}")
        return
    print(f"\nbatch mode: {args.n:,} requests in {stats['batch_creates']} batch(es) completing after "
          f"{args.batch_delay:g} s: submit → last result {r['wall']:.2f} s ({r['ok']:,} ok, "
          f"{stats['batch_lines']:,} lines served, CPU {r['cpu'] / args.n * 1000:.2f} s/1k); "
          f"cost {r['batch_cost']:.4f} at batch prices vs {r['online_cost']:.4f} online "
          f"({r['prompt_tokens']:,} + {r['completion_tokens']:,} tokens; illustrative prices {BATCH_PRICES} / "
          f"{ONLINE_PRICES} per 1M)")


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
    parser.add_argument("--peers-python", help="interpreter of a venv with bench/requirements-peers.txt "
                        "(default $SYNTH_BENCH_PEERS_PYTHON; none: peers skipped)")
    parser.add_argument("--batch-delay", type=float, default=5.0,
                        help="seconds before the loopback server serves a batch (negative: skip batch mode)")
    parser.add_argument("--child", choices=["synth", "bare", "cached", "batch", *PEERS], help=argparse.SUPPRESS)
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
