"""Self-Instruct: an LLM bootstraps new instruction data from a small set of seed tasks.

1. **Instructions.** Each request shows a few seed tasks and a few machine-written ones as a numbered list
   and asks the model to continue it; replies are parsed robustly (numbering styles, preambles, trailing
   junk, a truncated last item). Candidates pass filters, each counted by reason: too short / too long,
   starts with punctuation or a non-ASCII character, asks for something a text model cannot serve (image,
   file, audio, ...) when the target is text-only, exact duplicate, and ROUGE-L novelty (rejected when the
   F-measure against any pooled instruction is above the threshold; see `synth.generate.novelty`).
   Rounds of `concurrency` requests run until `count` instructions are kept.
2. **Classification detection** (few-shot yes/no).
3. **Instances**: output-first (label, then input) for classification tasks, input-first otherwise.

The result is an SFT dataset: user = instruction (+ input), assistant = output, with lineage in ``meta``.
All prompts are jinja files under ``templates/prompts/self_instruct/``. Two prompt layouts:
``continuation`` puts the few-shot list in an assistant prefix that a base model simply continues (the
local backend's default); ``chat`` puts it in the user message, for chat models behind an API.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from synth.errors import SynthError, validation_message
from synth.generate.novelty import RougeNoveltyIndex
from synth.llm.base import Backend, ChatRequest, Completion, LLMStage
from synth.paths import templates_dir
from synth.records import Message, Sample, content_id
from synth.stages import Filter, Rejected, RejectsWriter, Stage, StageConfig
from synth.templating import render_file

PROMPTS = "prompts/self_instruct"

#: Words that ask for something a text-only model cannot see or produce (matched as whole words).
DEFAULT_BLOCKED_KEYWORDS = [
    "image",
    "images",
    "picture",
    "pictures",
    "photo",
    "photos",
    "photograph",
    "graph",
    "graphs",
    "chart",
    "charts",
    "diagram",
    "diagrams",
    "flowchart",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "drawing",
    "plot",
    "plots",
    "sketch",
    "video",
    "videos",
    "audio",
    "music",
    "song recording",
    "sound",
    "go to",
    "visit",
    "website link",
    "screenshot",
    "attached",
    "attachment",
]


# ---------------------------------------------------------------- seed tasks


class SeedInstance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str = ""
    output: str = Field(min_length=1)


class SeedTask(BaseModel):
    """One seed task: an instruction, at least one worked instance, and whether it is classification."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    instruction: str = Field(min_length=1)
    instances: list[SeedInstance] = Field(min_length=1)
    is_classification: bool = False

    @field_validator("instruction")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("instruction is blank")
        return value.strip()

    def task_id(self) -> str:
        return self.id or instruction_id(self.instruction)


def default_seed_path() -> Path:
    return templates_dir() / "seeds" / "self_instruct_seed_tasks.jsonl"


