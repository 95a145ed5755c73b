"""The one recipe adapter of every registered operator (`synth.core.registry`): nothing per operator.

The stage's spec is made from the operator's config: the config's fields, plus the keys every stage has
(``type``, ``name``, ``shard_size``, ``resources``), ``input`` (the output it reads), ``limit`` (only the
first N records of it) and, for an operator that may ask an LLM, ``backend`` (a name from the recipe's
``backends``). File fields (`synth.core.fields.FilePath`)
resolve against the recipe's folder and their content is part of the fingerprint. An operator that needs
its whole input (an `Aggregate`) runs as one shard; the others shard by record id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

from pydantic import Field, create_model

from synth.core.fields import file_contents, file_fields, resolve_files
from synth.core.operator import (
    build,
    input_layout,
    input_records,
    needs_backend,
    needs_input,
    output_layout,
    summary,
)
from synth.run.adapters.base import Preview, StageAdapter
from synth.run.recipe import DEFAULT_BACKEND, StageSpec


class _LLMStageSpec(StageSpec):
    backend: str = Field(DEFAULT_BACKEND, description="the backend (a name in the recipe's `backends`) it asks")

    backend_fields: ClassVar[tuple[str, ...]] = ("backend",)


def _camel(name: str) -> str:
    return "".join(part.title() for part in name.split("_"))


def spec_model(cls) -> type[StageSpec]:
    """The recipe stage model of operator `cls`: its config's fields + the stage keys."""
    base = _LLMStageSpec if needs_backend(cls) else StageSpec
    reads: dict[str, Any] = {}
    if needs_input(cls):
        reads["input"] = (str, Field(description="the output this stage reads"))
        if "limit" not in cls.Config.model_fields:
            reads["limit"] = (Optional[int], Field(None, ge=1, description="only the first N records of the input"))
    model = create_model(
        f"{_camel(cls.name)}Stage",
        __base__=(base, cls.Config),
        __doc__=summary(cls),
        type=(Literal[cls.name], ...),  # type: ignore[valid-type]
        **reads,
    )
    return model


class OperatorAdapter(StageAdapter):
    """A recipe stage type made from an operator class."""

    def __init__(self, cls):
        self.cls = cls
        self.type = cls.name
        self.Spec = spec_model(cls)
        self.llm = needs_backend(cls)
        self.reads = needs_input(cls)
        self.sharded = self.reads and not cls.needs_all_input
        self.positional = self.reads
        self.version = getattr(cls, "version", 1)
        if hasattr(cls, "origin"):  # records written outside `account` keep their input record's place
            self.origin = cls.origin

    def config(self, spec: StageSpec, ctx=None):
        """The operator's own config from the stage spec (only the config's fields); an unset optional
        ``seed`` takes the run's seed."""
        values = {k: getattr(spec, k) for k in self.cls.Config.model_fields}
        if ctx is not None and "seed" in values and values["seed"] is None:
            values["seed"] = ctx.seed
        return self.cls.Config.model_validate(values)

    def uses_llm(self, spec: StageSpec) -> bool:
        if not self.llm:
            return False
        asks = getattr(self.cls, "asks_llm", None)  # e.g. CapFilt asks a VLM only with its captioner on
        return bool(asks(self.config(spec))) if asks is not None else True

    def backend_name(self, spec: StageSpec) -> str | None:
        return spec.backend if self.uses_llm(spec) else None

    def resolve(self, spec: StageSpec, base_dir: Path) -> StageSpec:
        resolved = resolve_files(self.config(spec), base_dir)
        return spec.model_copy(update={k: getattr(resolved, k) for k in file_fields(self.cls.Config)})

    def fingerprint_extra(self, spec: StageSpec) -> Any:
        config = self.config(spec)
        extra = {"files": file_contents(config)} if file_fields(self.cls.Config) else {}
        hook = getattr(self.cls, "fingerprint_extra", None)
        if hook is not None:
            extra["operator"] = hook(config)
        return extra or None

    def open_options(self, spec: StageSpec) -> dict[str, Any]:
        layout = input_layout(self.cls, self.config(spec))
        return {"layout": layout} if layout else {}

    def records(self, spec: StageSpec, src):
        return input_records(self.cls, src)

    def stages(self, spec: StageSpec, ctx, src) -> list:
        backend = (lambda: ctx.backend(spec.backend)) if self.llm else None
        stage = build(self.cls, self.config(spec, ctx), backend_factory=backend, progress=ctx.llm_progress())
        if src is not None and hasattr(stage, "bind_source"):
            stage.bind_source(src)
        return [stage]

    def output_layout(self, spec: StageSpec, src) -> tuple[str, bool]:
        if src is None:  # an operator that reads no input
            return output_layout(self.cls, self.config(spec), "sft", False)
        return output_layout(self.cls, self.config(spec), src.kind, bool(src.multimodal))

    def execute(self, spec: StageSpec, ctx, inputs: list, folder, tracker) -> dict[str, Any]:
        if self.reads:
            return super().execute(spec, ctx, inputs, folder, tracker)
        from synth.data import write_records
        from synth.run.adapters.base import count_stats, usage_delta, usage_snapshot

        stage = self.stages(spec, ctx, None)[0]
        stage.rejects, stage.failures = folder.rejects, folder.failures
        before = usage_snapshot([stage])
        kind, multimodal = self.output_layout(spec, None)
        rows = write_records(stage.run(iter(())), folder.path, kind=kind, multimodal=multimodal,
                             scratch=folder.scratch("write"))
        if hasattr(stage, "write_files"):
            stage.write_files(folder.path)
        report: dict[str, Any] = {"counts": {**count_stats([stage]), "rows": rows}, "kind": kind,
                                  "multimodal": multimodal, "usage": usage_delta(before, usage_snapshot([stage]))}
        if hasattr(stage, "answered"):
            report["answered"] = stage.answered
        if hasattr(stage, "details"):
            report["details"] = stage.details()
        return report

    def preview(self, spec: StageSpec, ctx, records: list[dict], rows: int | None) -> Preview:
        if not self.uses_llm(spec):
            return Preview()
        from synth.run.adapters.clean import llm_filter_preview

        # an operator that reads no input runs once: its `requests_per_record()` is the whole run's
        return llm_filter_preview(self.stages(spec, ctx, None), records, rows if self.reads else 1)


def operator_adapters(taken: set[str]) -> dict[str, StageAdapter]:
    """An adapter per registered operator whose name no hand-written stage type already takes."""
    from synth.core.registry import operators

    return {name: OperatorAdapter(cls) for name, cls in operators().items() if name not in taken}
