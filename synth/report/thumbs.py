"""Thumbnails as data URLs, so the report is one file that opens without a network or the dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synth.errors import SynthError


class Thumbnails:
    """Encodes each distinct image once (reports show the same image in many rows); None when unreadable."""

    def __init__(self, max_side: int = 160):
        self.max_side = max_side
        self._cache: dict[tuple[int, str], str | None] = {}

    @property
    def count(self) -> int:
        return sum(1 for v in self._cache.values() if v)

    def url(self, value: Any, base_dir: Path | None) -> str | None:
        import hashlib

        data = self._bytes(value, base_dir)
        if data is None:
            return None
        key = (len(data), hashlib.sha1(data).hexdigest())
        if key not in self._cache:
            self._cache[key] = self._encode(data)
        return self._cache[key]

    @staticmethod
    def _bytes(value: Any, base_dir: Path | None) -> bytes | None:
        """Encoded bytes of an image cell, checked (a truncated or corrupt image shows as 'unreadable')."""
        from synth.data.images import image_ref

        if value is None:
            return None
        try:
            return image_ref(value, base_dir, check=True)["bytes"]
        except SynthError:
            return None

    def _encode(self, data: bytes) -> str | None:
        from synth.llm.images import image_data_url

        try:
            return image_data_url(data, max_side=self.max_side)
        except (OSError, ValueError, SyntaxError):  # PIL's ways of saying "not an image I can read"
            return None
