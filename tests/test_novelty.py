"""ROUGE-L novelty: decisions and scores must equal the reference `rouge_score` package exactly."""

from __future__ import annotations

import random

import pytest
from rouge_score import rouge_scorer, tokenize

from synth.generate.novelty import (
    RougeNoveltyIndex,
    filter_novel,
    lcs_length,
    rouge_l_fmeasure,
    rouge_l_fmeasure_from_lcs,
    rouge_tokens,
)

WORDS = (
    "a an the of to write list explain give three tips for cats dogs 2 10 rain running runs runner".split()
)
ODD = [
    "K",
    "İstanbul",
    "naïve",
    "café",
    "x-ray",
    "C++",
    "e.g.",
    "ﬁle",
    "ＡＢＣ",
    "\u00a0",
    "--",
    "it's",
    "\t\n",
]


def random_text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS + ODD) if rng.random() < 0.15 else rng.choice(WORDS) for _ in range(n))


def near_duplicate(rng: random.Random, words: list[str]) -> list[str]:
    words = list(words)
    for _ in range(rng.randint(0, 5)):
        op = rng.random()
        if op < 0.4 and words:
            words[rng.randrange(len(words))] = rng.choice(WORDS)
        elif op < 0.7 and words:
            del words[rng.randrange(len(words))]
        else:
            words.insert(rng.randint(0, len(words)), rng.choice(WORDS))
    return words


def tie_pair(rng: random.Random, threshold_total: int = 20) -> tuple[str, str]:
    """Two texts whose exact F-measure is 0.7: LCS = 0.35 (la + lb), la + lb a multiple of 20."""
    total = threshold_total * rng.choice([1, 2])
    lcs = total * 7 // 20
    la = rng.randint(lcs, total - lcs)
    lb = total - la
    a = [f"w{i}" for i in range(la)]
    b = sorted(rng.sample(range(la), lcs))
    b = [a[i] for i in b]
    for k in range(lb - lcs):
        b.insert(rng.randint(0, len(b)), f"new{k}")
    return " ".join(a), " ".join(b)


def lcs_dp(a, b) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = (
                table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
            )
    return table[-1][-1]


def test_tokenizer_matches_reference_including_unicode_and_punctuation():
    rng = random.Random(0)
    texts = (
        [random_text(rng, rng.randint(0, 20)) for _ in range(2000)] + ODD + ["", "   ", "Hello, World!! 42x"]
    )
    for text in texts:
        assert rouge_tokens(text) == tokenize.tokenize(text, None), text


def test_lcs_bitparallel_matches_dynamic_programming():
    rng = random.Random(1)
    for _ in range(1500):
        a = [rng.randrange(6) for _ in range(rng.randint(0, 25))]
        b = [rng.randrange(6) for _ in range(rng.randint(0, 25))]
        assert lcs_length(a, b) == lcs_dp(a, b)
    long_a = [rng.randrange(50) for _ in range(300)]  # spans several machine words
    long_b = near_duplicate(rng, long_a) * 2
    assert lcs_length(long_a, long_b) == lcs_dp(long_a, long_b)


def test_fmeasure_is_bit_for_bit_the_reference_on_random_pairs():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rng = random.Random(2)
    exact_ties = 0
    for _ in range(3000):
        a = random_text(rng, rng.randint(0, 18))
        b = (
            " ".join(near_duplicate(rng, a.split()))
            if rng.random() < 0.7
            else random_text(rng, rng.randint(0, 18))
        )
        if rng.random() < 0.1:
            a, b = tie_pair(rng)
        ref = scorer.score(a, b)["rougeL"].fmeasure
        assert rouge_l_fmeasure(a, b) == ref, (a, b)
        exact_ties += abs(ref - 0.7) < 1e-12
    assert exact_ties > 100  # the threshold's neighbourhood was exercised


