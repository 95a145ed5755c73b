"""Random-weight models built offline from configs, for tests and the training benchmark.

- `build_text_model`: a tiny Llama or Qwen2 causal LM with a byte-level BPE tokenizer trained on the
  spot (on the demo scenes' vocabulary, so demo rows stay short), with or without a chat template.
- `build_llava`: a tiny LLaVA (CLIP vision config + Llama text config, ``<image>`` token,
  CLIPImageProcessor, LlavaProcessor with a chat template).
- `build_bench_model`: a ~100M Llama or a ~0.5B Qwen2-shaped model (the real vocabulary size, so the
  LM head costs what it costs in practice).

They produce noise, not answers; they exist to exercise training mechanics without a download. Never
present them as models.
"""

from __future__ import annotations

from pathlib import Path

#: A ChatML-like template with generation markers (the shape of most instruct models' templates).
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message.content is string -%}{%- set text = message.content -%}"
    "{%- else -%}{%- set ns = namespace(text='') -%}"
    "{%- for part in message.content -%}"
    "{%- if part.type == 'image' -%}{%- set ns.text = ns.text + '<image>' -%}"
    "{%- elif part.text -%}{%- set ns.text = ns.text + part.text -%}{%- endif -%}"
    "{%- endfor -%}{%- set text = ns.text -%}{%- endif -%}"
    "<|im_start|>{{ message.role }}\n"
    "{%- if message.role == 'assistant' -%}"
    "{% generation %}{{ text }}<|im_end|>{% endgeneration %}\n"
    "{%- else -%}{{ text }}<|im_end|>\n{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant\n{%- endif -%}"
)


def _corpus() -> list[str]:
    from synth.demo_data import BACKGROUNDS, COLORS, NUMBER_WORDS, SHAPES, SIZES, WORDS

    words = [*SHAPES, *COLORS, *SIZES, *BACKGROUNDS, *NUMBER_WORDS, *(w.lower() for w in WORDS), *WORDS]
    lines = [
        "The image shows one shape on a light gray background. A medium purple triangle is on the right.",
        'The word "BREAD" is written in black on the right. How many shapes are there in the image?',
        "Scene: Question: Answer with a single word or number. Based on this description, what color is the",
        "Read the description of a picture and answer the question briefly. Here is what an image shows:",
        "Using only the scene description below, answer the question. Picture description: (answer in one word)",
        "Is there a star in the image? yes no. Which is further left? Provide a concise caption for the image.",
        "### Instruction: ### Response: <|im_start|> <|im_end|> user assistant system",
        "0 1 2 3 4 5 6 7 8 9 10 . , ? ! : ; \" ' ( ) - shapes top bottom left right center above below",
        " ".join(words),
    ]
    return lines * 4


def build_tokenizer(vocab_size: int = 600, extra_special: tuple[str, ...] = ()):
    """Byte-level BPE (any text encodes) trained on the demo vocabulary, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", *extra_special]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    raw.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def _text_config(arch: str, vocab_size: int, tokenizer, hidden: int, layers: int, **extra):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=extra.pop("intermediate_size", hidden * 2),
        num_hidden_layers=layers,
        num_attention_heads=extra.pop("heads", 4),
        num_key_value_heads=extra.pop("kv_heads", 2),
        max_position_embeddings=extra.pop("max_positions", 2048),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **extra,
    )
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    raise ValueError(f"unknown arch {arch!r} (llama, qwen2)")


def build_text_model(
    path: str | Path,
    *,
    arch: str = "llama",
    chat_template: str | None = None,
    hidden: int = 32,
    layers: int = 2,
    seed: int = 0,
) -> Path:
    """A tiny random causal LM + tokenizer in `path`. `chat_template`: None (none, like a base model),
    'chatml' (with generation markers) or a template string."""
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    if chat_template == "chatml":
        tokenizer.chat_template = CHATML_TEMPLATE
    elif chat_template:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(str(path))
    torch.manual_seed(seed)
    config = _text_config(arch, len(tokenizer), tokenizer, hidden, layers, initializer_range=0.2)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(path))
    return path


def build_llava(path: str | Path, *, image_size: int = 32, patch_size: int = 8, hidden: int = 32, seed: int = 0) -> Path:
    """A tiny LLaVA: CLIP vision tower + 2-layer Llama, `<image>` token, CLIPImageProcessor, LlavaProcessor.

    ``(image_size / patch_size)**2`` image tokens per image (16 by default); the processor carries
    synth's default instruct template (image parts render as ``<image>``).
    """
    import torch
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from synth.train.models import default_template_text

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(extra_special=("<image>",))
    image_processor = _clip_image_processor(image_size)
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
        chat_template=default_template_text(),
        image_token="<image>",
    )
    processor.save_pretrained(str(path))
    text = _text_config("llama", len(tokenizer), tokenizer, hidden, 2)
    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        image_size=image_size, patch_size=patch_size,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).save_pretrained(str(path))
    return path


def _clip_image_processor(size: int):
    """CLIPImageProcessor (the PIL backend when torchvision is absent, which is what transformers picks)."""
    import warnings

    from transformers import CLIPImageProcessor

    kwargs = dict(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    try:
        import importlib.util

        from transformers import CLIPImageProcessorPil

        if importlib.util.find_spec("torchvision") is None:
            return CLIPImageProcessorPil(**kwargs)
    except ImportError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CLIPImageProcessor(**kwargs)


#: Benchmark model shapes: (arch, hidden, layers, heads, kv heads, intermediate, vocab, tied embeddings).
BENCH_SHAPES = {
    "100m": ("llama", 768, 8, 12, 4, 2048, 32000, False),
    "0.5b": ("qwen2", 896, 24, 14, 2, 4864, 151936, True),
}


def build_bench_model(path: str | Path, size: str = "100m", seed: int = 0) -> Path:
    """A random ~100M Llama or ~0.5B Qwen2-shaped model (real vocabulary size) with a chatml template."""
    import torch
    from transformers import AutoModelForCausalLM

    arch, hidden, layers, heads, kv, inter, vocab, tied = BENCH_SHAPES[size]
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab_size=2000)
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(str(path))
    config = _text_config(
        arch, vocab, tokenizer, hidden, layers, heads=heads, kv_heads=kv, intermediate_size=inter,
        max_positions=4096, tie_word_embeddings=tied,
    )
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(path))
    return path
