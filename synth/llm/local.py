"""In-process generation with transformers: any causal LM or image-text model by Hub id or local path,
batched on CPU or GPU.

Requests are grouped by their sampling parameters, sorted by prompt length (less padding) and generated
`batch_size` sequences at a time with left padding, in a worker thread so the event loop stays free.
Per request: temperature (0 = greedy), top_p, max_tokens, n (``num_return_sequences``), seed, stop
strings (generation stops there and the text is cut before the first one) and a JSON schema
(`schema_model`), which is enforced while decoding by xgrammar's logits processor, so even a tiny model
can only produce JSON that parses and follows the schema; the reply is then validated with pydantic.
There is no presence penalty (transformers has none; its `repetition_penalty` is a different rule):
`supports_presence_penalty` is False and a request's `presence_penalty` is not applied.

A tokenizer without a chat template (base models, like the embedded Gemma 3 270M) gets
``templates/chat/base.jinja``, an "### Instruction / ### Response" layout, and generation stops at the
next "### " heading. Such models answer best to few-shot prompts.

Adapters: `model` may be a PEFT LoRA adapter folder (``adapter_config.json``; what ``synth train sft``
writes), or `adapter` names one on top of `model`. The base comes from the folder's ``train_summary.json``
(synth's) or its ``base_model_name_or_path``; the adapter is merged into the weights in memory
(``merge_and_unload``: generation then costs what the base costs) unless ``merge_adapter: false``. The
tokenizer and chat template come from the adapter folder, so prompts render as they were trained. The
backend's `model_name` names the adapter with a hash of its files, so the request cache never replays a
different (e.g. retrained) adapter's answers; see `model_identity`.

Image-text models (a config with a ``vision_config``: LLaVA, Qwen2-VL, Gemma 3, ..., a merged model or
a base + LoRA adapter) load with AutoModelForImageTextToText and their processor (`supports_images` is
then True): a request's images go through the processor with the prompt its chat template renders (image
parts in place), in batches of rows that all have images; text rows go through the tokenizer as for a
text model.

Seeds: a batch samples from one random stream seeded from its requests' seeds, so a seeded run is
reproducible with the same requests and batch size; a different batch size or mix of requests can
change the samples (requests with different seeds still share batches, which keeps batching fast).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import threading
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from synth.errors import SynthError
from synth.llm.base import Backend, ChatRequest, Completion, Usage
from synth.paths import templates_dir

DEFAULT_CHAT_TEMPLATE = "chat/base.jinja"
_CONTROL = re.compile(r"[\x00-\x1f]")
#: Where a base model's answer ends under the default template (the next heading it would invent).
DEFAULT_TEMPLATE_STOPS = ["\n### ", "### Instruction:"]


class LocalConfig(BaseModel):
    """Options of the local backend (all optional except the model)."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="Hub id or local folder of a causal LM (or 'gemma-3-270m', the embedded default)")
    revision: str | None = None
    gguf_file: str | None = Field(None, description="load this GGUF file from the model folder/repo")
    device: str = Field("auto", description="'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:1', ...")
    dtype: str = Field("auto", description="'auto' (float32 on CPU, bfloat16 on GPU), 'float32', 'bfloat16', 'float16'")
    batch_size: int = Field(16, ge=1, description="sequences generated together (prompts x n)")
    max_tokens: int = Field(256, ge=1, description="max new tokens when a request does not say")
    chat_template: str | None = Field(
        None, description="jinja file used instead of the tokenizer's chat template (a path)"
    )
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads for this process (default: torch's choice, one per core)"
    )
    template_stops: bool = Field(
        True, description="with the default template, stop at the next '### ' heading the model starts"
    )
    trust_remote_code: bool = False
    adapter: str | None = Field(
        None, description="a PEFT LoRA adapter folder applied on `model` (`model` may also be the adapter folder itself)"
    )
    merge_adapter: bool = Field(
        True, description="merge the adapter into the weights in memory (fast generation); false keeps a PeftModel"
    )


# ---------------------------------------------------------------- adapters and identity


