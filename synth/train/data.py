"""Training data: read the recipe's splits, check them before any model loads, shape them for TRL.

Checks (each a one-line error naming the dataset and, where it applies, the row and its id): the columns
the stage needs (``messages`` for align/sft; ``prompt``/``chosen``/``rejected`` for dpo), an assistant
reply in every SFT row and none of them empty (refused, not dropped: an empty reply is a data bug to
fix), image placeholders matching the images of each row, and image data only with an image-text model.
Rows longer than ``max_length`` tokens (images counted as the tokens they expand to) are dropped and
counted before training starts: truncating them would cut answers, or image tokens away from their pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from synth.errors import SynthError

SFT_COLUMNS = ("messages",)
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class DataReport:
    """What happened to the rows on their way to the trainer."""

    source: str
    rows: int = 0
    dropped_too_long: int = 0
    longest: int = 0
    max_length: int = 0
    eval_rows: int = 0
    eval_dropped_too_long: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "train_rows": self.rows,
            "dropped_too_long": self.dropped_too_long,
            "longest_tokens": self.longest,
            "max_length": self.max_length,
            "eval_rows": self.eval_rows,
            "eval_dropped_too_long": self.eval_dropped_too_long,
        }


def read_split(source: str, split: str | None, limit: int | None):
    """One split of a dataset, read by synth's one reader (every source and peer layout it takes: relative
    image paths resolved against the dataset's folder, a missing image an error naming its row, mixed
    string/part contents made canonical) and rebuilt in synth's layout, in memory; optionally its first
    `limit` rows. A raw dataset (no conversation columns) is returned as loaded, for the column check."""
    import tempfile
    from pathlib import Path

    from synth.data import build_dataset, open_source

    src = open_source(source, split, limit=limit)
    if src.kind == "raw":
        return src.dataset
    with tempfile.TemporaryDirectory(prefix="synth-train-data-") as scratch:
        dataset = build_dataset(src.records(), kind=src.kind, multimodal=src.multimodal, scratch=Path(scratch))
        # In memory: the scratch folder goes now, and TRL's map() calls must not write cache files.
        return dataset.flatten_indices(keep_in_memory=True)


def read_recipe_data(recipe) -> tuple[Any, Any | None]:
    """(train, eval) datasets the recipe names; eval is None when it names none."""
    train = read_split(recipe.dataset, recipe.split, recipe.limit)
    evaluation = None
    if recipe.eval_dataset or recipe.eval_split:
        evaluation = read_split(recipe.eval_dataset or recipe.dataset, recipe.eval_split, recipe.eval_limit)
    return train, evaluation


# ---------------------------------------------------------------- checks


def has_images(dataset) -> bool:
    return "images" in dataset.column_names or "image" in dataset.column_names


def check_columns(dataset, stage: str, source: str) -> None:
    cols = set(dataset.column_names)
    need = PREFERENCE_COLUMNS if stage == "dpo" else SFT_COLUMNS
    missing = [c for c in need if c not in cols]
    if not missing:
        return
    have = ", ".join(sorted(cols)) or "none"
    if stage == "dpo":
        hint = "a preference dataset (synth prefs, or export of one)"
        if "messages" in cols:
            hint += "; this looks like an SFT dataset: train it with `synth train sft`"
    else:
        hint = "an SFT dataset (synth adapt / generate / mix)"
        if set(PREFERENCE_COLUMNS) <= cols:
            hint += "; this looks like a preference dataset: train it with `synth train dpo`"
    raise SynthError(
        f"{source}: `synth train {stage}` needs column{'s' if len(missing) > 1 else ''} "
        f"{', '.join(repr(c) for c in missing)} (columns: {have}); pass {hint}"
    )


def _image_parts(messages) -> int:
    count = 0
    for message in messages or []:
        content = message.get("content")
        if isinstance(content, list):
            count += sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image")
    return count


def _has_content(content) -> bool:
    """A reply says something: non-blank text, or a non-text part (an image)."""
    if isinstance(content, str):
        return bool(content.strip())
    for part in content or []:
        if isinstance(part, dict) and (part.get("type") != "text" or (part.get("text") or "").strip()):
            return True
    return False


def _message_columns(stage: str) -> tuple[str, ...]:
    return PREFERENCE_COLUMNS if stage == "dpo" else SFT_COLUMNS


def check_rows(dataset, stage: str, source: str) -> None:
    """Per row: an assistant reply (sft/align), image placeholders == images, images present for align."""
    import pyarrow.compute as pc

    columns = list(_message_columns(stage))
    image_col = "images" if "images" in dataset.column_names else None
    wanted = columns + ([image_col] if image_col else []) + (["id"] if "id" in dataset.column_names else [])
    index = 0
    for batch in dataset.select_columns(wanted).with_format("arrow").iter(batch_size=1000):
        image_counts = pc.list_value_length(batch[image_col]).fill_null(0).to_pylist() if image_col else None
        ids = batch["id"].to_pylist() if "id" in batch.column_names else [None] * batch.num_rows
        values = {c: batch[c].to_pylist() for c in columns}
        for row in range(batch.num_rows):
            where = f"{source}: row {index + 1}" + (f" (id {ids[row]})" if ids[row] else "")  # 1-based, as the reader
            if stage != "dpo":
                messages = values["messages"][row] or []
                if not any(m.get("role") == "assistant" for m in messages):
                    raise SynthError(f"{where}: no assistant message to learn from; drop the row or add a reply")
                empty = next((n for n, m in enumerate(messages, 1) if m.get("role") == "assistant"
                              and not _has_content(m.get("content"))), None)
                if empty is not None:
                    raise SynthError(
                        f"{where}: message {empty} is an empty assistant reply (it would teach the model to say "
                        "nothing); fill it in or drop the row"
                    )
            placeholders = sum(_image_parts(values[c][row]) for c in columns)
            images = image_counts[row] if image_counts is not None else 0
            if placeholders != images:
                raise SynthError(
                    f"{where}: {placeholders} image placeholder{'s' if placeholders != 1 else ''} in the messages "
                    f"but {images} image{'s' if images != 1 else ''}; every {{'type': 'image'}} part needs one "
                    "image in `images`, in order"
                )
            if stage == "align" and images == 0:
                raise SynthError(f"{where}: align trains the connector on image-caption rows; this row has no image")
            index += 1


def check_model_fits_data(dataset, info, stage: str, source: str) -> None:
    """Image data needs an image-text model; align needs one with a connector."""
    if stage == "align" and not info.is_vision:
        raise SynthError(
            f"model '{info.name}' ({info.model_type}) is text-only; `synth train align` trains the connector of "
            "an image-text (LLaVA-style) model"
        )
    if has_images(dataset) and not info.is_vision:
        raise SynthError(
            f"{source}: the dataset has images but model '{info.name}' ({info.model_type}) is text-only; use an "
            "image-text (LLaVA-style) model, or a text dataset (e.g. `synth adapt ... -t scene_qa_text`)"
        )
    if stage == "align" and not has_images(dataset):
        raise SynthError(f"{source}: align needs image-caption rows (an `images` column); this dataset has none")


def check_dataset(dataset, stage: str, source: str, info=None) -> None:
    """Every check that needs no weights: columns, rows, and (given the model's config) model vs data."""
    check_columns(dataset, stage, source)
    if info is not None:
        check_model_fits_data(dataset, info, stage, source)
    check_rows(dataset, stage, source)


# ---------------------------------------------------------------- shaping for TRL


def select_for_trl(dataset, stage: str):
    """Only the columns TRL reads (`id`/`meta` would otherwise reach the collator)."""
    keep = list(_message_columns(stage)) + (["images"] if "images" in dataset.column_names else [])
    return dataset.select_columns(keep)


def to_prompt_completion(dataset):
    """messages → prompt (all turns before the last reply) + completion (the last assistant reply)."""

    def split(row):
        messages = row["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        return {"prompt": messages[:last], "completion": [messages[last]]}

    keep = ["images"] if "images" in dataset.column_names else []
    out = dataset.map(split, remove_columns=[c for c in dataset.column_names if c not in keep], keep_in_memory=True)
    return out


def single_reply(dataset) -> bool:
    """Every row has exactly one assistant message, and it is the last one."""
    for batch in dataset.select_columns(["messages"]).iter(batch_size=1000):
        for messages in batch["messages"]:
            roles = [m["role"] for m in messages]
            if roles.count("assistant") != 1 or roles[-1] != "assistant":
                return False
    return True


# ---------------------------------------------------------------- lengths


class _ImageTokens:
    """How many tokens one image becomes in the processor's output, by image size (measured once each)."""

    def __init__(self, processor):
        self.processor = processor
        self.token = getattr(processor, "image_token", None) or "<image>"
        self.cache: dict[tuple[int, int], int] = {}

    def __call__(self, size: tuple[int, int]) -> int:
        if size not in self.cache:
            from PIL import Image

            image = Image.new("RGB", size, (128, 128, 128))
            out = self.processor(text=[self.token], images=[image], add_special_tokens=False)
            self.cache[size] = len(out["input_ids"][0])
        return self.cache[size]


def _image_size(value) -> tuple[int, int]:
    from PIL import Image

    if isinstance(value, dict):
        if value.get("bytes"):
            return Image.open(io.BytesIO(value["bytes"])).size
        return Image.open(value["path"]).size
    return value.size


def row_lengths(dataset, processing, stage: str) -> list[int]:
    """Token count of each row as it will be trained (the longer of chosen/rejected for preferences)."""
    from synth.data.reader import without_image_decoding
    from synth.train.models import tokenizer_of

    tokenizer = tokenizer_of(processing)
    vision = "images" in dataset.column_names and processing is not tokenizer
    dataset = without_image_decoding(dataset)  # sizes come from the encoded headers, not decoded pixels
    image_tokens = _ImageTokens(processing) if vision else None
    conversations = (
        [("prompt", "chosen"), ("prompt", "rejected")] if stage == "dpo" else [("messages",)]
    )
    lengths: list[int] = []
    for batch in dataset.iter(batch_size=256):
        n = len(batch[next(iter(batch))])
        best = [0] * n
        for parts in conversations:
            texts = [
                processing.apply_chat_template(sum((batch[p][i] for p in parts), []), tokenize=False)
                for i in range(n)
            ]
            ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
            for i, row_ids in enumerate(ids):
                length = len(row_ids)
                if vision:
                    # each placeholder token becomes the image's tokens
                    length += sum(image_tokens(_image_size(img)) - 1 for img in batch["images"][i] or [])
                best[i] = max(best[i], length)
        lengths.extend(best)
    return lengths


def drop_long_rows(dataset, processing, stage: str, max_length: int) -> tuple[Any, int, int]:
    """(rows within max_length, how many were dropped, longest row seen)."""
    lengths = row_lengths(dataset, processing, stage)
    keep = [i for i, n in enumerate(lengths) if n <= max_length]
    longest = max(lengths) if lengths else 0
    dropped = len(lengths) - len(keep)
    if dropped:
        dataset = dataset.select(keep)
    return dataset, dropped, longest
