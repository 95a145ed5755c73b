"""The demo shapes dataset: procedurally drawn scenes with exact ground truth, made offline in seconds.

Each image shows 1-4 coloured shapes (distinct colour+shape labels, no overlaps) and one drawn word on a
light background. Rows carry a brief and a detailed caption, normalised boxes, QA (count, colour,
spatial relation, existence) with multiple-choice options, a classification label (shape of the largest
object) and the drawn word (OCR). The column contract is /work/helpers/DEMO_SCHEMA.md; the adaptation
template sets read these columns.

Determinism: every scene draws from its own `random.Random` seeded by (seed, index), PNGs are encoded
with fixed settings and the dataset fingerprint is derived from the arguments, so the same
seed + count + size (+ offset) gives byte-identical files.

Disjoint sets: `offset` is the first scene's index (ids are ``shapes-{index:05d}``), so sets drawn with
the same seed and non-overlapping index ranges (e.g. a labelled set at offset 0, an unlabeled one at
offset 200, a held-out one at offset 400) hold different scenes with different ids; a scene is the
same wherever its index falls (rows 200-299 of ``--count 300`` equal ``--offset 200 --count 100``).
A different seed alone also draws other scenes, but reuses the ids.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from synth.errors import SynthError

SHAPES = ("circle", "square", "triangle", "star", "hexagon")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 60, 180),
    "orange": (245, 130, 20),
}
# Size classes as the radius of a circle of the same area, a fraction of the image side. Every shape is
# scaled to that area (a star of radius r covers far less than a circle of radius r), with +-10% jitter
# on the radius, so the size words agree with what one sees: any "large" object is bigger than any "medium".
SIZES = {"small": 0.06, "medium": 0.085, "large": 0.115}
BACKGROUNDS = {
    "white": (255, 255, 255),
    "light gray": (235, 235, 235),
    "cream": (250, 244, 225),
    "light blue": (225, 238, 250),
}
WORDS = (
    "ZEBRA", "APPLE", "RIVER", "CLOUD", "TIGER", "PIANO", "LEMON", "ROBOT", "OCEAN", "MAPLE",
    "HOUSE", "CANDY", "STONE", "MOUSE", "GRAPE", "TRAIN", "PLANT", "EAGLE", "BREAD", "LIGHT",
)
TEXT_COLOR = (30, 30, 30)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
MIN_SIZE = 64


@dataclass
class Shape:
    color: str
    shape: str
    size: str
    cx: float
    cy: float
    radius: float

    @property
    def label(self) -> str:
        return f"{self.color} {self.shape}"

    def points(self) -> list[tuple[float, float]]:
        """Outline of the shape (for polygons) in pixels."""
        r, cx, cy = self.radius, self.cx, self.cy
        if self.shape == "square":
            s = r * 0.85  # a square of half-side r looks much bigger than a circle of radius r
            return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
        if self.shape == "triangle":
            return _regular(cx, cy, r, 3, -90)
        if self.shape == "hexagon":
            return _regular(cx, cy, r, 6, 0)
        if self.shape == "star":
            outer = _regular(cx, cy, r, 5, -90)
            inner = _regular(cx, cy, r * 0.45, 5, -90 + 36)
            return [p for pair in zip(outer, inner) for p in pair]
        raise ValueError(self.shape)

    def area(self) -> float:
        """Drawn area in square pixels (what "largest" means for the classification label)."""
        if self.shape == "circle":
            return math.pi * self.radius**2
        points = self.points()
        return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]))) / 2

    def bbox(self) -> tuple[float, float, float, float]:
        if self.shape == "circle":
            return (self.cx - self.radius, self.cy - self.radius, self.cx + self.radius, self.cy + self.radius)
        xs, ys = zip(*self.points())
        return (min(xs), min(ys), max(xs), max(ys))


def _regular(cx: float, cy: float, r: float, n: int, start_deg: float) -> list[tuple[float, float]]:
    return [
        (cx + r * math.cos(math.radians(start_deg + 360 * i / n)), cy + r * math.sin(math.radians(start_deg + 360 * i / n)))
        for i in range(n)
    ]


def _circle_equivalent(shape: str) -> float:
    """Radius factor that gives `shape` the area of a circle of radius 1."""
    return math.sqrt(math.pi / Shape("", shape, "", 0.0, 0.0, 1.0).area())


@dataclass
class Scene:
    size: int
    background: str
    shapes: list[Shape]
    word: str
    word_box: tuple[int, int, int, int]
    font_size: int


# ---------------------------------------------------------------- layout


def _overlaps(a, b, gap: float) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def _font(font_size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=font_size)  # Pillow's built-in font: nothing to download


def layout_scene(rng: random.Random, size: int) -> Scene:
    """Choose objects and a word and place them without overlaps (rejection sampling, deterministic)."""
    from PIL import Image, ImageDraw

    font_size = max(10, round(size * 0.085))
    font = _font(font_size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    margin = size * 0.03
    gap = size * 0.03
    while True:  # a scene that does not fit is redrawn; with <= 4 objects this is rare
        count = rng.randint(1, 4)
        labels = rng.sample([(c, s) for c in COLORS for s in SHAPES], count)
        shapes, boxes = [], []
        for color, shape_name in labels:
            size_name = rng.choice(list(SIZES))
            radius = SIZES[size_name] * size * rng.uniform(0.9, 1.1) * _circle_equivalent(shape_name)
            for _ in range(200):
                cx = rng.uniform(margin + radius, size - margin - radius)
                cy = rng.uniform(margin + radius, size - margin - radius)
                shape = Shape(color, shape_name, size_name, cx, cy, radius)
                box = shape.bbox()
                if not any(_overlaps(box, other, gap) for other in boxes):
                    shapes.append(shape)
                    boxes.append(box)
                    break
            else:
                break
        if len(shapes) < count:
            continue
        word = rng.choice(WORDS)
        left, top, right, bottom = measure.textbbox((0, 0), word, font=font)
        width, height = right - left, bottom - top
        for _ in range(200):
            x = rng.randint(round(margin), max(round(margin), int(size - margin - width)))
            y = rng.randint(round(margin), max(round(margin), int(size - margin - height)))
            word_box = (x, y, x + width, y + height)
            if not any(_overlaps(word_box, other, gap) for other in boxes):
                return Scene(size, rng.choice(list(BACKGROUNDS)), shapes, word, word_box, font_size)


def draw_scene(scene: Scene):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (scene.size, scene.size), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        fill = COLORS[shape.color]
        if shape.shape == "circle":
            draw.ellipse(shape.bbox(), fill=fill)
        else:
            draw.polygon(shape.points(), fill=fill)
    font = _font(scene.font_size)
    # Offset by the font's bearing so that the ink box lands exactly on word_box.
    left, top, _, _ = draw.textbbox((0, 0), scene.word, font=font)
    draw.text((scene.word_box[0] - left, scene.word_box[1] - top), scene.word, font=font, fill=TEXT_COLOR)
    return image


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


# ---------------------------------------------------------------- language


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _plural(shape: str) -> str:
    return shape + "s"


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _brief_phrase(shape: Shape) -> str:
    size = "" if shape.size == "medium" else shape.size + " "
    return _article(f"{size}{shape.color} {shape.shape}")


def region(cx: float, cy: float, size: int) -> str:
    """Where in a 3x3 grid the point lies, as words ("top left", "center", ...)."""
    col = min(2, int(3 * cx / size))
    row = min(2, int(3 * cy / size))
    vertical = ("top", "", "bottom")[row]
    horizontal = ("left", "", "right")[col]
    return " ".join(w for w in (vertical, horizontal) if w) or "center"


def _region_phrase(name: str) -> str:
    if name == "center":
        return "in the center"
    if name in ("top", "bottom"):
        return f"at the {name}"
    if name in ("left", "right"):
        return f"on the {name}"
    return f"in the {name} corner"


def relation(a: Shape, b: Shape) -> str | None:
    """Where `a` is relative to `b` ("left", "right", "above", "below"), or None when not clear-cut."""
    dx, dy = a.cx - b.cx, a.cy - b.cy
    if abs(dx) >= 1.5 * abs(dy):
        return "left" if dx < 0 else "right"
    if abs(dy) >= 1.5 * abs(dx):
        return "above" if dy < 0 else "below"
    return None


_RELATION_PHRASE = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}


def brief_caption(scene: Scene) -> str:
    text = _join([_brief_phrase(s) for s in scene.shapes]) + "."
    return text[0].upper() + text[1:]


def detailed_caption(scene: Scene) -> str:
    n = len(scene.shapes)
    sentences = [
        f"The image shows {NUMBER_WORDS[n]} {'shape' if n == 1 else 'shapes'} on a {scene.background} background."
    ]
    for i, shape in enumerate(scene.shapes):
        phrase = _article(f"{shape.size} {shape.color} {shape.shape}").capitalize()
        sentence = f"{phrase} is {_region_phrase(region(shape.cx, shape.cy, scene.size))}"
        if i > 0:
            rel = relation(shape, scene.shapes[i - 1])
            if rel:
                sentence += f", {_RELATION_PHRASE[rel]} the {scene.shapes[i - 1].label}"
        sentences.append(sentence + ".")
    largest = largest_shape(scene)
    if n > 1:
        sentences.append(f"The largest object is the {largest.label}.")
    x0, y0, x1, y1 = scene.word_box
    where = _region_phrase(region((x0 + x1) / 2, (y0 + y1) / 2, scene.size))
    sentences.append(f'The word "{scene.word}" is written in black {where}.')
    return " ".join(sentences)


def largest_shape(scene: Scene) -> Shape:
    return max(scene.shapes, key=lambda s: s.area())


# ---------------------------------------------------------------- QA


def _number_options(rng: random.Random, answer: int) -> list[str]:
    pool = [k for k in range(7) if k != answer]
    return [str(k) for k in sorted(rng.sample(pool, 3) + [answer])]


def _options(rng: random.Random, answer: str, pool: list[str], k: int = 4) -> list[str]:
    options = rng.sample([p for p in pool if p != answer], k - 1) + [answer]
    rng.shuffle(options)
    return options


def make_qa(rng: random.Random, scene: Scene) -> list[dict]:
    shapes = scene.shapes
    labels = {s.label for s in shapes}
    qa = []
    n = len(shapes)
    qa.append({
        "question": "How many shapes are there in the image?",
        "answer": str(n),
        "kind": "count",
        "options": _number_options(rng, n),
    })
    shape_name = rng.choice(SHAPES)
    k = sum(1 for s in shapes if s.shape == shape_name)
    qa.append({
        "question": f"How many {_plural(shape_name)} are there in the image?",
        "answer": str(k),
        "kind": "count",
        "options": _number_options(rng, k),
    })
    # A colour question needs a shape that occurs once, so "the circle" names one object.
    unique = [s for s in shapes if sum(1 for o in shapes if o.shape == s.shape) == 1]
    if unique:
        target = rng.choice(unique)
        qa.append({
            "question": f"What color is the {target.shape}?",
            "answer": target.color,
            "kind": "color",
            "options": _options(rng, target.color, list(COLORS)),
        })
    pairs = [(a, b) for a in shapes for b in shapes if a is not b and relation(a, b)]
    if pairs:
        a, b = rng.choice(pairs)
        qa.append({
            "question": f"Is the {a.label} left of, right of, above or below the {b.label}?",
            "answer": relation(a, b),
            "kind": "spatial",
            "options": ["left", "right", "above", "below"],
        })
    if rng.random() < 0.5:
        asked = rng.choice(shapes).label
    else:
        asked = rng.choice(sorted(f"{c} {s}" for c in COLORS for s in SHAPES if f"{c} {s}" not in labels))
    qa.append({
        "question": f"Is there {_article(asked)} in the image?",
        "answer": "yes" if asked in labels else "no",
        "kind": "exists",
        "options": ["yes", "no"],
    })
    return qa


# ---------------------------------------------------------------- dataset


def demo_features():
    from datasets import Features, Image, Value

    return Features({
        "id": Value("string"),
        "image": Image(),
        "caption": Value("string"),
        "detailed_caption": Value("string"),
        "objects": [{
            "label": Value("string"),
            "color": Value("string"),
            "shape": Value("string"),
            "size": Value("string"),
            "box": [Value("float64")],
        }],
        "qa": [{"question": Value("string"), "answer": Value("string"), "kind": Value("string"), "options": [Value("string")]}],
        "label": Value("string"),
        "text": Value("string"),
    })


def make_row(index: int, seed: int, size: int) -> dict:
    """One scene and its ground truth; depends only on (index, seed, size)."""
    rng = random.Random(f"synth-demo:{seed}:{size}:{index}")
    scene = layout_scene(rng, size)
    image = draw_scene(scene)
    objects = []
    for shape in scene.shapes:
        x0, y0, x1, y1 = shape.bbox()
        box = [round(min(max(v / size, 0.0), 1.0), 3) for v in (x0, y0, x1, y1)]
        objects.append({"label": shape.label, "color": shape.color, "shape": shape.shape, "size": shape.size, "box": box})
    return {
        "id": f"shapes-{index:05d}",
        "image": {"bytes": png_bytes(image), "path": None},
        "caption": brief_caption(scene),
        "detailed_caption": detailed_caption(scene),
        "objects": objects,
        "qa": make_qa(rng, scene),
        "label": largest_shape(scene).shape,
        "text": scene.word,
    }


def iter_rows(count: int, seed: int = 0, size: int = 256, offset: int = 0) -> Iterator[dict]:
    """Scenes `offset` .. `offset + count - 1`."""
    for index in range(offset, offset + count):
        yield make_row(index, seed, size)


def _fingerprint(count: int, seed: int, size: int, offset: int = 0) -> str:
    # From the arguments (not a random one), so state.json is identical across runs too. Offset 0 keeps
    # the fingerprint it had before offsets existed.
    key = f"synth-demo:{count}:{seed}:{size}" + (f":{offset}" if offset else "")
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _check_arguments(count: int, size: int, offset: int = 0) -> None:
    if count < 1:
        raise SynthError(f"--count must be at least 1 (got {count})")
    if size < MIN_SIZE:
        raise SynthError(f"--size must be at least {MIN_SIZE} pixels (got {size})")
    if offset < 0 or offset + count > 100_000:
        raise SynthError(f"--offset must be 0 or more, with offset + count at most 100000 (ids are 5 digits); "
                         f"got offset {offset}, count {count}")


def _drawn_rows(count: int, seed: int, size: int, show_progress: bool, offset: int = 0) -> Iterator[dict]:
    from synth.progress import progress

    with progress() as bar:
        task = bar.add_task("drawing scenes", total=count, tokens="", visible=show_progress)
        for row in iter_rows(count, seed, size, offset):
            yield row
            bar.advance(task)


def _fixed(dataset, count: int, seed: int, size: int, offset: int = 0):
    """The dataset with a fingerprint and info that depend only on the arguments (byte-identical output)."""
    from datasets import Dataset, DatasetInfo

    return Dataset(dataset.data, info=DatasetInfo(features=demo_features()),
                   fingerprint=_fingerprint(count, seed, size, offset))


def make_demo_dataset(
    count: int = 200, seed: int = 0, size: int = 256, show_progress: bool = True, scratch: Path | None = None,
    offset: int = 0,
):
    """The demo dataset (scenes `offset` .. `offset + count - 1`), drawn row by row from a generator:
    memory-mapped Arrow files in `scratch`, or without one, held in memory (nothing left behind in a
    temporary folder)."""
    import tempfile

    from datasets import Dataset

    from synth.data import build_dataset, quiet_datasets

    _check_arguments(count, size, offset)
    rows = _drawn_rows(count, seed, size, show_progress, offset)
    if scratch is not None:
        return _fixed(build_dataset(rows, features=demo_features(), scratch=scratch), count, seed, size, offset)
    with tempfile.TemporaryDirectory(prefix="synth-demo-") as tmp, quiet_datasets():
        dataset = Dataset.from_generator(
            lambda: rows, features=demo_features(), cache_dir=tmp, keep_in_memory=True,
            fingerprint=_fingerprint(count, seed, size, offset),
        )
    return _fixed(dataset, count, seed, size, offset)


def write_demo_data(
    out: str | Path, count: int = 200, seed: int = 0, size: int = 256, overwrite: bool = False, show_progress: bool = True,
    offset: int = 0,
) -> Path:
    """Draw the demo dataset and write it through the one writer: a `save_to_disk` folder that appears
    whole or not at all."""
    from synth.data import OutputFolder, check_output, save

    _check_arguments(count, size, offset)
    check_output(out, overwrite)  # fail before drawing anything
    with OutputFolder(out, overwrite) as folder:
        save(make_demo_dataset(count, seed, size, show_progress, scratch=folder.scratch("demo"), offset=offset),
             folder.path)
    return folder.final
