"""Commands generated from the operators' configs: ``synth NAME DATASET -o OUT [--field VALUE ...]`` for every
registered operator (synth's own and plugins'), and ``synth operators`` to list them.

Nothing here is written per operator: a field becomes a flag (``num_perm`` → ``--num-perm``; a bool
``--x/--no-x``; a list repeats the flag; a Literal offers its choices; anything else is read as a YAML
value), its description the help, its default the shown default. Only the flags a user passes reach the
config, so the operator's own defaults apply. An operator that may ask an LLM also takes the shared LLM
options (``--model``, ``--base-url``, ...). The run reads DATASET with the one reader and writes OUT with
the one writer, with rejects, failures and a report inside (`synth.clean.apply.clean_dataset`).
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
from synth.cli.llm_options import BackendName, BaseUrl, Batch, CacheDir, Concurrency, Model, NoCache, Out

PANEL = "Operators (one per command; chain them with `synth filter -f` or a recipe)"
DATASET_HELP = ("Dataset: save_to_disk folder, Parquet/JSONL/CSV file or folder (synth, TRL, LLaVA, sharegpt, "
                "alpaca or OpenAI layout), image folder, WebDataset shards, or Hub id.")

#: parameters every generated command has (a field with one of these names gets the operator's name as prefix)
_COMMON = {"dataset", "out", "overwrite", "split", "subset", "revision", "limit"}
_LLM = {"model", "base_url", "backend", "concurrency", "cache_dir", "no_cache", "batch"}


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
    return None


def _default_text(info: FieldInfo) -> str | None:
    if info.default_factory is not None:
        return None
    default = info.default
    if default is None or repr(default) == "PydanticUndefined":
        return None
    return str(default).lower() if isinstance(default, bool) else str(default)


def _field_parameter(cls, field: str, info: FieldInfo) -> tuple[str, inspect.Parameter]:
    """The command parameter of one config field: (python parameter name, parameter)."""
    param = field if field not in _COMMON | _LLM else f"{cls.name}_{field}"
    flag = "--" + param.replace("_", "-")
    decls = list(getattr(cls, "cli_flags", {}).get(field, [])) or [flag]
    simple = _click_type(info.annotation)
    help_text = escape((info.description or "").rstrip("."))  # "[x0, y0]" is text, not rich markup
    if info.is_required():
        help_text += " [required]"
    show = _default_text(info)
    if simple is not None and simple[0] is bool:
        if not any("/" in d for d in decls):
            decls = [f"{decls[0]}/--no-{decls[0][2:]}", *decls[1:]]
        option = typer.Option(*decls, help=help_text, show_default=show or False)
        return param, inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[Optional[bool], option])
    if simple is None:
        option = typer.Option(*decls, help=(help_text + " (a YAML value)").strip(), show_default=show or False)
        return param, inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[Optional[str], option])
    kind, multiple = simple
    if isinstance(kind, click.Choice):  # the config checks the value; the help lists the choices
        help_text = f"{help_text} ({' | '.join(kind.choices)})".strip()
        kind = str
    option = typer.Option(*decls, help=help_text, show_default=show or False)
    annotation = Optional[list[kind]] if multiple else Optional[kind]
    return param, inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, default=None,
                                    annotation=Annotated[annotation, option])


def _options_from(cls, fields: dict[str, str], values: dict[str, Any]) -> dict[str, Any]:
    """The config options the user passed (unset flags are left to the config's defaults)."""
    from synth.io import yaml_value

    options = {}
    for field, param in fields.items():
        value = values.get(param)
        if value is None or value == []:
            continue
        if isinstance(value, str) and _click_type(cls.Config.model_fields[field].annotation) is None:
            value = yaml_value(value, f"--{param.replace('_', '-')}")
        options[field] = value
    for field, param in fields.items():  # `--concurrency` also sets a config field of that name
        if param != field and field in _LLM and field not in options and values.get(field) not in (None, False):
            options[field] = values[field]
    return options


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
    for field, info in cls.Config.model_fields.items():
        param, parameter = _field_parameter(cls, field, info)
        fields[field] = param
        params.append(parameter)
    if reads:
        params += [
            inspect.Parameter("split", K, default=None, annotation=Annotated[Optional[str], typer.Option(
                help="Split to read when the source has several.")]),
            inspect.Parameter("subset", K, default=None, annotation=Annotated[Optional[str], typer.Option(
                "--subset", help="Hub dataset: the configuration (subset) to load.")]),
            inspect.Parameter("revision", K, default=None, annotation=Annotated[Optional[str], typer.Option(
                "--revision", help="Hub dataset: a branch, tag or commit.")]),
            inspect.Parameter("limit", K, default=None, annotation=Annotated[Optional[int], typer.Option(
                help="Only the first N records.")]),
        ]
    params.append(inspect.Parameter("overwrite", K, default=False, annotation=Annotated[bool, typer.Option(
        "--overwrite", help="Replace OUT if synth wrote it.")]))
    if llm:
        params += [
            inspect.Parameter("model", K, default=None, annotation=Model),
            inspect.Parameter("base_url", K, default=None, annotation=BaseUrl),
            inspect.Parameter("backend", K, default=None, annotation=BackendName),
            inspect.Parameter("concurrency", K, default=None, annotation=Concurrency),
            inspect.Parameter("cache_dir", K, default=None, annotation=CacheDir),
            inspect.Parameter("no_cache", K, default=False, annotation=NoCache),
            inspect.Parameter("batch", K, default=False, annotation=Batch),
        ]

    def run(dataset: str | None = None, **values: Any) -> None:
        run_operator(cls, dataset, _options_from(cls, fields, values), values, llm)

    run.__signature__ = inspect.Signature(params)  # typer reads the flags from here
    run.__doc__ = _help(cls)
    run.__name__ = cls.name
    command(command_name(cls), rich_help_panel=PANEL, help=_help(cls), short_help=summary(cls))(run)


def _help(cls) -> str:
    from synth.core.operator import kind_of

    doc = inspect.cleandoc(cls.__doc__ or cls.name)
    return f"{doc}\n\n({kind_of(cls)} operator '{cls.name}'; in a recipe: `type: {cls.name}`)"


def run_operator(cls, dataset: str | None, options: dict[str, Any], values: dict[str, Any], llm: bool) -> None:
    """Build the operator, run it over DATASET (None: it reads none) into OUT, print the counts (and the LLM
    usage)."""
    from synth.clean.apply import clean_dataset, run_alone
    from synth.cli.clean import print_result
    from synth.core.operator import build, input_layout, input_records, make_config, output_multimodal
    from synth.data import check_output

    out = values["out"]
    check_output(out, values["overwrite"])  # fail before loading a model
    config = make_config(cls, options)
    built = []

    def backend():
        from synth.cli.llm_options import make_llm

        built.append(make_llm(values["backend"], values["model"], values["base_url"], values["concurrency"],
                              values["cache_dir"], values["no_cache"], values["batch"]))
        return built[-1]

    try:
        stage = build(cls, config, backend_factory=backend if llm else None)
        if dataset is None:  # an operator that reads no dataset
            result = run_alone(out, stage, overwrite=values["overwrite"], command=cls.name,
                               kind=getattr(cls, "output_kind", None) or "sft",
                               multimodal=bool(output_multimodal(cls, config)))
        else:
            result = clean_dataset(dataset, out, [stage], split=values["split"], config=values["subset"],
                                   revision=values["revision"], overwrite=values["overwrite"], limit=values["limit"],
                                   description=cls.name, command=cls.name,
                                   layout=input_layout(cls, config),
                                   records_of=lambda src: input_records(cls, src),
                                   output_kind=getattr(cls, "output_kind", None),
                                   output_multimodal=output_multimodal(cls, config))
        for table in stage.tables() if hasattr(stage, "tables") else ():
            console.print(table)
        print_result(result, f"synth {cls.name.replace('_', '-')}")
        if hasattr(stage, "describe") and stage.describe():
            console.print(stage.describe(), soft_wrap=True)
        if built:
            from synth.llm.factory import report_usage

            report_usage(built[0], console=console)
    finally:
        for backend_ in built:
            backend_.close()


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