def is_image_text_model(model: str, revision: str | None = None, trust_remote_code: bool = False) -> bool:
    """Whether a model's config is an image-text one (it has a ``vision_config``); reads the config only.
    A config that cannot be read counts as text (loading the model then says what is wrong)."""
    if model in _EMBEDDED_NAMES:
        return False
    from synth.llm.embedded import EMBEDDED_MODEL

    if model == EMBEDDED_MODEL:
        return False
    local = Path(model).expanduser() / "config.json"
    if local.is_file():
        return isinstance(_json_file(local).get("vision_config"), dict)
    if Path(model).expanduser().is_dir():
        return False
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model, revision=revision, trust_remote_code=trust_remote_code)
    except Exception:  # offline, unknown id, ...: the load reports it
        return False
    return getattr(config, "vision_config", None) is not None

#: Files of a training output folder that do not decide replies (timings, logs): left out of its hash.
_UNHASHED = {"train_summary.json", "merge_summary.json", "training_args.bin", "README.md"}
_EMBEDDED_NAMES = ("embedded", "gemma-3-270m")


def is_adapter_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def _json_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def adapter_base_model(adapter: str | os.PathLike) -> str | None:
    """The base an adapter was trained on: synth's ``train_summary.json`` (``model``, then ``model_path``),
    then PEFT's ``base_model_name_or_path``. The first that is the embedded model or an existing folder
    wins (a summary may name a path relative to where training ran); else the first named (a Hub id)."""
    adapter = Path(adapter)
    summary = _json_file(adapter / "train_summary.json")
    config = _json_file(adapter / "adapter_config.json")
    names = [v for v in (summary.get("model"), summary.get("model_path"), config.get("base_model_name_or_path"))
             if isinstance(v, str) and v]
    for name in names:
        if name in _EMBEDDED_NAMES or Path(name).expanduser().is_dir():
            return name
    return names[0] if names else None


def resolve_model(model: str, adapter: str | None = None) -> tuple[str, str | None]:
    """(base model, adapter folder or None) for a `model` that may itself be an adapter folder."""
    from synth.llm.embedded import EMBEDDED_MODEL

    if adapter is None and is_adapter_dir(model):
        adapter, model = model, ""
    if adapter is not None:
        if not is_adapter_dir(adapter):
            raise SynthError(
                f"adapter {adapter}: not a LoRA adapter folder (no adapter_config.json); pass the folder "
                "`synth train sft` wrote"
            )
        if not model:
            model = adapter_base_model(adapter) or ""
            if not model:
                raise SynthError(
                    f"adapter {adapter}: cannot tell its base model (no train_summary.json, no "
                    "base_model_name_or_path in adapter_config.json); pass the base as model: and the folder as adapter:"
                )
    return (EMBEDDED_MODEL if model in _EMBEDDED_NAMES else model), adapter


def folder_digest(folder: str | os.PathLike) -> str:
    """sha256 (12 hex) of a folder's top-level files, names and contents (not timings and logs)."""
    folder = Path(folder)
    h = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name in _UNHASHED:
            continue
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()[:12]


def _stat_digest(folder: Path) -> str:
    """A cheap identity of a model folder (file names, sizes, mtimes): rewriting the weights changes it."""
    rows = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())
            if p.is_file() and p.name not in _UNHASHED]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:12]


def _base_name(model: str, revision: str | None, gguf_file: str | None) -> str:
    from synth.llm.embedded import EMBEDDED_MODEL

    if model == EMBEDDED_MODEL and not gguf_file:
        from synth.llm.embedded import embedded_model_version

        return embedded_model_version()
    name = model + (f"/{gguf_file}" if gguf_file else "")
    return f"{name}@{revision}" if revision else name


def model_names(model: str, adapter: str | None = None, revision: str | None = None,
                gguf_file: str | None = None) -> tuple[str, str]:
    """(model name for provenance, cache identity) of a local model with an optional adapter.

    The name is ``BASE`` or ``BASE+ADAPTER_FOLDER_NAME@HASH`` (hash of the adapter's files); the identity
    adds, for a local model folder, a digest of its files' sizes and mtimes, so answers of a model
    rewritten in place (a new round saved over the old) are never served from the cache."""
    base, adapter = resolve_model(model, adapter)
    name = _base_name(base, revision, gguf_file)
    identity = name
    if Path(base).is_dir():
        identity = f"{name}#{_stat_digest(Path(base))}"
    if adapter is not None:
        label = f"+{Path(adapter).resolve().name}@{folder_digest(adapter)}"
        name, identity = name + label, identity + label
    return name, identity


