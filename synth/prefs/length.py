"""Length balance: drop pairs whose chosen and rejected lengths differ too much.

Length is the best-known artefact of DPO data: when the chosen reply is mostly the longer one, a model
learns "longer is better" instead of "correct is better". This filter drops a pair whose longer reply is
more than `max_ratio` times the shorter one (in characters), as ``length_ratio``.

Input and output: preference records (``chosen``, ``rejected``).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from synth.pipeline import Filter, Rejected, StageConfig
from synth.prefs.items import message_text


class LengthBalanceConfig(StageConfig):
    max_ratio: float = Field(..., gt=1.0, description="largest allowed longer/shorter reply length ratio")


def reply_length(messages: list[dict]) -> int:
    return sum(len(message_text(m).strip()) for m in messages)


class LengthBalance(Filter):
    name: ClassVar[str] = "length-balance"
    Config = LengthBalanceConfig
    reads = ("chosen", "rejected")

    def check(self, record: dict) -> Rejected | None:
        chosen, rejected = reply_length(record["chosen"]), reply_length(record["rejected"])
        ratio = max(chosen, rejected) / max(1, min(chosen, rejected))
        if ratio > self.config.max_ratio:
            return Rejected(
                "length_ratio",
                f"chosen {chosen} chars, rejected {rejected} chars: ratio {ratio:.2f} > {self.config.max_ratio:g}",
            )
        return None

    def reject(self, record: dict, verdict: Rejected, **extra) -> None:
        meta = record.get("meta") or {}
        super().reject(record, verdict, level="pair", prompt_id=meta.get("prompt_id"), **extra)