def test_index_decisions_match_reference_max_over_pool():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rng = random.Random(3)
    checked = ties = rejected = 0
    for threshold in (0.7, 0.5, 0.85):
        for _ in range(700):
            base = random_text(rng, rng.randint(0, 16)).split()
            pool = [" ".join(near_duplicate(rng, base)) for _ in range(rng.randint(0, 6))]
            pool += [random_text(rng, rng.randint(1, 16)) for _ in range(rng.randint(0, 3))]
            candidate = " ".join(base)
            if rng.random() < 0.1:
                candidate, tie = tie_pair(rng)
                pool.append(tie)
            scores = [scorer.score(candidate, p)["rougeL"].fmeasure for p in pool]
            index = RougeNoveltyIndex(threshold)
            index.extend(pool)
            match = index.check(candidate)
            assert (match is not None) == (max(scores, default=0.0) > threshold), (candidate, pool, scores)
            if match is not None:
                assert match.score == scores[match.index] > threshold
                rejected += 1
            ties += sum(abs(s - threshold) < 1e-12 for s in scores)
            checked += 1
    assert rejected > 300 and checked - rejected > 300 and ties > 20


def test_sequential_filter_equals_reference_filter():
    """The Self-Instruct loop: each text is compared with the pool plus everything kept before it."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rng = random.Random(4)
    seeds = [random_text(rng, 8) for _ in range(5)]
    texts = []
    for _ in range(300):
        texts.append(
            " ".join(near_duplicate(rng, rng.choice(texts).split()))
            if texts and rng.random() < 0.5
            else random_text(rng, rng.randint(3, 14))
        )
    kept, index = filter_novel(texts, 0.7, pool=seeds)
    reference_pool, reference_kept = list(seeds), []
    for i, text in enumerate(texts):
        if all(scorer.score(text, p)["rougeL"].fmeasure <= 0.7 for p in reference_pool):
            reference_kept.append(i)
            reference_pool.append(text)
    assert kept == reference_kept
    assert 0 < len(kept) < len(texts)
    assert len(index) == len(seeds) + len(kept)
    # The bounds did their job: far fewer LCS than pairs.
    assert index.stats.lcs_computed < index.stats.pairs / 5


def test_stemmer_option_matches_reference():
    pytest.importorskip("nltk")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rng = random.Random(5)
    words = WORDS + ["generating", "generated", "generation", "studies", "studying", "happily", "classify"]
    for _ in range(500):
        a = " ".join(rng.choice(words) for _ in range(rng.randint(0, 12)))
        b = " ".join(near_duplicate(rng, a.split()))
        ref = scorer.score(a, b)["rougeL"].fmeasure
        assert rouge_l_fmeasure(a, b, use_stemmer=True) == ref
        index = RougeNoveltyIndex(0.7, use_stemmer=True)
        index.add(b)
        assert (index.check(a) is not None) == (ref > 0.7)


def test_edges_empty_texts_thresholds_and_ties():
    index = RougeNoveltyIndex(0.7)
    assert index.check("anything at all") is None  # empty pool
    index.add("")
    index.add("!!!")  # no tokens
    assert index.check("") is None and index.check("...") is None
    # 7 of 10 tokens in common: F is 0.7 (not above) for 10/10, but 0.7000000000000001 for 8/12.
    assert rouge_l_fmeasure_from_lcs(7, 10, 10) == 0.7
    assert rouge_l_fmeasure_from_lcs(7, 8, 12) > 0.7
    ten = "a b c d e f g h i j"
    index.add(ten)
    assert index.check("a b c d e f g x y z") is None
    assert index.check("a b c d e f g x") is not None  # 7 of 8 vs 10: F = 0.777...
    with pytest.raises(ValueError):
        RougeNoveltyIndex(1.5)
    strict = RougeNoveltyIndex(0.0)
    strict.add("cats and dogs")
    assert strict.check("dogs") is not None and strict.check("birds") is None
    lenient = RougeNoveltyIndex(1.0)
    lenient.add("cats and dogs")
    assert lenient.check("cats and dogs") is None  # F can never exceed 1