def model_identity(model: str, adapter: str | None = None, revision: str | None = None) -> str:
    """What decides a local model's replies, as a string (for caches and recipe fingerprints)."""
    return model_names(model, adapter, revision)[1]


def _load_template_file(path: str | Path) -> str:
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = templates_dir() / path
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise SynthError(f"chat template {path}: cannot read it ({e.strerror})") from e


def default_chat_template() -> str:
    """The chat template given to tokenizers that have none (``templates/chat/base.jinja``)."""
    return _load_template_file(DEFAULT_CHAT_TEMPLATE)


class _StopOnText:
    """Stopping criterion: a row is done once its generated text contains one of the stop strings."""

    def __init__(self, tokenizer, stops: Sequence[str], prompt_width: int):
        self.tokenizer = tokenizer
        self.stops = list(stops)
        self.prompt_width = prompt_width
        # Enough tail tokens to contain the longest stop string, with margin for multi-token characters.
        self.tail = max(len(s) for s in self.stops) + 8
        # row -> number of generated tokens when it stopped (later tokens of that row are padding)
        self.stopped_at: dict[int, int] = {}

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        generated = input_ids.shape[1] - self.prompt_width
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width :][:, -self.tail :], skip_special_tokens=True)
        done = [any(s in t for s in self.stops) for t in texts]
        for row, hit in enumerate(done):
            if hit:
                self.stopped_at.setdefault(row, generated)
        return torch.tensor(done, device=input_ids.device)


class _Prompt:
    """One request's prompt: its token ids (text rows; image rows: the text's, before image tokens are
    expanded, for sorting only), the rendered text and the decoded images (image rows)."""

    __slots__ = ("ids", "text", "images")

    def __init__(self, ids: list[int], text: str, images: list | None = None):
        self.ids, self.text, self.images = ids, text, images or []

    def __len__(self) -> int:
        return len(self.ids)


class _Loaded:
    """The model, tokenizer (and processor, for image-text models) and what generation needs to know."""

    def __init__(self, model, tokenizer, chat_template: str, default_template: bool, eos_ids: list[int],
                 processor=None):
        self.model = model
        self.tokenizer = tokenizer
        self.processor = processor
        self.chat_template = chat_template
        self.default_template = default_template
        self.eos_ids = eos_ids
        self.grammar_compiler = None
        self.grammars: dict[str, Any] = {}


