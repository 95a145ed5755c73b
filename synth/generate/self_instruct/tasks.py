"""The per-task LLM steps of Self-Instruct (steps 2 and 3): classification detection and instances."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import ClassVar

from synth.generate.self_instruct.config import SelfInstructConfig
from synth.generate.self_instruct.parsing import parse_instances, parse_yes_no
from synth.generate.self_instruct.prompts import build_messages
from synth.generate.self_instruct.seeds import SeedTask
from synth.llm.base import Backend, ChatRequest, Completion
from synth.pipeline import Rejected
from synth.pipeline.llm_task import LLMTask


class ClassifyTasks(LLMTask):
    """Adds ``is_classification`` to task records (few-shot yes/no). An unclear reply counts as "no"
    (input-first instances work for any task) and is noted in ``meta["classification_unclear"]``."""

    name = "self-instruct-classify"
    Config = SelfInstructConfig
    reads: ClassVar[tuple[str, ...]] = ("id", "instruction", "meta")
    writes: ClassVar[tuple[str, ...]] = ("is_classification", "meta")

    def __init__(
        self,
        backend: Backend,
        config: SelfInstructConfig | dict | None = None,
        progress: Callable | None = None,
        *,
        seeds: list[SeedTask],
        style: str = "chat",
        **overrides,
    ):
        super().__init__(backend, config, progress, **overrides)
        self.style = style
        self.examples = classification_examples(seeds, self.config.classification_examples)
        self.unclear = 0

    def format_input(self, record: dict) -> ChatRequest:
        messages = build_messages(
            "is_classification_task.jinja",
            "is_classification_examples.jinja",
            self.style,
            record_id=record["id"],
            examples=self.examples,
            instruction=record["instruction"],
        )
        return ChatRequest(messages=messages, temperature=0.0, max_tokens=8, key=record["id"])

    def format_output(self, record: dict, completion: Completion) -> dict:
        verdict = parse_yes_no(completion.text)
        meta = dict(record.get("meta") or {})
        if verdict is None:
            self.unclear += 1
            meta["classification_unclear"] = True
        return {**record, "is_classification": bool(verdict), "meta": meta}


def classification_examples(seeds: list[SeedTask], per_kind: int) -> list[SeedTask]:
    """A fixed, interleaved set of classification and other seed tasks (stable prompt, cache friendly)."""
    yes = [s for s in seeds if s.is_classification][:per_kind]
    no = [s for s in seeds if not s.is_classification][:per_kind]
    out: list[SeedTask] = []
    for i in range(max(len(yes), len(no))):
        out.extend(x[i] for x in (no, yes) if i < len(x))
    return out


def sent_presence_penalty(backend: Backend, value: float | None) -> float | None:
    """`value` where the backend applies a presence penalty, else None (the request says what is used)."""
    return value if getattr(backend, "supports_presence_penalty", False) else None


def instance_problem(instance: dict[str, str]) -> str | None:
    """Why the original pipeline would not use this instance, or None."""
    if not instance["output"].strip():
        return "empty_output"
    if instance["input"] == instance["output"]:
        return "input_equals_output"
    if instance["input"].strip().endswith(":") or instance["output"].strip().endswith(":"):
        return "ends_with_colon"  # usually a generation that stopped before its content
    return None


class GenerateInstances(LLMTask):
    """Adds ``instances`` ([{input, output}]) to classified task records: output-first for classification
    tasks, input-first otherwise.

    As published, an instance is dropped when its output is empty, equals its input, or a field ends with
    ":" (counted in `instance_drops`, exact repeats as ``duplicate_instance``); a task whose same non-empty
    input got two different outputs is rejected ("conflicting_outputs"), and one left with no instance is
    rejected ("no_instances"). At most `max_instances` are kept, in reply order.
    """

    name = "self-instruct-instances"
    Config = SelfInstructConfig
    reads: ClassVar[tuple[str, ...]] = ("id", "instruction", "is_classification")
    writes: ClassVar[tuple[str, ...]] = ("instances",)

    def __init__(
        self,
        backend: Backend,
        config: SelfInstructConfig | dict | None = None,
        progress: Callable | None = None,
        *,
        seeds: list[SeedTask],
        style: str = "chat",
        **overrides,
    ):
        super().__init__(backend, config, progress, **overrides)
        self.style = style
        self.classification_seeds = [s for s in seeds if s.is_classification] or seeds
        self.other_seeds = [s for s in seeds if not s.is_classification] or seeds
        self.instance_drops: Counter = Counter()

    def examples_for(self, record: dict) -> list[SeedTask]:
        pool = self.classification_seeds if record["is_classification"] else self.other_seeds
        # Seeded by the task id, so the same task gets the same prompt on a rerun (cache hits).
        rng = random.Random(f"{self.config.seed}:{record['id']}")
        return rng.sample(pool, min(self.config.instance_examples, len(pool)))

    def format_input(self, record: dict) -> ChatRequest:
        kind = "output_first" if record["is_classification"] else "input_first"
        messages = build_messages(
            f"instances_{kind}_task.jinja",
            f"instances_{kind}_examples.jinja",
            self.style,
            record_id=record["id"],
            examples=self.examples_for(record),
            instruction=record["instruction"],
        )
        cfg = self.config
        return ChatRequest(
            messages=messages,
            temperature=cfg.instance_temperature,
            top_p=cfg.instance_top_p,
            presence_penalty=sent_presence_penalty(self.backend, cfg.instance_presence_penalty),
            max_tokens=cfg.instance_max_tokens,
            stop=self.stops(record),
            seed=self.config.seed,
            key=record["id"],
        )

    def stops(self, record: dict) -> list[str]:
        """Stop at the next task; with one instance wanted, also at the second instance (saves tokens)."""
        stops = ["\nTask:"]
        if self.config.max_instances == 1:
            stops.append("\nLabel:" if record["is_classification"] else "\nInput:")
        return stops

    def format_output(self, record: dict, completion: Completion) -> dict | Rejected:
        truncated = completion.finish_reasons[:1] == ["length"]
        instances = parse_instances(completion.text, output_first=record["is_classification"])
        if truncated and instances:
            instances.pop()  # the last output may be cut off
        drops: Counter = Counter()
        valid = []
        for instance in instances:
            problem = instance_problem(instance)
            if problem:
                drops[problem] += 1
            else:
                valid.append(instance)
        outputs: dict[str, str] = {}
        for instance in valid:
            first = outputs.setdefault(instance["input"], instance["output"])
            if instance["input"] and first != instance["output"]:
                # The task is ambiguous or the model confused itself: none of its instances can be trusted.
                self.instance_drops.update(drops)
                return Rejected(
                    "conflicting_outputs",
                    f"{record['instruction']} -> input {instance['input'][:80]!r} got {first[:60]!r} and "
                    f"{instance['output'][:60]!r}",
                )
        kept, seen = [], set()
        for instance in valid:
            pair = (instance["input"], instance["output"])
            if pair in seen:
                drops["duplicate_instance"] += 1
                continue
            seen.add(pair)
            kept.append(instance)
        self.instance_drops.update(drops)
        if not kept:
            reply = completion.text.strip().replace("\n", " ")[:160]
            why = f" (dropped: {', '.join(f'{k} {v}' for k, v in drops.items())})" if drops else ""
            return Rejected("no_instances", f"{record['instruction']} -> {reply!r}{why}")
        return {**record, "instances": kept[: self.config.max_instances]}
