"""The round loop both evolution engines share (`EvolutionStage`), their shared config and `Version`.

Per round and sample: pick an operator (fixed by seed, sample id and round), ask the LLM to evolve, apply
the engine's rules, ask the judge in batches, then `finish` (Evol-Instruct answers the new prompt there).
Each step's outcome for a candidate is one of:

- kept: it becomes the sample's current version;
- eliminated (`Rejected`): a decision about the output, counted by reason and written to ``rejects.jsonl``;
- failed (`Failed`): the request did not come back usable (backend error, unparseable after re-asks);
  counted apart, written to ``failures.jsonl``, never cached, so the next run asks again.

Either way the sample keeps its previous version for the next round.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import Field

from synth.generate.evolution.elimination import Verdict
from synth.generate.evolution.operators import pick_weighted
from synth.generate.evolution.report import EvolutionReport
from synth.llm.base import Backend, ChatRequest, Completion
from synth.pipeline import Failed, Rejected, StageConfig, batched
from synth.pipeline.llm_task import LLMTask, failure_of
from synth.records import content_id

Outcome = Rejected | Failed


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


class EvolutionConfig(StageConfig):
    rounds: int = Field(default=3, ge=1, le=20, description="evolution rounds per seed")
    seed: int = Field(default=0, description="seed of each sample's operator per round (and of mmevol's drawn forms)")
    output: str = Field(
        default="all", pattern="^(all|final)$", description="'all': every kept evolution; 'final': the last version per seed"
    )
    include_seeds: bool = Field(default=False, description="also write the unevolved seeds (round 0)")
    judge: bool = Field(default=True, description="ask the LLM judge; off = rule-based elimination only")
    judge_batch_size: int = Field(default=4, ge=1, le=32, description="items judged per request")
    chunk_size: int = Field(default=256, ge=1, description="samples evolved together through all rounds")
    temperature: float = Field(default=0.7, ge=0, description="sampling temperature of the evolution requests")
    judge_temperature: float = Field(default=0.0, ge=0, description="sampling temperature of the judge requests")
    max_tokens: int = Field(default=1024, ge=1, description="token limit of each evolution reply")
    judge_max_tokens: int = Field(default=512, ge=1, description="token limit of each judge reply")


class EvolutionStage(LLMTask):
    """Evolves each seed for `rounds` rounds; the engines supply prompts, parsing and rules.

    Unlike a one-request-per-record `LLMTask`, each record takes several requests (an evolution per round,
    a share of a judge batch, an answer), so `run` drives the rounds over chunks of `chunk_size` seeds and
    the engines implement the phase methods below instead of `format_input` / `format_output`.
    """

    method: ClassVar[str] = "evolve"
    operators: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ("messages", "id", "meta")
    #: the name of the `finish` step in counts and failure lines
    finish_phase: ClassVar[str] = "finish"
    #: requests the `finish` step sends per kept candidate (Evol-Instruct answers each)
    finish_requests: ClassVar[int] = 0

    def __init__(self, backend: Backend | None, config=None, progress=None, **overrides):
        # backend None: only the format_*/parse_* methods can be used (tests, prompt previews).
        super().__init__(backend, config, progress, **overrides)
        self.report = EvolutionReport(self.method)

    # -- to implement ---------------------------------------------------------------------------------

    def seed_version(self, record: dict) -> Version | Rejected:
        raise NotImplementedError

    def choose_operator(self, version: Version, round_: int) -> str:
        return pick_weighted(self.config.operators, self.config.seed, version.root_id, round_, "operator")

    def format_evolve_input(self, version: Version, operator: str, round_: int) -> ChatRequest:
        raise NotImplementedError

    def parse_evolve_output(self, version: Version, operator: str, round_: int, completion: Completion) -> Version | Outcome:
        raise NotImplementedError

    def check_candidate(self, previous: Version, candidate: Version) -> Rejected | None:
        return None

    def format_judge_input(self, pairs: Sequence[tuple[str, Version, Version]]) -> ChatRequest:
        raise NotImplementedError

    def parse_judge_output(self, ids: Sequence[str], completion: Completion) -> dict[str, Verdict | Outcome]:
        raise NotImplementedError

    def judge_batch_size(self) -> int:
        return self.config.judge_batch_size

    def judge_rule(self, verdict: Verdict) -> Rejected | None:
        if not verdict.improved:
            return Rejected("judge_not_improved", f"score {verdict.score}: {verdict.reason}"[:300])
        if verdict.score < self.config.rules.min_judge_score:
            return Rejected("judge_low_score", f"score {verdict.score} < {self.config.rules.min_judge_score}")
        return None

    def finish(self, pairs: list[tuple[Version, Version]], round_: int) -> list[Version | Outcome]:
        """Last step for candidates that passed the judge (Evol-Instruct answers them here)."""
        return [candidate for _, candidate in pairs]

    def to_record(self, version: Version) -> dict:
        raise NotImplementedError

    # -- the loop -------------------------------------------------------------------------------------

    def run(self, records: Iterable[dict]) -> Iterator[dict]:
        for chunk in batched(records, self.config.chunk_size):
            yield from self._evolve_chunk(chunk)

    def _evolve_chunk(self, records: list[dict]) -> Iterator[dict]:
        current: list[Version] = []
        for record in records:
            self.report.seeds += 1
            version = self.seed_version(record)
            if isinstance(version, Rejected):
                self.report.seeds_skipped[version.reason] += 1
                self.account(record, version)
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

    def _drop(self, version: Version, operator: str, round_: int, outcome: Outcome, phase: str) -> None:
        """An eliminated or failed candidate: counted, and one line in rejects.jsonl or failures.jsonl."""
        detail = f"round {round_}, {operator}: {outcome.detail}"
        extra = {"round": round_, "operator": operator, "phase": phase}
        if isinstance(outcome, Failed):
            self.report.fail(operator, round_, outcome.reason)
            self.stats.failed[outcome.reason] += 1
            self.failures.write(version.id, self.name, outcome.reason, detail, **extra)
        else:
            self.report.eliminate(operator, round_, outcome.reason)
            self.stats.dropped[outcome.reason] += 1
            self.rejects.write(version.id, self.name, outcome.reason, detail, **extra)

    def _call(self, phase: str, round_: int, requests: list[ChatRequest]) -> list[Completion]:
        if not requests:
            return []
        if self.progress is None:
            completions = self.backend.complete(requests)
        elif not hasattr(self.progress, "add_task"):  # a completion callback (a recipe run's live counters)
            completions = self.backend.complete(requests, progress=self.progress)
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
        requests = [self.format_evolve_input(v, op, round_) for v, op in zip(current, operators, strict=True)]
        completions = self._call("evolve", round_, requests)
        alive: dict[int, Version] = {}
        for i, (version, operator, completion) in enumerate(zip(current, operators, completions, strict=True)):
            if not completion.ok:
                candidate: Version | Outcome = failure_of(completion)
            else:
                candidate = self.parse_evolve_output(version, operator, round_, completion)
            self.answered += not isinstance(candidate, Failed)  # a reply that came back and parsed
            if isinstance(candidate, Version):
                candidate = self.check_candidate(version, candidate) or candidate
            if isinstance(candidate, Version):
                alive[i] = candidate
            else:
                self._drop(version, operator, round_, candidate, "evolve")
        if self.config.judge and alive:
            alive = self._judge(current, alive, operators, round_)
        positions = list(alive)
        finished = self.finish([(current[i], alive[i]) for i in positions], round_)
        accepted: dict[int, Version] = {}
        for i, result in zip(positions, finished, strict=True):
            if not isinstance(result, Version):
                self._drop(current[i], operators[i], round_, result, self.finish_phase)
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
                failed = failure_of(completion)
                outcome: dict[str, Verdict | Outcome] = {label: failed for label in ids}
            else:
                outcome = self.parse_judge_output(ids, completion)
            results = [(i, self.apply_judge(current[i], alive[i], outcome[label])) for label, i in batch]
            self.answered += any(not isinstance(result, Failed) for _, result in results)  # one request a batch
            for i, result in results:
                if isinstance(result, Version):
                    survivors[i] = result
                else:
                    self._drop(current[i], operators[i], round_, result, "judge")
        return survivors

    def apply_judge(self, previous: Version, candidate: Version, verdict: Any) -> Version | Outcome:
        """The candidate after its judge outcome (what `parse_judge_output` gave for its label), or why it
        is eliminated. An engine that judges several items per candidate (MMEvol) overrides this."""
        if isinstance(verdict, Verdict):
            candidate.judge = {"improved": verdict.improved, "score": verdict.score, "reason": verdict.reason}
            verdict = self.judge_rule(verdict)
        return candidate if verdict is None else verdict

    # -- what the CLI, the runner and a dry run ask of an operator ----------------------------------------

    @staticmethod
    def origin(record: dict) -> Any:
        """The seed id an output record (any version) came from: the runner keeps seed order by it."""
        from synth.records import load_meta

        meta = load_meta(record.get("meta"))
        return meta.get("root_id") or meta.get("parent_id")

    def preview_requests(self, records: list[dict]) -> list[ChatRequest]:
        """Round 1's evolution request of each record (a dry run shows them)."""
        requests = []
        for record in records:
            version = self.seed_version(record)
            if isinstance(version, Version):
                requests.append(self.format_evolve_input(version, self.choose_operator(version, 1), 1))
        return requests

    def requests_per_record(self) -> float:
        """At most this many requests per seed (a dry run's estimate; eliminated evolutions stop early): an
        evolution per round, a share of a judge request, the finish step's."""
        judged = 1 / self.judge_batch_size() if self.config.judge else 0
        return self.config.rounds * (1 + judged + self.finish_requests)

    def details(self) -> dict[str, Any]:
        """The evolution report: counts per round, operator and reason, tokens per step, the settings."""
        return {**self.report.as_dict(),
                "model": self.backend.model_name if self.backend is not None else None,
                "usage": self.backend.usage.as_dict() if self.backend is not None else {},
                "config": self.config.model_dump(mode="json")}

    # -- helpers for the engines ----------------------------------------------------------------------

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
