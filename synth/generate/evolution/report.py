"""The end-of-run table of an evolution run: what was generated, kept, eliminated (a decision about the
output) and failed (the request did not come back usable: retried by the next run), and, for engines that
evolve lists of items (MMEvol), item counts and per-round data statistics: the mean judge difficulty, steps
and skills per question of the items kept in each round, and their change from the round before (MMEvol's
paper reports these over three rounds: difficulty 4.98 -> 6.56, steps 1.61 -> 2.47, skills 1.03 -> 1.71)."""

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
    # Items (MMEvol evolves every QA of an image at once): counts per round, and the sums behind the
    # per-round statistics.
    items: dict[int, Counter] = field(default_factory=lambda: defaultdict(Counter))
    item_data: dict[int, Counter] = field(default_factory=lambda: defaultdict(Counter))
    boxes_read: int = 0
    boxes_malformed: Counter = field(default_factory=Counter)

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

    def item(self, round_: int, what: str, n: int = 1) -> None:
        """Count items of a round: generated, kept, eliminated, failed."""
        self.items[round_][what] += n

    def item_stats(self, round_: int, steps: int, skills: int, difficulty: float | None = None) -> None:
        """One kept item's data (round 0: a seed item): its steps and skills, and the judge's difficulty."""
        data = self.item_data[round_]
        data["items"] += 1
        data["steps"] += steps
        data["skills"] += skills
        if difficulty is not None:
            data["judged"] += 1
            data["difficulty"] += difficulty

    def statistics(self) -> dict[str, dict[str, Any]]:
        """Per round: items, mean difficulty (None when nothing was judged), steps and skills per question,
        and each mean's change from the previous round that has one."""
        out: dict[str, dict[str, Any]] = {}
        previous: dict[str, float | None] = {}
        for round_ in sorted(self.item_data):
            data = self.item_data[round_]
            n = data["items"]
            means = {
                "difficulty": round(data["difficulty"] / data["judged"], 2) if data["judged"] else None,
                "steps": round(data["steps"] / n, 2) if n else None,
                "skills": round(data["skills"] / n, 2) if n else None,
            }
            change = {
                k: round(v - previous[k], 2) if v is not None and previous.get(k) is not None else None for k, v in means.items()
            }
            out[str(round_)] = {"items": n, **means, "change": change}
            previous = {k: v if v is not None else previous.get(k) for k, v in means.items()}
        return out

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
            **self._item_dict(),
        }

    def _item_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.items:
            out["items_per_round"] = {str(r): dict(c) for r, c in sorted(self.items.items())}
        if self.item_data:
            out["data_statistics"] = self.statistics()
        if self.boxes_read or self.boxes_malformed:
            out["boxes"] = {"read": self.boxes_read, "malformed": dict(self.boxes_malformed.most_common())}
        return out


def report_tables(data: dict[str, Any]) -> list:
    """The end-of-run tables of `as_dict()` data (printed by `synth evolve`): what was generated, kept and
    eliminated, per reason, operator and round."""
    from rich.table import Table

    out: list = []
    summary = Table(title=f"{data['method']}: evolution", title_justify="left", header_style="bold")
    for name in ("seeds", "skipped", "generated", "kept", "eliminated", "failed", "written"):
        summary.add_column(name, justify="right")
    summary.add_row(
        str(data["seeds"]),
        str(sum(data["seeds_skipped"].values())),
        str(data["generated"]),
        str(data["kept"]),
        str(sum(data["eliminated"].values())),
        str(sum(data.get("failed", {}).values())),
        str(data["written"]),
    )
    out.append(summary)

    def breakdown(title: str, rows: dict[str, dict[str, int]]) -> None:
        table = Table(title=title, title_justify="left", header_style="bold")
        for name in ("", "generated", "kept", "eliminated", "failed", "kept %"):
            table.add_column(name, justify="right" if name else "left")
        for key, counts in rows.items():
            generated = counts.get("generated", 0)
            rate = f"{100 * counts.get('kept', 0) / generated:.0f}%" if generated else "-"
            table.add_row(
                key, str(generated), str(counts.get("kept", 0)), str(counts.get("eliminated", 0)),
                str(counts.get("failed", 0)), rate,
            )
        out.append(table)

    breakdown("per operator", data["per_operator"])
    breakdown("per round", data["per_round"])
    if data["eliminated"] or data["seeds_skipped"]:
        reasons = Table(title="eliminated by reason", title_justify="left", header_style="bold")
        reasons.add_column("reason")
        reasons.add_column("count", justify="right")
        for reason, count in data["eliminated"].items():
            reasons.add_row(reason, str(count))
        for reason, count in data["seeds_skipped"].items():
            reasons.add_row(f"seed skipped: {reason}", str(count))
        out.append(reasons)
    if data.get("failed"):
        failures = Table(title="failed requests by reason (retried by the next run)", title_justify="left", header_style="bold")
        failures.add_column("reason")
        failures.add_column("count", justify="right")
        for reason, count in data["failed"].items():
            failures.add_row(reason, str(count))
        out.append(failures)
    if data.get("items_per_round"):
        breakdown("items per round", data["items_per_round"])
    if data.get("data_statistics"):
        out.append(statistics_table(data["data_statistics"]))
    boxes = data.get("boxes") or {}
    if boxes.get("malformed"):
        out.append(
            f"boxes: {boxes['read']} read, malformed left out: " + ", ".join(f"{k} {v}" for k, v in boxes["malformed"].items())
            + " (check box_format / box_units)"
        )
    if data["interaction_forms"]:
        out.append("interaction forms: " + ", ".join(f"{k} {v}" for k, v in data["interaction_forms"].items()))
    if data["tokens"]:
        tokens = Table(title="tokens by step", title_justify="left", header_style="bold")
        for name in ("step", "requests", "prompt tokens", "completion tokens"):
            tokens.add_column(name, justify="right" if name != "step" else "left")
        for phase, counts in data["tokens"].items():
            tokens.add_row(phase, f"{counts['requests']:,}", f"{counts['prompt_tokens']:,}", f"{counts['completion_tokens']:,}")
        out.append(tokens)
    return out


def statistics_table(stats: dict[str, dict[str, Any]]):
    """Per round, the kept items' mean judge difficulty, steps and skills per question, and their change
    (round 0: the seeds' items, which the judge has not scored)."""
    from rich.table import Table

    def cell(row: dict[str, Any], key: str) -> str:
        value, change = row.get(key), (row.get("change") or {}).get(key)
        if value is None:
            return "-"
        return f"{value:.2f}" + (f" ({change:+.2f})" if change is not None else "")

    table = Table(title="data statistics per round (kept items)", title_justify="left", header_style="bold")
    for name in ("round", "items", "difficulty", "steps / question", "skills / question"):
        table.add_column(name, justify="right")
    for round_, row in stats.items():
        table.add_row(round_, str(row["items"]), cell(row, "difficulty"), cell(row, "steps"), cell(row, "skills"))
    return table
