"""The Python API behind ``import synth``: `Pipeline` (steps run by the recipe runner, to and from recipe
YAML), the steps (`synth.ops`, made from the stage-type registry), the backends (`synth.backends`), and
`read` / `write`. See the README's Python example and docs/python-api.md."""

from synth.api.backends import Backend, Local, OpenAI
from synth.api.io import read, write
from synth.api.pipeline import Pipeline, PipelineRun
from synth.api.steps import Step, step_class, step_types

__all__ = ["Backend", "Local", "OpenAI", "Pipeline", "PipelineRun", "Step", "read", "step_class", "step_types",
           "write"]
