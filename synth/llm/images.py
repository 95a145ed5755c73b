"""Images for chat requests: any form `synth.records` accepts → a data URL, longest side capped."""

from __future__ import annotations

import base64
import io
import threading
from collections import OrderedDict
from typing import Any

from synth.records import image_bytes, image_hash

_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
_CACHE: OrderedDict[tuple[str, int], str] = OrderedDict()
_CACHE_SIZE = 64  # the same image is often sent several times (evolution rounds, n samples, re-asks)
_LOCK = threading.Lock()


def image_data_url(image: Any, max_side: int | None = None) -> str:
    """A ``data:`` URL for a PIL image, encoded bytes, a path or a ``{"bytes", "path"}`` dict.

    An image already small enough is sent with its original bytes when the format is one servers take;
    otherwise it is resized (aspect kept) so its longest side is `max_side`, and re-encoded.
    """
    if isinstance(image, str) and image.startswith("data:"):
        return image
    key = (image_hash(image), max_side or 0)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    url = _encode(image, max_side)
    with _LOCK:
        _CACHE[key] = url
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return url


def _encode(image: Any, max_side: int | None) -> str:
    from PIL import Image

    if isinstance(image, Image.Image):
        img, data, fmt = image, None, None
    else:
        data = image_bytes(image)
        img = Image.open(io.BytesIO(data))
        fmt = img.format
    too_big = bool(max_side) and max(img.size) > max_side
    if data is not None and fmt in _MIME and not too_big:
        return f"data:{_MIME[fmt]};base64," + base64.b64encode(data).decode()
    img.load()
    if too_big:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    # Photos go as JPEG (small); anything with transparency or from a lossless source as PNG.
    if fmt == "JPEG" or (fmt is None and img.mode == "RGB"):
        out_fmt, img = "JPEG", img.convert("RGB")
    else:
        out_fmt = "PNG"
        if img.mode not in ("RGB", "RGBA", "L", "LA"):
            img = img.convert("RGBA")
    buf = io.BytesIO()
    img.save(buf, format=out_fmt, **({"quality": 90} if out_fmt == "JPEG" else {}))
    return f"data:{_MIME[out_fmt]};base64," + base64.b64encode(buf.getvalue()).decode()


def decode_data_url(url: str):
    """The PIL image inside a data URL (tests and the test server use it)."""
    from PIL import Image

    header, _, payload = url.partition(",")
    if not header.startswith("data:") or ";base64" not in header:
        raise ValueError("not a base64 data URL")
    return Image.open(io.BytesIO(base64.b64decode(payload)))
