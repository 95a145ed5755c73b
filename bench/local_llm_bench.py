"""Local backend throughput: tokens/s batched vs one prompt at a time, same model, prompts and max tokens.

Both sides run greedy decoding through `LocalBackend.complete` on one loaded model (the embedded Gemma 3
270M by default, converted once into the user cache; `--tiny` for a tiny random model built on the spot),
after a warm-up, in the same process: first one prompt per `generate` call, then all prompts in batches
of `--batch-size`. Greedy decoding makes both sides produce the same tokens, which the bench checks.
Tokens/s counts generated tokens (from the backend's usage) over wall time. Target: batched >= 4x.

    .venv/bin/python bench/local_llm_bench.py            # 32 prompts x 64 tokens, batch 32, embedded model
    .venv/bin/python bench/local_llm_bench.py --quick    # 8 prompts x 24 tokens
    .venv/bin/python bench/local_llm_bench.py --tiny     # a tiny random model (mechanics only)

`bench/llm_bench.py` calls `run_local_bench(quick)` for its local part.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from synth.llm.base import ChatRequest  # noqa: E402
from synth.llm.local import LocalBackend  # noqa: E402
from synth.records import Message  # noqa: E402

TOPICS = [
    "the water cycle", "how vaccines work", "why leaves change colour", "the history of the bicycle",
    "how a refrigerator works", "the rules of chess", "what causes earthquakes", "how bread rises",
    "the life of bees", "how rainbows form", "why the sea is salty", "how airplanes fly",
    "what a black hole is", "how to plant a tree", "the invention of paper", "why we dream",
]


def prompts(count: int) -> list[ChatRequest]:
    requests = []
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        text = f"Write a short paragraph explaining {topic}." + (" Use simple words." if i >= len(TOPICS) else "")
        requests.append(ChatRequest(messages=[Message(role="user", content=text)], key=str(i)))
    return requests


def _timed(backend: LocalBackend, requests: list[ChatRequest], batch_size: int) -> tuple[float, int, list]:
    backend.config = backend.config.model_copy(update={"batch_size": batch_size})
    before = backend.usage.completion_tokens
    started = time.perf_counter()
    out = backend.complete(requests)
    seconds = time.perf_counter() - started
    failed = [c.error for c in out if not c.ok]
    if failed:
        raise RuntimeError(f"generation failed: {failed[0]}")
    return seconds, backend.usage.completion_tokens - before, [c.text for c in out]


def run(quick: bool = False, tiny: bool = False, count: int | None = None, max_tokens: int | None = None,
        batch_size: int | None = None, model: str | None = None, threads: int | None = None) -> dict:
    """Measure and print; returns the figures as a dict."""
    import torch

    count = count or (8 if quick else 32)
    max_tokens = max_tokens or (24 if quick else 64)
    batch_size = batch_size or count
    workdir = None
    if tiny:
        from synth.llm.tiny import build_tiny_model

        workdir = tempfile.TemporaryDirectory(prefix="synth-tiny-lm-")
        model = str(build_tiny_model(Path(workdir.name), hidden_size=256, layers=4, vocab_size=400))
    model = model or "gemma-3-270m"

    # No "### " stop strings: every prompt runs to max_tokens on both sides (equal work).
    backend = LocalBackend(model=model, max_tokens=max_tokens, template_stops=False, threads=threads)
    started = time.perf_counter()
    backend.load()
    load_seconds = time.perf_counter() - started
    requests = [r.model_copy(update={"temperature": 0, "max_tokens": max_tokens}) for r in prompts(count)]
    _timed(backend, requests[:2], 2)  # warm-up

    one_s, one_tokens, one_texts = _timed(backend, requests, 1)
    batch_s, batch_tokens, batch_texts = _timed(backend, requests, batch_size)
    same = sum(a == b for a, b in zip(one_texts, batch_texts, strict=True))
    result = {
        "model": backend.model_name,
        "prompts": count,
        "max_tokens": max_tokens,
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "load_seconds": round(load_seconds, 2),
        "one_at_a_time": {"seconds": round(one_s, 3), "tokens": one_tokens, "tokens_per_s": round(one_tokens / one_s, 1)},
        "batched": {"seconds": round(batch_s, 3), "tokens": batch_tokens, "tokens_per_s": round(batch_tokens / batch_s, 1)},
        "identical_outputs": f"{same}/{count}",
    }
    result["ratio"] = round(result["batched"]["tokens_per_s"] / result["one_at_a_time"]["tokens_per_s"], 2)
    _print(result)
    backend.close()
    if workdir is not None:
        workdir.cleanup()
    return result


def _print(r: dict) -> None:
    print(f"model {r['model']} (loaded in {r['load_seconds']} s); {r['prompts']} prompts x {r['max_tokens']} "
          f"new tokens, greedy, {r['threads']} torch thread(s)")
    print(f"{'':24}{'seconds':>10}{'tokens':>10}{'tokens/s':>12}")
    for name, key in (("one prompt at a time", "one_at_a_time"), (f"batched ({r['batch_size']})", "batched")):
        side = r[key]
        print(f"{name:24}{side['seconds']:>10.2f}{side['tokens']:>10,}{side['tokens_per_s']:>12,.1f}")
    verdict = "meets" if r["ratio"] >= 4 else "below"
    print(f"ratio batched / one at a time: {r['ratio']:.2f}x ({verdict} the 4x target); "
          f"identical greedy outputs: {r['identical_outputs']}")


def run_local_bench(quick: bool = False) -> dict:
    """Entry point used by bench/llm_bench.py."""
    return run(quick=quick)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 prompts x 24 tokens")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model instead of the embedded one")
    parser.add_argument("--model", help="another local model (Hub id or folder)")
    parser.add_argument("--prompts", type=int, help="number of prompts")
    parser.add_argument("--max-tokens", type=int, help="new tokens per prompt")
    parser.add_argument("--batch-size", type=int, help="sequences per batch (default: all prompts)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    run(quick=args.quick, tiny=args.tiny, count=args.prompts, max_tokens=args.max_tokens,
        batch_size=args.batch_size, model=args.model, threads=args.threads)


if __name__ == "__main__":
    main()
