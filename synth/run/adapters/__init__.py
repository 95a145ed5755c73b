"""Stage types of a recipe, each a thin adapter over an engine's library code (see `base.StageAdapter`).

=============  ===========================================================  =================
type           engine                                                       shards
=============  ===========================================================  =================
source         `synth.data.open_source` (local path or Hub id)              (reads in place)
demo           `synth.demo_data` (the offline shapes dataset)               one
filter         `synth.clean.registry` filter chains                         by record (one with dedup)
mix            `synth.mix`                                                  one
export         `synth.export` (TRL, LLaMA-Factory, LLaVA, OpenAI)           one
push           `synth.publish` (the Hub)                                    one
=============  ===========================================================  =================

Every registered operator (`synth.core.registry`: adapt, generate, pseudo_label, evolve, self_instruct, dedup,
decontaminate, length, judge, capfilt, prefs, ... and plugins') is a stage type too, through the one generic
`synth.run.adapters.operator.OperatorAdapter`.
"""

from __future__ import annotations

from synth.run.adapters.base import StageAdapter

_REGISTRY: dict[str, StageAdapter] = {}

MODULES = ("sources", "clean", "mix", "export", "push")


def registry() -> dict[str, StageAdapter]:
    """Stage type → adapter (one instance each), imported on first use."""
    if not _REGISTRY:
        import importlib

        found: dict[str, StageAdapter] = {}
        for module in MODULES:
            mod = importlib.import_module(f"synth.run.adapters.{module}")
            for adapter in getattr(mod, "ADAPTERS", ()):
                found[adapter.type] = adapter()
        from synth.run.adapters.operator import operator_adapters

        found.update(operator_adapters(set(found)))
        _REGISTRY.update(found)
    return _REGISTRY


__all__ = ["StageAdapter", "registry"]
