"""Cheap rule-based filters: length bounds, repetition, empty/placeholder answers, image size and aspect,
``<image>`` placeholder consistency. Each is a `synth.pipeline.Filter`: it answers keep or drop, and why,
and never changes a record.

"Instruction" is the text of the user/system turns (a pair's prompt); "answer" the assistant text (for a
preference pair both chosen and rejected are checked).
"""

from __future__ import annotations

import io
import re
from collections import Counter
from typing import Any, ClassVar, Literal

from pydantic import Field

from synth.clean.common import (
    IMAGE_TOKEN,
    answer_texts,
    image_part_count,
    instruction_text,
    record_images,
    record_text,
)
from synth.clean.minhash import words_of
from synth.pipeline import Filter, Rejected, StageConfig

# ---------------------------------------------------------------- length


class LengthConfig(StageConfig):
    min_instruction_chars: int = Field(0, ge=0, description="fewest characters the instruction may have")
    max_instruction_chars: int | None = Field(None, ge=0, description="most characters the instruction may have (unset: no limit)")
    min_instruction_words: int = Field(0, ge=0, description="fewest words the instruction may have")
    max_instruction_words: int | None = Field(None, ge=0, description="most words the instruction may have (unset: no limit)")
    min_answer_chars: int = Field(1, ge=0, description="fewest characters the answer may have")
    max_answer_chars: int | None = Field(None, ge=0, description="most characters the answer may have (unset: no limit)")
    min_answer_words: int = Field(0, ge=0, description="fewest words the answer may have")
    max_answer_words: int | None = Field(None, ge=0, description="most words the answer may have (unset: no limit)")


def _bounds(text: str, what: str, min_chars: int, max_chars, min_words: int, max_words) -> Rejected | None:
    chars = len(text.strip())
    if chars < min_chars:
        return Rejected(f"{what}_too_short", f"{chars} chars < {min_chars}")
    if max_chars is not None and chars > max_chars:
        return Rejected(f"{what}_too_long", f"{chars} chars > {max_chars}")
    if min_words or max_words is not None:
        count = len(text.split())
        if count < min_words:
            return Rejected(f"{what}_too_short", f"{count} words < {min_words}")
        if max_words is not None and count > max_words:
            return Rejected(f"{what}_too_long", f"{count} words > {max_words}")
    return None


class LengthFilter(Filter):
    """Drop records whose instruction or answer is outside character / word bounds."""

    name: ClassVar[str] = "length"
    reads: ClassVar[tuple[str, ...]] = ("messages", "prompt", "chosen", "rejected")
    Config: ClassVar[type[StageConfig]] = LengthConfig

    def check(self, record: dict) -> Rejected | None:
        c: LengthConfig = self.config
        verdict = _bounds(
            instruction_text(record), "instruction",
            c.min_instruction_chars, c.max_instruction_chars, c.min_instruction_words, c.max_instruction_words,
        )
        if verdict:
            return verdict
        for answer in answer_texts(record) or [""]:
            verdict = _bounds(answer, "answer", c.min_answer_chars, c.max_answer_chars, c.min_answer_words, c.max_answer_words)
            if verdict:
                return verdict
        return None


# ---------------------------------------------------------------- repetition


class RepetitionConfig(StageConfig):
    ngram: int = Field(3, ge=1, description="n of the word n-grams counted")
    max_repeated_fraction: float = Field(0.3, ge=0, le=1, description="max share of n-grams that repeat an earlier one")
    top_ngram: int = Field(2, ge=1, description="n of the most frequent n-gram check")
    max_top_fraction: float = Field(0.25, ge=0, le=1, description="max share of words covered by the most frequent n-gram")
    min_words: int = Field(20, ge=1, description="texts shorter than this are not judged")
    fields: Literal["answer", "instruction", "all"] = Field("answer", description="which text is judged")


def repetition_scores(tokens: list[str], ngram: int, top_ngram: int) -> tuple[float, float]:
    """(share of n-grams that repeat an earlier one; share of words covered by the top `top_ngram`-gram)."""
    grams = [tuple(tokens[i : i + ngram]) for i in range(len(tokens) - ngram + 1)]
    repeated = 1 - len(set(grams)) / len(grams) if grams else 0.0
    tops = Counter(tuple(tokens[i : i + top_ngram]) for i in range(len(tokens) - top_ngram + 1))
    top = (tops.most_common(1)[0][1] * top_ngram / len(tokens)) if tops else 0.0
    return repeated, min(top, 1.0)


