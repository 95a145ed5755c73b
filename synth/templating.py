"""jinja2 rendering for prompts and adaptation templates: sandboxed, and strict about unknown variables.

Templates are user-editable files, so they run in a `SandboxedEnvironment`; a variable a template uses but
the record lacks is an error naming the template, its line and the record (never a silent empty string).
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from typing import Any

import jinja2
import jinja2.sandbox
from jinja2.sandbox import SandboxedEnvironment

from synth.errors import SynthError
from synth.paths import templates_dir


class TemplateError(SynthError):
    pass


def _make_env(loader: jinja2.BaseLoader | None = None) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["letter"] = lambda i: "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[int(i)]
    env.filters["fmt"] = lambda value, spec: format(value, spec)
    return env


@functools.lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    """The shared environment; file templates are looked up under `templates/`."""
    return _make_env(jinja2.FileSystemLoader(str(templates_dir())))


def _template_line(exc: BaseException, filename: str | None) -> int | None:
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        name = frame.f_code.co_filename
        if name == "<template>" or (filename and name == filename):
            line = lineno
    return line


def compile_template(source: str, name: str) -> jinja2.Template:
    """Compile template text (e.g. a variant from a YAML template set); syntax errors name `name`."""
    try:
        return environment().from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"{name}, line {e.lineno}: template syntax error: {e.message}") from e


# What the sandbox refuses to read, whatever the object: private and dunder names, and the attributes of
# code, frames and generators (`is_internal_attribute`). `mro` is refused on classes.
_UNSAFE_NAMES = (
    jinja2.sandbox.UNSAFE_FUNCTION_ATTRIBUTES
    | jinja2.sandbox.UNSAFE_METHOD_ATTRIBUTES
    | jinja2.sandbox.UNSAFE_GENERATOR_ATTRIBUTES
    | jinja2.sandbox.UNSAFE_COROUTINE_ATTRIBUTES
    | jinja2.sandbox.UNSAFE_ASYNC_GENERATOR_ATTRIBUTES
    | {"mro"}
)


def unsafe_attributes(ast: jinja2.nodes.Template) -> list[tuple[str, int]]:
    """``(name, line)`` of every attribute a template reads that the sandbox refuses (``x.__class__``,
    ``x['__class__']``, ``x | attr('_y')``): found without rendering, so a variant no record draws is
    caught as well."""
    from jinja2 import nodes

    def in_source_order(node: nodes.Node):  # children first: `a.__x__.__y__` gives __x__, then __y__
        for child in node.iter_child_nodes():
            yield from in_source_order(child)
        yield node

    found = []
    for node in in_source_order(ast):
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value
        elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args and isinstance(node.args[0], nodes.Const):
            name = node.args[0].value
        else:
            continue
        if isinstance(name, str) and (name.startswith("_") or name in _UNSAFE_NAMES):
            found.append((name, node.lineno))
    return found


def load_template(path: str) -> jinja2.Template:
    """A template file under `templates/` by relative path, e.g. ``prompts/self_instruct.jinja``."""
    try:
        return environment().get_template(path)
    except jinja2.TemplateNotFound as e:
        raise TemplateError(f"template '{path}' not found under {templates_dir()}") from e
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"{e.filename or path}:{e.lineno}: template syntax error: {e.message}") from e


def render(template: jinja2.Template, variables: dict[str, Any], name: str, record_id: str | None = None) -> str:
    """Render with a clear error (template name, line, record id) for undefined variables and bad calls."""
    try:
        return template.render(variables)
    except jinja2.TemplateError as e:
        _raise_render_error(e, template, variables, name, record_id)


def _raise_render_error(e: jinja2.TemplateError, template, variables: dict, name: str, record_id: str | None):
    rec = f" (record {record_id})" if record_id else ""
    if isinstance(e, jinja2.UndefinedError):
        line = _template_line(e, template.filename)
        where = f"{name}" + (f", line {line}" if line else "")
        raise TemplateError(
            f"{where}: unknown template variable: {e.message}{rec}; available: {', '.join(sorted(variables))}"
        ) from e
    raise TemplateError(f"{name}: template error: {e}{rec}") from e


def fast_renderer(template: jinja2.Template, name: str) -> Callable[..., str]:
    """`render` for hot loops (same output, same errors): ``fn(variables, record_id=None) -> str``.

    `Template.render` merges the environment globals (a ChainMap) into every context and builds a new
    `Context` (with its own eval context) per call, which costs more than rendering a short template.
    Here the globals are merged once, and contexts are reused: each call takes one from a small pool
    (so nested and threaded calls still get their own) and resets everything a render may change.
    """
    env = template.environment
    globals_ = dict(template.globals)
    root, blocks, context_class = template.root_render_func, template.blocks, env.context_class
    template_name = template.name
    autoescape = env.autoescape(template_name) if callable(env.autoescape) else env.autoescape
    pool: list = []  # idle contexts; list.pop/append are atomic, so threads never share one

    def render_fast(variables: dict[str, Any], record_id: str | None = None) -> str:
        try:
            context = pool.pop()
        except IndexError:  # none idle: the first call, or a nested or concurrent one
            context = context_class(env, {}, template_name, blocks)
        # Reset what rendering writes: top-level {% set %}, exports, inherited blocks, autoescape state.
        context.parent = {**globals_, **variables}
        context.vars = {}
        context.exported_vars = set()
        context.blocks = {k: [v] for k, v in blocks.items()}
        eval_ctx = context.eval_ctx
        eval_ctx.autoescape = autoescape
        eval_ctx.volatile = False
        try:
            try:
                return "".join(root(context))
            except Exception:  # noqa: BLE001 - jinja's own render does the same
                env.handle_exception()  # re-raises with the template's own line numbers
        except jinja2.TemplateError as e:
            _raise_render_error(e, template, variables, name, record_id)
        finally:
            context.parent = None  # do not keep the record's values alive
            pool.append(context)

    return render_fast


def render_file(path: str, record_id: str | None = None, **variables: Any) -> str:
    """Render a template file under `templates/` (prompts, cards)."""
    return render(load_template(path), variables, path, record_id)
