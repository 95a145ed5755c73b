"""Dedup throughput and agreement: synth's exact + MinHash-LSH dedup vs datasketch and rensa, in one run.

Data: N generated text records (user + assistant turns) with planted duplicates: exact copies (case and
whitespace changed), near copies (punctuation changed, a few words appended or prepended, one word
substituted in a long text), and "half copies" that share only their first half with an earlier record
(true Jaccard ~0.3: must NOT be merged).

Every side does the same job with the same parameters: tokens (NFKC, lower case, whitespace split, outer
punctuation trimmed), word 5-gram shingles, the same LSH bands x rows (9 x 13 for threshold 0.8 and 128
permutations), first-in-input-order keep rule, exact duplicates by normalised text first, and a
near-duplicate is a record with an LSH candidate whose estimated Jaccard (equal signature slots) is >=
threshold. The sides:

- synth: `Dedup` (the whole stage: twin ids, reject accounting), with each engine: rensa (the default when
  installed) and numpy (the fallback).
- datasketch: a `MinHash` built per record, `MinHashLSH` query + verify + insert (the usual script). By
  default on the first 200,000 records only (`--datasketch-records`): its index holds ~5 KB per kept
  record, and next to the other sides the full 1M did not fit this shared 23 GB machine. Its rate is
  measured on those records and its agreement judged on them (decisions on a prefix do not depend on
  later records); nothing is extrapolated.
- datasketch bulk: the same with `MinHash.bulk` per 4,096 records (shared permutations: the fast path).
- rensa: `RMinHashDeduplicator.add_pairs` per 4,096 records (rensa's own streaming dedup: sketch, LSH
  query and threshold check in Rust). rensa's LSH needs num_perm divisible by the bands, so rensa (and
  synth's rensa engine) sketch bands x rows = 117 slots: the same LSH S-curve.
datasketch and rensa tokenize and shingle each record in Python (their users do); synth in pyarrow/numpy.

The other sides see all N records, interleaved: each chunk of `--chunk` records goes
through every side in turn (the order rotating per chunk), so load changes on a shared machine hit all of
them; a side's time is the sum of its own chunks.

Agreement is measured against an exact reference: the same keep rule with the true Jaccard of the
shingle sets (64-bit shingle hashes) instead of MinHash/LSH, found exactly by a prefix-filter join (every
pair with Jaccard >= threshold shares one of the n - ceil(t*n) + 1 smallest hashes of each set). For each
side, over all N records: precision = |dropped by side and by reference| / |dropped by side|, recall =
the same / |dropped by reference|, and the share of records with the same keep/drop decision. The same
three against synth's default engine are printed too.

    .venv/bin/python bench/clean_bench.py                 # 1,000,000 records, all sides
    .venv/bin/python bench/clean_bench.py --quick         # 20k records, a smoke run
    .venv/bin/python bench/clean_bench.py --n 200000 --skip datasketch
    .venv/bin/python bench/clean_bench.py --memory-only --memory-engine numpy   # peak RSS of one engine
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

from synth.clean.common import record_text  # noqa: E402
from synth.clean.dedup import Dedup, DedupConfig  # noqa: E402
from synth.clean.minhash import _PUNCTUATION, ngram_hashes_of_words, rensa_available, tokenize_with_normalized  # noqa: E402

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


# ---------------------------------------------------------------- the sides


def _tokens(text: str) -> list[str]:
    words = unicodedata.normalize("NFKC", text).lower().split()
    return [w for w in (w.strip(_PUNCTUATION) for w in words) if w]


def _prepare(rec: dict, k: int) -> tuple[str, list[str]]:
    """(normalised text for the exact check, word k-gram shingles) of one record, in plain Python."""
    full = "\n".join(m["content"] for m in rec["messages"])
    normal = " ".join(unicodedata.normalize("NFKC", full).lower().split())
    tokens = _tokens(full)
    shingles = [" ".join(tokens[j : j + k]) for j in range(max(len(tokens) - k + 1, 1))] if tokens else []
    return normal, shingles


class SynthSide:
    def __init__(self, config: DedupConfig, engine: str):
        self.stage = Dedup(config.model_copy(update={"engine": engine}))
        assert self.stage.engine == engine
        self.name = f"synth ({engine} engine)"

    def feed(self, start: int, records: list[dict]) -> set[int]:
        kept = {int(r["id"][1:]) for r in self.stage.run(records)}
        return {start + i for i in range(len(records))} - kept


class DatasketchSide:
    """MinHashLSH query, verify by estimated Jaccard, insert when kept; `bulk`: MinHash.bulk per batch."""

    def __init__(self, config: DedupConfig, bands: int, rows: int, bulk: bool):
        from datasketch import MinHash, MinHashLSH

        self.MinHash, self.config, self.bulk = MinHash, config, bulk
        self.lsh = MinHashLSH(threshold=config.threshold, num_perm=config.num_perm, params=(bands, rows))
        self.exact: set[str] = set()
        self.kept: dict[int, np.ndarray] = {}
        self.name = "datasketch bulk" if bulk else "datasketch"

    def feed(self, start: int, records: list[dict]) -> set[int]:
        cfg, duplicates = self.config, set()
        for b in range(0, len(records), 4096):
            part = [_prepare(r, cfg.shingle) for r in records[b : b + 4096]]
            if self.bulk:
                hashes = self.MinHash.bulk(
                    [[s.encode() for s in shingles] for _, shingles in part], num_perm=cfg.num_perm, seed=cfg.seed
                )
            for j, (normal, shingles) in enumerate(part):
                i = start + b + j
                if normal in self.exact:
                    duplicates.add(i)
                    continue
                if self.bulk:
                    minhash = hashes[j]
                else:
                    minhash = self.MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
                    minhash.update_batch([s.encode() for s in shingles])
                if shingles:
                    values = minhash.hashvalues
                    if any(
                        np.count_nonzero(values == self.kept[c]) / cfg.num_perm >= cfg.threshold
                        for c in self.lsh.query(minhash)
                    ):
                        duplicates.add(i)
                        continue
                self.exact.add(normal)
                if shingles:
                    self.lsh.insert(i, minhash)
                    self.kept[i] = minhash.hashvalues
        return duplicates


class RensaSide:
    """rensa's own streaming dedup. Same decisions as checking the exact text against kept records only:
    a repeat of a text dropped as a near-duplicate has the same sketch, so it is dropped too."""

    def __init__(self, config: DedupConfig, bands: int, rows: int):
        from rensa import RMinHashDeduplicator

        self.config = config
        self.dedup = RMinHashDeduplicator(
            threshold=config.threshold, num_perm=bands * rows, use_lsh=True, num_bands=bands, seed=config.seed
        )
        self.seen: set[str] = set()
        self.name = "rensa"

    def feed(self, start: int, records: list[dict]) -> set[int]:
        duplicates = set()
        for b in range(0, len(records), 4096):
            pairs, where = [], []
            for j, rec in enumerate(records[b : b + 4096]):
                normal, shingles = _prepare(rec, self.config.shingle)
                if normal in self.seen:
                    duplicates.add(start + b + j)
                    continue
                self.seen.add(normal)
                if shingles:
                    pairs.append((str(start + b + j), shingles))
                    where.append(start + b + j)
            for i, keep in zip(where, self.dedup.add_pairs(pairs), strict=True):
                if not keep:
                    duplicates.add(i)
        return duplicates


# ---------------------------------------------------------------- the exact reference


def exact_reference(records: list[dict], config: DedupConfig) -> tuple[set[int], set[int], int]:
    """(dropped as exact, dropped as near, candidate pairs verified) under the true Jaccard."""
    import xxhash

    t, k = config.threshold, config.shingle
    sets, offsets, exact_keys, prefix_hash, prefix_rec = [], [0], [], [], []
    for b in range(0, len(records), 4096):
        batch = records[b : b + 4096]
        words, normalized = tokenize_with_normalized([record_text(r) for r in batch])
        exact_keys.extend(xxhash.xxh3_128_intdigest(x.encode()) for x in normalized)
        hashes, owner = ngram_hashes_of_words(words, k)
        order = np.lexsort((hashes, owner))
        hashes, owner = hashes[order], owner[order]
        first = np.r_[True, (hashes[1:] != hashes[:-1]) | (owner[1:] != owner[:-1])]
        hashes, owner = hashes[first], owner[first]  # each record's distinct shingles, ascending
        counts = np.bincount(owner, minlength=len(batch))
        starts = np.r_[0, np.cumsum(counts)[:-1]]
        plen = counts - np.ceil(t * counts - 1e-9).astype(np.int64) + 1
        plen = np.where(counts > 0, np.minimum(plen, counts), 0)
        pos = np.arange(len(hashes)) - np.repeat(starts, counts)
        in_prefix = pos < np.repeat(plen, counts)
        prefix_hash.append(hashes[in_prefix])
        prefix_rec.append(owner[in_prefix].astype(np.int64) + b)
        sets.append(hashes)
        offsets.extend((offsets[-1] + np.cumsum(counts)).tolist())
    flat = np.concatenate(sets)
    offsets = np.array(offsets, dtype=np.int64)
    ph, pr = np.concatenate(prefix_hash), np.concatenate(prefix_rec)
    order = np.lexsort((pr, ph))
    ph, pr = ph[order], pr[order]
    bounds = np.flatnonzero(np.r_[True, ph[1:] != ph[:-1], True])
    pairs: set[tuple[int, int]] = set()
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi - lo > 1:
            group = pr[lo:hi].tolist()
            pairs.update((a, c) for x, a in enumerate(group) for c in group[x + 1 :] if a != c)
    similar: dict[int, list[int]] = {}
    for a, c in pairs:  # a < c: sorted within a group
        x, y = flat[offsets[a] : offsets[a + 1]], flat[offsets[c] : offsets[c + 1]]
        inter = len(np.intersect1d(x, y, assume_unique=True))
        if inter / (len(x) + len(y) - inter) >= t:
            similar.setdefault(c, []).append(a)
    kept_exact: set[int] = set()
    kept = np.zeros(len(records), dtype=bool)
    exact_drop, near_drop = set(), set()
    for i, key in enumerate(exact_keys):
        if key in kept_exact:
            exact_drop.add(i)
        elif any(kept[j] for j in similar.get(i, ())):
            near_drop.add(i)
        else:
            kept[i] = True
            kept_exact.add(key)
    return exact_drop, near_drop, len(pairs)


def agreement(side: set[int], truth: set[int], n: int) -> tuple[float, float, float]:
    both = len(side & truth)
    precision = both / len(side) if side else 1.0
    recall = both / len(truth) if truth else 1.0
    return precision, recall, 1 - len(side ^ truth) / n


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="records to generate")
    parser.add_argument("--chunk", type=int, default=65_536, help="records per side per turn (interleaving)")
    parser.add_argument("--quick", action="store_true", help="20k records, a smoke run")
    parser.add_argument("--datasketch-records", type=int, default=200_000,
                        help="records the per-record datasketch side sees (the others see all)")
    parser.add_argument("--skip", action="append", default=[], help="leave a side out: datasketch, "
                        "datasketch-bulk, rensa, synth-numpy, synth-rensa (repeatable)")
    parser.add_argument("--memory-only", action="store_true", help="only the memory probe of one synth engine")
    parser.add_argument("--memory-engine", choices=["rensa", "numpy"], help="engine of the memory probe")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--shingle", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.n, args.chunk, args.datasketch_records = 20_000, 4096, 10_000

    t0 = time.perf_counter()
    texts, planted = make_texts(args.n, args.seed)
    records = [record(i, t) for i, t in enumerate(texts)]
    del texts
    print(f"generated {args.n:,} records in {time.perf_counter() - t0:.1f}s; planted: "
          + ", ".join(f"{k} {v:,}" for k, v in planted.items()))
    config = DedupConfig(threshold=args.threshold, num_perm=args.num_perm, shingle=args.shingle, images=False)
    bands, rows = config.lsh_params()
    print(f"threshold {args.threshold}, {args.num_perm} permutations, {args.shingle}-word shingles, "
          f"LSH {bands} bands x {rows} rows (every side); {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}")

    # Memory of one synth engine alone, first: nothing else has grown the process yet.
    default = "rensa" if rensa_available() else "numpy"
    engine = args.memory_engine or default
    list(Dedup(config).run(records[:1]))  # first-call imports are not throughput
    with RssSampler() as rss:
        probe = SynthSide(config, engine)
        probe.feed(0, records)
    print(f"synth ({engine} engine) memory, alone over all records: peak RSS {rss.peak / 2**30:.2f} GB (input "
          f"records {rss.start / 2**30:.2f} GB before it started; dedup's own growth "
          f"{(rss.peak - rss.start) / 2**30:.2f} GB)", flush=True)
    del probe
    if args.memory_only:
        return

    # The exact reference next: only its decisions are kept; its arrays are freed before the sides start.
    begin = time.perf_counter()
    ref_exact, ref_near, candidate_pairs = exact_reference(records, config)
    truth = ref_exact | ref_near
    print(f"exact reference: {len(ref_exact):,} exact + {len(ref_near):,} near duplicates "
          f"({candidate_pairs:,} candidate pairs verified, {time.perf_counter() - begin:.0f} s)", flush=True)

    makers = {
        "synth-rensa": lambda: SynthSide(config, "rensa"),
        "synth-numpy": lambda: SynthSide(config, "numpy"),
        "rensa": lambda: RensaSide(config, bands, rows),
        "datasketch-bulk": lambda: DatasketchSide(config, bands, rows, bulk=True),
        "datasketch": lambda: DatasketchSide(config, bands, rows, bulk=False),
    }
    if not rensa_available():
        args.skip += ["synth-rensa", "rensa"]
    sides = [make() for key, make in makers.items() if key not in args.skip]
    limit = {s.name: min(args.datasketch_records, args.n) if s.name == "datasketch" else args.n for s in sides}
    seen = dict.fromkeys(limit, 0)
    elapsed = {s.name: 0.0 for s in sides}
    dropped: dict[str, set[int]] = {s.name: set() for s in sides}
    for turn, start in enumerate(range(0, args.n, args.chunk)):
        chunk = records[start : start + args.chunk]
        rotation = sides[turn % len(sides) :] + sides[: turn % len(sides)]
        for side in rotation:
            part = chunk[: max(limit[side.name] - start, 0)]
            if not part:
                continue
            begin = time.perf_counter()
            dropped[side.name] |= side.feed(start, part)
            elapsed[side.name] += time.perf_counter() - begin
            seen[side.name] += len(part)
        print(f"  {start + len(chunk):>9,} records: "
              + ", ".join(f"{s.name} {seen[s.name] / elapsed[s.name]:,.0f}/s" for s in sides), flush=True)

    synth_name = f"synth ({default} engine)"
    base_rate = seen[synth_name] / elapsed[synth_name] if synth_name in elapsed else None
    print(f"\n{'side':<24} {'records/s':>10} {'time':>8} {'vs synth':>9} {'dropped':>9}   "
          f"vs exact reference: precision recall same-decision   vs {synth_name}: same-decision")
    for side in sides:
        n = seen[side.name]
        rate = n / elapsed[side.name]
        # Decisions on a prefix do not depend on later records: compare on the records the side saw.
        p, r, same = agreement(dropped[side.name], {i for i in truth if i < n}, n)
        synth_dropped = {i for i in dropped.get(synth_name, set()) if i < n}
        _, _, same_synth = agreement(dropped[side.name], synth_dropped, n)
        ratio = f"{rate / base_rate:.2f}x" if base_rate else "-"
        note = "" if n == args.n else f"   (first {n:,} records)"
        print(f"{side.name:<24} {rate:>10,.0f} {elapsed[side.name]:>7.1f}s {ratio:>9} "
              f"{len(dropped[side.name]):>9,}   {p:>30.4f} {r:.4f} {same:.4%}   {same_synth:.4%}{note}")
    expected = planted["exact"] + planted["near"]
    print(f"\nplanted exact+near duplicates: {expected:,} (half copies, which must be kept: {planted['half']:,}); "
          f"the reference drops {len(truth):,}")
    print(f"memory target < 4 GB ({engine} engine): {'met' if rss.peak < 4 * 2**30 else 'NOT met'} ({rss.peak / 2**30:.2f} GB); "
          f"process peak with every side's state held {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")


if __name__ == "__main__":
    main()
