"""Commands generated from the operators' configs: ``synth NAME DATASET -o OUT [--field VALUE ...]`` for every
registered operator (synth's own and plugins'), and ``synth operators`` to list them.

Nothing here is written per operator: a field becomes a flag (``num_perm`` → ``--num-perm``; a bool
``--x/--no-x``; a list repeats the flag; a mapping of names repeats ``--flag KEY=VALUE``; a Literal offers
its choices; anything else is read as a YAML value), its description the help, its default the shown default. Only the flags a user passes reach the
config, so the operator's own defaults apply. An operator that may ask an LLM also takes the shared LLM
options (``--model``, ``--base-url``, ..., and a local backend's ``--batch-size`` and ``--adapter``); its
``max_tokens``, ``temperature`` and ``seed`` fields show as the shared ``--max-tokens``, ``--temperature``
and ``--seed``; another field named like a shared LLM option (``concurrency``) gets a prefixed flag and takes
that option's value unless its own flag is given. An operator that reads no dataset (``needs_input =
False``) has no DATASET argument and no reading options. The run reads DATASET with the one reader and writes OUT with
the one writer, with rejects, failures and a report inside (`synth.clean.apply.clean_dataset`; an operator
with a ``map_dataset`` hook gets the input as one Arrow dataset: `synth.clean.apply.map_dataset`).
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Annotated, Any, Literal, Optional

import click
import typer
from pydantic.fields import FieldInfo
from rich.markup import escape

from synth.cli.common import command, console
from synth.cli.llm_options import PANEL as LLM_PANEL
from synth.cli.llm_options import (
    SAMPLING_OPTIONS,
    Adapter,
    BackendName,
    BaseUrl,
    Batch,
    BatchSize,
    CacheDir,
    Concurrency,
    Model,
    NoCache,
    Out,
)
from synth.errors import SynthError

PANEL = "Operators (one per command; chain them with `synth filter -f` or a recipe)"
DATASET_HELP = ("Dataset: save_to_disk folder, Parquet/JSONL/CSV file or folder (synth, TRL, LLaVA, sharegpt, "
                "alpaca or OpenAI layout), image folder, WebDataset shards, or Hub id.")

#: parameters every generated command has (a field with one of these names gets the operator's name as prefix)
_COMMON = {"dataset", "out", "overwrite", "split", "subset", "revision", "limit", "image_root"}
_LLM = {"model", "base_url", "backend", "concurrency", "cache_dir", "no_cache", "batch"}
#: options of a local backend an LLM operator's command also takes (unless a config field has the name)
_BACKEND_OPTIONS = {"batch_size": BatchSize, "adapter": Adapter}
#: their flags
_FLAGS = {"--out", "-o", "--overwrite", "--split", "--subset", "--revision", "--limit", "--image-root", "--model", "-m",
          "--base-url", "--backend", "--concurrency", "--cache-dir", "--no-cache", "--batch"}
#: --model as a list, so that repeating it is an error rather than the last one silently winning
_Models = Annotated[Optional[list[str]], typer.Option("--model", "-m", help=typing.get_args(Model)[1].help,
                                                       rich_help_panel=LLM_PANEL)]


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the type inside Optional/Annotated, whether None is allowed)."""
    optional = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            optional = optional or len(args) < len(typing.get_args(annotation))
            if len(args) != 1:
                return annotation, optional
            annotation = args[0]
        else:
            return annotation, optional


def _click_type(annotation: Any) -> tuple[Any, bool] | None:
    """(python type for typer, multiple) for a simple field; None when the value is read as YAML."""
    inner, _ = _unwrap(annotation)
    origin = typing.get_origin(inner)
    if inner in (int, float, str, bool):
        return inner, False
    if origin is Literal and all(isinstance(a, str) for a in typing.get_args(inner)):
        return click.Choice(list(typing.get_args(inner))), False
    if origin in (list, tuple, set) and typing.get_args(inner):
        item, _ = _unwrap(typing.get_args(inner)[0])
        if item in (int, float, str):
            return item, True
    if origin is dict and [_unwrap(a)[0] for a in typing.get_args(inner)] == [str, str]:
        return str, True  # --flag KEY=VALUE, repeated
    return None


def _is_mapping(annotation: Any) -> bool:
    return typing.get_origin(_unwrap(annotation)[0]) is dict


def _key_values(pairs: list[str], flag: str, description: str | None) -> dict[str, str]:
    """``["key=value", ...]`` as a dict; a pair without ``=`` is the user's error, named with the form the
    field's description gives (e.g. VARIABLE=COLUMN), else KEY=VALUE."""
    import re

    found = re.search(r"\b[A-Z][A-Z_]*=[A-Z][A-Z_]*\b", description or "")
    form = found.group(0) if found else "KEY=VALUE"
    mapping = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise SynthError(f"{flag} '{pair}': expected {form}, e.g. {flag} {form.lower()}")
        mapping[key.strip()] = value.strip()
    return mapping


