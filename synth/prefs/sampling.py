"""Sampling the candidate responses a judge ranks, and putting images into requests.

A `Sampler` is one backend (model) at one temperature; a prompt's `n` responses are spread over the
samplers (one request with ``n=k`` each), so several models and temperatures give varied candidates, as
UltraFeedback and VLFeedback sample from a pool of models. Image-text prompts carry their images to a
backend that takes images; a text-only backend gets each image as text (the scene's caption and boxes,
``templates/prompts/prefs/image_as_text.jinja``), or the prompt is dropped (``images_unsupported``) when
no scene is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from synth.llm.base import Backend, ChatRequest, Completion
from synth.pipeline import Rejected
from synth.prefs.base import PrefsConfig
from synth.prefs.items import PromptItem, normalise
from synth.records import ImagePart, Message, TextPart


class SamplingConfig(PrefsConfig):
    """Options of the strategies that sample responses (judge, pairwise, claims)."""

    n: int = Field(4, ge=2, description="responses sampled per prompt, spread over the samplers")
    temperature: float = Field(0.7, ge=0, description="sampling temperature of the samplers that set none; 0 = greedy")
    max_tokens: int = Field(512, ge=1, description="token limit of each sampled response")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling of the responses (default: the server's)")
    keep_truncated: bool = Field(False, description="keep responses cut at max_tokens")
    include_reference: bool = Field(False, description="the dataset's own answer joins the candidates")
    system: str | None = Field(None, description="system prompt for conversations that have none")
    judge_temperature: float = Field(0.0, ge=0, description="sampling temperature of the judge requests; 0 = greedy")
    judge_max_tokens: int = Field(512, ge=8, description="token limit of each judge reply")


@dataclass
class Sampler:
    backend: Backend
    temperature: float = 0.7
    #: solved examples sent before the prompt (base models such as the embedded default need them)
    few_shot: list[tuple[str, str]] = field(default_factory=list)

    @property
    def model(self) -> str:
        return self.backend.model_name


def few_shot_for(backend: Backend) -> list[tuple[str, str]]:
    """The shipped solved examples when `backend` is the embedded base model (it answers best after them);
    none for any other model (a trained adapter included)."""
    from synth.generate.responses import few_shot_examples

    return [(e.instruction, e.response) for e in few_shot_examples(None, backend)]


@dataclass
class Candidate:
    text: str
    model: str
    temperature: float | None = None
    source: str = "sample"  # sample | reference


def share(n: int, k: int) -> list[int]:
    """`n` responses over `k` samplers: as even as possible, the first ones take the remainder."""
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def scene_text(item: PromptItem) -> str:
    from synth.templating import render_file

    return render_file("prompts/prefs/image_as_text.jinja", record_id=item.id, scene=item.scene.as_vars()).strip()


def prompt_messages(item: PromptItem, backend: Backend) -> tuple[list[Message], list[dict]] | Rejected:
    """The prompt as the backend can take it: with its images, or each image as text."""
    messages = []
    sees = bool(getattr(backend, "supports_images", False))
    for m in item.prompt:
        content = m["content"]
        if isinstance(content, str):
            messages.append(Message(role=m["role"], content=content))
            continue
        parts: list[Any] = []
        for p in content:
            if p.get("type") == "image":
                if sees:
                    parts.append(ImagePart())
                elif item.scene is not None:
                    parts.append(TextPart(text=scene_text(item) + "\n"))
                else:
                    return Rejected(
                        "images_unsupported",
                        f"{backend.model_name} takes no images and no scene description is known for this prompt; "
                        "use a vision model or pass --scenes DATASET (captions and boxes by id)",
                    )
            else:
                parts.append(TextPart(text=p.get("text") or ""))
        if not sees:
            messages.append(Message(role=m["role"], content="".join(p.text for p in parts)))
        else:
            messages.append(Message(role=m["role"], content=parts))
    return messages, (list(item.images) if sees else [])


def judge_message(item: PromptItem, backend: Backend, text: str, send_images: bool = True) -> tuple[Message, list[dict], bool]:
    """A judge prompt as one user message: (message, images, whether the images are attached)."""
    text = text.strip()
    attach = send_images and bool(item.images) and bool(getattr(backend, "supports_images", False))
    if attach:
        return Message(role="user", content=[*(ImagePart() for _ in item.images), TextPart(text=text)]), list(item.images), True
    return Message(role="user", content=text), [], False


def template_vars(item: PromptItem, attached: bool) -> dict[str, Any]:
    """What every prefs prompt template gets: the conversation, the image count, the scene."""
    return {
        "turns": item.turns,
        "image_count": len(item.images),
        "images_attached": attached,
        "scene": item.scene.as_vars() if item.scene is not None else None,
    }


def sample_requests(item: PromptItem, samplers: list[Sampler], config: SamplingConfig) -> list[tuple[Backend, ChatRequest]] | Rejected:
    """One request per sampler, asking for its share of the `n` responses."""
    asks = []
    for index, (sampler, k) in enumerate(zip(samplers, share(config.n, len(samplers)))):
        if k == 0:
            continue
        prepared = prompt_messages(item, sampler.backend)
        if isinstance(prepared, Rejected):
            return prepared
        messages, images = prepared
        context: list[Message] = []
        if config.system and messages[0].role != "system":
            context.append(Message(role="system", content=config.system))
        for instruction, response in sampler.few_shot:
            context += [Message(role="user", content=instruction), Message(role="assistant", content=response)]
        if context and messages[0].role == "system":
            context.insert(0, messages.pop(0))
        asks.append((sampler.backend, ChatRequest(
            messages=context + messages,
            images=images,
            temperature=sampler.temperature,
            top_p=config.top_p,
            max_tokens=config.max_tokens,
            n=k,
            seed=config.seed + index,
            key=f"{item.id}:sample:{index}",
        )))
    return asks


def collect_candidates(
    item: PromptItem, samplers: list[Sampler], completions: list[Completion], config: SamplingConfig
) -> tuple[list[Candidate], dict[str, int]]:
    """Usable, distinct candidates (empty, cut-off and repeated responses left out) and what was left out."""
    used = [s for s, k in zip(samplers, share(config.n, len(samplers))) if k]
    candidates: list[Candidate] = []
    if config.include_reference and item.reference:
        candidates.append(Candidate(item.reference, "reference", None, "reference"))
    left_out = {"empty": 0, "truncated": 0, "duplicate": 0}
    seen = {normalise(c.text) for c in candidates}
    for sampler, completion in zip(used, completions, strict=True):
        for index, text in enumerate(completion.texts):
            finish = completion.finish_reasons[index] if index < len(completion.finish_reasons) else "stop"
            text = text.strip()
            if not text:
                left_out["empty"] += 1
            elif finish == "length" and not config.keep_truncated:
                left_out["truncated"] += 1
            elif normalise(text) in seen:
                left_out["duplicate"] += 1
            else:
                seen.add(normalise(text))
                candidates.append(Candidate(text, sampler.model, sampler.temperature))
    return candidates, left_out


def too_few(candidates: list[Candidate], left_out: dict[str, int], config: SamplingConfig) -> Rejected | None:
    """Why fewer than two candidates remain, or None when there are enough."""
    if len(candidates) >= 2:
        return None
    if left_out["duplicate"] and not (left_out["empty"] or left_out["truncated"]):
        return Rejected("identical", f"the {config.n} sampled responses are all the same text")
    detail = ", ".join(f"{k}: {v}" for k, v in left_out.items() if v)
    return Rejected("too_few_responses", f"{len(candidates)} usable response(s) of {config.n}" + (f" ({detail})" if detail else ""))
