"""MMEvol for image-text data: evolve visual question-answer pairs with three operators (fine-grained
perception, cognitive reasoning, interaction), judge each evolution against the previous round's version,
and keep only the ones that improved.

Input records, one seed per image: an image, a caption, optional object boxes (normalised
[x0, y0, x1, y1]; pixel boxes are normalised by the image size) and an optional existing QA pair. Columns
are found automatically on the demo shapes data (``image``, ``detailed_caption``/``caption``, ``objects``,
``qa``) and on SFT records (``images`` + first user/assistant turn), or named in the config. Images stay
encoded (``{"bytes", "path"}``); only their header is read (for the size that pixel boxes need).

A backend that cannot take images gets the image as text (caption + boxes), as LLaVA's GPT-assisted
data generation did; the evolve and judge prompts then say so.

Output records: SFT samples (user = image + evolved question, assistant = answer, with explicit steps for
reasoning evolutions) with lineage in ``meta``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
from synth.generate.evolution.operators import check_weights, pick_weighted
from synth.hashing import unit_hash
from synth.llm.base import ChatRequest, Completion
from synth.pipeline import Rejected
from synth.records import ImagePart, Message, TextPart, first_turn_text, load_meta
from synth.templating import render_file

OPERATORS = ("perception", "reasoning", "interaction")
INTERACTION_FORMS = (
    "multiple_choice",
    "fill_in_the_blank",
    "region_selection",
    "text_image_matching",
    "object_region_matching",
    "rationale",
    "true_false",
)
REGION_FORMS = ("region_selection", "object_region_matching")  # need object boxes

IMAGE_COLUMNS = ("image", "images", "img", "picture")
CAPTION_COLUMNS = ("detailed_caption", "caption", "description", "captions")
BOXES_COLUMNS = ("objects", "boxes", "regions")
QA_COLUMNS = ("qa", "qas", "questions")

# Words that show an evolved question talks about our prompt instead of the image.
IMAGE_LEAK_PATTERNS = (
    "image description",
    "the description",
    "the caption",
    "given caption",
    "current question",
    "previous question",
    "original question",
    "evolved question",
    "coordinates list",
)

IMAGE_MARKER = "<<image>>"


class EvolvedQA(BaseModel):
    """What an evolution returns (sent as the structured-output schema)."""

    model_config = ConfigDict(extra="ignore")
    question: str
    answer: str
    steps: list[str] = Field(default_factory=list)
    objects: list[str] = Field(default_factory=list)
    skills: list[str] = Field(default_factory=list)
    format: str = ""

    @field_validator("answer", mode="before")
    @classmethod
    def _answer_as_text(cls, value: Any) -> Any:
        # "How many ...?" is often answered with a bare number.
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


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
    operators: dict[str, float] = Field(
        default_factory=lambda: {name: 1.0 for name in OPERATORS},
        description="operator -> probability weight; each sample draws one operator per round",
    )
    interaction_forms: dict[str, float] = Field(default_factory=lambda: {name: 1.0 for name in INTERACTION_FORMS})
    rules: EliminationRules = Field(default_factory=_default_rules)
    image_column: str | None = None
    caption_column: str | None = None
    boxes_column: str | None = None
    qa_column: str | None = Field(default=None, description="a list of {question, answer} or one dict")
    seed_qa: Literal["first", "any"] = Field(
        default="any", description="which QA of a list seeds the evolution: the first, or any (fixed by --seed and id)"
    )
    question_column: str | None = None
    answer_column: str | None = None
    base_dir: str | None = Field(
        default=None, description="the dataset folder: image paths resolve inside it (and may not leave it)"
    )
    min_reasoning_steps: int = Field(default=2, ge=0)
    judge_images_per_request: int = Field(
        default=1, ge=1, le=32,
        description="items per judge request when the judge sees images (many servers take one image per "
        "prompt, e.g. vLLM's default --limit-mm-per-prompt); text-only judging uses judge_batch_size",
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


class MMEvol(EvolutionStage):
    """MMEvol. Input: image + caption (+ boxes, + QA). Output: evolved image-text SFT samples + lineage."""

    name = "mmevol"
    method = "mmevol"
    operators = OPERATORS
    Config = MMEvolConfig
    schema: ClassVar[type[BaseModel]] = EvolvedQA
    reads: ClassVar[tuple[str, ...]] = (*IMAGE_COLUMNS, *CAPTION_COLUMNS, *BOXES_COLUMNS, *QA_COLUMNS, "messages", "id", "meta")
    writes: ClassVar[tuple[str, ...]] = ("messages", "images", "id", "meta")

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
        objects = normalise_objects(self._column(record, cfg.boxes_column, BOXES_COLUMNS), image_size(image, record_id))
        if not self.show_image and not caption and not objects:
            return Rejected("no_image_description", "the backend cannot see images and the record has no caption or boxes")
        question, answer = self._seed_qa(record)
        version = Version(
            root_id="",
            fields={"question": question, "answer": answer, "steps": [], "objects": [], "skills": [], "format": ""},
            seed={"image": image, "caption": caption, "objects": objects},
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

    def _seed_qa(self, record: dict) -> tuple[str, str]:
        cfg = self.config
        if cfg.question_column:
            return str(record.get(cfg.question_column) or "").strip(), str(record.get(cfg.answer_column or "answer") or "").strip()
        qa = self._column(record, cfg.qa_column, QA_COLUMNS)
        if isinstance(qa, dict) and qa and all(isinstance(v, list) for v in qa.values()):
            qa = [dict(zip(qa, row, strict=True)) for row in zip(*qa.values(), strict=True)]  # Arrow's layout of a list of structs
        if isinstance(qa, (list, tuple)):
            pick = 0 if cfg.seed_qa == "first" or not qa else int(unit_hash(cfg.seed, record.get("id"), "qa") * len(qa))
            qa = qa[pick] if qa else None
        if isinstance(qa, dict):
            return str(qa.get("question") or "").strip(), str(qa.get("answer") or "").strip()
        if cfg.qa_column is None and "question" in record:
            return str(record.get("question") or "").strip(), str(record.get("answer") or "").strip()
        if record.get("messages"):
            return first_turn_text(record["messages"], "user"), first_turn_text(record["messages"], "assistant")
        return "", ""

    # -- evolve ---------------------------------------------------------------------------------------

    def choose_form(self, version: Version, round_: int) -> str:
        forms = dict(self.config.interaction_forms)
        if not version.seed["objects"]:
            forms = {name: w for name, w in forms.items() if name not in REGION_FORMS}
        if not any(w > 0 for w in forms.values()):
            forms = {"multiple_choice": 1.0}
        return pick_weighted(forms, self.config.seed, version.root_id, round_, "form")

    def _scene(self, version: Version) -> dict[str, Any]:
        return {"show_image": self.show_image, "caption": version.seed["caption"], "objects": version.seed["objects"]}

    def format_evolve_input(self, version: Version, operator: str, round_: int) -> ChatRequest:
        form = self.choose_form(version, round_) if operator == "interaction" else ""
        prompt = render_file(
            f"prompts/mmevol/{operator}.jinja",
            record_id=version.root_id,
            previous=version.fields,
            form=form,
            **self._scene(version),
        )
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
            schema_model=EvolvedQA,
            key=f"{version.root_id}:r{round_}:{operator}:{form}",
        )

    def parse_evolve_output(self, version: Version, operator: str, round_: int, completion: Completion) -> Version | Outcome:
        parsed = parse_structured(completion, EvolvedQA)
        if not isinstance(parsed, EvolvedQA):
            return parsed
        fields = parsed.model_dump()
        fields = {**fields, "question": fields["question"].strip(), "answer": fields["answer"].strip()}
        extra = {}
        if operator == "interaction":
            # The form we asked for is what gets recorded; the model's own label is kept beside it.
            extra["form"] = self.choose_form(version, round_)
            self.report.forms[extra["form"]] += 1
        return self.child(version, operator, round_, fields, **extra)

    def check_candidate(self, previous: Version, candidate: Version) -> Rejected | None:
        question = candidate.fields["question"]
        if not question:
            return Rejected("empty_question", "the evolution has no question")
        if previous.fields["question"] and same_text(question, previous.fields["question"]):
            return Rejected("unchanged", "the evolved question equals the previous one")
        rules = self.config.rules
        rejected = rules.check_leak(question) or rules.check_answer(candidate.fields["answer"])
        if rejected:
            return rejected
        if candidate.operator == "reasoning" and len(candidate.fields["steps"]) < self.config.min_reasoning_steps:
            return Rejected("missing_steps", f"{len(candidate.fields['steps'])} reasoning steps < {self.config.min_reasoning_steps}")
        return None

    # -- judge ----------------------------------------------------------------------------------------

    def format_judge_input(self, pairs: Sequence[tuple[str, Version, Version]]) -> ChatRequest:
        items = [
            {
                "id": label,
                "operator": cand.operator,
                "form": cand.extra.get("form", ""),
                "caption": prev.seed["caption"],
                "objects": prev.seed["objects"],
                "previous": prev.fields,
                "evolved": cand.fields,
            }
            for label, prev, cand in pairs
        ]
        prompt = render_file(
            "prompts/mmevol/judge.jinja",
            record_id=pairs[0][2].root_id,
            items=items,
            show_image=self.show_image,
            image_marker=IMAGE_MARKER,
        )
        request = dict(
            temperature=self.config.judge_temperature,
            max_tokens=self.config.judge_max_tokens,
            seed=self.config.seed,
            schema_model=ImageJudgeReply,
            key="judge:" + ",".join(f"{cand.root_id}:r{cand.round}" for _, _, cand in pairs),
        )
        if not self.show_image:
            return ChatRequest(messages=[Message(role="user", content=prompt)], **request)
        # Each item's image goes where its marker stands, so the judge sees image and item together.
        pieces = prompt.split(IMAGE_MARKER)
        content: list[Any] = [TextPart(text=pieces[0])]
        for piece in pieces[1:]:
            content += [ImagePart(), TextPart(text=piece)]
        images = [prev.seed["image"] for _, prev, _ in pairs]
        return ChatRequest(messages=[Message(role="user", content=content)], images=images, **request)

    def judge_batch_size(self) -> int:
        if self.show_image:
            return min(self.config.judge_batch_size, self.config.judge_images_per_request)
        return self.config.judge_batch_size

    def parse_judge_output(self, ids: Sequence[str], completion: Completion) -> dict[str, Verdict | Outcome]:
        return judge_outcomes(ids, completion, ImageVerdict, ImageJudgeReply)

    def judge_rule(self, verdict: Verdict) -> Rejected | None:
        if getattr(verdict, "answerable_without_image", False):
            return Rejected("answerable_without_image", verdict.reason[:300])
        return super().judge_rule(verdict)

    # -- output ---------------------------------------------------------------------------------------

    def chain_fields(self, version: Version) -> dict[str, Any]:
        return {"question": version.fields["question"], "answer": version.fields["answer"]}

    def answer_text(self, version: Version) -> str:
        steps = version.fields["steps"] if version.operator == "reasoning" else []
        return render_file("prompts/mmevol/answer.jinja", record_id=version.root_id, answer=version.fields["answer"], steps=steps).strip()

    def to_record(self, version: Version) -> dict:
        messages = [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": version.fields["question"]}]}]
        if version.fields["answer"]:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": self.answer_text(version)}]})
        if version.round:
            meta = self.lineage(version)
            meta["qa"] = {k: version.fields[k] for k in ("steps", "objects", "skills", "format")}
        else:
            meta = {**version.seed_meta, "source": version.seed_meta.get("source", "seed")}
        return {"id": version.id, "messages": messages, "images": [version.seed["image"]], "meta": meta}


def normalise_objects(value: Any, image_size: tuple[int, int]) -> list[dict[str, Any]]:
    """Object boxes as ``[{"label", "box"}]`` with box = normalised [x0, y0, x1, y1] (see `synth.boxes`)."""
    return boxes.normalise_objects(value, image_size)
