"""The ``prefs`` operator: ``type: prefs`` in recipes and ``synth prefs DATASET --strategy NAME -o OUT``.

Its config is made from the strategies in `STRATEGIES` (one class each, registered by its ``strategy``
name): ``strategy`` picks one, and every option of every strategy's own ``Config`` is a key of the stage
(and a flag of the command), declared and defaulted once, in that strategy's config. A key of another
strategy is an error naming the chosen one's keys. Adding a strategy is its class in `STRATEGIES`: no
branch here, in the CLI or in the runner.

Who answers: ``samplers`` (``[{backend: NAME, temperature: T}]``; default: the stage's backend at the
strategy's ``temperature``); who judges: ``judge`` (default: the first sampler's backend). A backend name
is one of the recipe's ``backends``, or on the command line a model on the command's ``--backend`` /
``--base-url`` (``--judge-model critic``). ``scenes`` names a dataset of captions and boxes per image id.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from synth.core.fields import DatasetRef
from synth.core.operator import Map, OperatorConfig
from synth.errors import SynthError
from synth.prefs.base import PreferenceStage
from synth.prefs.claims import ClaimsStrategy
from synth.prefs.hallucinate import HallucinateStrategy
from synth.prefs.judge import JudgeStrategy
from synth.prefs.pairwise import PairwiseStrategy
from synth.prefs.perturb import PerturbStrategy

#: strategy name → its class (the one list a new strategy is added to)
STRATEGIES: dict[str, type[PreferenceStage]] = {
    cls.strategy: cls for cls in (JudgeStrategy, PairwiseStrategy, ClaimsStrategy, HallucinateStrategy, PerturbStrategy)
}


class SamplerSpec(BaseModel):
    """One model that answers, at one temperature."""

    model_config = ConfigDict(extra="forbid")
    backend: str | None = Field(None, description="its backend (default: the stage's)")
    temperature: float | None = Field(None, ge=0, description="its sampling temperature (default: the strategy's)")


class _PrefsOptions(OperatorConfig):
    """What every strategy shares; the strategies' own options are added by `_options_model`."""

    strategy: Literal[tuple(STRATEGIES)] = Field(  # type: ignore[valid-type]
        description="how pairs are made (each strategy takes the options below that name it)")
    samplers: list[SamplerSpec] = Field(
        default_factory=list, description="who answers: [{backend: NAME, temperature: T}, ...] (default: the "
        "stage's backend at `temperature`); a backend name is a model on the command line")
    judge: str | None = Field(None, description="backend (command line: model) of the judge (default: the first "
                              "sampler's)")
    scenes: DatasetRef | None = Field(
        None, description="dataset with captions/objects by image id (e.g. the demo shapes): images as text for "
        "text-only models, objects for perturb")
    max_length_ratio: float | None = Field(None, gt=1, description="drop pairs whose longer reply is more than this "
                                           "many times the shorter")

    #: the strategies' own options (filled by `_options_model`)
    strategy_fields: ClassVar[frozenset[str]] = frozenset()

    def strategy_config(self):
        """The chosen strategy's own config from the options set here (its defaults for the rest)."""
        cls = STRATEGIES[self.strategy]
        values = {k: getattr(self, k) for k in cls.Config.model_fields if getattr(self, k) is not None}
        return cls.Config(**values)

    @field_validator("strategy", mode="before")
    @classmethod
    def _known_strategy(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in STRATEGIES:
            raise _error(f"unknown strategy '{value}'; choose one of: {', '.join(STRATEGIES)}")
        return value

    @field_validator("samplers")
    @classmethod
    def _sampler_count(cls, value: list, info: ValidationInfo) -> list:
        most = STRATEGIES[info.data["strategy"]].max_samplers if "strategy" in info.data else None
        if most is not None and len(value) > most:
            raise _error(f"strategy '{info.data['strategy']}' uses {most} sampler(s), not {len(value)}")
        return value

    @model_validator(mode="after")
    def _strategy_accepts(self):
        self.strategy_config()  # each option was checked against the strategy's own field already
        return self


def _error(message: str) -> PydanticCustomError:
    return PydanticCustomError("prefs_option", message)


@functools.cache
def _checker(strategy: str, field: str) -> TypeAdapter | None:
    info = STRATEGIES[strategy].Config.model_fields.get(field)
    if info is None:
        return None
    return TypeAdapter(Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation)


def _check_for_strategy(cls, value: Any, info: ValidationInfo) -> Any:
    """A strategy option, set, must be one of the chosen strategy's, and valid as that strategy declares it."""
    strategy = info.data.get("strategy")
    if value is None or strategy is None:  # no strategy: its own error says why
        return value
    checker = _checker(strategy, info.field_name)
    if checker is None:
        raise _error(f"not an option of strategy '{strategy}' (its options: "
                     f"{', '.join(STRATEGIES[strategy].Config.model_fields)})")
    try:
        return checker.validate_python(value)
    except ValidationError as e:
        raise _error(f"{e.errors()[0]['msg']} (strategy '{strategy}')") from None


def _default_text(info) -> str:
    value = info.default_factory() if info.default_factory is not None else info.default
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _options_model() -> type[_PrefsOptions]:
    """`_PrefsOptions` plus each strategy option once: the type (and checks, when every strategy that has it
    agrees) of its config, unset by default so the chosen strategy's own default applies."""
    owners: dict[str, list[tuple[str, Any]]] = {}
    for name, cls in STRATEGIES.items():
        for field, info in cls.Config.model_fields.items():
            owners.setdefault(field, []).append((name, info))
    fields: dict[str, Any] = {}
    for field, declared in owners.items():
        info = declared[0][1]
        same = all(i.metadata == info.metadata for _, i in declared)
        annotation = Annotated[(info.annotation | None, *info.metadata)] if same and info.metadata else info.annotation | None
        said: dict[tuple[str, str], list[str]] = {}  # (description, default) → the strategies that say it
        for name, i in declared:
            said.setdefault((i.description or "", _default_text(i)), []).append(name)
        every = len(declared) == len(STRATEGIES) and len(said) == 1
        description = "; ".join(
            f"{text} ({'every strategy' if every else ', '.join(names)}{'' if default == 'None' else '; default ' + default})"
            for (text, default), names in said.items())
        fields[field] = (annotation, Field(None, description=description))
    check = field_validator(*fields)(_check_for_strategy)
    model = create_model("PrefsConfig", __base__=_PrefsOptions, __doc__=_PrefsOptions.__doc__,
                         __validators__={"_check_for_strategy": check}, **fields)
    model.strategy_fields = frozenset(fields)
    return model


class Prefs(Map):
    """Preference pairs (DPO) from instruction data: a chosen and a rejected reply per prompt.

    Input: SFT records (messages [+ images]) or raw rows with qa / caption columns (the demo shapes data).

    Strategies: judge, pairwise, claims (n sampled responses ranked by an LLM judge); hallucinate (the
    reference vs a rewrite with an injected error); perturb (offline: one visual fact swapped)."""

    name: ClassVar[str] = "prefs"
    Config = _options_model()
    output_kind = "preference"
    cli_flags: ClassVar[dict[str, list[str]]] = {"strategy": ["--strategy", "-s"], "judge": ["--judge-model"]}
    cli_replaced: ClassVar[dict[str, str]] = {
        "--model": "several models: --samplers '[{backend: MODEL_A}, {backend: MODEL_B, temperature: 1.0}]'",
        "--temperature": "several temperatures: --samplers '[{temperature: 0.7}, {temperature: 1.0}]'",
        "--judge-base-url": "a judge on another server: a recipe whose `judge:` names a backend of its own",
        "--judge-backend": "a judge on another backend: a recipe whose `judge:` names a backend of its own",
    }

    @staticmethod
    def asks_llm(config) -> bool:
        return not STRATEGIES[config.strategy].offline

    @staticmethod
    def backend_refs(config) -> list[tuple[tuple, str]]:
        """The backends it asks besides the stage's own: the samplers' and the judge's."""
        used = [(("samplers", i, "backend"), s.backend) for i, s in enumerate(config.samplers) if s.backend]
        return used + ([(("judge",), config.judge)] if config.judge else [])

    @staticmethod
    def origin(record: dict) -> Any:
        """The id of the input record a pair came from (its rows follow the input's order)."""
        from synth.records import load_meta

        meta = load_meta(record.get("meta"))
        return meta.get("source_id") or meta.get("parent_id") or meta.get("prompt_id")

    @classmethod
    def from_config(cls, config, *, backend_factory=None) -> list:
        """The strategy stage (then the length filter when `max_length_ratio` is set)."""
        from synth.prefs.length import LengthBalance
        from synth.prefs.sampling import Sampler, few_shot_for
        from synth.prefs.scene import SceneIndex

        strategy = STRATEGIES[config.strategy]
        options = config.strategy_config()
        scenes = SceneIndex.from_source(config.scenes) if config.scenes else None
        samplers, judge = [], None
        if not strategy.offline:
            if backend_factory is None:
                raise SynthError(f"prefs: strategy '{config.strategy}' needs an LLM backend; pass --backend/--model "
                                 "(or a backend in the recipe)")
            for spec in config.samplers or [SamplerSpec()]:
                backend = backend_factory(spec.backend)
                temperature = spec.temperature if spec.temperature is not None else getattr(options, "temperature", None)
                samplers.append(Sampler(backend, temperature, few_shot_for(backend)))
            judge = backend_factory(config.judge) if config.judge else samplers[0].backend
        stages = [strategy.from_parts(options, samplers=samplers, judge=judge, scenes=scenes)]
        if config.max_length_ratio:
            stages.append(LengthBalance(max_ratio=config.max_length_ratio))
        return stages

    @classmethod
    def run_command(cls, stages: list, dataset: str, out, *, console, split=None, subset=None, revision=None,
                    limit=None, overwrite=False) -> None:
        """``synth prefs``: the preference set with its report.json and usage.json (`build_preferences`)."""
        from synth.prefs.driver import build_preferences

        ratio = stages[1].config.max_ratio if len(stages) > 1 else None
        result = build_preferences(dataset, out, stages[0], split=split, config=subset, revision=revision,
                                   limit=limit, overwrite=overwrite, max_length_ratio=ratio, console=console)
        report = result.report
        console.print(f"wrote {result.pairs:,} pairs ({report['strategy']}) from {report['prompts']:,} prompts to "
                      f"{result.out} in {result.seconds:.1f} s")
        if report["dropped"]:
            console.print(f"  dropped: {', '.join(f'{k}: {v:,}' for k, v in sorted(report['dropped'].items()))} "
                          f"→ {result.rejects}")
        if report["failed"]:
            console.print(f"  [yellow]failed: {', '.join(f'{k}: {v:,}' for k, v in sorted(report['failed'].items()))} "
                          f"→ {result.failures} (rerun the same command to retry them)[/yellow]")


OPERATOR_CLASSES = (Prefs,)
