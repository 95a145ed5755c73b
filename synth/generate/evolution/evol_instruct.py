"""Evol-Instruct for text: evolve instructions in depth and in breadth over several rounds, eliminate
failed evolutions, and answer each kept instruction with the LLM.

Input records: SFT records (first user turn = instruction, first assistant turn = answer; the reader turns
Alpaca ``instruction``/``input``/``output`` tables into these) or plain columns (``instruction``, ``prompt``,
``question`` or ``query``, or the column named in the config, plus an optional ``input``).
Output records: SFT samples (user = evolved instruction, assistant = new answer) with lineage in ``meta``.

Defaults follow WizardLM (Xu et al. 2023): M = 4 rounds; "complicate the input" shows demonstrations;
an answer is eliminated when it is empty, only punctuation or stop words, or a refusal ("sorry", and
synth's other refusal phrases) of fewer than 80 words. Answer length is not a rule of the paper: a
minimum (`rules.min_answer_words`) is opt-in, since "4" or "Paris" can be the whole right answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field, field_validator

from synth.generate.evolution.base import EvolutionConfig, EvolutionStage, Outcome, Version
from synth.generate.evolution.elimination import (
    REFUSAL_PATTERNS,
    EliminationRules,
    JudgeReply,
    Verdict,
    judge_outcomes,
    same_text,
)
from synth.generate.evolution.operators import Weights, check_weights
from synth.llm.base import ChatRequest, Completion
from synth.pipeline import Failed, Rejected
from synth.pipeline.llm_task import failure_of
from synth.records import Message, first_turn_text, load_meta
from synth.templating import render_file

IN_DEPTH = ("add_constraints", "deepen", "concretize", "increase_reasoning", "complicate_input")
IN_BREADTH = ("in_breadth",)
OPERATORS = IN_DEPTH + IN_BREADTH

# Columns tried, in order, when the config names none.
INSTRUCTION_COLUMNS = ("instruction", "prompt", "question", "query")
ANSWER_COLUMNS = ("output", "response", "answer", "completion")

#: Evol-Instruct's elimination defaults: the paper's rules, plus synth's other refusal phrases. The paper
#: alone: ``rules: {refusal_patterns: ['\bsorry\b']}``.
RULE_DEFAULTS: dict[str, Any] = {
    "min_answer_words": 0,  # no length rule: short answers are valid answers
    "refusal_max_words": 79,  # "sorry" in a response of fewer than 80 words
    "refusal_patterns": [*REFUSAL_PATTERNS, r"\bsorry\b"],
}


def default_rules(**overrides: Any) -> EliminationRules:
    return EliminationRules(**{**RULE_DEFAULTS, **overrides})


class EvolInstructConfig(EvolutionConfig):
    rounds: int = Field(default=4, ge=1, le=20, description="evolution rounds (the paper's M = 4)")
    operators: Weights = Field(
        default_factory=lambda: {name: 1.0 for name in OPERATORS},
        description="operator -> weight (or NAME=W,NAME=W text); each sample draws one operator per round: "
        + ", ".join(OPERATORS),
    )
    rules: EliminationRules = Field(
        default_factory=default_rules, description="elimination rules; keys left out keep Evol-Instruct's defaults"
    )
    instruction_column: str | None = Field(
        default=None, description="column of the instructions (default: instruction, prompt, question or query)"
    )
    input_column: str | None = Field(default=None, description="appended to the instruction (Alpaca 'input')")
    answer_column: str | None = Field(
        default=None, description="column of the existing answers (default: output, response, answer or completion)"
    )
    answer_temperature: float = Field(default=0.7, ge=0, description="sampling temperature of the new answers")
    answer_max_tokens: int = Field(default=1024, ge=1, description="token limit of each new answer")

    @field_validator("rules", mode="before")
    @classmethod
    def _rules_over_defaults(cls, value: Any) -> Any:
        # `rules: {refusal_max_words: 50}` changes that rule only, not the others back to the shared class's.
        return {**RULE_DEFAULTS, **value} if isinstance(value, dict) else value

    @field_validator("operators")
    @classmethod
    def _known_operators(cls, value: dict[str, float]) -> dict[str, float]:
        return check_weights(value, OPERATORS, "operator")


class EvolInstruct(EvolutionStage):
    """Evol-Instruct. Input: instructions (SFT rows or columns). Output: evolved SFT samples + lineage."""

    name = "evol-instruct"
    method = "evol-instruct"
    operators = OPERATORS
    Config = EvolInstructConfig
    finish_phase = "answer"
    finish_requests = 1
    reads: ClassVar[tuple[str, ...]] = ("messages", *INSTRUCTION_COLUMNS, "input", *ANSWER_COLUMNS, "id", "meta")

    # -- seeds ----------------------------------------------------------------------------------------

    def seed_version(self, record: dict) -> Version | Rejected:
        instruction, answer = self._read_seed(record)
        if not instruction.strip():
            return Rejected("missing_instruction", "the record has no instruction text")
        seed_id = str(record.get("id") or "")
        version = Version(root_id="", fields={"instruction": instruction.strip(), "answer": answer.strip()})
        version.seed_meta = load_meta(record.get("meta")) if record.get("meta") else {}
        version.id = seed_id or self.version_id(version)
        version.root_id = version.id
        return version

    def _read_seed(self, record: dict) -> tuple[str, str]:
        cfg = self.config
        if cfg.instruction_column is None and record.get("messages"):
            return first_turn_text(record["messages"], "user"), first_turn_text(record["messages"], "assistant")
        column = cfg.instruction_column or next((c for c in INSTRUCTION_COLUMNS if c in record), None)
        if column is None or column not in record:
            return "", ""
        instruction = str(record.get(column) or "")
        extra_input = str(record.get(cfg.input_column or "input") or "")
        if extra_input.strip():
            instruction = f"{instruction.strip()}\n\n{extra_input.strip()}"
        answer_col = cfg.answer_column or next((c for c in ANSWER_COLUMNS if c in record), None)
        return instruction, str(record.get(answer_col) or "") if answer_col else ""

    # -- evolve ---------------------------------------------------------------------------------------

    def format_evolve_input(self, version: Version, operator: str, round_: int) -> ChatRequest:
        prompt = render_file(f"prompts/evol/{operator}.jinja", record_id=version.root_id, instruction=version.fields["instruction"])
        return ChatRequest(
            messages=[Message(role="user", content=prompt)],
            temperature=self.config.temperature,
            max_tokens=self.config.max_tokens,
            seed=self.config.seed,
            key=f"{version.root_id}:r{round_}:evolve",
        )

    def parse_evolve_output(self, version: Version, operator: str, round_: int, completion: Completion) -> Version | Outcome:
        text = completion.text.strip().strip('"').strip()
        if not text:
            return Rejected("empty_reply", "the model returned no evolved prompt")
        return self.child(version, operator, round_, {"instruction": text, "answer": ""})

    def check_candidate(self, previous: Version, candidate: Version) -> Rejected | None:
        instruction = candidate.fields["instruction"]
        if same_text(instruction, previous.fields["instruction"]):
            return Rejected("unchanged", "the evolved prompt equals the previous one")
        return self.config.rules.check_leak(instruction)

    # -- judge ----------------------------------------------------------------------------------------

    def format_judge_input(self, pairs: Sequence[tuple[str, Version, Version]]) -> ChatRequest:
        items = [
            {"id": label, "operator": cand.operator, "previous": prev.fields["instruction"], "evolved": cand.fields["instruction"]}
            for label, prev, cand in pairs
        ]
        prompt = render_file("prompts/evol/judge.jinja", record_id=pairs[0][2].root_id, items=items)
        return ChatRequest(
            messages=[Message(role="user", content=prompt)],
            temperature=self.config.judge_temperature,
            max_tokens=self.config.judge_max_tokens,
            seed=self.config.seed,
            schema_model=JudgeReply,
            key="judge:" + ",".join(f"{cand.root_id}:r{cand.round}" for _, _, cand in pairs),
        )

    def parse_judge_output(self, ids: Sequence[str], completion: Completion) -> dict[str, Verdict | Outcome]:
        return judge_outcomes(ids, completion, Verdict)

    # -- answer ---------------------------------------------------------------------------------------

    def format_answer_input(self, version: Version) -> ChatRequest:
        # The evolved instruction is the whole prompt: this is the pair the SFT data will teach.
        return ChatRequest(
            messages=[Message(role="user", content=version.fields["instruction"])],
            temperature=self.config.answer_temperature,
            max_tokens=self.config.answer_max_tokens,
            seed=self.config.seed,
            key=f"{version.root_id}:r{version.round}:answer",
        )

    def parse_answer_output(self, version: Version, completion: Completion) -> Version | Outcome:
        if not completion.ok:
            return failure_of(completion)
        answer = completion.text.strip()
        if completion.finish_reasons and completion.finish_reasons[0] == "length":
            return Rejected("answer_truncated", "the answer hit max_tokens")
        rejected = self.config.rules.check_answer(answer)
        if rejected:
            return rejected
        version.fields["answer"] = answer
        return version

    def finish(self, pairs: list[tuple[Version, Version]], round_: int) -> list[Version | Outcome]:
        candidates = [candidate for _, candidate in pairs]
        completions = self._call("answer", round_, [self.format_answer_input(c) for c in candidates])
        results = [self.parse_answer_output(c, done) for c, done in zip(candidates, completions, strict=True)]
        self.answered += sum(not isinstance(r, Failed) for r in results)
        return results

    # -- output ---------------------------------------------------------------------------------------

    def chain_fields(self, version: Version) -> dict[str, Any]:
        return {"instruction": version.fields["instruction"]}

    def to_record(self, version: Version) -> dict:
        messages = [{"role": "user", "content": version.fields["instruction"]}]
        if version.fields["answer"]:
            messages.append({"role": "assistant", "content": version.fields["answer"]})
        meta = self.lineage(version) if version.round else {**version.seed_meta, "source": version.seed_meta.get("source", "seed")}
        return {"id": version.id, "messages": messages, "meta": meta}