def load_seed_tasks(path: str | Path | None = None) -> list[SeedTask]:
    """Read seed tasks from JSONL; an error names the file and line and says what is wrong."""
    path = Path(path) if path else default_seed_path()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise SynthError(
            f"seed file {path} not found; pass --seeds FILE (JSONL) or leave it out for the built-in seeds"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SynthError(f"cannot read seed file {path}: {e}") from e
    tasks: list[SeedTask] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise SynthError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from e
        if not isinstance(value, dict):
            raise SynthError(
                f"{where}: expected a JSON object with instruction, instances, is_classification"
            )
        try:
            tasks.append(SeedTask.model_validate(value))
        except ValidationError as e:
            raise SynthError(validation_message(e, where)) from e
    if not tasks:
        raise SynthError(
            f'seed file {path} has no tasks; each line is {{"instruction", "instances", "is_classification"}}'
        )
    return tasks


def instruction_id(instruction: str) -> str:
    return content_id([{"role": "user", "content": instruction}])


# ---------------------------------------------------------------- parsing replies

# "1. x", "1) x", "(1) x", "1: x", "1 - x", "#1. x", "Task 1: x", "**1.** x", "- 1. x"
_ITEM_RE = re.compile(
    r"^\s*(?:[-*>#]+\s*)?(?:\*\*)?(?:(?:task|instruction)\s*)?[#(]?(\d{1,3})\s*[.):\-](?:\*\*)?(?:\s+|$)(.*)$",
    re.IGNORECASE,
)
# Lines where the model starts answering or giving an example instead of listing tasks.
_FIELD_RE = re.compile(r"^\s*(?:input|output|example|answer|solution|response|label)\s*:", re.IGNORECASE)


def _clean_item(lines: list[str]) -> str:
    text = " ".join(part.strip() for part in lines if part.strip())
    text = text.replace("**", "").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return text


def parse_numbered_list(
    text: str, open_item: bool = False, truncated: bool = False, require_numbered: bool = False
) -> tuple[list[str], int]:
    """Items of a numbered list in an LLM reply; returns ``(items, dropped_truncated)``.

    `open_item`: the prompt ended with the next number, so text before the first numbered line is the
    first item (a continuation). Multi-line items are joined; text after a blank line that is not a new
    item (closing remarks) and answer-like lines ("Input:", "Output:") are ignored; a preamble that ends
    with ":" is not an item. With `truncated` (the reply hit the token limit) the last item is dropped.
    With `require_numbered`, a reply without any numbered line has no items (a chat model's refusal or
    small talk is not an instruction).
    """
    items: list[str] = []
    current: list[str] | None = [] if open_item else None  # lines of the item being read
    seen_numbered = False  # False while `current` is still the open (unnumbered) item
    blank_after = False  # a blank line followed the current item
    closed = False  # the current item has ended; skip lines until the next numbered one

    def flush() -> None:
        if current is None:
            return
        item = _clean_item(current)
        if item and not (not seen_numbered and item.endswith(":")):  # "Here are some tasks:"
            items.append(item)

    for line in text.splitlines():
        match = _ITEM_RE.match(line)
        if match:
            flush()
            current, seen_numbered, blank_after, closed = [match.group(2)], True, False, False
            continue
        if not line.strip():
            if current:
                blank_after = True
            continue
        if current is None or closed:
            continue
        if blank_after or _FIELD_RE.match(line):
            closed = True  # junk after the item, or the model began to answer it: the item ends here
            continue
        current.append(line)
    flush()
    if require_numbered and not seen_numbered:
        items = []
    dropped = 0
    if truncated and items:
        items.pop()
        dropped = 1
    return items, dropped


_YES_NO_RE = re.compile(r"^[\s\W]*(yes|no)\b", re.IGNORECASE)


def parse_yes_no(text: str) -> bool | None:
    """True for a reply starting with "yes", False for "no", None otherwise."""
    match = _YES_NO_RE.match(text or "")
    if not match:
        return None
    return match.group(1).lower() == "yes"


_INSTANCE_LABEL_RE = re.compile(r"^\s*(task|input|output|label)\s*:\s?(.*)$", re.IGNORECASE)
_NONE_INPUTS = {"(none)", "none", "n/a", "(no input)", "no input", "-", ""}


def parse_instances(text: str, output_first: bool) -> list[dict[str, str]]:
    """(input, output) pairs from an instance-generation reply.

    The prompt ends with the open "Input:" (input-first) or "Label:" (output-first) field, so a reply that
    does not start with a field label continues that field. Parsing stops at the next "Task:".
    """
    opening = "label" if output_first else "input"
    fields: list[tuple[str, list[str]]] = []
    lines = text.splitlines()
    if not lines or not _INSTANCE_LABEL_RE.match(lines[0]):
        fields.append((opening, [lines[0].strip()] if lines else []))
        lines = lines[1:]
    for line in lines:
        match = _INSTANCE_LABEL_RE.match(line)
        if match:
            name = match.group(1).lower()
            if name == "task":
                break
            fields.append((name, [match.group(2).strip()]))
        elif fields:
            fields[-1][1].append(line.rstrip())
    first_name, second_name = ("label", "input") if output_first else ("input", "output")
    instances: list[dict[str, str]] = []
    pending: str | None = None
    for name, value_lines in fields:
        value = "\n".join(value_lines).strip()
        if name == first_name:
            pending = value
        elif name == second_name and pending is not None:
            first_value, second_value = pending, value
            pending = None
            if output_first:
                output, input_ = first_value, second_value
            else:
                input_, output = first_value, second_value
            if input_.strip().lower() in _NONE_INPUTS:
                input_ = ""
            instances.append({"input": input_, "output": output})
    return instances


# ---------------------------------------------------------------- configuration


class SelfInstructConfig(StageConfig):
    """Options of a Self-Instruct run (all have defaults)."""

    count: int = Field(100, ge=1, description="new instructions to keep")
    concurrency: int = Field(8, ge=1, description="instruction requests sent together per round")
    seed_examples: int = Field(6, ge=0, description="seed tasks shown per request")
    machine_examples: int = Field(
        2, ge=0, description="machine-written tasks shown per request (when there are)"
    )
    new_per_request: int = Field(8, ge=1, description="new tasks asked for per request")
    rouge_threshold: float = Field(
        0.7, ge=0, le=1, description="reject when ROUGE-L F against the pool exceeds it"
    )
    use_stemmer: bool = Field(False, description="Porter stemming in ROUGE-L (as rouge_score's use_stemmer)")
    min_words: int = Field(3, ge=1)
    max_words: int = Field(150, ge=1)
    text_only: bool = Field(True, description="reject instructions needing images, files, audio, ...")
    blocked_keywords: list[str] = Field(default_factory=lambda: list(DEFAULT_BLOCKED_KEYWORDS))
    max_instances: int = Field(1, ge=1, description="instances (SFT samples) kept per instruction")
    responses: bool = Field(
        False,
        description="answer each instruction (+ input) again with the LLM instead of keeping the output "
        "written with the instance (e.g. a stronger chat model answers)",
    )
    instance_examples: int = Field(3, ge=1, description="seed tasks shown when generating instances")
    classification_examples: int = Field(6, ge=1, description="seed tasks of each kind shown for yes/no")
    prompt_style: Literal["auto", "chat", "continuation"] = Field(
        "auto", description="continuation for base models (local backend), chat for chat APIs"
    )
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.9, gt=0, le=1)
    instruction_max_tokens: int = Field(384, ge=16)
    instance_max_tokens: int = Field(512, ge=16)
    patience: int = Field(5, ge=1, description="stop after this many rounds in a row that keep nothing")
    max_rounds: int | None = Field(None, ge=1)
    seed: int = 0


