"""Random-weight models built offline from configs, for tests and the training benchmark.

- `build_text_model`: a tiny Llama or Qwen2 causal LM with a byte-level BPE tokenizer trained on the
  spot (on the demo scenes' vocabulary, so demo rows stay short), with or without a chat template.
- `build_llava`: a tiny LLaVA (CLIP vision config + Llama text config, ``<image>`` token,
  CLIPImageProcessor, LlavaProcessor with a chat template).
- `build_vlm`: a tiny model of another image-text family (LLaVA-NeXT / OneVision, Qwen2/2.5/3-VL,
  Idefics3, SmolVLM, Gemma 3, PaliGemma, Mllama, InternVL) with its processor (PIL image processors)
  and the chat template TRL ships for the family where there is one.
- `build_bench_model`: a ~100M Llama or a ~0.5B Qwen2-shaped model (the real vocabulary size, so the
  LM head costs what it costs in practice).
- `build_bench_vlm`: a Qwen2-VL-shaped image-text model for the training benchmark: small for CPU, or
  Qwen2-VL-2B's shapes with fewer layers (bf16) for a GPU.

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


def build_tokenizer(vocab_size: int = 600, extra_special: tuple[str, ...] = (), named: dict[str, str] | None = None):
    """Byte-level BPE (any text encodes) trained on the demo vocabulary, wrapped for transformers;
    `named`: special tokens the tokenizer also exposes as attributes (e.g. Gemma 3's boi_token)."""
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
    extra = {"extra_special_tokens": named} if named else {}
    return PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", bos_token="<s>", eos_token="</s>", **extra)


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


#: Qwen2-VL-shaped benchmark models: text (hidden, layers, heads, kv heads, intermediate, vocab, mrope section),
#: vision (embed dim, depth, heads), dtype. "2b" is Qwen2-VL-2B's config with 8 of its 28 text layers and
#: 8 of its 32 vision blocks.
BENCH_VLM_SHAPES = {
    "small": ((384, 4, 6, 2, 1024, 32000, [8, 12, 12]), (256, 4, 4), "float32"),
    "2b": ((1536, 8, 12, 2, 8960, 151936, [16, 24, 24]), (1280, 8, 16), "bfloat16"),
}


def build_bench_vlm(path: str | Path, size: str = "small", seed: int = 0) -> Path:
    """A random Qwen2-VL-shaped model (patch 14, 2x2 merge, Qwen2-VL's image processor defaults) with the
    chat template TRL ships for Qwen2.5-VL, saved in the shape's dtype."""
    import torch
    import transformers
    from transformers import AutoModelForImageTextToText

    (hidden, layers, heads, kv, inter, vocab, mrope), (embed, depth, vheads), dtype = BENCH_VLM_SHAPES[size]
    tokenizer = _vlm_tokenizer(("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"))
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                           "<|vision_end|>")}
    text = _text_config("qwen2", vocab, tokenizer, hidden, layers, heads=heads, kv_heads=kv, intermediate_size=inter,
                        max_positions=32768).to_dict()
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope}
    vision = dict(depth=depth, embed_dim=embed, hidden_size=hidden, num_heads=vheads, mlp_ratio=4, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)
    processor = transformers.Qwen2VLProcessor(
        image_processor=_pil("Qwen2VL"), tokenizer=tokenizer, video_processor=transformers.Qwen2VLVideoProcessor(),
        chat_template=trl_chat_template("qwen2_5_vl"),
    )
    config = transformers.Qwen2VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=size == "2b",
    )
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(str(path))
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config).to(getattr(torch, dtype))
    model.save_pretrained(str(path))
    return path


# ------------------------------------------------------------------ other image-text families


def trl_chat_template(name: str) -> str:
    """A chat template TRL ships (trl/chat_templates/NAME.jinja): the family's real template."""
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / f"{name}.jinja").read_text(encoding="utf-8")


def _vlm_tokenizer(specials: tuple[str, ...], named: dict[str, str] | None = None):
    """The byte-level tokenizer with the family's special tokens; `named`: tokenizer attributes such as
    image_token (transformers' extra_special_tokens), which some processors read."""
    return build_tokenizer(extra_special=tuple(dict.fromkeys([*specials, *(named or {}).values()])), named=named)


def _pil(name: str, **kwargs):
    """The PIL-backed image processor `name` (works with or without torchvision)."""
    import transformers

    return getattr(transformers, f"{name}ImageProcessorPil")(**kwargs)


