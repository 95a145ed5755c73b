"""CapFilt: score image-text pairs with an image-text model and drop mismatches (BLIP's caption filter).

Each record's first image and one text are scored by an image-text model loaded through transformers:
a CLIP / SigLIP dual encoder (the cosine similarity of the two embeddings), or a BLIP image-text matching
model as BLIP's CapFilt itself filters (the ITM head's probability that the text matches the image). A pair passes by an absolute
`threshold`, by `top_fraction` (the best scoring share of all pairs), or both; with neither the stage
refuses to start unless ``score_only: true`` says that scoring alone is wanted.

Caption records and the others (``caption_records``, rule in `CapFilt.is_caption_record`): a raw row's
caption column, a record whose ``meta.task`` / ``meta.template`` says caption, or a single-turn chat whose
user prompt asks for a caption or description of the whole image (or is only the image) is a caption
record: it is scored on its caption (the column or the answer) and, with the captioner, may gain a
synthetic one. Every other record (a question, OCR, grounding, a multi-turn chat, a preference pair) is
scored on its own text (``text: auto``: the question and answer turns) and never rewritten.

Optional captioner (BLIP's bootstrapping): a vision-language backend writes a synthetic caption for each
caption record's image (prompt: ``templates/prompts/capfilt/caption.jinja``) and both texts are scored.
``keep: all_passing`` (BLIP) keeps every text that passes, so an image may leave as two records (the
synthetic one with id ``<id>-synthetic``); ``keep: best`` keeps only the better of the two (ties keep the
web text), in place.

Input: records with an image (``images[0]`` or ``image``, as ``{"bytes", "path"}`` refs; decoded here, the
only place pixels are needed) and the text chosen by `text`.
Output: the kept pairs with ``meta.scores.capfilt`` (that pair's score) and ``meta.capfilt``: ``source``
(``web``: the record's own text; ``synthetic``: the captioner's), ``text`` (what was scored),
``caption_record``, ``web_score``, and with the captioner ``synthetic_score``, ``synthetic_caption``,
``web_text`` (on a synthetic pair) or ``captioner_error``. A captioner request that failed is a `Failed`
(``failures.jsonl``; retried by the next run), not a drop; an empty caption keeps the web text alone.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from synth.clean.common import IMAGE_TOKEN, _content_text, record_images, turns
from synth.errors import SynthError
from synth.pipeline import Aggregate, Failed, Map, Rejected, StageConfig, batched
from synth.records import load_meta

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
CAPTION_TEMPLATE = "prompts/capfilt/caption.jinja"

# exact_margin: auto. bf16 moves a cosine by up to ~1e-3 (CLIP ViT-B/32: 1.2e-3 at most over the benchmark's
# 512 pairs); twice the largest move seen on the first pairs leaves the decisions fp32's while scoring only the
# pairs that close to the threshold twice (each fp32 look costs ~4 bf16 ones on a CPU).
CALIBRATION_PAIRS = 32
MARGIN_FACTOR = 2.0
MIN_MARGIN = 1e-4
# batch_size: auto. A CPU is saturated by 32 pairs of ViT-B/32 (1,600 patch tokens per matmul); a GPU needs
# far more rows per call to stay busy.
AUTO_BATCH = {"cuda": 256, "cpu": 32}


class CapFiltConfig(StageConfig):
    model: str = Field(
        DEFAULT_MODEL,
        description="image-text model, Hub id or local path: CLIP / SigLIP (cosine similarity) or BLIP ITM "
        "(match probability, BLIP's own filter; threshold 0.5 = the head says matched)",
    )
    text: Literal["auto", "caption", "answer", "conversation"] = Field(
        "auto",
        description="text scored against the image: a caption column (raw data), the last assistant answer, "
        "or the conversation (user and assistant turns); auto = the caption column of raw rows, the answer of "
        "caption records, the conversation of other chat records",
    )
    caption_records: Literal["auto", "all", "none"] = Field(
        "auto",
        description="which records are captions (scored on the caption; the captioner may add or put a synthetic "
        "one): auto = raw caption rows, meta task/template naming a caption, single-turn chats asking to "
        "describe the image; all = every record but preference pairs (BLIP treats every pair as a caption); none",
    )
    caption_prompt: str | None = Field(
        None, description="regex (case-insensitive, searched in the user prompt of a single-turn chat) that marks a "
        "caption request; replaces the built-in word rule"
    )
    caption_column: str = Field("caption", description="the column of raw rows holding the caption")
    image_column: str = Field("image", description="the column of raw rows holding the image")
    image_root: str | None = Field(None, description="folder that relative image paths are resolved against")
    threshold: float | None = Field(None, description="keep pairs whose score is at least this (cosine, -1..1)")
    top_fraction: float | None = Field(None, gt=0, le=1, description="keep this best-scoring share of the pairs")
    score_only: bool = Field(False, description="no threshold and no top fraction: only add scores, keep every pair")
    keep: Literal["all_passing", "best"] = Field(
        "all_passing",
        description="with the captioner: all_passing = every text that passes, web and synthetic (BLIP: up to two "
        "records per image); best = only the better-scoring text of each image (ties keep the web text)",
    )
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description=f"image-text pairs scored per model call; auto = {AUTO_BATCH['cuda']} on CUDA (keeps "
        f"the GPU busy), {AUTO_BATCH['cpu']} elsewhere")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, mps")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="auto = float16 on CUDA, float32 elsewhere (today's exact scores); bfloat16 on CPU = "
        "bf16 autocast over fp32 weights (about 2x faster where the CPU has AVX512-BF16/AMX; scores within ~1e-3)")
    compile: bool = Field(
        False, description="torch.compile the image and text encoders (inductor; needs a C++ compiler on a CPU): "
        "about a minute once per process, then ~1.5-2x faster on a CPU under bfloat16; worth it from a few "
        "thousand pairs. Batches are padded to batch_size so one compiled graph serves them all")
    exact_margin: Annotated[float, Field(ge=0)] | Literal["auto"] = Field(
        "auto", description="with dtype bfloat16 on a CPU: pairs scoring within this of `threshold` are scored "
        "again in fp32, so keep decisions equal fp32's; auto = 2x the largest bf16-fp32 difference on the first "
        f"{CALIBRATION_PAIRS} pairs (scored both ways), at least {MIN_MARGIN}; 0 = never")
    decode_workers: int | Literal["auto"] = Field(
        "auto", description="processes that decode and preprocess the next batches' images while the model scores "
        "this one; 0 = in this process; auto = up to 8 on CUDA, none on a CPU (the model needs the cores)")
    # Captioner (BLIP bootstrapping): needs a backend that takes images.
    captioner: bool = Field(False, description="also ask the backend (a VLM) for a synthetic caption of each image and keep the texts that pass (BLIP CapFilt's bootstrapping)")
    caption_template: str = Field(CAPTION_TEMPLATE, description="prompt template of the captioner (a file, or a path under templates/)")
    caption_max_tokens: int = Field(64, ge=1, description="token limit of each synthetic caption")
    caption_temperature: float | None = Field(None, description="sampling temperature of the captioner (unset: the backend's)")

    @field_validator("caption_prompt")
    @classmethod
    def _a_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as e:
                raise ValueError(f"caption_prompt is not a valid regular expression: {e}") from None
        return value

    @model_validator(mode="after")
    def _a_clear_keep_rule(self):
        if self.captioner and self.text == "conversation":
            raise ValueError("captioner cannot replace a whole conversation; use text: auto, caption or answer")
        cuts = self.threshold is not None or self.top_fraction is not None
        if self.score_only and cuts:
            raise PydanticCustomError("capfilt_rule", "score_only keeps every pair: drop threshold/top_fraction, or score_only")
        if not self.score_only and not cuts:
            # Told before a model is loaded: no rule would silently keep everything.
            raise PydanticCustomError(
                "capfilt_rule",
                "no rule to keep pairs: give threshold (e.g. 0.28 for CLIP ViT-B/32 cosine) or top_fraction "
                "(e.g. 0.9), or score_only: true to only add scores and keep every pair",
            )
        return self


# ---------------------------------------------------------------- the image-text model


def _pick_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class ImageTextScorer:
    """Scores image-text pairs: a CLIP / SigLIP dual encoder gives the cosine similarity of the two
    embeddings; a BLIP image-text matching model (BLIP's own CapFilt filter, e.g.
    Salesforce/blip-itm-base-coco) gives its ITM head's probability that the text matches the image."""

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", compile: bool = False,
                 batch_size: int = 32):
        import torch
        from transformers import AutoConfig, AutoModel, AutoProcessor

        self.model_id = model
        self.device = _pick_device(device)
        if dtype == "auto":
            dtype = "float16" if self.device.startswith("cuda") else "float32"
        # bf16 on a CPU: weights stay fp32 and matmuls run in bf16 under autocast (layer norms and softmax in
        # fp32), closer to the fp32 scores than bf16 weights and as fast on AVX512-BF16 / AMX cores
        self.autocast = self.device == "cpu" and dtype == "bfloat16"
        if self.autocast:
            dtype = "float32"
        try:
            model_type = getattr(AutoConfig.from_pretrained(model), "model_type", "")
            self.processor = AutoProcessor.from_pretrained(model)
            if model_type == "blip":
                from transformers import BlipForImageTextRetrieval

                self.model = BlipForImageTextRetrieval.from_pretrained(model, dtype=getattr(torch, dtype))
            else:
                self.model = AutoModel.from_pretrained(model, dtype=getattr(torch, dtype))
        except Exception as e:
            raise SynthError(
                f"capfilt: cannot load image-text model '{model}': {str(e).strip().splitlines()[0][:300]}; "
                "pass a CLIP, SigLIP or BLIP-ITM model id (e.g. openai/clip-vit-base-patch32, "
                "Salesforce/blip-itm-base-coco) or a local folder"
            ) from e
        self.kind = "itm" if model_type == "blip" else "cosine"
        if self.kind == "cosine" and not (hasattr(self.model, "get_image_features") and hasattr(self.model, "get_text_features")):
            raise SynthError(
                f"capfilt: '{model}' ({type(self.model).__name__}) is not a dual image-text encoder; "
                "use a CLIP or SigLIP family model, or a BLIP image-text matching model"
            )
        self.model.to(self.device).eval()
        if self.kind == "cosine" and self.device != "mps":
            # the patch embedding is a convolution: NHWC is the layout oneDNN / cuDNN run fastest
            self.model.to(memory_format=torch.channels_last)
        text_config = getattr(self.model.config, "text_config", None)
        self.max_text_tokens = getattr(text_config, "max_position_embeddings", None)
        # SigLIP was trained on texts padded to the full length; CLIP pads to the longest in the batch.
        self.pad_to_max = "siglip" in getattr(self.model.config, "model_type", "")
        # The encoders the fast path calls; the exact (fp32) second look always runs the model as loaded.
        self._image_features = getattr(self.model, "get_image_features", None)
        self._text_features = getattr(self.model, "get_text_features", None)
        self._itm = self.model
        self.compiled_batch = None
        if compile:
            self._compile(batch_size)

    def _compile(self, batch_size: int) -> None:
        """torch.compile the encoders. Every call is padded to `batch_size` rows, so the image side has one
        static graph; the text side's length varies per batch, hence a dynamic graph."""
        import torch

        self.compiled_batch = batch_size
        if self.kind == "itm":
            self._itm = _compiled(torch.compile(self.model, dynamic=True))
        else:
            # two functions of their own: transformers wraps both get_*_features in one decorator, whose
            # shared code object would make the second compile count as a recompile of the first
            model = self.model
            self._image_features = _compiled(torch.compile(lambda **kw: model.get_image_features(**kw)))
            self._text_features = _compiled(torch.compile(lambda **kw: model.get_text_features(**kw), dynamic=True))

    def _padded(self, tensors: dict):
        """Rows repeated up to the compiled batch size (their outputs are dropped): a batch of another size
        would compile a new graph, a minute each."""
        import torch

        rows = len(next(iter(tensors.values())))
        if self.compiled_batch is None or self._exact or rows >= self.compiled_batch:
            return tensors, rows
        extra = self.compiled_batch - rows
        return {k: torch.cat([v, v[-1:].expand(extra, *v.shape[1:])]) for k, v in tensors.items()}, rows

    @staticmethod
    def _pooled(output):
        import torch

        # transformers 5 returns a model output whose pooler_output is the projection; 4.x a tensor.
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    def _forward(self):
        """inference mode, and bf16 autocast when asked for on a CPU."""
        import contextlib

        import torch

        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.autocast and not self._exact:
            stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
        return stack

    _exact = False

    def exact_scores(self, pixel_values, texts: Sequence[str]) -> list[float]:
        """`score_pixels` in full fp32, also when bf16 autocast is on (the scores near a threshold)."""
        self._exact = True
        try:
            return self.score_pixels(pixel_values, texts)
        finally:
            self._exact = False

    def pixels(self, images: Sequence[Any]):
        """The model's input for decoded images (the image processor's ``pixel_values``, a CPU tensor)."""
        return self.processor(images=list(images), return_tensors="pt")["pixel_values"]

    def _on_device(self, pixel_values):
        import torch

        pixel_values = pixel_values.to(self.device, self.model.dtype, non_blocking=True)
        return pixel_values.contiguous(memory_format=torch.channels_last) if self.kind == "cosine" and self.device != "mps" else pixel_values

    def embed_pixels(self, pixel_values):
        import torch

        inputs, rows = self._padded({"pixel_values": pixel_values})  # padded first: channels-last strides kept
        encode = self.model.get_image_features if self._exact else self._image_features
        with self._forward():
            features = self._pooled(encode(pixel_values=self._on_device(inputs["pixel_values"])))[:rows]
        return torch.nn.functional.normalize(features.float(), dim=-1)

    def embed_images(self, images: Sequence[Any]):
        return self.embed_pixels(self.pixels(images))

    def _tokens(self, texts: Sequence[str], padding) -> dict:
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        inputs = tokenizer(list(texts), return_tensors="pt", padding=padding, truncation=True,
                           max_length=self.max_text_tokens)
        return {k: v.to(self.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}

    def embed_texts(self, texts: Sequence[str]):
        """Text embeddings of a whole batch in one forward pass."""
        import torch

        inputs, rows = self._padded(self._tokens(texts, "max_length" if self.pad_to_max else True))
        encode = self.model.get_text_features if self._exact else self._text_features
        with self._forward():
            features = self._pooled(encode(**inputs))[:rows]
        return torch.nn.functional.normalize(features.float(), dim=-1)

    def score_pairs(self, images: Sequence[Any], texts: Sequence[str]) -> list[float]:
        """For each i, the score of image i with text i: cosine similarity, or the ITM match probability."""
        return self.score_pixels(self.pixels(images), texts)

    def score_pixels(self, pixel_values, texts: Sequence[str]) -> list[float]:
        """`score_pairs` for images already preprocessed (by `pixels`, here or in a decode worker)."""
        if self.kind == "itm":
            return self.match_probabilities(pixel_values, texts)
        image_embeddings = self.embed_pixels(pixel_values)
        text_embeddings = self.embed_texts(texts)
        return (image_embeddings * text_embeddings).sum(dim=-1).tolist()

    def match_probabilities(self, pixel_values, texts: Sequence[str]) -> list[float]:
        """BLIP's filter: the image-grounded text encoder's ITM head, softmax over (no match, match)."""
        import torch

        inputs, rows = self._padded({"pixel_values": pixel_values, **self._tokens(texts, True)})
        inputs["pixel_values"] = self._on_device(inputs["pixel_values"])
        model = self.model if self._exact else self._itm
        with self._forward():
            logits = model(**inputs, use_itm_head=True).itm_score[:rows]
        return torch.softmax(logits.float(), dim=-1)[:, 1].tolist()


def _compiled(fn):
    """A compiled encoder whose compiler failure (no C++ compiler, an unsupported op) is one line saying
    what to do, not torch's page of traceback."""

    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
                raise
            first = next((line for line in str(e).strip().splitlines() if line.strip()), type(e).__name__)
            raise SynthError(f"capfilt: compile: true failed ({first[:300]}); torch.compile needs a C++ compiler "
                             "on a CPU (apt install g++) and a model it supports; set compile: false") from None

    return call


def decode_batch(processor, sources: Sequence[Any], ids: Sequence[str]):
    """Decode each image and preprocess those that decoded: (pixel_values or None, per image its error
    or None). Runs in this process or in a decode worker: the same code gives the same pixels."""
    from synth.data.images import decode_image

    images, errors = [], []
    for source, rid in zip(sources, ids, strict=True):
        try:
            images.append(decode_image(source, None, rid))
            errors.append(None)
        except SynthError as e:  # a broken image drops its record, not the run
            errors.append(str(e))
    pixels = processor(images=images, return_tensors="pt")["pixel_values"] if images else None
    return pixels, errors


@functools.lru_cache(maxsize=2)
def _worker_processor(model: str):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(model)


def _decode_in_worker(model: str, sources: list, ids: list[str]):
    import torch

    torch.set_num_threads(1)  # a decode worker is one core; the model has the others
    return decode_batch(_worker_processor(model), sources, ids)


@functools.lru_cache(maxsize=2)
def decode_pool(model: str, workers: int):
    """Decode worker processes (spawned: no copy of a loaded model or of threads), kept for the process
    like the model itself and stopped when it exits."""
    import atexit
    import multiprocessing

    pool = multiprocessing.get_context("spawn").Pool(workers)
    atexit.register(pool.terminate)
    return pool


# Four: a process that alternates between more loaded configurations than it keeps (three CapFilt stages
# of one recipe, the benchmark's sides) would load a model, and compile it, again on every switch.
@functools.lru_cache(maxsize=4)
def load_scorer(model: str, device: str = "auto", dtype: str = "auto", compile: bool = False,
                batch_size: int = 32) -> ImageTextScorer:
    """One loaded model per (model, device, dtype, compile), shared by every CapFilt stage in the process."""
    return ImageTextScorer(model, device, dtype, compile, batch_size if compile else 32)


# ---------------------------------------------------------------- which records are captions

# A caption request asks about the image as a whole: every word of it is one of these, with at least one
# asking word and one word for the image. A word naming a thing ("man", "umbrella", "square"), a number
# (a box) or a task word ("read", "transcribe", "classify", "region") makes the prompt something else.
_ASKING = frozenset("""
    describe describes describing description descriptions descriptive caption captions captioning summarize
    summarise summarizing summary explain explaining explanation depict depicting depiction interpret
    interpretation narrative narrate account overview elaborate analyze analyse analysis portray portrayal show shows what
""".split())
_IMAGE = frozenset("""
    image images picture pictures photo photos photograph photographs pic scene visual visuals view shot snapshot
    frame illustration drawing painting see seen shown depicted visible
""".split())
_FILLER = frozenset("""
    a an the this that these those it its is are be was do does can could would will you your i me my we us
    please kindly of in on at for to with from about and or but as by into there here all each every everything
    anything any other main key important notable salient element elements feature features object objects thing
    things detail details detailed great thorough thoroughly careful carefully comprehensive comprehensively
    manner way brief briefly short concise concisely succinct succinctly terse informative compact clear clearly
    simple simply long full fully vivid vividly accurate accurately rich one few words sentence sentences
    paragraph single line write give provide generate create produce offer share present presented relay render
    tell make happening happens going represented representing contained contains located location where how
    including include mentioning mention colours colors colour color sizes size positions position relate relates
    relation relations relationship relationships their they them possible much more than most up answer reply
    respond using only just overall general entire whole setting observe notice look looking help understand
    given following provided attached above below subsequent content contents now so quick quickly
""".split()) | _ASKING | _IMAGE
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def is_caption_request(prompt: str) -> bool:
    """Whether a user prompt asks for a caption or description of the whole image (the built-in rule)."""
    text = prompt.lower().replace(IMAGE_TOKEN, " ")
    if any(ch.isdigit() for ch in text):
        return False
    words = [w.removesuffix("'s") for w in _WORD.findall(text)]
    return bool(words) and all(w in _FILLER for w in words) and any(w in _ASKING for w in words) \
        and any(w in _IMAGE for w in words)


def _meta_says(meta: dict) -> bool | None:
    """What ``meta.task`` / ``meta.template`` say (synth adapt writes both): caption or not; None if silent."""
    named = [str(meta[key]) for key in ("task", "template") if isinstance(meta.get(key), str) and meta[key]]
    return any("caption" in value.lower() for value in named) if named else None


# ---------------------------------------------------------------- the stage


def _answer_message(record: dict) -> dict | None:
    """The last assistant message of an SFT sample (or of a pair's chosen reply)."""
    for key in ("messages", "chosen"):
        messages = record.get(key)
        if isinstance(messages, (list, tuple)):
            for message in reversed(messages):
                if message.get("role") == "assistant":
                    return message
    return None


def _is_pair(record: dict) -> bool:
    return isinstance(record.get("prompt"), (list, tuple)) and record.get("messages") is None


def _is_chat(record: dict) -> bool:
    return isinstance(record.get("messages"), (list, tuple)) or _is_pair(record)


def _with_text(content: Any, text: str) -> Any:
    """Content with its text replaced; image parts stay where they were."""
    if isinstance(content, str) or content is None:
        return text
    out, placed = [], False
    for part in content:
        if part.get("type") != "text":
            out.append(part)
        elif not placed:
            out.append({**part, "text": text})
            placed = True
    if not placed:
        out.append({"type": "text", "text": text})
    return out


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


class Pair(NamedTuple):
    """One image-text pair of a record: its text's source (web: the record's own; synthetic), score, record."""

    source: str
    score: float
    record: dict


class CapFilt(Map):
    """Keep image-text pairs whose image-text similarity passes a threshold or is in the top fraction.

    A Map, not a Filter: every kept record leaves with its score in ``meta`` and, with the captioner, a
    caption record may leave as two records (web and synthetic) or with a better caption. With
    ``top_fraction`` the stage must see its whole input before it can answer: ``CapFilt(top_fraction=...)``
    is then a `CapFiltTopFraction` (an `Aggregate`).
    """

    name: ClassVar[str] = "capfilt"
    filter_chain: ClassVar[bool] = True

    @staticmethod
    def asks_llm(config: CapFiltConfig) -> bool:
        """Scoring alone is a local image-text model; only the captioner asks a VLM backend."""
        return config.captioner
    Config: ClassVar[type[StageConfig]] = CapFiltConfig
    #: the defaults of `image_column` / `caption_column`; the text written is the caption or the answer
    reads: ClassVar[tuple[str, ...]] = ("images", "image", "caption", "messages", "chosen", "prompt", "meta")
    writes: ClassVar[tuple[str, ...]] = ("meta", "caption", "messages", "id")

    def __new__(cls, config: CapFiltConfig | dict | None = None, **overrides: Any):
        # The top fraction is relative to the whole input: that variant is an Aggregate.
        if cls is CapFilt:
            fraction = getattr(config, "top_fraction", None) if isinstance(config, StageConfig) else (config or {}).get("top_fraction")
            if overrides.get("top_fraction", fraction) is not None:
                cls = CapFiltTopFraction
        return super().__new__(cls)

    def __init__(self, config: CapFiltConfig | dict | None = None, *, backend=None, **overrides: Any):
        super().__init__(config, **overrides)
        self.backend = backend
        self.answered = 0  # captioner requests that came back (to tell "all failed" from "some failed")
        # (source, caption record?) -> [pairs scored, pairs kept]
        self.pair_counts: dict[tuple[str, bool], list[int]] = {}
        self._prompt_pattern = re.compile(self.config.caption_prompt, re.IGNORECASE) if self.config.caption_prompt else None
        if self.config.captioner:
            if backend is None:
                raise SynthError(
                    "capfilt: captioner: true needs a vision-language backend "
                    "(CapFilt(..., backend=...); on the command line --model and --base-url)"
                )
            if not getattr(backend, "supports_images", False):
                raise SynthError(
                    f"capfilt: the captioner backend '{getattr(backend, 'model_name', '?')}' does not take images; "
                    "use a vision-language model"
                )

    @classmethod
    def from_config(cls, config: CapFiltConfig, *, backend_factory=None) -> CapFilt:
        """Registry hook: the backend is built only when the captioner is on."""
        backend = None
        if config.captioner:
            if backend_factory is None:
                raise SynthError(
                    "capfilt: captioner: true needs a vision-language backend; pass --model (and --base-url) "
                    "for an OpenAI-compatible VLM server"
                )
            backend = backend_factory()
        return cls(config, backend=backend)

    @functools.cached_property
    def batch_size(self) -> int:
        size = self.config.batch_size
        if size == "auto":
            size = AUTO_BATCH["cuda" if _pick_device(self.config.device).startswith("cuda") else "cpu"]
        return size

    @property
    def scorer(self) -> ImageTextScorer:
        return load_scorer(self.config.model, self.config.device, self.config.dtype, self.config.compile,
                           self.batch_size)

    # -- which records are captions

    def _user_prompt(self, record: dict) -> str | None:
        """The user prompt of a single-turn chat (one user turn, one assistant answer last), else None."""
        messages = [m for m in record.get("messages") or () if m.get("role") != "system"]
        if len(messages) != 2 or [m.get("role") for m in messages] != ["user", "assistant"]:
            return None
        return _content_text(messages[0].get("content")).replace(IMAGE_TOKEN, " ").strip()

    def is_caption_record(self, record: dict) -> bool:
        """Whether the record is an image caption (scored on its caption; the captioner may rewrite it).

        ``caption_records: auto``: a raw row (its caption column); a chat whose ``meta.task`` or
        ``meta.template`` names a caption (either present and not naming one: not a caption); else a
        single-turn chat whose user prompt is only the image or asks for a caption or description of the
        whole image (`is_caption_request`, or the ``caption_prompt`` regex). Preference pairs never are:
        rewriting one side would break the pair.
        """
        if _is_pair(record) or self.config.caption_records == "none":
            return False
        if self.config.caption_records == "all" or not _is_chat(record):
            return True
        said = _meta_says(load_meta(record.get("meta")))
        if said is not None:
            return said
        prompt = self._user_prompt(record)
        if prompt is None:
            return False
        if not prompt:
            return True  # only the image: the answer describes it
        if self._prompt_pattern is not None:
            return self._prompt_pattern.search(prompt) is not None
        return is_caption_request(prompt)

    # -- what is scored

    def _text_mode(self, record: dict, caption: bool | None = None) -> str:
        if self.config.text != "auto":
            return self.config.text
        if not _is_chat(record):
            return "caption"
        caption = self.is_caption_record(record) if caption is None else caption
        return "answer" if caption else "conversation"

    def text_of(self, record: dict, mode: str | None = None) -> str:
        mode = mode or self._text_mode(record)
        if mode == "conversation":
            if _is_pair(record):  # the prompt and the chosen reply (the rejected one is wrong on purpose)
                chosen = [*(record.get("prompt") or ()), *(record.get("chosen") or ())]
                return "\n".join(_content_text(m.get("content")) for m in chosen)
            return "\n".join(text for _, text in turns(record))
        if mode == "answer":
            message = _answer_message(record)
            return _content_text(message.get("content")) if message else ""
        if self.config.caption_column not in record:
            raise SynthError(
                f"capfilt: record {record.get('id', '?')} has no column '{self.config.caption_column}' "
                f"(columns: {', '.join(sorted(record))}); set caption_column or text: answer"
            )
        return str(record[self.config.caption_column] or "")

    def _set_text(self, record: dict, mode: str, text: str) -> dict:
        record = dict(record)
        if mode == "caption":
            record[self.config.caption_column] = text
            return record
        messages = [dict(m) for m in record["messages"]]
        last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
        messages[last]["content"] = _with_text(messages[last].get("content"), text)
        record["messages"] = messages
        return record

    def image_source(self, record: dict):
        """The record's first image as records carry it (``{"bytes", "path"}`` or PIL), or None.
        A path (records built in memory) resolves inside `image_root`, never the working directory."""
        from synth.data.images import image_ref

        images = record_images(record)
        if not images and self.config.image_column in record:
            images = [record[self.config.image_column]]
        if not images or images[0] is None:
            return None
        value = images[0]
        if hasattr(value, "save") and hasattr(value, "mode"):  # a PIL image
            return value
        if isinstance(value, dict) and value.get("bytes"):
            return value
        return image_ref(value, self.config.image_root, str(record.get("id", "?")))

    def image_of(self, record: dict):
        """The record's first image decoded to RGB pixels (the one place CapFilt decodes), or None."""
        from synth.data.images import decode_image

        source = self.image_source(record)
        return None if source is None else decode_image(source, None, str(record.get("id", "?")))

    # -- scoring

    def _caption_requests(self, records: list[dict], images: list, originals: list[str]):
        from synth.llm.base import ChatRequest
        from synth.records import ImagePart, Message, TextPart
        from synth.templating import render

        template, name = self._caption_prompt
        requests = []
        for record, image, original in zip(records, images, originals, strict=True):
            request = (self._user_prompt(record) or "") if _is_chat(record) else ""
            prompt = render(template, {"caption": original, "request": request}, name, record.get("id"))
            requests.append(
                ChatRequest(
                    messages=[Message(role="user", content=[ImagePart(), TextPart(text=prompt)])],
                    images=[image],
                    max_tokens=self.config.caption_max_tokens,
                    temperature=self.config.caption_temperature,
                    key=record.get("id"),
                )
            )
        return requests

    @functools.cached_property
    def _caption_prompt(self):
        """The caption prompt template and its name (for errors)."""
        from synth.templating import compile_template, load_template

        path = Path(self.config.caption_template)
        # A file the user points at wins; otherwise the name is looked up under templates/.
        if path.is_file():
            return compile_template(path.read_text(encoding="utf-8"), str(path)), str(path)
        return load_template(self.config.caption_template), self.config.caption_template

    def score_batch(self, records: Sequence[dict], decoded=None) -> list[list[Pair] | Rejected | Failed]:
        """Score one batch: per record its scored pairs (web, and synthetic from the captioner), a reject,
        or a failure (its captioner request failed: retried by the next run). `decoded`: the batch's
        images already decoded and preprocessed (`decoded_batches`); None decodes them here."""
        from synth.pipeline.llm_task import failure_of

        results: list[list[Pair] | Rejected | Failed | None] = [None] * len(records)
        with_image, sources, ids = [], [], []
        for i, record in enumerate(records):
            try:
                source = self.image_source(record)
            except SynthError as e:  # a broken image drops its record, not the run
                results[i] = Rejected("bad_image", str(e))
                continue
            if source is None:
                results[i] = Rejected("no_image", "record has no image to score")
                continue
            with_image.append(i)
            sources.append(source)
            ids.append(str(record.get("id", "?")))
        pixels, errors = decoded if decoded is not None else decode_batch(self.scorer.processor, sources, ids)
        ready, rows, sources_ready, texts, modes, captions = [], [], [], [], [], []
        row = 0
        for i, source, error in zip(with_image, sources, errors, strict=True):
            if error is not None:
                results[i] = Rejected("bad_image", error)
                continue
            caption = self.is_caption_record(records[i])
            mode = self._text_mode(records[i], caption)
            text = self.text_of(records[i], mode).strip()
            if not text:
                results[i] = Rejected("no_text", f"empty {mode} text")
            else:
                ready.append(i)
                rows.append(row)
                sources_ready.append(source)
                texts.append(text)
                modes.append(mode)
                captions.append(caption)
            row += 1
        sources = sources_ready
        if ready and len(rows) != len(pixels):
            pixels = pixels[rows]

        scores = self.scorer.score_pixels(pixels, texts) if ready else []
        scores = self._exact_near_threshold(pixels, texts, scores)
        synthetic: list[str | None] = [None] * len(ready)
        synthetic_scores: list[float | None] = [None] * len(ready)
        notes: list[str | None] = [None] * len(ready)
        # Only caption records are captioned: a question's answer is never replaced by a caption.
        asked = [j for j in range(len(ready)) if self.config.captioner and captions[j]]
        if asked:
            # The encoded image goes to the server (no re-encoding of the decoded pixels).
            completions = self.backend.complete(
                self._caption_requests([records[ready[j]] for j in asked], [sources[j] for j in asked], [texts[j] for j in asked])
            )
            scored = []
            for j, completion in zip(asked, completions, strict=True):
                if not completion.ok:
                    results[ready[j]] = failure_of(completion)
                    continue
                self.answered += 1
                caption = completion.text.strip()
                if not caption:
                    notes[j] = "empty caption"  # the model answered nothing: the web text stays alone
                elif _same_text(caption, texts[j]):
                    notes[j] = "synthetic caption repeats the web text"
                else:
                    synthetic[j] = caption
                    scored.append(j)
            if scored:
                new_texts = [synthetic[j] for j in scored]
                new_scores = self.scorer.score_pixels(pixels[scored], new_texts)
                new_scores = self._exact_near_threshold(pixels[scored], new_texts, new_scores)
                for j, score in zip(scored, new_scores, strict=True):
                    synthetic_scores[j] = score

        for j, i in enumerate(ready):
            if results[i] is not None:  # failed above
                continue
            results[i] = self._pairs(records[i], modes[j], captions[j], texts[j], scores[j], synthetic[j],
                                     synthetic_scores[j], notes[j])
        return [r for r in results if r is not None]

    # exact_margin: auto, per instance (one per shard), so a shard's scores do not depend on which shards its
    # process ran before it (a resumed run writes the same bytes)
    calibrated_margin: float | None = None
    _differences: tuple[float, ...] = ()

    def _calibrate(self, pixels, texts: list[str], fast_scores: list[float]) -> list[float]:
        """Score a batch in fp32 too, until CALIBRATION_PAIRS pairs are seen both ways; then fix the margin.
        Returns the batch's fp32 scores."""
        exact = self.scorer.exact_scores(pixels, texts)
        self.rescored += len(exact)
        self._differences += tuple(abs(a - b) for a, b in zip(fast_scores, exact, strict=True))
        if len(self._differences) >= CALIBRATION_PAIRS:
            self.calibrated_margin = max(MARGIN_FACTOR * max(self._differences), MIN_MARGIN)
        return exact

    def _exact_near_threshold(self, pixels, texts: list[str], scores: list[float]) -> list[float]:
        """bf16 scores within `exact_margin` of the threshold, replaced by their fp32 scores: the keep
        decision is then fp32's (a top_fraction cutoff is not known per batch: those stay bf16)."""
        threshold = self.config.threshold
        if threshold is None or not self.scorer.autocast or not self.config.exact_margin or not scores:
            return scores
        margin = self.config.exact_margin
        if margin == "auto":
            margin = self.calibrated_margin
            if margin is None:  # still calibrating: this batch scored both ways, its fp32 scores kept
                return self._calibrate(pixels, texts, scores)
        near = [j for j, score in enumerate(scores) if abs(score - threshold) < margin]
        self.rescored += len(near)
        if near:
            exact = self.scorer.exact_scores(pixels[near], [texts[j] for j in near])
            scores = list(scores)
            for j, score in zip(near, exact, strict=True):
                scores[j] = score
        return scores

    def _pairs(self, record, mode, caption, web_text, web_score, synthetic, synthetic_score, note) -> list[Pair]:
        info: dict[str, Any] = {"source": "web", "text": mode, "caption_record": caption, "web_score": web_score}
        if synthetic is not None:
            info["synthetic_score"] = synthetic_score
            info["synthetic_caption"] = synthetic
        if note:
            info["captioner_error"] = note
        meta = dict(load_meta(record.get("meta")))
        pairs = [Pair("web", web_score, self._annotated(record, meta, info, web_score))]
        if synthetic is not None:
            rewritten = self._set_text(record, mode, synthetic)
            if self.config.keep == "all_passing":  # a second sample of the same image
                rewritten["id"] = f"{record.get('id', '?')}-synthetic"
            synthetic_info = {**info, "source": "synthetic", "web_text": web_text}
            pairs.append(Pair("synthetic", synthetic_score, self._annotated(rewritten, meta, synthetic_info, synthetic_score)))
        for pair in pairs:
            self.pair_counts.setdefault((pair.source, caption), [0, 0])[0] += 1
        return pairs

    @staticmethod
    def _annotated(record: dict, meta: dict, info: dict, score: float) -> dict:
        record = dict(record)
        record["meta"] = {**meta, "scores": {**meta.get("scores", {}), "capfilt": score}, "capfilt": info}
        return record

    # -- keep or drop

    def candidates(self, pairs: list[Pair]) -> list[Pair]:
        """The pairs that compete for a place: all (BLIP), or only the better one (``keep: best``)."""
        if self.config.keep == "best" and len(pairs) > 1:
            return [max(pairs, key=lambda p: p.score)]  # max keeps the first (web) on a tie
        return pairs

    def _below_threshold(self, pair: Pair) -> bool:
        return self.config.threshold is not None and pair.score < self.config.threshold

    def _verdict(self, result: list[Pair] | Rejected | Failed, in_top=lambda pair: True) -> list[dict] | Rejected | Failed:
        """The records of the pairs that pass, or why none did."""
        if isinstance(result, (Rejected, Failed)):
            return result
        pairs = self.candidates(result)
        kept = [p for p in pairs if in_top(p) and not self._below_threshold(p)]
        for pair in kept:
            self.pair_counts[(pair.source, pair.record["meta"]["capfilt"]["caption_record"])][1] += 1
        if kept:
            return [p.record for p in kept]
        scores = ", ".join(f"{p.source} {p.score:.4f}" if len(pairs) > 1 else f"{p.score:.4f}" for p in pairs)
        if all(self._below_threshold(p) for p in pairs):  # else some pair passed it but not the top fraction
            return Rejected("low_score", f"score {scores} < threshold {self.config.threshold}")
        return Rejected("below_top_fraction", f"score {scores} not in the top {self.config.top_fraction:g}"
                        + (f" (cutoff {self.cutoff:.4f})" if getattr(self, "cutoff", None) is not None else ""))

    def process(self, record: dict) -> list[dict] | Rejected | Failed:
        return self._verdict(self.score_batch([record])[0])

    def run(self, records: Iterable[dict]) -> Iterator[dict]:
        for batch, decoded in self.decoded_batches(records):
            for record, result in zip(batch, self.score_batch(batch, decoded), strict=True):
                yield from self.account(record, self._verdict(result))

    def decode_workers(self) -> int:
        workers = self.config.decode_workers
        if workers == "auto":
            import os

            device = _pick_device(self.config.device)
            workers = min(8, (os.cpu_count() or 1) - 1) if device.startswith("cuda") else 0
        return max(0, int(workers))

    def decoded_batches(self, records: Iterable[dict]) -> Iterator[tuple[list[dict], Any]]:
        """Batches, each with its images decoded and preprocessed: in decode workers, a few batches ahead
        of the model (which scores batch k while the workers prepare k+1 ...), or None (decoded in
        `score_batch`, in this process)."""
        workers = self.decode_workers()
        if workers == 0:
            for batch in batched(records, self.batch_size):
                yield batch, None
            return
        from collections import deque

        pool = decode_pool(self.config.model, workers)
        pending: deque = deque()
        for batch in batched(records, self.batch_size):
            sources, ids = self._sources(batch)
            job = pool.apply_async(_decode_in_worker, (self.config.model, sources, ids))
            pending.append((batch, job))
            if len(pending) > workers + 1:  # bounded: at most workers + 2 batches in flight
                batch, job = pending.popleft()
                yield batch, job.get()
        while pending:
            batch, job = pending.popleft()
            yield batch, job.get()

    def _sources(self, records: Sequence[dict]) -> tuple[list, list[str]]:
        """The encoded image of each record that has one, as `score_batch` reads them (the rest skipped)."""
        sources, ids = [], []
        for record in records:
            try:
                source = self.image_source(record)
            except SynthError:
                continue
            if source is not None:
                sources.append(source)
                ids.append(str(record.get("id", "?")))
        return sources, ids

    rescored = 0

    def details(self) -> dict[str, Any]:
        """Under bf16 autocast: how many pairs were scored again in fp32, and the margin that decided it."""
        if self.config.dtype != "bfloat16" or (not self.rescored and self.calibrated_margin is None):
            return {}  # fp32, or bf16 weights on a GPU (no second look), or nothing scored yet
        margin = self.config.exact_margin
        return {"fp32_rescored": self.rescored,
                "exact_margin": self.calibrated_margin if margin == "auto" else margin}

    def summary(self) -> list[dict]:
        """Pairs scored and kept by text source and record kind (for the command's table and report.json)."""
        return [
            {"text": source, "records": "caption" if caption else "other", "scored": scored, "kept": kept}
            for (source, caption), (scored, kept) in sorted(self.pair_counts.items(), key=lambda kv: (kv[0][0] != "web", not kv[0][1]))
        ]


class CapFiltTopFraction(CapFilt, Aggregate):
    """CapFilt keeping the best-scoring `top_fraction` of all its pairs (and, with `threshold`, only those
    at or above it). Scores everything first, then answers in input order."""

    cutoff: float | None = None

    def run(self, records: Iterable[dict]) -> Iterator[dict]:
        scored: list[tuple[dict, list[Pair] | Rejected | Failed]] = []
        for batch, decoded in self.decoded_batches(records):
            scored.extend(zip(batch, self.score_batch(batch, decoded), strict=True))
        # Every competing pair is ranked: with keep: all_passing web and synthetic texts alike.
        pool = [(index, pair) for index, (_, result) in enumerate(scored) if isinstance(result, list)
                for pair in self.candidates(result)]
        top = top_fraction_indices([pair.score for _, pair in pool], self.config.top_fraction)
        chosen = {id(pool[k][1]) for k in top}
        self.cutoff = min((pool[k][1].score for k in top), default=None)
        for record, result in scored:
            yield from self.account(record, self._verdict(result, lambda pair: id(pair) in chosen))


def top_fraction_indices(scores: Sequence[float | None], fraction: float) -> set[int]:
    """Indices of the ceil(fraction * n) best scores among the scored (None = unscored); ties by order."""
    scored = [(i, s) for i, s in enumerate(scores) if s is not None]
    count = math.ceil(fraction * len(scored) - 1e-9)
    ranked = sorted(scored, key=lambda item: (-item[1], item[0]))
    return {i for i, _ in ranked[:count]}


OPERATOR_CLASSES = (CapFilt,)
