"""Stable hashing: values fixed by their inputs on every run, process and machine (never Python's `hash()`,
which is salted per process). Content ids of samples are `synth.records.content_id`."""

from __future__ import annotations

import hashlib
from typing import Any

_SEP = "\x1f"  # a separator no part contains in practice: ("ab", "c") and ("a", "bc") hash apart


def stable_hash(*parts: Any, length: int = 16) -> str:
    """A hex digest of the parts (as text), `length` characters long."""
    return hashlib.sha256(_SEP.join(str(p) for p in parts).encode()).hexdigest()[:length]


def unit_hash(*parts: Any) -> float:
    """A number in [0, 1) fixed by its parts: choices that do not change between runs or machines."""
    digest = hashlib.sha256(_SEP.join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
