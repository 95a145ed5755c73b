"""Fill in (or re-generate) the assistant answers of an instruction dataset with an LLM.

Input records are SFT records from the one reader (``messages`` ending with a user turn, or with an
assistant turn that ``regenerate`` replaces); the reader also turns ``instruction`` (+ ``input``,
``output``) tables, TRL, LLaVA, sharegpt and OpenAI layouts into these. Only the final assistant turn is
generated: earlier turns of a multi-turn conversation stay as they are and serve as context.

Output records: the conversation plus the new assistant turn, a new content id, and provenance in
``meta``: ``model``, ``generation`` (sampling parameters), ``finish_reason``, ``parent_id`` (the input's
id) and, with ``n > 1``, ``sample`` (0..n-1). With ``n > 1`` each input yields up to n records, one per
sampled answer — the candidates a preference step can later rank into chosen/rejected pairs.

Records that already end with an answer pass through unchanged unless ``regenerate`` is set. Rejected
records (empty or cut-off answer, images the backend cannot take) go to ``rejects.jsonl`` with their
reason; failed requests (backend error) go to ``failures.jsonl`` and are asked again by the next run.
`generate_responses` streams: input records are read, answered and written in batches.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from synth.core.fields import FilePath
from synth.data import (
    FAILURES,
    REJECTS,
    USAGE,
    OutputFolder,
    Source,
    check_output,
    open_source,
    write_records,
)
from synth.errors import SynthError
from synth.llm.base import Backend, ChatRequest, Completion
from synth.pipeline import Rejected, StageConfig
from synth.pipeline.llm_task import LLMTask, check_not_all_failed
from synth.records import (
    Message,
    content_id,
    first_turn_text,
    load_meta,
    messages_from_arrow,
    messages_to_arrow,
)


class FewShotExample(StageConfig):
    instruction: str = Field(description="the example's instruction (a user turn)")
    response: str = Field(description="its answer (an assistant turn)")


def _few_shot_description() -> str:
    """The few-shot field's description, naming the shipped examples the embedded base model is given."""
    import json

    from synth.paths import templates_dir

    try:
        with open(templates_dir() / "fewshot" / "responses.jsonl", encoding="utf-8") as f:
            shown = "; ".join(json.dumps(json.loads(line)["instruction"]) for line in f if line.strip())
    except (OSError, ValueError, KeyError):  # a broken install must not break every command's --help
        shown = ""
    return ("solved examples (instruction, response) sent before each instruction: a list, or a JSONL/CSV file. "
            "Default: none, except for the embedded default model (a base model), which is prompted with the "
            "shipped examples in templates/fewshot/responses.jsonl" + (f" ({shown})." if shown else "."))


class ResponsesConfig(StageConfig):
    """Options of response generation."""

    system: str | None = Field(None, description="system prompt added to conversations that have none")
    regenerate: bool = Field(False, description="replace existing final answers instead of keeping them")
    n: int = Field(1, ge=1, description="answers sampled per instruction (one output record each)")
    temperature: float | None = Field(0.7, ge=0, description="sampling temperature; 0 = greedy")
    top_p: float | None = Field(
        None, gt=0, le=1, description="nucleus sampling: draw only from the most likely tokens that together "
                                      "reach this probability (0-1; default: the backend's)")
    max_tokens: int | None = Field(512, ge=1, description="token limit of each answer")
    stop: list[str] | None = Field(None, description="strings that end an answer")
    seed: int | None = Field(None, description="sampling seed sent with each request (a recipe's seed when unset)")
    keep_truncated: bool = Field(False, description="keep answers cut at max_tokens (finish_reason 'length')")
    few_shot: list[FewShotExample] | FilePath | None = Field(None, description=_few_shot_description())


def is_embedded_base_model(backend: Backend) -> bool:
    """Whether `backend` serves the embedded default model (a base model: it needs few-shot prompts)."""
    from synth.llm.embedded import EMBEDDED_MODEL

    inner = getattr(backend, "inner", backend)  # under the request cache
    return getattr(inner, "base_model", None) == EMBEDDED_MODEL and getattr(inner, "adapter", None) is None


