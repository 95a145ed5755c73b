"""The end-of-run table of an evolution run: what was generated, kept, eliminated (a decision about the
output) and failed (the request did not come back usable: retried by the next run)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from synth.llm.base import Completion


@dataclass
class EvolutionReport:
    """Counts of one run, printed by the CLI and stored as ``report.json`` in the output folder."""

    method: str
    seeds: int = 0
    seeds_skipped: Counter = field(default_factory=Counter)
    generated: int = 0  # evolutions attempted (one per sample per round)
    kept: int = 0
    eliminated: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    per_operator: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    per_round: dict[int, Counter] = field(default_factory=lambda: defaultdict(Counter))
    forms: Counter = field(default_factory=Counter)
    tokens: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    written: int = 0

    def _count(self, operator: str, round_: int, what: str) -> None:
        self.per_operator[operator][what] += 1
        self.per_round[round_][what] += 1

    def attempt(self, operator: str, round_: int) -> None:
        self.generated += 1
        self._count(operator, round_, "generated")

    def keep(self, operator: str, round_: int) -> None:
        self.kept += 1
        self._count(operator, round_, "kept")

    def eliminate(self, operator: str, round_: int, reason: str) -> None:
        self.eliminated[reason] += 1
        self._count(operator, round_, "eliminated")

    def fail(self, operator: str, round_: int, reason: str) -> None:
        self.failed[reason] += 1
        self._count(operator, round_, "failed")

    def add_usage(self, phase: str, completion: Completion) -> None:
        self.tokens[phase]["requests"] += 1
        if not completion.ok:
            self.tokens[phase]["failed"] += 1
        self.tokens[phase]["prompt_tokens"] += completion.usage.prompt_tokens
        self.tokens[phase]["completion_tokens"] += completion.usage.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "seeds": self.seeds,
            "seeds_skipped": dict(self.seeds_skipped),
            "generated": self.generated,
            "kept": self.kept,
            "eliminated": dict(self.eliminated.most_common()),
            "failed": dict(self.failed.most_common()),
            "per_operator": {op: dict(c) for op, c in sorted(self.per_operator.items())},
            "per_round": {str(r): dict(c) for r, c in sorted(self.per_round.items())},
            "interaction_forms": dict(self.forms.most_common()),
            "tokens": {phase: dict(c) for phase, c in sorted(self.tokens.items())},
            "written": self.written,
        }
