"""A tiny random-weight causal LM with a tokenizer trained on the spot, for tests and benchmarks.

It is built offline from a config (Llama architecture, random weights), so it produces noise, not
answers: it exercises the local backend's mechanics (batching, padding, stop strings, grammars) without
a download. Never present it as a model.
"""

from __future__ import annotations

from pathlib import Path

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Write a short poem about the sea. ### Response: The sea is wide and blue.",
    '{"answer": "yes", "score": 3, "reasons": ["short", "clear"]}',
    "Instruction: name three colours. Response: red, green, blue.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and symbols {} [] : , \" ' # ! ? - _ .",
]


def build_tiny_model(path: str | Path, *, hidden_size: int = 64, layers: int = 2, vocab_size: int = 400, seed: int = 0) -> Path:
    """Write a random Llama-style model and a byte-level BPE tokenizer (no chat template) into `path`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    specials = ["<pad>", "<s>", "</s>"]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    raw.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(str(path))

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        # Wide logits, so greedy choices are clear-cut and not decided by float rounding.
        initializer_range=0.2,
    )
    LlamaForCausalLM(config).save_pretrained(str(path))
    return path
