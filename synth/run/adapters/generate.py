"""The LLM stage ``generate`` (answers); ``self_instruct`` and ``evolve`` are operators
(`synth.generate.self_instruct`, `synth.generate.evolution.operator`).

Each calls the engine's stage with the run's backend (``backend:`` names one of the recipe's
``backends``; ``default`` is the embedded model unless defined), whose request cache lives in the run
folder: a resumed shard replays every request that finished before the kill.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from synth.generate.responses import FewShotExample, ResponsesConfig
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


ADAPTERS = (GenerateAdapter,)
