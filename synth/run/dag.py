"""The recipe as a graph: stages are nodes, a stage reading another's output is an edge.

`check_wiring` turns every wiring mistake into an error at its line: a name used twice, a reference to an
output no stage writes, a backend the recipe does not define, a cycle. `order` is the stages in an order
where each comes after everything it reads (ties keep the recipe's order, so runs are reproducible).
"""

from __future__ import annotations

from synth.run.spec import DEFAULT_BACKEND, Recipe, YamlDoc, check_name, issue


def dependencies(recipe: Recipe) -> dict[str, list[str]]:
    """Stage name → names of the outputs it reads (in the order it names them)."""
    return {stage.name: [ref for _loc, ref in stage.references()] for stage in recipe.stages}


def check_wiring(recipe: Recipe, doc: YamlDoc) -> None:
    seen: dict[str, int] = {}
    for i, stage in enumerate(recipe.stages):
        check_name(doc, ("stages", i, "name"), stage.name)
        if stage.name in seen:
            raise issue(doc, ("stages", i, "name"),
                        f"'{stage.name}' also names stages.{seen[stage.name]}; each stage needs its own name")
        seen[stage.name] = i
    names = ", ".join(seen)
    from synth.run.adapters import registry

    adapters = registry()
    for i, stage in enumerate(recipe.stages):
        for loc, ref in stage.references():
            if ref == stage.name:
                raise issue(doc, ("stages", i, *loc), f"stage '{stage.name}' cannot read its own output")
            if ref not in seen:
                close = _close(ref, list(seen))
                raise issue(doc, ("stages", i, *loc),
                            f"no stage named '{ref}'{close} (outputs: {names})")
            target = recipe.stages[seen[ref]]
            if adapters[target.type].output != "dataset":
                raise issue(doc, ("stages", i, *loc),
                            f"'{ref}' is a {target.type} stage: it writes files, not a dataset a stage can read")
        for loc, backend in stage.backends_used():
            if backend not in recipe.backends and backend != DEFAULT_BACKEND:
                defined = ", ".join(recipe.backends) or "none"
                raise issue(doc, ("stages", i, *loc),
                            f"no backend '{backend}' under 'backends:' (defined: {defined})")
    cycle = find_cycle(recipe)
    if cycle:
        first = seen[cycle[0]]
        path = " → ".join([*cycle, cycle[0]])
        loc, _ = next((loc, ref) for loc, ref in recipe.stages[first].references() if ref == cycle[1 % len(cycle)])
        raise issue(doc, ("stages", first, *loc), f"cycle: {path}; a stage may only read outputs that do not depend on it")


def _close(name: str, names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def find_cycle(recipe: Recipe) -> list[str] | None:
    """One cycle as a list of stage names (in reading order), or None."""
    deps = dependencies(recipe)
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for dep in deps.get(name, []):
            if state.get(dep) == 1:
                return stack[stack.index(dep):]
            if dep in deps and state.get(dep) is None:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[name] = 2
        return None

    for stage in recipe.stages:
        if state.get(stage.name) is None:
            found = visit(stage.name)
            if found:
                # reading order: a stage, then what it reads
                return list(found)
    return None


def order(recipe: Recipe) -> list[str]:
    """Topological order; among ready stages, the one listed first in the recipe goes first."""
    deps = dependencies(recipe)
    position = {stage.name: i for i, stage in enumerate(recipe.stages)}
    done: list[str] = []
    remaining = list(position)
    while remaining:
        ready = [n for n in remaining if all(d in done for d in deps[n])]
        if not ready:  # check_wiring refuses cycles; this is a guard
            raise RuntimeError(f"cycle among {remaining}")
        nxt = min(ready, key=position.__getitem__)
        done.append(nxt)
        remaining.remove(nxt)
    return done


def downstream(recipe: Recipe, names: set[str]) -> set[str]:
    """The given stages and every stage that reads from them, directly or not."""
    deps = dependencies(recipe)
    out = set(names)
    changed = True
    while changed:
        changed = False
        for name, reads in deps.items():
            if name not in out and any(r in out for r in reads):
                out.add(name)
                changed = True
    return out
