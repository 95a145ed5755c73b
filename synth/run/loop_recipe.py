"""The ``loop:`` block of a recipe: rounds of data → train → evaluate, each round's model feeding the next.

```yaml
backends:
  student: {backend: local, model: loop}   # `model: loop` = the current round's model
loop:
  rounds: 3
  model: embedded                # model 0 (the base every adapter sits on); Hub id, folder or embedded
  start: {pseudo: 1}             # a stage (and what reads it) runs from this round on
  sft: {data: [labelled, pseudo], max_steps: 24}      # `synth train sft` keys; data = outputs to train on
  dpo: {data: prefs, max_steps: 20}                    # optional, after SFT, from the SFT adapter
  eval: {data: heldout, limit: 100, max_new_tokens: 8}  # the fixed held-out split
  stop: {metric: exact_match, margin: 0.01, patience: 1}
  seed: 0                        # the rounds' sampling and training (default: the recipe's seed)
  serve: {model: "{run}-round-{round}", command: ...}  # `model: loop` on an OpenAI-compatible server
```

The training keys are `synth.train`'s own (checked against `SftRecipe` / `DpoRecipe` at load time);
``model``, ``dataset``, ``output_dir`` and ``adapter`` are the loop's to set.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from synth.recipe_file import validate
from synth.run.spec import DEFAULT_BACKEND, issue

#: the `model:` value of a backend that means "the loop's current model"
LOOP_MODEL = "loop"
#: train recipe keys the loop sets itself
LOOP_OWNED_TRAIN_KEYS = ("model", "dataset", "output_dir", "adapter", "overwrite", "resume", "split")
METRICS = ("exact_match", "normalized_accuracy", "contains_accuracy", "mean_logprob_per_token")


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class LoopTrain(BaseModel):
    """One training step of a round; every key but `data` goes to `synth train` as it is."""

    model_config = ConfigDict(extra="allow")
    data: list[str] = Field(description="outputs whose rows train the round's model (train split of a mix)")

    _as_list = field_validator("data", mode="before")(_as_list)

    def train_fields(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LoopEval(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: str = Field(description="the held-out SFT output every round's model is scored on")
    preferences: str | None = Field(None, description="a held-out preference output: DPO reward accuracy")
    limit: int | None = Field(None, ge=1, description="score the first N rows only")
    max_new_tokens: int = Field(16, ge=1)
    batch_size: int = Field(8, ge=1)
    beta: float = Field(0.1, gt=0, description="DPO beta for the reward accuracy")
    base: bool = Field(True, description="also score model 0, so the first round has a change to show")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"


class LoopStop(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: Literal[METRICS] = Field("exact_match", description="the held-out score that decides")  # type: ignore[valid-type]
    margin: float = Field(0.0, ge=0, description="a round improves when it beats the best so far by more than this")
    patience: int | None = Field(None, ge=1, description="stop after this many rounds in a row without improving")


class LoopServe(BaseModel):
    """How an OpenAI-compatible backend with `model: loop` reaches each round's model."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field("{run}-round-{round}", description="the model name requests carry in round {round}")
    command: str | None = Field(
        None, description="shell command run before round k >= 1 asks the server (e.g. load model k's adapter "
                          "into vLLM); placeholders {run} {round} {model} {adapter} {merged} {base} (shell-quoted), "
                          "also in the environment as SYNTH_LOOP_RUN, SYNTH_LOOP_ROUND, ...")
    merge: bool = Field(False, description="also merge each round's adapter into a full model (ROUND/merged)")


class LoopSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rounds: int = Field(ge=1, le=100, description="at most this many rounds")
    model: str = Field("embedded", description="model 0: Hub id, folder, 'embedded', or a LoRA adapter folder")
    start: dict[str, int] = Field(default_factory=dict, description="stage → first round it runs in")
    sft: LoopTrain
    dpo: LoopTrain | None = None
    eval: LoopEval
    stop: LoopStop = Field(default_factory=LoopStop)
    serve: LoopServe = Field(default_factory=LoopServe)
    from_previous: bool = Field(True, description="round k+1 keeps training model k's adapter (false: a new "
                                                  "adapter on the base each round)")
    seed: int | None = Field(None, description="seed of the rounds: sampling of per-round stages (pseudo-labels) "
                                               "and training (LoRA init, data order, dropout); default: the "
                                               "recipe's seed. The shared data stages keep the recipe's seed, so "
                                               "`synth loop --seeds N` varies the rounds on the same data")