def _qwen_vl(family: str, tokenizer_template: str):
    import transformers

    tokenizer = _vlm_tokenizer(("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"))
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                           "<|vision_end|>")}
    text = _text_config("qwen2", len(tokenizer), tokenizer, 32, 2).to_dict()
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}
    if family == "qwen3_vl":
        text.update(head_dim=8, rope_parameters={**text["rope_parameters"], "mrope_interleaved": True})
        vision = dict(depth=2, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32,
                      patch_size=8, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16,
                      deepstack_visual_indexes=[0])
        processor_cls, config_cls = "Qwen3VLProcessor", "Qwen3VLConfig"
        image_processor = _pil("Qwen2VL", patch_size=8, merge_size=2, temporal_patch_size=2,
                               size={"shortest_edge": 32 * 32, "longest_edge": 32 * 32})
    else:
        vision = dict(depth=1, embed_dim=16, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=8,
                      spatial_merge_size=2, temporal_patch_size=2)
        if family == "qwen2_5_vl":
            vision.update(out_hidden_size=32, hidden_size=16, intermediate_size=32, fullatt_block_indexes=[0],
                          window_size=32)
        processor_cls = "Qwen2_5_VLProcessor" if family == "qwen2_5_vl" else "Qwen2VLProcessor"
        config_cls = "Qwen2_5_VLConfig" if family == "qwen2_5_vl" else "Qwen2VLConfig"
        image_processor = _pil("Qwen2VL", patch_size=8, merge_size=2, temporal_patch_size=2,
                               size={"shortest_edge": 32 * 32, "longest_edge": 32 * 32})
    video_cls = "Qwen3VLVideoProcessor" if family == "qwen3_vl" else "Qwen2VLVideoProcessor"
    video_processor = getattr(transformers, video_cls)(patch_size=8, merge_size=2, temporal_patch_size=2)
    processor = getattr(transformers, processor_cls)(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
        chat_template=trl_chat_template(tokenizer_template),
    )
    config = getattr(transformers, config_cls)(
        text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False,
    )
    return processor, config


def _idefics3(family: str):
    import transformers

    rows = tuple(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7))
    tokenizer = _vlm_tokenizer(("<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>",
                                "<video>", *rows))
    cls = "SmolVLM" if family == "smolvlm" else "Idefics3"
    image_processor = _pil(cls, size={"longest_edge": 32}, max_image_size={"longest_edge": 32},
                           do_image_splitting=False)
    kwargs = {}
    if family == "smolvlm":
        kwargs["video_processor"] = transformers.SmolVLMVideoProcessor()
    processor = getattr(transformers, f"{cls}Processor")(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4,
        chat_template=trl_chat_template(family), **kwargs
    )
    text = _text_config("llama", len(tokenizer), tokenizer, 32, 2)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    config = getattr(transformers, f"{cls}Config")(
        text_config=text.to_dict(), vision_config=vision, scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), tie_word_embeddings=False,
    )
    return processor, config


def _gemma3():
    import transformers

    named = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tokenizer = _vlm_tokenizer(("<start_of_turn>", "<end_of_turn>", "<bos>"), named)
    image_processor = _pil("Gemma3", size={"height": 32, "width": 32})
    processor = transformers.Gemma3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_length=4,
        chat_template=trl_chat_template("gemma3"),
    )
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=64,
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.convert_tokens_to_ids("<end_of_turn>"))
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8, vision_use_head=False)
    config = transformers.Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=4,
        image_token_id=tokenizer.convert_tokens_to_ids("<image_soft_token>"),
        boi_token_id=tokenizer.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_id=tokenizer.convert_tokens_to_ids("<end_of_image>"),
    )
    return processor, config


def _chatml(image: str) -> str:
    """CHATML_TEMPLATE with image parts rendered as `image` (for families TRL ships no template for)."""
    return CHATML_TEMPLATE.replace("'<image>'", repr(image))


def _clip_vision(**extra) -> dict:
    return dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, **extra)


def _llava_family(family: str):
    import transformers

    tokenizer = _vlm_tokenizer(("<image>", "<video>"))
    text = _text_config("llama", len(tokenizer), tokenizer, 32, 2).to_dict()
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    if family == "llava_next":
        image_processor = _pil("LlavaNext", size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16},
                               image_grid_pinpoints=[[16, 32], [32, 16], [32, 32]])
        processor = transformers.LlavaNextProcessor(
            image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
            vision_feature_select_strategy="default", num_additional_image_tokens=1,
            chat_template=trl_chat_template("llava_next"),
        )
        config = transformers.LlavaNextConfig(
            vision_config=_clip_vision(image_size=16, patch_size=8, model_type="clip_vision_model"),
            text_config=text, image_token_id=image_id, image_grid_pinpoints=[[16, 32], [32, 16], [32, 32]],
            vision_feature_select_strategy="default", vision_feature_layer=-1, tie_word_embeddings=False,
        )
    else:  # llava_onevision: SigLIP tower, anyres, a video processor
        image_processor = _pil("LlavaOnevision", size={"height": 16, "width": 16},
                               image_grid_pinpoints=[[16, 16], [16, 32], [32, 16], [32, 32]])
        processor = transformers.LlavaOnevisionProcessor(
            image_processor=image_processor, tokenizer=tokenizer,
            video_processor=transformers.LlavaOnevisionVideoProcessor(), num_image_tokens=4,
            vision_feature_select_strategy="full", chat_template=trl_chat_template("llava_next"),
        )
        config = transformers.LlavaOnevisionConfig(
            vision_config=_clip_vision(image_size=16, patch_size=8, model_type="siglip_vision_model"),
            text_config=text, image_token_id=image_id, video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
            image_grid_pinpoints=[[16, 16], [16, 32], [32, 16], [32, 32]], vision_feature_select_strategy="full",
            vision_feature_layer=-1, tie_word_embeddings=False,
        )
    return processor, config


