"""Tiny, deterministic input datasets for the adaptation tests (shapes drawn with PIL, text rows as JSONL).

The image rows follow the demo shapes schema (helpers/DEMO_SCHEMA.md): id, image, caption,
detailed_caption, objects, qa, label, text. Other test modules import the builders from here.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = {"red": (220, 40, 40), "blue": (40, 70, 220), "green": (40, 170, 60)}


def draw_scene(objects: list[dict], text: str, size: int = 64) -> bytes:
    image = Image.new("RGB", (size, size), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    for obj in objects:
        x0, y0, x1, y1 = (round(v * size) for v in obj["box"])
        fill = COLORS[obj["color"]]
        if obj["shape"] == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=fill)
    draw.text((2, size - 12), text, fill=(0, 0, 0))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


SHAPE_ROWS = [
    {
        "id": "shapes-00000",
        "objects": [
            {
                "label": "red circle",
                "color": "red",
                "shape": "circle",
                "size": "large",
                "box": [0.1, 0.1, 0.5, 0.5],
            },
            {
                "label": "blue square",
                "color": "blue",
                "shape": "square",
                "size": "small",
                "box": [0.6, 0.55, 0.8, 0.75],
            },
        ],
        "caption": "A large red circle and a small blue square.",
        "detailed_caption": "A large red circle sits at the top left. A small blue square is at the bottom right, below and to the right of the circle. The word CAT is written at the bottom.",
        "qa": [
            {
                "question": "How many objects are there?",
                "answer": "2",
                "kind": "count",
                "options": ["1", "2", "3", "4"],
            },
            {
                "question": "What color is the circle?",
                "answer": "red",
                "kind": "color",
                "options": ["red", "blue", "green"],
            },
            {"question": "Is there a triangle?", "answer": "no", "kind": "exists", "options": ["yes", "no"]},
        ],
        "label": "circle",
        "text": "CAT",
    },
    {
        "id": "shapes-00001",
        "objects": [
            {
                "label": "green square",
                "color": "green",
                "shape": "square",
                "size": "large",
                "box": [0.2, 0.3, 0.7, 0.8],
            },
            {
                "label": "red circle",
                "color": "red",
                "shape": "circle",
                "size": "small",
                "box": [0.75, 0.05, 0.9, 0.2],
            },
            {
                "label": "red circle",
                "color": "red",
                "shape": "circle",
                "size": "small",
                "box": [0.05, 0.05, 0.2, 0.2],
            },
        ],
        "caption": "A large green square and two small red circles.",
        "detailed_caption": "A large green square fills the centre. Two small red circles sit in the top corners, above the square. The word ZEBRA is written at the bottom.",
        "qa": [
            {
                "question": "Is the circle above the square?",
                "answer": "yes",
                "kind": "spatial",
                "options": ["yes", "no"],
            },
            {
                "question": "What color is the square?",
                "answer": "green",
                "kind": "color",
                "options": ["green", "red", "blue", "yellow"],
            },
        ],
        "label": "square",
        "text": "ZEBRA",
    },
]


def shapes_rows(count: int = 2) -> list[dict]:
    """`count` rows (cycling the fixed ones, with fresh ids), images as PNG bytes."""
    rows = []
    for i in range(count):
        base = SHAPE_ROWS[i % len(SHAPE_ROWS)]
        row = json.loads(json.dumps(base))
        row["id"] = f"shapes-{i:05d}"
        row["image"] = {"bytes": draw_scene(row["objects"], row["text"]), "path": None}
        rows.append(row)
    return rows


def shapes_features():
    from datasets import Features, Image, List, Value

    obj = {
        "label": Value("string"),
        "color": Value("string"),
        "shape": Value("string"),
        "size": Value("string"),
        "box": List(Value("float32")),
    }
    qa = {
        "question": Value("string"),
        "answer": Value("string"),
        "kind": Value("string"),
        "options": List(Value("string")),
    }
    return Features(
        {
            "id": Value("string"),
            "image": Image(),
            "caption": Value("string"),
            "detailed_caption": Value("string"),
            "objects": List(obj),
            "qa": List(qa),
            "label": Value("string"),
            "text": Value("string"),
        }
    )


def make_shapes_dataset(path: Path, count: int = 2) -> Path:
    """A save_to_disk folder shaped like `synth demo-data` output."""
    from datasets import Dataset

    Dataset.from_list(shapes_rows(count), features=shapes_features()).save_to_disk(str(path))
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


SQUAD_ROWS = [
    {
        "id": "sq-1",
        "context": "The Loire is the longest river in France, flowing 1,006 kilometres to the Atlantic.",
        "question": "Where does the Loire flow to?",
        "answers": {"text": ["the Atlantic"], "answer_start": [71]},
    },
    {
        "id": "sq-2",
        "context": "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911.",
        "question": "When did Marie Curie win the Nobel Prize in Chemistry?",
        "answers": {"text": ["1911"], "answer_start": [72]},
    },
]

SUMMARY_ROWS = [
    {
        "id": "sum-1",
        "document": "The town council met on Tuesday and voted to extend the library's opening hours to 9 pm on weekdays, starting next month, after a petition gathered 2,000 signatures.",
        "summary": "The council voted to keep the library open until 9 pm on weekdays.",
    },
    {
        "id": "sum-2",
        "document": "Heavy rain flooded several roads in the valley overnight. Emergency services closed two bridges and advised residents to avoid travel until the water recedes.",
        "summary": "Overnight floods closed roads and bridges in the valley.",
    },
]

NLI_ROWS_INT = [
    {
        "id": "nli-1",
        "premise": "A man is playing a guitar on stage.",
        "hypothesis": "A man is performing music.",
        "label": 0,
    },
    {
        "id": "nli-2",
        "premise": "Two dogs run through the snow.",
        "hypothesis": "The dogs are sleeping indoors.",
        "label": 2,
    },
    {
        "id": "nli-3",
        "premise": "A woman reads a book in a park.",
        "hypothesis": "The woman is a teacher.",
        "label": 1,
    },
]

NLI_ROWS_STR = [
    {
        "id": "nli-s1",
        "premise": "A child eats an apple.",
        "hypothesis": "A child is eating fruit.",
        "label": "Entailment",
    },
    {
        "id": "nli-s2",
        "premise": "The shop is closed on Sundays.",
        "hypothesis": "The shop opens every day.",
        "label": "contradiction",
    },
]


def test_shapes_dataset_follows_the_demo_schema(tmp_path):
    from datasets import load_from_disk

    ds = load_from_disk(str(make_shapes_dataset(tmp_path / "shapes", 3)))
    assert set(ds.column_names) == {
        "id",
        "image",
        "caption",
        "detailed_caption",
        "objects",
        "qa",
        "label",
        "text",
    }
    row = ds[2]
    assert row["id"] == "shapes-00002" and row["image"].size == (64, 64)
    assert row["qa"][0]["answer"] in row["qa"][0]["options"]
