"""The runner: ``synth run RECIPE.yaml`` — one recipe from raw sources to finished sets.

- `synth.run.recipe`: recipes (YAML → pydantic), overrides, errors at file:line;
- `synth.run.dag`: wiring checks and stage order;
- `synth.run.adapters`: one adapter per stage type over the engines' library code;
- `synth.run.shards`: shard planning by record id, shard writing with markers, assembly;
- `synth.run.executors`: local processes and Ray;
- `synth.run.manifest`: fingerprints and ``manifest.json``;
- `synth.run.runner`: the run itself (`run_recipe`); `synth.run.dry`: ``--dry-run``;
- `synth.run.status`: ``synth runs`` and ``synth run --status``.
"""

from synth.run.recipe import load_recipe
from synth.run.runner import RunOptions, run_recipe

__all__ = ["RunOptions", "load_recipe", "run_recipe"]
