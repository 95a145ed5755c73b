"""``hallucinate`` (POVID): chosen = the reference answer, rejected = an LLM rewrite with one injected error.

The rewriter gets the conversation, the reference answer and the image (or the scene as text) and
injects one plausible error in an object, attribute, count or relation
(``templates/prompts/prefs/hallucinate.jinja``); ``meta.injected`` records the kind of error and the
words it replaced. A rewrite equal to the reference is dropped (``identical``).

Solved examples (``hallucinate_examples.jsonl``, one per error type) go before the request as earlier
turns, rendered with the same template (the first turn carries the instructions): base models such as
the embedded default follow the format from them. A rewrite that copies an example or the prompt's wording instead of rewriting the answer is
dropped (``copied_prompt``).

Requests per prompt: 1. Drops: ``no_reference``, ``identical``, ``empty_rewrite``, ``copied_prompt``.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, ClassVar, Literal, Union

from pydantic import BaseModel, Field

from synth.llm.base import Backend, ChatRequest
from synth.pipeline import Rejected
from synth.prefs.base import CommaList, Outcome, PreferenceStage, PrefsConfig
from synth.prefs.items import PromptItem, normalise, same_text
from synth.prefs.sampling import judge_message, template_vars
from synth.records import Message

ErrorType = Literal["object", "attribute", "count", "relation"]
ERROR_TYPES: tuple[str, ...] = ("object", "attribute", "count", "relation")
ERROR_TEXT = {
    "object": "an object that is not there, or the wrong object",
    "attribute": "a wrong attribute (colour, size, shape, material, text)",
    "count": "a wrong number of things",
    "relation": "a wrong position or relation between things (left/right, above/below, on, next to)",
}


class Rewrite(BaseModel):
    """The rewriter's reply (structured output)."""

    rewritten: str = ""
    error_type: Union[str, None] = None
    original: Union[str, None] = None
    injected: Union[str, None] = None


class HallucinateConfig(PrefsConfig):
    error_types: CommaList[ErrorType] = Field(default_factory=lambda: list(ERROR_TYPES), min_length=1,
                                              description="kinds of error the rewriter may inject (a list, or a "
                                              "comma list)")
    temperature: float = Field(0.7, ge=0, description="sampling temperature of the rewrite; 0 = greedy")
    max_tokens: int = Field(512, ge=16, description="the reply holds the whole rewritten answer plus a little JSON")
    examples: bool = Field(True, description="send the solved examples before each request")


EXAMPLES = "prompts/prefs/hallucinate_examples.jsonl"
_PLACEHOLDER = re.compile(r"<[^<>\n]{3,}>")


@functools.lru_cache(maxsize=1)
def load_examples() -> tuple[dict, ...]:
    """The solved examples shipped with the template."""
    from synth.paths import templates_dir

    path = templates_dir() / EXAMPLES
    return tuple(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


class HallucinateStrategy(PreferenceStage):
    """Input: prompts with a reference answer. Output: (reference, rewrite with an injected error) pairs."""

    name: ClassVar[str] = "prefs-hallucinate"
    strategy: ClassVar[str] = "hallucinate"
    Config = HallucinateConfig
    max_samplers = 1

    @classmethod
    def from_parts(cls, config, *, samplers, judge, scenes=None) -> HallucinateStrategy:
        return cls(samplers[0].backend, config, scenes=scenes)

    def __init__(self, rewriter: Backend, config=None, **kwargs: Any):
        super().__init__(config, **kwargs)
        self.rewriter = rewriter

    def models(self) -> dict[str, Any]:
        return {"rewriter": self.rewriter.model_name}

    def prompt(self, item: PromptItem, attached: bool) -> str:
        """The request's own turn: with the instructions unless solved examples went first."""
        return self._render(item.id, brief=bool(self.examples()), reference=item.reference, **template_vars(item, attached))

    def _render(self, record_id: str, **variables: Any) -> str:
        from synth.templating import render_file

        types = list(self.config.error_types)
        return render_file(
            "prompts/prefs/hallucinate.jinja", record_id=record_id,
            error_types=types, error_types_text="; ".join(ERROR_TEXT[t] for t in types), **variables,
        ).strip()

    def examples(self) -> list[dict]:
        """The solved examples for the allowed error types."""
        return [e for e in load_examples() if e["error_type"] in self.config.error_types] if self.config.examples else []

    def example_turns(self) -> list[Message]:
        turns = []
        for k, example in enumerate(self.examples()):
            text = self._render("example", brief=k > 0, reference=example["reference"],
                                turns=[{"role": "user", "text": example["question"]}], image_count=0, images_attached=False, scene=None)
            answer = {k: example[k] for k in ("rewritten", "error_type", "original", "injected")}
            turns += [Message(role="user", content=text), Message(role="assistant", content=json.dumps(answer))]
        return turns

    def copies_prompt(self, rewritten: str) -> bool:
        """Whether the rewrite repeats an example or a placeholder instead of rewriting the answer."""
        if _PLACEHOLDER.search(rewritten):
            return True
        text = normalise(rewritten)
        # Only sentences are telling: a one-word example ("4") is also a fine rewrite of a real answer.
        sentences = {normalise(e[k]) for e in load_examples() for k in ("reference", "rewritten") if len(e[k].split()) >= 4}
        return any(sentence in text for sentence in sentences)

    def request(self, item: PromptItem) -> ChatRequest:
        _, _, attached = judge_message(item, self.rewriter, "")
        message, images, _ = judge_message(item, self.rewriter, self.prompt(item, attached))
        return ChatRequest(
            messages=[*self.example_turns(), message], images=images, temperature=self.config.temperature,
            max_tokens=self.config.max_tokens, seed=self.config.seed, schema_model=Rewrite, key=f"{item.id}:hallucinate",
        )

    def plan(self, item: PromptItem):
        outcome = Outcome()
        if not item.reference:
            return outcome.drop(Rejected("no_reference", "the prompt has no reference answer to rewrite"))
        (completion,) = yield [(self.rewriter, self.request(item))]
        reply = completion.parsed[0] if completion.parsed else None
        rewritten = (getattr(reply, "rewritten", "") or "").strip()
        if not rewritten:
            return outcome.drop(Rejected("empty_rewrite", "the rewriter returned no rewritten answer"))
        if self.copies_prompt(rewritten) and not same_text(rewritten, item.reference):
            return outcome.drop(Rejected("copied_prompt", f"the rewrite copies the prompt instead of the answer: {rewritten[:120]!r}"))
        error_type = str(reply.error_type or "").strip().lower() or None
        injected = {
            "type": error_type if error_type in ERROR_TYPES else None,
            "stated_type": reply.error_type,
            "original": reply.original,
            "injected": reply.injected,
        }
        meta = {"injected": injected, "models": {"chosen": "reference", "rejected": self.rewriter.model_name}}
        added = outcome.add_pair(item, item.reference, rewritten, meta)
        if not added:  # make_pair's "identical" is the rewrite's fault: count it at the prompt
            outcome.drops[-1].level = "prompt"
        return outcome
