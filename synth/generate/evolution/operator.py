"""The ``evolve`` operator (``type: evolve`` in a recipe, ``synth evolve DATASET -o OUT``): ``method`` picks
the engine, Evol-Instruct (text) or MMEvol (image-text), and the rest are that engine's options.

Each engine's config (`EvolInstructConfig`, `MMEvolConfig`) stays the one declaration of its options and
their defaults. `EvolveConfig` is made from them: every option of either engine once, with its type and
description; unset (None) means the chosen method's own default, and an option of the other method is an
error naming it.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

from pydantic import BaseModel, Field, ValidationError, create_model, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from synth.core.operator import OperatorConfig
from synth.generate.evolution.base import EvolutionConfig, EvolutionStage
from synth.generate.evolution.driver import ENGINES

METHODS = tuple(ENGINES)
#: every option of either engine, once
OPTIONS = tuple(dict.fromkeys(name for engine in ENGINES.values() for name in engine.Config.model_fields))


def _shown(value: Any) -> str | None:
    """A default worth printing in the help (a scalar), else None."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if isinstance(value, (int, float, str)) else None


def _default_of(info: FieldInfo) -> Any:
    return info.default_factory() if info.default_factory is not None else info.default


def _option(name: str) -> tuple[Any, FieldInfo]:
    """`evolve`'s field for engine option `name`: optional, described once, its defaults per method told."""
    owners = {m: e.Config.model_fields[name] for m, e in ENGINES.items() if name in e.Config.model_fields}
    info = EvolutionConfig.model_fields.get(name) or next(iter(owners.values()))  # the shared wording first
    text = (info.description or "").rstrip(".")
    if len(owners) < len(ENGINES):
        text = f"{', '.join(owners)}: {text}"
    defaults = {m: _shown(_default_of(i)) for m, i in owners.items()}
    if len(set(defaults.values())) == 1 and None not in defaults.values():
        text += f" (default: {next(iter(defaults.values()))})"
    elif all(v is not None for v in defaults.values()):
        text += " (default: " + ", ".join(f"{v} for {m}" for m, v in defaults.items()) + ")"
    annotation = typing.Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
        annotation = dict[str, Any]  # the engine reads it over its own defaults (e.g. `rules`)
    return Optional[annotation], Field(None, description=text)  # noqa: UP045 (a runtime type)


class _EvolveOptions(OperatorConfig):
    method: Literal["evol-instruct", "mmevol"] = Field(
        "evol-instruct", description="evol-instruct (text instructions) or mmevol (image-text QA)"
    )

    def engine_options(self) -> dict[str, Any]:
        """The options set (not None) for the engine of `method`."""
        return {k: getattr(self, k) for k in OPTIONS if getattr(self, k) is not None}

    @model_validator(mode="after")
    def _options_of_the_method(self):
        engine = ENGINES[self.method].Config
        wrong = [(k, v) for k, v in self.engine_options().items() if k not in engine.model_fields]
        if wrong:
            other = next(m for m in METHODS if m != self.method)
            raise ValidationError.from_exception_data(type(self).__name__, [
                {"type": PydanticCustomError("not_for_method", "not an option of method {method} (only of {other})",
                                             {"method": self.method, "other": other}),
                 "loc": (k,), "input": v} for k, v in wrong])
        engine(**self.engine_options())  # the engine's own checks (known operators, weights, rules)
        return self


EvolveConfig = create_model(
    "EvolveConfig",
    __base__=_EvolveOptions,
    __doc__="Options of `evolve`: the method and that engine's options (unset: the method's default).",
    **{name: _option(name) for name in OPTIONS},
)


class Evolve(EvolutionStage):
    """Evolve instructions (Evol-Instruct) or visual QA (MMEvol) over rounds, keeping what passes elimination.

    ``method: evol-instruct`` evolves text instructions in depth and in breadth and answers each kept one
    (WizardLM's four rounds by default); ``method: mmevol`` evolves the QA items of an image (perception,
    reasoning, interaction; three rounds). Rules and an LLM judge eliminate evolutions that did not get
    harder: they go to rejects.jsonl; failed requests go to failures.jsonl and the next run retries them.
    Output: SFT samples with their lineage (root, parent, operator, round, judge score) in ``meta``.
    """

    # Never run itself: `synth.core.operator.build` (or `from_config`) gives the engine of the method.

    name: ClassVar[str] = "evolve"
    Config = EvolveConfig
    output_kind: ClassVar[str] = "sft"
    #: `synth evolve --forms multi_choice=2,...` (its older spelling) sets interaction_forms
    cli_flags: ClassVar[dict[str, list[str]]] = {"interaction_forms": ["--forms", "--interaction-forms"]}

    @classmethod
    def from_config(cls, config, *, backend_factory=None) -> EvolutionStage:
        engine = ENGINES[config.method]
        backend = backend_factory() if backend_factory is not None else None
        return engine(backend, engine.Config(**config.engine_options()))

    @classmethod
    def run_command(cls, stages: list, dataset: str, out, *, console, split=None, subset=None, revision=None,
                    limit=None, overwrite=False) -> None:
        """``synth evolve``: the evolved set with its own report.json and usage.json (`evolve_dataset`), then
        the end-of-run tables and one line."""
        from synth.data import FAILURES, REJECTS, REPORT
        from synth.generate.evolution.driver import evolve_dataset, open_seeds
        from synth.generate.evolution.report import report_tables
        from synth.llm.factory import report_usage
        from synth.progress import progress

        engine = stages[0]
        options = engine.config.model_dump(exclude_unset=True)  # the method's defaults stay its own
        source = open_seeds(dataset, options, split, limit, subset=subset, revision=revision)
        with progress() as bar:
            report = evolve_dataset(source, out, engine.method, engine.backend, options, overwrite=overwrite,
                                    progress=bar)
        for table in report_tables(report.as_dict()):
            console.print(table)
        report_usage(engine.backend, console=console)
        out = Path(out)
        eliminated = sum(report.eliminated.values()) + sum(report.seeds_skipped.values())
        failed = sum(report.failed.values())
        console.print(f"wrote [bold]{report.written}[/bold] samples to [bold]{out}[/bold]; table in {out / REPORT}"
                      + (f"; {eliminated} eliminated in {out / REJECTS}" if eliminated else "")
                      + (f"; {failed} failed in {out / FAILURES} (a rerun retries them)" if failed else ""))

    @staticmethod
    def input_layout(config) -> str | None:
        """Rows keep their own columns when a ``*_column`` option names one."""
        return "raw" if any(k.endswith("_column") for k in config.engine_options()) else None

    @staticmethod
    def output_multimodal(config) -> bool:
        return config.method == "mmevol"


OPERATOR_CLASSES = (Evolve,)
