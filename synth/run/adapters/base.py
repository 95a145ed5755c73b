"""What every stage type tells the runner: its recipe spec, how it shards, and how it runs one shard.

An adapter is a thin layer between a recipe stage and an engine's library code (a `synth.pipeline.Stage`
or a library function). The runner does everything else: fingerprints, shards, markers, assembly,
manifest, progress. Per-record stages (``sharded = True``) return engine stages from `stages()` and the
shard runner streams a shard's records through them; stages that need their whole input (dedup, mix,
self-instruct's novelty loop, export) run as one shard and may override `execute()`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from synth.errors import SynthError
from synth.run.chain import run_stage_chain
from synth.run.spec import StageSpec


@dataclass
class DataRef:
    """Where a dataset lives and how the one reader opens it (a stage output, a local path or a Hub id)."""

    path: str
    split: str | None = None
    config: str | None = None
    revision: str | None = None
    limit: int | None = None
    streaming: bool = False
    kind: str | None = None  # sft | preference | raw, once known
    multimodal: bool | None = None
    rows: int | None = None
    stage: str | None = None  # the stage that wrote (or named) it
    image_root: str | None = None  # the folder image paths resolve under (a source's image_root)
    members: dict | None = None  # WebDataset member extensions per column (a source's members)

    def open(self, **options: Any):
        from synth.data import open_source

        return open_source(self.path, self.split, config=self.config, revision=self.revision,
                           streaming=self.streaming, limit=self.limit, image_root=self.image_root,
                           **({"members": self.members} if self.members else {}), **options)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("image_root", "members"):
            if data[key] is None:  # refs (and fingerprints) of sources without one stay as they were
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataRef:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class Progress:
    """Counters a running shard updates (read by the live view in the same process)."""

    records: int = 0
    tokens: int = 0
    failures: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, records: int = 0, tokens: int = 0, failures: int = 0, requests: int = 0) -> None:
        with self.lock:
            self.records += records
            self.tokens += tokens
            self.failures += failures
            self.requests += requests


@dataclass
class StageContext:
    """What a stage needs at run time: the run folder, the request cache, the seed, its backends."""

    run_dir: Path
    cache_dir: Path
    seed: int
    recipe_dir: Path
    backends: dict[str, dict[str, Any]]  # name → backend spec dump (no secrets: those stay in env)
    stage: str = ""
    progress: Progress | None = None
    dry_run: bool = False
    task: Any = None  # the `ShardTask` being run (None in a dry run)

    def backend(self, name: str):
        """The named backend with the run's request cache (one per process and spec, reused by shards)."""
        spec = self.backends.get(name)
        if spec is None:
            raise SynthError(f"stage {self.stage}: no backend '{name}' in this run (a bug: the runner resolves them)")
        if self.dry_run:
            return DryBackend(spec)
        key = json.dumps([spec, str(self.cache_dir)], sort_keys=True, default=str)
        with _BACKENDS_LOCK:
            backend = _BACKENDS.get(key)
            if backend is None:
                backend = _make_backend(spec, self.cache_dir)
                _BACKENDS[key] = backend
        return backend

    def llm_progress(self) -> Callable | None:
        """A `Backend.complete` progress callback feeding this shard's counters."""
        if self.progress is None:
            return None
        progress = self.progress

        def on_completion(completion) -> None:
            if completion is None:
                return
            usage = getattr(completion, "usage", None)
            tokens = (usage.prompt_tokens + usage.completion_tokens) if usage is not None else 0
            progress.add(tokens=tokens, requests=1, failures=0 if completion.ok else 1)

        return on_completion


class DryBackend:
    """Stands in for a backend in a dry run: stages can format requests; sending one is a bug."""

    def __init__(self, spec: dict[str, Any]):
        from synth.llm.base import UsageTotals

        self.spec = spec
        self.model_name = spec.get("model") or "?"
        self.supports_images = _spec_takes_images(spec)
        self.usage = UsageTotals()

    def complete(self, requests, progress=None):
        raise SynthError("a dry run sends no request (this is a bug in the stage that asked)")

    async def acomplete(self, requests, progress=None):
        self.complete(requests)

    def close(self) -> None:
        pass


def _spec_takes_images(spec: dict[str, Any]) -> bool:
    """Whether a backend spec's model takes images: a server unless told otherwise; a local model when its
    config is an image-text one (read from the config alone)."""
    if spec.get("backend") == "openai":
        return bool(spec.get("supports_images", True))
    if spec.get("backend") == "local" and spec.get("model"):
        from synth.llm.local import is_image_text_model, resolve_model

        try:
            base, _ = resolve_model(str(spec["model"]), spec.get("adapter"))
        except SynthError:
            return False
        return is_image_text_model(base, spec.get("revision"))
    return False


_BACKENDS: dict[str, Any] = {}
_BACKENDS_LOCK = threading.Lock()


def _make_backend(spec: dict[str, Any], cache_dir: Path):
    from synth.llm.factory import make_backend
    from synth.run.spec import backend_options, backend_spec_types

    openai_spec, local_spec = backend_spec_types()
    model = (openai_spec if spec.get("backend") == "openai" else local_spec).model_validate(spec)
    options = backend_options(model)
    kind = options.pop("backend")
    return make_backend(kind, options.pop("model"), options.pop("base_url"),
                        concurrency=options.pop("concurrency"), cache_dir=cache_dir,
                        **{k: v for k, v in options.items() if v is not None})