def _paligemma():
    import transformers

    tokenizer = _vlm_tokenizer(("<image>",))
    image_processor = _pil("Siglip", size={"height": 16, "width": 16})
    image_processor.image_seq_length = 4  # (16 / 8) ** 2 patches, read by PaliGemmaProcessor
    processor = transformers.PaliGemmaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=_chatml("<image>")
    )
    text = dict(model_type="gemma", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id)
    config = transformers.PaliGemmaConfig(
        vision_config=_clip_vision(image_size=16, patch_size=8, projection_dim=32, model_type="siglip_vision_model"),
        text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"), projection_dim=32,
    )
    return processor, config


def _mllama():
    import transformers

    tokenizer = _vlm_tokenizer(("<|image|>", "<|python_tag|>"))
    image_processor = _pil("Mllama", size={"height": 16, "width": 16}, max_image_tiles=1)
    # Like Llama 3.2 Vision's own template, this one has no generation markers (synth falls back to
    # prompt-completion rows, which is where Mllama's cross-attention mask has to be rebuilt).
    template = _chatml("<|image|>").replace("{% generation %}", "").replace("{% endgeneration %}", "")
    processor = transformers.MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=template)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_global_layers=1,
                  attention_heads=2, image_size=16, patch_size=8, max_num_tiles=1, intermediate_layers_indices=[0],
                  vision_output_dim=32, supported_aspect_ratios=[[1, 1]])
    text = dict(vocab_size=len(tokenizer) + 1, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, cross_attention_layers=[1],
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id)
    config = transformers.MllamaConfig(
        vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids("<|image|>")
    )
    return processor, config


def _internvl():
    import transformers

    named = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
             "video_token": "<video>"}
    tokenizer = _vlm_tokenizer((), named)
    image_processor = _pil("GotOcr2", size={"height": 16, "width": 16}, crop_to_patches=False)
    processor = transformers.InternVLProcessor(
        image_processor=image_processor, tokenizer=tokenizer,
        video_processor=transformers.InternVLVideoProcessor(), image_seq_length=1,
        chat_template=_chatml("<IMG_CONTEXT>"),
    )
    text = _text_config("qwen2", len(tokenizer), tokenizer, 32, 2).to_dict()
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  image_size=[16, 16], patch_size=[8, 8])
    config = transformers.InternVLConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        downsample_ratio=0.5, tie_word_embeddings=False,
    )
    return processor, config


#: Families build_vlm makes (besides LLaVA, which build_llava makes).
VLM_FAMILIES = ("llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "idefics3", "smolvlm",
                "gemma3", "paligemma", "mllama", "internvl")


def build_vlm(family: str, path: str | Path, seed: int = 0) -> Path:
    """A tiny random image-text model of `family` + its processor (PIL image processor, the family's chat
    template from TRL where TRL ships one) in `path`, built offline."""
    import torch
    from transformers import AutoModelForImageTextToText

    if family == "llava":
        return build_llava(path, seed=seed)
    if family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        processor, config = _qwen_vl(family, "qwen3_vl" if family == "qwen3_vl" else "qwen2_5_vl")
    elif family in ("idefics3", "smolvlm"):
        processor, config = _idefics3(family)
    elif family == "gemma3":
        processor, config = _gemma3()
    elif family in ("llava_next", "llava_onevision"):
        processor, config = _llava_family(family)
    elif family == "paligemma":
        processor, config = _paligemma()
    elif family == "mllama":
        processor, config = _mllama()
    elif family == "internvl":
        processor, config = _internvl()
    else:
        raise ValueError(f"unknown family {family!r} ({', '.join(VLM_FAMILIES)})")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(str(path))
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    if family == "mllama":  # its cross-attention gates start at 0 (tanh(0): no image signal, no connector gradient)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                    param.fill_(0.5)
    model.save_pretrained(str(path))
    return path
