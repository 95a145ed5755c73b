"""Images as records carry them: encoded bytes plus the original path, decoded only when a stage needs pixels.

Every command resolves and checks images here, so they all behave the same way:

- a relative path resolves against the dataset's own folder (never the working directory), and neither a
  relative nor an absolute path (nor a symlink) may lead outside that folder;
- a file is checked without decoding pixels: the header parses, PNG chunks pass their checksums, and a
  JPEG ends with its end-of-image marker (PIL's ``verify()`` alone lets a truncated JPEG through);
- a PIL image is encoded once, and the sample id hashes those encoded bytes, so an id is the same whether
  its images arrived as PIL objects or as the bytes read back from disk.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from synth.errors import SynthError
from synth.records import encode_pil


class ImageError(SynthError):
    """A record's image is missing, unreadable, corrupt or outside the dataset folder."""

    reason = "bad_image"


def _where(record_id: str) -> str:
    return f"record {record_id}"


class ImageRoot(type(Path())):  # type: ignore[misc]  # Path itself cannot be subclassed before 3.12
    """A folder the user gave for image paths (``--image-root``, recipe ``image_root:``), not the dataset's
    own folder: it resolves the same way, and its errors name the option."""


def image_root(path: str | os.PathLike) -> ImageRoot:
    """The ``--image-root`` folder, checked: it must exist (a typo would otherwise fail on every record)."""
    root = ImageRoot(Path(path).expanduser().resolve())
    if not root.is_dir():
        raise SynthError(f"--image-root {path}: no such folder")
    return root


def resolve_image_path(base_dir: Path | str | None, value: str, record_id: str = "?") -> Path:
    """The file an image path names, inside `base_dir`; refuse paths (and symlinks) that lead outside it."""
    if base_dir is None:
        raise ImageError(
            f"{_where(record_id)}: image path '{value}' has no dataset folder to resolve against; "
            "embed the image bytes, read the dataset from a local folder or file, or pass --image-root DIR"
        )
    given = isinstance(base_dir, ImageRoot)
    base = Path(base_dir).resolve()
    candidate = (base / value).resolve()  # resolve() follows symlinks: a link out of the folder is caught
    if candidate != base and base not in candidate.parents:
        if given:
            raise ImageError(
                f"{_where(record_id)}: image path '{value}' points outside --image-root {base} "
                "(recipe: image_root); image paths must stay inside it"
            )
        raise ImageError(
            f"{_where(record_id)}: image path '{value}' points outside the dataset folder {base}; "
            "image paths must stay inside it (pass --image-root DIR, recipe image_root:, to resolve them "
            "under another folder)"
        )
    return candidate


def image_ref(value: Any, base_dir: Path | str | None, record_id: str = "?", *, check: bool = True) -> dict:
    """Any image cell (path string, ``{"bytes", "path"}``, raw bytes, PIL image, ``data:`` URL) as
    ``{"bytes": encoded, "path": original}``: the form records and the writer carry."""
    if value is None:
        raise ImageError(f"{_where(record_id)}: the image is empty (None)")
    path: str | None = None
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if not data:
            if not path:
                raise ImageError(f"{_where(record_id)}: image entry has neither bytes nor path")
            data = _read_file(resolve_image_path(base_dir, path, record_id), record_id)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, str) and value.startswith("data:"):
        data = _data_url_bytes(value, record_id)
    elif isinstance(value, (str, os.PathLike)):
        path = str(value)
        data = _read_file(resolve_image_path(base_dir, path, record_id), record_id)
    elif hasattr(value, "save") and hasattr(value, "mode"):  # a PIL image: encode it once, here
        data, path = encode_pil(value), getattr(value, "filename", None) or None
        check = False
    else:
        raise ImageError(f"{_where(record_id)}: unsupported image value of type {type(value).__name__}")
    data = bytes(data)
    if check:
        check_image_bytes(data, record_id, path or "(inline bytes)")
    return {"bytes": data, "path": path}


def _read_file(path: Path, record_id: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{_where(record_id)}: image not found: {path}") from None
    except OSError as e:
        raise ImageError(f"{_where(record_id)}: unreadable image {path}: {e.strerror or e}") from None


def _data_url_bytes(url: str, record_id: str) -> bytes:
    import base64
    import binascii

    header, _, payload = url.partition(",")
    if ";base64" not in header:
        raise ImageError(f"{_where(record_id)}: image data URL is not base64-encoded")
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError) as e:
        raise ImageError(f"{_where(record_id)}: image data URL does not decode: {e}") from None


def check_image_bytes(data: bytes, record_id: str = "?", where: str = "(inline bytes)") -> str:
    """The image format, after checking the file is whole without decoding pixels; ImageError otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format or "?"
            image.verify()
    except UnidentifiedImageError:
        raise ImageError(
            f"{_where(record_id)}: unreadable or corrupt image {where}: not a recognised image format"
        ) from None
    except Exception as e:  # PIL raises many types for broken files
        raise ImageError(
            f"{_where(record_id)}: unreadable or corrupt image {where}: {str(e).splitlines()[0][:200] or type(e).__name__}"
        ) from None
    if fmt == "JPEG" and b"\xff\xd9" not in data[-64:]:
        # verify() reads only the header of a JPEG; a file cut short has no end-of-image marker
        raise ImageError(f"{_where(record_id)}: truncated JPEG {where} (no end-of-image marker); re-export or remove it")
    return fmt


def decode_image(value: Any, base_dir: Path | str | None = None, record_id: str = "?", mode: str | None = "RGB"):
    """Pixels, for the stages that need them: a fully loaded PIL image (a truncated file is an ImageError)."""
    from PIL import Image, UnidentifiedImageError

    if hasattr(value, "save") and hasattr(value, "mode"):
        return value.convert(mode) if mode else value
    ref = value if isinstance(value, dict) and value.get("bytes") else image_ref(value, base_dir, record_id, check=False)
    where = ref.get("path") or "(inline bytes)"
    try:
        image = Image.open(io.BytesIO(ref["bytes"]))
        image.load()
    except UnidentifiedImageError:  # PIL's message quotes the buffer's address: not the same twice
        raise ImageError(f"{_where(record_id)}: unreadable or corrupt image {where}: not a recognised image format") from None
    except Exception as e:  # PIL raises many types for broken files
        raise ImageError(
            f"{_where(record_id)}: unreadable or corrupt image {where}: {str(e).splitlines()[0][:200] or type(e).__name__}"
        ) from None
    return image.convert(mode) if mode else image


def image_format(data: bytes) -> str | None:
    """PIL's name for the encoded format (``JPEG``, ``PNG``, ...), from the header only."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except Exception:
        return None