# ---------------------------------------------------------------- checks (at load time, with file:line)


def loop_backends(recipe) -> set[str]:
    """Names of the backends whose `model:` is the loop's model."""
    return {name for name, spec in recipe.backends.items() if getattr(spec, "model", None) == LOOP_MODEL}


def stage_backends(stage) -> set[str]:
    from synth.run.adapters import registry

    adapter = registry()[stage.type]
    names = {name for _loc, name in stage.backends_used()}
    if adapter.uses_llm(stage):
        names.add(adapter.backend_name(stage) or DEFAULT_BACKEND)
    return names


def round_stages(recipe) -> set[str]:
    """Stages that run once per round: those on a `model: loop` backend, those with a `start:` round, and
    everything that reads them. The others run once and every round reuses their output."""
    from synth.run.dag import downstream

    looped = loop_backends(recipe)
    seeds = {s.name for s in recipe.stages if stage_backends(s) & looped}
    if recipe.loop is not None:
        seeds |= set(recipe.loop.start)
    return downstream(recipe, seeds) if seeds else set()


def active_stages(recipe, round_: int) -> set[str]:
    """The per-round stages that run in round `round_` (a stage waits for its `start:` round, and so do
    the stages that read it)."""
    from synth.run.dag import downstream

    waiting = {name for name, first in (recipe.loop.start if recipe.loop else {}).items() if round_ < first}
    return round_stages(recipe) - (downstream(recipe, waiting) if waiting else set())


def check_loop(recipe, doc) -> None:
    looped = loop_backends(recipe)
    spec: LoopSpec | None = recipe.loop
    if spec is None:
        if looped:
            name = sorted(looped)[0]
            raise issue(doc, ("backends", name, "model"),
                        "'loop' is the model of a closed loop's current round; add a 'loop:' block "
                        "(rounds, sft, eval) or name a model")
        return
    names = {s.name: s for s in recipe.stages}
    per_round = round_stages(recipe)

    def check_ref(loc: tuple, ref: str, what: str) -> None:
        from synth.run.dag import _close

        if ref not in names:
            raise issue(doc, loc, f"no stage named '{ref}'{_close(ref, list(names))} ({what})")

    for ref in spec.start:
        check_ref(("loop", "start", ref), ref, "start: names stages")
    for step in ("sft", "dpo"):
        train = getattr(spec, step)
        if train is None:
            continue
        for i, ref in enumerate(train.data):
            check_ref(("loop", step, "data", i), ref, f"{step}.data names the outputs to train on")
        owned = [k for k in train.train_fields() if k in LOOP_OWNED_TRAIN_KEYS]
        if owned:
            raise issue(doc, ("loop", step, owned[0]),
                        f"the loop sets {owned[0]} itself (the round's model, data and folder); leave it out")
        # the training keys as `synth train` checks them, each error at its line of this recipe
        from synth.train.recipe import RECIPES

        fields = {**train.train_fields(), "model": "m", "dataset": "d", "output_dir": "o"}
        validate(RECIPES[step], doc, data=fields, prefix=("loop", step))
    check_ref(("loop", "eval", "data"), spec.eval.data, "eval.data names the held-out output")
    if spec.eval.preferences:
        check_ref(("loop", "eval", "preferences"), spec.eval.preferences, "eval.preferences names a preference output")
    for field in ("data", "preferences"):
        ref = getattr(spec.eval, field)
        if ref in per_round:
            raise issue(doc, ("loop", "eval", field),
                        f"'{ref}' changes every round (it depends on the loop's model); the held-out split must "
                        "be fixed: evaluate on an output no round writes")
