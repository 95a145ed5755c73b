"""What an operator is: a stage class whose pydantic `Config` is the one declaration of its options.

An operator is a subclass of one of the stage kinds in `synth.pipeline` — `Map` (changes records), `Filter`
(keeps or drops, and says why), `Aggregate` (needs its whole input), `LLMTask` (asks an LLM once per record:
``format_input`` / ``format_output``) — with three class attributes:

- ``name``: its type in recipes (``type: NAME``), its command (``synth NAME`` with ``_`` as ``-``) and its
  docs page;
- ``Config``: a pydantic model (``extra="forbid"``, a ``Field(description=...)`` per field): the recipe
  schema, the CLI flags, ``--help``, the dry-run preview and the docs page all come from it;
- the docstring: its first line is the summary shown everywhere.

Optional class attributes and hooks, each used by the CLI, the runner and the Python API alike:

- ``cli_flags``: field → flag names, e.g. ``{"benchmarks": ["--benchmark", "-b"]}``; ``cli_command = False``
  for no command of its own; ``cli_replaced``: flag → what replaces it (a flag the command no longer has
  fails with that one line; for ``--model``, what to do instead of repeating it); a field named like a shared
  LLM option (``concurrency``) gets a prefixed flag and takes that option's value when its own is not given;
- ``needs_input = False``: it reads no dataset and makes its records from its config alone (Self-Instruct
  from its seed tasks): no ``input`` in a recipe, no DATASET on the command line; a recipe runs it once
  (``run(iter(()))`` yields the records, then ``write_files(folder)`` writes files of its own beside them);
- ``output_kind``: "sft" / "preference" when it writes another kind of record than it reads;
  ``output_multimodal``: whether its records carry images when that is not as its input's; ``input_layout``:
  the reader layout it needs (e.g. "raw" for labelled rows); each a value or a function of the config;
- ``input_records(source)`` (classmethod/staticmethod): the records it reads from an opened source;
- ``fingerprint_extra(config)`` (classmethod): more that decides its output than the config and the files
  of its `FilePath` fields (e.g. the content of a template set named by name);
- ``asks_llm(config)``: whether this configuration asks the backend (default: every LLM operator does);
- ``from_config(config, *, backend_factory)``: for an operator that builds itself (one that needs a
  backend only in some configurations, or several: ``backend_factory(name)`` gives the backend of that
  name — a recipe's backend, on the command line a model on the command's backend; no name: the stage's).
  It may return a chain (a list of stages, the operator's first);
- ``backend_refs(config)``: (location, name) of the backends it asks besides ``backend`` (a recipe checks
  they exist); a `synth.core.fields.DatasetRef` field names a dataset it reads besides its input;
- ``prepare(source)`` (instance): called once with the whole opened input before any record (a shard
  still sees only its records), e.g. to learn a vocabulary every shard shares;
- ``origin(record)``: the id of the input record an output record came from, for records it makes
  outside ``account`` (their rows then follow the input's order);
- ``run_command(stages, dataset, out, *, console, split, subset, revision, limit, overwrite)``: an
  operator that writes its own output folder (its own report) runs its command here instead of the
  generic `synth.clean.apply.clean_dataset`, and prints its own summary (`dataset` is None for one that
  reads none);
- ``preview_requests(records)`` (instance): the requests a dry run shows (default: ``format_input``);
  ``requests_per_record()``: about how many requests a record costs, for its estimate (default 1);
- ``describe()`` (instance): one line printed after a CLI run; ``summary()``: table rows;
- ``details()`` (instance): the operator's own figures, a JSON mapping written to the report (the CLI's
  ``report.json`` under its stage; a recipe stage's ``details``, summed over shards: ints added, equal
  values kept); ``merged_details(details)`` (classmethod): recompute from those sums what a sum does not
  give (a share of the whole);
- ``nothing_kept()`` (instance): the error line when a command's run kept no record (then nothing is
  written; a generator says why and what to change); a recipe stage writes its empty output instead;
- ``reads`` / ``writes``: the columns it reads and writes (docs, and the runner's layout);
- ``map_dataset(dataset, *, name, label, base_dir, scratch)`` (instance): for an operator that changes a
  whole Arrow dataset at once (adapt: `datasets.map` over batches, in processes) rather than record by
  record: `name` names the input in errors, `label` is its ``meta.source``, `base_dir` the folder image paths
  resolve in, `scratch` a folder for Arrow cache files (``prepare`` has seen the whole input first). It
  returns a `DatasetResult`; the CLI and the runner write it (rejects, report, each output row placed after
  its input row), and a dry run calls it on a few rows.

``cli_flags`` may also give more flags to the command's own options (``split``, ``subset``, ``revision``,
``limit``), e.g. adapt's ``{"subset": ["--config", "--subset"]}``.

A config field ``seed: int | None = None`` left unset takes the recipe's seed. Register it by listing it in its module's
``OPERATOR_CLASSES`` tuple (inside synth) or under the ``synth.operators`` entry-point group (a plugin).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from synth.errors import SynthError, validation_message
from synth.llm.base import ChatRequest, Completion
from synth.pipeline.llm_task import LLMTask
from synth.pipeline.stage import Aggregate, Failed, Filter, Map, Rejected, Stage, StageConfig

KINDS = ("llm", "filter", "aggregate", "map")


def kind_of(cls: type[Stage]) -> str:
    """llm | filter | aggregate | map (an LLM filter is "llm": it needs a backend)."""
    if needs_backend(cls):
        return "llm"
    if issubclass(cls, Filter):
        return "filter"
    if issubclass(cls, Aggregate) or cls.needs_all_input:
        return "aggregate"
    return "map"


def needs_input(cls: type[Stage]) -> bool:
    """Whether the operator reads a dataset (all but those that set ``needs_input = False``)."""
    return getattr(cls, "needs_input", True)


def needs_backend(cls: type[Stage]) -> bool:
    """Whether the operator may ask an LLM (an `LLMTask`, or one that builds itself with a backend factory)."""
    return issubclass(cls, LLMTask) or hasattr(cls, "from_config")


def summary(cls: type) -> str:
    """The docstring's first paragraph on one line (double backticks as single ones)."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    first = " ".join(doc.split("\n\n")[0].split())
    return first.replace("``", "`") if first else cls.__name__


