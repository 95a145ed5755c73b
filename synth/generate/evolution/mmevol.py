"""MMEvol for image-text data (Luo et al. 2024): each round, evolve the whole list of question-answer-steps
("Q&A&S") items of an image in one request with one of three operators, drawn per image and round:
fine-grained perception (0.5 by default), cognitive reasoning (0.25) and interaction (0.25), MMEvol's own
odds. One judge request per image then rates each evolved item (MMEvol's rubric: improved yes/no and a
difficulty score from 0 to 10, 0 when the image is not needed); only the items that improved are kept, and
they are the image's items for the next round. An image whose evolution kept nothing keeps its items.

The prompts are MMEvol's scaffold, in template files (``templates/prompts/mmevol``): the atomic visual
and language skills, the visual manipulations steps are written with (grounding, referring, calculate,
OCR), items as ``{image_position, objects, skills, format, question, steps: [{manipulation,
description}], answer}``, and few-shot demonstrations (``demos/<operator>.json``). Interaction evolution
lets the model pick the fitting question form from the 17 forms (falling back to multiple choice) and
records it; ``form_choice: drawn`` instead draws one form per image from ``interaction_forms`` (synth's
option, for an even spread of forms).

Input records, one seed per image: an image, a caption, optional object boxes and optional existing QA
items. Columns are found automatically on the demo shapes data (``image``, ``detailed_caption``/``caption``,
``objects``, ``qa``) and on SFT records (``images`` + the user/assistant turns), or named in the config.
Boxes are read in ``box_format`` (``xyxy`` corners, MMEvol's and the demo's; ``xywh`` for COCO's ``bbox``)
and ``box_units``; malformed ones are counted in the report. Images stay encoded; only their header is
read (for the size that pixel boxes need).

A backend that cannot take images gets the image as text (caption + boxes), as MMEvol's own prompts also
give them; the prompts then say so.

Output records: one SFT conversation per image and kept round (user = image + the questions, assistant =
the answers; ``answer_with_steps`` writes the steps out before each answer), lineage and the items' steps,
skills, forms and verdicts in ``meta``.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from synth import boxes
from synth.data.images import ImageError, image_ref
from synth.generate.evolution.base import EvolutionConfig, EvolutionStage, Outcome, Version
from synth.generate.evolution.elimination import (
    EliminationRules,
    JudgeItem,
    JudgeReply,
    Verdict,
    judge_outcomes,
    parse_structured,
    same_text,
    schema_hint,
)
from synth.generate.evolution.operators import Weights, check_weights, pick_weighted
from synth.llm.base import ChatRequest, Completion
from synth.paths import templates_dir
from synth.pipeline import Failed, Rejected
from synth.records import ImagePart, Message, TextPart, load_meta, message_text
from synth.templating import render_file

OPERATORS = ("perception", "reasoning", "interaction")
#: MMEvol's odds (dataengine/multi_round.py): in-breadth perception half the time
DEFAULT_OPERATORS = {"perception": 0.5, "reasoning": 0.25, "interaction": 0.25}

#: MMEvol's question forms for interaction evolution, with what each asks for
FORMS = {
    "region_selection": "pick, from listed boxes, the one that holds a described object",
    "missing_object_selection": "pick, from a list of objects, the ones that are not in the image",
    "text_image_matching": "say whether a statement matches the image",
    "object_region_matching": "say whether a named object is inside a given box",
    "completeness_of_response": "say whether a given question can be answered from the image",
    "fill_in_the_blank": "complete a sentence about the image with a blank (____)",
    "image_style_classification": "name the style of the image (photograph, cartoon, sketch, ...)",
    "art_type": "name the type of artwork (portrait, landscape, still life, ...)",
    "rationales_generation": "give reasons that support a given answer to a given question",
    "text_detection": "list all the text in the image",
    "text_translation": "translate text shown in the image (or in a given box)",
    "coreference_resolution": "say which object in the image a word of a sentence refers to",
    "instruction_following": "answer under explicit constraints (a role, a length, a format)",
    "depth_order": "say which of two objects is closer to the camera",
    "relative_distance": "say which of two objects is closer to a third one",
    "creative_content_generation": "write a poem, story or dialogue inspired by the image",
    "multi_choice": "a question with lettered options A, B, C, D and one right option",
}
INTERACTION_FORMS = tuple(FORMS)
FALLBACK_FORM = "multi_choice"
REGION_FORMS = ("region_selection", "object_region_matching")  # need object boxes
FORM_ALIASES = {"multiple_choice": "multi_choice", "multi_choices": "multi_choice", "rationale": "rationales_generation",
                "rationales": "rationales_generation"}

IMAGE_COLUMNS = ("image", "images", "img", "picture")
CAPTION_COLUMNS = ("detailed_caption", "caption", "description", "captions")
BOXES_COLUMNS = ("objects", "boxes", "regions", "det")
QA_COLUMNS = ("qa", "qas", "questions", "conversations")

# Words that show an evolved question talks about our prompt instead of the image.
IMAGE_LEAK_PATTERNS = (
    "image description",
    "the description",
    "the caption",
    "given caption",
    "given q&a",
    "rewritten q&a",
    "created q&a",
    "given item",
    "current question",
    "previous question",
    "original question",
    "evolved question",
    "coordinates list",
    "list of boxes",
)

IMAGE_MARKER = "<<image>>"
NO_ITEM_KEPT = "no_item_kept"  # a candidate whose items were all eliminated (each has its own reject line)
ITEM_KEYS = ("image_position", "objects", "skills", "format", "question", "steps", "answer")


def canonical_form(name: Any) -> str:
    """A form label as the model may write it ("Multi-choice", "fill in the blank") → our form name, or the
    cleaned label when it is none of ours."""
    key = "_".join(str(name or "").strip().lower().replace("-", " ").split())
    return FORM_ALIASES.get(key, key)


class Step(BaseModel):
    """One solving step: the manipulation (``grounding_1(x)->bbx_1``, None if none) and what it does."""

    model_config = ConfigDict(extra="ignore")
    manipulation: str | None = None
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        # Steps written as plain sentences (synth's earlier format, or a model's shortcut).
        return {"description": value} if isinstance(value, str) else value

    @field_validator("manipulation", mode="before")
    @classmethod
    def _none(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null", "n/a")):
            return None
        return str(value)


def _text_list(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    return [str(v) for v in value] if isinstance(value, list) else value


class EvolvedItem(BaseModel):
    """One Q&A&S item, checked on its own (a bad item of a reply does not spoil the others)."""

    model_config = ConfigDict(extra="ignore")
    image_position: str = "single"
    objects: list[str] = Field(default_factory=list)
    skills: list[str] = Field(default_factory=list)
    format: str = ""
    question: str
    steps: list[Step] = Field(default_factory=list)
    answer: str

    @field_validator("answer", "question", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        # "How many ...?" is often answered with a bare number.
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @field_validator("objects", "skills", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _text_list(value)

    @field_validator("image_position", "format", mode="before")
    @classmethod
    def _label(cls, value: Any) -> Any:
        return "" if value is None else str(value)

    def fields(self) -> dict[str, Any]:
        data = self.model_dump()
        data["question"], data["answer"] = data["question"].strip(), data["answer"].strip()
        data["image_position"] = data["image_position"] or "single"
        return data


_STEP_SCHEMA = {
    "type": "object",
    "properties": {"manipulation": {"type": "string"}, "description": {"type": "string"}},
    "required": ["manipulation", "description"],
}


class ReplyItem(BaseModel):
    """An item as received (the schema says what it should be; `EvolvedItem` checks it)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"required": list(ITEM_KEYS)})
    image_position: Any = Field(None, json_schema_extra=schema_hint({"type": "string"}))
    objects: Any = Field(None, json_schema_extra=schema_hint({"type": "array", "items": {"type": "string"}}))
    skills: Any = Field(None, json_schema_extra=schema_hint({"type": "array", "items": {"type": "string"}}))
    format: Any = Field(None, json_schema_extra=schema_hint({"type": "string"}))
    question: Any = Field(None, json_schema_extra=schema_hint({"type": "string"}))
    steps: Any = Field(None, json_schema_extra=schema_hint({"type": "array", "items": _STEP_SCHEMA}))
    answer: Any = Field(None, json_schema_extra=schema_hint({"type": "string"}))

    @model_validator(mode="before")
    @classmethod
    def _any_item(cls, value: Any) -> Any:
        return value if isinstance(value, dict) else {"raw": value}


