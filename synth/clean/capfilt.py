"""CapFilt: score image-text pairs with an image-text model and drop mismatches (BLIP's caption filter).

Each record's first image and one text (a caption column, the assistant answer, or the whole conversation)
are embedded by a CLIP / SigLIP family model loaded through transformers; the score is the cosine
similarity of the two embeddings. Records are kept by an absolute `threshold`, by `top_fraction` (the best
scoring share of the input), or both; with neither, every record is kept and only scored.

Optional captioner (BLIP's bootstrapping): a vision-language backend writes a synthetic caption for each
image (prompt: ``templates/prompts/capfilt/caption.jinja``); both captions are scored, the better one is
kept, and ``meta.capfilt_winner`` says which ("original" or "synthetic").

Input: records with an image (``images[0]`` or ``image``, as ``{"bytes", "path"}`` refs; decoded here, the
only place pixels are needed) and the text chosen by `text`.
Output: the same records with ``meta.scores.capfilt`` (the kept caption's score) and, with the captioner,
``meta.capfilt`` (both scores, ``synthetic_caption``, and ``original_caption`` when it was replaced) and the
caption (or last assistant answer) replaced when the synthetic one won. A captioner request that failed
is a `Failed` (``failures.jsonl``; retried by the next run), not a drop; an empty caption keeps the original.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from synth.clean.common import _content_text, record_images, turns
from synth.errors import SynthError
from synth.pipeline import Aggregate, Failed, Map, Rejected, StageConfig, batched
from synth.records import load_meta

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
CAPTION_TEMPLATE = "prompts/capfilt/caption.jinja"


class CapFiltConfig(StageConfig):
    model: str = Field(DEFAULT_MODEL, description="image-text model: Hub id or local path (CLIP / SigLIP family)")
    text: Literal["auto", "caption", "answer", "conversation"] = Field(
        "auto",
        description="text scored against the image: a caption column (raw data), the last assistant answer, "
        "or all turns; auto = answer for chat records, caption column otherwise",
    )
    caption_column: str = "caption"
    image_column: str = "image"
    image_root: str | None = Field(None, description="folder that relative image paths are resolved against")
    threshold: float | None = Field(None, description="keep records whose score is at least this (cosine, -1..1)")
    top_fraction: float | None = Field(None, gt=0, le=1, description="keep this best-scoring share of the input")
    batch_size: int = Field(32, ge=1)
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, mps")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    # Captioner (BLIP bootstrapping): needs a backend that takes images.
    captioner: bool = False
    caption_template: str = CAPTION_TEMPLATE
    caption_max_tokens: int = Field(64, ge=1)
    caption_temperature: float | None = None

    @model_validator(mode="after")
    def _captioner_needs_a_caption(self):
        if self.captioner and self.text == "conversation":
            raise ValueError("captioner cannot replace a whole conversation; use text: caption or answer")
        return self


# ---------------------------------------------------------------- the image-text model


def _pick_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class ImageTextScorer:
    """Embeds images and texts with a CLIP / SigLIP model and returns pairwise cosine similarities."""

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto"):
        import torch
        from transformers import AutoModel, AutoProcessor

        self.model_id = model
        self.device = _pick_device(device)
        if dtype == "auto":
            dtype = "float16" if self.device.startswith("cuda") else "float32"
        try:
            self.processor = AutoProcessor.from_pretrained(model)
            self.model = AutoModel.from_pretrained(model, dtype=getattr(torch, dtype))
        except Exception as e:
            raise SynthError(
                f"capfilt: cannot load image-text model '{model}': {str(e).strip().splitlines()[0][:300]}; "
                "pass a CLIP or SigLIP model id (e.g. openai/clip-vit-base-patch32) or a local folder"
            ) from e
        if not (hasattr(self.model, "get_image_features") and hasattr(self.model, "get_text_features")):
            raise SynthError(
                f"capfilt: '{model}' ({type(self.model).__name__}) is not a dual image-text encoder; "
                "use a CLIP or SigLIP family model"
            )
        self.model.to(self.device).eval()
        text_config = getattr(self.model.config, "text_config", None)
        self.max_text_tokens = getattr(text_config, "max_position_embeddings", None)
        # SigLIP was trained on texts padded to the full length; CLIP pads to the longest in the batch.
        self.pad_to_max = "siglip" in getattr(self.model.config, "model_type", "")

    @staticmethod
    def _pooled(output):
        import torch

        # transformers 5 returns a model output whose pooler_output is the projection; 4.x a tensor.
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    def embed_images(self, images: Sequence[Any]):
        import torch

        inputs = self.processor(images=list(images), return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, self.model.dtype)
        with torch.inference_mode():
            features = self._pooled(self.model.get_image_features(pixel_values=pixel_values))
        return torch.nn.functional.normalize(features.float(), dim=-1)

    def embed_texts(self, texts: Sequence[str]):
        import torch

        inputs = self.processor(
            text=list(texts),
            return_tensors="pt",
            padding="max_length" if self.pad_to_max else True,
            truncation=True,
            max_length=self.max_text_tokens,
        )
        inputs = {k: v.to(self.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            features = self._pooled(self.model.get_text_features(**inputs))
        return torch.nn.functional.normalize(features.float(), dim=-1)

    def score_pairs(self, images: Sequence[Any], texts: Sequence[str]) -> list[float]:
        """Cosine similarity of image i with text i, for each i."""
        image_embeddings = self.embed_images(images)
        text_embeddings = self.embed_texts(texts)
        return (image_embeddings * text_embeddings).sum(dim=-1).tolist()


@functools.lru_cache(maxsize=2)
def load_scorer(model: str, device: str = "auto", dtype: str = "auto") -> ImageTextScorer:
    """One loaded model per (model, device, dtype), shared by every CapFilt stage in the process."""
    return ImageTextScorer(model, device, dtype)


# ---------------------------------------------------------------- the stage


def _answer_message(record: dict) -> dict | None:
    """The last assistant message of an SFT sample (or of a pair's chosen reply)."""
    for key in ("messages", "chosen"):
        messages = record.get(key)
        if isinstance(messages, (list, tuple)):
            for message in reversed(messages):
                if message.get("role") == "assistant":
                    return message
    return None


def _with_text(content: Any, text: str) -> Any:
    """Content with its text replaced; image parts stay where they were."""
    if isinstance(content, str) or content is None:
        return text
    out, placed = [], False
    for part in content:
        if part.get("type") != "text":
            out.append(part)
        elif not placed:
            out.append({**part, "text": text})
            placed = True
    if not placed:
        out.append({"type": "text", "text": text})
    return out


class CapFilt(Map):
    """Keep image-text pairs whose image-text similarity passes a threshold or is in the top fraction.

    A Map, not a Filter: every kept record leaves with its score in ``meta`` and, with the captioner, maybe
    a better caption. With ``top_fraction`` the stage must see its whole input before it can answer:
    ``CapFilt(top_fraction=...)`` is then a `CapFiltTopFraction` (an `Aggregate`).
    """

    name: ClassVar[str] = "capfilt"
    Config: ClassVar[type[StageConfig]] = CapFiltConfig
    #: the defaults of `image_column` / `caption_column`; the text written is the caption or the answer
    reads: ClassVar[tuple[str, ...]] = ("images", "image", "caption", "messages", "chosen", "meta")
    writes: ClassVar[tuple[str, ...]] = ("meta", "caption", "messages", "chosen")

    def __new__(cls, config: CapFiltConfig | dict | None = None, **overrides: Any):
        # The top fraction is relative to the whole input: that variant is an Aggregate.
        if cls is CapFilt:
            fraction = getattr(config, "top_fraction", None) if isinstance(config, StageConfig) else (config or {}).get("top_fraction")
            if overrides.get("top_fraction", fraction) is not None:
                cls = CapFiltTopFraction
        return super().__new__(cls)

    def __init__(self, config: CapFiltConfig | dict | None = None, *, backend=None, **overrides: Any):
        super().__init__(config, **overrides)
        self.backend = backend
        self.answered = 0  # captioner requests that came back (to tell "all failed" from "some failed")
        if self.config.captioner:
            if backend is None:
                raise SynthError(
                    "capfilt: captioner: true needs a vision-language backend "
                    "(CapFilt(..., backend=...); on the command line --model and --base-url)"
                )
            if not getattr(backend, "supports_images", False):
                raise SynthError(
                    f"capfilt: the captioner backend '{getattr(backend, 'model_name', '?')}' does not take images; "
                    "use a vision-language model"
                )

    @classmethod
    def from_config(cls, config: CapFiltConfig, *, backend_factory=None) -> CapFilt:
        """Registry hook: the backend is built only when the captioner is on."""
        backend = None
        if config.captioner:
            if backend_factory is None:
                raise SynthError(
                    "capfilt: captioner: true needs a vision-language backend; pass --model (and --base-url) "
                    "for an OpenAI-compatible VLM server"
                )
            backend = backend_factory()
        return cls(config, backend=backend)

    @property
    def scorer(self) -> ImageTextScorer:
        return load_scorer(self.config.model, self.config.device, self.config.dtype)

    # -- what is scored

    def _text_mode(self, record: dict) -> str:
        if self.config.text != "auto":
            return self.config.text
        return "answer" if _answer_message(record) is not None else "caption"

    def text_of(self, record: dict) -> str:
        mode = self._text_mode(record)
        if mode == "conversation":
            return "\n".join(text for _, text in turns(record))
        if mode == "answer":
            message = _answer_message(record)
            return _content_text(message.get("content")) if message else ""
        if self.config.caption_column not in record:
            raise SynthError(
                f"capfilt: record {record.get('id', '?')} has no column '{self.config.caption_column}' "
                f"(columns: {', '.join(sorted(record))}); set caption_column or text: answer"
            )
        return str(record[self.config.caption_column] or "")

    def _set_text(self, record: dict, text: str) -> dict:
        record = dict(record)
        if self._text_mode(record) == "caption":
            record[self.config.caption_column] = text
            return record
        for key in ("messages", "chosen"):
            messages = record.get(key)
            if isinstance(messages, (list, tuple)) and any(m.get("role") == "assistant" for m in messages):
                messages = [dict(m) for m in messages]
                last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
                messages[last]["content"] = _with_text(messages[last].get("content"), text)
                record[key] = messages
                return record
        return record

    def image_source(self, record: dict):
        """The record's first image as records carry it (``{"bytes", "path"}`` or PIL), or None.
        A path (records built in memory) resolves inside `image_root`, never the working directory."""
        from synth.data.images import image_ref

        images = record_images(record)
        if not images and self.config.image_column in record:
            images = [record[self.config.image_column]]
        if not images or images[0] is None:
            return None
        value = images[0]
        if hasattr(value, "save") and hasattr(value, "mode"):  # a PIL image
            return value
        if isinstance(value, dict) and value.get("bytes"):
            return value
        return image_ref(value, self.config.image_root, str(record.get("id", "?")))

    def image_of(self, record: dict):
        """The record's first image decoded to RGB pixels (the one place CapFilt decodes), or None."""
        from synth.data.images import decode_image

        source = self.image_source(record)
        return None if source is None else decode_image(source, None, str(record.get("id", "?")))

    # -- scoring

    def _caption_requests(self, records: list[dict], images: list, originals: list[str]):
        from synth.llm.base import ChatRequest
        from synth.records import ImagePart, Message, TextPart
        from synth.templating import render

        template, name = self._caption_prompt
        requests = []
        for record, image, original in zip(records, images, originals, strict=True):
            prompt = render(template, {"caption": original}, name, record.get("id"))
            requests.append(
                ChatRequest(
                    messages=[Message(role="user", content=[ImagePart(), TextPart(text=prompt)])],
                    images=[image],
                    max_tokens=self.config.caption_max_tokens,
                    temperature=self.config.caption_temperature,
                    key=record.get("id"),
                )
            )
        return requests

    @functools.cached_property
    def _caption_prompt(self):
        """The caption prompt template and its name (for errors)."""
        from synth.templating import compile_template, load_template

        path = Path(self.config.caption_template)
        # A file the user points at wins; otherwise the name is looked up under templates/.
        if path.is_file():
            return compile_template(path.read_text(encoding="utf-8"), str(path)), str(path)
        return load_template(self.config.caption_template), self.config.caption_template

    def score_batch(self, records: Sequence[dict]) -> list[dict | Rejected | Failed]:
        """Score one batch: each record comes back annotated (meta.scores.capfilt), rejected, or failed
        (its captioner request failed: retried by the next run)."""
        from synth.data.images import decode_image
        from synth.pipeline.llm_task import failure_of

        results: list[dict | Rejected | Failed | None] = [None] * len(records)
        ready, sources, images, texts = [], [], [], []
        for i, record in enumerate(records):
            text = self.text_of(record).strip()
            try:
                source = self.image_source(record)
                image = None if source is None else decode_image(source, None, str(record.get("id", "?")))
            except SynthError as e:  # a broken image drops its record, not the run
                results[i] = Rejected("bad_image", str(e))
                continue
            if image is None:
                results[i] = Rejected("no_image", "record has no image to score")
            elif not text:
                results[i] = Rejected("no_text", f"empty {self._text_mode(record)} text")
            else:
                ready.append(i)
                sources.append(source)
                images.append(image)
                texts.append(text)

        scores = self.scorer.score_pairs(images, texts) if ready else []
        synthetic: list[str | None] = [None] * len(ready)
        synthetic_scores: list[float | None] = [None] * len(ready)
        notes: list[str | None] = [None] * len(ready)
        if self.config.captioner and ready:
            batch_records = [records[i] for i in ready]
            # The encoded image goes to the server (no re-encoding of the decoded pixels).
            completions = self.backend.complete(self._caption_requests(batch_records, sources, texts))
            scored = []
            for j, completion in enumerate(completions):
                if not completion.ok:
                    results[ready[j]] = failure_of(completion)
                    continue
                self.answered += 1
                caption = completion.text.strip()
                if caption:
                    synthetic[j] = caption
                    scored.append(j)
                else:
                    notes[j] = "empty caption"  # the model answered nothing: the original stays
            if scored:
                new_scores = self.scorer.score_pairs([images[j] for j in scored], [synthetic[j] for j in scored])
                for j, score in zip(scored, new_scores, strict=True):
                    synthetic_scores[j] = score

        for j, i in enumerate(ready):
            if results[i] is not None:  # failed above
                continue
            record = dict(records[i])
            meta = dict(load_meta(record.get("meta")))
            meta["scores"] = {**meta.get("scores", {}), "capfilt": scores[j]}
            if self.config.captioner:
                record, meta = self._pick_caption(record, meta, texts[j], scores[j], synthetic[j], synthetic_scores[j], notes[j])
            record["meta"] = meta
            results[i] = record
        return [r for r in results if r is not None]

    def _pick_caption(self, record, meta, original, original_score, synthetic, synthetic_score, note):
        info: dict[str, Any] = {"original_score": original_score, "synthetic_score": synthetic_score}
        if synthetic is not None:
            info["synthetic_caption"] = synthetic
        if note:
            info["captioner_error"] = note
        # Ties keep the original: a synthetic caption must be strictly better to replace real data.
        if synthetic is not None and synthetic_score > original_score:
            meta["capfilt_winner"] = "synthetic"
            meta["scores"]["capfilt"] = synthetic_score
            info["original_caption"] = original
            record = self._set_text(record, synthetic)
        else:
            meta["capfilt_winner"] = "original"
        meta["capfilt"] = info
        return record, meta

    # -- keep or drop

    def _threshold_verdict(self, result: dict | Rejected | Failed) -> dict | Rejected | Failed:
        if isinstance(result, (Rejected, Failed)):
            return result
        score = result["meta"]["scores"]["capfilt"]
        if self.config.threshold is not None and score < self.config.threshold:
            return Rejected("low_score", f"score {score:.4f} < threshold {self.config.threshold}")
        return result

    def process(self, record: dict) -> dict | Rejected | Failed:
        return self._threshold_verdict(self.score_batch([record])[0])

    def run(self, records: Iterable[dict]) -> Iterator[dict]:
        for batch in batched(records, self.config.batch_size):
            for record, result in zip(batch, self.score_batch(batch), strict=True):
                yield from self.account(record, self._threshold_verdict(result))


class CapFiltTopFraction(CapFilt, Aggregate):
    """CapFilt keeping the best-scoring `top_fraction` of its whole input (and, with `threshold`, only
    those at or above it). Scores everything first, then answers in input order."""

    def run(self, records: Iterable[dict]) -> Iterator[dict]:
        scored: list[tuple[dict, dict | Rejected | Failed]] = []
        for batch in batched(records, self.config.batch_size):
            scored.extend(zip(batch, self.score_batch(batch), strict=True))
        keep = top_fraction_indices(
            [r["meta"]["scores"]["capfilt"] if isinstance(r, dict) else None for _, r in scored],
            self.config.top_fraction,
        )
        cutoff = min((scored[i][1]["meta"]["scores"]["capfilt"] for i in keep), default=None)
        for index, (record, result) in enumerate(scored):
            if isinstance(result, dict) and index not in keep:
                score = result["meta"]["scores"]["capfilt"]
                result = Rejected(
                    "below_top_fraction",
                    f"score {score:.4f} not in the top {self.config.top_fraction:g} (cutoff {cutoff:.4f})",
                )
            yield from self.account(record, self._threshold_verdict(result))


def top_fraction_indices(scores: Sequence[float | None], fraction: float) -> set[int]:
    """Indices of the ceil(fraction * n) best scores among the scored (None = unscored); ties by order."""
    scored = [(i, s) for i, s in enumerate(scores) if s is not None]
    count = math.ceil(fraction * len(scored) - 1e-9)
    ranked = sorted(scored, key=lambda item: (-item[1], item[0]))
    return {i for i, _ in ranked[:count]}