def resolve_prompt_style(config: SelfInstructConfig, backend: Backend) -> str:
    if config.prompt_style != "auto":
        return config.prompt_style
    # The local backend runs base models (the embedded default is one), which continue text.
    from synth.llm.local import LocalBackend

    inner = getattr(backend, "inner", backend)  # the request cache wraps the real backend
    return "continuation" if isinstance(inner, LocalBackend) else "chat"


def build_messages(
    task_template: str, examples_template: str, style: str, record_id: str | None = None, **variables: Any
) -> list[Message]:
    """The request messages in the chosen layout; both layouts render the same two templates."""
    task = render_file(f"{PROMPTS}/{task_template}", record_id=record_id, **variables)
    examples = render_file(f"{PROMPTS}/{examples_template}", record_id=record_id, **variables)
    if style == "continuation":
        return [Message(role="user", content=task), Message(role="assistant", content=examples)]
    return [Message(role="user", content=f"{task}\n\n{examples}")]


# ---------------------------------------------------------------- instruction filters


def _normalized(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".!?")


class InstructionFilter(Filter):
    """Keeps new instructions that are well-formed and novel; a kept instruction joins the pool.

    Input record: ``{"id", "instruction", ...}``. Reasons: empty, too_short, too_long, punctuation_start,
    non_ascii_start, unsupported_keyword, duplicate, rouge_similar.
    """

    name = "self-instruct-filter"
    Config = SelfInstructConfig

    def __init__(self, config: SelfInstructConfig | dict | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.novelty = RougeNoveltyIndex(self.config.rouge_threshold, use_stemmer=self.config.use_stemmer)
        self._seen: set[str] = set()
        keywords = sorted(self.config.blocked_keywords, key=len, reverse=True)
        self._keywords = (
            re.compile(r"\b(" + "|".join(re.escape(k) for k in keywords) + r")\b", re.IGNORECASE)
            if keywords
            else None
        )

    def prime(self, instructions: Iterable[str]) -> None:
        """Put instructions (the seeds) in the pool without checking them."""
        for text in instructions:
            self._seen.add(_normalized(text))
            self.novelty.add(text)

    def check(self, record: dict) -> Rejected | None:
        text = record["instruction"]
        cfg = self.config
        if not text.strip():
            return Rejected("empty")
        words = len(text.split())
        if words < cfg.min_words:
            return Rejected("too_short", f"{words} words: {text}")
        if words > cfg.max_words:
            return Rejected("too_long", f"{words} words: {text[:200]}")
        if not text[0].isascii():
            return Rejected("non_ascii_start", text)
        if not text[0].isalnum():
            return Rejected("punctuation_start", text)
        if cfg.text_only and self._keywords is not None:
            found = self._keywords.search(text)
            if found:
                return Rejected("unsupported_keyword", f"'{found.group(1)}': {text}")
        key = _normalized(text)
        if key in self._seen:
            return Rejected("duplicate", text)
        match = self.novelty.add_if_novel(text)
        if match is not None:
            return Rejected("rouge_similar", f"ROUGE-L {match.score:.3f} with '{match.text}': {text}")
        self._seen.add(key)
        return None


# ---------------------------------------------------------------- LLM stages


class ClassifyTasks(LLMStage):
    """Adds ``is_classification`` to task records (few-shot yes/no). An unclear reply counts as "no"
    (input-first instances work for any task) and is noted in ``meta["classification_unclear"]``."""

    name = "self-instruct-classify"
    Config = SelfInstructConfig

    def __init__(
        self, backend: Backend, seeds: list[SeedTask], config=None, style: str = "chat", **overrides
    ):
        super().__init__(backend, config, **overrides)
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


class GenerateInstances(LLMStage):
    """Adds ``instances`` ([{input, output}]) to classified task records: output-first for classification
    tasks, input-first otherwise. Drops a task whose reply has no usable instance ("no_instances")."""

    name = "self-instruct-instances"
    Config = SelfInstructConfig

    def __init__(
        self, backend: Backend, seeds: list[SeedTask], config=None, style: str = "chat", **overrides
    ):
        super().__init__(backend, config, **overrides)
        self.style = style
        self.classification_seeds = [s for s in seeds if s.is_classification] or seeds
        self.other_seeds = [s for s in seeds if not s.is_classification] or seeds

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
        return ChatRequest(
            messages=messages,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            max_tokens=self.config.instance_max_tokens,
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
        kept, seen_inputs = [], set()
        for instance in instances:
            if not instance["output"] or instance["output"] == instance["input"]:
                continue
            if instance["input"] in seen_inputs and instance["input"]:
                continue
            seen_inputs.add(instance["input"])
            kept.append(instance)
        if not kept:
            reply = completion.text.strip().replace("\n", " ")[:160]
            return Rejected("no_instances", f"{record['instruction']} -> {reply!r}")
        return {**record, "instances": kept[: self.config.max_instances]}


# ---------------------------------------------------------------- the run


@dataclass
class SelfInstructResult:
    tasks: list[dict]  # kept instructions with is_classification and instances
    samples: list[Sample]
    stats: dict[str, Any] = field(default_factory=dict)


class SelfInstruct(Stage):
    """The whole Self-Instruct run as a stage: `run()` yields SFT rows (records), `stats` says what happened.

    Input records, if any, are ignored (Self-Instruct starts from its seed tasks).
    """

    name = "self-instruct"
    Config = SelfInstructConfig

    def __init__(
        self,
        backend: Backend,
        config: SelfInstructConfig | dict | None = None,
        seeds: list[SeedTask] | None = None,
        rejects: RejectsWriter | None = None,
        show_progress: bool = True,
        **overrides: Any,
    ):
        super().__init__(config, **overrides)
        self.backend = backend
        self.seeds = seeds if seeds is not None else load_seed_tasks()
        if not self.seeds:
            raise SynthError("Self-Instruct needs at least one seed task")
        self.style = resolve_prompt_style(self.config, backend)
        self.show_progress = show_progress
        self.filter = InstructionFilter(self.config)
        self.filter.prime(s.instruction for s in self.seeds)
        self.classify = ClassifyTasks(backend, self.seeds, self.config, style=self.style)
        self.instances = GenerateInstances(backend, self.seeds, self.config, style=self.style)
        self.rejects = rejects or RejectsWriter(None)
        for stage in (self.filter, self.classify, self.instances):
            stage.rejects = self.rejects
        self.generation = Counter()  # requests, failed requests, empty replies, parsed items, ...
        self.rounds = 0
        self.classified: list[dict] = []
        self.responder = None  # the response stage, when `responses` is set
        self.result: SelfInstructResult | None = None

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

    def generate_instructions(self) -> list[dict]:
        """Bootstrap rounds until `count` instructions are kept (or `patience` rounds keep nothing)."""
        from synth.progress import progress

        cfg = self.config
        rng = random.Random(cfg.seed)
        kept: list[dict] = []
        idle_rounds = 0
        request_index = 0
        with progress() as bar:
            task = bar.add_task("instructions", total=cfg.count, tokens="") if self.show_progress else None
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
                for examples, completion in zip(picks, completions, strict=True):
                    for record in self._candidates(examples, completion):
                        if len(kept) >= cfg.count:
                            self.generation["surplus"] += 1
                            continue
                        kept.extend(self.filter.run([record]))  # counted, and rejects written
                if task is not None:
                    bar.update(task, completed=len(kept), tokens=_tokens(self.backend))
                idle_rounds = idle_rounds + 1 if len(kept) == before else 0
                if idle_rounds >= cfg.patience:
                    break
        self.generation["kept"] = len(kept)
        return kept

    def _candidates(self, examples: list[tuple[str, str]], completion: Completion) -> Iterator[dict]:
        self.generation["requests"] += 1
        if not completion.ok:
            self.generation["failed_requests"] += 1
            return
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

    # ------------------------------------------------------------ steps 2-3 and the samples

    def run(self, records: Iterable[dict] = ()) -> Iterator[dict]:
        from synth.records import sample_to_row

        result = self.generate()
        for sample in result.samples:
            yield {**sample_to_row(sample, multimodal=False), "meta": sample.meta}

    def generate(self) -> SelfInstructResult:
        tasks = self.generate_instructions()
        self.classified = list(self.classify.run(tasks))
        tasks = list(self.instances.run(self.classified))
        samples = [s for task in tasks for s in self.samples_for(task)]
        if self.config.responses:
            samples = self.answer_again(samples)
        self.stats.seen, self.stats.kept = self.generation["parsed"], len(tasks)
        self.result = SelfInstructResult(tasks=tasks, samples=samples, stats=self.summary(len(samples)))
        return self.result

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

    def answer_again(self, samples: list[Sample]) -> list[Sample]:
        """Responses via the LLM layer (`synth.generate.responses`), replacing the instance outputs."""
        from synth.generate.responses import ResponseGenerator, ResponsesConfig, default_few_shot
        from synth.records import messages_to_arrow, row_to_sample

        cfg = self.config
        self.responder = ResponseGenerator(
            self.backend,
            ResponsesConfig(
                regenerate=True,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                max_tokens=cfg.instance_max_tokens,
                seed=cfg.seed,
                few_shot=default_few_shot() if self.style == "continuation" else [],
            ),
        )
        self.responder.rejects = self.rejects
        rows = [
            {"id": s.id, "messages": messages_to_arrow(s.messages, False), "meta": s.meta} for s in samples
        ]
        return [row_to_sample(row) for row in self.responder.run(rows)]

    def summary(self, samples: int) -> dict[str, Any]:
        """Counts for the end-of-run table and the run's stats file."""
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
            },
            "instances": {
                "tasks": self.instances.stats.seen,
                "kept": self.instances.stats.kept,
                "rejected": dict(self.instances.stats.dropped),
            },
            "responses": self.responder.stats.as_dict() if self.responder is not None else None,
            "samples": samples,
            "novelty": self.filter.novelty.stats.as_dict(),
            "usage": self.backend.usage.as_dict(),
        }


