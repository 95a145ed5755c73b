"""The instruction filters of Self-Instruct: well-formed, serveable by the target, and novel (ROUGE-L)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, ClassVar

from synth.generate.novelty import RougeNoveltyIndex
from synth.generate.self_instruct.config import SelfInstructConfig
from synth.pipeline import Filter, Rejected


def _normalized(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".!?")


class InstructionFilter(Filter):
    """Keeps new instructions that are well-formed and novel; a kept instruction joins the pool.

    Input record: ``{"id", "instruction", ...}``. Reasons: empty, too_short, too_long, punctuation_start,
    non_ascii_start, unsupported_keyword, blocked_prefix ("Write a program ..."), duplicate, rouge_similar.
    """

    name = "self-instruct-filter"
    Config = SelfInstructConfig
    reads: ClassVar[tuple[str, ...]] = ("instruction",)

    def __init__(self, config: SelfInstructConfig | dict | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.novelty = RougeNoveltyIndex(self.config.rouge_threshold, use_stemmer=self.config.use_stemmer)
        self._seen: set[str] = set()
        keywords = sorted(self.config.blocked_keywords, key=len, reverse=True)
        self._keywords = (
            re.compile(r"\b(" + "|".join(re.escape(k) for k in keywords) + r")\b", re.IGNORECASE)
            if keywords
            else None
        )
        prefixes = [r"\s+".join(map(re.escape, p.split())) for p in self.config.blocked_prefixes if p.strip()]
        # Any case (the original capitalizes an instruction before its test), whole words only.
        self._prefixes = (
            re.compile(r"^(?:" + "|".join(prefixes) + r")(?!\w)", re.IGNORECASE) if prefixes else None
        )

    def prime(self, instructions: Iterable[str]) -> None:
        """Put instructions (the seeds) in the pool without checking them."""
        for text in instructions:
            self._seen.add(_normalized(text))
            self.novelty.add(text)

    def check(self, record: dict) -> Rejected | None:
        text = record["instruction"]
        cfg = self.config
        if not text.strip():
            return Rejected("empty")
        words = len(text.split())
        if words < cfg.min_words:
            return Rejected("too_short", f"{words} words: {text}")
        if words > cfg.max_words:
            return Rejected("too_long", f"{words} words: {text[:200]}")
        if not text[0].isascii():
            return Rejected("non_ascii_start", text)
        if not text[0].isalnum():
            return Rejected("punctuation_start", text)
        if cfg.text_only and self._keywords is not None:
            found = self._keywords.search(text)
            if found:
                return Rejected("unsupported_keyword", f"'{found.group(1)}': {text}")
        if self._prefixes is not None:
            found = self._prefixes.match(text.strip())
            if found:
                return Rejected("blocked_prefix", f"starts with '{found.group(0)}': {text}")
        key = _normalized(text)
        if key in self._seen:
            return Rejected("duplicate", text)
        match = self.novelty.add_if_novel(text)
        if match is not None:
            return Rejected("rouge_similar", f"ROUGE-L {match.score:.3f} with '{match.text}': {text}")
        self._seen.add(key)
        return None
