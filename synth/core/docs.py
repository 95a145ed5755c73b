"""Generated documentation: one page per operator, the recipe reference, the README's operator table.

A stand-in built from today's recipe stage registry (`synth.run.adapters.registry()`: each stage type's
`Spec` pydantic model). `synth.core` replaces it with pages built from the operator configs; the docs
site's hook (docs/hooks.py) and the README script only rely on `generated_pages()` and `readme_table()`.

    python -m synth.core.docs --readme README.md    # rewrite the table between the operator markers
"""

from __future__ import annotations

import argparse
import inspect
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

README_START = "<!-- operators:start -->"
README_END = "<!-- operators:end -->"

#: the hand-written docs page that walks through each stage type (relative to docs/)
GUIDES = {
    "source": "inputs-outputs.md", "demo": "demo-data.md", "adapt": "adapt.md", "generate": "generate.md",
    "self_instruct": "self-instruct.md", "evolve": "evolution.md", "filter": "cleaning.md",
    "dedup": "cleaning.md", "decontaminate": "cleaning.md", "mix": "mix.md", "prefs": "prefs.md",
    "pseudo_label": "pseudo-label.md", "export": "export.md", "push": "push.md",
}


def _operators() -> dict[str, type[BaseModel]]:
    """Stage type → its spec model, in the registry's order."""
    from synth.run.adapters import registry

    return {name: adapter.Spec for name, adapter in registry().items()}


def summary(model: type[BaseModel], stage_type: str | None = None) -> str:
    """The first paragraph of a model's docstring (or of the nearest base's that has one); for a stage
    type without any, its engine as the stage registry's table names it."""
    from synth.run.recipe import StageSpec

    for cls in model.__mro__:
        if cls in (StageSpec, BaseModel, object):
            break
        doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
        if doc:
            return " ".join(doc.split("\n\n")[0].split()).replace("``", "`")
    return _engines().get(stage_type or "", "")


def _engines() -> dict[str, str]:
    """Stage type → 'Runs ENGINE' from the table in `synth.run.adapters`' docstring."""
    import synth.run.adapters as adapters

    engines = {}
    for line in (adapters.__doc__ or "").splitlines():
        parts = line.split("  ")
        words = [p.strip() for p in parts if p.strip()]
        if len(words) == 3 and not line.startswith(("=", "type ")):
            engines[words[0]] = f"Runs {words[1]}."
    return engines


def type_name(annotation: Any) -> str:
    """A short, readable spelling of a field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(models) > 3:  # a tagged union of item models (a filter chain's items)
            return "one of " + ", ".join(_tag(m) for m in models)
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _tag(model: type[BaseModel]) -> str:
    """The discriminator value of a tagged item model (its single-value `name` or `type` literal)."""
    for key in ("name", "type", "backend"):
        field = model.model_fields.get(key)
        if field is not None and typing.get_origin(field.annotation) is typing.Literal:
            return str(typing.get_args(field.annotation)[0])
    return model.__name__


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    if isinstance(value, BaseModel):
        value = value.model_dump()
    text = repr(value)
    return f"`{text}`" if len(text) <= 60 else f"`{text[:57]}...`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def fields_table(model: type[BaseModel], skip: tuple[str, ...] = ()) -> str:
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        rows.append(f"| `{name}` | {_cell(type_name(field.annotation))} | {_cell(default_text(field))} "
                    f"| {_cell(field.description or '')} |")
    return "\n".join(rows)


def operator_page(name: str, model: type[BaseModel]) -> str:
    guide = f" How it works, with examples: [the guide](../{GUIDES[name]})." if name in GUIDES else ""
    return (f"# `{name}`\n\n{summary(model, name)}\n\n"
            f"In a recipe: `{{type: {name}, name: OUTPUT, ...}}` under `stages:` "
            f"(see the [recipe reference](../reference/recipe.md)).{guide}\n\n"
            f"## Fields\n\n{fields_table(model, skip=('type',))}\n")


def operators_index(operators: dict[str, type[BaseModel]]) -> str:
    rows = ["| type | what it does |", "|---|---|"]
    rows += [f"| [`{name}`]({name}.md) | {_cell(summary(model, name))} |" for name, model in operators.items()]
    return ("# Operators\n\nEvery stage type a recipe's `stages:` takes, with its fields and defaults "
            "(generated from each one's config model).\n\n" + "\n".join(rows) + "\n")


def recipe_reference(operators: dict[str, type[BaseModel]]) -> str:
    from synth.run.recipe import Recipe, StageResources, StageSpec, backend_spec_types

    openai_spec, local_spec = backend_spec_types()
    types_line = ", ".join(f"[`{name}`](../operators/{name}.md)" for name in operators)
    return "\n\n".join([
        "# Recipe reference",
        "A recipe is one YAML file that `synth run` runs (see [Recipes](../recipes.md) for a worked example). "
        "Every mapping rejects unknown keys.",
        "## Top level", fields_table(Recipe),
        "## Backends",
        "Each entry of `backends:` is a named backend; a stage picks one with `backend: NAME` "
        "(`default` unless it says). Secrets are never written here: name the environment variable instead.",
        f"### `backend: openai`\n\n{summary(openai_spec)}", fields_table(openai_spec, skip=("backend",)),
        f"### `backend: local`\n\n{summary(local_spec)}", fields_table(local_spec, skip=("backend",)),
        "## Stages",
        f"Every stage has these fields; its `type` (one of {types_line}) adds its own.",
        fields_table(StageSpec, skip=("type",)),
        f"### `resources`\n\n{summary(StageResources)}", fields_table(StageResources),
    ]) + "\n"


def generated_pages() -> dict[str, str]:
    """Relative doc path → markdown for every generated page."""
    operators = _operators()
    pages = {"operators/index.md": operators_index(operators),
             "reference/recipe.md": recipe_reference(operators)}
    for name, model in operators.items():
        pages[f"operators/{name}.md"] = operator_page(name, model)
    return pages


def readme_table() -> str:
    """The README's operator table: each type, what it does, a link to its docs page."""
    rows = ["| operator | what it does |", "|---|---|"]
    rows += [f"| [`{name}`](docs/operators/{name}.md) | {_cell(summary(model, name))} |"
             for name, model in _operators().items()]
    return "\n".join(rows)


def rewrite_readme(path: Path) -> bool:
    """Replace the text between the operator markers; True when the file changed."""
    text = path.read_text(encoding="utf-8")
    if text.count(README_START) != 1 or text.count(README_END) != 1:
        raise SystemExit(f"error: {path}: needs one '{README_START}' line and one '{README_END}' line")
    head, rest = text.split(README_START)
    _, tail = rest.split(README_END)
    new = f"{head}{README_START}\n{readme_table()}\n{README_END}{tail}"
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synth.core.docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", type=Path, help="rewrite this README's operator table in place")
    parser.add_argument("--out", type=Path, help="write the generated pages under this folder")
    args = parser.parse_args(argv)
    if args.readme:
        changed = rewrite_readme(args.readme)
        print(f"{args.readme}: operator table {'updated' if changed else 'already up to date'}")
    if args.out:
        for rel, content in generated_pages().items():
            target = args.out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        print(f"wrote the generated pages under {args.out}")
    if not (args.readme or args.out):
        parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
