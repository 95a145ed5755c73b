"""ROUGE-L novelty filtering: synth's index vs the reference `rouge_score`, measured side by side in one run.

A pool of N machine-written-looking instructions (default 20,000; ~15% near-duplicates of earlier ones) is
filtered the Self-Instruct way: each instruction is kept when its ROUGE-L F-measure against every
instruction kept before it (plus the seed tasks) is <= 0.7.

- synth: `RougeNoveltyIndex` filters the whole pool.
- reference: the classic loop, the Alpaca-style fast variant of it (each instruction tokenized once by
  rouge_score's tokenizer, then ``rouge_scorer._score_lcs`` per pair), timed on a random sample of
  candidates against the exact pool each faced, and extrapolated to the full pair count. The plain
  ``scorer.score(a, b)`` per pair is timed too, for reference.

Agreement: the keep/drop decision of every sampled candidate (reference: max over the whole pool) and the
per-pair decision (F > threshold) of every sampled pair, which must both be 100%.

    python bench/novelty_bench.py            # 20,000 instructions (a few minutes)
    python bench/novelty_bench.py --quick    # 2,000 instructions (seconds)
"""

from __future__ import annotations

import argparse
import random
import sys
import time

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="instructions to filter")
    parser.add_argument("--sample", type=int, default=40, help="candidates checked by the reference")
    parser.add_argument("--pairs", type=int, default=20_000, help="random pairs compared one by one")
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2,000 instructions, 10 sampled candidates")
    args = parser.parse_args()
    if args.quick:
        args.n, args.sample, args.pairs = 2_000, 10, 2_000

    seeds = seed_instructions()
    texts = make_instructions(args.n, args.seed)
    print(f"pool: {len(seeds)} seed + {len(texts):,} generated instructions, threshold {args.threshold}")

    # --- synth: the whole run
    start = time.perf_counter()
    index = RougeNoveltyIndex(threshold=args.threshold)
    index.extend(seeds)
    kept_before: list[int] = []  # pool size each candidate faced (seeds + kept so far)
    decisions: list[bool] = []
    for text in texts:
        kept_before.append(len(index))
        decisions.append(index.add_if_novel(text) is None)
    ours_s = time.perf_counter() - start
    pool_texts = index._texts  # seeds + kept, in order
    total_pairs = index.stats.pairs
    st = index.stats
    print(
        f"synth:     {ours_s:8.2f} s   kept {sum(decisions):,}/{len(texts):,}   pairs {total_pairs:,}   "
        f"visited {st.visited:,} ({st.visited / max(total_pairs, 1):.1%}), "
        f"overlap-checked {st.overlap_checked:,}, "
        f"LCS {st.lcs_computed:,}"
    )

    # --- reference on a sample of candidates, each against the exact pool it faced
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rng = random.Random(args.seed + 1)
    sample = sorted(rng.sample(range(len(texts)), min(args.sample, len(texts))))
    start = time.perf_counter()
    tokens = {t: scorer._tokenizer.tokenize(t) for t in [*seeds, *texts]}  # each tokenized once
    tokenize_s = time.perf_counter() - start
    ref_pairs = 0
    ref_s = 0.0
    agree = 0
    for i in sample:
        pool = pool_texts[: kept_before[i]]
        start = time.perf_counter()
        cand = tokens[texts[i]]
        best = max((rouge_scorer._score_lcs(cand, tokens[p]).fmeasure for p in pool), default=0.0)
        ref_s += time.perf_counter() - start
        ref_pairs += len(pool)
        agree += (best <= args.threshold) == decisions[i]
    per_pair = ref_s / max(ref_pairs, 1)
    ref_full_s = tokenize_s + per_pair * total_pairs

    # plain scorer.score per pair, timed on a few hundred pairs
    some = [(rng.choice(texts), rng.choice(texts)) for _ in range(500)]
    start = time.perf_counter()
    for a, b in some:
        scorer.score(a, b)
    plain_per_pair = (time.perf_counter() - start) / len(some)

    # --- pair-level agreement: half random pairs, half an instruction and a near-duplicate of it
    pair_agree = 0
    for k in range(args.pairs):
        a = rng.choice(texts)
        b = rng.choice(texts) if k % 2 else near_duplicate(a, rng)
        ta, tb = rouge_tokens(a), rouge_tokens(b)
        ours = rouge_l_fmeasure_from_lcs(lcs_length(ta, tb), len(ta), len(tb))
        ref = scorer.score(a, b)["rougeL"].fmeasure
        pair_agree += (ours > args.threshold) == (ref > args.threshold)

    print(
        f"reference: {ref_full_s:8.2f} s   (extrapolated: {per_pair * 1e6:.1f} µs/pair pre-tokenized x "
        f"{total_pairs:,} pairs + {tokenize_s:.2f} s tokenizing; "
        f"measured on {len(sample)} candidates = {ref_pairs:,} pairs in {ref_s:.2f} s; "
        f"plain scorer.score: {plain_per_pair * 1e6:.1f} µs/pair)"
    )
    print(f"ratio:     {ref_full_s / ours_s:8.1f}x  (target >= 100x)")
    print(
        f"agreement: candidates {agree}/{len(sample)} ({agree / max(len(sample), 1):.0%}), "
        f"pairs {pair_agree}/{args.pairs} ({pair_agree / max(args.pairs, 1):.0%})"
    )
    if agree != len(sample) or pair_agree != args.pairs:
        sys.exit("DISAGREEMENT with rouge_score")


if __name__ == "__main__":
    main()
