"""ROUGE-L novelty filtering: synth's index vs the reference `rouge_score` loop, measured side by side in one run.

A pool of N machine-written-looking instructions (default 20,000; ~15% near-duplicates of earlier ones) is
filtered the Self-Instruct way: each instruction is kept when its ROUGE-L F-measure against every
instruction kept before it (plus the seed tasks) is <= 0.7.

- synth: `RougeNoveltyIndex` filters the whole pool (its time is the sum of its own calls).
- reference, as Stanford Alpaca's `generate_instruction.py` does it: every instruction tokenized once by
  rouge_score's tokenizer; for each candidate a `multiprocessing.Pool(num_cpus)` maps
  ``partial(rouge_scorer._score_lcs, candidate_tokens)`` over the tokens of the whole pool, and the
  candidate is dropped when the max F-measure is > threshold. (Alpaca also sorts the scores for the 10
  most similar and averages them; that is left out, synth does not do it either.) Two more reference
  variants are timed on the same candidates: the same map with one Pool kept open for the whole run (the
  cheaper way to write it), and a single-process loop over ``_score_lcs``.

The reference runs on `--sample` random candidates (default 400), interleaved with synth's run: when
synth reaches a sampled candidate, each reference variant scores that candidate against the exact pool it
faces at that moment. The reference's full-run time is N x its mean time per sampled candidate (the
sample is uniform over candidates, so this is an unbiased estimate of the sum); `--sample 0` runs the
reference on every candidate (no estimate; use a smaller --n).

Agreement: the keep/drop decision of every sampled candidate and the per-pair decision (F > threshold) of
`--pairs` random pairs, which must both be 100%.

    python bench/novelty_bench.py                     # 20,000 instructions, 400 reference candidates
    python bench/novelty_bench.py --n 2000 --sample 0 # the reference on the whole run, nothing estimated
    python bench/novelty_bench.py --quick             # 2,000 instructions, 50 candidates (seconds)
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from functools import partial
from multiprocessing import Pool

from rouge_score import rouge_scorer

from synth.generate.novelty import RougeNoveltyIndex, lcs_length, rouge_l_fmeasure_from_lcs, rouge_tokens
from synth.generate.self_instruct.seeds import load_seed_tasks

VERBS = [
    "Write",
    "Explain",
    "Summarize",
    "Describe",
    "List",
    "Generate",
    "Suggest",
    "Compare",
    "Rewrite",
    "Translate",
    "Classify",
    "Create",
    "Give",
    "Outline",
    "Draft",
    "Identify",
    "Propose",
    "Evaluate",
    "Design",
    "Convert",
    "Find",
    "Analyze",
    "Plan",
    "Recommend",
    "Tell me",
]
OBJECTS = [
    "a short poem about",
    "three tips for",
    "a haiku on",
    "an email to a colleague about",
    "a tweet about",
    "the main idea of an article on",
    "a step-by-step guide to",
    "five interview questions about",
    "a persuasive paragraph on",
    "the pros and cons of",
    "a story for children about",
    "a recipe using",
    "a product description for",
    "a quiz question on",
    "a limerick about",
    "an analogy that explains",
    "a slogan for a campaign on",
    "common mistakes people make with",
    "a weekly plan for",
    "a joke about",
    "the history of",
    "a dialogue between two friends about",
    "an outline for an essay on",
    "a riddle whose answer is",
    "the difference between two approaches to",
    "a checklist for",
]
TOPICS = (
    "climate change|remote work|learning a language|saving money|the water cycle|black holes|"
    "photosynthesis|job interviews|time management|the French revolution|machine learning|"
    "healthy breakfasts|urban gardening|public speaking|electric cars|the stock market|"
    "sleep hygiene|volcanoes|ancient Rome|password security|first aid|chess openings|bird migration|"
    "renewable energy|team meetings|writing a resume|the moon landing|coffee brewing|"
    "marathon training|recycling plastic|board games|customer complaints|budget travel|"
    "quantum computing|honeybees|the immune system|negotiating a salary|home workouts|composting|"
    "learning to code|meditation|ocean tides|the printing press|volunteering|"
    "small business marketing|online privacy|fermentation|rainforests|probability|cloud storage|"
    "the Olympic games|baking bread|earthquakes|mentoring|jazz music|wind turbines|dinosaurs|"
    "supply chains|first-time home buyers|vaccines|desert plants|carpooling|the periodic table|"
    "hiking safety|podcasting|inflation|glaciers"
).split("|")
CONSTRAINTS = [
    "",
    "",
    "",
    " in under 50 words",
    " for a ten-year-old",
    " using bullet points",
    " in a formal tone",
    " with a humorous twist",
    " in three sentences",
    " for a beginner",
    " without using jargon",
    " as a numbered list",
    " in the style of a news report",
    " for a busy professional",
]


def near_duplicate(text: str, rng: random.Random) -> str:
    """A few word edits (replace, delete, insert) of a text."""
    words = text.split()
    for _ in range(rng.randint(1, 4)):
        op, i = rng.random(), rng.randrange(len(words))
        if op < 0.4:
            words[i] = rng.choice(TOPICS).split()[0]
        elif op < 0.7 and len(words) > 3:
            del words[i]
        else:
            words.insert(i, rng.choice(["please", "briefly", "also", "new", "simple", "quick"]))
    return " ".join(words)


def make_instructions(n: int, seed: int) -> list[str]:
    """Instructions that look machine-written: template-ish, repetitive, with near-duplicates."""
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(n):
        if out and rng.random() < 0.15:
            out.append(near_duplicate(rng.choice(out), rng))
        else:
            topic = rng.choice(TOPICS)
            if rng.random() < 0.3:
                topic = f"{topic} and {rng.choice(TOPICS)}"
            out.append(f"{rng.choice(VERBS)} {rng.choice(OBJECTS)} {topic}{rng.choice(CONSTRAINTS)}.")
    return out


def seed_instructions() -> list[str]:
    return [task.instruction for task in load_seed_tasks()]


def score_max(pool, candidate_tokens, pool_tokens) -> float:
    """Alpaca's per-candidate step: map `_score_lcs` over the whole pool in `pool` (a multiprocessing Pool)."""
    scores = pool.map(partial(rouge_scorer._score_lcs, candidate_tokens), pool_tokens)
    return max((score.fmeasure for score in scores), default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="instructions to filter")
    parser.add_argument("--sample", type=int, default=400, help="candidates checked by the reference (0: all)")
    parser.add_argument("--pairs", type=int, default=20_000, help="random pairs compared one by one")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="reference Pool size (Alpaca: num_cpus)")
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2,000 instructions, 50 sampled candidates")
    args = parser.parse_args()
    if args.quick:
        args.n, args.sample, args.pairs = 2_000, 50, 2_000

    seeds = seed_instructions()
    texts = make_instructions(args.n, args.seed)
    print(
        f"pool: {len(seeds)} seed + {len(texts):,} generated instructions, threshold {args.threshold}; "
        f"reference Pool({args.num_cpus}); {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rng = random.Random(args.seed + 1)
    count = len(texts) if args.sample <= 0 else min(args.sample, len(texts))
    sample = set(rng.sample(range(len(texts)), count))
    variants = ("alpaca", "one_pool", "serial")
    ref_s = dict.fromkeys(variants, 0.0)
    tokenize_s = 0.0
    pool_tokens: list[list[str]] = []  # the reference's own pool: tokens of seeds + kept, as Alpaca keeps it
    ref_pairs = agree = 0

    def ref_add(text: str) -> None:
        nonlocal tokenize_s
        start = time.perf_counter()
        pool_tokens.append(scorer._tokenizer.tokenize(text))
        tokenize_s += time.perf_counter() - start

    ours_s = 0.0
    start = time.perf_counter()
    index = RougeNoveltyIndex(threshold=args.threshold)
    index.extend(seeds)
    ours_s += time.perf_counter() - start
    for seed_text in seeds:
        ref_add(seed_text)
    decisions: list[bool] = []
    with Pool(args.num_cpus) as shared:
        for i, text in enumerate(texts):
            if i in sample:
                # The reference scores this candidate against the pool it faces now (the same as synth's).
                assert len(pool_tokens) == len(index)
                start = time.perf_counter()
                cand = scorer._tokenizer.tokenize(text)
                tokenize_s += time.perf_counter() - start
                best = {}
                for name in variants if i % 2 else reversed(variants):  # alternate the order
                    start = time.perf_counter()
                    if name == "alpaca":
                        with Pool(args.num_cpus) as p:  # a new Pool per candidate, as in Alpaca
                            best[name] = score_max(p, cand, pool_tokens)
                    elif name == "one_pool":
                        best[name] = score_max(shared, cand, pool_tokens)
                    else:
                        best[name] = max(
                            (rouge_scorer._score_lcs(cand, t).fmeasure for t in pool_tokens), default=0.0
                        )
                    ref_s[name] += time.perf_counter() - start
                assert best["alpaca"] == best["one_pool"] == best["serial"]
                ref_pairs += len(pool_tokens)
            start = time.perf_counter()
            novel = index.add_if_novel(text) is None
            ours_s += time.perf_counter() - start
            decisions.append(novel)
            if i in sample:
                agree += (best["serial"] <= args.threshold) == novel
            if novel:
                ref_add(text)  # kept: joins the pool (tokenized once, as in Alpaca)
    total_pairs = index.stats.pairs
    st = index.stats
    print(
        f"synth:     {ours_s:8.2f} s   kept {sum(decisions):,}/{len(texts):,}   pairs {total_pairs:,}   "
        f"visited {st.visited:,} ({st.visited / max(total_pairs, 1):.1%}), "
        f"overlap-checked {st.overlap_checked:,}, "
        f"LCS {st.lcs_computed:,}"
    )

    # --- pair-level agreement: half random pairs, half an instruction and a near-duplicate of it
    pair_agree = 0
    for k in range(args.pairs):
        a = rng.choice(texts)
        b = rng.choice(texts) if k % 2 else near_duplicate(a, rng)
        ta, tb = rouge_tokens(a), rouge_tokens(b)
        ours = rouge_l_fmeasure_from_lcs(lcs_length(ta, tb), len(ta), len(tb))
        ref = scorer.score(a, b)["rougeL"].fmeasure
        pair_agree += (ours > args.threshold) == (ref > args.threshold)

    scale = len(texts) / count  # N x mean per sampled candidate
    measured = "all candidates, nothing estimated" if count == len(texts) else (
        f"measured on {count} random candidates = {ref_pairs:,} pairs, scaled by N/{count} = {scale:.1f}"
    )
    print(f"reference ({measured}; tokenizing {tokenize_s:.2f} s included):")
    labels = {
        "alpaca": f"Alpaca: new Pool({args.num_cpus}) per candidate, map _score_lcs",
        "one_pool": f"one Pool({args.num_cpus}) for the run, map _score_lcs",
        "serial": "one process, loop _score_lcs",
    }
    for name in variants:
        full = tokenize_s + ref_s[name] * scale
        print(
            f"  {labels[name]:<48} {full:9.1f} s  ({ref_s[name] / count * 1e3:7.1f} ms/candidate)  "
            f"ratio {full / ours_s:7.1f}x"
        )
    print(f"ratio vs Alpaca's code: {(tokenize_s + ref_s['alpaca'] * scale) / ours_s:.1f}x (target >= 100x)")
    print(
        f"agreement: candidates {agree}/{count} ({agree / max(count, 1):.0%}), "
        f"pairs {pair_agree}/{args.pairs} ({pair_agree / max(args.pairs, 1):.0%})"
    )
    if agree != count or pair_agree != args.pairs:
        sys.exit("DISAGREEMENT with rouge_score")


if __name__ == "__main__":
    main()
