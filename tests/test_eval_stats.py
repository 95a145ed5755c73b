"""Intervals and paired tests of `synth eval` on planted cases with answers worked out by hand
(and, where scipy is installed, checked against scipy.stats)."""

from __future__ import annotations

import math

import pytest

from synth.train.stats import (
    bootstrap_mean_interval,
    compare_means,
    compare_shares,
    mcnemar_exact,
    mean_sd,
    wilson_interval,
)


def test_wilson_interval_planted():
    low, high = wilson_interval(56, 100)
    assert (round(low, 4), round(high, 4)) == (0.4623, 0.6533)  # by hand: centre 0.5578 ± 0.0955
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) is None
    # 100 rows: 56% is 46-65%; the 20-point swing between two runs of the README's loop round 1 is
    # about what separates two such intervals' ends.
    assert 0.18 < high - low < 0.20


def test_mcnemar_exact_planted():
    # 20 discordant rows, 5 against 15: 2 * P(X <= 5), X ~ Bin(20, 1/2) = 2 * 21700 / 2**20
    assert mcnemar_exact(5, 15) == pytest.approx(2 * 21700 / 2**20)
    assert mcnemar_exact(15, 5) == mcnemar_exact(5, 15)
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)  # six rows fixed, none broken: p = 0.031
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)  # five is not enough: p = 0.0625
    assert mcnemar_exact(10, 10) == 1.0 and mcnemar_exact(0, 0) == 1.0


def _predictions(right: set[int], n: int = 100) -> list[bool]:
    return [i in right for i in range(n)]


def test_two_prediction_sets_differing_on_known_rows():
    """A right on rows 0-49; B right on rows 0-44 and 50-64: B fixes 15 rows and breaks 5."""
    first = _predictions(set(range(50)))
    second = _predictions(set(range(45)) | set(range(50, 65)))
    result = compare_shares(first, second)
    assert (result["only_first"], result["only_second"]) == (5, 15)
    assert result["difference"] == pytest.approx(0.10)
    assert result["p_value"] == pytest.approx(0.0414, abs=1e-4) and result["distinguishable"]
    low, high = result["interval"]
    # paired rows: sd of the per-row difference is sqrt(0.2 - 0.01), so the interval is 0.10 ± ~0.085
    assert 0 < low < 0.10 < high < 0.2 and high - low == pytest.approx(2 * 1.96 * math.sqrt(0.19 / 100), abs=0.03)

    # The same 10-point gain from 10 discordant rows against 0 vs 30 against 20: only the first is real.
    assert compare_shares(_predictions(set(range(50))), _predictions(set(range(60))))["distinguishable"]
    noisy = compare_shares(_predictions(set(range(50))), _predictions(set(range(20, 80))))
    assert (noisy["only_first"], noisy["only_second"]) == (20, 30)
    assert noisy["difference"] == pytest.approx(0.10) and not noisy["distinguishable"]
    assert noisy["interval"][0] < 0 < noisy["interval"][1]
    with pytest.raises(ValueError):
        compare_shares(first, second[:-1])


def test_bootstrap_means_and_paired_bootstrap():
    assert bootstrap_mean_interval([2.5] * 20) == (2.5, 2.5)
    low, high = bootstrap_mean_interval(list(range(100)))
    # the mean of 0..99 is 49.5 with standard error 28.87 / 10
    assert low == pytest.approx(49.5 - 1.96 * 2.887, abs=0.6) and high == pytest.approx(49.5 + 1.96 * 2.887, abs=0.6)
    # per-token mean: rows (summed log-lik, tokens); every row is -1 per token whatever its length
    assert bootstrap_mean_interval([-2.0, -6.0, -1.0], [2, 6, 1]) == pytest.approx((-1.0, -1.0))
    assert bootstrap_mean_interval([]) is None
    assert bootstrap_mean_interval(list(range(100))) == (low, high)  # a fixed seed: the same interval again

    values = [float(i % 7) for i in range(50)]
    shifted = compare_means(values, [v + 0.25 for v in values])
    assert shifted["difference"] == pytest.approx(0.25) and shifted["interval"] == pytest.approx([0.25, 0.25])
    assert shifted["distinguishable"]
    same = compare_means(values, values)
    assert same["difference"] == 0 and same["interval"] == [0, 0] and not same["distinguishable"]
    # unpaired-looking noise: the second model's rows shuffled; the means are equal, the interval spans 0
    shuffled = compare_means(values, values[::-1])
    assert shuffled["interval"][0] < 0 < shuffled["interval"][1] and not shuffled["distinguishable"]


