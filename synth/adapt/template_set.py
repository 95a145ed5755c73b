"""Template sets: YAML files that say how to turn rows of a labelled dataset into instruction samples.

A template set names a task, maps template variables to source columns (dotted paths reach into structs
and lists: ``answers.text.0``), lists several paraphrased instruction templates (one is picked per record,
deterministically) and an answer template. List-valued fields (QA pairs, objects) are either expanded
(one sample per item) or grouped into one multi-turn conversation per image, LLaVA-style.
"""

from __future__ import annotations

import difflib
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from jinja2 import meta, nodes
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from synth.errors import SynthError, validation_message
from synth.io import read_yaml
from synth.paths import templates_dir
from synth.templating import TemplateError, compile_template, environment, fast_renderer, unsafe_attributes

MIN_VARIANTS = 5


class ItemsConfig(BaseModel):
    """How a list-valued variable becomes samples. Each item's keys become template variables (and ``item``)."""

    model_config = ConfigDict(extra="forbid")
    variable: str = Field(description="template variable that holds the list (e.g. qa, objects)")
    mode: Literal["expand", "group"] = Field(
        "expand", description="expand: one sample per item; group: one multi-turn conversation per record"
    )
    max_turns: int = Field(
        8, ge=1, description="group mode: a longer list is split into several conversations"
    )
    unique: str | None = Field(
        None, description="drop items whose value for this key repeats within a record (ambiguous references)"
    )


class MultipleChoiceConfig(BaseModel):
    """Shuffle an item's options deterministically and expose the answer's letter."""

    model_config = ConfigDict(extra="forbid")
    options: str = Field("options", description="variable holding the list of option strings")
    answer: str = Field("answer", description="variable holding the correct option's text")


class ClassesConfig(BaseModel):
    """A classification-style set: which variable holds each record's class, and (optionally) the class list.

    The templates see the list as ``classes``. It comes from, first to last: ``--classes`` (recipe
    ``classes:``), the names of a ClassLabel column, ``names`` here, the distinct labels of the data.
    """

    model_config = ConfigDict(extra="forbid")
    variable: str = Field(description="the template variable that holds each record's class")
    names: list[str] | None = Field(
        None, min_length=1, description="the class list, for a set written for one dataset"
    )
    ignore_case: bool = Field(
        False, description="a label matches a class whatever its case; the answer is the name as listed"
    )


class TemplateSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    task: str
    description: str
    modality: Literal["image", "text"]
    variables: dict[str, str] = Field(
        description="template variable -> source column (dotted paths allowed); 'image' is the image column"
    )
    constants: dict[str, Any] = Field(default_factory=dict)
    system: str | None = None
    instructions: list[str] = Field(min_length=MIN_VARIANTS)
    answer: str
    image_position: Literal["before", "after", "none"] | None = None
    items: ItemsConfig | None = None
    multiple_choice: MultipleChoiceConfig | None = None
    classes: ClassesConfig | None = None

    # Where the set came from (file path), for error messages; not part of the YAML.
    origin: str = Field("<memory>", exclude=True)

    @model_validator(mode="after")
    def _check(self) -> TemplateSet:
        if self.image_position is None:
            self.image_position = "before" if self.modality == "image" else "none"
        if self.modality == "image":
            if self.image_position == "none":
                raise ValueError("an image template set needs image_position 'before' or 'after'")
            if "image" not in self.variables:
                raise ValueError("an image template set must map the variable 'image' to the image column")
        elif self.image_position != "none":
            raise ValueError("a text template set cannot place an image (image_position must be 'none')")
        if self.items and self.items.variable not in self.variables:
            raise ValueError(f"items.variable '{self.items.variable}' is not one of the mapped variables")
        if self.classes is not None:
            if self.classes.variable not in self.variables:
                raise ValueError(f"classes.variable '{self.classes.variable}' is not one of the mapped variables")
            if "classes" in self.constants or "classes" in self.variables:
                raise ValueError("'classes' is the class list of `classes:`; it cannot be a constant or variable")
        clash = set(self.constants) & set(self.variables)
        if clash:
            raise ValueError(f"names used both as constants and variables: {', '.join(sorted(clash))}")
        return self

    @property
    def multimodal(self) -> bool:
        return self.modality == "image"

    @property
    def columns(self) -> dict[str, str]:
        """Variable -> top-level source column it reads."""
        return {var: path.split(".", 1)[0] for var, path in self.variables.items()}

    def with_mapping(self, overrides: dict[str, str]) -> TemplateSet:
        """A copy with some variables mapped to other columns (the CLI's ``--map var=column``)."""
        unknown = sorted(set(overrides) - set(self.variables))
        if unknown:
            raise SynthError(
                f"--map {unknown[0]}: template set '{self.name}' has no variable '{unknown[0]}' "
                f"(variables: {', '.join(sorted(self.variables))})"
            )
        return self.model_copy(update={"variables": {**self.variables, **overrides}})

    def templates(self) -> list[tuple[str, str]]:
        """Every template of the set as (key, source): ``instructions[i]``, ``answer``, ``system``."""
        out = [(f"instructions[{i}]", t) for i, t in enumerate(self.instructions)]
        out.append(("answer", self.answer))
        if self.system:
            out.append(("system", self.system))
        return out

    def provided_names(self) -> set[str]:
        """Names every record's templates can use, whatever the data: mapped variables (the image itself
        is not a template variable), constants, and the names items and multiple choice add."""
        names = set(self.constants) | {v for v in self.variables if not (v == "image" and self.multimodal)}
        if self.items is not None:
            names |= {"item", "index"}
        if self.multiple_choice is not None:
            names |= {"answer_index", "answer_letter"}
        if self.classes is not None:
            names.add("classes")
        return names

    def check_safe(self) -> None:
        """No variant may read what the sandbox refuses (``x.__class__``): it would fail only on the records
        that draw it (and with --on-error skip, quietly drop them), so it fails when the set loads."""
        for key, source in self.templates():
            found = unsafe_attributes(environment().parse(source))
            if found:
                names = ", ".join(dict.fromkeys(f"'{name}'" for name, _ in found))
                raise TemplateError(
                    f"template set '{self.name}' ({self.origin}) {key}, line {found[0][1]}: unsafe attribute "
                    f"access {names} (the template sandbox refuses names starting with '_' and interpreter "
                    "internals); read the value through a mapped variable instead"
                )

    def check_variables(self, item_fields: set[str] | None = None) -> None:
        """Every variant's variables must be defined, so a typo fails before any record is read (not only
        when a record happens to draw that variant). Names an item set does not define are taken to be
        keys of its items; with `item_fields` (the keys the data's items have) they are checked too.
        Every variant is checked against the sandbox too (`check_safe`)."""
        self.check_safe()
        provided = self.provided_names()
        where = f"template set '{self.name}' ({self.origin})"
        needed: list[tuple[str, str, int | None]] = []  # (template key, variable, line)
        if self.multiple_choice is not None:  # the renderer reads these two for every item
            needed += [
                ("multiple_choice.options", self.multiple_choice.options, None),
                ("multiple_choice.answer", self.multiple_choice.answer, None),
            ]
        for key, source in self.templates():
            ast = environment().parse(source)
            needed += [
                (key, name, _name_line(ast, name)) for name in sorted(meta.find_undeclared_variables(ast))
            ]
        for key, name, line in needed:
            if name in provided:
                continue
            if self.items is not None and (item_fields is None or name in item_fields):
                continue
            defined = ", ".join(sorted(provided | (item_fields or set()))) or "none"
            if self.items is not None:
                keys = ", ".join(sorted(item_fields or ())) or "no keys"
                hint = (
                    f"the items of '{self.items.variable}' have: {keys}; fix the name or map another column"
                )
            else:
                hint = "add it under 'variables:' (variable: column) or 'constants:', or fix the name"
            at = f", line {line}" if line else ""
            raise TemplateError(
                f"{where} {key}{at}: undefined template variable '{name}' (defined: {defined}); {hint}"
            )

    # Compiled templates are built once per process (workers compile their own; see __getstate__).
    @cached_property
    def compiled(self) -> CompiledTemplates:
        return CompiledTemplates(self)

    def __getstate__(self):
        state = super().__getstate__()
        state["__dict__"] = {k: v for k, v in state["__dict__"].items() if k != "compiled"}
        return state