def few_shot_examples(few_shot: list[FewShotExample] | str | None, backend: Backend) -> list[FewShotExample]:
    """The examples a config's ``few_shot`` names: the list, a file's, or (unset) the shipped ones for the
    embedded base model and none for any other model. The one place that default is decided."""
    if isinstance(few_shot, str):
        return load_few_shot(few_shot)
    if few_shot is None:
        return default_few_shot() if is_embedded_base_model(backend) else []
    return list(few_shot)


def _is_parts_form(record: dict) -> bool:
    """Whether the record keeps content as parts (it has images, or parts already) or as plain strings."""
    return bool(record.get("images")) or any(not isinstance(m.get("content"), str) for m in record.get("messages") or [])


class ResponseGenerator(LLMTask):
    """Fill in (or regenerate) the assistant answers of an instruction dataset with an LLM.

    Reads SFT records (messages; TRL, LLaVA, sharegpt, OpenAI layouts) or a table with an 'instruction'
    column; writes the conversation with the final assistant turn generated and its provenance in meta
    (model, sampling, finish reason, parent id); n records per input when n > 1. Records that already end
    with an answer pass through unless regenerate is set. Empty or cut answers are rejected with their
    reason; failed requests are retried by the next run.

    With no --base-url, --backend or --model, answers come from the embedded Gemma 3 270M, a base model:
    each instruction follows the shipped few-shot examples (see --few-shot) as "### Instruction /
    ### Response" text (templates/chat/base.jinja).
    """

    name: ClassVar[str] = "generate"
    Config = ResponsesConfig
    reads: ClassVar[tuple[str, ...]] = ("messages", "images", "id", "meta")
    writes: ClassVar[tuple[str, ...]] = ("messages", "id", "meta")
    output_kind: ClassVar[str] = "sft"

    def __init__(self, backend: Backend, config=None, progress=None, **overrides):
        super().__init__(backend, config, progress, **overrides)
        self.few_shot = few_shot_examples(self.config.few_shot, backend)

    @staticmethod
    def input_records(source: Source) -> Iterator[dict]:
        return sft_records(source)

    def passes_through(self, record: dict) -> bool:
        """Records that already end with an answer (unless `regenerate`)."""
        messages = record.get("messages") or []
        return not self.config.regenerate and bool(messages) and messages[-1].get("role") == "assistant"

    def _prompt_messages(self, record: dict) -> list[Message] | Rejected:
        messages = messages_from_arrow(record.get("messages") or [])
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
        for example in self.few_shot:
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

    def format_output(self, record: dict, completion: Completion) -> list[dict] | Rejected:
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
                "few_shot": len(self.few_shot) or None,
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

    def nothing_kept(self) -> str:
        """The error when no record got an answer."""
        return f"no record got an answer ({_reasons(self.stats.dropped)})"

    def run_batch(self, batch: list[dict]) -> Iterator[dict]:
        if self.progress:  # records that pass through count as done
            for record in batch:
                if self.passes_through(record):
                    self.progress(None)
        yield from super().run_batch(batch)


# ---------------------------------------------------------------- datasets


def sft_records(source: Source) -> Iterator[dict]:
    """The records of an SFT source with an id on each (the content id when the row has none), so every
    answer can name its parent; rows of an instruction table note the table as their ``meta.source`` (its
    stable name, `Source.label`). Columns the layout does not read travel in ``meta.columns``."""
    if source.kind != "sft":
        found = ", ".join(source.columns) or "none"
        raise SynthError(
            f"{source.name}: expected conversations ('messages', TRL/LLaVA/sharegpt/OpenAI layouts) or an "
            f"'instruction' column (found: {found})"
        )
    for record in source.records():
        if not record.get("id"):
            record["id"] = content_id(record["messages"], record.get("images") or [])
        if source.layout == "alpaca":
            record["meta"] = {"source": source.label, **(record.get("meta") or {})}
        yield record