def test_mean_sd_across_seeds():
    result = mean_sd([0.5, 0.7, 0.6])
    assert result["mean"] == pytest.approx(0.6) and result["sd"] == pytest.approx(0.1) and result["runs"] == 3
    assert mean_sd([0.5])["sd"] is None and mean_sd([None]) is None


def test_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    for b, c in [(5, 15), (0, 6), (3, 4), (40, 61), (120, 95)]:
        assert mcnemar_exact(b, c) == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-9)
    for k, n in [(56, 100), (0, 10), (7, 9), (300, 1000)]:
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_two_prediction_files_differing_on_known_rows(tmp_path):
    """eval_predictions.jsonl of two runs: the second fixes rows 0-5 and breaks row 9; rows only one file
    scored are left out of the pairing."""
    import json

    from synth.train.evaluate import compare_prediction_files

    def write(path, right, ids=range(40)):
        path.write_text("".join(json.dumps({"model": "m", "id": f"q{i}", "exact": i in right, "correct": i in right,
                                            "contains": True}) + "\n" for i in ids))
        return path

    before = write(tmp_path / "a.jsonl", set(range(9, 30)))
    after = write(tmp_path / "b.jsonl", set(range(0, 6)) | set(range(10, 30)), ids=range(45))
    test = compare_prediction_files(before, after)
    assert (test["only_first"], test["only_second"]) == (1, 6)
    assert test["p_value"] == pytest.approx(2 * (1 + 7) / 2**7) and not test["distinguishable"]  # 0.125
    assert test["difference"] == pytest.approx(5 / 40)
    same = compare_prediction_files(before, after, "contains_accuracy")
    assert same["difference"] == 0 and same["p_value"] == 1.0
    assert compare_prediction_files(before, write(tmp_path / "c.jsonl", set(), ids=range(50, 60))) is None


def test_t_interval_across_seeds_planted():
    from synth.train.stats import t_interval

    low, high = t_interval([0.10, 0.20, 0.15])  # mean 0.15, sd 0.05, t(2) = 4.303: ± 4.303 * 0.05 / sqrt(3)
    assert (low, high) == pytest.approx((0.15 - 0.124217, 0.15 + 0.124217), abs=1e-5)
    assert t_interval([0.3]) is None


def test_t_interval_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    from synth.train.stats import t_interval

    for values in ([0.1, 0.2, 0.15], [0.5, 0.52, 0.49, 0.61, 0.55], [0.0, 1.0]):
        n = len(values)
        mean, sem = sum(values) / n, stats.sem(values)
        assert t_interval(values) == pytest.approx(stats.t.interval(0.95, n - 1, loc=mean, scale=sem), abs=1e-3)


def _arm(rights: list[int], rows: int = 200) -> list[list[bool]]:
    """Per seed: right on the first `k` rows of `rows`."""
    return [[i < k for i in range(rows)] for k in rights]


def test_two_arms_with_a_known_gain_on_every_seed_are_established():
    from synth.train.stats import compare_arms

    # control right on 100 of 200 rows with every seed; treatment on 120, 124, 116: +10, +12, +8 points
    result = compare_arms(_arm([100, 100, 100]), _arm([120, 124, 116]))
    assert result["per_seed"] == pytest.approx([0.10, 0.12, 0.08])
    assert result["difference"] == pytest.approx(0.10) and result["sd"] == pytest.approx(0.02)
    half = 4.303 * 0.02 / math.sqrt(3)
    assert result["seed_interval"] == pytest.approx([0.10 - half, 0.10 + half], abs=1e-4)
    assert 0 < result["row_interval"][0] < 0.10 < result["row_interval"][1]
    assert result["distinguishable"] is True


def test_two_arms_whose_seeds_disagree_are_noise():
    from synth.train.stats import compare_arms

    # +10, -10 and +2 points: the mean is +0.67 and the seeds' spread covers zero
    result = compare_arms(_arm([100, 100, 100]), _arm([120, 80, 104]))
    assert result["difference"] == pytest.approx(0.02 / 3)
    assert result["seed_interval"][0] < 0 < result["seed_interval"][1]
    assert result["distinguishable"] is False


def test_a_gain_within_the_rows_noise_is_not_established_even_when_seeds_agree():
    from synth.train.stats import compare_arms

    # +1 point with every seed on 200 rows: the seeds agree exactly (sd 0), but 2 rows prove nothing
    result = compare_arms(_arm([100, 100, 100]), _arm([102, 102, 102]))
    assert result["sd"] == pytest.approx(0.0) and result["seed_interval"] == pytest.approx([0.01, 0.01])
    assert result["row_interval"][0] <= 0 and result["distinguishable"] is False
