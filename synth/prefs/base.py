"""The preference stage: each strategy is a plan per prompt; the base runs a batch of plans together.

A strategy's `plan(item)` is a generator that yields the LLM requests it needs next (a list of
``(backend, ChatRequest)``), receives their completions, and finally returns an `Outcome`: the pairs it
made and what it dropped, each drop at its level (``prompt``, ``response`` or ``pair``). The base advances
all plans of a batch in lockstep, so each phase of every prompt in the batch goes to a backend as one call
(served concurrently), and strategies read as plain sequential code.

A request that fails (backend error, reply still unparseable after re-asks) ends that prompt's plan as a
`Failed`: the prompt goes to ``failures.jsonl``, nothing of it is written, and the next run retries it
(the request cache replays the requests that did succeed).

Input: SFT records or raw rows with QA / caption columns (see `synth.prefs.items`). Output: preference
records (``prompt``, ``chosen``, ``rejected``, ``images``, ``id``, ``meta``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BeforeValidator, Field

from synth.llm.base import Backend, ChatRequest, Completion
from synth.pipeline import Failed, Rejected, Stage, StageConfig, batched
from synth.pipeline.llm_task import failure_of
from synth.prefs.items import PromptItem, items_from_record, make_pair

Ask = tuple[Backend, ChatRequest]
Plan = Generator[list[Ask], list[Completion], "Outcome"]


@dataclass
class Drop:
    verdict: Rejected
    level: str = "prompt"  # prompt | response | pair
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    pairs: list[dict] = field(default_factory=list)
    drops: list[Drop] = field(default_factory=list)

    def drop(self, verdict: Rejected, level: str = "prompt", **extra: Any) -> Outcome:
        self.drops.append(Drop(verdict, level, extra))
        return self

    def add_pair(self, item: PromptItem, chosen_text: str, rejected_text: str, meta: dict[str, Any], **extra: Any) -> bool:
        """Add a pair unless chosen and rejected say the same (then a counted ``identical`` drop);
        `extra` goes into that drop's rejects line (e.g. which responses)."""
        pair = make_pair(item, chosen_text, rejected_text, meta)
        if isinstance(pair, Rejected):
            self.drop(pair, "pair", **extra)
            return False
        self.pairs.append(pair)
        return True


