"""Dedup throughput: synth's exact + MinHash-LSH dedup vs datasketch MinHashLSH doing the same job, in one run.

Data: N generated text records (user + assistant turns) with planted duplicates: exact copies (case and
whitespace changed), near copies (punctuation changed, a few words appended or prepended, one word
substituted in a long text), and "half copies" that share only their first half with an earlier record
(true Jaccard ~0.3: must NOT be merged).

Both sides do the same job with the same parameters: tokens (NFKC, lower case, whitespace split, outer
punctuation trimmed), word 5-gram shingles, 128 permutations, the same LSH bands/rows, first-in-input-order
keep rule, exact duplicates by normalised text first, and a near-duplicate is a record with an LSH
candidate whose estimated Jaccard (signature agreement) is >= threshold. Both see the same text; the
only differences are synth's vectorised batches and different random hash functions. datasketch runs on
the first `--baseline-sample` records (decisions on a prefix do not depend on later records, so they are
compared with synth's decisions on the same prefix) and its throughput is extrapolated from that prefix.

    .venv/bin/python bench/clean_bench.py                 # 1,000,000 records (datasketch on 100k)
    .venv/bin/python bench/clean_bench.py --quick         # 20k records, a smoke run
    .venv/bin/python bench/clean_bench.py --n 200000 --baseline-sample 200000
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
import unicodedata

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from synth.clean.dedup import Dedup, DedupConfig  # noqa: E402
from synth.clean.minhash import _PUNCTUATION  # noqa: E402

PROMPT = "Continue the story."
SYLLABLES = "ka lo mi nu pe ra si to vu we xa yo za be co di fa gu hi ja".split()


def make_vocabulary(size: int, rng: np.random.Generator) -> np.ndarray:
    words = set()
    while len(words) < size:
        parts = rng.integers(0, len(SYLLABLES), size=rng.integers(1, 5))
        words.add("".join(SYLLABLES[p] for p in parts))
    vocab = np.array(sorted(words), dtype=object)
    rng.shuffle(vocab)  # frequency rank independent of spelling
    return vocab


def make_texts(n: int, seed: int) -> tuple[list[str], dict[str, int]]:
    """Texts with planted duplicates; returns (texts, counts of each planted kind)."""
    rng = np.random.default_rng(seed)
    vocab = make_vocabulary(30000, rng)
    zipf = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    zipf /= zipf.sum()
    lengths = rng.integers(40, 121, size=n)
    ids = rng.choice(len(vocab), size=int(lengths.sum()), p=zipf)
    kinds = rng.choice(["fresh", "exact", "near", "half"], size=n, p=[0.80, 0.07, 0.09, 0.04])
    kinds[:100] = "fresh"
    texts: list[str] = []
    counts = {"fresh": 0, "exact": 0, "near": 0, "half": 0}
    offset = 0
    for i in range(n):
        fresh = list(vocab[ids[offset : offset + lengths[i]]])
        offset += lengths[i]
        kind = kinds[i]
        counts[kind] += 1
        if kind == "fresh":
            texts.append(" ".join(fresh))
            continue
        source = texts[int(rng.integers(0, i))]
        if kind == "exact":
            text = source.upper() if rng.random() < 0.5 else "  " + source.replace(" ", "  ") + "\n"
        elif kind == "near":
            words = source.split()
            style = rng.integers(0, 3)
            if style == 0:  # punctuation: same tokens, different text
                text = ", ".join(words[:5]) + " " + " ".join(words[5:]) + "!"
            elif style == 1:  # a few words added at one end
                extra = " ".join(fresh[: int(rng.integers(1, 3))])
                text = f"{extra} {source}" if rng.random() < 0.5 else f"{source} {extra}"
            else:  # one word substituted (long texts only, so the copy stays well above the threshold)
                if len(words) >= 90:
                    words[int(rng.integers(0, len(words)))] = fresh[0]
                else:
                    words.append(fresh[0])
                text = " ".join(words)
        else:  # half: shares its first half only
            words = source.split()
            text = " ".join(words[: len(words) // 2] + fresh[: len(words) - len(words) // 2])
        texts.append(text)
    return texts, counts


def record(i: int, text: str) -> dict:
    return {"id": f"r{i}", "messages": [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": text}]}


# ---------------------------------------------------------------- memory


class RssSampler:
    """Samples this process's resident memory every few milliseconds (peak RSS during a block)."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self.process, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()

    def __enter__(self):
        self.start = self.process.memory_info().rss
        self.peak = self.start
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


# ---------------------------------------------------------------- the two sides


def run_synth(texts: list[str], config: DedupConfig) -> tuple[float, set[int], Dedup]:
    stage = Dedup(config)
    list(Dedup(config).run([record(0, "warm up the imports")]))  # first-call imports are not throughput
    start = time.perf_counter()
    kept = {int(r["id"][1:]) for r in stage.run(record(i, t) for i, t in enumerate(texts))}
    elapsed = time.perf_counter() - start
    duplicates = set(range(len(texts))) - kept
    return elapsed, duplicates, stage


