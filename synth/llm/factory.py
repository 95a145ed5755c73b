"""Pick and build the backend a command asked for, wrapped with the request cache; report its usage.

Selection: ``backend="openai"`` → any OpenAI-compatible server (`--base-url`, else ``$OPENAI_BASE_URL``,
else OpenAI, which needs ``$OPENAI_API_KEY``); ``backend="local"`` → an in-process transformers model
(`--model` id or folder, default the embedded Gemma 3 270M); ``backend=None`` → ``openai`` when a base
URL is given, else the embedded default: with no configuration synth works offline with no key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from synth.errors import SynthError, validation_message
from synth.llm.base import Backend

BackendKind = Literal["openai", "local"]
BACKENDS = ("openai", "local")
CACHE_FILE = "llm-cache.sqlite"


def default_cache_dir() -> Path:
    """Where the request cache lives unless a command says otherwise: ``<synth cache>/llm``."""
    from synth.paths import cache_dir

    return cache_dir() / "llm"


def make_backend(
    backend: str | None = None,
    model: str | None = None,
    base_url: str | list[str] | None = None,
    *,
    concurrency: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    cache: bool = True,
    **options: Any,
) -> Backend:
    """Build a backend; `options` are further fields of `OpenAIConfig` or `LocalConfig` (e.g. ``rpm``,
    ``batch_size``). The result caches requests in ``cache_dir/llm-cache.sqlite`` (default
    `default_cache_dir()`) unless ``cache=False``. Errors are `SynthError`s saying what to do."""
    urls = [base_url] if isinstance(base_url, str) else list(base_url or [])
    if backend is None:
        backend = "openai" if urls else "local"
    if backend not in BACKENDS:
        raise SynthError(f"unknown backend '{backend}'; choose one of: {', '.join(BACKENDS)}")
    if backend != "openai" and options.get("batch"):
        raise SynthError("--batch is for --backend openai (a provider's or vLLM's batch API); the local backend "
                         "already batches in-process")
    if backend == "openai":
        inner = _openai(model, urls, concurrency, options)
    else:
        if urls:
            raise SynthError("--base-url is for --backend openai (a server); the local backend runs in-process")
        inner = _local(model, options)
    batch = getattr(getattr(inner, "config", None), "batch", False)
    if not cache:
        if batch:
            raise SynthError("--batch needs the request cache (batch outputs are read back through it): "
                             "drop --no-cache")
        return inner
    from synth.llm.cache import CachedBackend

    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    if batch:
        from synth.llm.batch import BatchBackend, journal_dir

        return BatchBackend(inner, folder / CACHE_FILE, journal_dir(folder))
    return CachedBackend(inner, folder / CACHE_FILE)


def _openai(model: str | None, urls: list[str], concurrency: int | None, options: dict) -> Backend:
    from synth.llm.openai_compat import OpenAIBackend, OpenAIConfig

    model = model or os.environ.get("OPENAI_MODEL")
    if not model:
        raise SynthError("--backend openai needs a model: pass --model NAME (or set OPENAI_MODEL)")
    fields = {"model": model, **options}
    if urls:
        fields["base_urls"] = urls
    if concurrency is not None:
        fields["concurrency"] = concurrency
    try:
        config = OpenAIConfig(**fields)
    except ValidationError as e:
        raise SynthError(validation_message(e, "openai backend options")) from e
    return OpenAIBackend(config)


def _local(model: str | None, options: dict) -> Backend:
    from synth.llm.embedded import EMBEDDED_MODEL
    from synth.llm.local import LocalBackend, LocalConfig

    try:
        config = LocalConfig(model=model or EMBEDDED_MODEL, **options)
    except ValidationError as e:
        raise SynthError(validation_message(e, "local backend options")) from e
    return LocalBackend(config)


def backend_description(backend: Backend) -> dict[str, Any]:
    """Which backend and model served a command (stored beside its usage; never keys)."""
    inner = getattr(backend, "inner", backend)
    kind = {"OpenAIBackend": "openai", "LocalBackend": "local"}.get(type(inner).__name__, type(inner).__name__)
    return {"backend": kind, "model": backend.model_name}


def report_usage(backend: Backend, console=None, title: str = "LLM usage") -> dict[str, Any]:
    """Print the usage summary (requests, cached, retries, failures, tokens, cost) and return it as a dict
    to store in the output's metadata (e.g. ``usage.json`` beside the dataset)."""
    from synth.llm.usage import print_usage

    print_usage(backend.usage, console=console, title=title)
    return {**backend_description(backend), **backend.usage.as_dict()}
