"""LLM layer: one backend interface over OpenAI-compatible servers and in-process transformers models."""

from synth.llm.base import Backend, ChatRequest, Completion, Usage  # noqa: F401
