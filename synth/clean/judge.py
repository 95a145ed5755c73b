"""LLM-judge score filter: an LLM rates each sample 0-10 (quality of the answer, or difficulty of the
instruction) with the rubric in ``templates/prompts/judge/<aspect>.jinja``; samples at or above the
threshold are kept.

Reads: SFT records (``messages``, ``images``) or preference pairs (the chosen answer is judged), ``meta``.
Writes: ``meta.scores[<aspect>] = score`` and ``meta.score_reasons[<aspect>] = reason``.
Drops (``rejects.jsonl``): ``low_score`` (detail has the score and reason).
Failures (``failures.jsonl``, not cached, retried by the next run): the request failed, or the reply
stayed unparseable or out of range after the backend's re-asks. Each item stands alone: one bad score
never takes its batch with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from synth.clean.common import answer_texts, instruction_text, record_images
from synth.llm.base import ChatRequest, Completion
from synth.pipeline import Failed, Rejected, StageConfig
from synth.pipeline.llm_task import LLMTask
from synth.records import ImagePart, Message, TextPart, load_meta


class JudgeScore(BaseModel):
    """The reply the judge must give (structured output). Scores from 0 to 10 are accepted."""

    score: float = Field(ge=0, le=10)
    reason: str = ""


class JudgeConfig(StageConfig):
    aspect: Literal["quality", "difficulty"] = Field("quality", description="what the judge scores (its rubric)")
    threshold: float = Field(6.0, ge=0, le=10, description="keep samples scoring at or above this")
    template: str | None = Field(None, description="rubric template: a file path, or a path under templates/")
    temperature: float = Field(0.0, ge=0, description="sampling temperature of the judge")
    max_tokens: int = Field(256, ge=8, description="token limit of each verdict")
    max_chars: int = Field(8000, ge=100, description="instruction and answer are cut to this many characters")
    send_images: bool = Field(True, description="attach images when the backend takes them")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " […]"


def _number(score: float) -> int | float:
    return int(score) if float(score).is_integer() else score


class JudgeFilter(LLMTask):
    """Keep samples an LLM judge scores at or above `threshold` (0-10)."""

    name: ClassVar[str] = "judge"
    filter_chain: ClassVar[bool] = True
    Config: ClassVar[type[StageConfig]] = JudgeConfig
    reads: ClassVar[tuple[str, ...]] = ("messages", "prompt", "chosen", "images", "meta")
    writes: ClassVar[tuple[str, ...]] = ("meta",)

    def __init__(self, backend, config=None, progress=None, **overrides: Any):
        super().__init__(backend, config, progress, **overrides)
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

    def format_output(self, record: dict, completion: Completion) -> dict | Rejected | Failed:
        from synth.llm.structured import parse_structured

        verdict = completion.parsed[0] if completion.parsed else None
        if not isinstance(verdict, JudgeScore):
            # A backend without structured output hands back text: validate it here, for this item only.
            verdict, error = parse_structured(completion.text, JudgeScore)
            if verdict is None:
                return Failed("unparseable", f"{error}: {completion.text[:200]!r}")
        aspect = self.config.aspect
        score = _number(verdict.score)
        if score < self.config.threshold:
            return Rejected("low_score", f"{aspect}={score} < {self.config.threshold:g}: {verdict.reason[:200]}")
        meta = dict(load_meta(record.get("meta")))
        meta["scores"] = {**(meta.get("scores") or {}), aspect: score}
        meta["score_reasons"] = {**(meta.get("score_reasons") or {}), aspect: verdict.reason}
        return {**record, "meta": meta}


OPERATOR_CLASSES = (JudgeFilter,)
