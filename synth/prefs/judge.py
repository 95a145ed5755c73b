"""``judge`` (UltraFeedback / VLFeedback style): sample N responses, an LLM judge rates each one.

The judge rates helpfulness, faithfulness (to the image, or to the conversation for text prompts) and
honesty from 1 to 10 with a rationale (``templates/prompts/prefs/judge.jinja``); a response's rating is
the mean of the three. It sees the image when its backend takes images, the scene in text otherwise.
Pairs: best vs worst, or every pair at least `min_gap` apart (``pairing: gap``), via `select_pairs`.

Requests per prompt: 1 sampling request per sampler (``n`` responses in all) + ``n`` judge requests.
Drops: ``tie``, ``missing_rating`` / ``unparseable_rating`` (per response), ``identical``,
``too_few_responses``, ``images_unsupported``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Union

from pydantic import BaseModel, Field

from synth.llm.base import Backend, ChatRequest
from synth.pipeline import Rejected
from synth.prefs.base import Outcome, PreferenceStage
from synth.prefs.items import PromptItem
from synth.prefs.pairing import Pairing, read_rating, select_pairs
from synth.prefs.sampling import (
    Sampler,
    SamplingConfig,
    collect_candidates,
    judge_message,
    sample_requests,
    template_vars,
    too_few,
)

ASPECTS = ("helpfulness", "faithfulness", "honesty")
# A number or nothing: grammar-constrained backends then write a number (a weak model otherwise copies
# "1-10" from the prompt), while a missing or out-of-range rating stays a counted drop, not a failed request.
RatingValue = Union[float, None]


class AspectRatings(BaseModel):
    """The judge's reply (structured output)."""

    helpfulness: RatingValue = None
    faithfulness: RatingValue = None
    honesty: RatingValue = None
    rationale: Union[str, None] = ""


class JudgeConfig(SamplingConfig):
    pairing: Pairing = Field("best-worst", description="best-worst: one pair per prompt; gap: every pair >= min_gap apart")
    min_gap: float = Field(1.0, gt=0, description="smallest rating gap between chosen and rejected")
    pairs_per_prompt: int = Field(2, ge=1, description="most pairs per prompt (pairing: gap)")


def rate(reply: Any) -> tuple[float | None, dict[str, float], Rejected | None]:
    """(mean rating, aspect ratings, None) or (None, what was readable, why not)."""
    aspects: dict[str, float] = {}
    for aspect in ASPECTS:
        value, problem = read_rating(getattr(reply, aspect, None))
        if problem is not None:
            return None, aspects, Rejected(problem.reason, f"{aspect}: {problem.detail}")
        aspects[aspect] = value
    return round(sum(aspects.values()) / len(aspects), 3), aspects, None


class JudgeStrategy(PreferenceStage):
    """Input: prompts (SFT records or raw QA rows). Output: pairs rated by an LLM judge."""

    name: ClassVar[str] = "prefs-judge"
    strategy: ClassVar[str] = "judge"
    Config = JudgeConfig

    def __init__(self, samplers: list[Sampler], judge: Backend, config=None, **kwargs: Any):
        super().__init__(config, **kwargs)
        if not samplers:
            raise ValueError("the judge strategy needs at least one sampler")
        self.samplers = samplers
        self.judge = judge

    def models(self) -> dict[str, Any]:
        return {"samplers": [{"model": s.model, "temperature": s.temperature} for s in self.samplers], "judge": self.judge.model_name}

    def judge_prompt(self, item: PromptItem, response: str, attached: bool) -> str:
        from synth.templating import render_file

        return render_file("prompts/prefs/judge.jinja", record_id=item.id, response=response, **template_vars(item, attached))

    def judge_request(self, item: PromptItem, response: str, index: int) -> ChatRequest:
        _, _, attached = judge_message(item, self.judge, "")
        message, images, _ = judge_message(item, self.judge, self.judge_prompt(item, response, attached))
        return ChatRequest(
            messages=[message], images=images, temperature=self.config.judge_temperature,
            max_tokens=self.config.judge_max_tokens, schema_model=AspectRatings, key=f"{item.id}:judge:{index}",
        )

    def plan(self, item: PromptItem):
        outcome = Outcome()
        asks = sample_requests(item, self.samplers, self.config)
        if isinstance(asks, Rejected):
            return outcome.drop(asks)
        samples = yield asks
        candidates, left_out = collect_candidates(item, self.samplers, samples, self.config)
        problem = too_few(candidates, left_out, self.config)
        if problem:
            return outcome.drop(problem)
        replies = yield [(self.judge, self.judge_request(item, c.text, k)) for k, c in enumerate(candidates)]
        scores: list[float | None] = []
        aspects: list[dict[str, float]] = []
        rationales: list[str] = []
        for k, (candidate, completion) in enumerate(zip(candidates, replies, strict=True)):
            reply = completion.parsed[0] if completion.parsed else None
            score, detail, bad = rate(reply)
            if bad is not None:
                outcome.drop(bad, "response", response=k, model=candidate.model)
            scores.append(score)
            aspects.append(detail)
            rationales.append(str(getattr(reply, "rationale", "") or ""))
        picked = select_pairs(scores, mode=self.config.pairing, min_gap=self.config.min_gap, max_pairs=self.config.pairs_per_prompt)
        if isinstance(picked, Rejected):
            if picked.reason == "too_few_rated":  # the per-response drops above already say why
                return outcome
            return outcome.drop(picked)
        for chosen, rejected in picked:
            meta = {
                "ratings": {"chosen": scores[chosen], "rejected": scores[rejected]},
                "aspects": {"chosen": aspects[chosen], "rejected": aspects[rejected]},
                "rationale": {"chosen": rationales[chosen], "rejected": rationales[rejected]},
                "models": {"chosen": candidates[chosen].model, "rejected": candidates[rejected].model, "judge": self.judge.model_name},
                "candidates": len(candidates),
                "all_ratings": scores,
            }
            outcome.add_pair(item, candidates[chosen].text, candidates[rejected].text, meta, chosen=chosen, rejected=rejected)
        return outcome
