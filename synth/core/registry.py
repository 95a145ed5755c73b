"""Every operator by name: synth's own and those of installed plugin packages.

synth's own: each module of the packages in `BUILTIN_PACKAGES` may list its operators in a module-level
``OPERATOR_CLASSES`` tuple (adding one inside synth is that module plus its test). Plugins: a distribution lists
its operators under the entry-point group ``synth.operators``::

    [project.entry-points."synth.operators"]
    shouting = "my_package.shouting:Shouting"     # a class, or a module with an OPERATOR_CLASSES tuple

and they appear in the CLI, in recipes, in ``synth operators`` and in the docs with no edit to synth. A
plugin may not take a built-in's name; a plugin that fails to import is an error naming it.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from importlib.metadata import entry_points

from synth.core.operator import Stage, check_operator
from synth.errors import SynthError

ENTRY_POINT_GROUP = "synth.operators"
#: packages whose modules may define ``OPERATOR_CLASSES`` (walked, so a new module needs no other edit)
BUILTIN_PACKAGES = ("synth.clean", "synth.generate", "synth.prefs", "synth.ops", "synth.adapt")

_OPERATORS: dict[str, type[Stage]] = {}
_ORIGIN: dict[str, str] = {}  # name -> "synth" or the plugin distribution
_LOCK = threading.RLock()


def _listed(module) -> tuple:
    found = getattr(module, "OPERATOR_CLASSES", ())
    return tuple(found) if isinstance(found, (list, tuple)) else ()


def _builtin() -> list[tuple[type[Stage], str]]:
    found = []
    for package_name in BUILTIN_PACKAGES:
        try:
            package = importlib.import_module(package_name)
        except ModuleNotFoundError as e:
            if e.name == package_name:
                continue
            raise
        found += [(cls, f"{package_name}") for cls in _listed(package)]
        for info in pkgutil.walk_packages(package.__path__, package_name + "."):
            module = importlib.import_module(info.name)
            found += [(cls, info.name) for cls in _listed(module)]
    return found


def _plugins() -> list[tuple[type[Stage], str]]:
    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        where = f"plugin '{ep.name}' ({ep.value}"
        dist = getattr(ep, "dist", None)
        where += f" in {dist.name})" if dist is not None else ")"
        try:
            loaded = ep.load()
        except Exception as e:  # a broken plugin names itself, not a traceback
            raise SynthError(f"{where}: cannot be imported: {type(e).__name__}: {e}; "
                             "fix or uninstall that package") from None
        classes = _listed(loaded) if not isinstance(loaded, type) else (loaded,)
        if not classes:
            raise SynthError(f"{where}: names neither an operator class nor a module with an OPERATOR_CLASSES tuple")
        found += [(cls, where) for cls in classes]
    return found


def operators() -> dict[str, type[Stage]]:
    """Operator name → class (synth's own first, then plugins), loaded on first use."""
    with _LOCK:
        if not _OPERATORS:
            table: dict[str, type[Stage]] = {}
            origin: dict[str, str] = {}
            for cls, where in _builtin():
                check_operator(cls, where)
                if cls.name in table and table[cls.name] is not cls:
                    raise SynthError(f"{where}: operator name '{cls.name}' is taken by {origin[cls.name]}")
                table[cls.name], origin[cls.name] = cls, "synth"
            for cls, where in _plugins():
                check_operator(cls, where)
                if cls.name in table and table[cls.name] is not cls:
                    taken = "a synth operator" if origin[cls.name] == "synth" else origin[cls.name]
                    raise SynthError(f"{where}: operator name '{cls.name}' is taken by {taken}; rename it")
                table[cls.name], origin[cls.name] = cls, where
            _ORIGIN.update(origin)
            _OPERATORS.update(table)
        return dict(_OPERATORS)


def origin(name: str) -> str:
    """"synth" for a built-in operator, else the plugin that registered it."""
    operators()
    return _ORIGIN.get(name, "?")


def get(name: str) -> type[Stage]:
    table = operators()
    if name not in table:
        import difflib

        close = difflib.get_close_matches(name, list(table), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SynthError(f"unknown operator '{name}'{hint}; `synth operators` lists them")
    return table[name]
