"""Shared machinery of the evolution engines (Evol-Instruct, MMEvol): rules that eliminate failed
evolutions, the batched judge (verdicts matched by id), deterministic operator choice, and the round loop.

An evolution that fails any rule is eliminated with a short stable reason (counted, written to the
rejects file) and the sample keeps its previous version for the next round.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from synth.errors import SynthError, validation_message
from synth.llm.base import Backend, ChatRequest, Completion, LLMStage
from synth.records import content_id
from synth.stages import Rejected, StageConfig, run_stages

# ---------------------------------------------------------------- judge verdicts


class Verdict(BaseModel):
    """One judge verdict about one evolved item, matched back by `id`."""

    model_config = ConfigDict(extra="ignore")
    id: str
    improved: bool
    score: int = Field(ge=1, le=10)
    reason: str = ""

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        # Models often write an id like 1 as a number; ids are labels, compare them as text.
        return str(value).strip() if isinstance(value, (int, str)) else value


class Verdicts(BaseModel):
    model_config = ConfigDict(extra="ignore")
    verdicts: list[Verdict]


def match_verdicts(ids: Sequence[str], verdicts: Iterable[Verdict]) -> dict[str, Verdict | Rejected]:
    """Each asked id gets its verdict, whatever order the judge answered in.

    A missing id, or an id judged twice with different outcomes, is an elimination (the judge did not
    give one clear answer); ids nobody asked about are ignored.
    """
    seen: dict[str, list[Verdict]] = defaultdict(list)
    for verdict in verdicts:
        seen[verdict.id].append(verdict)
    result: dict[str, Verdict | Rejected] = {}
    for item_id in ids:
        found = seen.get(item_id, [])
        if not found:
            result[item_id] = Rejected("judge_missing_verdict", f"the judge gave no verdict for item {item_id}")
        elif len({(v.improved, v.score) for v in found}) > 1:
            result[item_id] = Rejected("judge_conflicting_verdicts", f"the judge gave {len(found)} different verdicts for item {item_id}")
        else:
            result[item_id] = found[0]
    return result


def parse_structured(completion: Completion, schema: type[BaseModel]) -> BaseModel | Rejected:
    """The validated object of a structured reply: the backend's parse when it made one, else repair the text."""
    if completion.parsed and isinstance(completion.parsed[0], schema):
        return completion.parsed[0]
    text = completion.text
    if not text.strip():
        return Rejected("empty_reply", "the model returned no text")
    from synth.llm.structured import parse_structured as parse_reply

    value, problem = parse_reply(text, schema)
    if value is None:
        return Rejected("unparseable", f"{problem}: {text[:200]!r}")
    return value


def failure_reason(completion: Completion) -> str:
    """A failed request: the reply never matched the schema (after re-asks), or the call itself failed."""
    return "unparseable" if (completion.error or "").startswith("invalid structured output") else "llm_failure"


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
    min_judge_score: int = Field(default=1, ge=1, le=10, description="an 'improved' verdict below this is eliminated")

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


# ---------------------------------------------------------------- operator choice


