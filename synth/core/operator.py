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
  for no command of its own; a field named like a shared LLM option (``concurrency``) gets a prefixed flag
  and takes that option's value when its own flag is not given;
- ``needs_input = False``: it reads no dataset and makes its records from its config alone (Self-Instruct
  from its seed tasks): no ``input`` in a recipe, no DATASET on the command line; it runs once and its
  ``run(iter(()))`` yields the records;
- ``output_kind``: "sft" / "preference" when it writes another kind of record than it reads;
  ``output_multimodal``: whether its records carry images when that is not as its input's (a bool, or a
  function of the config); ``input_layout``: the reader layout it needs (e.g. "raw" for labelled rows; a
  string, or a function of the config);
- ``input_records(source)`` (classmethod/staticmethod): the records it reads from an opened source;
- ``fingerprint_extra(config)`` (classmethod): more that decides its output than the config and the files
  of its `FilePath` fields (e.g. the content of a template set named by name);
- ``asks_llm(config)``: whether this configuration asks the backend (default: every LLM operator does);
- ``from_config(config, *, backend_factory)``: for an operator that builds itself (one that needs a
  backend only in some configurations, or picks an engine by an option); with a ``progress`` parameter it
  also gets the LLM progress callback;
- ``origin(record)`` (staticmethod): for an operator that writes records of its own (several versions per
  input record), the id of the input record an output record came from: the runner keeps input order by it;
- ``bind_source(source)`` (instance): called with the opened input before its records flow (e.g. to
  resolve image paths inside the dataset's folder);
- ``preview_requests(records)`` (instance): the requests a dry run shows (default: ``format_input``);
  ``requests_per_record()``: the requests one record takes, for the dry run's estimate (default 1);
- ``describe()`` (instance): one line printed after a CLI run; ``summary()``: table rows; ``tables()``:
  rich renderables printed after a CLI run; ``details()``: a dict of its own figures, written at the top
  level of the CLI output's report.json (and as ``details`` in a recipe stage's report when it reads no
  input); ``write_files(folder)``: files of its own written into the output folder;
- ``reads`` / ``writes``: the columns it reads and writes (docs, and the runner's layout).

A config field ``seed: int | None = None`` left unset takes the recipe's seed. Register it by listing it in its module's
``OPERATOR_CLASSES`` tuple (inside synth) or under the ``synth.operators`` entry-point group (a plugin).
"""

from __future__ import annotations

from collections.abc import Callable
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
    """The first line of the docstring."""
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else cls.__name__


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


def make_config(cls: type[Stage], options: dict | Any | None = None) -> Any:
    """The operator's validated config from options; a `SynthError` naming the operator and the bad key."""
    if isinstance(options, cls.Config):
        return options
    try:
        return cls.Config(**(options or {}))
    except ValidationError as e:
        raise SynthError(validation_message(e, f"{cls.name}") +
                         f"; valid options for '{cls.name}': {', '.join(cls.Config.model_fields) or '(none)'}") from None
    except TypeError as e:  # options not a mapping
        raise SynthError(f"{cls.name}: options must be a mapping of key: value ({e})") from None


def build(cls: type[Stage], options: dict | Any | None = None, *,
          backend_factory: Callable[[], Any] | None = None, progress: Callable | None = None) -> Stage:
    """An operator instance from validated options; a `SynthError` naming the operator and the bad key.
    `progress` is the LLM progress callback an `LLMTask` reports each completion to."""
    config = make_config(cls, options)
    if hasattr(cls, "from_config"):
        import inspect

        takes_progress = "progress" in inspect.signature(cls.from_config).parameters
        return cls.from_config(config, backend_factory=backend_factory, **({"progress": progress} if takes_progress else {}))
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


def output_multimodal(cls: type[Stage], config: Any) -> bool | None:
    """Whether the records the operator writes carry images (its ``output_multimodal``); None: as its input's."""
    images = getattr(cls, "output_multimodal", None)
    return images(config) if callable(images) else images


def output_layout(cls: type[Stage], config: Any, kind: str, multimodal: bool) -> tuple[str, bool]:
    """(kind, multimodal) of the records the operator writes, from those of its input."""
    images = output_multimodal(cls, config)
    return (getattr(cls, "output_kind", None) or kind), bool(multimodal if images is None else images)


#: what an operator's config derives from (unknown keys are errors)
OperatorConfig = StageConfig

__all__ = ["Aggregate", "ChatRequest", "Completion", "Failed", "Filter", "LLMTask", "Map", "OperatorConfig",
           "Rejected", "Stage", "StageConfig", "build", "check_operator", "command_name", "input_layout",
           "kind_of", "make_config", "needs_backend", "needs_input", "output_layout", "output_multimodal", "summary"]