def load_few_shot(path: str | os.PathLike) -> list[FewShotExample]:
    """Few-shot examples from a JSONL/JSON/CSV/Parquet file with ``instruction`` and ``response`` (or
    ``output``) columns, or conversations with a user and an assistant turn."""
    source = open_source(path)
    examples = []
    for number, record in enumerate(source.records() if source.kind == "sft" else [], start=1):
        instruction = first_turn_text(record["messages"], "user")
        response = first_turn_text(record["messages"], "assistant")
        if not instruction or not response:
            raise SynthError(f"{path}: row {number}: a few-shot example needs an instruction and a response")
        examples.append(FewShotExample(instruction=instruction, response=response))
    if not examples:
        raise SynthError(f"{path}: few-shot examples need 'instruction' and 'response' columns")
    return examples


def default_few_shot() -> list[FewShotExample]:
    """The shipped examples for base models (``templates/fewshot/responses.jsonl``)."""
    from synth.io import read_jsonl
    from synth.paths import templates_dir

    return [FewShotExample(**row) for _, row in read_jsonl(templates_dir() / "fewshot" / "responses.jsonl", "few-shot")]


@dataclass
class GenerateResult:
    out: Path
    written: int
    stats: dict[str, Any]
    usage: dict[str, Any]
    rejects: Path | None
    failures: Path | None
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict)


def generate_responses(
    source: str | os.PathLike | Source,
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
    """Read `source`, generate answers and write the SFT dataset to the folder `out`, streaming, with
    ``usage.json``, ``rejects.jsonl`` and ``failures.jsonl`` inside it; the folder appears whole or not at
    all. Prints the usage summary. Every request failing, or no record getting an answer, is an error."""
    from synth.llm.factory import report_usage

    config = config or ResponsesConfig()
    out = check_output(out, overwrite, inputs=[source])
    src = source if isinstance(source, Source) else open_source(source, split, limit=limit)
    started = time.monotonic()
    stage = ResponseGenerator(backend, config)
    with OutputFolder(out, overwrite) as folder:
        written = write_answered(stage, src, folder, backend, show_progress)
        if not written:
            raise SynthError(f"{stage.nothing_kept()}{_first_detail(folder)}")
        seconds = time.monotonic() - started
        usage = report_usage(backend, console=console)
        meta = {
            "command": "generate",
            "source": src.name,
            "config": config.model_dump(exclude={"few_shot"}) | {"few_shot": len(stage.few_shot)},
            "stats": stage.stats.as_dict(),
            "usage": usage,
            "seconds": round(seconds, 3),
        }
        folder.write_json(USAGE, meta)
    return GenerateResult(
        out=out,
        written=written,
        stats=stage.stats.as_dict(),
        usage=usage,
        rejects=out / REJECTS if (out / REJECTS).exists() else None,
        failures=out / FAILURES if (out / FAILURES).exists() else None,
        seconds=seconds,
        meta=meta,
    )


def write_answered(stage, src: Source, folder: OutputFolder, backend: Backend, show_progress: bool) -> int:
    """Stream `src`'s SFT records through an LLM stage into `folder` (its sidecars inside), with a progress
    bar; the rows written. Ends the command, writing nothing, when the LLM requests failed."""
    stage.rejects, stage.failures = folder.rejects, folder.failures
    with _progress_bar(show_progress, src.num_rows, backend) as stage.progress:
        written = write_records(stage.run(sft_records(src)), folder.path, kind="sft", multimodal=src.multimodal,
                                scratch=folder.scratch(stage.name))
    check_not_all_failed(stage, written)
    return written


def _reasons(counts) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.most_common()) or "no reason recorded"


def _first_detail(folder: OutputFolder) -> str:
    """The first reject's detail (the folder, rejects file included, is removed on error)."""
    import json

    folder.rejects.flush()
    path = folder.path / REJECTS
    if not path.exists():
        return ""
    with open(path, encoding="utf-8") as f:
        first = json.loads(f.readline() or "{}")
    return f"; first: {first.get('detail')}" if first.get("detail") else ""


class _progress_bar:
    """A rich progress bar fed by completion callbacks: items, rate and completion tokens."""

    def __init__(self, enabled: bool, total: int | None, backend: Backend):
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


OPERATOR_CLASSES = (ResponseGenerator,)
