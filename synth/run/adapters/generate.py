"""LLM stages that write samples: ``generate`` (answers) and ``self_instruct`` (``evolve`` is an operator:
`synth.generate.evolution.operator`).

Each calls the engine's stage with the run's backend (``backend:`` names one of the recipe's
``backends``; ``default`` is the embedded model unless defined), whose request cache lives in the run
folder: a resumed shard replays every request that finished before the kill.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from synth.generate.responses import FewShotExample, ResponsesConfig
from synth.generate.self_instruct.config import SelfInstructConfig
from synth.run.adapters.base import Preview, StageAdapter
from synth.run.adapters.sources import resolve_path
from synth.run.recipe import DEFAULT_BACKEND, StageSpec

PREVIEW_RECORDS = 2


# ---------------------------------------------------------------- dry-run helpers


def render_request(request, title: str = "") -> str:
    """A request as text, the way a dry run shows it (images as [image])."""
    lines = [f"--- {title}" if title else "---"]
    for message in request.messages:
        content = message.content
        if isinstance(content, str):
            text = content
        else:
            text = "".join((getattr(p, "text", None) or "") if p.type == "text" else "[image]" for p in content)
        lines.append(f"[{message.role}] {text}")
    return "\n".join(lines)


def request_tokens(request) -> int:
    """A rough prompt size: 4 characters a token (a dry run's estimate, not a tokenizer)."""
    chars = 0
    for message in request.messages:
        content = message.content
        chars += len(content) if isinstance(content, str) else sum(len(getattr(p, "text", None) or "") for p in content)
    return chars // 4 + 8 * len(request.messages) + 256 * len(request.images)


def estimate(preview: Preview, requests: int | None, prompt_tokens: int, max_tokens: int | None) -> Preview:
    if requests is not None:
        preview.requests = requests
        preview.prompt_tokens = requests * prompt_tokens
        preview.completion_tokens = requests * (max_tokens or 0)
    return preview


class LLMSpec(StageSpec):
    backend: str = Field(DEFAULT_BACKEND, description="a name under the recipe's 'backends:'")
    backend_fields: ClassVar[tuple[str, ...]] = ("backend",)


def _embedded(ctx, name: str) -> bool:
    from synth.llm.embedded import EMBEDDED_MODEL

    spec = ctx.backends.get(name, {})
    return spec.get("backend", "local") == "local" and spec.get("model", EMBEDDED_MODEL) == EMBEDDED_MODEL


def engine_fields(spec, config_cls) -> dict[str, Any]:
    return {k: getattr(spec, k) for k in config_cls.model_fields if k in type(spec).model_fields}


# ---------------------------------------------------------------- generate


class GenerateSpec(LLMSpec, ResponsesConfig):
    """Answers for the instructions of `input` (the last assistant turn, or a new one)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["generate"]
    input: str
    few_shot: list[FewShotExample] | str | None = Field(
        None, description="solved examples: a list, a file (instruction/response), or unset: the shipped "
                          "examples for the embedded base model and none for other models")
    limit: int | None = Field(None, ge=1, description="only the first N records of the input")


class GenerateAdapter(StageAdapter):
    type = "generate"
    Spec = GenerateSpec
    llm = True

    def resolve(self, spec: GenerateSpec, base_dir: Path) -> GenerateSpec:
        if isinstance(spec.few_shot, str):
            return spec.model_copy(update={"few_shot": resolve_path(spec.few_shot, base_dir)})
        return spec

    def fingerprint_extra(self, spec: GenerateSpec) -> Any:
        if isinstance(spec.few_shot, str) and Path(spec.few_shot).exists():
            from synth.run.manifest import hash_files

            return hash_files(spec.few_shot)
        return None

    def config(self, spec: GenerateSpec, ctx) -> ResponsesConfig:
        from synth.generate.responses import default_few_shot, load_few_shot

        fields = engine_fields(spec, ResponsesConfig)
        if isinstance(spec.few_shot, str):
            fields["few_shot"] = load_few_shot(spec.few_shot)
        elif spec.few_shot is None:
            fields["few_shot"] = default_few_shot() if _embedded(ctx, spec.backend) else []
        return ResponsesConfig(**fields)

    def stages(self, spec: GenerateSpec, ctx, src) -> list:
        from synth.generate.responses import ResponseGenerator

        return [ResponseGenerator(ctx.backend(spec.backend), self.config(spec, ctx), progress=ctx.llm_progress())]

    def records(self, spec: GenerateSpec, src):
        from synth.generate.responses import sft_records

        return sft_records(src)

    def output_layout(self, spec: GenerateSpec, src) -> tuple[str, bool]:
        return "sft", bool(src.multimodal)

    def preview(self, spec: GenerateSpec, ctx, records, rows) -> Preview:
        stage = self.stages(spec, ctx, None)[0]
        preview, size = Preview(), 0
        for record in records[:PREVIEW_RECORDS]:
            request = stage.format_input(record)
            if hasattr(request, "messages"):
                preview.prompts.append(render_request(request, f"{spec.name}: record {record.get('id')}"))
                size = max(size, request_tokens(request))
        requests = min(rows, spec.limit) if rows is not None and spec.limit else rows
        return estimate(preview, requests, size, (spec.max_tokens or 0) * spec.n)


# ---------------------------------------------------------------- self-instruct


class SelfInstructSpec(LLMSpec, SelfInstructConfig):
    """Self-Instruct from seed tasks: instructions (global ROUGE-L novelty loop), classification, instances;
    the published pipeline's filters and sampling by default (see `SelfInstructConfig`)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["self_instruct"]
    seeds: str | None = Field(None, description="seed tasks (JSONL); default: the 48 shipped ones")

    reference_fields: ClassVar[tuple[str, ...]] = ()


class SelfInstructAdapter(StageAdapter):
    type = "self_instruct"
    Spec = SelfInstructSpec
    llm = True
    sharded = False
    positional = False

    def resolve(self, spec: SelfInstructSpec, base_dir: Path) -> SelfInstructSpec:
        return spec.model_copy(update={"seeds": resolve_path(spec.seeds, base_dir)}) if spec.seeds else spec

    def fingerprint_extra(self, spec: SelfInstructSpec) -> Any:
        from synth.generate.self_instruct import default_seed_path
        from synth.run.manifest import hash_files

        return hash_files(spec.seeds or default_seed_path())

    def make(self, spec: SelfInstructSpec, ctx):
        from synth.generate.self_instruct import SelfInstruct, load_seed_tasks

        return SelfInstruct(ctx.backend(spec.backend), SelfInstructConfig(**engine_fields(spec, SelfInstructConfig)),
                            ctx.llm_progress(), seeds=load_seed_tasks(spec.seeds), show_progress=False)

    def execute(self, spec: SelfInstructSpec, ctx, inputs, folder, tracker) -> dict[str, Any]:
        from synth.generate.self_instruct.driver import write_result
        from synth.run.adapters.base import usage_delta, usage_snapshot

        stage = self.make(spec, ctx)
        stage.rejects, stage.failures = folder.rejects, folder.failures
        before = usage_snapshot([stage])
        result = stage.generate()
        rows = write_result(result, folder) if result.samples else _empty(folder)
        rejected: dict[str, int] = {}
        for step in stage.steps():
            for reason, n in step.stats.dropped.items():
                key = f"{step.name}:{reason}"
                rejected[key] = rejected.get(key, 0) + n
        report = {"counts": {"read": stage.generation.get("parsed", 0), "kept": len(result.tasks), "rows": rows,
                             "rejected": rejected, "failed": dict(stage.stats.failed)},
                  "kind": "sft", "multimodal": False, "details": result.stats,
                  "usage": usage_delta(before, usage_snapshot([stage])), "answered": stage.answered}
        return report

    def preview(self, spec: SelfInstructSpec, ctx, records, rows) -> Preview:
        import random

        stage = self.make(spec, ctx)
        rng = random.Random(spec.seed)
        examples = stage._pick_examples(rng, [])
        request = stage.instruction_request(examples, 0)
        preview = Preview(prompts=[render_request(request, f"{spec.name}: instruction request")])
        # rounds of `concurrency` requests until `count` instructions pass (at least count / new_per_request)
        instruction_requests = -(-spec.count // spec.new_per_request) * 2
        per_task = 2 + (spec.max_instances if spec.responses else 0)  # classification, instances, (answers)
        requests = instruction_requests + spec.count * per_task
        preview.note = "instruction requests: about twice count / new_per_request (novelty rejects some)"
        return estimate(preview, requests, request_tokens(request),
                        max(spec.instruction_max_tokens, spec.instance_max_tokens))


def _empty(folder) -> int:
    from synth.data import write_records

    return write_records(iter(()), folder.path, kind="sft", multimodal=False, scratch=folder.scratch("si"))


ADAPTERS = (GenerateAdapter, SelfInstructAdapter)
