"""Evolution engines: Evol-Instruct (text) and MMEvol (image-text) on one round loop.

- `elimination`: the rules that eliminate failed evolutions, and the judge's verdicts (matched by id,
  checked item by item);
- `operators`: deterministic, weighted operator choice and ``NAME=W,...`` weights;
- `report`: the end-of-run counts;
- `base`: versions, the shared config and `EvolutionStage` (the round loop: evolve, rules, judge, finish);
- `evol_instruct`, `mmevol`: the two engines (prompts, parsing, engine rules);
- `driver`: the engine registry and `evolve_dataset` (reader → stage → writer).

Nothing here imports this package's `__init__`, so the modules form a tree, not a circle.
"""
