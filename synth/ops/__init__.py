"""Pipeline steps, one per registered stage type: ``synth.ops.Adapt``, ``synth.ops.Generate``,
``synth.ops.Dedup``, ``synth.ops.SelfInstruct``, ... (``dir(synth.ops)`` lists them; ``help(synth.ops.Dedup)``
shows a step's options, defaults and descriptions).

The classes are made on first use from the stage-type registry (`synth.run.adapters.registry`), so a stage
type added to synth or by a plugin is a step here without any edit. A step validates its options when it
is built; a ``source`` is not a step: it is what `synth.Pipeline.run` runs on.
"""

def __getattr__(name: str):
    from synth.api.steps import step_class, step_types

    types = step_types()
    if name in types:
        return step_class(types[name])
    raise AttributeError(f"module 'synth.ops' has no step '{name}' (steps: {', '.join(sorted(types))})")


def __dir__() -> list[str]:
    from synth.api.steps import step_types

    return sorted(step_types())