def _default_text(info: FieldInfo) -> str | None:
    if info.default_factory is not None:
        return None
    default = info.default
    if default is None or repr(default) == "PydanticUndefined":
        return None
    return str(default).lower() if isinstance(default, bool) else str(default)


def _field_parameter(cls, field: str, info: FieldInfo, llm: bool) -> tuple[str, inspect.Parameter]:
    """The command parameter of one config field: (python parameter name, parameter)."""
    param = field if field not in _COMMON | _LLM else f"{cls.name}_{field}"
    flag = "--" + param.replace("_", "-")
    decls = list(getattr(cls, "cli_flags", {}).get(field, [])) or [flag]
    simple = _click_type(info.annotation)
    help_text = escape((info.description or "").rstrip("."))  # "[x0, y0]" is text, not rich markup
    if info.is_required():
        help_text += " [required]"
    show = _default_text(info)
    panel = None
    if llm and field in SAMPLING_OPTIONS and param == field:
        # --max-tokens, --temperature, --seed: the shared LLM option's help and panel, the operator's default
        shared = typing.get_args(SAMPLING_OPTIONS[field])[1]
        help_text, panel = shared.help, shared.rich_help_panel
    if simple is not None and simple[0] is bool:
        if not any("/" in d for d in decls):
            decls = [f"{decls[0]}/--no-{decls[0][2:]}", *decls[1:]]
        option = typer.Option(*decls, help=help_text, show_default=show or False, rich_help_panel=panel)
        return param, inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[Optional[bool], option])
    # A one-value option is read as a list too, so that giving it twice is an error (see `_one_value`)
    # rather than the last one silently winning; its metavar says it takes one value.
    if simple is None:
        option = typer.Option(*decls, help=(help_text + " (a YAML value)").strip(), show_default=show or False,
                              metavar="YAML", rich_help_panel=panel)
        return param, inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[Optional[list[str]], option])
    kind, multiple = simple
    if _is_mapping(info.annotation) and "=" not in help_text:
        help_text = f"{help_text} (KEY=VALUE, repeatable)".strip()
    if isinstance(kind, click.Choice):  # the config checks the value; the help lists the choices
        help_text = f"{help_text} ({' | '.join(kind.choices)})".strip()
        kind = str
    option = typer.Option(*decls, help=help_text, show_default=show or False, rich_help_panel=panel,
                          **({} if multiple else {"metavar": "TEXT" if kind is str else kind.__name__.upper()}))
    return param, inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, default=None,
                                    annotation=Annotated[Optional[list[kind]], option])


def _one_value(cls, fields: dict[str, str], values: dict[str, Any]) -> None:
    """Each one-value option given at most once (its value unwrapped); else one line naming it."""
    hints = getattr(cls, "cli_replaced", {})
    for field, param in fields.items():
        value = values.get(param)
        simple = _click_type(cls.Config.model_fields[field].annotation)
        if not isinstance(value, list) or (simple is not None and (simple[1] or simple[0] is bool)):
            continue
        flag = "--" + param.replace("_", "-")
        flag = next(iter(getattr(cls, "cli_flags", {}).get(field, [])), flag)
        if len(value) > 1:
            hint = f"; {hints[flag]}" if flag in hints else ""
            raise SynthError(f"{flag} given {len(value)} times ({', '.join(map(str, value))}): it takes one "
                             f"value{hint}")
        values[param] = value[0] if value else None


def _options_from(cls, fields: dict[str, str], values: dict[str, Any]) -> dict[str, Any]:
    """The config options the user passed (unset flags are left to the config's defaults)."""
    from synth.io import yaml_value

    options = {}
    for field, param in fields.items():
        value = values.get(param)
        if value is None or value == []:
            continue
        info = cls.Config.model_fields[field]
        if isinstance(value, str) and _click_type(info.annotation) is None:
            value = yaml_value(value, f"--{param.replace('_', '-')}")
        elif isinstance(value, list) and _is_mapping(info.annotation):
            flag = next(iter(getattr(cls, "cli_flags", {}).get(field, [])), "--" + param.replace("_", "-"))
            value = _key_values(value, flag, info.description)
        options[field] = value
    for field, param in fields.items():  # `--concurrency` also sets a config field of that name
        if param != field and field in _LLM and field not in options and values.get(field) not in (None, False):
            options[field] = values[field]
    return options


def _common_flags(cls, name: str, default: list[str]) -> list[str]:
    """The flag names of a common option: the operator's ``cli_flags`` may give it more (adapt's --config
    for --subset) unless a config field of that name took them."""
    if name in cls.Config.model_fields:
        return default
    return list(getattr(cls, "cli_flags", {}).get(name) or default)