def close_backends() -> None:
    """Close every backend this process opened (flushes the request cache)."""
    with _BACKENDS_LOCK:
        backends = list(_BACKENDS.values())
        _BACKENDS.clear()
    for backend in backends:
        try:
            backend.close()
        except Exception:  # closing must not hide the run's own outcome
            pass


@dataclass
class Preview:
    """What a dry run shows for a stage: rendered prompts and an estimate of the work."""

    prompts: list[str] = field(default_factory=list)
    note: str = ""
    requests: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class StageAdapter:
    """Base class; one subclass per stage type (see the package docs)."""

    type: ClassVar[str] = ""
    Spec: ClassVar[type[StageSpec]] = StageSpec
    #: per-record work split into shards by record id; False = the stage sees its whole input at once
    sharded: ClassVar[bool] = True
    #: the stage names existing data (a local path or Hub id) instead of writing any
    source: ClassVar[bool] = False
    #: the stage asks an LLM (its backend is part of its fingerprint; its shards use the run's cache)
    llm: ClassVar[bool] = False
    #: what lands in runs/RUN/NAME: a dataset (later stages read it), files (export), or nothing (push)
    output: ClassVar[str] = "dataset"
    #: output rows follow their input records' order (False: the stage decides, e.g. mix shuffles)
    positional: ClassVar[bool] = True
    #: bump when the adapter's own logic changes what a stage writes (invalidates old outputs)
    version: ClassVar[int] = 1

    # -- recipe time

    def resolve(self, spec: StageSpec, base_dir: Path) -> StageSpec:
        """The spec with relative file paths made absolute (against the recipe's folder when they exist there)."""
        return spec

    def uses_llm(self, spec: StageSpec) -> bool:
        return self.llm

    def is_sharded(self, spec: StageSpec) -> bool:
        return self.sharded

    def inputs(self, spec: StageSpec) -> list[str]:
        return [ref for _loc, ref in spec.references()]

    def backend_name(self, spec: StageSpec) -> str | None:
        fields = spec.backend_fields
        return getattr(spec, fields[0]) if fields else None

    @classmethod
    def nested_model(cls, loc: tuple, stage_data: dict):
        """The model validating a mapping nested inside the spec at `loc` (for 'did you mean' hints)."""
        return None

    def known_keys(self, loc: tuple, stage_data: dict) -> list[str]:
        """Keys accepted at `loc` inside the stage (for 'did you mean' hints)."""
        model = self.Spec if not loc else self.nested_model(loc, stage_data)
        return list(model.model_fields) if model is not None else []

    def check(self, spec: StageSpec) -> list[tuple[tuple, dict]]:
        """Checks pydantic cannot do on the spec alone: (location inside the stage, pydantic error dict)."""
        return []

    def open_options(self, spec: StageSpec) -> dict[str, Any]:
        """Options for opening the stage's input with the one reader (e.g. ``layout="raw"``)."""
        return {}

    def records(self, spec: StageSpec, src) -> Iterable[dict]:
        """The input records the stage sees (default: the reader's records)."""
        return src.records()

    def fingerprint_extra(self, spec: StageSpec) -> Any:
        """More that decides the output beyond the spec (e.g. a source's file hashes)."""
        return None

    def source_ref(self, spec: StageSpec) -> DataRef:
        raise NotImplementedError

    # -- run time (in the process that runs the shard)

    def stages(self, spec: StageSpec, ctx: StageContext, src) -> list[Any]:
        """The engine stages a shard's records go through, in order."""
        raise NotImplementedError

    def output_layout(self, spec: StageSpec, src) -> tuple[str, bool]:
        """(kind, multimodal) of the records this stage writes; default: as its input."""
        return src.kind, bool(src.multimodal)

    def execute(self, spec: StageSpec, ctx: StageContext, inputs: list, folder, tracker) -> dict[str, Any]:
        """Run one shard: read `inputs` (opened `Source`s), write into ``folder.path`` (an `OutputFolder`).
        Returns the shard's report (``counts``: read/kept/rows/rejected/failed; ``usage``)."""
        return run_stage_chain(self, spec, ctx, inputs[0], folder, tracker)

    def merged_report(self, spec: StageSpec, report: dict[str, Any]) -> dict[str, Any]:
        """The stage's report once its shards' reports are merged (counts summed): recompute here what a
        sum does not give, such as a share of the whole."""
        return report

    def after_assembly(self, spec: StageSpec, ctx: StageContext, out: Path) -> None:
        """A hook run once the stage's output is in place (e.g. check every LLM request failed)."""

    # -- dry run

    def preview(self, spec: StageSpec, ctx: StageContext, records: list[dict], rows: int | None) -> Preview:
        return Preview()

    def sample(self, spec: StageSpec, ctx: StageContext, records: list[dict], src) -> list[dict] | None:
        """The stage's output for a few input records without an LLM (None: cannot tell without one)."""
        if self.uses_llm(spec) or type(self).stages is StageAdapter.stages:
            return None
        stages = self.stages(spec, ctx, src)
        from synth.pipeline import run_stages

        return list(run_stages(stages, iter(records)))
