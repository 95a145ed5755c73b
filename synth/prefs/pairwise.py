"""``pairwise``: the judge compares two responses, in both orders, to cancel position bias.

Every pair of the N sampled responses is judged as (A=x, B=y) and as (A=y, B=x) with
``templates/prompts/prefs/pairwise.jinja``. A pair is decided only when both verdicts pick the same
response; verdicts that disagree (the judge followed the position) or a "tie" in either order make a
counted ``tie``. From the decided pairs, those whose winner and loser are furthest apart in wins minus
losses come first (best-worst: one pair; gap: up to `pairs_per_prompt`).

Requests per prompt: 1 sampling request per sampler + 2 x N(N-1)/2 comparisons (12 for N = 4).
Drops: ``tie`` and ``missing_rating`` / ``unparseable_rating`` per compared pair, ``identical``,
``too_few_responses``, ``images_unsupported``.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, ClassVar, Union

from pydantic import BaseModel, Field

from synth.llm.base import Backend, ChatRequest
from synth.pipeline import Rejected
from synth.prefs.base import Outcome, PreferenceStage
from synth.prefs.items import PromptItem
from synth.prefs.pairing import Pairing, read_verdict, reconcile
from synth.prefs.sampling import (
    Sampler,
    SamplingConfig,
    collect_candidates,
    judge_message,
    sample_requests,
    template_vars,
    too_few,
)


class PairwiseVerdict(BaseModel):
    """The judge's reply (structured output); lenient, so an odd winner is a counted drop."""

    winner: Union[str, None] = None
    rationale: Union[str, None] = ""


class PairwiseConfig(SamplingConfig):
    pairing: Pairing = Field("best-worst", description="best-worst: one pair per prompt; gap: up to pairs_per_prompt decided pairs")
    pairs_per_prompt: int = Field(2, ge=1, description="most pairs per prompt (pairing: gap)")


class PairwiseStrategy(PreferenceStage):
    """Input: prompts. Output: pairs whose both-order verdicts agree."""

    name: ClassVar[str] = "prefs-pairwise"
    strategy: ClassVar[str] = "pairwise"
    Config = PairwiseConfig

    def __init__(self, samplers: list[Sampler], judge: Backend, config=None, **kwargs: Any):
        super().__init__(config, **kwargs)
        if not samplers:
            raise ValueError("the pairwise strategy needs at least one sampler")
        self.samplers = samplers
        self.judge = judge

    def models(self) -> dict[str, Any]:
        return {"samplers": [{"model": s.model, "temperature": s.temperature} for s in self.samplers], "judge": self.judge.model_name}

    def compare_request(self, item: PromptItem, answer_a: str, answer_b: str, key: str) -> ChatRequest:
        from synth.templating import render_file

        _, _, attached = judge_message(item, self.judge, "")
        text = render_file("prompts/prefs/pairwise.jinja", record_id=item.id, answer_a=answer_a, answer_b=answer_b,
                           **template_vars(item, attached))
        message, images, _ = judge_message(item, self.judge, text)
        return ChatRequest(
            messages=[message], images=images, temperature=self.config.judge_temperature,
            max_tokens=self.config.judge_max_tokens, schema_model=PairwiseVerdict, key=key,
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
        pairs = list(combinations(range(len(candidates)), 2))
        requests = []
        for x, y in pairs:
            requests.append((self.judge, self.compare_request(item, candidates[x].text, candidates[y].text, f"{item.id}:cmp:{x}:{y}")))
            requests.append((self.judge, self.compare_request(item, candidates[y].text, candidates[x].text, f"{item.id}:cmp:{y}:{x}")))
        replies = yield requests
        decided: list[tuple[int, int, str]] = []  # (winner, loser, rationale)
        for n, (x, y) in enumerate(pairs):
            first, second = (replies[2 * n].parsed or [None])[0], (replies[2 * n + 1].parsed or [None])[0]
            v1, bad1 = read_verdict(getattr(first, "winner", None))
            v2, bad2 = read_verdict(getattr(second, "winner", None))
            if bad1 or bad2:
                bad = bad1 or bad2
                outcome.drop(bad, "pair", responses=[x, y])
                continue
            winner = reconcile(v1, v2)
            if winner is None:
                why = "the judge said tie" if "tie" in (v1, v2) else f"verdicts depend on the order ({v1} then {v2})"
                outcome.drop(Rejected("tie", why), "pair", responses=[x, y])
                continue
            won, lost = (x, y) if winner == 0 else (y, x)
            rationale = str(getattr(first, "rationale", "") or "")
            decided.append((won, lost, rationale))
        if not decided:
            return outcome
        score = [0] * len(candidates)
        for won, lost, _ in decided:  # net wins (Copeland): who beat the most, who lost the most
            score[won] += 1
            score[lost] -= 1
        decided.sort(key=lambda d: (-(score[d[0]] - score[d[1]]), d[0], d[1]))
        limit = 1 if self.config.pairing == "best-worst" else self.config.pairs_per_prompt
        for won, lost, rationale in decided[:limit]:
            meta = {
                "ratings": {"chosen": score[won], "rejected": score[lost]},
                "rationale": {"chosen": rationale},
                "models": {"chosen": candidates[won].model, "rejected": candidates[lost].model, "judge": self.judge.model_name},
                "candidates": len(candidates),
                "comparisons": len(pairs),
                "decided": len(decided),
            }
            outcome.add_pair(item, candidates[won].text, candidates[lost].text, meta, chosen=won, rejected=lost)
        return outcome
