"""LLM-judge score filter: an LLM rates each sample 1-10 (quality of the answer, or difficulty of the
instruction) with the rubric in ``templates/prompts/judge/<aspect>.jinja``; samples at or above the
threshold are kept.

Input: SFT records (or preference pairs: the chosen answer is judged). Output: the record with
``meta.scores[<aspect>] = score`` and ``meta.score_reasons[<aspect>] = reason``. Drops: ``low_score``
(detail has score and reason), ``judge_unparseable`` (the reply is not a valid score) and, counted by the
base, ``llm_failure`` (the backend gave up on the request).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from synth.clean.common import answer_texts, instruction_text, record_images
from synth.llm.base import ChatRequest, Completion, LLMStage
from synth.records import ImagePart, Message, TextPart, load_meta
from synth.stages import Rejected, StageConfig


class JudgeScore(BaseModel):
    """The reply the judge must give (structured output)."""

    score: int = Field(ge=1, le=10)
    reason: str = ""


class JudgeConfig(StageConfig):
    aspect: Literal["quality", "difficulty"] = "quality"
    threshold: float = Field(6.0, ge=1, le=10, description="keep samples scoring at or above this")
    template: str | None = Field(None, description="rubric template: a file path, or a path under templates/")
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(256, ge=8)
    max_chars: int = Field(8000, ge=100, description="instruction and answer are cut to this many characters")
    send_images: bool = Field(True, description="attach images when the backend takes them")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " […]"


class JudgeFilter(LLMStage):
    """Keep samples an LLM judge scores at or above `threshold` (1-10)."""

    name: ClassVar[str] = "judge"
    Config: ClassVar[type[StageConfig]] = JudgeConfig

    def __init__(self, backend, config=None, **overrides: Any):
        super().__init__(backend, config, **overrides)
        self.template, self.template_name = self._load_template()

    def _load_template(self):
        from synth.templating import compile_template, load_template

        chosen = self.config.template
        if chosen and Path(chosen).is_file():
            return compile_template(Path(chosen).read_text(encoding="utf-8"), chosen), chosen
        name = chosen or f"prompts/judge/{self.config.aspect}.jinja"
        return load_template(name), name

    def prompt(self, record: dict) -> str:
        """The rendered rubric prompt for one record."""
        from synth.templating import render

        images = record_images(record)
        answers = answer_texts(record)
        return render(
            self.template,
            {
                "instruction": _clip(instruction_text(record), self.config.max_chars),
                "answer": _clip(answers[0] if answers else "", self.config.max_chars),
                "image_count": len(images),
                "images_attached": bool(images) and self._attach_images(),
            },
            self.template_name,
            record_id=str(record.get("id") or ""),
        )

    def _attach_images(self) -> bool:
        return self.config.send_images and bool(getattr(self.backend, "supports_images", False))

    def format_input(self, record: dict) -> ChatRequest | Rejected:
        text = self.prompt(record)
        images = record_images(record) if self._attach_images() else []
        content: Any = [TextPart(text=text)] + [ImagePart() for _ in images] if images else text
        return ChatRequest(
            messages=[Message(role="user", content=content)],
            images=images,
            temperature=self.config.temperature,
            max_tokens=self.config.max_tokens,
            schema_model=JudgeScore,
            key=str(record.get("id") or ""),
        )

    def format_output(self, record: dict, completion: Completion) -> dict | Rejected:
        from synth.llm.structured import parse_structured

        verdict = completion.parsed[0] if completion.parsed else None
        if not isinstance(verdict, JudgeScore):
            verdict, error = parse_structured(completion.text, JudgeScore)
            if verdict is None:
                return Rejected("judge_unparseable", f"{error}: {completion.text[:200]!r}")
        aspect = self.config.aspect
        if verdict.score < self.config.threshold:
            return Rejected("low_score", f"{aspect}={verdict.score} < {self.config.threshold:g}: {verdict.reason[:200]}")
        meta = dict(load_meta(record.get("meta")))
        meta["scores"] = {**(meta.get("scores") or {}), aspect: verdict.score}
        meta["score_reasons"] = {**(meta.get("score_reasons") or {}), aspect: verdict.reason}
        return {**record, "meta": meta}
