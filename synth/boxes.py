"""Object boxes from labelled data as ``[{"label", "box"}]`` with box = normalised ``[x0, y0, x1, y1]``.

One reader for the box columns MMEvol's image-as-text and the preference strategies' scenes both use.
Sources disagree on what a box is: MMEvol and the demo data write corners ``[x0, y0, x1, y1]``, COCO's
``bbox`` is ``[x, y, width, height]`` in pixels. `read_objects` converts from the format it is told
(`BOX_FORMATS`, `BOX_UNITS`) and counts every entry it cannot use, by reason, so nothing is dropped
unseen.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

BoxFormat = Literal["xyxy", "xywh"]
BoxUnits = Literal["auto", "normalised", "pixels"]
BOX_FORMATS = ("xyxy", "xywh")
#: auto: a box with a value above 1 is in pixels, else normalised (wrong for tiny pixel boxes near the
#: top-left corner: say which when you know)
BOX_UNITS = ("auto", "normalised", "pixels")

# Why an entry was not used (the keys of `Objects.malformed`).
NO_LABEL = "no_label"
NO_BOX = "no_box"  # missing, not a list of 4, or not numbers
NO_IMAGE_SIZE = "pixels_without_image_size"
EMPTY_BOX = "empty_box"  # zero or negative width/height (x1 <= x0 or y1 <= y0), or wholly outside the image


@dataclass
class Objects:
    """What `read_objects` made of one value: the usable objects and the entries it could not use."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    malformed: Counter = field(default_factory=Counter)


def object_rows(value: Any) -> list[dict]:
    """A list of dicts, also from Arrow's layout of a list of structs (a dict of equal-length lists)."""
    if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
        keys = list(value)
        return [dict(zip(keys, row, strict=True)) for row in zip(*(value[k] for k in keys), strict=True)]
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _entries(value: Any) -> tuple[list[dict], int]:
    """The dict entries of `value` and how many list items were not dicts at all."""
    rows = object_rows(value)
    if isinstance(value, list):
        return rows, len(value) - len(rows)
    return rows, 0


def to_xyxy(box: Any, box_format: BoxFormat = "xyxy") -> tuple[float, float, float, float] | None:
    """Four numbers as corners ``(x0, y0, x1, y1)`` in the box's own units; None if it is not 4 numbers."""
    if not isinstance(box, (list, tuple)) or len(box) != 4 or any(isinstance(v, bool) for v in box):
        return None
    try:
        a, b, c, d = (float(v) for v in box)
    except (TypeError, ValueError):
        return None
    if box_format == "xywh":
        return a, b, a + c, b + d
    return a, b, c, d


def read_objects(
    value: Any,
    image_size: tuple[int, int] | None = None,
    keep: tuple[str, ...] = (),
    box_format: BoxFormat = "xyxy",
    box_units: BoxUnits = "auto",
) -> Objects:
    """Entries with a label (`label`/`name`/`category`) and a box (`box`/`bbox`) in `box_format` and
    `box_units`, as normalised corners clipped to [0, 1] and rounded to 3 decimals. Pixel boxes are divided
    by `image_size` (width, height). `keep` names further keys to carry over. Unusable entries are counted
    in `malformed` by reason."""
    if box_format not in BOX_FORMATS:
        raise ValueError(f"box format {box_format!r}: use one of {', '.join(BOX_FORMATS)}")
    if box_units not in BOX_UNITS:
        raise ValueError(f"box units {box_units!r}: use one of {', '.join(BOX_UNITS)}")
    out = Objects()
    entries, not_dicts = _entries(value)
    if not_dicts:
        out.malformed[NO_BOX] += not_dicts
    for entry in entries:
        label = entry.get("label") or entry.get("name") or entry.get("category")
        corners = to_xyxy(entry.get("box") if entry.get("box") is not None else entry.get("bbox"), box_format)
        if not label:
            out.malformed[NO_LABEL] += 1
            continue
        if corners is None:
            out.malformed[NO_BOX] += 1
            continue
        x0, y0, x1, y1 = corners
        pixels = box_units == "pixels" or (box_units == "auto" and max(abs(v) for v in corners) > 1.0)
        if pixels:
            if image_size is None:
                out.malformed[NO_IMAGE_SIZE] += 1
                continue
            width, height = image_size
            x0, x1, y0, y1 = x0 / width, x1 / width, y0 / height, y1 / height
        box = [round(min(max(v, 0.0), 1.0), 3) for v in (x0, y0, x1, y1)]
        if box[2] <= box[0] or box[3] <= box[1]:
            out.malformed[EMPTY_BOX] += 1
            continue
        extra = {k: entry[k] for k in keep if entry.get(k)}
        out.objects.append({"label": str(label), "box": box, **extra})
    return out


def normalise_objects(
    value: Any,
    image_size: tuple[int, int] | None = None,
    keep: tuple[str, ...] = (),
    box_format: BoxFormat = "xyxy",
    box_units: BoxUnits = "auto",
) -> list[dict[str, Any]]:
    """The usable objects of `read_objects` (for callers that do not report what was left out)."""
    return read_objects(value, image_size, keep, box_format, box_units).objects
