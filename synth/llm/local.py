"""In-process generation with transformers: any causal LM by Hub id or local path, batched on CPU or GPU.

Requests are grouped by their sampling parameters, sorted by prompt length (less padding) and generated
`batch_size` sequences at a time with left padding, in a worker thread so the event loop stays free.
Per request: temperature (0 = greedy), top_p, max_tokens, n (``num_return_sequences``), seed, stop
strings (generation stops there and the text is cut before the first one) and a JSON schema
(`schema_model`), which is enforced while decoding by xgrammar's logits processor, so even a tiny model
can only produce JSON that parses and follows the schema; the reply is then validated with pydantic.

A tokenizer without a chat template (base models, like the embedded Gemma 3 270M) gets
``templates/chat/base.jinja``, an "### Instruction / ### Response" layout, and generation stops at the
next "### " heading. Such models answer best to few-shot prompts.

Seeds: a batch samples from one random stream seeded from its requests' seeds, so a seeded run is
reproducible with the same requests and batch size; a different batch size or mix of requests can
change the samples (requests with different seeds still share batches, which keeps batching fast).
"""

from __future__ import annotations

import asyncio
import json
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


class _Loaded:
    """The model, tokenizer and what generation needs to know about them."""

    def __init__(self, model, tokenizer, chat_template: str, default_template: bool, eos_ids: list[int]):
        self.model = model
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.default_template = default_template
        self.eos_ids = eos_ids
        self.grammar_compiler = None
        self.grammars: dict[str, Any] = {}


class LocalBackend(Backend):
    """Generates in-process with a transformers causal LM. Text only (`supports_images` is False)."""

    supports_images = False

    def __init__(self, config: LocalConfig | None = None, *, announce: Callable[[str], None] | None = None, **options):
        super().__init__()
        if config is None:
            config = LocalConfig(**options)
        elif options:
            config = config.model_copy(update=options)
        self.config = config
        self.model_name = config.model
        self._announce = announce
        self._loaded: _Loaded | None = None
        self._load_lock = threading.Lock()
        # One generate() at a time per model: torch already uses every core.
        self._generate_lock = threading.Lock()
        from synth.llm.embedded import EMBEDDED_MODEL

        if config.model == EMBEDDED_MODEL and not config.gguf_file:
            from synth.llm.embedded import embedded_model_version

            self.model_name = embedded_model_version()

    # ------------------------------------------------------------ loading

    def load(self) -> _Loaded:
        """Load the model and tokenizer once (thread-safe); later calls return the same objects."""
        with self._load_lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    def _resolve_path(self) -> str:
        from synth.llm.embedded import EMBEDDED_MODEL, ensure_embedded_model

        if self.config.model == EMBEDDED_MODEL and not self.config.gguf_file:
            return str(ensure_embedded_model(**({"announce": self._announce} if self._announce else {})))
        return self.config.model

    def _load(self) -> _Loaded:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

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
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, **common)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), **common)
        except (OSError, ValueError) as e:
            raise SynthError(
                f"cannot load the local model '{self.config.model}': {str(e).strip().splitlines()[0]} "
                "(pass a local folder, a Hub id reachable from here, or omit --model for the embedded default)"
            ) from e
        finally:
            if bars:
                hf_logging.enable_progress_bar()
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
        elif getattr(tokenizer, "chat_template", None):
            template, default = tokenizer.chat_template, False
        else:
            template, default = default_chat_template(), True
        return _Loaded(model, tokenizer, template, default, eos_ids)

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
        prompts: dict[int, list[int]] = {}
        for index, request in enumerate(requests):
            try:
                prompts[index] = self._prompt_ids(loaded, request)
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
        if request.images or any(m.image_count for m in request.messages):
            raise ValueError(
                f"the local text model '{self.config.model}' does not take images; describe the image in text"
            )
        messages = [{"role": m.role, "content": m.text} for m in request.messages]
        ends_with_assistant = bool(messages) and messages[-1]["role"] == "assistant"
        text = loaded.tokenizer.apply_chat_template(
            messages,
            chat_template=loaded.chat_template,
            tokenize=False,
            # A trailing assistant message is a prefix the model continues (e.g. few-shot answers).
            add_generation_prompt=not ends_with_assistant,
            continue_final_message=ends_with_assistant,
        )
        # The template writes any special tokens (BOS) itself.
        return loaded.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _settings(self, request: ChatRequest) -> tuple:
        """Requests with equal settings can share a generate() call."""
        from synth.llm.structured import schema_json

        schema = schema_json(request.schema_model) if request.schema_model is not None else None
        return (
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

    def _generate(self, loaded: _Loaded, batch: list[ChatRequest], prompt_ids: list[list[int]]) -> list[Completion]:
        import torch

        first = batch[0]  # all requests in a batch share their settings
        tokenizer, model = loaded.tokenizer, loaded.model
        n = max(1, first.n)
        max_new = first.max_tokens or self.config.max_tokens
        greedy = first.temperature is not None and first.temperature <= 0
        samples = 1 if greedy else n  # greedy samples would all be equal: generate once, repeat

        encoded = tokenizer.pad({"input_ids": prompt_ids}, padding=True, return_tensors="pt")
        input_ids = encoded["input_ids"].to(model.device)
        attention_mask = encoded["attention_mask"].to(model.device)
        width = input_ids.shape[1]

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
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        generated = output[:, width:].tolist()

        completions = []
        for row, (request, prompt) in enumerate(zip(batch, prompt_ids, strict=True)):
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
            completions.append(self._completion(request, texts, reasons, Usage(prompt_tokens=len(prompt), completion_tokens=used)))
        return completions

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
        import xgrammar
        from xgrammar.contrib.hf import LogitsProcessor

        from synth.llm.structured import adapter_for, schema_json

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
