"""How sure a held-out score is: 95% intervals for one model, paired tests between two on the same rows.

- A share of rows (exact match, accuracies): the **Wilson score interval**.
- A mean (log-likelihood per token, margins): a **bootstrap over rows** (percentile interval).
- Two models on the same rows, share metrics: **McNemar's exact test**, a two-sided binomial test on the
  rows where exactly one of them is right; the difference's interval is a paired bootstrap.
- Two models, mean metrics: a **paired bootstrap** (both models resampled on the same rows); the
  difference is distinguishable from zero when its interval leaves zero out.
- Several training seeds: mean ± sample standard deviation across them.
- Two arms (e.g. a loop with pseudo-labels and its control) run with the same seeds on the same rows: the
  mean paired difference across seeds, with a t interval across the seeds (how much another seed could
  move it) and a bootstrap over rows (how much other held-out questions could move it).

Written by hand (a few lines each) rather than with scipy: scipy is no dependency of synth's `train`
extra (it only arrives with a dev tool), and `synth eval` must not fail on a plain install. The tests
check these against hand computations and, where scipy is installed, against scipy.stats.

The bootstrap uses a fixed seed: the same predictions give the same interval on every run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

CONFIDENCE = 0.95
Z = 1.959963984540054  # the 97.5% point of the standard normal
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0


def wilson_interval(successes: int, n: int, z: float = Z) -> tuple[float, float] | None:
    """95% Wilson score interval for a share successes/n (None for no rows)."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided p-value of McNemar's exact test: under "no difference" each discordant row (one model
    right, the other wrong) goes either way with probability 1/2, so the smaller count is binomial."""
    n = only_first + only_second
    if n == 0:
        return 1.0
    k = min(only_first, only_second)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)  # exact integers, one rounding at the end


def _resamples(n: int, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED):
    import numpy as np

    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def _percentiles(values) -> tuple[float, float]:
    import numpy as np

    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.nanpercentile(values, [tail, 100 - tail])  # a resample of rows with no tokens: left out
    return float(low), float(high)


def bootstrap_mean_interval(values: Sequence[float], weights: Sequence[float] | None = None) -> tuple[float, float] | None:
    """95% bootstrap interval of the mean of `values` over rows; with `weights`, of sum(values)/sum(weights)
    (a per-token mean: each row contributes its summed log-likelihood and its token count)."""
    import numpy as np

    if len(values) == 0:
        return None
    v = np.asarray(values, dtype=float)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=float)
    idx = _resamples(len(v))
    return _percentiles(_ratio(v, w, idx))


def _ratio(v, w, idx):
    import numpy as np

    totals = w[idx].sum(axis=1)
    return v[idx].sum(axis=1) / np.where(totals == 0, np.nan, totals)


def paired_bootstrap(
    first: Sequence[float], second: Sequence[float], weights_first=None, weights_second=None
) -> tuple[float, tuple[float, float]]:
    """(difference second − first, its 95% interval), both models resampled on the same rows."""
    import numpy as np

    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    wa = np.ones_like(a) if weights_first is None else np.asarray(weights_first, dtype=float)
    wb = np.ones_like(b) if weights_second is None else np.asarray(weights_second, dtype=float)
    difference = float(b.sum() / wb.sum() - a.sum() / wa.sum())
    idx = _resamples(len(a))
    return difference, _percentiles(_ratio(b, wb, idx) - _ratio(a, wa, idx))


def compare_shares(first: Sequence[bool], second: Sequence[bool]) -> dict[str, Any]:
    """Two models' right/wrong on the same rows: difference of shares, paired-bootstrap interval,
    McNemar's exact p-value and whether the difference is distinguishable from zero (p < 0.05)."""
    if len(first) != len(second):
        raise ValueError(f"paired rows differ in number: {len(first)} vs {len(second)}")
    only_first = sum(1 for a, b in zip(first, second) if a and not b)
    only_second = sum(1 for a, b in zip(first, second) if b and not a)
    difference, interval = paired_bootstrap([float(x) for x in first], [float(x) for x in second])
    p = mcnemar_exact(only_first, only_second)
    return {
        "difference": difference,
        "interval": list(interval),
        "test": "mcnemar_exact",
        "p_value": p,
        "only_first": only_first,
        "only_second": only_second,
        "distinguishable": p < 1 - CONFIDENCE,
    }


def compare_means(first, second, weights_first=None, weights_second=None) -> dict[str, Any]:
    """Two models' per-row values on the same rows: difference of means and its paired-bootstrap interval;
    distinguishable from zero when the interval leaves zero out."""
    if len(first) != len(second):
        raise ValueError(f"paired rows differ in number: {len(first)} vs {len(second)}")
    difference, (low, high) = paired_bootstrap(first, second, weights_first, weights_second)
    return {
        "difference": difference,
        "interval": [low, high],
        "test": "paired_bootstrap",
        "distinguishable": low > 0 or high < 0,
    }


def mean_sd(values: Sequence[float | None]) -> dict[str, Any] | None:
    """Mean and sample standard deviation across runs (seeds); None values (a metric a run lacks) left out."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    mean = sum(present) / len(present)
    sd = math.sqrt(sum((v - mean) ** 2 for v in present) / (len(present) - 1)) if len(present) > 1 else None
    return {"mean": mean, "sd": sd, "runs": len(present), "values": list(values)}


# Student's t, 97.5% points, for 1-30 degrees of freedom (beyond 30 the normal's 1.96 is within 2%).
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """95% t interval of the mean of a few runs (None for fewer than two)."""
    n = len(values)
    if n < 2:
        return None
    spread = mean_sd(values)
    half = (T_975[n - 2] if n - 1 <= len(T_975) else Z) * spread["sd"] / math.sqrt(n)
    return spread["mean"] - half, spread["mean"] + half


def compare_arms(control: Sequence[Sequence[bool]], treatment: Sequence[Sequence[bool]]) -> dict[str, Any]:
    """Two arms run with the same seeds, scored on the same rows: control[s][i] / treatment[s][i] is seed s's
    right/wrong on row i. The effect is the mean over seeds of (treatment share - control share), with:

    - `seed_interval`: a t interval across the seeds' differences (the spread between training runs);
    - `row_interval`: a bootstrap over rows, the same resampled rows for every seed (the held-out sample);
    - `distinguishable`: both intervals leave zero out (with one seed, the row interval alone decides).
    """
    import numpy as np

    if len(control) != len(treatment) or not control:
        raise ValueError(f"arms differ in seeds: {len(control)} vs {len(treatment)}")
    a = np.asarray(control, dtype=float)
    b = np.asarray(treatment, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"arms differ in rows: {a.shape} vs {b.shape}")
    per_seed = (b.mean(axis=1) - a.mean(axis=1)).tolist()
    idx = _resamples(a.shape[1])
    resampled = (b[:, idx].mean(axis=2) - a[:, idx].mean(axis=2)).mean(axis=0)
    row_interval = _percentiles(resampled)
    seed_interval = t_interval(per_seed)
    intervals = [row_interval] + ([seed_interval] if seed_interval else [])
    return {
        "difference": sum(per_seed) / len(per_seed),
        "per_seed": per_seed,
        "sd": mean_sd(per_seed)["sd"],
        "seed_interval": list(seed_interval) if seed_interval else None,
        "row_interval": list(row_interval),
        "distinguishable": all(low > 0 or high < 0 for low, high in intervals),
    }