def class_name(name: str) -> str:
    """An operator's (or stage type's) Python name: ``self_instruct`` → ``SelfInstruct`` (`synth.ops.SelfInstruct`)."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name) if part)


def command_name(cls: type[Stage]) -> str:
    return cls.name.replace("_", "-")


def check_operator(cls: Any, where: str) -> None:
    """An operator class that cannot work is an error naming where it was registered."""
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise SynthError(f"{where}: {cls!r} is not an operator (a subclass of synth.Map, Filter, Aggregate or LLMTask)")
    if not getattr(cls, "name", "") or cls.name == "stage" or not cls.name.replace("_", "").isalnum():
        raise SynthError(f"{where}: {cls.__name__} needs a `name` (letters, digits and '_'), e.g. name = 'my_filter'")
    reserved = {"type", "name", "input", "inputs", "shard_size", "resources"} | ({"backend"} if needs_backend(cls) else set())
    clash = reserved & set(cls.Config.model_fields)
    if clash:
        raise SynthError(f"{where}: {cls.__name__}.Config may not declare {', '.join(sorted(clash))} "
                         "(a recipe stage's own keys)")
    if not needs_input(cls) and getattr(cls, "cli_command", True) and not hasattr(cls, "run_command"):
        raise SynthError(f"{where}: {cls.__name__} reads no dataset (needs_input = False): its command needs a "
                         "`run_command` (or set cli_command = False)")


def make_config(cls: type[Stage], options: dict | Any | None = None) -> Any:
    """The operator's validated config from options; a `SynthError` naming the operator and the bad key."""
    if isinstance(options, cls.Config):
        return options
    try:
        return cls.Config(**(options or {}))
    except ValidationError as e:
        unknown = any(err.get("type") == "extra_forbidden" for err in e.errors())
        valid = f"; valid options for '{cls.name}': {', '.join(cls.Config.model_fields) or '(none)'}"
        raise SynthError(validation_message(e, f"{cls.name}") + (valid if unknown else "")) from None
    except TypeError as e:  # options not a mapping
        raise SynthError(f"{cls.name}: options must be a mapping of key: value ({e})") from None


def build(cls: type[Stage], options: dict | Any | None = None, *,
          backend_factory: Callable[..., Any] | None = None, progress: Callable | None = None) -> Stage | list[Stage]:
    """An operator instance (or the chain its ``from_config`` returns) from validated options; a `SynthError`
    naming the operator and the bad key. `progress` is the LLM progress callback an `LLMTask` reports each
    completion to (one that ``from_config`` built included)."""
    config = make_config(cls, options)
    if hasattr(cls, "from_config"):
        built = cls.from_config(config, backend_factory=backend_factory)
        for stage in built if isinstance(built, list) else [built]:
            if isinstance(stage, LLMTask) and stage.progress is None:
                stage.progress = progress  # its LLM requests count in the run's progress too
        return built
    if issubclass(cls, LLMTask):
        if backend_factory is None:
            raise SynthError(f"'{cls.name}' needs an LLM backend; pass --backend/--model (or a backend in the recipe)")
        return cls(backend_factory(), config, progress=progress)
    return cls(config)


def input_records(cls: type[Stage], source) -> Any:
    """The records an operator reads from an opened source: its ``input_records(source)`` hook (e.g. SFT
    conversations with ids) or the reader's records."""
    hook = getattr(cls, "input_records", None)
    return hook(source) if hook is not None else source.records()


def input_layout(cls: type[Stage], config: Any) -> str | None:
    """The reader layout the operator needs for this config (its ``input_layout``), or None: the reader's."""
    layout = getattr(cls, "input_layout", None)
    return layout(config) if callable(layout) else layout


def output_layout(cls: type[Stage], config: Any, kind: str, multimodal: bool) -> tuple[str, bool]:
    """(kind, multimodal) of the records the operator writes, from those of its input."""
    images = getattr(cls, "output_multimodal", None)
    images = images(config) if callable(images) else images
    return (getattr(cls, "output_kind", None) or kind), bool(multimodal if images is None else images)


@dataclass
class DatasetResult:
    """What an operator's ``map_dataset`` hook gives back."""

    dataset: Any  # the output `datasets.Dataset` (in the layout of `output_kind`)
    rows_from: Any  # each output row's input row (a position in the dataset it was given), in output order
    read: int = 0  # input records
    rejects: list[dict] = field(default_factory=list)  # {"id", "reason", "detail", **more}: rejects.jsonl lines
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> records (the report's counts)
    notes: list[str] = field(default_factory=list)  # printed as "note: ..." by the CLI
    multimodal: bool = False
    report: dict[str, Any] = field(default_factory=dict)  # the CLI's report.json


#: what an operator's config derives from (unknown keys are errors)
OperatorConfig = StageConfig

__all__ = ["Aggregate", "ChatRequest", "Completion", "DatasetResult", "Failed", "Filter", "LLMTask", "Map", "OperatorConfig",
           "Rejected", "Stage", "StageConfig", "build", "check_operator", "command_name", "input_layout",
           "kind_of", "make_config", "needs_backend", "needs_input", "output_layout", "summary"]
