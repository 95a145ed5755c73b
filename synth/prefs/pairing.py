"""Which responses become (chosen, rejected) pairs: ratings read safely, ties checked before any argmax.

distilabel's DPO formatting takes argmax/argmin of the ratings with no tie check (equal ratings give
chosen == rejected) and crashes on a missing rating. Here a rating is read into a number or a reason
(`read_rating`), unrated responses never take part, and a pair needs a rating gap of at least `min_gap`
(> 0), so equal ratings are a counted tie, never a pair.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, Literal

from synth.pipeline import Rejected

Pairing = Literal["best-worst", "gap"]
_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*$")


def read_rating(value: Any, low: float = 1, high: float = 10) -> tuple[float | None, Rejected | None]:
    """A judge's rating as a number in [low, high], or why it is not one (``missing_rating`` /
    ``unparseable_rating``). Accepts numbers and numeric strings ("8", "7.5", "8/10")."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, Rejected("missing_rating", "the judge gave no rating")
    if isinstance(value, bool):
        return None, Rejected("unparseable_rating", f"rating {value!r} is not a number")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        match = _NUMBER.match(str(value))
        if not match:
            return None, Rejected("unparseable_rating", f"rating {str(value)[:40]!r} is not a number")
        number = float(match.group(1))
    if math.isnan(number) or not low <= number <= high:
        return None, Rejected("unparseable_rating", f"rating {number:g} is outside {low:g}-{high:g}")
    return number, None


def select_pairs(
    scores: Sequence[float | None],
    *,
    mode: Pairing = "best-worst",
    min_gap: float = 1.0,
    max_pairs: int = 2,
) -> list[tuple[int, int]] | Rejected:
    """(chosen index, rejected index) pairs from per-response scores (None = unrated, left out).

    - ``best-worst``: one pair, a best- and a worst-rated response, when their gap is at least `min_gap`.
    - ``gap``: every pair whose gap is at least `min_gap`, largest gaps first, at most `max_pairs`.

    Ties between equally rated responses are broken by position (the earlier response), which is
    deterministic and never matters for correctness: chosen and rejected always differ by >= `min_gap`.
    Returns Rejected("too_few_rated") with fewer than two rated responses, Rejected("tie") when no two
    differ by `min_gap`.
    """
    if min_gap <= 0:
        raise ValueError("min_gap must be > 0, or equal ratings would make pairs")
    rated = [(i, s) for i, s in enumerate(scores) if s is not None]
    if len(rated) < 2:
        return Rejected("too_few_rated", f"{len(rated)} of {len(scores)} responses have a rating")
    high = max(s for _, s in rated)
    low = min(s for _, s in rated)
    if high - low < min_gap:
        values = ", ".join(f"{s:g}" for _, s in rated)
        return Rejected("tie", f"no two ratings differ by at least {min_gap:g} ({values})")
    if mode == "best-worst":
        best = next(i for i, s in rated if s == high)
        worst = next(i for i, s in rated if s == low)
        return [(best, worst)]
    if mode != "gap":
        raise ValueError(f"unknown pairing mode {mode!r}")
    pairs = [(i, j, si - sj) for i, si in rated for j, sj in rated if si - sj >= min_gap]
    pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
    return [(i, j) for i, j, _ in pairs[:max_pairs]]


# ---------------------------------------------------------------- pairwise verdicts

Verdict = Literal["A", "B", "tie"]


def read_verdict(value: Any) -> tuple[Verdict | None, Rejected | None]:
    """A pairwise judge's verdict: "A", "B" or "tie", or why it is not one."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, Rejected("missing_rating", "the judge named no winner")
    text = str(value).strip().strip("\"'.").lower()
    text = re.sub(r"^(answer|response)\s+", "", text)
    if text in ("a", "1"):
        return "A", None
    if text in ("b", "2"):
        return "B", None
    if text in ("tie", "draw", "equal", "same", "both", "neither", "none"):
        return "tie", None
    return None, Rejected("unparseable_rating", f"winner {str(value)[:40]!r} is not A, B or tie")


def reconcile(first: Verdict, second: Verdict) -> int | None:
    """The winner of responses (x, y) judged as (A=x, B=y) then (A=y, B=x): 0 for x, 1 for y, None for a tie.

    A pair is decided only when both orders pick the same response; a verdict that follows the position
    (A both times, or B both times) is position bias and counts as a tie, as does a "tie" in either order."""
    if first == "tie" or second == "tie":
        return None
    winner_first = 0 if first == "A" else 1
    winner_second = 1 if second == "A" else 0
    return winner_first if winner_first == winner_second else None
