"""What an image shows, in text: for models that take no images (LLaVA's "image as text") and for `perturb`.

A scene is a caption plus object boxes. It comes from the record itself (raw rows such as the demo shapes
data carry ``detailed_caption`` / ``caption`` and ``objects``), or from a scenes dataset joined on the
record's ``meta.source_id`` (what `synth adapt` records) or ``id``: ``--scenes demo/shapes`` gives the
adapted ``demo/vqa_short`` rows their scene back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from synth.boxes import normalise_objects, object_rows

CAPTION_COLUMNS = ("detailed_caption", "caption", "description")
OBJECT_COLUMNS = ("objects", "boxes", "regions")
IMAGE_COLUMNS = ("image", "images")


@dataclass
class Scene:
    caption: str = ""
    #: ``[{"label", "box"}]`` with normalised [x0, y0, x1, y1] boxes; extra keys (color, shape, size) kept
    objects: list[dict[str, Any]] = field(default_factory=list)

    def as_vars(self) -> dict[str, Any]:
        return {"caption": self.caption, "objects": self.objects}


def _first(record: dict, names: tuple[str, ...]) -> Any:
    return next((record[c] for c in names if record.get(c) not in (None, "", [])), None)


def objects_of(value: Any, image_size: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """Object entries with a label and a normalised box (and colour, shape, size when given); pixel boxes
    (values above 1) need `image_size`."""
    return normalise_objects(value, image_size, keep=("color", "shape", "size"))


def _needs_size(value: Any) -> bool:
    for entry in object_rows(value):
        box = entry.get("box") or entry.get("bbox")
        try:
            if isinstance(box, (list, tuple)) and max(float(v) for v in box) > 1.0:
                return True
        except (TypeError, ValueError):
            continue
    return False


def scene_from_row(record: dict, base_dir=None) -> Scene | None:
    """The scene a row describes itself (caption and/or objects columns), or None."""
    caption = _first(record, CAPTION_COLUMNS)
    if isinstance(caption, (list, tuple)):
        caption = caption[0] if caption else ""
    raw_objects = _first(record, OBJECT_COLUMNS)
    size = None
    if raw_objects is not None and _needs_size(raw_objects):
        image = _first(record, IMAGE_COLUMNS)
        if isinstance(image, (list, tuple)):
            image = image[0] if image else None
        if image is not None:
            from synth.data.images import ImageError, decode_image

            try:
                size = decode_image(image, base_dir, str(record.get("id") or "?"), mode=None).size
            except ImageError:
                size = None
    objects = objects_of(raw_objects, size) if raw_objects is not None else []
    caption = str(caption or "").strip()
    if not caption and not objects:
        return None
    return Scene(caption=caption, objects=objects)


class SceneIndex:
    """Scenes by row id, read from a dataset with caption / objects columns (e.g. the demo shapes data)."""

    def __init__(self, scenes: dict[str, Scene], source: str = ""):
        self.scenes = scenes
        self.source = source

    @classmethod
    def from_source(cls, source: str | os.PathLike, split: str | None = None) -> SceneIndex:
        from synth.data import open_source
        from synth.errors import SynthError

        src = open_source(source, split)
        scenes: dict[str, Scene] = {}
        for record in src.records():
            scene = scene_from_row(record, src.base_dir)
            if scene is not None and record.get("id"):
                scenes[str(record["id"])] = scene
        if not scenes:
            raise SynthError(
                f"{source}: no scene found (rows need an 'id' and a caption or objects column: "
                f"{', '.join(CAPTION_COLUMNS + OBJECT_COLUMNS)})"
            )
        return cls(scenes, str(source))

    def lookup(self, record: dict) -> Scene | None:
        meta = record.get("meta") or {}
        for key in (meta.get("source_id"), meta.get("parent_id"), record.get("id")):
            if key is not None and str(key) in self.scenes:
                return self.scenes[str(key)]
        return None

    def __len__(self) -> int:
        return len(self.scenes)
