"""Self-Instruct prompts: jinja files under ``templates/prompts/self_instruct/``, in two layouts.

``continuation`` puts the few-shot list in an assistant prefix that a base model simply continues (the
local backend's default); ``chat`` puts it in the user message, for chat models behind an API.
"""

from __future__ import annotations

from typing import Any

from synth.generate.self_instruct.config import SelfInstructConfig
from synth.llm.base import Backend
from synth.records import Message
from synth.templating import render_file

PROMPTS = "prompts/self_instruct"


def resolve_prompt_style(config: SelfInstructConfig, backend: Backend) -> str:
    if config.prompt_style != "auto":
        return config.prompt_style
    # The local backend runs base models (the embedded default is one), which continue text.
    from synth.llm.local import LocalBackend

    inner = getattr(backend, "inner", backend)  # the request cache wraps the real backend
    return "continuation" if isinstance(inner, LocalBackend) else "chat"


def build_messages(
    task_template: str, examples_template: str, style: str, record_id: str | None = None, **variables: Any
) -> list[Message]:
    """The request messages in the chosen layout; both layouts render the same two templates."""
    task = render_file(f"{PROMPTS}/{task_template}", record_id=record_id, **variables)
    examples = render_file(f"{PROMPTS}/{examples_template}", record_id=record_id, **variables)
    if style == "continuation":
        return [Message(role="user", content=task), Message(role="assistant", content=examples)]
    return [Message(role="user", content=f"{task}\n\n{examples}")]
