"""Pipeline steps, one per registered stage type: ``synth.ops.Adapt``, ``synth.ops.Generate``,
``synth.ops.Dedup``, ``synth.ops.SelfInstruct``, ... (``dir(synth.ops)`` lists them; ``help(synth.ops.Dedup)``
shows a step's options, defaults and descriptions).

The classes are made on first use from the stage-type registry (`synth.run.adapters.registry`), so a stage
type added to synth or by a plugin is a step here without any edit. A step validates its options when it
is built; a ``source`` is not a step: it is what `synth.Pipeline.run` runs on.
"""

import re

_STEP_NAME = re.compile(r"[A-Z][A-Za-z0-9]*")  # what `synth.api.steps.class_name` makes


def __getattr__(name: str):
    # Anything else (OPERATOR_CLASSES, __path__ probes...) is answered without the registry: the registry
    # itself looks modules up while it is being built.
    if not _STEP_NAME.fullmatch(name):
        raise AttributeError(f"module 'synth.ops' has no attribute '{name}'")
    from synth.api.steps import step_class, step_types

    types = step_types()
    if name in types:
        return step_class(types[name])
    raise AttributeError(f"module 'synth.ops' has no step '{name}' (steps: {', '.join(sorted(types))})")


def __dir__() -> list[str]:
    from synth.api.steps import step_types

    return sorted(step_types())