def make_command(cls) -> None:
    """Register ``synth NAME`` for operator class `cls`."""
    from synth.core.operator import command_name, needs_backend, needs_input, summary

    llm = needs_backend(cls)
    reads = needs_input(cls)
    K = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("dataset", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                annotation=Annotated[str, typer.Argument(help=DATASET_HELP)])] if reads else []
    params.append(inspect.Parameter("out", K, annotation=Out))
    fields: dict[str, str] = {}
    common = {name: _common_flags(cls, name, [f"--{name}"]) for name in ("split", "subset", "revision", "limit")}
    taken = set(_FLAGS) | {flag for flags in common.values() for flag in flags}
    for field, info in cls.Config.model_fields.items():
        param, parameter = _field_parameter(cls, field, info, llm)
        fields[field] = param
        params.append(parameter)
        option = typing.get_args(parameter.annotation)[1]
        taken.update(d for d in (option.default, *option.param_decls) if isinstance(d, str))  # typer keeps the first in default
    replaced = {f"replaced_{i}": flag for i, flag in enumerate(getattr(cls, "cli_replaced", {})) if flag not in taken}
    for param, flag in replaced.items():  # a flag it no longer has: one line naming what replaces it
        params.append(inspect.Parameter(param, K, default=None, annotation=Annotated[Optional[str], typer.Option(
            flag, hidden=True, help=f"Replaced: {getattr(cls, 'cli_replaced', {})[flag]}")]))
    params += [] if not reads else [
        inspect.Parameter("split", K, default=None, annotation=Annotated[Optional[str], typer.Option(
            *common["split"], help="Split to read when the source has several.")]),
        inspect.Parameter("subset", K, default=None, annotation=Annotated[Optional[str], typer.Option(
            *common["subset"], help="Hub dataset: the configuration (subset) to load.")]),
        inspect.Parameter("revision", K, default=None, annotation=Annotated[Optional[str], typer.Option(
            *common["revision"], help="Hub dataset: a branch, tag or commit.")]),
        inspect.Parameter("limit", K, default=None, annotation=Annotated[Optional[int], typer.Option(
            *common["limit"], help="Only the first N records.")]),
        inspect.Parameter("image_root", K, default=None, annotation=Annotated[Optional[str], typer.Option(
            "--image-root", help="Folder that relative (and absolute) image paths resolve under and may not "
                                 "leave (default: the dataset's folder).")]),
    ]
    params.append(inspect.Parameter("overwrite", K, default=False, annotation=Annotated[bool, typer.Option(
        "--overwrite", help="Replace OUT if synth wrote it.")]))
    if llm:
        params += [
            inspect.Parameter("model", K, default=None, annotation=_Models),
            inspect.Parameter("base_url", K, default=None, annotation=BaseUrl),
            inspect.Parameter("backend", K, default=None, annotation=BackendName),
            inspect.Parameter("concurrency", K, default=None, annotation=Concurrency),
            inspect.Parameter("cache_dir", K, default=None, annotation=CacheDir),
            inspect.Parameter("no_cache", K, default=False, annotation=NoCache),
            inspect.Parameter("batch", K, default=False, annotation=Batch),
        ]
        # backend options a config field of the same name does not take
        params += [inspect.Parameter(name, K, default=None, annotation=annotation)
                   for name, annotation in _BACKEND_OPTIONS.items() if name not in fields]

    def run(dataset: str | None = None, **values: Any) -> None:
        hints = getattr(cls, "cli_replaced", {})
        for param, flag in replaced.items():
            if values.pop(param) is not None:
                raise SynthError(f"`synth {command_name(cls)}` has no {flag} any more: {hints[flag]}")
        models = values.get("model") or []
        if len(models) > 1:
            hint = f"; {hints['--model']}" if "--model" in hints else ""
            raise SynthError(f"--model given {len(models)} times ({', '.join(models)}): this command asks one "
                             f"model{hint}")
        if llm:
            values["model"] = models[0] if models else None
        _one_value(cls, fields, values)
        run_operator(cls, dataset, _options_from(cls, fields, values), values, llm)

    run.__signature__ = inspect.Signature(params)  # typer reads the flags from here
    run.__doc__ = _help(cls)
    run.__name__ = cls.name
    command(command_name(cls), rich_help_panel=PANEL, help=_help(cls), short_help=summary(cls))(run)


def _help(cls) -> str:
    from synth.core.operator import kind_of

    doc = inspect.cleandoc(cls.__doc__ or cls.name)
    doc = "\n\n".join(" ".join(paragraph.split()) for paragraph in doc.split("\n\n"))  # rewrapped by the terminal
    return f"{doc}\n\n({kind_of(cls)} operator '{cls.name}'; in a recipe: `type: {cls.name}`)"