def _split_commas(value: Any) -> Any:
    """"a,b" or ["a,b", "c"] → ["a", "b", "c"] (the command line's comma lists); anything else as given."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return value
    return [part.strip() for v in value for part in (v.split(",") if isinstance(v, str) else [v])
            if not isinstance(part, str) or part.strip()]


T = TypeVar("T")
#: a list option that also takes a comma-separated string ("color,number")
CommaList = Annotated[list[T], BeforeValidator(_split_commas)]


class PrefsConfig(StageConfig):
    """Options every strategy has."""

    seed: int = Field(0, description="seed for sampling and for the deterministic choices of perturb")
    batch_size: int = Field(64, ge=1, description="prompts whose requests go to the backends together")


class PreferenceStage(Stage):
    """Base of the strategies (see the module docs)."""

    name: ClassVar[str] = "prefs"
    strategy: ClassVar[str] = ""
    Config: ClassVar[type[StageConfig]] = PrefsConfig
    #: True for a strategy that asks no LLM (it gets no samplers and no judge)
    offline: ClassVar[bool] = False
    #: the most samplers the strategy can use (None: any number)
    max_samplers: ClassVar[int | None] = None
    reads = ("messages", "images", "id", "meta")
    writes = ("prompt", "chosen", "rejected", "images", "id", "meta")

    def __init__(self, config=None, *, scenes=None, progress: Callable[[], None] | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.scenes = scenes
        self.progress = progress
        self.answered = 0  # completions that came back usable (check_not_all_failed)
        self.requests = 0
        self.prompts_with_pairs = 0
        self.pairs = 0

    @classmethod
    def from_parts(cls, config, *, samplers: list, judge: Backend | None, scenes=None) -> PreferenceStage:
        """The strategy from its config, who answers (`synth.prefs.sampling.Sampler`s) and who judges."""
        return cls(samplers, judge, config, scenes=scenes)

    # -- for strategies ---------------------------------------------------------------------------

    def plan(self, item: PromptItem) -> Plan:
        raise NotImplementedError
        yield []  # pragma: no cover - makes this a generator

    def models(self) -> dict[str, Any]:
        """Which models the strategy used (for report.json)."""
        return {}

    # -- running ----------------------------------------------------------------------------------

    def prepare(self, source) -> None:
        """Called once with the whole opened input before any record (perturb learns its vocabulary)."""

    def preview_requests(self, records: list[dict]) -> list[ChatRequest]:
        """The first requests of each prompt of `records` (what a dry run shows); nothing is sent."""
        requests = []
        for record in records:
            items = items_from_record(record, self.scenes)
            for item in [] if isinstance(items, Rejected) else items:
                requests += self._first_requests(item)
        return requests

    def requests_per_record(self) -> int:
        """About how many requests a prompt costs (the dry run's estimate): one, or for a strategy that
        samples n responses, the samples and a judge request per response (claims asks more)."""
        n = getattr(self.config, "n", None)
        return n + 1 if n else 1

    def _first_requests(self, item: PromptItem) -> list[ChatRequest]:
        plan = self.plan(item)
        try:
            return [request for _backend, request in next(plan)]
        except StopIteration:  # a plan that asks nothing
            return []
        finally:
            plan.close()

    def items(self, records: Iterable[dict]) -> Iterator[PromptItem]:
        for record in records:
            items = items_from_record(record, self.scenes)
            if isinstance(items, Rejected):
                self.stats.seen += 1
                self.reject(record, items, level="prompt")
                if self.progress:
                    self.progress()
                continue
            yield from items

    def run(self, records: Iterable[dict]) -> Iterator[dict]:
        for batch in batched(self.items(records), self.config.batch_size):
            yield from self.run_batch(batch)

    def run_batch(self, batch: list[PromptItem]) -> Iterator[dict]:
        results: list[Outcome | Failed | None] = [None] * len(batch)
        plans: dict[int, Plan] = {}
        pending: dict[int, list[Ask]] = {}
        for i, item in enumerate(batch):
            plans[i] = self.plan(item)
            self._advance(i, plans, pending, results, None)
        while pending:
            answers = self._ask_all(pending)
            for i in list(pending):
                completions = answers[i]
                del pending[i]
                bad = next((c for c in completions if not c.ok), None)
                if bad is not None:
                    plans.pop(i).close()
                    results[i] = failure_of(bad)
                    continue
                self._advance(i, plans, pending, results, completions)
        for item, result in zip(batch, results):
            yield from self.finish(item, result)

    def _advance(self, i, plans, pending, results, completions) -> None:
        plan = plans[i]
        try:
            asks = next(plan) if completions is None else plan.send(completions)
            while not asks:  # a phase with nothing to ask: go on at once
                asks = plan.send([])
        except StopIteration as done:
            plans.pop(i)
            results[i] = done.value if done.value is not None else Outcome()
            return
        pending[i] = asks

    def _ask_all(self, pending: dict[int, list[Ask]]) -> dict[int, list[Completion]]:
        """Send every pending request, one call per backend, and hand each plan its completions."""
        groups: dict[int, tuple[Backend, list[tuple[int, int]], list[ChatRequest]]] = {}
        for i, asks in pending.items():
            for k, (backend, request) in enumerate(asks):
                group = groups.setdefault(id(backend), (backend, [], []))
                group[1].append((i, k))
                group[2].append(request)
        answers: dict[int, list[Completion | None]] = {i: [None] * len(asks) for i, asks in pending.items()}
        for backend, where, requests in groups.values():
            completions = backend.complete(requests)
            self.requests += len(requests)
            for (i, k), completion in zip(where, completions, strict=True):
                if completion.ok:
                    self.answered += 1
                answers[i][k] = completion
        return answers  # type: ignore[return-value]

    def finish(self, item: PromptItem, result: Outcome | Failed | None) -> list[dict]:
        self.stats.seen += 1
        if self.progress:
            self.progress()
        if isinstance(result, Failed):
            self.fail(item.stub, result)
            return []
        outcome = result or Outcome()
        for drop in outcome.drops:
            self.reject(item.stub, drop.verdict, level=drop.level, **drop.extra)
        if outcome.pairs:
            self.stats.kept += 1
            self.prompts_with_pairs += 1
            self.pairs += len(outcome.pairs)
        for pair in outcome.pairs:
            pair["meta"] = {**pair["meta"], "strategy": self.strategy}
        return outcome.pairs

    def report(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "prompts": self.stats.seen,
            "prompts_with_pairs": self.prompts_with_pairs,
            "pairs": self.pairs,
            "requests": self.requests,
            "dropped": dict(self.stats.dropped),
            "failed": dict(self.stats.failed),
            "models": self.models(),
        }
