"""Operator choice for evolution rounds: weighted, and fixed by (seed, sample id, round), so a rerun makes
the same requests (the request cache then serves them) on any machine."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import BeforeValidator

from synth.errors import SynthError
from synth.hashing import unit_hash


def pick_weighted(weights: dict[str, float], *key: Any) -> str:
    """The option whose cumulative weight covers `unit_hash(*key)`; zero weights are never chosen."""
    options = [(name, w) for name, w in weights.items() if w > 0]
    total = sum(w for _, w in options)
    point = unit_hash(*key) * total
    for name, weight in options:
        point -= weight
        if point < 0:
            return name
    return options[-1][0]


def check_weights(weights: dict[str, float], known: Iterable[str], what: str) -> dict[str, float]:
    """`weights` when every name is known and the weights are usable (a pydantic validator raises this)."""
    known = list(known)
    unknown = [name for name in weights if name not in known]
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(unknown)} (known: {', '.join(known)})")
    if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
        raise ValueError(f"{what} weights must be >= 0 with at least one above 0")
    return weights


def parse_weights(text: str | None, what: str) -> dict[str, float] | None:
    """``"deepen=2,concretize"`` → ``{"deepen": 2.0, "concretize": 1.0}`` (a name alone weighs 1)."""
    if text is None or not text.strip():
        return None
    weights: dict[str, float] = {}
    for item in text.split(","):
        name, _, value = item.strip().partition("=")
        if not name:
            continue
        try:
            weights[name.strip()] = float(value) if value.strip() else 1.0
        except ValueError:
            raise SynthError(f"{what}: weight {value!r} of '{name}' is not a number (write NAME=WEIGHT,NAME=WEIGHT)") from None
    return weights


def _weights_from_text(value: Any) -> Any:
    # `--operators deepen=2,concretize` (or the same text in a recipe) is a weight map too.
    if not isinstance(value, str):
        return value
    try:
        return parse_weights(value, "weights") or {}
    except SynthError as e:
        raise ValueError(str(e)) from None


#: a name -> weight map, also written as ``NAME=W,NAME=W`` text (a name alone weighs 1)
Weights = Annotated[dict[str, float], BeforeValidator(_weights_from_text)]
