"""Perceptual image hashes (64-bit) with PIL + numpy: pHash (DCT) and dHash (gradient).

pHash: grey 32x32 (Lanczos), 2-D DCT-II, the 8x8 lowest frequencies, bit = coefficient > median (DC left
out of the median). dHash: grey 9x8, bit = pixel brighter than its right neighbour. Near-duplicate images
(re-encoded, resized, slightly recoloured) differ in a few bits; `hamming` counts them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

import numpy as np

HashKind = Literal["phash", "dhash"]


@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


def _bits_to_int(bits: np.ndarray) -> int:
    return int.from_bytes(np.packbits(bits.astype(np.uint8).ravel()).tobytes(), "big")


def phash(image) -> int:
    """64-bit DCT hash of a PIL image."""
    from PIL import Image

    grey = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    dct = _dct_matrix(32)
    low = (dct @ grey @ dct.T)[:8, :8]
    median = np.median(low.ravel()[1:])
    return _bits_to_int(low > median)


def dhash(image) -> int:
    """64-bit gradient hash of a PIL image."""
    from PIL import Image

    grey = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    return _bits_to_int(grey[:, 1:] > grey[:, :-1])


def image_phash(value: Any, kind: HashKind = "phash", record_id: str = "?") -> int:
    """Perceptual hash of an image as records carry it (``{"bytes", "path"}``, bytes or PIL): the one place
    dedup decodes pixels. `synth.data.images.ImageError` if it does not decode."""
    from synth.data.images import decode_image

    image = decode_image(value, None, record_id, mode="RGB")
    return phash(image) if kind == "phash" else dhash(image)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def blocks(value: int, pieces: int) -> list[tuple[int, int]]:
    """Split a 64-bit hash into `pieces` (index, bits) blocks: two hashes within distance pieces-1 share one
    block exactly (pigeonhole), so exact block lookups find every near match."""
    out, start = [], 0
    for i in range(pieces):
        width = 64 // pieces + (1 if i < 64 % pieces else 0)
        out.append((i, (value >> start) & ((1 << width) - 1)))
        start += width
    return out
