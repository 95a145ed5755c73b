"""Docs pages made from the same models the recipes and the CLI use: a page per stage type (every operator,
synth's own and plugins'), the operators index and the recipe reference. The docs site's hook
(docs/hooks.py) adds them at build time; ``python -m synth.run.docs --readme README.md`` rewrites the
README's operator table (between ``<!-- operators:start -->`` and ``<!-- operators:end -->``).
"""

from __future__ import annotations

import argparse
import inspect
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

#: keys every stage has (documented once on the recipe page, not on every operator page)
STAGE_KEYS = ("type", "name", "shard_size", "resources")


def _type_text(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation)
    text = re.sub(r"typing\.|synth\.[\w.]+\.|pydantic\.[\w.]+\.|<class '|'>", "", text)
    text = text.replace("Annotated[str, FilePath]", "path").replace("Annotated[str, NameOrFile]", "name or path")
    text = text.replace("NoneType", "None")
    return text.replace("|", "&#124;")


def _default_text(info) -> str:
    if info.is_required():
        return "**required**"
    if info.default_factory is not None:
        try:
            return f"`{info.default_factory()!r}`"
        except TypeError:
            return "(computed)"
    return f"`{info.default!r}`"


def _cell(text: str) -> str:
    return " ".join((text or "").split()).replace("|", "&#124;")


def fields_table(model: type[BaseModel], skip: tuple[str, ...] = STAGE_KEYS) -> str:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        rows.append(f"| `{name}` | {_type_text(info.annotation)} | {_cell(_default_text(info))} | "
                    f"{_cell(info.description or '')} |")
    return "\n".join(rows)


def _example_yaml(type_: str, spec: type[BaseModel]) -> str:
    lines = [f"  - type: {type_}", f"    name: my_{type_}"]
    if "input" in spec.model_fields:
        lines.append("    input: previous_stage")
    for name, info in spec.model_fields.items():
        if name in (*STAGE_KEYS, "input") or not info.is_required():
            continue
        lines.append(f"    {name}: ...")
    return "stages:\n" + "\n".join(lines)


def stage_page(type_: str, adapter) -> str:
    """The reference page of one stage type."""
    from synth.core.operator import class_name, command_name, kind_of

    cls = getattr(adapter, "cls", None)
    spec = adapter.Spec
    doc = inspect.cleandoc((cls.__doc__ if cls is not None else spec.__doc__ or type(adapter).__doc__) or "")
    doc = doc.replace("``", "`")
    title = f"# `{type_}`\n\n"
    parts = [title + (doc or "(no description)")]
    if cls is not None:
        from synth.core.registry import origin

        where = origin(type_)
        parts.append(f"**Kind:** {kind_of(cls)} operator · **from:** "
                     f"{'synth' if where == 'synth' else where}")
        if getattr(cls, "reads", ()):
            parts.append("**Reads:** " + ", ".join(f"`{c}`" for c in cls.reads) +
                         ("  \n**Writes:** " + ", ".join(f"`{c}`" for c in cls.writes) if cls.writes else ""))
    parts.append("## Options\n\n" + fields_table(spec))
    parts.append("## In a recipe\n\n```yaml\n" + _example_yaml(type_, spec) + "\n```")
    if cls is not None and getattr(cls, "cli_command", True):
        parts.append(f"## From the command line\n\n```bash\nsynth {command_name(cls)} DATASET -o OUT "
                     f"[--option VALUE ...]\nsynth {command_name(cls)} --help\n```")
    parts.append(f"## From Python\n\n```python\nimport synth\n\nstep = synth.ops.{class_name(type_)}(...)\n```")
    return "\n\n".join(parts) + "\n"


def _stage_types() -> dict[str, Any]:
    from synth.run.adapters import registry

    return dict(sorted(registry().items()))


def operator_rows() -> list[tuple[str, str, str]]:
    """(type, kind, summary) of every stage type."""
    from synth.core.operator import kind_of, summary

    rows = []
    for type_, adapter in _stage_types().items():
        cls = getattr(adapter, "cls", None)
        kind = kind_of(cls) if cls is not None else ("source" if adapter.source else "stage")
        text = summary(cls if cls is not None else (adapter.Spec if adapter.Spec.__doc__ else type(adapter)))
        rows.append((type_, kind, text))
    return rows


def operators_table(link_prefix: str = "") -> str:
    lines = ["| type | kind | what it does |", "|---|---|---|"]
    for type_, kind, text in operator_rows():
        name = f"[`{type_}`]({link_prefix}{type_}.md)" if link_prefix is not None else f"`{type_}`"
        lines.append(f"| {name} | {kind} | {_cell(text)} |")
    return "\n".join(lines)


def recipe_page() -> str:
    from synth.run.spec import Recipe, StageSpec, backend_spec_types

    openai_spec, local_spec = backend_spec_types()
    return "\n\n".join([
        "# Recipe reference",
        "A recipe is one YAML file: `backends` (named LLM backends) and `stages` (each a stage type below, wired "
        "by names: a stage's `input` is an earlier stage's `name`). Every key is checked; an error names its "
        "file and line. `synth run RECIPE.yaml -s stages.NAME.key=value` overrides a value.",
        "## Top level\n\n" + fields_table(Recipe, skip=()),
        "## Keys every stage has\n\n" + fields_table(StageSpec, skip=()),
        "## Backends\n\n### `backend: openai`\n\n" + fields_table(openai_spec, skip=()) +
        "\n\n### `backend: local`\n\n" + fields_table(local_spec, skip=()),
        "## Stage types\n\n" + operators_table("../operators/"),
    ]) + "\n"


def generated_pages() -> dict[str, str]:
    """Relative docs path → markdown for every generated page."""
    pages = {f"operators/{type_}.md": stage_page(type_, adapter) for type_, adapter in _stage_types().items()}
    pages["operators/index.md"] = (
        "# Operators\n\nEvery stage type a recipe can name, each also a Python step (`synth.ops.Name`); operators "
        "(map, filter, aggregate, llm) also have a command, `synth NAME`. Plugins' operators appear here too. "
        "Generated from their configs.\n\n" + operators_table("") + "\n")
    pages["reference/recipe.md"] = recipe_page()
    return pages


def rewrite_readme(path: Path) -> bool:
    """Replace the README's operator table; True when the file changed."""
    text = path.read_text(encoding="utf-8")
    start, end = "<!-- operators:start -->", "<!-- operators:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"{path}: no {start} ... {end} markers")
    table = operators_table(None)  # the pages are generated at build time: no file to link to
    new = text[: text.index(start) + len(start)] + "\n" + table + "\n" + text[text.index(end):]
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readme", type=Path, help="rewrite this README's operator table")
    parser.add_argument("--out", type=Path, help="write every generated page under this folder")
    args = parser.parse_args(argv)
    if args.readme:
        print(f"{args.readme}: {'updated' if rewrite_readme(args.readme) else 'up to date'}")
    if args.out:
        for rel, text in generated_pages().items():
            (args.out / rel).parent.mkdir(parents=True, exist_ok=True)
            (args.out / rel).write_text(text, encoding="utf-8")
        print(f"wrote {len(generated_pages())} pages under {args.out}")


if __name__ == "__main__":
    main()

