"""The runner: ``synth run RECIPE.yaml`` — one recipe from raw sources to finished sets.

- `synth.run.spec`: what a recipe is made of (stage and backend specs);
- `synth.run.recipe`: recipes (YAML → pydantic) through `synth.recipe_file` (overrides, errors at file:line);
- `synth.run.dag`: wiring checks and stage order;
- `synth.run.adapters`: one adapter per stage type over the engines' library code;
- `synth.run.shards`: shard planning by record id, shard writing with markers, assembly;
- `synth.run.chain`: a shard's default body (an adapter's engine stages into the writer);
- `synth.run.executors`: local processes and Ray;
- `synth.run.manifest`: fingerprints and ``manifest.json``;
- `synth.run.runner`: one run of the stages; `synth.run.loop`: a closed loop's rounds;
- `synth.run.start`: `run_recipe`, the entry point (a loop or one run); `synth.run.dry`: ``--dry-run``;
- `synth.run.status`: ``synth runs`` and ``synth run --status``.
"""

from synth.run.recipe import load_recipe
from synth.run.runner import RunOptions
from synth.run.start import run_recipe

__all__ = ["RunOptions", "load_recipe", "run_recipe"]
