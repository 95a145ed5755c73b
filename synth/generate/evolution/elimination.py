"""What eliminates an evolution: text rules (refusals, empty or stop-word answers, leaked scaffolding,
unchanged prompts) and the LLM judge's verdicts.

The judge answers for a batch of items. Its reply is parsed leniently (`JudgeReply`: the schema sent to
the server says what each field should be, but a wrong field does not fail the whole reply) and then
every item is checked on its own (`Verdict`), so an out-of-range or malformed score eliminates only that
item. Verdicts are matched to items by id, never by position.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from synth.llm.base import Completion
from synth.pipeline import Failed, Rejected

MIN_SCORE, MAX_SCORE = 0, 10  # MMEvol's rubric starts at 0; our prompts ask for 1-10

# ---------------------------------------------------------------- judge verdicts


class Verdict(BaseModel):
    """One judge verdict about one evolved item, checked on its own and matched back by `id`."""

    model_config = ConfigDict(extra="ignore")
    id: str
    improved: bool
    score: int = Field(ge=MIN_SCORE, le=MAX_SCORE)
    reason: str = ""

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        # Models often write an id like 1 as a number; ids are labels, compare them as text.
        return str(value).strip() if isinstance(value, (int, str)) else value

    @field_validator("reason", mode="before")
    @classmethod
    def _reason_as_text(cls, value: Any) -> Any:
        return "" if value is None else value


def schema_hint(extra: dict):
    """A field's JSON schema for the server (what the field should be) while validation accepts anything."""

    def update(schema: dict) -> None:
        schema.pop("default", None)
        schema.update(extra)

    return update


class JudgeItem(BaseModel):
    """One item of a judge reply as received; `Verdict` checks it. Unknown keys are kept for the check."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"required": ["id", "improved", "score"]})
    id: Any = Field(None, json_schema_extra=schema_hint({"type": "string"}))
    improved: Any = Field(None, json_schema_extra=schema_hint({"type": "boolean"}))
    score: Any = Field(None, json_schema_extra=schema_hint({"type": "integer", "minimum": MIN_SCORE, "maximum": MAX_SCORE}))
    reason: Any = Field("", json_schema_extra=schema_hint({"type": "string"}))

    @model_validator(mode="before")
    @classmethod
    def _any_item(cls, value: Any) -> Any:
        # A bare string or number in the list is not a verdict; keep it so the list still parses.
        return value if isinstance(value, dict) else {"raw": value}


class JudgeReply(BaseModel):
    """The judge's reply: one item per evolved item (the schema the judge request asks for)."""

    model_config = ConfigDict(extra="ignore")
    verdicts: list[JudgeItem]


class Verdicts(BaseModel):
    """A reply of strictly valid verdicts (for callers that want all-or-nothing)."""

    model_config = ConfigDict(extra="ignore")
    verdicts: list[Verdict]


class InvalidVerdict(NamedTuple):
    """A verdict item that names an id but does not pass `Verdict` (e.g. score 42 or "high")."""

    id: str
    rejected: Rejected


def check_items(items: Iterable[JudgeItem | dict], model: type[Verdict] = Verdict) -> list[Verdict | InvalidVerdict]:
    """Each item of a reply as a `Verdict`, or an `InvalidVerdict` for its id; items without an id are dropped."""
    out: list[Verdict | InvalidVerdict] = []
    for item in items:
        data = item.model_dump() if isinstance(item, BaseModel) else dict(item)
        raw_id = data.get("id")
        item_id = str(raw_id).strip() if isinstance(raw_id, (int, str)) and not isinstance(raw_id, bool) else None
        try:
            out.append(model.model_validate(data))
        except ValidationError as e:
            if item_id:
                problems = "; ".join(
                    f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']} (got {err.get('input')!r})"[:160]
                    for err in e.errors()[:3]
                )
                out.append(InvalidVerdict(item_id, Rejected("judge_invalid_verdict", f"item {item_id}: {problems}")))
    return out


def match_verdicts(ids: Sequence[str], verdicts: Iterable[Verdict | InvalidVerdict]) -> dict[str, Verdict | Rejected]:
    """Each asked id gets its verdict, whatever order the judge answered in.

    A missing id, or an id judged twice with different outcomes, is an elimination (the judge did not give
    one clear answer); an id whose only verdicts are invalid is eliminated with the reason; ids nobody
    asked about are ignored.
    """
    valid: dict[str, list[Verdict]] = defaultdict(list)
    invalid: dict[str, Rejected] = {}
    for verdict in verdicts:
        if isinstance(verdict, InvalidVerdict):
            invalid.setdefault(verdict.id, verdict.rejected)
        else:
            valid[verdict.id].append(verdict)
    result: dict[str, Verdict | Rejected] = {}
    for item_id in ids:
        found = valid.get(item_id, [])
        if not found:
            result[item_id] = invalid.get(item_id) or Rejected(
                "judge_missing_verdict", f"the judge gave no verdict for item {item_id}"
            )
        elif len({(v.improved, v.score) for v in found}) > 1:
            result[item_id] = Rejected("judge_conflicting_verdicts", f"the judge gave {len(found)} different verdicts for item {item_id}")
        else:
            result[item_id] = found[0]
    return result


