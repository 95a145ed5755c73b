"""Pair selection: ratings read safely, ties checked before any argmax (distilabel's bug), both-order verdicts."""

from __future__ import annotations

import pytest

from synth.pipeline import Rejected
from synth.prefs.length import LengthBalance
from synth.prefs.pairing import read_rating, read_verdict, reconcile, select_pairs


@pytest.mark.parametrize(
    ("value", "expected"),
    [(8, 8.0), (7.5, 7.5), ("8", 8.0), (" 9 ", 9.0), ("6/10", 6.0), (1, 1.0), (10, 10.0)],
)
def test_ratings_that_read(value, expected):
    assert read_rating(value) == (expected, None)


@pytest.mark.parametrize(
    ("value", "reason"),
    [(None, "missing_rating"), ("", "missing_rating"), ("  ", "missing_rating"), ("excellent", "unparseable_rating"),
     (11, "unparseable_rating"), (0, "unparseable_rating"), (True, "unparseable_rating"), ("8 or 9", "unparseable_rating"),
     (float("nan"), "unparseable_rating")],
)
def test_ratings_that_do_not_read_are_reasons_never_crashes(value, reason):
    number, problem = read_rating(value)
    assert number is None and isinstance(problem, Rejected) and problem.reason == reason


def test_equal_ratings_are_a_tie_never_a_pair():
    assert select_pairs([7, 7, 7, 7]).reason == "tie"
    assert select_pairs([7.0, 7.5], min_gap=1).reason == "tie"
    assert select_pairs([7, 7], mode="gap").reason == "tie"


def test_best_worst_picks_a_best_and_a_worst_with_position_breaking_ties():
    assert select_pairs([5, 9, 2, 9, 2]) == [(1, 2)]
    assert select_pairs([3, 4], min_gap=1) == [(1, 0)]


def test_unrated_responses_never_take_part():
    assert select_pairs([None, 9, None, 3]) == [(1, 3)]
    assert select_pairs([None, 9, None]).reason == "too_few_rated"
    assert select_pairs([None, None]).reason == "too_few_rated"


def test_gap_mode_keeps_pairs_at_least_min_gap_apart_largest_first():
    pairs = select_pairs([9, 5, 8, 1], mode="gap", min_gap=2, max_pairs=10)
    assert pairs == [(0, 3), (2, 3), (0, 1), (1, 3), (2, 1)]  # gaps 8, 7, 4, 4, 3; (0, 2) is only 1 apart
    assert select_pairs([9, 5, 8, 1], mode="gap", min_gap=2, max_pairs=2) == [(0, 3), (2, 3)]
    for chosen, rejected in pairs:
        assert [9, 5, 8, 1][chosen] - [9, 5, 8, 1][rejected] >= 2


def test_zero_gap_is_refused():
    with pytest.raises(ValueError, match="min_gap"):
        select_pairs([1, 2], min_gap=0)


@pytest.mark.parametrize(("value", "verdict"), [("A", "A"), ("b", "B"), ("Answer A", "A"), ('"B".', "B"), ("tie", "tie"), ("equal", "tie")])
def test_verdicts(value, verdict):
    assert read_verdict(value) == (verdict, None)


@pytest.mark.parametrize(("value", "reason"), [(None, "missing_rating"), ("", "missing_rating"), ("C", "unparseable_rating"), ("A and B", "unparseable_rating")])
def test_bad_verdicts(value, reason):
    assert read_verdict(value)[1].reason == reason


def test_both_orders_must_agree():
    # (A=x, B=y) then (A=y, B=x)
    assert reconcile("A", "B") == 0  # x both times
    assert reconcile("B", "A") == 1  # y both times
    assert reconcile("A", "A") is None  # always the first position: position bias, a tie
    assert reconcile("B", "B") is None
    assert reconcile("tie", "B") is None and reconcile("A", "tie") is None


def test_length_balance_drops_only_pairs_beyond_the_ratio():
    stage = LengthBalance(max_ratio=2.0)
    short = {"chosen": [{"role": "assistant", "content": "abcd"}], "rejected": [{"role": "assistant", "content": "abcdefgh"}], "meta": {}}
    long = {"chosen": [{"role": "assistant", "content": "a" * 30}], "rejected": [{"role": "assistant", "content": "abcd"}], "meta": {"prompt_id": "p"}}
    assert stage.check(short) is None  # exactly 2.0
    verdict = stage.check(long)
    assert verdict.reason == "length_ratio" and "7.50 > 2" in verdict.detail
    assert list(stage.run([short, long])) == [short]
    assert stage.stats.dropped == {"length_ratio": 1}