class EvolvedItems(BaseModel):
    """What an evolution returns: the image's evolved items (sent as the structured-output schema). A bare
    list of items, or one item on its own, is read as the list."""

    model_config = ConfigDict(extra="ignore")
    items: list[ReplyItem]

    @model_validator(mode="before")
    @classmethod
    def _shapes(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {"items": value}
        if isinstance(value, dict) and "items" not in value:
            for key in ("qa", "questions", "rewritten", "created"):
                if isinstance(value.get(key), list):
                    return {"items": value[key]}
            if "question" in value:
                return {"items": [value]}
        return value


class ImageVerdict(Verdict):
    answerable_without_image: bool = False


class ImageJudgeItem(JudgeItem):
    answerable_without_image: Any = Field(False, json_schema_extra=schema_hint({"type": "boolean"}))


class ImageJudgeReply(JudgeReply):
    verdicts: list[ImageJudgeItem]


def _default_rules() -> EliminationRules:
    # Visual answers are often one word ("3", "red"); leaks are about the image description.
    return EliminationRules(min_answer_words=1, leak_patterns=list(IMAGE_LEAK_PATTERNS))


class MMEvolConfig(EvolutionConfig):
    operators: Weights = Field(
        default_factory=lambda: dict(DEFAULT_OPERATORS),
        description="operator -> probability weight (or NAME=W,NAME=W text); each image draws one operator per "
        "round: " + ", ".join(OPERATORS) + " (MMEvol: 0.5/0.25/0.25)",
    )
    form_choice: Literal["model", "drawn"] = Field(
        default="model",
        description="interaction: 'model' lets the LLM pick the fitting form from interaction_forms (MMEvol); "
        "'drawn' draws one form per image and round by the weights",
    )
    interaction_forms: Weights = Field(
        default_factory=lambda: {name: 1.0 for name in INTERACTION_FORMS},
        description="the forms interaction evolution may use, NAME=W,... (weights count for form_choice: drawn); "
        "default: all 17 of MMEvol's, e.g. multi_choice, fill_in_the_blank, region_selection, depth_order",
    )
    rules: EliminationRules = Field(
        default_factory=_default_rules, description="elimination rules (answers of one word pass; image-description leaks fail)"
    )
    image_column: str | None = Field(default=None, description="image column (default: image or images)")
    caption_column: str | None = Field(default=None, description="caption column (default: detailed_caption or caption)")
    boxes_column: str | None = Field(default=None, description="objects with label + box (default: objects)")
    box_format: boxes.BoxFormat = Field(default="xyxy", description="xyxy: [x0, y0, x1, y1] corners; xywh: [x, y, w, h] (COCO)")
    box_units: boxes.BoxUnits = Field(
        default="auto", description="normalised (0-1), pixels, or auto (pixels when a value is above 1)"
    )
    qa_column: str | None = Field(default=None, description="a list of {question, answer} items, or one dict")
    question_column: str | None = Field(default=None, description="question column (with answer_column)")
    answer_column: str | None = Field(default=None, description="answer column (with question_column)")
    max_items: int | None = Field(default=None, ge=1, description="evolve at most this many items per image (the first)")
    new_items: int = Field(default=3, ge=1, le=10, description="items to write for an image that has none")
    base_dir: str | None = Field(
        default=None, description="the dataset folder: image paths resolve inside it (and may not leave it)"
    )
    min_reasoning_steps: int = Field(default=2, ge=0, description="reasoning evolutions with fewer steps are eliminated")
    demos: bool = Field(default=True, description="few-shot demonstrations in the evolution prompts (MMEvol's scaffold)")
    answer_with_steps: bool = Field(
        default=False,
        description="write each item's steps out before its answer (\"Step 1: ...\"); MMEvol keeps the answer as the "
        "model wrote it (its answers walk through the steps themselves)",
    )
    image_input: Literal["auto", "image", "text"] = Field(
        default="auto", description="auto: the image when the backend takes images, else caption + boxes as text"
    )

    @field_validator("operators")
    @classmethod
    def _known_operators(cls, value: dict[str, float]) -> dict[str, float]:
        return check_weights(value, OPERATORS, "operator")

    @field_validator("interaction_forms")
    @classmethod
    def _known_forms(cls, value: dict[str, float]) -> dict[str, float]:
        value = {canonical_form(k): v for k, v in value.items()}
        return check_weights(value, INTERACTION_FORMS, "interaction form")


def image_size(ref: dict, record_id: str) -> tuple[int, int]:
    """Width and height from the encoded image's header (no pixels decoded)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(ref["bytes"])) as image:
            return image.size
    except Exception as e:  # PIL raises many types for broken files
        where = ref.get("path") or "(inline bytes)"
        raise ImageError(f"record {record_id}: unreadable or corrupt image {where}: {str(e)[:200] or type(e).__name__}") from None


@functools.lru_cache(maxsize=8)
def demos_text(operator: str) -> str:
    """The few-shot items of an operator (``templates/prompts/mmevol/demos/<operator>.json``) as JSON."""
    path = templates_dir() / "prompts" / "mmevol" / "demos" / f"{operator}.json"
    return items_json(json.loads(path.read_text(encoding="utf-8")))


def items_json(items: list[dict]) -> str:
    """Items as a JSON list, one item per line (compact: prompts carry many)."""
    rows = [json.dumps({k: item.get(k) for k in ITEM_KEYS if k in item}, ensure_ascii=False) for item in items]
    return "[\n" + ",\n".join(rows) + "\n]"


class MMEvol(EvolutionStage):
    """MMEvol. Input: image + caption (+ boxes, + QA items). Output: evolved image-text conversations + lineage."""

    name = "mmevol"
    method = "mmevol"
    operators = OPERATORS
    Config = MMEvolConfig
    schema: ClassVar[type[BaseModel]] = EvolvedItems
    reads: ClassVar[tuple[str, ...]] = (*IMAGE_COLUMNS, *CAPTION_COLUMNS, *BOXES_COLUMNS, *QA_COLUMNS, "messages", "id", "meta")
    writes: ClassVar[tuple[str, ...]] = ("messages", "images", "id", "meta")

    def prepare(self, source) -> None:
        """Image paths of the rows resolve inside the dataset's folder (unless `base_dir` says otherwise)."""
        if self.config.base_dir is None and getattr(source, "base_dir", None) is not None:
            self.config = self.config.model_copy(update={"base_dir": str(source.base_dir)})

    def details(self) -> dict[str, Any]:
        return {**super().details(), "image_input": "image" if self.show_image else "text"}

    @property
    def show_image(self) -> bool:
        """Send the image itself, or describe it in text (caption + boxes) for a text-only backend."""
        if self.config.image_input == "auto":
            return self.backend is not None and bool(self.backend.supports_images)
        return self.config.image_input == "image"

    # -- seeds ----------------------------------------------------------------------------------------

    def seed_version(self, record: dict) -> Version | Rejected:
        """The seed of one record; an unreadable image, or a path outside the dataset folder, is an
        `ImageError` (the run stops with one line naming the record), never a silent skip."""
        cfg = self.config
        record_id = str(record.get("id") or "?")
        image_value = self._column(record, cfg.image_column, IMAGE_COLUMNS)
        if isinstance(image_value, (list, tuple)):
            image_value = image_value[0] if image_value else None
        if image_value is None:
            return Rejected("missing_image", "the record has no image")
        image = image_ref(image_value, cfg.base_dir, record_id)
        caption = self._column(record, cfg.caption_column, CAPTION_COLUMNS)
        if isinstance(caption, (list, tuple)):
            caption = caption[0] if caption else ""
        caption = str(caption or "").strip()
        read = boxes.read_objects(
            self._column(record, cfg.boxes_column, BOXES_COLUMNS), image_size(image, record_id),
            box_format=cfg.box_format, box_units=cfg.box_units,
        )
        self.report.boxes_read += len(read.objects)
        self.report.boxes_malformed.update(read.malformed)
        if not self.show_image and not caption and not read.objects:
            return Rejected("no_image_description", "the backend cannot see images and the record has no caption or boxes")
        items = self._seed_items(record)
        if cfg.max_items is not None:
            items = items[: cfg.max_items]
        for item in items:
            self.report.item_stats(0, len(item["steps"]), len(item["skills"]))
        version = Version(
            root_id="",
            fields={"items": items},
            seed={"image": image, "caption": caption, "objects": read.objects},
            seed_meta=load_meta(record.get("meta")) if record.get("meta") else {},
        )
        version.id = str(record.get("id") or "") or self.version_id(version)
        version.root_id = version.id
        return version

    @staticmethod
    def _column(record: dict, name: str | None, candidates: Sequence[str]) -> Any:
        if name is not None:
            return record.get(name)
        return next((record[c] for c in candidates if record.get(c) is not None), None)

    def _seed_items(self, record: dict) -> list[dict]:
        """The record's existing items (an item without a question or answer is left out)."""
        cfg = self.config
        if cfg.question_column:
            raw: Any = [{"question": record.get(cfg.question_column), "answer": record.get(cfg.answer_column or "answer")}]
        else:
            raw = self._column(record, cfg.qa_column, QA_COLUMNS)
            if raw is None and cfg.qa_column is None and "question" in record:
                raw = [{"question": record.get("question"), "answer": record.get("answer")}]
            if raw is None and record.get("messages"):
                raw = _turn_pairs(record["messages"])
        raw = boxes.object_rows(raw) if isinstance(raw, dict) and all(isinstance(v, list) for v in raw.values()) else raw
        if isinstance(raw, dict):
            raw = [raw]
        items = []
        for entry in raw if isinstance(raw, list) else []:
            try:
                item = EvolvedItem.model_validate(entry).fields()
            except ValidationError:
                continue
            if item["question"] and item["answer"]:
                items.append(item)
        return items

    # -- evolve ---------------------------------------------------------------------------------------

    def allowed_forms(self, version: Version) -> list[str]:
        """The forms this image's items may take (region forms need boxes); multi_choice is the fallback."""
        forms = [name for name, w in self.config.interaction_forms.items() if w > 0]
        if not version.seed["objects"]:
            forms = [name for name in forms if name not in REGION_FORMS]
        return forms or [FALLBACK_FORM]

    def choose_form(self, version: Version, round_: int) -> str:
        """The drawn form (``form_choice: drawn``), fixed by seed, image and round."""
        allowed = self.allowed_forms(version)
        weights = {name: self.config.interaction_forms.get(name, 1.0) for name in allowed}
        return pick_weighted(weights, self.config.seed, version.root_id, round_, "form")

    def _drawn_form(self, operator: str, version: Version, round_: int) -> str:
        return self.choose_form(version, round_) if operator == "interaction" and self.config.form_choice == "drawn" else ""

    def _scene(self, version: Version) -> dict[str, Any]:
        return {"show_image": self.show_image, "caption": version.seed["caption"], "objects": version.seed["objects"]}

    def _demos(self, operator: str, form: str) -> str:
        if not self.config.demos:
            return ""
        if operator == "interaction" and form:
            items = [d for d in json.loads(demos_text(operator)) if d.get("format") == form]
            return items_json(items) if items else ""
        return demos_text(operator)

    def render_evolve_prompt(self, version: Version, operator: str, round_: int) -> str:
        form = self._drawn_form(operator, version, round_)
        items = version.fields["items"]
        forms = [{"name": f, "description": FORMS[f]} for f in self.allowed_forms(version)]
        return render_file(
            f"prompts/mmevol/{operator}.jinja",
            record_id=version.root_id,
            given=items_json(items) if items else "",
            new_items=self.config.new_items,
            form=form,
            forms=forms,
            demos=self._demos(operator, form),
            min_steps=max(self.config.min_reasoning_steps, 1),
            **self._scene(version),
        )

    def format_evolve_input(self, version: Version, operator: str, round_: int) -> ChatRequest:
        form = self._drawn_form(operator, version, round_)
        prompt = self.render_evolve_prompt(version, operator, round_)
        if self.show_image:
            message = Message(role="user", content=[ImagePart(), TextPart(text=prompt)])
            images = [version.seed["image"]]
        else:
            message, images = Message(role="user", content=prompt), []
        return ChatRequest(
            messages=[message],
            images=images,
            temperature=self.config.temperature,
            max_tokens=self.config.max_tokens,
            seed=self.config.seed,
            schema_model=EvolvedItems,
            key=f"{version.root_id}:r{round_}:{operator}:{form}",
        )

    def parse_evolve_output(self, version: Version, operator: str, round_: int, completion: Completion) -> Version | Outcome:
        parsed = parse_structured(completion, EvolvedItems)
        if not isinstance(parsed, EvolvedItems):
            return parsed
        drawn = self._drawn_form(operator, version, round_)
        candidate = self.child(version, operator, round_, {"items": []})
        checked: list[dict | Rejected] = []
        for raw in parsed.items:
            try:
                checked.append(EvolvedItem.model_validate(raw.model_dump()).fields())
            except ValidationError as e:
                problems = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()[:3])
                checked.append(Rejected("invalid_item", problems[:300]))
        if checked and all(isinstance(c, Rejected) for c in checked):
            # Nothing usable came back (e.g. broken JSON repaired into a list of numbers): asked again next run.
            return Failed("unparseable", f"no item of the reply is an item: {checked[0].detail}"[:300])
        self.report.item(round_, "generated", len(checked))
        for k, item in enumerate(checked, 1):
            if isinstance(item, Rejected):
                self._drop_item(candidate, k, {}, item, "evolve")
                continue
            item["n"] = k  # its place in the reply, for reject lines
            if operator == "interaction":
                # What the model chose is what gets recorded; a drawn form is what was asked for.
                item["format"] = drawn or canonical_form(item["format"]) or FALLBACK_FORM
            candidate.fields["items"].append(item)
        if not checked:
            return Rejected("no_items", "the reply holds no item")
        return candidate

    def check_candidate(self, previous: Version, candidate: Version) -> Rejected | None:
        """Each item on its own: an item that breaks a rule is eliminated (one reject line each); the
        candidate goes only when no item is left."""
        rules = self.config.rules
        before = [item["question"] for item in previous.fields["items"]]
        kept: list[dict] = []
        for item in candidate.fields["items"]:
            question = item["question"]
            rejected = None
            if not question:
                rejected = Rejected("empty_question", "the item has no question")
            elif any(same_text(question, q) for q in before):
                rejected = Rejected("unchanged", "the evolved question equals one of the image's questions")
            elif any(same_text(question, other["question"]) for other in kept):
                rejected = Rejected("duplicate_item", "two evolved items ask the same question")
            else:
                rejected = rules.check_leak(question) or rules.check_answer(item["answer"])
            if rejected is None and candidate.operator == "reasoning" and len(item["steps"]) < self.config.min_reasoning_steps:
                rejected = Rejected("missing_steps", f"{len(item['steps'])} reasoning steps < {self.config.min_reasoning_steps}")
            if rejected is None:
                kept.append(item)
            else:
                self._drop_item(candidate, item["n"], item, rejected, "rules")
        candidate.fields["items"] = kept
        return None if kept else Rejected(NO_ITEM_KEPT, "every item broke a rule")

    # -- judge: one request per image, one verdict per item --------------------------------------------

    def judge_batch_size(self) -> int:
        return 1  # MMEvol judges an image's items together, in one call

    def format_judge_input(self, pairs: Sequence[tuple[str, Version, Version]]) -> ChatRequest:
        (_, prev, cand), = pairs
        items = [
            {
                "id": str(n),
                "format": item["format"] if cand.operator == "interaction" else "",
                "question": item["question"],
                "answer": item["answer"],
                "steps": [s["description"] for s in item["steps"] if s.get("description")],
            }
            for n, item in enumerate(cand.fields["items"], 1)
        ]
        prompt = render_file(
            "prompts/mmevol/judge.jinja",
            record_id=cand.root_id,
            operator=cand.operator,
            items=items,
            previous=prev.fields["items"],
            show_image=self.show_image,
            image_marker=IMAGE_MARKER,
            caption=prev.seed["caption"],
            objects=prev.seed["objects"],
        )
        request = dict(
            temperature=self.config.judge_temperature,
            max_tokens=self.config.judge_max_tokens,
            seed=self.config.seed,
            schema_model=ImageJudgeReply,
            key=f"judge:{cand.root_id}:r{cand.round}",
        )
        if not self.show_image:
            return ChatRequest(messages=[Message(role="user", content=prompt)], **request)
        # The image goes where its marker stands, between the rubric and the items.
        before, after = prompt.split(IMAGE_MARKER, 1)
        content = [TextPart(text=before), ImagePart(), TextPart(text=after)]
        return ChatRequest(messages=[Message(role="user", content=content)], images=[prev.seed["image"]], **request)

    def parse_judge_output(self, ids: Sequence[str], completion: Completion) -> dict[str, Any]:
        # The verdicts are per item; `apply_judge` reads them, knowing the candidate's items.
        return {ids[0]: completion}

    def judge_rule(self, verdict: Verdict) -> Rejected | None:
        if getattr(verdict, "answerable_without_image", False):
            return Rejected("answerable_without_image", verdict.reason[:300])
        return super().judge_rule(verdict)

    def apply_judge(self, previous: Version, candidate: Version, verdict: Any) -> Version | Outcome:
        if not isinstance(verdict, Completion):
            return verdict  # the request failed
        items = candidate.fields["items"]
        labels = [str(n) for n in range(1, len(items) + 1)]
        outcomes = judge_outcomes(labels, verdict, ImageVerdict, ImageJudgeReply)
        if all(isinstance(o, Failed) for o in outcomes.values()):
            return next(iter(outcomes.values()))  # unreadable: retried by the next run
        kept: list[dict] = []
        for label, item in zip(labels, items, strict=True):
            outcome = outcomes[label]
            if isinstance(outcome, Verdict):
                item["judge"] = {"improved": outcome.improved, "score": outcome.score, "reason": outcome.reason}
                outcome = self.judge_rule(outcome)
            if outcome is None:
                kept.append(item)
            else:
                self._drop_item(candidate, item["n"], item, outcome, "judge")
        if not kept:
            return Rejected(NO_ITEM_KEPT, "the judge eliminated every item")
        candidate.fields["items"] = kept
        scores = [item["judge"]["score"] for item in kept]
        candidate.judge = (
            dict(kept[0]["judge"]) if len(kept) == 1
            else {"improved": True, "score": round(sum(scores) / len(scores), 2), "reason": f"{len(kept)} of {len(items)} items improved"}
        )
        return candidate

    def finish(self, pairs: list[tuple[Version, Version]], round_: int) -> list[Version | Outcome]:
        """The kept items of this round: counted, and their statistics recorded."""
        for _, candidate in pairs:
            items = candidate.fields["items"]
            for item in items:
                item.pop("n", None)
                judged = item.get("judge")
                self.report.item_stats(round_, len(item["steps"]), len(item["skills"]), judged["score"] if judged else None)
                if candidate.operator == "interaction":
                    self.report.forms[item["format"]] += 1
            if candidate.operator == "interaction":
                candidate.extra["form"] = ", ".join(dict.fromkeys(item["format"] for item in items))  # meta.form
            self.report.item(round_, "kept", len(items))
        return [candidate for _, candidate in pairs]

    # -- eliminations of items ------------------------------------------------------------------------

    def _drop_item(self, candidate: Version, n: int, item: dict, outcome: Rejected, phase: str) -> None:
        """One eliminated item: a reject line (with its place in the reply and its question) and counts."""
        round_, operator = candidate.round, candidate.operator
        question = str(item.get("question") or "")[:200]
        detail = f"round {round_}, {operator}, item {n}: {outcome.detail}"
        self.report.item(round_, "eliminated")
        self.report.eliminated[outcome.reason] += 1
        self.stats.dropped[outcome.reason] += 1
        self.rejects.write(candidate.parent_id, self.name, outcome.reason, detail, round=round_, operator=operator,
                           phase=phase, item=n, question=question)

    def _drop(self, version: Version, operator: str, round_: int, outcome: Outcome, phase: str) -> None:
        if isinstance(outcome, Rejected) and outcome.reason == NO_ITEM_KEPT:
            # Each item already has its line and count; the image only counts as eliminated this round.
            self.report._count(operator, round_, "eliminated")
            return
        super()._drop(version, operator, round_, outcome, phase)

    # -- output ---------------------------------------------------------------------------------------

    def chain_fields(self, version: Version) -> dict[str, Any]:
        items = version.fields["items"]
        fields = {
            "question": "\n".join(item["question"] for item in items),  # one text, for reports
            "answer": "\n".join(item["answer"] for item in items),
            "questions": [item["question"] for item in items],
        }
        if version.extra.get("form"):
            fields["form"] = version.extra["form"]
        return fields

    def answer_text(self, item: dict) -> str:
        steps = [s["description"] for s in item["steps"] if s.get("description")] if self.config.answer_with_steps else []
        return render_file("prompts/mmevol/answer.jinja", answer=item["answer"], steps=steps).strip()

    def to_record(self, version: Version) -> dict:
        messages: list[dict] = []
        for k, item in enumerate(version.fields["items"]):
            text = {"type": "text", "text": item["question"]}
            messages.append({"role": "user", "content": [{"type": "image", "text": None}, text] if k == 0 else [text]})
            messages.append({"role": "assistant", "content": [{"type": "text", "text": self.answer_text(item)}]})
        if not messages:  # a seed without items (include_seeds): the image alone
            messages = [{"role": "user", "content": [{"type": "image", "text": None}]}]
        if version.round:
            meta = self.lineage(version)
            meta["qa"] = [
                {k: item.get(k) for k in ("image_position", "objects", "skills", "format", "steps", "judge") if k in item}
                for item in version.fields["items"]
            ]
        else:
            meta = {**version.seed_meta, "source": version.seed_meta.get("source", "seed")}
        return {"id": version.id, "messages": messages, "images": [version.seed["image"]], "meta": meta}


def _turn_pairs(messages: list) -> list[dict]:
    """(user, following assistant) turns of an SFT record as items."""
    items, question = [], None
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else getattr(message, "role", None)
        if role == "user":
            question = message_text(message)
        elif role == "assistant" and question is not None:
            items.append({"question": question, "answer": message_text(message)})
            question = None
    return items


def normalise_objects(value: Any, image_size: tuple[int, int], box_format: boxes.BoxFormat = "xyxy",
                      box_units: boxes.BoxUnits = "auto") -> list[dict[str, Any]]:
    """Object boxes as ``[{"label", "box"}]`` with box = normalised [x0, y0, x1, y1] (see `synth.boxes`)."""
    return boxes.normalise_objects(value, image_size, box_format=box_format, box_units=box_units)



