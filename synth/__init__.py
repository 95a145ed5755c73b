"""synth: build instruction-tuning and preference datasets for text and image-text LLMs.

In Python::

    import synth
    pipeline = synth.Pipeline([synth.ops.Adapt(template="scene_qa_text"), synth.ops.Dedup(threshold=0.8)])
    dataset = pipeline.run("demo/shapes")          # an in-memory datasets.Dataset

`Pipeline`, `ops` (the steps), `backends` (`OpenAI`, `Local`), `read`, `write`, `Rejected` and `Failed`,
and for writing an operator `Map`, `Filter`, `Aggregate`, `LLMTask`, `OperatorConfig`, `ChatRequest` and
`FilePath`, are loaded on first use: ``import synth`` alone stays fast and imports neither torch nor datasets.
"""

__version__ = "0.1.0"

_LAZY = {
    "Pipeline": ("synth.api.pipeline", "Pipeline"),
    "read": ("synth.api.io", "read"),
    "write": ("synth.api.io", "write"),
    "Rejected": ("synth.pipeline.stage", "Rejected"),
    "Failed": ("synth.pipeline.stage", "Failed"),
    "ops": ("synth.ops", None),
    # writing an operator (docs/write-an-operator.md)
    "Map": ("synth.core.operator", "Map"),
    "Filter": ("synth.core.operator", "Filter"),
    "Aggregate": ("synth.core.operator", "Aggregate"),
    "LLMTask": ("synth.core.operator", "LLMTask"),
    "OperatorConfig": ("synth.core.operator", "OperatorConfig"),
    "ChatRequest": ("synth.core.operator", "ChatRequest"),
    "FilePath": ("synth.core.fields", "FilePath"),
    "backends": ("synth.backends", None),
}

__all__ = ["Aggregate", "ChatRequest", "Failed", "FilePath", "Filter", "LLMTask", "Map", "OperatorConfig", "Pipeline",
           "Rejected", "__version__", "backends", "ops", "read", "write"]


def __getattr__(name: str):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'synth' has no attribute '{name}'")
    import importlib

    module = importlib.import_module(target[0])
    value = module if target[1] is None else getattr(module, target[1])
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
