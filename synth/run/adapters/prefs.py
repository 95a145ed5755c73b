"""``prefs``: preference pairs from instruction data (`synth.prefs`: judge, pairwise, claims, hallucinate,
perturb). Every key beyond the ones below is an option of the strategy (checked against its config).

``samplers`` lists who answers: ``[{backend: NAME, temperature: 0.7}, ...]`` (default: the stage's
``backend`` at 0.7); ``judge`` names the judging backend (default: the first sampler's). ``scenes``
names an output (e.g. the demo data) whose captions and boxes describe each image to text-only models.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from synth.run.adapters.base import StageAdapter
from synth.run.adapters.generate import LLMSpec, Preview, _embedded, estimate
from synth.run.recipe import DEFAULT_BACKEND

STRATEGY_NAMES = ("judge", "pairwise", "claims", "hallucinate", "perturb")


class SamplerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: str = DEFAULT_BACKEND
    temperature: float = Field(0.7, ge=0)


class PrefsSpec(LLMSpec):
    model_config = ConfigDict(extra="allow")
    type: Literal["prefs"]
    input: str
    strategy: Literal[STRATEGY_NAMES]  # type: ignore[valid-type]
    samplers: list[SamplerSpec] = Field(default_factory=list)
    judge: str | None = Field(None, description="backend of the judge (default: the first sampler's)")
    scenes: str | None = Field(None, description="an output with captions/objects per image id (e.g. the demo data)")
    max_length_ratio: float | None = Field(None, gt=1, description="drop pairs whose lengths differ more")
    limit: int | None = Field(None, ge=1, description="only the first N records of the input")

    backend_fields: ClassVar[tuple[str, ...]] = ("backend", "judge")

    def references(self) -> list[tuple[tuple, str]]:
        refs = [(("input",), self.input)]
        if self.scenes:
            refs.append((("scenes",), self.scenes))
        return refs

    def backends_used(self) -> list[tuple[tuple, str]]:
        used = [(("backend",), self.backend)] if self.strategy != "perturb" else []
        used += [(("samplers", i, "backend"), s.backend) for i, s in enumerate(self.samplers)]
        if self.judge:
            used.append((("judge",), self.judge))
        return used

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class PrefsAdapter(StageAdapter):
    type = "prefs"
    Spec = PrefsSpec
    llm = True

    @staticmethod
    def strategy(name: str):
        from synth.prefs import STRATEGIES

        return STRATEGIES[name]

    def uses_llm(self, spec: PrefsSpec) -> bool:
        return spec.strategy != "perturb"

    def inputs(self, spec: PrefsSpec) -> list[str]:
        return [ref for _loc, ref in spec.references()]

    def check(self, spec: PrefsSpec) -> list[tuple[tuple, dict]]:
        from pydantic import ValidationError

        try:
            self.strategy(spec.strategy).Config(**spec.options())
        except ValidationError as e:
            return [(tuple(err.get("loc", ())), err) for err in e.errors()]
        if spec.strategy == "hallucinate" and len(spec.samplers) > 1:
            return [(("samplers",), {"type": "value_error", "msg": "hallucinate rewrites with one backend"})]
        return []

    def known_keys(self, loc: tuple, stage_data: dict) -> list[str]:
        name = stage_data.get("strategy")
        engine = list(self.strategy(name).Config.model_fields) if name in STRATEGY_NAMES else []
        return [*self.Spec.model_fields, *engine] if not loc else list(SamplerSpec.model_fields)

    def make(self, spec: PrefsSpec, ctx):
        from synth.generate.responses import default_few_shot
        from synth.prefs import Sampler, SceneIndex

        cls = self.strategy(spec.strategy)
        config = cls.Config(**{"seed": ctx.seed, **spec.options()})
        scenes = None
        if spec.scenes and ctx.task is not None:
            scenes = SceneIndex.from_source(ctx.task.inputs[1]["path"])
        if spec.strategy == "perturb":
            return cls(config, scenes=scenes)
        samplers_spec = spec.samplers or [SamplerSpec(backend=spec.backend)]
        if spec.strategy == "hallucinate":
            return cls(ctx.backend(samplers_spec[0].backend), config, scenes=scenes)
        samplers = []
        for s in samplers_spec:
            shots = [(e.instruction, e.response) for e in default_few_shot()] if _embedded(ctx, s.backend) else []
            samplers.append(Sampler(ctx.backend(s.backend), s.temperature, shots))
        judge = ctx.backend(spec.judge or samplers_spec[0].backend)
        return cls(samplers, judge, config, scenes=scenes)

    def stages(self, spec: PrefsSpec, ctx, src) -> list:
        from synth.prefs import LengthBalance
        from synth.prefs.perturb import PerturbStrategy, Vocabulary, _quiet_items

        stage = self.make(spec, ctx)
        if isinstance(stage, PerturbStrategy) and stage.vocabulary is None and ctx.task is not None:
            # the values a fact may swap to come from the whole input, so every shard draws from the same ones
            from synth.run.adapters.base import DataRef

            whole = DataRef.from_dict(ctx.task.inputs[0]).open(allow_empty=True)
            stage.vocabulary = Vocabulary.from_items(
                i for r in whole.records(on_bad=lambda stub, error: None) for i in _quiet_items(r, stage.scenes))
        stages = [stage]
        if spec.max_length_ratio:
            stages.append(LengthBalance(max_ratio=spec.max_length_ratio))
        return stages

    def output_layout(self, spec: PrefsSpec, src) -> tuple[str, bool]:
        return "preference", bool(src.multimodal)

    @staticmethod
    def origin(record: dict) -> Any:
        from synth.records import load_meta

        meta = load_meta(record.get("meta"))
        return meta.get("source_id") or meta.get("parent_id") or meta.get("prompt_id")

    def preview(self, spec: PrefsSpec, ctx, records, rows) -> Preview:
        if spec.strategy == "perturb":
            return Preview(note="offline: no requests")
        n = min(rows, spec.limit) if rows is not None and spec.limit else rows
        config = self.strategy(spec.strategy).Config(**spec.options())
        per_prompt = getattr(config, "n", 1) + 1  # samples plus at least one judge request
        return estimate(Preview(note="samples + judge requests per prompt (claims asks more)"),
                        None if n is None else n * per_prompt, 0, getattr(config, "max_tokens", 0))


ADAPTERS = (PrefsAdapter,)