class RepetitionFilter(Filter):
    """Drop degenerate, looping text: many repeated n-grams, or one n-gram covering much of the text."""

    name: ClassVar[str] = "repetition"
    reads: ClassVar[tuple[str, ...]] = ("messages", "prompt", "chosen", "rejected")
    Config: ClassVar[type[StageConfig]] = RepetitionConfig

    def check(self, record: dict) -> Rejected | None:
        c: RepetitionConfig = self.config
        if c.fields == "answer":
            texts = answer_texts(record)
        elif c.fields == "instruction":
            texts = [instruction_text(record)]
        else:
            texts = [record_text(record)]
        for text in texts:
            tokens = words_of(text)
            if len(tokens) < c.min_words:
                continue
            repeated, top = repetition_scores(tokens, c.ngram, c.top_ngram)
            if repeated > c.max_repeated_fraction:
                return Rejected("repetitive", f"{repeated:.2f} of {c.ngram}-grams repeat (max {c.max_repeated_fraction})")
            if top > c.max_top_fraction:
                return Rejected("repetitive", f"top {c.top_ngram}-gram covers {top:.2f} of words (max {c.max_top_fraction})")
        return None


# ---------------------------------------------------------------- placeholders


class PlaceholderConfig(StageConfig):
    # Whole answers (compared lower-cased, outer punctuation/space stripped) that carry no content.
    placeholders: list[str] = Field(
        description="whole answers that carry no content (compared lower-cased, outer punctuation stripped)",
        default_factory=lambda: ["n/a", "na", "none", "null", "todo", "tbd", "...", "answer", "placeholder", "-", "?"]
    )
    # Phrases (case-insensitive regular expressions) that mark a refusal or filler anywhere in the answer.
    phrases: list[str] = Field(
        description="case-insensitive regular expressions that mark a refusal or filler anywhere in the answer",
        default_factory=lambda: [
            r"lorem ipsum",
            r"\bas an ai(?: language)? model\b",
            r"\bas an ai assistant,? i (?:cannot|can't|can not|don't|do not)\b",
            r"\bas a (?:large )?language model\b",
            r"\bi(?:'m| am) (?:just )?an ai(?: language model)?,? (?:and|so) i (?:cannot|can't|don't)\b",
            r"<\s*insert [^>]*>",
            r"\[insert [^\]]*\]",
        ]
    )


class PlaceholderFilter(Filter):
    """Drop empty answers, placeholder answers ("N/A", "TODO") and filler phrases ("as an AI…", lorem ipsum)."""

    name: ClassVar[str] = "placeholder"
    reads: ClassVar[tuple[str, ...]] = ("messages", "chosen", "rejected")
    Config: ClassVar[type[StageConfig]] = PlaceholderConfig

    def __init__(self, config=None, **overrides: Any):
        super().__init__(config, **overrides)
        self._placeholders = {p.strip().lower() for p in self.config.placeholders}
        try:
            self._phrases = [re.compile(p, re.IGNORECASE) for p in self.config.phrases]
        except re.error as e:
            from synth.errors import SynthError

            raise SynthError(f"filter 'placeholder': bad regular expression in phrases: {e}") from e

    def check(self, record: dict) -> Rejected | None:
        for answer in answer_texts(record) or [""]:
            stripped = answer.strip()
            if not stripped:
                return Rejected("empty_answer")
            bare = stripped.lower().strip(" \t\n.!:;\"'`()[]")
            if stripped.lower() in self._placeholders or (bare and bare in self._placeholders):
                return Rejected("placeholder_answer", repr(stripped[:40]))
            for pattern in self._phrases:
                hit = pattern.search(answer)
                if hit:
                    return Rejected("placeholder_answer", f"matches {pattern.pattern!r}: {hit.group(0)!r}")
        return None


# ---------------------------------------------------------------- image size


