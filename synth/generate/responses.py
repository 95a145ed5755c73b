"""Fill in (or re-generate) the assistant answers of an instruction dataset with an LLM.

Input records are SFT rows (``messages`` ending with a user turn, or with an assistant turn that
``regenerate`` replaces); `instruction_records` also turns an ``instruction`` (+ optional ``input``,
``output``) table into that layout. Only the final assistant turn is generated: earlier turns of a
multi-turn conversation stay as they are and serve as context.

Output records: the conversation plus the new assistant turn, a new content id, and provenance in
``meta``: ``model``, ``generation`` (sampling parameters), ``finish_reason``, ``parent_id`` (the input's
id) and, with ``n > 1``, ``sample`` (0..n-1). With ``n > 1`` each input yields up to n records, one per
sampled answer — the candidates a preference step can later rank into chosen/rejected pairs.

Records that already end with an answer pass through unchanged unless ``regenerate`` is set. Dropped
records (LLM failure, empty or cut-off answer, images the backend cannot take) go to the rejects file
with their reason.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from synth.errors import SynthError
from synth.llm.base import Backend, ChatRequest, Completion, LLMStage
from synth.records import Message, content_id, load_meta, messages_from_arrow, messages_to_arrow
from synth.stages import Rejected, StageConfig


class FewShotExample(StageConfig):
    instruction: str
    response: str


class ResponsesConfig(StageConfig):
    """Options of response generation."""

    system: str | None = Field(None, description="system prompt added to conversations that have none")
    regenerate: bool = Field(False, description="replace existing final answers instead of keeping them")
    n: int = Field(1, ge=1, description="answers sampled per instruction (one output record each)")
    temperature: float | None = Field(0.7, ge=0, description="0 = greedy")
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(512, ge=1)
    stop: list[str] | None = None
    seed: int | None = None
    keep_truncated: bool = Field(False, description="keep answers cut at max_tokens (finish_reason 'length')")
    few_shot: list[FewShotExample] = Field(
        default_factory=list, description="solved examples sent before each instruction (base models need them)"
    )


def _messages(record: dict) -> list[Message]:
    return messages_from_arrow(record.get("messages") or [])


def _is_parts_form(record: dict) -> bool:
    """Whether the record's dataset keeps content as parts (image-text datasets) or as plain strings."""
    return "images" in record or any(not isinstance(m.get("content"), str) for m in record.get("messages") or [])


