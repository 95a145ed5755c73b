"""Find, inspect and load the model a recipe names: config-only checks first, weights only when training.

`inspect_model` reads just the config (cheap, no weights), so recipe errors such as "image data with a
text-only model" are reported before anything heavy is loaded. `load_model` then loads the weights, the
tokenizer or processor, and gives the chat template a base model lacks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth.errors import SynthError
from synth.paths import templates_dir
from synth.train.recipe import EMBEDDED_NAMES

DEFAULT_TRAIN_TEMPLATE = "chat/instruct.jinja"


@dataclass
class ModelInfo:
    """What synth knows about a model from its config alone."""

    name: str  # as the user wrote it ("embedded", a path, a Hub id)
    path: str  # what from_pretrained gets
    revision: str | None
    is_vision: bool
    model_type: str
    config: Any


def resolve_model_path(name: str) -> str:
    """'embedded' → the converted Gemma 3 270M folder (converted on first use); anything else unchanged."""
    if name in EMBEDDED_NAMES:
        from synth.llm.embedded import ensure_embedded_model

        return str(ensure_embedded_model())
    return name


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def inspect_model(name: str, revision: str | None = None) -> ModelInfo:
    """Resolve the name and read the config (no weights)."""
    from transformers import AutoConfig

    path = resolve_model_path(name)
    try:
        config = AutoConfig.from_pretrained(path, revision=revision)
    except (OSError, ValueError) as e:
        raise SynthError(
            f"model '{name}': cannot read its config: {_first_line(e)} "
            "(pass a local folder, a Hub id reachable from here, or 'embedded')"
        ) from None
    is_vision = getattr(config, "vision_config", None) is not None
    return ModelInfo(name, path, revision, is_vision, getattr(config, "model_type", "?"), config)


def default_template_text() -> str:
    return (templates_dir() / DEFAULT_TRAIN_TEMPLATE).read_text(encoding="utf-8")


def read_template(value: str) -> str:
    """A chat template by recipe value: 'default' or a path to a jinja file."""
    if value == "default":
        return default_template_text()
    path = Path(value)
    if not path.is_file() and (templates_dir() / value).is_file():
        path = templates_dir() / value
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise SynthError(f"chat_template {value}: cannot read it ({e.strerror or e})") from None


def device_and_precision(device: str, precision: str) -> tuple[str, str]:
    """('cpu'|'cuda', 'fp32'|'bf16'|'fp16') for the recipe's 'auto' values."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SynthError("device: cuda asked but no CUDA GPU is visible; set device: cpu (or auto)")
    if precision == "auto":
        if device == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_bf16() else "fp32"
    return device, precision


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 autocast is then several times faster than fp32 on CPU; without, slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def attn_implementation(device: str, dtype: str = "bfloat16") -> str:
    """flash_attention_2 on CUDA when installed and the weights are half precision (varlen kernels for
    packed rows), else sdpa (which separates packed rows by their position_ids)."""
    if device == "cuda" and dtype in ("bfloat16", "float16"):
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
    return "sdpa"


def load_processing(info: ModelInfo):
    """The tokenizer (text models) or processor (image-text models), with a pad token."""
    from transformers import AutoProcessor, AutoTokenizer

    try:
        if info.is_vision:
            processing = AutoProcessor.from_pretrained(info.path, revision=info.revision)
        else:
            processing = AutoTokenizer.from_pretrained(info.path, revision=info.revision)
    except (OSError, ValueError) as e:
        raise SynthError(f"model '{info.name}': cannot load its tokenizer/processor: {_first_line(e)}") from None
    except ImportError as e:  # e.g. Qwen-VL / SmolVLM / OneVision video processors need torchvision
        need = _first_line(e).split(" but ")[0]
        raise SynthError(
            f"model '{info.name}' ({info.model_type}): cannot load its processor: {need}; install it "
            "(torchvision: the build that matches your torch)"
        ) from None
    tokenizer = tokenizer_of(processing)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return processing


def load_weights(info: ModelInfo, *, device: str, dtype: str = "float32", qlora: bool = False, attn: str = "sdpa"):
    """The model's weights on `device` (a causal LM, or an image-text-to-text model)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.utils import logging as hf_logging

    kwargs: dict[str, Any] = {"revision": info.revision, "dtype": getattr(torch, dtype), "attn_implementation": attn}
    if qlora:
        kwargs["quantization_config"] = _bnb_config(device)
        kwargs["device_map"] = {"": 0}
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # per-tensor bars are noise beside synth's own progress
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        cls = AutoModelForImageTextToText if info.is_vision else AutoModelForCausalLM
        model = cls.from_pretrained(info.path, **kwargs)
    except (OSError, ValueError) as e:
        raise SynthError(f"model '{info.name}': cannot load it: {_first_line(e)}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    if not qlora:
        model.to(device)
    return model


def _bnb_config(device: str):
    import importlib.util

    if device != "cuda" or importlib.util.find_spec("bitsandbytes") is None:
        raise SynthError("qlora: 4-bit loading needs a CUDA GPU and the bitsandbytes package; set qlora: false")
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True
    )


def tokenizer_of(processing):
    return getattr(processing, "tokenizer", processing)


def current_template(processing) -> str | None:
    template = getattr(processing, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    return template or None


def saved_template(folder: str | Path) -> str | None:
    """The chat template saved beside an adapter or model (``chat_template.jinja``), if any."""
    path = Path(folder) / "chat_template.jinja"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    config = Path(folder) / "tokenizer_config.json"
    if config.is_file():
        try:
            template = json.loads(config.read_text()).get("chat_template")
        except (OSError, ValueError):
            return None
        return template if isinstance(template, str) else None
    return None


def set_chat_template(processing, choice: str | None, adapter: str | None = None) -> str:
    """Give the tokenizer/processor its chat template: the recipe's; the one saved with the adapter it
    starts from (so prompts render as they were trained); its own; or synth's default."""
    if choice:
        template = read_template(choice)
    else:
        template = (adapter and saved_template(adapter)) or current_template(processing) or default_template_text()
    processing.chat_template = template
    tokenizer = tokenizer_of(processing)
    if tokenizer is not processing:
        tokenizer.chat_template = template
    return template


def adapter_base(adapter_dir: str | Path) -> str | None:
    """The base model an adapter was trained on: synth's train_summary.json, else PEFT's adapter_config."""
    adapter_dir = Path(adapter_dir)
    summary = adapter_dir / "train_summary.json"
    if summary.is_file():
        try:
            model = json.loads(summary.read_text()).get("model")
            if model:
                return model
        except (OSError, ValueError):
            pass
    config = adapter_dir / "adapter_config.json"
    if config.is_file():
        try:
            return json.loads(config.read_text()).get("base_model_name_or_path")
        except (OSError, ValueError):
            return None
    return None


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()
