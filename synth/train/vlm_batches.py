"""Family fixes to TRL's image-text batches (its vision collators), applied around the trainer's collator.

TRL builds prompt-completion batches (DPO always; SFT when the chat template has no generation markers)
by running the processor on the prompts (with images) and again on the completions (text only), then
joining and left-flushing the rows. Two families do not survive that:

- PaliGemma's processor refuses a call without images, and adds its own ``labels`` (prompt-length) that
  would reach the model: text-only calls go to the tokenizer, and those labels are dropped (DPO builds
  its own; SFT's collator overwrites them).
- Mllama's ``cross_attention_mask`` is per token and covers only the prompt's tokens: it is rebuilt
  for the joined rows from where each image token now sits (the processor's own rule: a token attends
  to the last image before it), keeping each image's tile count.
"""

from __future__ import annotations

from typing import Any


class TextOnlyToTokenizer:
    """Wraps a processor that refuses text-only calls (PaliGemma): those go to its tokenizer."""

    def __init__(self, processor):
        self._processor = processor

    def __call__(self, *args, images=None, text=None, **kwargs):
        if images is None and not args:
            kwargs.pop("suffix", None)
            out = self._processor.tokenizer(text, **kwargs)
            if "token_type_ids" not in out and "token_type_ids" in self._processor.model_input_names:
                import torch

                ids = out["input_ids"]
                out["token_type_ids"] = torch.zeros_like(ids) if hasattr(ids, "shape") else [[0] * len(r) for r in ids]
            return out
        return self._processor(*args, images=images, text=text, **kwargs)

    def __getattr__(self, name):
        return getattr(self._processor, name)


def needs_text_only_route(processor) -> bool:
    return type(processor).__name__ == "PaliGemmaProcessor"


class FamilyBatches:
    """The trainer's collator, with each batch made right for the model's family (see the module doc)."""

    def __init__(self, collator, processor, drop_labels: bool):
        self.collator = collator
        self.processor = processor
        self.drop_labels = drop_labels
        if needs_text_only_route(processor) and hasattr(collator, "processor"):
            collator.processor = TextOnlyToTokenizer(processor)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        if self.drop_labels and needs_text_only_route(self.processor):
            batch.pop("labels", None)
        mask = batch.get("cross_attention_mask")
        if mask is not None and mask.shape[1] != batch["input_ids"].shape[1]:
            batch["cross_attention_mask"] = rebuild_cross_attention_mask(
                batch["input_ids"], mask, self.processor.image_token_id
            )
        return batch

    def __getattr__(self, name):
        return getattr(self.collator, name)


def rebuild_cross_attention_mask(input_ids, prompt_mask, image_token_id: int):
    """Mllama's (batch, tokens, images, tiles) mask for `input_ids`, from the image tokens' positions and the
    tile counts in the prompt-only mask."""
    import torch
    from transformers.models.mllama.processing_mllama import (
        convert_sparse_cross_attention_mask_to_dense,
        get_cross_attention_token_mask,
    )

    ranges, tiles = [], []
    for row in range(input_ids.shape[0]):
        spans = get_cross_attention_token_mask(input_ids[row].tolist(), image_token_id)
        ranges.append(spans)
        tiles.append([int(prompt_mask[row, :, k, :].amax(0).sum()) for k in range(len(spans))])
    if not any(ranges):
        return torch.zeros(
            (input_ids.shape[0], input_ids.shape[1], *prompt_mask.shape[2:]), dtype=prompt_mask.dtype
        )
    dense = convert_sparse_cross_attention_mask_to_dense(ranges, tiles, prompt_mask.shape[3], input_ids.shape[1])
    out = torch.zeros((input_ids.shape[0], input_ids.shape[1], *prompt_mask.shape[2:]), dtype=prompt_mask.dtype)
    out[:, :, : dense.shape[2], :] = torch.from_numpy(dense).to(prompt_mask.dtype)
    return out.to(prompt_mask.device)


def fix_family_batches(trainer, processor, *, drop_labels: bool) -> None:
    """Wrap `trainer`'s collator with the family fixes (a no-op for text models)."""
    if getattr(processor, "tokenizer", None) is None:
        return
    trainer.data_collator = FamilyBatches(trainer.data_collator, processor, drop_labels)
