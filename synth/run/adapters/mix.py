"""``mix``: weighted samples of several outputs into one train/validation DatasetDict (`synth.mix`).

Each source names an output (``input:``) instead of a path; every other key is `synth.mix`'s: weight or
count, cap, upsample, filters, limit. The mixture's name for a source (``meta.source``) is its ``name``,
else the output's name.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from synth.mix import MixRecipe, MixSource
from synth.run.adapters.base import StageAdapter
from synth.run.spec import DEFAULT_BACKEND, StageSpec


class MixInput(MixSource):
    model_config = ConfigDict(extra="forbid")
    input: str = Field(description="the output to sample from")
    path: str | None = Field(None, exclude=True, description="(set by the runner: the output's folder)")

    @property
    def label(self) -> str:
        return self.name or self.input


class MixSpec(StageSpec, MixRecipe):
    """A weighted mixture of earlier outputs, shuffled and split (see `synth mix`)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["mix"]
    sources: list[MixInput] = Field(default_factory=list)
    seed: int | None = Field(None, description="sampling and shuffle seed (default: the recipe's seed)")
    backend: str = Field(DEFAULT_BACKEND, description="backend of LLM filters in the sources' chains")

    reference_fields: ClassVar[tuple[str, ...]] = ()
    backend_fields: ClassVar[tuple[str, ...]] = ()

    def references(self) -> list[tuple[tuple, str]]:
        return [(("sources", i, "input"), s.input) for i, s in enumerate(self.sources)]


class MixAdapter(StageAdapter):
    type = "mix"
    Spec = MixSpec
    sharded = False
    positional = False

    @classmethod
    def nested_model(cls, loc: tuple, stage_data: dict):
        return MixInput if len(loc) == 2 and loc[0] == "sources" else None

    def execute(self, spec: MixSpec, ctx, inputs, folder, tracker) -> dict[str, Any]:
        from synth.mix import run_mix

        refs = ctx.task.inputs
        sources = [MixSource(**{k: v for k, v in s.model_dump().items() if k in MixSource.model_fields and k != "path"},
                             path=ref["path"]).model_copy(update={"name": s.label})
                   for s, ref in zip(spec.sources, refs)]
        recipe = MixRecipe(sources=sources, total=spec.total, temperature=spec.temperature, dedup=spec.dedup,
                           seed=spec.seed if spec.seed is not None else ctx.seed, validation=spec.validation)
        result = run_mix(recipe, folder.path, recipe_name=spec.name, overwrite=True,
                         backend_factory=lambda: ctx.backend(spec.backend))
        report = result.as_dict()
        read = sum(s.get("read", 0) or 0 for s in report.get("sources", []))
        rows = result.total
        rejected: dict[str, int] = {}
        for source in report.get("sources", []):
            name = source.get("name")
            dropped = {
                "filtered": source["read"] - source["after_filters"],
                "duplicate": source["after_filters"] - source["after_dedup"],
                "not_sampled": max(source["after_dedup"] - (source["in_mix"] - source["upsampled"]), 0),
            }
            rejected.update({f"{name}:{k}": v for k, v in dropped.items() if v})
        kind = "preference" if any(r.get("kind") == "preference" for r in refs) else "sft"
        return {"counts": {"read": read, "kept": rows, "rows": rows, "rejected": rejected, "failed": {}},
                "kind": kind, "multimodal": any(bool(r.get("multimodal")) for r in refs), "details": report}


ADAPTERS = (MixAdapter,)