def _tokens(text: str) -> list[str]:
    words = unicodedata.normalize("NFKC", text).lower().split()
    return [w for w in (w.strip(_PUNCTUATION) for w in words) if w]


def run_datasketch(texts: list[str], config: DedupConfig, bands: int, rows: int) -> tuple[float, set[int]]:
    from datasketch import MinHash, MinHashLSH

    k = config.shingle
    lsh = MinHashLSH(threshold=config.threshold, num_perm=config.num_perm, params=(bands, rows))
    exact: set[str] = set()
    kept_hashes: dict[int, MinHash] = {}
    duplicates: set[int] = set()
    start = time.perf_counter()
    for i, text in enumerate(texts):
        rec = record(i, text)
        full = "\n".join(m["content"] for m in rec["messages"])
        normal = " ".join(unicodedata.normalize("NFKC", full).lower().split())
        if normal in exact:
            duplicates.add(i)
            continue
        tokens = _tokens(full)
        shingles = [" ".join(tokens[j : j + k]).encode() for j in range(max(len(tokens) - k + 1, 1))] if tokens else []
        minhash = MinHash(num_perm=config.num_perm, seed=config.seed)
        minhash.update_batch(shingles)
        if shingles and any(minhash.jaccard(kept_hashes[c]) >= config.threshold for c in lsh.query(minhash)):
            duplicates.add(i)
            continue
        exact.add(normal)
        if shingles:
            lsh.insert(i, minhash)
            kept_hashes[i] = minhash
    return time.perf_counter() - start, duplicates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="records to generate")
    parser.add_argument("--baseline-sample", type=int, default=100_000, help="records datasketch processes")
    parser.add_argument("--quick", action="store_true", help="20k records, datasketch on 10k")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--shingle", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.n, args.baseline_sample = 20_000, 10_000
    sample = min(args.baseline_sample, args.n)

    t0 = time.perf_counter()
    texts, planted = make_texts(args.n, args.seed)
    print(f"generated {args.n:,} records in {time.perf_counter() - t0:.1f}s; planted: "
          + ", ".join(f"{k} {v:,}" for k, v in planted.items()))
    config = DedupConfig(threshold=args.threshold, num_perm=args.num_perm, shingle=args.shingle, images=False)
    bands, rows = config.lsh_params()
    print(f"threshold {args.threshold}, {args.num_perm} permutations, {args.shingle}-word shingles, "
          f"LSH {bands} bands x {rows} rows (both sides)")

    with RssSampler() as rss:
        synth_time, synth_dups, stage = run_synth(texts, config)
    process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    synth_rate = args.n / synth_time
    print(f"synth:      {args.n:>9,} records in {synth_time:7.1f}s = {synth_rate:>9,.0f} records/s; "
          f"dropped {dict(stage.stats.dropped)}")
    print(f"synth memory: peak RSS during dedup {rss.peak / 2**30:.2f} GB "
          f"(of which input texts and generator state {rss.start / 2**30:.2f} GB before it started; "
          f"dedup's own growth {(rss.peak - rss.start) / 2**30:.2f} GB); process peak so far {process_peak / 2**30:.2f} GB")

    ds_time, ds_dups = run_datasketch(texts[:sample], config, bands, rows)
    ds_rate = sample / ds_time
    note = "" if sample == args.n else f" (first {sample:,} records; throughput extrapolated to {args.n:,})"
    print(f"datasketch: {sample:>9,} records in {ds_time:7.1f}s = {ds_rate:>9,.0f} records/s{note}")

    prefix = {i for i in synth_dups if i < sample}
    both = len(prefix & ds_dups)
    precision = both / len(prefix) if prefix else 1.0
    recall = both / len(ds_dups) if ds_dups else 1.0
    decisions_equal = 1 - len(prefix ^ ds_dups) / sample
    print(f"speed-up: {synth_rate / ds_rate:.1f}x datasketch (target >= 3x)")
    print(f"agreement on the first {sample:,} records: precision {precision:.4f}, recall {recall:.4f} "
          f"of synth's duplicates vs datasketch's ({len(prefix):,} vs {len(ds_dups):,}; "
          f"identical decisions {decisions_equal:.4%}) (target >= 0.98)")
    expected = planted["exact"] + planted["near"]
    print(f"planted exact+near duplicates: {expected:,}; synth dropped {len(synth_dups):,} "
          f"(half copies, which must be kept: {planted['half']:,})")
    print(f"memory target < 4 GB: {'met' if rss.peak < 4 * 2**30 else 'NOT met'} ({rss.peak / 2**30:.2f} GB)")


if __name__ == "__main__":
    main()
