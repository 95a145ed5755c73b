"""``claims`` (RLAIF-V divide and conquer): score each response by how many of its claims are wrong.

An LLM splits each sampled response into atomic claims, each turned into a yes/no question whose answer
is "yes" when the claim is true (``templates/prompts/prefs/claims_split.jinja``); a judge answers every
question against the image, or the image as text for a text-only judge
(``claims_answer.jinja``). A response scores minus the number of claims answered "no"; pairs need a gap
of at least `min_gap` (1), so two responses with as many wrong claims are a tie.

Requests per prompt: 1 sampling request per sampler + N splits + one answer per claim (at most
N x `max_claims`). Drops: ``tie``, ``missing_rating`` / ``unparseable_rating`` (a response whose split or
answers cannot be read), ``identical``, ``too_few_responses``, ``images_unsupported``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Union

from pydantic import BaseModel, Field

from synth.llm.base import Backend, ChatRequest
from synth.pipeline import Rejected
from synth.prefs.base import Outcome, PreferenceStage
from synth.prefs.items import PromptItem
from synth.prefs.pairing import Pairing, select_pairs
from synth.prefs.sampling import (
    Sampler,
    SamplingConfig,
    collect_candidates,
    judge_message,
    sample_requests,
    template_vars,
    too_few,
)


class Claim(BaseModel):
    claim: Union[str, None] = ""
    question: Union[str, None] = ""


class ClaimList(BaseModel):
    """The splitter's reply (structured output)."""

    claims: Union[list[Claim], None] = None


class ClaimAnswer(BaseModel):
    """The judge's reply to one question (structured output); lenient: an odd answer is a counted drop."""

    answer: Union[str, bool, None] = None


class ClaimsConfig(SamplingConfig):
    pairing: Pairing = Field("best-worst", description="best-worst: one pair per prompt; gap: every pair >= min_gap apart")
    min_gap: float = Field(1.0, gt=0, description="fewest extra wrong claims in the rejected response")
    pairs_per_prompt: int = Field(2, ge=1, description="most pairs per prompt (pairing: gap)")
    max_claims: int = Field(8, ge=1, le=50, description="claims checked per response")


