"""Where synth finds its shipped files (templates, recipes) and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _shipped(name: str) -> Path:
    # A wheel carries the folder inside the package; a source checkout keeps it at the repo root.
    inside = _PKG / name
    return inside if inside.is_dir() else _PKG.parent / name


def templates_dir() -> Path:
    return _shipped("templates")


def recipes_dir() -> Path:
    return _shipped("recipes")


def cache_dir() -> Path:
    """User cache for converted models and similar; SYNTH_CACHE_DIR overrides."""
    root = os.environ.get("SYNTH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "synth"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