class LocalBackend(Backend):
    """Generates in-process with a transformers causal LM (text only) or image-text model (images too)."""

    supports_images = False

    def __init__(self, config: LocalConfig | None = None, *, announce: Callable[[str], None] | None = None, **options):
        super().__init__()
        if config is None:
            config = LocalConfig(**options)
        elif options:
            config = config.model_copy(update=options)
        self.config = config
        self.base_model, self.adapter = resolve_model(config.model, config.adapter)
        if self.adapter is not None and config.gguf_file:
            raise SynthError("gguf_file and an adapter do not mix: merge the adapter (synth train merge) or load the "
                             "base without gguf_file")
        self.model_name, self.identity = model_names(self.base_model, self.adapter, config.revision, config.gguf_file)
        self.image_text = not config.gguf_file and is_image_text_model(
            self.base_model, config.revision, config.trust_remote_code)
        self.supports_images = self.image_text
        self._announce = announce
        self._loaded: _Loaded | None = None
        self._load_lock = threading.Lock()
        # One generate() at a time per model: torch already uses every core.
        self._generate_lock = threading.Lock()

    # ------------------------------------------------------------ loading

    def load(self) -> _Loaded:
        """Load the model and tokenizer once (thread-safe); later calls return the same objects."""
        with self._load_lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    def _resolve_path(self) -> str:
        from synth.llm.embedded import EMBEDDED_MODEL, ensure_embedded_model

        if self.base_model == EMBEDDED_MODEL and not self.config.gguf_file:
            return str(ensure_embedded_model(**({"announce": self._announce} if self._announce else {})))
        return self.base_model

    def _load(self) -> _Loaded:
        from synth.optional import require

        torch = require("torch", "the local backend")
        from transformers import (
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )

        path = self._resolve_path()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)  # process-wide: fewer threads win on a busy machine
        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = self.config.dtype
        if dtype == "auto":
            dtype = "float32" if device == "cpu" else "bfloat16"
        common: dict[str, Any] = {"revision": self.config.revision, "trust_remote_code": self.config.trust_remote_code}
        if self.config.gguf_file:
            common["gguf_file"] = self.config.gguf_file
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # per-tensor bars are noise beside synth's own progress
        # An adapter folder holds the tokenizer saved with the chat template it was trained with.
        adapter_tokenizer = self.adapter is not None and (Path(self.adapter) / "tokenizer_config.json").is_file()
        processor = None
        remote = {"trust_remote_code": self.config.trust_remote_code}
        try:
            if self.image_text:
                # The adapter folder's processor (saved by `synth train sft`) carries the trained template.
                if adapter_tokenizer and _has_processor(self.adapter):
                    processor = AutoProcessor.from_pretrained(self.adapter, **remote)
                else:
                    processor = AutoProcessor.from_pretrained(path, **common)
                tokenizer = getattr(processor, "tokenizer", None)
                if tokenizer is None:
                    raise ValueError("it has an image-text config but no processor (preprocessor_config.json)")
                model = AutoModelForImageTextToText.from_pretrained(path, dtype=getattr(torch, dtype), **common)
            else:
                if adapter_tokenizer:
                    tokenizer = AutoTokenizer.from_pretrained(self.adapter, **remote)
                else:
                    tokenizer = AutoTokenizer.from_pretrained(path, **common)
                model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), **common)
        except ImportError as e:  # e.g. a processor that needs torchvision or num2words
            from synth.optional import from_import_error

            raise (from_import_error(e, f"the local model '{self.base_model}'") or e) from None
        except (OSError, ValueError) as e:
            raise SynthError(
                f"cannot load the local model '{self.base_model}': {str(e).strip().splitlines()[0]} "
                "(pass a local folder, a Hub id reachable from here, or omit --model for the embedded default)"
            ) from e
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        if self.adapter is not None:
            model = self._apply_adapter(model)
        model.to(device)
        model.eval()

        tokenizer.padding_side = "left"
        eos_ids = _eos_ids(model, tokenizer)
        if tokenizer.pad_token_id is None:
            if not eos_ids:
                raise SynthError(f"model '{self.config.model}': the tokenizer has neither a pad nor an eos token")
            tokenizer.pad_token_id = eos_ids[0]

        if self.config.chat_template:
            template, default = _load_template_file(self.config.chat_template), False
        elif _template_of(processor):
            template, default = _template_of(processor), False
        elif getattr(tokenizer, "chat_template", None):
            template, default = tokenizer.chat_template, False
        else:
            template, default = default_chat_template(), True
        # synth's training template keeps the "### Response:" layout: stop at a heading the model starts
        # too (a trained model ends at eos; the stops catch one that runs on).
        layout = default or "### Response:" in template
        return _Loaded(model, tokenizer, template, layout, eos_ids, processor)

    def _apply_adapter(self, model):
        """The base with the LoRA adapter: merged into its weights (default) or as a PeftModel."""
        from synth.optional import require

        PeftModel = require("peft", "serving a LoRA adapter", extra="local").PeftModel
        try:
            model = PeftModel.from_pretrained(model, self.adapter)
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            raise SynthError(
                f"adapter {self.adapter}: cannot apply it to '{self.base_model}': {str(e).strip().splitlines()[0][:300]} "
                "(was it trained on this base? pass the right one as model:)"
            ) from e
        return model.merge_and_unload() if self.config.merge_adapter else model

    # ------------------------------------------------------------ serving

    async def acomplete(self, requests: Sequence[ChatRequest], progress=None) -> list[Completion]:
        loop = asyncio.get_running_loop()

        def report(completion: Completion) -> None:
            if progress is not None:
                loop.call_soon_threadsafe(progress, completion)

        # Progress callbacks are queued before the thread's result, so they all run before we return.
        return await asyncio.to_thread(self._serve, list(requests), report)

    def _serve(self, requests: list[ChatRequest], report: Callable[[Completion], None]) -> list[Completion]:
        if not requests:
            return []
        loaded = self.load()
        results: list[Completion | None] = [None] * len(requests)
        prompts: dict[int, _Prompt] = {}
        for index, request in enumerate(requests):
            try:
                prompts[index] = self._prompt(loaded, request)
            except Exception as e:  # a bad request is a recorded failure, never a crash of the batch
                results[index] = Completion(key=request.key, error=f"cannot build the prompt: {e}",
                                            error_kind="invalid_request")
                self._account(results[index])
                report(results[index])

        for group in self._groups(requests, prompts):
            for batch in self._batches(group, requests, prompts):
                try:
                    done = self._generate(loaded, [requests[i] for i in batch], [prompts[i] for i in batch])
                except Exception as e:  # e.g. out of memory, context too long: record and go on
                    error = f"generation failed: {type(e).__name__}: {e}"
                    done = [Completion(key=requests[i].key, error=error, error_kind="generation") for i in batch]
                for index, completion in zip(batch, done, strict=True):
                    results[index] = completion
                    self._account(completion)
                    report(completion)
        return [c for c in results if c is not None]

    def _account(self, completion: Completion) -> None:
        with self.usage.lock:
            self.usage.requests += 1
            self.usage.failures += 0 if completion.ok else 1
            self.usage.prompt_tokens += completion.usage.prompt_tokens
            self.usage.completion_tokens += completion.usage.completion_tokens

    def _prompt_ids(self, loaded: _Loaded, request: ChatRequest) -> list[int]:
        return self._prompt(loaded, request).ids

    def _prompt(self, loaded: _Loaded, request: ChatRequest) -> _Prompt:
        parts = sum(m.image_count for m in request.messages)
        if (request.images or parts) and loaded.processor is None:
            raise ValueError(
                f"the local text model '{self.config.model}' does not take images; describe the image in text"
            )
        if request.images or parts:
            return self._image_prompt(loaded, request, parts)
        messages = [{"role": m.role, "content": m.text} for m in request.messages]
        text = self._render(loaded, messages)
        # The template writes any special tokens (BOS) itself.
        return _Prompt(loaded.tokenizer(text, add_special_tokens=False)["input_ids"], text)

    def _image_prompt(self, loaded: _Loaded, request: ChatRequest, parts: int) -> _Prompt:
        """An image row: messages with image parts in place (placed before the first user text when the
        request has images but no parts), its rendered text and its decoded images."""
        from synth.data import decode_image

        if parts and parts != len(request.images):
            raise ValueError(f"{parts} image part(s) in the messages but {len(request.images)} image(s)")
        messages = []
        for m in request.messages:
            if isinstance(m.content, str):
                content: list[dict] = [{"type": "text", "text": m.content}]
            else:
                content = [{"type": "image"} if p.type == "image" else {"type": "text", "text": p.text}
                           for p in m.content]
            messages.append({"role": m.role, "content": content})
        if not parts:
            first = next((m for m in messages if m["role"] == "user"), None)
            if first is None:
                raise ValueError("images but no user message to put them in")
            first["content"] = [{"type": "image"} for _ in request.images] + first["content"]
        text = self._render(loaded, messages)
        images = [decode_image(image, record_id=request.key or "?") for image in request.images]
        return _Prompt(loaded.tokenizer(text, add_special_tokens=False)["input_ids"], text, images)

    def _render(self, loaded: _Loaded, messages: list[dict]) -> str:
        ends_with_assistant = bool(messages) and messages[-1]["role"] == "assistant"
        text = loaded.tokenizer.apply_chat_template(
            messages,
            chat_template=loaded.chat_template,
            tokenize=False,
            # A trailing assistant message is a prefix the model continues (e.g. few-shot answers).
            add_generation_prompt=not ends_with_assistant,
            continue_final_message=ends_with_assistant,
        )
        return text

    def _settings(self, request: ChatRequest) -> tuple:
        """Requests with equal settings (and all with images, or none) can share a generate() call."""
        from synth.llm.structured import schema_json

        schema = schema_json(request.schema_model) if request.schema_model is not None else None
        return (
            bool(request.images) or any(m.image_count for m in request.messages),
            request.temperature,
            request.top_p,
            request.max_tokens or self.config.max_tokens,
            request.n,
            tuple(request.stop or ()),
            schema,
        )

    def _groups(self, requests, prompts) -> list[list[int]]:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for index in prompts:
            groups[self._settings(requests[index])].append(index)
        return list(groups.values())

    def _batches(self, group: list[int], requests, prompts) -> list[list[int]]:
        # Similar lengths together means less padding; n sequences per prompt count against batch_size.
        n = max(1, requests[group[0]].n)
        per_batch = max(1, self.config.batch_size // n)
        ordered = sorted(group, key=lambda i: len(prompts[i]))
        return [ordered[i : i + per_batch] for i in range(0, len(ordered), per_batch)]

    def _generate(self, loaded: _Loaded, batch: list[ChatRequest], prompts: list[_Prompt]) -> list[Completion]:
        import torch

        first = batch[0]  # all requests in a batch share their settings
        tokenizer, model = loaded.tokenizer, loaded.model
        n = max(1, first.n)
        max_new = first.max_tokens or self.config.max_tokens
        greedy = first.temperature is not None and first.temperature <= 0
        samples = 1 if greedy else n  # greedy samples would all be equal: generate once, repeat

        inputs = self._encode(loaded, prompts)
        width = inputs["input_ids"].shape[1]
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()

        stops = list(first.stop or [])
        if loaded.default_template and self.config.template_stops:
            stops += DEFAULT_TEMPLATE_STOPS
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new,
            "num_return_sequences": samples,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": loaded.eos_ids or None,
        }
        if greedy:
            kwargs["do_sample"] = False
        else:
            kwargs.update(do_sample=True, temperature=first.temperature or 1.0, top_p=first.top_p or 1.0, top_k=0)
        if first.schema_model is not None:
            # The grammar decides where the JSON ends; stop strings would cut it (and upset the matcher).
            stops = []
            kwargs["logits_processor"] = [self._json_processor(loaded, first.schema_model)]
        stop_on_text = _StopOnText(tokenizer, stops, width) if stops else None
        if stop_on_text is not None:
            from transformers import StoppingCriteriaList

            kwargs["stopping_criteria"] = StoppingCriteriaList([stop_on_text])

        with self._generate_lock, torch.inference_mode():
            seeds = [r.seed for r in batch if r.seed is not None]
            if seeds:  # one random stream per batch, derived from the requests' seeds
                torch.manual_seed(zlib.crc32(repr(seeds).encode()))
            output = model.generate(**inputs, **kwargs)
        generated = output[:, width:].tolist()

        completions = []
        for row, (request, prompt) in enumerate(zip(batch, prompt_tokens, strict=True)):
            texts, reasons, used = [], [], 0
            for sample in range(samples):
                index = row * samples + sample
                tokens = generated[index]
                if stop_on_text is not None and index in stop_on_text.stopped_at:
                    tokens = tokens[: stop_on_text.stopped_at[index]]
                text, reason, count = self._finish(loaded, tokens, stops, max_new)
                texts.append(text)
                reasons.append(reason)
                used += count
            if samples < n:  # tokens counted once: that is what was computed
                texts, reasons = texts * n, reasons * n
            completions.append(self._completion(request, texts, reasons, Usage(prompt_tokens=int(prompt), completion_tokens=used)))
        return completions

    def _encode(self, loaded: _Loaded, prompts: list[_Prompt]) -> dict[str, Any]:
        """The batch's model inputs, left-padded: token ids (text rows), or the processor's output for the
        texts and images (image rows: a batch holds only rows with images)."""
        model = loaded.model
        if not prompts[0].images:
            encoded = loaded.tokenizer.pad({"input_ids": [p.ids for p in prompts]}, padding=True, return_tensors="pt")
            return {k: encoded[k].to(model.device) for k in ("input_ids", "attention_mask")}
        encoded = loaded.processor(text=[p.text for p in prompts], images=[p.images for p in prompts], padding=True,
                                   add_special_tokens=False, return_tensors="pt")
        inputs = {}
        for key, value in encoded.items():
            if hasattr(value, "to"):
                value = value.to(model.device, dtype=model.dtype) if value.is_floating_point() else value.to(model.device)
            inputs[key] = value
        return inputs

    def _finish(self, loaded: _Loaded, tokens: list[int], stops: list[str], max_new: int) -> tuple[str, str, int]:
        """(text, finish_reason, tokens generated) for one generated row of `generate`'s output."""
        count, hit_eos = len(tokens), False
        for i, token in enumerate(tokens):
            if token in loaded.eos_ids:
                count, hit_eos = i, True
                break
        text = loaded.tokenizer.decode(tokens[:count], skip_special_tokens=True)
        cut = [text.find(s) for s in stops if s in text]
        if cut:
            return text[: min(cut)], "stop", count
        if hit_eos:
            return text, "stop", count + 1
        return text, ("length" if count >= max_new else "stop"), count

    def _completion(self, request: ChatRequest, texts: list[str], reasons: list[str], usage: Usage) -> Completion:
        if request.schema_model is None:
            return Completion(key=request.key, texts=texts, finish_reasons=reasons, usage=usage)
        from synth.llm.structured import parse_structured

        # xgrammar lets raw control characters into length-limited strings; escape them so the reply is
        # strict JSON with the same value (compact JSON has no control characters outside strings).
        texts = [_CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", t) for t in texts]
        parsed = []
        for text, reason in zip(texts, reasons, strict=True):
            value, error = parse_structured(text, request.schema_model)
            if error is not None:
                if reason == "length":
                    error = f"JSON reply cut at max_tokens={request.max_tokens or self.config.max_tokens}; raise max_tokens"
                return Completion(key=request.key, texts=texts, finish_reasons=reasons, usage=usage, error=error,
                                  error_kind="unparseable")
            parsed.append(value)
        return Completion(key=request.key, texts=texts, finish_reasons=reasons, parsed=parsed, usage=usage)

    def _json_processor(self, loaded: _Loaded, schema_model: Any):
        """A fresh xgrammar logits processor (one per generate call) for the schema; grammars are cached."""
        from synth.llm.structured import adapter_for, schema_json
        from synth.optional import require

        xgrammar = require("xgrammar", "structured output with the local backend")
        from xgrammar.contrib.hf import LogitsProcessor

        key = schema_json(schema_model)
        if key not in loaded.grammars:
            if loaded.grammar_compiler is None:
                info = xgrammar.TokenizerInfo.from_huggingface(
                    loaded.tokenizer,
                    vocab_size=loaded.model.get_output_embeddings().weight.shape[0],
                    stop_token_ids=loaded.eos_ids,
                )
                loaded.grammar_compiler = xgrammar.GrammarCompiler(info)
            # The schema as pydantic writes it (property order kept: models fill fields in that order).
            schema = json.dumps(adapter_for(schema_model).json_schema())
            # Compact JSON: free whitespace lets a small model ramble in blanks until max_tokens.
            loaded.grammars[key] = loaded.grammar_compiler.compile_json_schema(schema, any_whitespace=False)
        return LogitsProcessor(loaded.grammars[key])

    def close(self) -> None:
        self._loaded = None


def _has_processor(folder: str | os.PathLike) -> bool:
    """A saved processor (image processor config) in the folder."""
    return any((Path(folder) / name).is_file() for name in ("processor_config.json", "preprocessor_config.json"))


def _template_of(processor) -> str | None:
    template = getattr(processor, "chat_template", None) if processor is not None else None
    if isinstance(template, dict):
        template = template.get("default")
    return template or None


def _eos_ids(model, tokenizer) -> list[int]:
    """Every token that ends a reply: the generation config's eos ids plus the tokenizer's."""
    ids: list[int] = []
    configured = getattr(model.generation_config, "eos_token_id", None)
    for value in (configured, tokenizer.eos_token_id):
        if value is None:
            continue
        for token in value if isinstance(value, (list, tuple)) else [value]:
            if token not in ids:
                ids.append(int(token))
    return ids