def unit_hash(*parts: Any) -> float:
    """A number in [0, 1) fixed by its parts: choices that do not change between runs or machines."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick_weighted(weights: dict[str, float], *key: Any) -> str:
    """The option whose cumulative weight covers `unit_hash(*key)`; zero weights are never chosen."""
    options = [(name, w) for name, w in weights.items() if w > 0]
    total = sum(w for _, w in options)
    point = unit_hash(*key) * total
    for name, weight in options:
        point -= weight
        if point < 0:
            return name
    return options[-1][0]


def check_weights(weights: dict[str, float], known: Iterable[str], what: str) -> dict[str, float]:
    known = list(known)
    unknown = [name for name in weights if name not in known]
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(unknown)} (known: {', '.join(known)})")
    if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
        raise ValueError(f"{what} weights must be >= 0 with at least one above 0")
    return weights


# ---------------------------------------------------------------- versions and the report


@dataclass
class Version:
    """One version of one sample: the seed (round 0) or an accepted evolution."""

    root_id: str
    fields: dict[str, Any]  # engine-specific: instruction/answer, or question/answer/steps/...
    round: int = 0
    operator: str | None = None
    id: str = ""
    parent_id: str | None = None
    judge: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the interaction form chosen
    chain: list[dict[str, Any]] = field(default_factory=list)  # ancestors, oldest first
    seed: dict[str, Any] = field(default_factory=dict)  # engine context shared by all versions (image, caption)
    seed_meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvolutionReport:
    """What a run did: the end-of-run table, printed by the CLI and stored beside the output."""

    method: str
    seeds: int = 0
    seeds_skipped: Counter = field(default_factory=Counter)
    generated: int = 0  # evolutions attempted (one per sample per round)
    kept: int = 0
    eliminated: Counter = field(default_factory=Counter)
    per_operator: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    per_round: dict[int, Counter] = field(default_factory=lambda: defaultdict(Counter))
    forms: Counter = field(default_factory=Counter)
    tokens: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    written: int = 0

    def attempt(self, operator: str, round_: int) -> None:
        self.generated += 1
        self.per_operator[operator]["generated"] += 1
        self.per_round[round_]["generated"] += 1

    def keep(self, operator: str, round_: int) -> None:
        self.kept += 1
        self.per_operator[operator]["kept"] += 1
        self.per_round[round_]["kept"] += 1

    def eliminate(self, operator: str, round_: int, reason: str) -> None:
        self.eliminated[reason] += 1
        self.per_operator[operator]["eliminated"] += 1
        self.per_round[round_]["eliminated"] += 1

    def add_usage(self, phase: str, completion: Completion) -> None:
        self.tokens[phase]["requests"] += 1
        self.tokens[phase]["prompt_tokens"] += completion.usage.prompt_tokens
        self.tokens[phase]["completion_tokens"] += completion.usage.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "seeds": self.seeds,
            "seeds_skipped": dict(self.seeds_skipped),
            "generated": self.generated,
            "kept": self.kept,
            "eliminated": dict(self.eliminated.most_common()),
            "per_operator": {op: dict(c) for op, c in sorted(self.per_operator.items())},
            "per_round": {str(r): dict(c) for r, c in sorted(self.per_round.items())},
            "interaction_forms": dict(self.forms.most_common()),
            "tokens": {phase: dict(c) for phase, c in sorted(self.tokens.items())},
            "written": self.written,
        }


# ---------------------------------------------------------------- the round loop


class EvolutionConfig(StageConfig):
    rounds: int = Field(default=3, ge=1, le=20)
    seed: int = 0
    output: str = Field(
        default="all", pattern="^(all|final)$", description="'all': every kept evolution; 'final': the last version per seed"
    )
    include_seeds: bool = Field(default=False, description="also write the unevolved seeds (round 0)")
    judge: bool = Field(default=True, description="ask the LLM judge; off = rule-based elimination only")
    judge_batch_size: int = Field(default=4, ge=1, le=32, description="items judged per request")
    chunk_size: int = Field(default=256, ge=1, description="samples evolved together through all rounds")
    temperature: float = 0.7
    judge_temperature: float = 0.0
    max_tokens: int = 1024
    judge_max_tokens: int = 512


class EvolutionStage(LLMStage):
    """Evolves each seed for `rounds` rounds; subclasses supply the prompts and the rules.

    Per round and sample: pick an operator (deterministic from seed, sample id and round), ask the LLM
    to evolve (`format_input` / `format_output`), apply the rules (`check_candidate`), ask the judge in
    batches (`format_judge_input` / `parse_judge_output`), then `finish` (e.g. answer the new prompt).
    A candidate that fails any step is eliminated and the sample keeps its previous version.
    """

    method: ClassVar[str] = "evolve"
    operators: ClassVar[tuple[str, ...]] = ()

    def __init__(self, backend: Backend | None, config=None, progress=None, **overrides):
        # backend None: only the format_*/parse_* methods can be used (tests, prompt previews).
        super().__init__(backend, config, **overrides)
        self.report = EvolutionReport(self.method)
        self.progress = progress  # a synth.progress bar, or None for silence

    # -- to implement ---------------------------------------------------------------------------------

    def seed_version(self, record: dict) -> Version | Rejected:
        raise NotImplementedError

    def choose_operator(self, version: Version, round_: int) -> str:
        return pick_weighted(self.config.operators, self.config.seed, version.root_id, round_, "operator")

    def format_input(self, version: Version, operator: str, round_: int) -> ChatRequest:  # type: ignore[override]
        raise NotImplementedError

    def format_output(self, version: Version, operator: str, round_: int, completion: Completion) -> Version | Rejected:  # type: ignore[override]
        raise NotImplementedError

    def check_candidate(self, previous: Version, candidate: Version) -> Rejected | None:
        return None

    def format_judge_input(self, pairs: Sequence[tuple[str, Version, Version]]) -> ChatRequest:
        raise NotImplementedError

    def parse_judge_output(self, ids: Sequence[str], completion: Completion) -> dict[str, Verdict | Rejected]:
        raise NotImplementedError

    def judge_batch_size(self) -> int:
        return self.config.judge_batch_size

    def judge_rule(self, verdict: Verdict) -> Rejected | None:
        if not verdict.improved:
            return Rejected("judge_not_improved", f"score {verdict.score}: {verdict.reason}"[:300])
        if verdict.score < self.config.rules.min_judge_score:
            return Rejected("judge_low_score", f"score {verdict.score} < {self.config.rules.min_judge_score}")
        return None

    def finish(self, pairs: list[tuple[Version, Version]], round_: int) -> list[Version | Rejected]:
        """Last step for candidates that passed the judge (Evol-Instruct answers them here)."""
        return [candidate for _, candidate in pairs]

    def to_record(self, version: Version) -> dict:
        raise NotImplementedError

    # -- the loop -------------------------------------------------------------------------------------

    def run(self, records: Iterable[dict]) -> Iterator[dict]:
        chunk: list[dict] = []
        for record in records:
            chunk.append(record)
            if len(chunk) >= self.config.chunk_size:
                yield from self._evolve_chunk(chunk)
                chunk = []
        if chunk:
            yield from self._evolve_chunk(chunk)

    def _evolve_chunk(self, records: list[dict]) -> Iterator[dict]:
        current: list[Version] = []
        for record in records:
            self.report.seeds += 1
            version = self.seed_version(record)
            if isinstance(version, Rejected):
                self.report.seeds_skipped[version.reason] += 1
                self._account(record, version)
                continue
            self.stats.seen += 1
            current.append(version)
            if self.config.include_seeds:
                yield self._emit(version)
        for round_ in range(1, self.config.rounds + 1):
            accepted = self._round(current, round_)
            for i, candidate in accepted.items():
                current[i] = candidate
                if self.config.output == "all":
                    yield self._emit(candidate)
        if self.config.output == "final":
            for version in current:
                if version.round > 0:
                    yield self._emit(version)

    def _emit(self, version: Version) -> dict:
        self.stats.kept += 1
        self.report.written += 1
        return self.to_record(version)

    def _eliminate(self, version: Version, operator: str, round_: int, rejected: Rejected) -> None:
        self.report.eliminate(operator, round_, rejected.reason)
        self.stats.dropped[rejected.reason] += 1
        detail = f"round {round_}, {operator}: {rejected.detail}"
        self.rejects.write({"id": version.id}, self.name, Rejected(rejected.reason, detail))

    def _call(self, phase: str, round_: int, requests: list[ChatRequest]) -> list[Completion]:
        if not requests:
            return []
        if self.progress is None:
            completions = self.backend.complete(requests)
        else:
            task = self.progress.add_task(f"round {round_}/{self.config.rounds} {phase}", total=len(requests), tokens="")

            def advance(completion: Completion) -> None:
                self.progress.advance(task)

            completions = self.backend.complete(requests, progress=advance)
        for completion in completions:
            self.report.add_usage(phase, completion)
        return completions

    def _round(self, current: list[Version], round_: int) -> dict[int, Version]:
        """One round over all current versions; returns the accepted candidates by position."""
        operators = [self.choose_operator(v, round_) for v in current]
        for operator in operators:
            self.report.attempt(operator, round_)
        requests = [self.format_input(v, op, round_) for v, op in zip(current, operators, strict=True)]
        completions = self._call("evolve", round_, requests)
        alive: dict[int, Version] = {}
        for i, (version, operator, completion) in enumerate(zip(current, operators, completions, strict=True)):
            if not completion.ok:
                candidate: Version | Rejected = Rejected(failure_reason(completion), completion.error or "")
            else:
                candidate = self.format_output(version, operator, round_, completion)
            if not isinstance(candidate, Rejected):
                candidate = self.check_candidate(version, candidate) or candidate
            if isinstance(candidate, Rejected):
                self._eliminate(version, operator, round_, candidate)
            else:
                alive[i] = candidate
        if self.config.judge and alive:
            alive = self._judge(current, alive, operators, round_)
        positions = list(alive)
        finished = self.finish([(current[i], alive[i]) for i in positions], round_)
        accepted: dict[int, Version] = {}
        for i, result in zip(positions, finished, strict=True):
            if isinstance(result, Rejected):
                self._eliminate(current[i], operators[i], round_, result)
                continue
            result.id = self.version_id(result)
            accepted[i] = result
            self.report.keep(operators[i], round_)
        return accepted

    def _judge(self, current: list[Version], alive: dict[int, Version], operators: list[str], round_: int) -> dict[int, Version]:
        positions = list(alive)
        size = self.judge_batch_size()
        batches = [positions[k : k + size] for k in range(0, len(positions), size)]
        # Short labels ("1", "2", ...) are easier for a model to copy back than content hashes.
        labelled = [[(str(n + 1), i) for n, i in enumerate(batch)] for batch in batches]
        requests = [self.format_judge_input([(label, current[i], alive[i]) for label, i in batch]) for batch in labelled]
        completions = self._call("judge", round_, requests)
        survivors: dict[int, Version] = {}
        for batch, completion in zip(labelled, completions, strict=True):
            ids = [label for label, _ in batch]
            if not completion.ok:
                reason = "judge_" + ("unparseable" if failure_reason(completion) == "unparseable" else "failure")
                outcome: dict[str, Verdict | Rejected] = {label: Rejected(reason, completion.error or "") for label in ids}
            else:
                outcome = self.parse_judge_output(ids, completion)
            for label, i in batch:
                verdict = outcome[label]
                if isinstance(verdict, Verdict):
                    alive[i].judge = {"improved": verdict.improved, "score": verdict.score, "reason": verdict.reason}
                    verdict = self.judge_rule(verdict)
                if isinstance(verdict, Rejected):
                    self._eliminate(current[i], operators[i], round_, verdict)
                else:
                    survivors[i] = alive[i]
        return survivors

    # -- helpers for subclasses -----------------------------------------------------------------------

    def version_id(self, version: Version) -> str:
        record = self.to_record(version)
        return content_id(record["messages"], record.get("images") or [])

    def child(self, parent: Version, operator: str, round_: int, fields: dict[str, Any], **extra: Any) -> Version:
        """A candidate evolved from `parent` (its id is set once it is accepted)."""
        link = {"round": parent.round, "id": parent.id, "operator": parent.operator, **self.chain_fields(parent)}
        return Version(
            root_id=parent.root_id,
            fields=fields,
            round=round_,
            operator=operator,
            parent_id=parent.id,
            extra=extra,
            chain=[*parent.chain, link],
            seed=parent.seed,
            seed_meta=parent.seed_meta,
        )

    def chain_fields(self, version: Version) -> dict[str, Any]:
        """What of each ancestor is kept in `meta.chain` (the text that changed)."""
        return {}

    def lineage(self, version: Version) -> dict[str, Any]:
        """The `meta` of an output record: where it came from and what judged it."""
        meta: dict[str, Any] = {
            "source": self.method,
            "operator": version.operator,
            "round": version.round,
            "parent_id": version.parent_id,
            "root_id": version.root_id,
            "model": self.backend.model_name if self.backend is not None else None,
            "chain": version.chain,
        }
        if version.judge is not None:
            meta["judge"] = version.judge
            meta["scores"] = {"evol_judge": float(version.judge["score"])}
        if version.seed_meta:
            meta["seed_meta"] = version.seed_meta
        meta.update(version.extra)
        return meta


# ---------------------------------------------------------------- dataset in, dataset out


def report_path(out: str | Path) -> Path:
    """Where `evolve` stores its end-of-run table, beside the output."""
    out = Path(out)
    return out.with_name(out.name + ".report.json")


def parse_weights(text: str | None, what: str) -> dict[str, float] | None:
    """``"deepen=2,concretize"`` → ``{"deepen": 2.0, "concretize": 1.0}`` (a name alone weighs 1)."""
    if text is None or not text.strip():
        return None
    weights: dict[str, float] = {}
    for item in text.split(","):
        name, _, value = item.strip().partition("=")
        if not name:
            continue
        try:
            weights[name.strip()] = float(value) if value.strip() else 1.0
        except ValueError:
            raise SynthError(f"{what}: weight {value!r} of '{name}' is not a number (write NAME=WEIGHT,NAME=WEIGHT)") from None
    return weights


def make_stage(method: str, backend: Backend | None, config: dict[str, Any], progress=None) -> EvolutionStage:
    """The engine for `method` ('evol-instruct' or 'mmevol'); bad options become one clear error."""
    from synth.generate.evol_instruct import EvolInstruct
    from synth.generate.mmevol import MMEvol

    engines = {"evol-instruct": EvolInstruct, "mmevol": MMEvol}
    if method not in engines:
        raise SynthError(f"unknown method '{method}'; use one of: {', '.join(engines)}")
    try:
        return engines[method](backend, config, progress=progress)
    except ValidationError as e:
        raise SynthError(validation_message(e, f"{method} options")) from None


def evolve_dataset(
    source: str,
    out: str | Path,
    method: str,
    backend: Backend,
    config: dict[str, Any] | None = None,
    split: str | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    progress=None,
) -> EvolutionReport:
    """Evolve the seeds in `source` and write the kept samples to `out` (SFT layout, atomic), the
    eliminated evolutions to ``OUT.rejects.jsonl`` and the end-of-run table to ``OUT.report.json``."""
    from datasets import Dataset

    from synth.io import check_output, dataset_base_dir, read_dataset, rejects_path, write_dataset, write_json
    from synth.records import row_to_sample, sample_to_row, sft_features

    out = check_output(out, overwrite)
    config = dict(config or {})
    if method == "mmevol" and Path(source).exists():
        config.setdefault("base_dir", str(dataset_base_dir(source)))
    stage = make_stage(method, backend, config, progress)
    dataset = read_dataset(source, split)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    records = list(run_stages([stage], iter(dataset), rejects_path(out)))
    multimodal = method == "mmevol"
    rows = [sample_to_row(row_to_sample(r), multimodal) for r in records]
    features = sft_features(multimodal)
    # from_list cannot infer columns from no rows: an empty result still gets the SFT columns.
    table = Dataset.from_list(rows, features=features) if rows else Dataset.from_dict({k: [] for k in features}, features=features)
    write_dataset(table, out, overwrite=overwrite)
    summary = {
        **stage.report.as_dict(),
        "model": backend.model_name,
        "image_input": "image" if getattr(stage, "show_image", False) else "text",
        "usage": backend.usage.as_dict(),
        "config": stage.config.model_dump(mode="json"),
    }
    if method == "evol-instruct":
        summary.pop("image_input")
    write_json(summary, report_path(out))
    return stage.report