def _tokens(backend: Backend) -> str:
    u = backend.usage
    return f"{u.prompt_tokens + u.completion_tokens:,} tok"


def write_self_instruct(result: SelfInstructResult, out: str | Path, overwrite: bool = False) -> Path:
    """Write the SFT dataset (save_to_disk) plus ``self_instruct_tasks.jsonl`` and
    ``self_instruct_stats.json``,
    all at once: the folder appears complete or not at all."""
    from synth.io import atomic_path, check_output, quiet_datasets
    from synth.records import samples_to_dataset

    out = check_output(out, overwrite)
    if not result.samples:
        raise SynthError(
            "Self-Instruct produced no samples (see the counts above and the rejects file); "
            "try another model, more --count, or a higher --rouge-threshold"
        )
    dataset = samples_to_dataset(result.samples)
    with atomic_path(out, overwrite) as tmp, quiet_datasets():
        dataset.save_to_disk(str(tmp))
        with open(tmp / "self_instruct_tasks.jsonl", "w", encoding="utf-8") as f:
            for task in result.tasks:
                row = {k: task[k] for k in ("id", "instruction", "is_classification", "instances", "meta")}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        with open(tmp / "self_instruct_stats.json", "w", encoding="utf-8") as f:
            json.dump(result.stats, f, indent=2, ensure_ascii=False, default=str)
            f.write("\n")
    return out


def self_instruct(
    backend: Backend,
    config: SelfInstructConfig | dict | None = None,
    seeds: list[SeedTask] | str | Path | None = None,
    rejects_path: str | Path | None = None,
    show_progress: bool = True,
) -> SelfInstructResult:
    """Run Self-Instruct with a backend; library entry point (the CLI calls this)."""
    if not isinstance(seeds, list):
        seeds = load_seed_tasks(seeds)
    with RejectsWriter(rejects_path) as rejects:
        run = SelfInstruct(backend, config, seeds=seeds, rejects=rejects, show_progress=show_progress)
        return run.generate()


__all__ = [
    "SeedTask",
    "SeedInstance",
    "load_seed_tasks",
    "default_seed_path",
    "parse_numbered_list",
    "parse_yes_no",
    "parse_instances",
    "SelfInstructConfig",
    "InstructionFilter",
    "ClassifyTasks",
    "GenerateInstances",
    "SelfInstruct",
    "SelfInstructResult",
    "self_instruct",
    "write_self_instruct",
]