class CompiledTemplates:
    """The set's templates compiled once, as render functions ``fn(variables, record_id) -> str``.

    Names used in errors say which set, file, key and variant.
    """

    def __init__(self, ts: TemplateSet):
        where = f"template set '{ts.name}' ({ts.origin})"
        self.instructions = [
            self._compile(t, f"{where} instructions[{i}]") for i, t in enumerate(ts.instructions)
        ]
        self.answer = self._compile(ts.answer, f"{where} answer")
        self.system = self._compile(ts.system, f"{where} system") if ts.system else None

    @staticmethod
    def _compile(source: str, name: str):
        template = compile_template(source, name)
        render = fast_renderer(template, name)
        if is_plain_text(template.environment.parse(source)):
            # No variables, filters or tags (e.g. most system prompts): render once, not once per record.
            text = render({})
            return lambda variables, record_id=None: text
        return render


def _name_line(ast: nodes.Template, name: str) -> int | None:
    for node in ast.find_all(nodes.Name):
        if node.name == name and node.ctx == "load":
            return node.lineno
    return None


def is_plain_text(ast: nodes.Template) -> bool:
    """True when a parsed template is literal text only, so every render gives the same string."""
    return all(
        isinstance(node, nodes.Output) and all(isinstance(n, nodes.TemplateData) for n in node.nodes)
        for node in ast.body
    )


# ---------------------------------------------------------------- finding and loading


def shipped_dir() -> Path:
    return templates_dir() / "adapt"


def shipped_names() -> list[str]:
    return sorted(p.stem for p in shipped_dir().glob("*.yaml"))


def load_template_set_file(path: str | Path) -> TemplateSet:
    path = Path(path)
    data = read_yaml(path, "template set")
    if not isinstance(data, dict):
        raise SynthError(f"{path}: a template set must be a YAML mapping (name, task, instructions, ...)")
    try:
        ts = TemplateSet.model_validate({**data, "origin": str(path)})
    except ValidationError as e:
        raise SynthError(validation_message(e, str(path))) from e
    _ = ts.compiled  # compile now: syntax errors surface before any data is read
    ts.check_variables()  # and so do undefined variables, in every variant
    return ts


def load_template_set(name_or_path: str | Path) -> TemplateSet:
    """A shipped set by name (``caption_brief``) or a YAML file by path."""
    text = str(name_or_path)
    path = Path(text)
    if is_set_path(text):
        if not path.is_file():
            raise SynthError(f"{path}: no such template set file")
        return load_template_set_file(path)
    shipped = shipped_dir() / f"{text}.yaml"
    if shipped.is_file():
        return load_template_set_file(shipped)
    raise SynthError(unknown_set_message(text))


def is_set_path(text: str) -> bool:
    """Whether a -t / recipe `template` value names a YAML file rather than a shipped set."""
    return Path(text).suffix in (".yaml", ".yml") or Path(text).is_file()


def unknown_set_message(name: str) -> str:
    close = difflib.get_close_matches(name, shipped_names(), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return (
        f"unknown template set '{name}' ({hint}known: {', '.join(shipped_names())}); "
        "pass a shipped name or a path to a .yaml file"
    )


def list_template_sets() -> list[TemplateSet]:
    return [load_template_set_file(shipped_dir() / f"{n}.yaml") for n in shipped_names()]
