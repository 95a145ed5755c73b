"""The Self-Instruct run (`SelfInstruct`) and writing it (`run_self_instruct`, `write_self_instruct`).

1. **Instructions**: rounds of `concurrency` requests, each showing a few seed and machine-written tasks
   and asking for more, until `count` instructions pass the filters (`filters`).
2. **Classification detection** and 3. **instances** (`tasks`).

The output folder holds the SFT dataset (user = instruction (+ input), assistant = output, lineage in
``meta``) and, inside it, ``rejects.jsonl``, ``failures.jsonl`` (requests that failed: retried by the next
run), ``report.json`` (the counts of the end-of-run table), ``usage.json`` and
``self_instruct_tasks.jsonl`` (the kept instructions with their instances).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from synth.data import REJECTS, REPORT, USAGE, OutputFolder, check_output, write_records
from synth.errors import SynthError
from synth.generate.self_instruct.config import SelfInstructConfig
from synth.generate.self_instruct.filters import InstructionFilter
from synth.generate.self_instruct.parsing import parse_numbered_list
from synth.generate.self_instruct.prompts import PROMPTS, build_messages, resolve_prompt_style
from synth.generate.self_instruct.seeds import SeedTask, instruction_id, load_seed_tasks
from synth.generate.self_instruct.tasks import ClassifyTasks, GenerateInstances, sent_presence_penalty
from synth.llm.base import Backend, ChatRequest, Completion
from synth.pipeline.llm_task import LLMTask, check_not_all_failed, failure_of
from synth.records import Message, Sample
from synth.templating import render_file

TASKS_FILE = "self_instruct_tasks.jsonl"


@dataclass
class SelfInstructResult:
    tasks: list[dict]  # kept instructions with is_classification and instances
    samples: list[Sample]
    stats: dict[str, Any] = field(default_factory=dict)


class SelfInstruct(LLMTask):
    """Bootstrap new instruction data from seed tasks with an LLM (Self-Instruct, Wang et al. 2023).

    Rounds of instruction requests until `count` new instructions pass the filters (a global ROUGE-L
    novelty loop), then classification and instances; the published pipeline's filters and sampling by
    default. It reads no dataset: `run()` yields SFT records, `stats` says what happened. Its steps share
    this stage's `rejects` and `failures` logs; the output folder also gets self_instruct_tasks.jsonl.
    """

    name = "self_instruct"
    Config = SelfInstructConfig
    writes: ClassVar[tuple[str, ...]] = ("messages", "id", "meta")
    #: it reads no dataset: its records come from its seed tasks
    needs_input: ClassVar[bool] = False
    output_kind: ClassVar[str] = "sft"
    #: the flags `synth self-instruct` has always had
    cli_flags: ClassVar[dict[str, list[str]]] = {
        "instruction_max_tokens": ["--max-tokens"],
        "text_only": ["--text-only/--multimodal"],
        "responses": ["--responses/--instance-outputs"],
    }

    def __init__(
        self,
        backend: Backend,
        config: SelfInstructConfig | dict | None = None,
        progress: Callable | None = None,
        *,
        seeds: list[SeedTask] | None = None,
        show_progress: bool | None = None,
        **overrides: Any,
    ):
        super().__init__(backend, config, progress, **overrides)
        self.seeds = seeds if seeds is not None else load_seed_tasks(self.config.seeds)
        if not self.seeds:
            raise SynthError("Self-Instruct needs at least one seed task")
        self.style = resolve_prompt_style(self.config, backend)
        # its own bars, unless it reports to a caller's progress (a recipe run's live view)
        self.show_progress = progress is None if show_progress is None else show_progress
        self.filter = InstructionFilter(self.config)
        self.filter.prime(s.instruction for s in self.seeds)
        self.classify = ClassifyTasks(backend, self.config, seeds=self.seeds, style=self.style)
        self.instances = GenerateInstances(backend, self.config, seeds=self.seeds, style=self.style)
        self.generation = Counter()  # requests, failed requests, empty replies, parsed items, ...
        self.rounds = 0
        self.classified: list[dict] = []
        self._tasks: list[dict] = []  # tasks with their instances
        self.responder = None  # the response stage, when `responses` is set
        self.result: SelfInstructResult | None = None

    def steps(self) -> list:
        return [s for s in (self.filter, self.classify, self.instances, self.responder) if s is not None]

    def _share_logs(self) -> None:
        for step in self.steps():
            step.rejects, step.failures = self.rejects, self.failures

    # ------------------------------------------------------------ step 1: instructions

    def instruction_request(self, examples: list[tuple[str, str]], index: int) -> ChatRequest:
        """A request showing `examples` ((id, instruction) pairs) and asking for new ones."""
        cfg = self.config
        next_number = len(examples) + 1
        messages = build_messages(
            "instructions_task.jinja",
            "instructions_examples.jinja",
            self.style,
            tasks=[text for _, text in examples],
            next_number=next_number,
            num_new=cfg.new_per_request,
        )
        return ChatRequest(
            messages=messages,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            presence_penalty=sent_presence_penalty(self.backend, cfg.presence_penalty),
            max_tokens=cfg.instruction_max_tokens,
            stop=[f"\n{next_number + cfg.new_per_request}."],
            seed=cfg.seed * 1_000_003 + index,
            key=f"instructions-{index}",
        )

    def _pick_examples(self, rng: random.Random, machine: list[dict]) -> list[tuple[str, str]]:
        cfg = self.config
        from_machine = rng.sample(machine, min(cfg.machine_examples, len(machine)))
        want_seeds = cfg.seed_examples + cfg.machine_examples - len(from_machine)
        from_seeds = rng.sample(self.seeds, min(want_seeds, len(self.seeds)))
        examples = [(s.task_id(), s.instruction) for s in from_seeds]
        examples += [(t["id"], t["instruction"]) for t in from_machine]
        rng.shuffle(examples)
        return examples

    def generate_instructions(self, bar=None) -> list[dict]:
        """Bootstrap rounds until `count` instructions are kept (or `patience` rounds keep nothing); `bar`:
        a `synth.progress.progress()` to show them on."""
        cfg = self.config
        rng = random.Random(cfg.seed)
        kept: list[dict] = []
        idle_rounds = 0
        request_index = 0
        task = bar.add_task("instructions", total=cfg.count, tokens="") if bar is not None else None
        while len(kept) < cfg.count:
            if cfg.max_rounds is not None and self.rounds >= cfg.max_rounds:
                break
            self.rounds += 1
            picks, requests = [], []
            for _ in range(cfg.concurrency):
                examples = self._pick_examples(rng, kept)
                picks.append(examples)
                requests.append(self.instruction_request(examples, request_index))
                request_index += 1
            completions = self.backend.complete(requests)
            before = len(kept)
            for examples, request, completion in zip(picks, requests, completions, strict=True):
                for record in self._candidates(examples, request, completion):
                    if len(kept) >= cfg.count:
                        self.generation["surplus"] += 1
                        continue
                    kept.extend(self.filter.run([record]))  # counted, and rejects written
            if task is not None:
                bar.update(task, completed=len(kept), tokens=_tokens(self.backend))
            idle_rounds = idle_rounds + 1 if len(kept) == before else 0
            if idle_rounds >= cfg.patience:
                break
        if task is not None:
            bar.stop_task(task)
        self.generation["kept"] = len(kept)
        return kept

    def _candidates(self, examples: list[tuple[str, str]], request: ChatRequest, completion: Completion) -> Iterator[dict]:
        self.generation["requests"] += 1
        if not completion.ok:
            self.generation["failed_requests"] += 1
            self.fail({"id": request.key}, failure_of(completion), round=self.rounds)
            return
        self.answered += 1
        if not completion.text.strip():
            self.generation["empty_replies"] += 1
            return
        truncated = completion.finish_reasons[:1] == ["length"]
        # A chat model must answer with a numbered list; a base model continues the open item first.
        items, dropped = parse_numbered_list(
            completion.text, open_item=True, truncated=truncated, require_numbered=self.style == "chat"
        )
        self.generation["truncated_items"] += dropped
        if not items:
            self.generation["unparseable_replies"] += 1
            return
        self.generation["parsed"] += len(items)
        for item in items:
            yield {
                "id": instruction_id(item),
                "instruction": item,
                "meta": {"round": self.rounds, "examples": [eid for eid, _ in examples]},
            }

    # ------------------------------------------------------------ what the CLI, the runner and a dry run ask

    @classmethod
    def fingerprint_extra(cls, config: SelfInstructConfig):
        """The shipped seed tasks' content, when the config names no seed file (a named one is hashed anyway)."""
        from synth.core.fields import content_digest
        from synth.generate.self_instruct.seeds import default_seed_path

        return None if config.seeds else content_digest(default_seed_path())

    def preview_requests(self, records: list[dict]) -> list[ChatRequest]:
        """The first instruction request (a dry run shows it)."""
        return [self.instruction_request(self._pick_examples(random.Random(self.config.seed), []), 0)]

    def requests_per_record(self) -> int:
        """All the requests of a run (it reads no records; a dry run's estimate): about twice count /
        new_per_request instruction requests (novelty rejects some), then per task a classification and an
        instances request (and the answers with `responses`)."""
        cfg = self.config
        return -(-cfg.count // cfg.new_per_request) * 2 + cfg.count * (2 + (cfg.max_instances if cfg.responses else 0))

    def details(self) -> dict[str, Any]:
        """The counts of the end-of-run table (``report.json``)."""
        return self.result.stats if self.result is not None else {}

    @classmethod
    def run_command(cls, stages: list, dataset: None, out, *, console, overwrite: bool = False, **_reading) -> None:
        """``synth self-instruct``: the output folder with its report.json, usage.json and tasks file
        (`run_self_instruct`), then the end-of-run table."""
        from synth.generate.self_instruct.report import summary_table
        from synth.llm.factory import report_usage

        run = stages[0]
        result = run_self_instruct(run.backend, out, run.config, seeds=run.seeds, overwrite=overwrite)
        console.print(summary_table(result.stats))
        sampling = result.stats["sampling"]
        if not sampling["presence_penalty_applied"] and (
                sampling["presence_penalty"] or sampling["instance_presence_penalty"]):
            console.print("[yellow]presence penalty not applied: this backend has none (OpenAI-compatible servers do)")
        report_usage(run.backend, console=console)
        rejects = Path(out) / REJECTS
        console.print(f"wrote {len(result.samples):,} samples to {out}" + (f" (rejects: {rejects})" if rejects.exists() else ""))

    def write_files(self, folder: Path) -> None:
        """The kept instructions with their instances, beside the dataset (``self_instruct_tasks.jsonl``)."""
        write_tasks(self.result.tasks if self.result is not None else [], folder)

    # ------------------------------------------------------------ steps 2-3 and the samples

    def run(self, records: Iterable[dict] = ()) -> Iterator[dict]:
        result = self.generate()
        for sample in result.samples:
            yield sample_record(sample)

    def generate(self) -> SelfInstructResult:
        from synth.progress import progress

        self._share_logs()
        with progress() as shown:
            bar = shown if self.show_progress else None
            tasks = self.generate_instructions(bar)
            self.classified = self._step(bar, "classifying", self.classify, tasks)
            tasks = self._tasks = self._step(bar, "instances", self.instances, self.classified)
            samples = [s for task in tasks for s in self.samples_for(task)]
            if self.config.responses:
                samples = self.answer_again(samples, bar)
        # This stage's counts sum its steps: the command fails when every request of every step failed.
        for step in (self.classify, self.instances, self.responder):
            if step is not None:
                self.stats.failed.update(step.stats.failed)
                self.answered += step.answered
        self.stats.seen, self.stats.kept = self.generation["parsed"], len(tasks)
        for step in self.steps():  # what each step rejected, by step
            self.stats.dropped.update({f"{step.name}:{reason}": n for reason, n in step.stats.dropped.items()})
        self.result = SelfInstructResult(tasks=tasks, samples=samples, stats=self.counts(len(samples)))
        return self.result

    def _step(self, bar, description: str, step: LLMTask, records: list[dict]) -> list[dict]:
        """`step` over `records`, shown on `bar` (a task advanced as each record's request completes)."""
        if bar is None:
            return list(step.run(records))
        task = bar.add_task(description, total=len(records), tokens="")
        step.progress = lambda completion=None: bar.update(task, advance=1, tokens=_tokens(self.backend))
        try:
            return list(step.run(records))
        finally:
            step.progress = None
            bar.stop_task(task)

    def samples_for(self, task: dict) -> list[Sample]:
        out = []
        for number, instance in enumerate(task["instances"]):
            user = render_file(
                f"{PROMPTS}/sample_user.jinja",
                record_id=task["id"],
                instruction=task["instruction"],
                input=instance["input"],
            ).strip()
            meta = {
                "source": "self-instruct",
                "operator": "self-instruct",
                "round": task["meta"]["round"],
                "model": self.backend.model_name,
                "is_classification": task["is_classification"],
                "instruction_id": task["id"],
                "instance": number,
                "examples": task["meta"]["examples"],
            }
            if task["meta"].get("classification_unclear"):
                meta["classification_unclear"] = True
            out.append(
                Sample(
                    messages=[
                        Message(role="user", content=user),
                        Message(role="assistant", content=instance["output"]),
                    ],
                    meta=meta,
                )
            )
        return out

    def answer_again(self, samples: list[Sample], bar=None) -> list[Sample]:
        """Responses via the response stage (`synth.generate.responses`), replacing the instance outputs."""
        from synth.generate.responses import ResponseGenerator, ResponsesConfig, default_few_shot
        from synth.records import row_to_sample

        cfg = self.config
        self.responder = ResponseGenerator(
            self.backend,
            ResponsesConfig(  # answers sample with the response stage's top_p, not the instruction lists'
                regenerate=True,
                temperature=cfg.temperature,
                max_tokens=cfg.instance_max_tokens,
                seed=cfg.seed,
                few_shot=default_few_shot() if self.style == "continuation" else [],
            ),
        )
        self.responder.rejects, self.responder.failures = self.rejects, self.failures
        rows = self._step(bar, "responses", self.responder, [sample_record(s) for s in samples])
        return [row_to_sample(row) for row in rows]

    def sampling(self) -> dict[str, Any]:
        """The sampling settings of the run, and whether the backend applies the presence penalties."""
        cfg = self.config
        applied = bool(getattr(self.backend, "supports_presence_penalty", False))
        return {
            "instructions": {"temperature": cfg.temperature, "top_p": cfg.top_p},
            "classification": {"temperature": 0.0},
            "instances": {"temperature": cfg.instance_temperature, "top_p": cfg.instance_top_p},
            "presence_penalty": cfg.presence_penalty,
            "instance_presence_penalty": cfg.instance_presence_penalty,
            # The local transformers backend has no presence penalty: it is left out of its requests.
            "presence_penalty_applied": applied,
        }

    def counts(self, samples: int) -> dict[str, Any]:
        """Counts for the end-of-run table and the run's ``report.json``."""
        generation = dict(self.generation)
        return {
            "rounds": self.rounds,
            "prompt_style": self.style,
            "model": self.backend.model_name,
            "instructions": {
                **{
                    k: generation.get(k, 0)
                    for k in (
                        "requests",
                        "failed_requests",
                        "empty_replies",
                        "unparseable_replies",
                        "truncated_items",
                        "parsed",
                        "surplus",
                    )
                },
                "kept": self.filter.stats.kept,
                "rejected": dict(self.filter.stats.dropped),
                "target": self.config.count,
            },
            "classification": {
                "tasks": self.classify.stats.seen,
                "classification": sum(1 for t in self.classified if t["is_classification"]),
                "unclear": self.classify.unclear,
                "rejected": dict(self.classify.stats.dropped),
                "failed": dict(self.classify.stats.failed),
            },
            "instances": {
                "tasks": self.instances.stats.seen,
                "kept": self.instances.stats.kept,
                "rejected": dict(self.instances.stats.dropped),
                "failed": dict(self.instances.stats.failed),
                "instances": sum(len(t["instances"]) for t in self._tasks),
                "dropped_instances": dict(self.instances.instance_drops),
            },
            "responses": self.responder.stats.as_dict() if self.responder is not None else None,
            "samples": samples,
            "sampling": self.sampling(),
            "failed": dict(self.stats.failed),
            "novelty": self.filter.novelty.stats.as_dict(),
            "usage": self.backend.usage.as_dict(),
        }


def sample_record(sample: Sample) -> dict:
    """A text-only sample as a record (``meta`` as a dict)."""
    return {"id": sample.id, "messages": [m.model_dump() for m in sample.messages], "meta": sample.meta}


def _tokens(backend: Backend) -> str:
    u = backend.usage
    return f"{u.prompt_tokens + u.completion_tokens:,} tok"


def self_instruct(
    backend: Backend,
    config: SelfInstructConfig | dict | None = None,
    seeds: list[SeedTask] | str | Path | None = None,
    show_progress: bool = True,
) -> SelfInstructResult:
    """Run Self-Instruct in memory (no files; rejects and failures are only counted)."""
    if not isinstance(seeds, list):
        seeds = load_seed_tasks(seeds)
    return SelfInstruct(backend, config, seeds=seeds, show_progress=show_progress).generate()


def run_self_instruct(
    backend: Backend,
    out: str | Path,
    config: SelfInstructConfig | dict | None = None,
    seeds: list[SeedTask] | str | Path | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> SelfInstructResult:
    """Run Self-Instruct and write its output folder (see the module docs), whole or not at all. The
    library entry point the CLI calls. A run where every request failed, or that kept no sample, is an
    error and writes nothing."""
    from synth.llm.factory import backend_description

    check_output(out, overwrite, inputs=[seeds])
    if not isinstance(seeds, list):
        seeds = load_seed_tasks(seeds)
    with OutputFolder(out, overwrite) as folder:
        run = SelfInstruct(backend, config, seeds=seeds, show_progress=show_progress)
        run.rejects, run.failures = folder.rejects, folder.failures
        result = run.generate()
        check_not_all_failed(run)
        write_result(result, folder)
        folder.write_json(USAGE, {**backend_description(backend), **backend.usage.as_dict()})
    return result


def write_self_instruct(result: SelfInstructResult, out: str | Path, overwrite: bool = False) -> Path:
    """Write a result made in memory (`self_instruct`) as an output folder, whole or not at all."""
    with OutputFolder(out, overwrite) as folder:
        write_result(result, folder)
    return Path(out)


def write_result(result: SelfInstructResult, folder: OutputFolder) -> int:
    """The dataset, the tasks file and ``report.json`` into an open output folder; the rows written."""
    if not result.samples:
        gen = result.stats.get("instructions", {})
        reasons = ", ".join(f"{k} {v}" for k, v in Counter(gen.get("rejected", {})).most_common()) or "none"
        raise SynthError(
            f"Self-Instruct produced no samples (kept {gen.get('kept', 0)} of {gen.get('target', '?')} instructions; "
            f"rejected: {reasons}); try another model, more --count, or a higher --rouge-threshold"
        )
    written = write_records(
        (sample_record(s) for s in result.samples), folder.path, kind="sft", multimodal=False, scratch=folder.scratch("si")
    )
    write_tasks(result.tasks, folder.path)
    folder.write_json(REPORT, result.stats)
    return written


def write_tasks(tasks: list[dict], folder: str | Path) -> None:
    """The kept instructions with their instances as ``self_instruct_tasks.jsonl`` in `folder`."""
    with open(Path(folder) / TASKS_FILE, "w", encoding="utf-8") as f:
        for task in tasks:
            row = {k: task[k] for k in ("id", "instruction", "is_classification", "instances", "meta")}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


OPERATOR_CLASSES = (SelfInstruct,)