class ImageSizeConfig(StageConfig):
    min_width: int = Field(1, ge=1, description="narrowest image width in pixels")
    min_height: int = Field(1, ge=1, description="lowest image height in pixels")
    max_width: int | None = Field(None, ge=1, description="widest image width in pixels (unset: no limit)")
    max_height: int | None = Field(None, ge=1, description="highest image height in pixels (unset: no limit)")
    max_aspect: float | None = Field(None, ge=1, description="max of width/height and height/width")
    require_image: bool = Field(False, description="drop records without images")


def image_size(value: Any, record_id: str = "?") -> tuple[int, int]:
    """(width, height) from the image header only (PIL opens lazily, no pixels are decoded).

    `value` is an image as records carry it (``{"bytes", "path"}``), encoded bytes or a PIL image; a bare
    path has no dataset folder to resolve against here and is an `ImageError` (the reader resolves paths).
    Raises `ImageError`, or PIL's own errors for bytes that are not an image."""
    from PIL import Image

    from synth.data.images import image_ref

    if isinstance(value, Image.Image):
        return value.size
    data = value["bytes"] if isinstance(value, dict) and value.get("bytes") else image_ref(value, None, record_id, check=False)["bytes"]
    with Image.open(io.BytesIO(data)) as image:
        return image.size


class ImageSizeFilter(Filter):
    """Drop images that are too small, too large or too elongated (reads only headers)."""

    name: ClassVar[str] = "image_size"
    reads: ClassVar[tuple[str, ...]] = ("images", "image")
    Config: ClassVar[type[StageConfig]] = ImageSizeConfig

    def check(self, record: dict) -> Rejected | None:
        c: ImageSizeConfig = self.config
        images = record_images(record)
        if not images and c.require_image:
            return Rejected("no_image")
        for index, value in enumerate(images):
            try:
                width, height = image_size(value, str(record.get("id") or "?"))
            except Exception as e:  # PIL raises several types for broken files
                return Rejected("unreadable_image", f"image {index}: {type(e).__name__}: {str(e)[:300]}")
            if width < c.min_width or height < c.min_height:
                return Rejected("image_too_small", f"image {index}: {width}x{height} < {c.min_width}x{c.min_height}")
            if (c.max_width and width > c.max_width) or (c.max_height and height > c.max_height):
                return Rejected("image_too_large", f"image {index}: {width}x{height}")
            if c.max_aspect is not None:
                aspect = max(width / height, height / width)
                if aspect > c.max_aspect:
                    return Rejected("bad_aspect", f"image {index}: {width}x{height} aspect {aspect:.2f} > {c.max_aspect}")
        return None


# ---------------------------------------------------------------- <image> placeholders


class ImageTokensConfig(StageConfig):
    token: str = Field(IMAGE_TOKEN, description="the literal image placeholder token in text")
    allow_literal_with_parts: bool = Field(False, description="allow literal tokens in text next to image parts")


class ImageTokensFilter(Filter):
    """Check that images, image parts and literal ``<image>`` tokens agree.

    With image parts (synth's layout): #parts == #images and no literal token in the text (it would reach
    the model as text or double an image). Without parts (LLaMA-Factory style text): #tokens == #images.
    """

    name: ClassVar[str] = "image_tokens"
    reads: ClassVar[tuple[str, ...]] = ("messages", "prompt", "chosen", "rejected", "images", "image")
    Config: ClassVar[type[StageConfig]] = ImageTokensConfig

    def check(self, record: dict) -> Rejected | None:
        c: ImageTokensConfig = self.config
        images = len(record_images(record))
        parts = image_part_count(record)
        tokens = record_text(record).count(c.token)
        if parts:
            if parts != images:
                return Rejected("image_count_mismatch", f"{parts} image parts but {images} images")
            if tokens and not c.allow_literal_with_parts:
                return Rejected("stray_image_token", f"{tokens} literal {c.token} in text besides {parts} image parts")
            return None
        if tokens != images:
            return Rejected("image_token_mismatch", f"{tokens} {c.token} tokens but {images} images")
        return None


OPERATOR_CLASSES = (LengthFilter, RepetitionFilter, PlaceholderFilter, ImageSizeFilter, ImageTokensFilter)
