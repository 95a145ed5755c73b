"""Object boxes from labelled data as ``[{"label", "box"}]`` with box = normalised ``[x0, y0, x1, y1]``.

One reader for the box columns MMEvol's image-as-text and the preference strategies' scenes both use.
"""

from __future__ import annotations

from typing import Any


def object_rows(value: Any) -> list[dict]:
    """A list of dicts, also from Arrow's layout of a list of structs (a dict of equal-length lists)."""
    if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
        keys = list(value)
        return [dict(zip(keys, row, strict=True)) for row in zip(*(value[k] for k in keys), strict=True)]
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def normalise_objects(
    value: Any, image_size: tuple[int, int] | None = None, keep: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Entries with a label (`label`/`name`/`category`) and a box (`box`/`bbox`); bad entries are skipped.
    Boxes with values above 1 are pixels, divided by `image_size` (skipped without it); boxes are clipped
    to [0, 1] and rounded to 3 decimals, and empty ones dropped. `keep` names further keys to carry over."""
    out = []
    for entry in object_rows(value):
        label = entry.get("label") or entry.get("name") or entry.get("category")
        box = entry.get("box") or entry.get("bbox")
        if not label or not isinstance(box, (list, tuple)) or len(box) != 4:
            continue
        try:
            x0, y0, x1, y1 = (float(v) for v in box)
        except (TypeError, ValueError):
            continue
        if max(x0, y0, x1, y1) > 1.0:
            if image_size is None:
                continue
            width, height = image_size
            x0, x1, y0, y1 = x0 / width, x1 / width, y0 / height, y1 / height
        box = [round(min(max(v, 0.0), 1.0), 3) for v in (x0, y0, x1, y1)]
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        extra = {k: entry[k] for k in keep if entry.get(k)}
        out.append({"label": str(label), "box": box, **extra})
    return out
