"""``from synth.backends import OpenAI, Local``: the LLM backends as Python objects (see `synth.api.backends`)."""

from synth.api.backends import Backend, Local, OpenAI

__all__ = ["Backend", "Local", "OpenAI"]