class ResponseGenerator(LLMStage):
    """Input: SFT records (``messages``, ``images``?, ``id``, ``meta``). Output: the same with the final
    assistant turn generated and provenance in ``meta`` (see the module docs); n records per input when n > 1."""

    name: ClassVar[str] = "responses"
    Config = ResponsesConfig

    def __init__(self, backend: Backend, config: ResponsesConfig | dict | None = None, progress: Callable | None = None, **overrides):
        super().__init__(backend, config, **overrides)
        self.progress = progress

    def needs_answer(self, record: dict) -> bool:
        messages = record.get("messages") or []
        return self.config.regenerate or not messages or messages[-1].get("role") != "assistant"

    def _prompt_messages(self, record: dict) -> list[Message] | Rejected:
        messages = _messages(record)
        if messages and messages[-1].role == "assistant":
            messages = messages[:-1]  # regenerate: the old answer goes
        if not messages or messages[-1].role != "user":
            return Rejected("no_instruction", "the conversation has no user turn to answer")
        if not messages[-1].text.strip() and not messages[-1].image_count:
            return Rejected("no_instruction", "the last user turn is empty")
        return messages

    def format_input(self, record: dict) -> ChatRequest | Rejected:
        messages = self._prompt_messages(record)
        if isinstance(messages, Rejected):
            return messages
        images = list(record.get("images") or [])
        if images and not self.backend.supports_images:
            return Rejected(
                "images_unsupported",
                f"{self.backend.model_name} takes no images; use a vision model (e.g. --backend openai --model ...)",
            )
        context: list[Message] = []
        if self.config.system and messages[0].role != "system":
            context.append(Message(role="system", content=self.config.system))
        for example in self.config.few_shot:
            context.append(Message(role="user", content=example.instruction))
            context.append(Message(role="assistant", content=example.response))
        if context and messages[0].role == "system":
            context.insert(0, messages.pop(0))  # the conversation's own system prompt stays first
        return ChatRequest(
            messages=context + messages,
            images=images,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            max_tokens=self.config.max_tokens,
            stop=self.config.stop,
            n=self.config.n,
            seed=self.config.seed,
            key=record.get("id"),
        )

    def format_outputs(self, record: dict, completion: Completion) -> list[dict] | Rejected:
        """One output record per usable answer; Rejected when none is usable."""
        messages = self._prompt_messages(record)
        if isinstance(messages, Rejected):
            return messages
        if self.config.system and messages[0].role != "system":
            messages = [Message(role="system", content=self.config.system), *messages]
        parts_form = _is_parts_form(record)
        images = list(record.get("images") or [])
        meta = load_meta(record.get("meta"))
        generation = {
            k: v
            for k, v in {
                "temperature": self.config.temperature,
                "top_p": self.config.top_p,
                "max_tokens": self.config.max_tokens,
                "n": self.config.n,
                "seed": self.config.seed,
                "few_shot": len(self.config.few_shot) or None,
            }.items()
            if v is not None
        }
        out, reasons = [], []
        for index, text in enumerate(completion.texts):
            finish = completion.finish_reasons[index] if index < len(completion.finish_reasons) else "stop"
            answer = text.strip()
            if not answer:
                reasons.append(Rejected("empty", "the model returned an empty answer"))
                continue
            if finish == "length" and not self.config.keep_truncated:
                reasons.append(Rejected("truncated", f"answer cut at max_tokens={self.config.max_tokens}"))
                continue
            conversation = [*messages, Message(role="assistant", content=answer)]
            sample_meta = {
                **meta,
                "model": self.backend.model_name,
                "generation": generation,
                "finish_reason": finish,
                "parent_id": record.get("id"),
            }
            if self.config.n > 1:
                sample_meta["sample"] = index
            row = {
                "messages": messages_to_arrow(conversation, parts_form),
                "id": content_id(conversation, images, extra=f"sample:{index}" if self.config.n > 1 else ""),
                "meta": sample_meta,
            }
            if parts_form:
                row["images"] = images
            out.append(row)
        if not out:
            return reasons[0] if reasons else Rejected("empty", "no answer")
        return out

    def format_output(self, record: dict, completion: Completion) -> dict | Rejected:
        outputs = self.format_outputs(record, completion)
        return outputs if isinstance(outputs, Rejected) else outputs[0]

    def _run_batch(self, batch: list[dict]) -> Iterator[dict]:
        # Like LLMStage, plus: records that already have an answer pass through, answers may be several,
        # and each finished request reports progress.
        requests: list[ChatRequest] = []
        plan: list[tuple[dict, int | None | Rejected]] = []
        for record in batch:
            if not self.needs_answer(record):
                plan.append((record, None))
                continue
            request = self.format_input(record)
            if isinstance(request, Rejected):
                plan.append((record, request))
                if self.progress:
                    self.progress(None)
            else:
                plan.append((record, len(requests)))
                requests.append(request.model_copy(update={"key": str(len(requests))}))
        completions = self.backend.complete(requests, progress=self.progress) if requests else []
        for record, step in plan:
            if step is None:
                out = self._account(record, record)
                if out is not None:
                    yield out
                continue
            if isinstance(step, Rejected):
                self._account(record, step)
                continue
            completion = completions[step]
            result = (
                Rejected("llm_failure", completion.error or "")
                if not completion.ok
                else self.format_outputs(record, completion)
            )
            if isinstance(result, Rejected):
                self._account(record, result)
                continue
            self._account(record, record)  # counted once per input, however many answers it got
            yield from result


# ---------------------------------------------------------------- datasets


def instruction_records(dataset, source: str = "dataset") -> Iterator[dict]:
    """Rows of an SFT dataset (``messages``) or an instruction table (``instruction`` [+ ``input``,
    ``output``/``response``]) as in-memory SFT records (``meta`` as a dict)."""
    columns = set(dataset.column_names)
    if "messages" in columns:
        for row in dataset:
            record = dict(row)
            record["meta"] = load_meta(row.get("meta"))
            if not record.get("id"):
                record["id"] = content_id(record["messages"], record.get("images") or [])
            yield record
        return
    if "instruction" not in columns:
        raise SynthError(
            f"{source}: expected a 'messages' column (SFT layout) or an 'instruction' column "
            f"(found: {', '.join(sorted(columns)) or 'none'})"
        )
    answer_column = next((c for c in ("output", "response") if c in columns), None)
    for row in dataset:
        instruction = (row.get("instruction") or "").strip()
        extra = (row.get("input") or "").strip() if "input" in columns else ""
        prompt = f"{instruction}\n\n{extra}" if extra else instruction
        messages = [{"role": "user", "content": prompt}]
        answer = (row.get(answer_column) or "").strip() if answer_column else ""
        if answer:
            messages.append({"role": "assistant", "content": answer})
        meta = {"source": source}
        yield {"messages": messages, "id": content_id(messages), "meta": meta}


