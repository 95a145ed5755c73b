"""``pseudo_label``: gated answers for unlabeled questions (`synth.generate.pseudo_label`).

``backend:`` is the labelling model (e.g. a local backend serving last round's adapter); the score gate's
judge is ``judge_backend:`` (default: the same backend). Shards by record; each shard's report carries
the kept share and the label check under ``details`` (the stage's counts have read/kept/rejected).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from synth.generate.pseudo_label import PseudoLabelConfig
from synth.generate.responses import FewShotExample
from synth.run.adapters.base import Preview, StageAdapter
from synth.run.adapters.generate import (
    PREVIEW_RECORDS,
    LLMSpec,
    engine_fields,
    estimate,
    render_request,
    request_tokens,
)
from synth.run.adapters.sources import resolve_path


class PseudoLabelSpec(LLMSpec, PseudoLabelConfig):
    """Sample `samples` answers per question of `input`; keep the majority when the gate passes."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["pseudo_label"]
    input: str
    judge_backend: str | None = Field(None, description="gate score/both: the judge's backend (default: `backend`)")
    few_shot: list[FewShotExample] | str | None = Field(  # type: ignore[assignment]
        None, description="solved examples: a list or a file (instruction/response); default none")
    limit: int | None = Field(None, ge=1, description="only the first N records of the input")

    backend_fields: ClassVar[tuple[str, ...]] = ("backend", "judge_backend")


class PseudoLabelAdapter(StageAdapter):
    type = "pseudo_label"
    Spec = PseudoLabelSpec
    llm = True

    def __init__(self) -> None:
        self._made: dict[int, Any] = {}  # id(shard context) → its engine stage, for the shard's report

    def resolve(self, spec: PseudoLabelSpec, base_dir: Path) -> PseudoLabelSpec:
        updates: dict[str, Any] = {}
        if isinstance(spec.few_shot, str):
            updates["few_shot"] = resolve_path(spec.few_shot, base_dir)
        if spec.judge_template and spec.judge_template.endswith((".jinja", ".j2", ".txt")):
            updates["judge_template"] = resolve_path(spec.judge_template, base_dir)
        return spec.model_copy(update=updates) if updates else spec

    def fingerprint_extra(self, spec: PseudoLabelSpec) -> Any:
        from synth.run.manifest import hash_files

        files = [p for p in (spec.few_shot if isinstance(spec.few_shot, str) else None, spec.judge_template)
                 if p and Path(p).is_file()]
        return hash_files(*files) if files else None

    def config(self, spec: PseudoLabelSpec) -> PseudoLabelConfig:
        from synth.generate.responses import load_few_shot

        fields = engine_fields(spec, PseudoLabelConfig)
        if isinstance(spec.few_shot, str):
            fields["few_shot"] = load_few_shot(spec.few_shot)
        elif spec.few_shot is None:
            fields["few_shot"] = []
        return PseudoLabelConfig(**fields)

    def stages(self, spec: PseudoLabelSpec, ctx, src) -> list:
        from synth.generate.pseudo_label import PseudoLabeler

        judge = ctx.backend(spec.judge_backend) if spec.judge_backend else None
        config = self.config(spec)
        if config.seed is None:
            # Sampled answers follow the recipe's seed (unseeded, they came out differently on every run
            # and every resume: one of the loop's sources of run-to-run variation).
            config = config.model_copy(update={"seed": ctx.seed})
        stage = PseudoLabeler(ctx.backend(spec.backend), config, progress=ctx.llm_progress(), judge_backend=judge)
        self._made[id(ctx)] = stage
        return [stage]

    def records(self, spec: PseudoLabelSpec, src):
        from synth.generate.responses import sft_records

        return sft_records(src)

    def output_layout(self, spec: PseudoLabelSpec, src) -> tuple[str, bool]:
        return "sft", bool(src.multimodal)

    def execute(self, spec: PseudoLabelSpec, ctx, inputs, folder, tracker) -> dict[str, Any]:
        from synth.generate.pseudo_label import stage_report
        from synth.run.shards import run_stage_chain

        try:
            report = run_stage_chain(self, spec, ctx, inputs[0], folder, tracker)
            stage = self._made.get(id(ctx))
        finally:
            self._made.pop(id(ctx), None)
        if stage is not None:
            details = stage_report(stage)
            details.pop("config", None)
            report["details"] = details
        return report

    def merged_report(self, spec: PseudoLabelSpec, report: dict[str, Any]) -> dict[str, Any]:
        # shares of the whole stage, from the counts summed over its shards
        details = report.get("details")
        if isinstance(details, dict):
            details["kept_share"] = _share(details.get("kept"), details.get("asked"))
            check = details.get("label_check")
            if isinstance(check, dict):
                check["kept_accuracy"] = _share(check.get("kept_correct"), check.get("kept"))
                check["majority_accuracy"] = _share(check.get("majority_correct"), check.get("majority"))
        return report

    def preview(self, spec: PseudoLabelSpec, ctx, records, rows) -> Preview:
        stage = self.stages(spec, ctx, None)[0]
        self._made.pop(id(ctx), None)
        preview, size = Preview(), 0
        for record in records[:PREVIEW_RECORDS]:
            if stage.passes_through(record):
                continue
            request = stage.format_input(record)
            if hasattr(request, "messages"):
                preview.prompts.append(render_request(request, f"{spec.name}: record {record.get('id')} "
                                                               f"(n={spec.samples})"))
                size = max(size, request_tokens(request))
        requests = min(rows, spec.limit) if rows is not None and spec.limit else rows
        preview.note = f"{spec.samples} samples per question; gate {spec.gate}"
        if spec.gate != "agreement" and requests is not None:
            preview.note += " (plus one judge request per kept question)"
        return estimate(preview, requests, size, spec.max_tokens * spec.samples)


ADAPTERS = (PseudoLabelAdapter,)


def _share(part: Any, whole: Any) -> float | None:
    return round(part / whole, 4) if isinstance(part, int) and isinstance(whole, int) and whole else None
