"""`run_recipe`: the one entry point of ``synth run``. A recipe with a ``loop:`` block runs as rounds of
data → train → eval (`synth.run.loop`), any other as one run (`synth.run.runner`)."""

from __future__ import annotations

import os

from synth.console import Console
from synth.errors import SynthError
from synth.run.dag import downstream
from synth.run.loop import Loop
from synth.run.progress import RunView
from synth.run.runner import Runner, RunOptions, RunResult, prepare, run_dir_for


def run_recipe(path: str | os.PathLike, overrides: list[str] | None = None, options: RunOptions | None = None,
               view=None) -> RunResult:
    """Run (or resume) a recipe; see the module docs. Raises `SynthError` with one clear line."""
    options = options or RunOptions()
    plan = prepare(path, overrides)
    if plan.recipe.loop is not None and options.rerun:
        raise SynthError("--rerun does not apply to a loop; change the recipe (a changed stage reruns in every round)")
    for name in options.rerun:
        if name not in plan.specs:
            raise SynthError(f"--rerun {name}: no such stage (stages: {', '.join(plan.order)})")
    if options.rerun:
        options.rerun = sorted(downstream(plan.recipe, set(options.rerun)))
    run_dir = run_dir_for(plan, options)
    if plan.recipe.loop is not None:  # a closed loop: rounds of data → train → eval (synth.run.loop)
        return Loop(plan, run_dir, options, console=getattr(view, "console", None) or Console(stderr=True)).run()
    view = view or RunView(live=options.live)
    return Runner(plan, run_dir, options, view).run()
