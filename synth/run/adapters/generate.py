"""LLM stages that write samples: ``self_instruct`` and ``evolve`` (Evol-Instruct, MMEvol); ``generate`` (answers)
is an operator (`synth.generate.responses.ResponseGenerator`) run by the generic operator adapter.

Each calls the engine's stage with the run's backend (``backend:`` names one of the recipe's
``backends``; ``default`` is the embedded model unless defined), whose request cache lives in the run
folder: a resumed shard replays every request that finished before the kill.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from synth.generate.self_instruct.config import SelfInstructConfig
from synth.run.adapters.base import Preview, StageAdapter
from synth.run.adapters.sources import resolve_path
from synth.run.spec import DEFAULT_BACKEND, StageSpec

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
        from synth.run.chain import usage_delta, usage_snapshot

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


# ---------------------------------------------------------------- evolve


class EvolveSpec(LLMSpec):
    """Evolution rounds with elimination: ``method: evol-instruct`` (text) or ``mmevol`` (image-text).
    Every other key is an option of that engine (checked against its config)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["evolve"]
    input: str
    method: Literal["evol-instruct", "mmevol"]
    limit: int | None = Field(None, ge=1, description="only the first N records of the input")

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class _TaskProgress:
    """The engine reports progress as rich tasks; this feeds the run's live counters instead."""

    def __init__(self, progress):
        self.progress = progress

    def add_task(self, *args, **kwargs) -> int:
        return 0

    def advance(self, task, n: int = 1) -> None:
        self.progress.add(requests=n)


class EvolveAdapter(StageAdapter):
    type = "evolve"
    Spec = EvolveSpec
    llm = True

    @staticmethod
    def engine(method: str):
        from synth.generate.evolution.driver import ENGINES

        return ENGINES[method]

    def check(self, spec: EvolveSpec) -> list[tuple[tuple, Any]]:
        """Errors of the engine's own options, as (location inside the stage, pydantic error)."""
        from pydantic import ValidationError

        try:
            self.engine(spec.method).Config(**spec.options())
        except ValidationError as e:
            return [(tuple(err.get("loc", ())), err) for err in e.errors()]
        return []

    def known_keys(self, loc: tuple, stage_data: dict) -> list[str]:
        method = stage_data.get("method")
        engine = list(self.engine(method).Config.model_fields) if method in ("evol-instruct", "mmevol") else []
        return [*self.Spec.model_fields, *engine] if not loc else []

    def open_options(self, spec: EvolveSpec) -> dict[str, Any]:
        named = any(k.endswith("_column") and v is not None for k, v in spec.options().items())
        return {"layout": "raw"} if named else {}

    def make(self, spec: EvolveSpec, ctx, src):
        from synth.generate.evolution.driver import make_stage

        config = spec.options()
        if spec.method == "mmevol" and src is not None and src.base_dir is not None:
            config.setdefault("base_dir", str(src.base_dir))
        config.setdefault("seed", ctx.seed)
        progress = _TaskProgress(ctx.progress) if ctx.progress is not None else None
        return make_stage(spec.method, ctx.backend(spec.backend), config, progress)

    def stages(self, spec: EvolveSpec, ctx, src) -> list:
        return [self.make(spec, ctx, src)]

    def output_layout(self, spec: EvolveSpec, src) -> tuple[str, bool]:
        return "sft", spec.method == "mmevol"

    @staticmethod
    def origin(record: dict) -> Any:
        from synth.records import load_meta

        meta = load_meta(record.get("meta"))
        return meta.get("root_id") or meta.get("parent_id")

    def preview(self, spec: EvolveSpec, ctx, records, rows) -> Preview:
        stage = self.make(spec, ctx, None)
        preview, size = Preview(), 0
        for record in records[:PREVIEW_RECORDS]:
            version = stage.seed_version(record)
            if hasattr(version, "root_id"):
                operator = stage.choose_operator(version, 1)
                request = stage.format_evolve_input(version, operator, 1)
                preview.prompts.append(render_request(request, f"{spec.name}: round 1, {operator}, seed {version.root_id}"))
                size = max(size, request_tokens(request))
        cfg = stage.config
        n = min(rows, spec.limit) if rows is not None and spec.limit else rows
        judged = (1 if spec.method == "mmevol" else 1 / cfg.judge_batch_size) if cfg.judge else 0  # mmevol: a judge call per image
        per_seed = cfg.rounds * (1 + judged)
        if spec.method == "evol-instruct":
            per_seed += cfg.rounds  # each kept evolution is answered
        requests = None if n is None else int(round(n * per_seed))
        preview.note = f"{cfg.rounds} round(s); an upper bound: eliminated evolutions stop early"
        return estimate(preview, requests, size, cfg.max_tokens)


ADAPTERS = (SelfInstructAdapter, EvolveAdapter)
