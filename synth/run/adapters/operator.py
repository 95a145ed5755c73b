"""The one recipe adapter of every registered operator (`synth.core.registry`): nothing per operator.

The stage's spec is made from the operator's config: the config's fields, plus the keys every stage has
(``type``, ``name``, ``shard_size``, ``resources``), ``input`` (the output it reads) and, for an operator that
may ask an LLM, ``backend`` (a name from the recipe's ``backends``), and ``limit`` (only the first N records
of the input) unless the config declares one. File fields (`synth.core.fields.FilePath`) resolve against the
recipe's folder and their content is part of the fingerprint; dataset fields (`DatasetRef`) name other
stages' outputs, which run first and whose folders the operator gets. An operator that needs its whole
input (an `Aggregate`) runs as one shard; the others shard by record id. An operator with a ``map_dataset``
hook gets each shard as an Arrow dataset instead of records (`execute`). An operator that reads no dataset
(``needs_input = False``) has no ``input`` or ``limit`` key and runs once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, create_model

from synth.core.fields import dataset_fields, file_contents, file_fields, resolve_files
from synth.core.operator import (
    build,
    class_name,
    input_layout,
    input_records,
    needs_backend,
    needs_input,
    output_layout,
    summary,
)
from synth.run.adapters.base import Preview, StageAdapter
from synth.run.spec import DEFAULT_BACKEND, StageSpec


class _OperatorSpec(StageSpec):
    """A stage spec made from an operator's config: its dataset fields are references to other outputs,
    and its ``backend_refs(config)`` hook names the backends it asks besides ``backend``."""

    operator: ClassVar[Any] = None

    def operator_config(self):
        return self.operator.Config.model_validate({k: getattr(self, k) for k in self.operator.Config.model_fields})

    def references(self) -> list[tuple[tuple, str]]:
        refs = super().references()
        for key in dataset_fields(self.operator.Config):
            if isinstance(getattr(self, key), str):
                refs.append(((key,), getattr(self, key)))
        return refs

    def backends_used(self) -> list[tuple[tuple, str]]:
        asks = getattr(self.operator, "asks_llm", None)
        if asks is not None and not asks(self.operator_config()):  # e.g. prefs' offline perturb strategy
            return []
        used = super().backends_used()
        hook = getattr(self.operator, "backend_refs", None)
        return used + (list(hook(self.operator_config())) if hook is not None else [])


class _LLMStageSpec(_OperatorSpec):
    backend: str = Field(DEFAULT_BACKEND, description="the backend (a name in the recipe's `backends`) it asks")

    backend_fields: ClassVar[tuple[str, ...]] = ("backend",)


def spec_model(cls) -> type[StageSpec]:
    """The recipe stage model of operator `cls`: its config's fields + the stage keys."""
    base = _LLMStageSpec if needs_backend(cls) else _OperatorSpec
    stage_keys: dict[str, Any] = {}
    if needs_input(cls):
        stage_keys["input"] = (str, Field(description="the output this stage reads"))
        if "limit" not in cls.Config.model_fields:
            stage_keys["limit"] = (int | None, Field(None, ge=1, description="only the first N records of the input"))
    model = create_model(
        f"{class_name(cls.name)}Stage",
        __base__=(base, cls.Config),
        __doc__=summary(cls),
        type=(Literal[cls.name], ...),  # type: ignore[valid-type]
        **stage_keys,
    )
    model.operator = cls
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
        self.origin = getattr(cls, "origin", None)  # places records made outside `account` (the Tracker)

    def config(self, spec: StageSpec, ctx=None):
        """The operator's own config from the stage spec (only the config's fields); an unset optional
        ``seed`` takes the run's seed; a dataset field the folder of the output it names (none in a dry run,
        where that output may not exist yet)."""
        values = {k: getattr(spec, k) for k in self.cls.Config.model_fields}
        if ctx is not None and "seed" in values and values["seed"] is None:
            values["seed"] = ctx.seed
        if ctx is not None:
            refs = [ref for _loc, ref in spec.references()]
            for key in dataset_fields(self.cls.Config):
                if values[key] is not None:
                    task = ctx.task
                    values[key] = task.inputs[refs.index(values[key])]["path"] if task is not None else None
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
        backend = (lambda name=None: ctx.backend(name or spec.backend)) if self.llm else None
        built = build(self.cls, self.config(spec, ctx), backend_factory=backend, progress=ctx.llm_progress())
        stages = built if isinstance(built, list) else [built]
        if hasattr(stages[0], "prepare") and ctx.task is not None and self.reads:
            from synth.run.adapters.base import DataRef

            # the whole input, not the shard: every shard then prepares alike
            stages[0].prepare(DataRef.from_dict(ctx.task.inputs[0]).open(allow_empty=True, **self.open_options(spec)))
        return stages

    def output_layout(self, spec: StageSpec, src) -> tuple[str, bool]:
        if src is None:  # an operator that reads no input
            return output_layout(self.cls, self.config(spec), "sft", False)
        return output_layout(self.cls, self.config(spec), src.kind, bool(src.multimodal))

    def execute(self, spec: StageSpec, ctx, inputs: list, folder, tracker) -> dict[str, Any]:
        if not self.reads:
            return self._execute_alone(spec, ctx, folder)
        if not hasattr(self.cls, "map_dataset"):
            return super().execute(spec, ctx, inputs, folder, tracker)
        import numpy as np

        from synth.data import save

        src = inputs[0]
        stage = self.stages(spec, ctx, src)[0]  # prepared with the whole input
        label = (ctx.task.inputs[0].get("stage") if ctx.task else None) or src.name  # meta.source: the stage read
        result = stage.map_dataset(src.dataset, name=label, label=label, base_dir=src.base_dir,
                                   scratch=folder.scratch(self.type))
        for reject in result.rejects:
            more = {k: v for k, v in reject.items() if k not in ("id", "stage", "reason", "detail")}
            folder.rejects.write(reject["id"], stage.name, reject["reason"], reject["detail"], **more)
        save(result.dataset, folder.path)
        if ctx.progress is not None:
            ctx.progress.add(records=result.read)
        positions = tracker.global_positions if tracker.global_positions is not None else np.arange(result.read)
        rows_from = np.asarray(result.rows_from, dtype=np.int64)
        tracker.positions, tracker.ok = np.asarray(positions)[rows_from].tolist(), True
        # kept: the input records that gave at least one output row
        return {"counts": {"read": result.read, "kept": len(set(rows_from.tolist())), "rows": len(result.dataset),
                           "rejected": result.rejected, "failed": {}},
                "kind": getattr(self.cls, "output_kind", None) or src.kind, "multimodal": result.multimodal}

    def _execute_alone(self, spec: StageSpec, ctx, folder) -> dict[str, Any]:
        """An operator that reads no dataset: one run of ``run(iter(()))``, then its ``write_files``."""
        from synth.data import write_records
        from synth.run.chain import count_stats, usage_delta, usage_snapshot

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

    def sample(self, spec: StageSpec, ctx, records: list[dict], src) -> list[dict] | None:
        if not hasattr(self.cls, "map_dataset"):
            return super().sample(spec, ctx, records, src)
        from datasets import Dataset

        from synth.data.reader import Source

        stage = self.stages(spec, ctx, src)[0]  # a bad option (a broken template file) is an error now
        if src is not None and hasattr(stage, "prepare"):
            stage.prepare(src)
        try:  # a dry run shows what a few rows give; the run itself reports bad rows
            result = stage.map_dataset(Dataset.from_list(records), name=spec.input, label=spec.input,
                                       base_dir=src.base_dir if src is not None else None, scratch=None)
            kind = getattr(self.cls, "output_kind", None)
            layout = {"sft": "messages", "preference": "preference"}.get(kind, "raw")
            return list(Source(spec.name, result.dataset, None, layout).records())
        except Exception:
            return None

    def merged_report(self, spec: StageSpec, report: dict[str, Any]) -> dict[str, Any]:
        hook = getattr(self.cls, "merged_details", None)
        if hook is not None and isinstance(report.get("details"), dict):
            report["details"] = hook(report["details"])
        return report

    def preview(self, spec: StageSpec, ctx, records: list[dict], rows: int | None) -> Preview:
        if not self.uses_llm(spec):
            return Preview()
        from synth.run.adapters.clean import llm_filter_preview

        # an operator that reads no input runs once: its `requests_per_record()` is the whole run's
        return llm_filter_preview(self.stages(spec, ctx, None), records, rows if self.reads else 1, title=spec.name)


def operator_adapters(taken: set[str]) -> dict[str, StageAdapter]:
    """An adapter per registered operator whose name no hand-written stage type already takes."""
    from synth.core.registry import operators

    return {name: OperatorAdapter(cls) for name, cls in operators().items() if name not in taken}