def load_few_shot(path: str | os.PathLike) -> list[FewShotExample]:
    """Few-shot examples from a JSONL/JSON/CSV file with ``instruction`` and ``response`` (or ``output``)."""
    from synth.io import read_dataset

    data = read_dataset(path)
    columns = set(data.column_names)
    answer = next((c for c in ("response", "output") if c in columns), None)
    if "instruction" not in columns or answer is None:
        raise SynthError(f"{path}: few-shot examples need 'instruction' and 'response' columns")
    return [FewShotExample(instruction=r["instruction"], response=r[answer]) for r in data]


def default_few_shot() -> list[FewShotExample]:
    """The shipped examples for base models (``templates/fewshot/responses.jsonl``)."""
    from synth.paths import templates_dir

    path = templates_dir() / "fewshot" / "responses.jsonl"
    return [FewShotExample(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass
class GenerateResult:
    out: Path
    written: int
    stats: dict[str, Any]
    usage: dict[str, Any]
    rejects: Path | None
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict)


def generate_responses(
    source: str | os.PathLike,
    out: str | os.PathLike,
    backend: Backend,
    config: ResponsesConfig | None = None,
    *,
    split: str | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    console=None,
) -> GenerateResult:
    """Read `source`, generate answers, write the SFT dataset to `out` (atomically) with ``usage.json``
    inside it, and dropped records to the rejects file beside it. Prints the usage summary."""
    from synth.io import atomic_path, check_output, read_dataset, rejects_path, write_json
    from synth.llm.factory import report_usage
    from synth.records import row_to_sample, samples_to_dataset
    from synth.stages import run_stages

    config = config or ResponsesConfig()
    out = check_output(out, overwrite)
    dataset = read_dataset(source, split)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    records = list(instruction_records(dataset, str(source)))
    if not records:
        raise SynthError(f"{source}: the dataset has no records")
    todo = sum(1 for r in records if config.regenerate or not r["messages"] or r["messages"][-1]["role"] != "assistant")

    started = time.monotonic()
    rejects = rejects_path(out)
    rows: list[dict] = []
    with _progress_bar(show_progress, todo, backend) as on_done:
        stage = ResponseGenerator(backend, config, progress=on_done)
        for row in run_stages([stage], records, rejects):
            rows.append(row)
    seconds = time.monotonic() - started

    usage = report_usage(backend, console=console)
    meta = {
        "command": "generate",
        "source": str(source),
        "config": config.model_dump(exclude={"few_shot"}) | {"few_shot": len(config.few_shot)},
        "stats": stage.stats.as_dict(),
        "usage": usage,
        "seconds": round(seconds, 3),
    }
    if not rows:
        raise SynthError(
            f"no record got an answer ({stage.stats.as_dict()['dropped']}); see {rejects} for the reasons"
        )
    dataset_out = samples_to_dataset(row_to_sample(r) for r in rows)
    with atomic_path(out, overwrite) as tmp:
        dataset_out.save_to_disk(str(tmp))
        write_json(meta, tmp / "usage.json")
    return GenerateResult(
        out=out,
        written=len(rows),
        stats=stage.stats.as_dict(),
        usage=usage,
        rejects=rejects if rejects.exists() else None,
        seconds=seconds,
        meta=meta,
    )


class _progress_bar:
    """A rich progress bar fed by completion callbacks: items, rate and completion tokens."""

    def __init__(self, enabled: bool, total: int, backend: Backend):
        self.enabled = enabled
        self.total = total
        self.backend = backend

    def __enter__(self) -> Callable[[Completion | None], None] | None:
        if not self.enabled:
            return None
        from synth.progress import progress

        self.bar = progress()
        self.bar.__enter__()
        self.task = self.bar.add_task("generating", total=self.total, tokens="")
        self.started = time.monotonic()

        def on_done(completion: Completion | None) -> None:
            tokens = self.backend.usage.completion_tokens
            rate = tokens / max(1e-6, time.monotonic() - self.started)
            self.bar.update(self.task, advance=1, tokens=f"{tokens:,} tok · {rate:,.0f} tok/s")

        return on_done

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)