def read_answer(value: Any) -> tuple[bool | None, Rejected | None]:
    """A yes/no answer as True/False, or why it is not one."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, Rejected("missing_rating", "the judge did not answer a claim question")
    if isinstance(value, bool):
        return value, None
    word = str(value).strip().strip("\"'.!").split()[0].strip(",.").lower() if str(value).strip() else ""
    if word in ("yes", "true", "correct"):
        return True, None
    if word in ("no", "false", "incorrect"):
        return False, None
    return None, Rejected("unparseable_rating", f"answer {str(value)[:40]!r} is not yes or no")


def _summary(total: int, wrong: list[str]) -> str:
    if not total:
        return "no claims to check"
    text = f"{len(wrong)} of {total} claims judged wrong"
    return text + (": " + "; ".join(wrong) if wrong else "")


class ClaimsStrategy(PreferenceStage):
    """Input: prompts. Output: pairs ranked by the number of claims a judge finds wrong."""

    name: ClassVar[str] = "prefs-claims"
    strategy: ClassVar[str] = "claims"
    Config = ClaimsConfig

    def __init__(self, samplers: list[Sampler], judge: Backend, config=None, *, splitter: Backend | None = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        if not samplers:
            raise ValueError("the claims strategy needs at least one sampler")
        self.samplers = samplers
        self.judge = judge
        self.splitter = splitter or judge

    def models(self) -> dict[str, Any]:
        return {"samplers": [{"model": s.model, "temperature": s.temperature} for s in self.samplers],
                "judge": self.judge.model_name, "splitter": self.splitter.model_name}

    def split_request(self, item: PromptItem, response: str, index: int) -> ChatRequest:
        from synth.templating import render_file

        text = render_file("prompts/prefs/claims_split.jinja", record_id=item.id, response=response,
                           max_claims=self.config.max_claims, **template_vars(item, False))
        return ChatRequest(
            messages=[{"role": "user", "content": text.strip()}], temperature=self.config.judge_temperature,
            max_tokens=self.config.judge_max_tokens, schema_model=ClaimList, key=f"{item.id}:split:{index}",
        )

    def answer_request(self, item: PromptItem, question: str, key: str) -> ChatRequest:
        from synth.templating import render_file

        _, _, attached = judge_message(item, self.judge, "")
        text = render_file("prompts/prefs/claims_answer.jinja", record_id=item.id, question=question, **template_vars(item, attached))
        message, images, _ = judge_message(item, self.judge, text)
        return ChatRequest(
            messages=[message], images=images, temperature=self.config.judge_temperature,
            max_tokens=self.config.judge_max_tokens, schema_model=ClaimAnswer, key=key,
        )

    def plan(self, item: PromptItem):
        outcome = Outcome()
        if item.images and item.scene is None and not getattr(self.judge, "supports_images", False):
            return outcome.drop(Rejected(
                "images_unsupported",
                f"the judge {self.judge.model_name} takes no images and no scene description is known; "
                "claims about an image cannot be checked (use a vision judge or pass --scenes DATASET)",
            ))
        asks = sample_requests(item, self.samplers, self.config)
        if isinstance(asks, Rejected):
            return outcome.drop(asks)
        samples = yield asks
        candidates, left_out = collect_candidates(item, self.samplers, samples, self.config)
        problem = too_few(candidates, left_out, self.config)
        if problem:
            return outcome.drop(problem)
        splits = yield [(self.splitter, self.split_request(item, c.text, k)) for k, c in enumerate(candidates)]
        claims: list[list[Claim] | None] = []
        for k, completion in enumerate(splits):
            reply = completion.parsed[0] if completion.parsed else None
            listed = getattr(reply, "claims", None)
            if listed is None:
                outcome.drop(Rejected("missing_rating", "the splitter gave no claims list"), "response", response=k)
                claims.append(None)
                continue
            usable = [c for c in listed if (c.question or "").strip()][: self.config.max_claims]
            claims.append(usable)
        asks, where = [], []
        for k, listed in enumerate(claims):
            for j, claim in enumerate(listed or []):
                asks.append((self.judge, self.answer_request(item, claim.question.strip(), f"{item.id}:claim:{k}:{j}")))
                where.append((k, j))
        answers = yield asks
        wrong: list[list[str] | None] = [None if c is None else [] for c in claims]
        for (k, j), completion in zip(where, answers, strict=True):
            if wrong[k] is None:
                continue
            reply = completion.parsed[0] if completion.parsed else None
            value, bad = read_answer(getattr(reply, "answer", None))
            if bad is not None:
                outcome.drop(bad, "response", response=k, claim=j)
                wrong[k] = None
            elif value is False:
                wrong[k].append(claims[k][j].claim or claims[k][j].question)
        scores = [None if w is None else -float(len(w)) for w in wrong]
        picked = select_pairs(scores, mode=self.config.pairing, min_gap=self.config.min_gap, max_pairs=self.config.pairs_per_prompt)
        if isinstance(picked, Rejected):
            if picked.reason == "too_few_rated":
                return outcome
            return outcome.drop(picked)
        for chosen, rejected in picked:
            meta = {
                "ratings": {"chosen": scores[chosen], "rejected": scores[rejected]},
                "claims": {"chosen": len(claims[chosen] or []), "rejected": len(claims[rejected] or [])},
                "rationale": {side: _summary(len(claims[k] or []), wrong[k]) for side, k in (("chosen", chosen), ("rejected", rejected))},
                "wrong_claims": {"chosen": wrong[chosen], "rejected": wrong[rejected]},
                "models": {"chosen": candidates[chosen].model, "rejected": candidates[rejected].model,
                           "judge": self.judge.model_name, "splitter": self.splitter.model_name},
                "candidates": len(candidates),
            }
            outcome.add_pair(item, candidates[chosen].text, candidates[rejected].text, meta, chosen=chosen, rejected=rejected)
        return outcome