def run_operator(cls, dataset: str | None, options: dict[str, Any], values: dict[str, Any], llm: bool) -> None:
    """Build the operator, run it over DATASET (None: it reads none) into OUT, print the counts (and the LLM
    usage)."""
    from synth.clean.apply import clean_dataset
    from synth.cli.clean import print_result
    from synth.core.operator import build, input_layout, input_records, make_config
    from synth.data import check_output

    out = values["out"]
    if values.get("limit") is not None and values["limit"] < 1:
        raise SynthError(f"--limit {values['limit']}: give a number of records, at least 1")
    check_output(out, values["overwrite"])  # fail before loading a model
    built: dict[str | None, Any] = {}
    taken = set(cls.Config.model_fields)  # a field named like a backend option is the operator's

    def backend(name: str | None = None):
        """The command's backend; a name is another model on it (e.g. a judge's)."""
        from synth.cli.llm_options import make_llm

        if name not in built:
            options = {k: values[k] for k in _BACKEND_OPTIONS if values.get(k) is not None and k not in taken}
            if name is not None:
                options.pop("adapter", None)  # the adapter is the command's model's
            built[name] = make_llm(values["backend"], name or values["model"], values["base_url"],
                                   values["concurrency"], values["cache_dir"], values["no_cache"], values["batch"],
                                   **options)
        return built[name]

    def records_of(src):
        if hasattr(stages[0], "prepare"):
            stages[0].prepare(src)
        return input_records(cls, src)

    read = {k: values.get(k) for k in ("split", "subset", "revision", "limit", "overwrite")}
    try:
        config = make_config(cls, options)
        made = build(cls, config, backend_factory=backend if llm else None)
        stages = made if isinstance(made, list) else [made]
        if hasattr(cls, "run_command"):  # it writes its own output folder and summary
            cls.run_command(stages, dataset, out, console=console, **read)
            return
        if hasattr(stages[0], "map_dataset"):  # the input as one Arrow dataset
            _run_on_dataset(cls, stages[0], dataset, values, input_layout(cls, config))
            return
        result = clean_dataset(dataset, out, stages, split=read["split"], config=read["subset"],
                               revision=read["revision"], overwrite=read["overwrite"], limit=read["limit"],
                               description=cls.name, command=cls.name,
                               layout=input_layout(cls, config), records_of=records_of,
                               output_kind=getattr(cls, "output_kind", None), count_requests=llm,
                               image_root=values["image_root"])
        print_result(result, f"synth {cls.name.replace('_', '-')}")
        if hasattr(stages[0], "describe"):
            console.print(stages[0].describe(), soft_wrap=True)
        if built:
            from synth.llm.factory import report_usage

            for used in built.values():
                report_usage(used, console=console,
                             **({"title": f"LLM usage ({used.model_name})"} if len(built) > 1 else {}))
    finally:
        for backend_ in built.values():
            backend_.close()


def _run_on_dataset(cls, stage, dataset: str, values: dict[str, Any], layout: str | None) -> None:
    """An operator with a ``map_dataset`` hook: the whole input as one Arrow dataset; its notes, then one line."""
    from rich.text import Text

    from synth.clean.apply import map_dataset

    result = map_dataset(dataset, values["out"], stage, split=values["split"], config=values["subset"],
                         revision=values["revision"], overwrite=values["overwrite"], limit=values["limit"],
                         layout=layout, image_root=values["image_root"])
    for note in result.notes:
        console.print(Text.assemble(("note: ", "yellow"), note), soft_wrap=True)
    noun = {"sft": "samples", "preference": "pairs"}.get(getattr(cls, "output_kind", None) or "", "records")
    line = f"[green]wrote {result.rows:,} {noun}[/] from {result.read:,} records to [bold]{result.out}[/]"
    skipped = sum(result.rejected.values())
    if skipped:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(result.rejected.items()))
        line += f"; skipped {skipped:,} ({reasons}), see {result.rejects_file}"
    else:
        line += "; skipped 0"
    console.print(line, soft_wrap=True)


def register_all() -> None:
    """A command per registered operator (skipping those that set ``cli_command = False``)."""
    from synth.core.registry import operators

    for cls in operators().values():
        if getattr(cls, "cli_command", True):
            make_command(cls)


@command("operators")
def list_operators(
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON (name, kind, origin, options)."),
) -> None:
    """List every operator (synth's own and installed plugins'): its kind, where it comes from, its options."""
    import json

    from rich.table import Table

    from synth.core.operator import kind_of, summary
    from synth.core.registry import operators, origin

    rows = [{"name": name, "kind": kind_of(cls), "origin": origin(name), "summary": summary(cls),
             "options": list(cls.Config.model_fields)} for name, cls in sorted(operators().items())]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="operators (recipe `type:` and `synth NAME`)")
    for column in ("name", "kind", "origin", "summary"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["name"], row["kind"], row["origin"], row["summary"])
    console.print(table)