def parse_structured(completion: Completion, schema: type[BaseModel]) -> BaseModel | Rejected | Failed:
    """The validated object of a structured reply: the backend's parse when it made one, else the repaired
    text. An empty reply is a `Rejected`; a reply that stays unparseable is a `Failed` (retried next run)."""
    if completion.parsed and isinstance(completion.parsed[0], schema):
        return completion.parsed[0]
    text = completion.text
    if not text.strip():
        return Rejected("empty_reply", "the model returned no text")
    from synth.llm.structured import parse_structured as parse_reply

    value, problem = parse_reply(text, schema)
    if value is None:
        return Failed("unparseable", f"{problem}: {text[:200]!r}")
    return value


def judge_outcomes(
    ids: Sequence[str],
    completion: Completion,
    model: type[Verdict] = Verdict,
    reply: type[JudgeReply] = JudgeReply,
) -> dict[str, Verdict | Rejected | Failed]:
    """Per asked id: its verdict, or why it has none. A reply that cannot be read at all fails every id."""
    parsed = parse_structured(completion, reply)
    if isinstance(parsed, (Rejected, Failed)):
        outcome = type(parsed)("judge_" + parsed.reason if isinstance(parsed, Rejected) else parsed.reason, parsed.detail)
        return {i: outcome for i in ids}
    return match_verdicts(ids, check_items(parsed.verdicts, model))


# ---------------------------------------------------------------- text rules

# Sentences that show the model declined or could not do the task.
REFUSAL_PATTERNS = (
    r"\bI(?:'m| am) sorry\b",
    r"\bI apologi[sz]e\b",
    r"\bsorry, (?:but )?I\b",
    r"\bas an AI\b",
    r"\bas a (?:large )?language model\b",
    r"\bI (?:cannot|can't|can not|am unable to|'m unable to|am not able to|'m not able to)\b",
    r"\bI (?:do not|don't) have (?:access|enough information|the ability)\b",
    r"\bunfortunately,? I\b",
    r"\b(?:it is|it's) not possible (?:for me )?to (?:answer|determine)\b",
)

# Words of the evolution prompts themselves: an evolved prompt that contains them copied the scaffolding.
TEXT_LEAK_PATTERNS = (
    "#rewritten prompt#",
    "#given prompt#",
    "#created prompt#",
    "rewritten prompt",
    "given prompt",
    "created prompt",
    "original prompt",
    "the prompt above",
    "#method#",
)

STOP_WORDS = frozenset(
    """a an the and or but if then else of to in on at by for with from as is are was were be been being it its
    this that these those there here i you he she we they me him her us them my your his our their what which who
    whom whose when where why how all any both each few more most other some such nor not only own same so than
    too very can will just do does did done have has had having should would could may might must shall oh um uh
    well hmm""".split()
)

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


class EliminationRules(BaseModel):
    """Rule-based elimination settings, shared by both engines (`min_answer_words` differs by default)."""

    model_config = ConfigDict(extra="forbid")
    min_answer_words: int = Field(default=3, ge=0, description="answers with fewer words are 'answer_too_short'")
    refusal_max_words: int = Field(
        default=80, ge=0, description="a refusal phrase only eliminates answers up to this many words"
    )
    refusal_patterns: list[str] = Field(default_factory=lambda: list(REFUSAL_PATTERNS))
    leak_patterns: list[str] = Field(default_factory=lambda: list(TEXT_LEAK_PATTERNS))
    min_judge_score: int = Field(
        default=1, ge=MIN_SCORE, le=MAX_SCORE, description="an 'improved' verdict below this is eliminated"
    )

    def check_answer(self, answer: str) -> Rejected | None:
        """Can this answer be trusted as a demonstration of the task?"""
        text = answer.strip()
        if not text:
            return Rejected("empty_answer", "the answer is empty")
        words = _WORD.findall(text.lower())
        if not words:
            return Rejected("answer_only_punctuation", f"answer {text[:60]!r} has no words")
        if all(w in STOP_WORDS for w in words):
            return Rejected("answer_only_stop_words", f"answer {text[:60]!r} holds only stop words")
        if len(words) <= self.refusal_max_words:
            for pattern in self.refusal_patterns:
                match = re.search(pattern, text, re.IGNORECASE)
                if match:
                    return Rejected("answer_refusal", f"the answer says {match.group(0)!r}")
        if len(words) < self.min_answer_words:
            return Rejected("answer_too_short", f"{len(words)} words < {self.min_answer_words}")
        return None

    def check_leak(self, text: str) -> Rejected | None:
        """Does an evolved prompt/question repeat the words of our evolution prompt?"""
        lowered = text.lower()
        for pattern in self.leak_patterns:
            if pattern.lower() in lowered:
                return Rejected("prompt_leak", f"the evolved text contains {pattern!r}")
        return None


def same_text(a: str, b: str) -> bool:
    """Equal up to case, spacing and punctuation (an evolution that changed nothing)."""
    return _WORD.findall(a.lower()) == _WORD.findall(b.lower())
