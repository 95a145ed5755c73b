"""The closed loop: ``synth loop RECIPE.yaml`` (or ``synth run`` on a recipe with a ``loop:`` block).

Round k runs the recipe's per-round stages with model k wherever a backend says ``model: loop``, trains
model k+1 from model k (LoRA SFT on the round's data, then DPO when the recipe asks), scores model k+1
on the fixed held-out split, and hands it to round k+1. The stages that do not depend on the loop's
model run once and every round reads their output. The run folder::

    runs/NAME/
      manifest.json        the shared stages under ``stages``, one row per round under ``rounds``, ``best``
      STAGE/               the shared stages' outputs (demo data, labelled sets, the held-out split)
      eval_base/           model 0 on the held-out split (when ``eval.base``)
      round_K/STAGE/       round K's data (pseudo labels, ...), written with model K
      round_K/train_data/  the rows model K+1 trained on;  round_K/sft/, round_K/dpo/: its adapters
      round_K/eval/        model K+1 on the held-out split (eval.json, predictions)
      state/round_K/...    completion markers of round K's stages and steps
      best.json            the best model by the stop metric

Every step has a completion marker holding its fingerprint (what it read, the model it started from, its
settings), so a killed loop resumes where it stopped: finished rounds are reused whole, a round's
finished stages and steps too, and the step that was running is redone (training from scratch into its
own folder: the same seed gives the same adapter).
"""

from __future__ import annotations

import gc
import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.errors import SynthError
from synth.run import hooks
from synth.run.adapters.base import close_backends
from synth.run.loop_recipe import LOOP_MODEL, LoopSpec, active_stages, loop_backends, round_stages
from synth.run.manifest import digest, hash_files, read_json, save_manifest, write_json_atomic
from synth.run.runner import STATE_DIR, Plan, Runner, RunOptions, opened_run

BEST = "best.json"
#: files of an adapter (or model) folder that decide what it generates (train_summary.json holds timings)
WEIGHT_SUFFIXES = (".safetensors", ".bin")
WEIGHT_NAMES = ("adapter_config.json", "config.json", "chat_template.jinja")


def round_dir(index: int) -> str:
    return f"round_{index}"


def weights_hash(folder: str | Path | None) -> str | None:
    """A hash of what decides a model folder's outputs (weights, adapter config, chat template)."""
    if not folder or not Path(folder).is_dir():
        return None
    import xxhash

    h = xxhash.xxh3_128()
    for file in sorted(Path(folder).iterdir()):
        if file.is_file() and (file.suffix in WEIGHT_SUFFIXES or file.name in WEIGHT_NAMES):
            data = file.read_bytes()
            if file.suffix == ".json":  # PEFT writes target_modules from a set: its order changes run to run
                import json

                config = json.loads(data)
                if isinstance(config.get("target_modules"), list):
                    config["target_modules"] = sorted(config["target_modules"])
                data = json.dumps(config, sort_keys=True).encode()
            h.update(file.name.encode() + b"\0" + data + b"\0")
    return h.hexdigest()


@dataclass
class Model:
    """Model k: the base plus, after round 0 (or when the loop starts from one), a LoRA adapter."""

    index: int
    base: str  # a `synth.train` model name: Hub id, folder, or embedded
    adapter: str | None = None

    @property
    def identity(self) -> str:
        return digest([self.base, weights_hash(self.adapter)])

    def describe(self) -> str:
        return f"{self.base} + {self.adapter}" if self.adapter else self.base

    def for_local_backend(self) -> str:
        """The local backend's `model:` (an adapter folder brings its base along)."""
        if self.adapter:
            return self.adapter
        from synth.llm.embedded import EMBEDDED_MODEL
        from synth.train.recipe import EMBEDDED_NAMES

        return EMBEDDED_MODEL if self.base in EMBEDDED_NAMES else self.base


@dataclass
class LoopResult:
    name: str
    run_dir: Path
    manifest: dict[str, Any]
    rounds: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------- the loop


class Loop:
    def __init__(self, plan: Plan, run_dir: Path, options: RunOptions, console=None):
        self.plan = plan
        self.spec: LoopSpec = plan.recipe.loop
        self.run_dir = run_dir
        self.options = options
        self.console = console
        self.per_round = round_stages(plan.recipe)
        self.shared = [n for n in plan.order if n not in self.per_round]
        self.looped = loop_backends(plan.recipe)
        self.outputs: dict[str, Any] = {}  # shared stage → (ref, fingerprint, hash)
        # the rounds' sampling and training; the shared data stages keep the recipe's seed
        self.round_seed = self.spec.seed if self.spec.seed is not None else plan.recipe.seed

    def say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text, highlight=False, soft_wrap=True)

    def view(self):
        from synth.run.progress import RunView

        return RunView(live=self.options.live)

    # -- the whole run

    def run(self) -> LoopResult:
        loop = {"rounds": self.spec.rounds, "model": self.spec.model,
                "per_round_stages": [n for n in self.plan.order if n in self.per_round],
                "stop": self.spec.stop.model_dump(mode="json"), "seed": self.round_seed}
        with opened_run(self.plan, self.run_dir, self.options, self.shared, loop=loop, rounds=[]) as opened:
            self.executor, self.manifest = opened
            self.run_shared()
            self.run_rounds()
        return LoopResult(self.run_dir.name, self.run_dir, self.manifest, self.manifest["rounds"])

    def runner(self, plan: Plan, view, prefix: str = "", identity: dict | None = None) -> Runner:
        runner = Runner(plan, self.run_dir, self.options, view, prefix=prefix, identity=identity)
        runner.executor = self.executor
        runner.outputs.update(self.outputs)
        return runner

    def run_shared(self) -> None:
        with self.view() as view:
            runner = self.runner(self.plan, view)
            for name in self.shared:
                self.manifest["stages"][name]["state"] = "running"
                save_manifest(self.run_dir, self.manifest)
                outcome = runner.run_stage(name)
                self.manifest["stages"][name] = runner.stage_entry(outcome)
                save_manifest(self.run_dir, self.manifest)
        self.outputs = dict(runner.outputs)

    # -- rounds

    def model_zero(self) -> Model:
        from synth.train.models import adapter_base, is_adapter_dir

        model = self.spec.model
        if is_adapter_dir(model):
            base = adapter_base(model)
            if not base:
                raise SynthError(f"loop.model: {model} is an adapter folder that does not name its base model")
            return Model(0, base, str(Path(model).resolve()))
        return Model(0, model)

    def run_rounds(self) -> None:
        model = self.model_zero()
        metric, margin, patience = self.spec.stop.metric, self.spec.stop.margin, self.spec.stop.patience
        base_eval = self.evaluate_base(model) if self.spec.eval.base else None
        if base_eval is not None:
            self.manifest["base_eval"] = base_eval
        best = {"model": 0, "round": None, "adapter": model.adapter, "score": _score(base_eval, metric)}
        previous = base_eval
        stale = 0
        self.manifest["stopped"] = {"reason": "rounds", "after_round": None}
        for k in range(self.spec.rounds):
            row = self.run_round(k, model, previous)
            score = _score(row["eval"], metric)
            improved = score is not None and (best["score"] is None or score > best["score"] + margin)
            if score is not None and (best["score"] is None or score > best["score"]):
                best = {"model": k + 1, "round": k, "adapter": row["adapter"], "score": score}
            row["improved"] = improved
            stale = 0 if improved else stale + 1
            self.manifest["rounds"][k] = row
            self.manifest["best"] = {**best, "metric": metric}
            save_manifest(self.run_dir, self.manifest)
            previous = row["eval"]
            model = Model(k + 1, model.base, row["adapter"])
            if patience and stale >= patience:
                self.manifest["stopped"] = {"reason": "patience", "after_round": k,
                                            "note": f"{stale} round(s) without improving {metric} by more than {margin}"}
                self.say(f"[yellow]stop:[/] {self.manifest['stopped']['note']}; best is model {best['model']}")
                break
            self.manifest["stopped"]["after_round"] = k
        self.manifest["best"] = {**best, "metric": metric}
        write_json_atomic(self.run_dir / BEST, self.manifest["best"])

    def round_plan(self, k: int, model: Model) -> tuple[Plan, dict[str, Any], dict[str, str]]:
        """The recipe as round k sees it: every `model: loop` backend serves model k."""
        backends = dict(self.plan.recipe.backends)
        served: dict[str, str] = {}
        identity: dict[str, Any] = {}
        for name in self.looped:
            spec = backends[name]
            if spec.backend == "local":
                value = model.for_local_backend()
            else:
                value = self.spec.serve.model.format(run=self.run_dir.name, round=k)
            backends[name] = spec.model_copy(update={"model": value})
            served[name] = value
            identity[name] = model.identity
        recipe = self.plan.recipe.model_copy(update={"backends": backends, "seed": self.round_seed})
        plan_backends = {name: (backends[name].model_dump(mode="json") if name in backends else spec)
                         for name, spec in self.plan.backends.items()}
        from synth.run.recipe import LoadedRecipe

        plan = Plan(loaded=LoadedRecipe(recipe=recipe, doc=self.plan.loaded.doc), specs=self.plan.specs,
                    order=self.plan.order, backends=plan_backends)
        return plan, identity, served

    def run_round(self, k: int, model: Model, previous: dict | None) -> dict[str, Any]:
        started = time.time()
        folder = self.run_dir / round_dir(k)
        folder.mkdir(parents=True, exist_ok=True)
        active = [n for n in self.plan.order if n in active_stages(self.plan.recipe, k)]
        row: dict[str, Any] = {"round": k, "state": "running", "model": model.describe(), "model_index": model.index,
                               "stages": {}, "folder": str(folder)}
        if len(self.manifest["rounds"]) <= k:
            self.manifest["rounds"].append(row)
        save_manifest(self.run_dir, self.manifest)
        self.say(f"[bold]round {k}[/]: model {model.index} = {model.describe()}")

        plan, identity, served = self.round_plan(k, model)
        row["served"] = served
        hooks.point("loop", round=k, step="data")
        if active:
            self.serve(k, model, served, active)
            with self.view() as view:
                runner = self.runner(plan, view, prefix=round_dir(k), identity=identity)
                for name in active:
                    row["stages"][name] = {"state": "running", "type": self.plan.specs[name].type}
                    save_manifest(self.run_dir, self.manifest)
                    outcome = runner.run_stage(name)
                    row["stages"][name] = runner.stage_entry(outcome)
                    check = self.label_check(name, runner.outputs)
                    if check is not None:
                        row["stages"][name]["label_check"] = check
                    save_manifest(self.run_dir, self.manifest)
            round_outputs = runner.outputs
        else:
            round_outputs = dict(self.outputs)
        close_backends()  # model k leaves memory before model k+1 trains
        gc.collect()

        hooks.point("loop", round=k, step="sft")
        start_adapter = model.adapter if self.spec.from_previous else self.model_zero().adapter
        sft = self.train(k, "sft", model.base, start_adapter, round_outputs)
        row["sft"] = sft
        adapter = sft["output_dir"]
        if self.spec.dpo is not None:
            hooks.point("loop", round=k, step="dpo")
            dpo = self.train(k, "dpo", model.base, adapter, round_outputs)
            row["dpo"] = dpo
            adapter = dpo["output_dir"]
        row["adapter"] = adapter
        if self.spec.serve.merge:
            row["merged"] = self.merge(k, model.base, adapter)
        hooks.point("loop", round=k, step="eval")
        row["eval"] = self.evaluate(Model(k + 1, model.base, adapter), folder / "eval", f"{round_dir(k)}/eval")
        row["change"] = _change(previous, row["eval"])
        row["change_test"] = _change_test(self.run_dir, previous, row["eval"])
        row["state"] = "done"
        row["seconds"] = round(time.time() - started, 3)
        hooks.point("loop", round=k, step="done")
        return row

    def label_check(self, name: str, outputs: dict[str, Any]) -> dict[str, Any] | None:
        """For a pseudo_label stage with hidden labels: how many kept labels match them (over all of its
        rows; a count, no label is written anywhere)."""
        spec = self.plan.specs[name]
        if spec.type != "pseudo_label" or not getattr(spec, "hide_labels", False) or name not in outputs:
            return None
        from synth.data import quiet_datasets
        from synth.generate.pseudo_label import compare_labels

        if not outputs[name][0].rows:
            return {"compared": 0, "correct": 0, "accuracy": None, "unmatched": 0}
        with quiet_datasets():
            return compare_labels(outputs[name][0].path, outputs[spec.input][0].path)

    def serve(self, k: int, model: Model, served: dict[str, str], active: list[str]) -> None:
        """Before an OpenAI-compatible backend is asked for model k: run the user's serve command."""
        command = self.spec.serve.command
        openai = [n for n, spec in self.plan.recipe.backends.items() if n in served and spec.backend == "openai"]
        if not command or not openai or k == 0:
            return
        from synth.run.loop_recipe import stage_backends

        if not any(stage_backends(self.plan.specs[n]) & set(openai) for n in active):
            return
        values = {"run": self.run_dir.name, "round": k, "model": served[openai[0]], "base": model.base,
                  "adapter": model.adapter or "", "merged": str(self.run_dir / round_dir(k - 1) / "merged")}
        text = command.format(**{key: shlex.quote(str(v)) for key, v in values.items()})
        self.say(f"serve: {text}")
        env = {**os.environ, **{f"SYNTH_LOOP_{key.upper()}": str(v) for key, v in values.items()}}
        done = subprocess.run(text, shell=True, cwd=self.plan.loaded.base_dir, env=env)
        if done.returncode != 0:
            raise SynthError(f"loop.serve.command failed in round {k} (exit {done.returncode}): {text}")

    # -- steps with markers

    def marker(self, k: int | None, step: str) -> Path:
        sub = round_dir(k) if k is not None else ""
        return self.run_dir / STATE_DIR / sub / f"{step}.json"

    def train_data(self, k: int, names: list[str], outputs: dict[str, Any], step: str) -> tuple[Path, dict]:
        """The round's training rows: the named outputs together (a mix's train split), in order."""
        from synth.data import OutputFolder, open_source, quiet_datasets, write_records

        present = [n for n in names if n in outputs]
        if not present:
            raise SynthError(f"loop.{step}.data: none of {', '.join(names)} has data in round {k}")
        refs = [(n, outputs[n][0]) for n in present]
        fp = digest([[n, outputs[n][2]] for n in present])
        out = self.run_dir / round_dir(k) / f"{step}_data"
        marker_path = self.marker(k, f"{step}_data")
        marker = read_json(marker_path)
        if marker and marker.get("fingerprint") == fp and out.is_dir():
            return out, marker["counts"]
        counts: dict[str, int] = {}
        kinds = set()
        with quiet_datasets():
            sources = []
            for name, ref in refs:
                split = "train" if (Path(ref.path) / "dataset_dict.json").is_file() else ref.split
                src = open_source(ref.path, split, allow_empty=True)
                sources.append((name, src))
                kinds.add(src.kind)
            if len(kinds) > 1:
                raise SynthError(f"loop.{step}.data: {', '.join(present)} mix kinds ({', '.join(sorted(kinds))}); "
                                 "train on outputs of one kind")

            def records():
                for name, src in sources:
                    n = 0
                    for record in src.records():
                        n += 1
                        yield record
                    counts[name] = n

            with OutputFolder(out, overwrite=True) as folder:
                write_records(records(), folder.path, kind=kinds.pop(),
                              multimodal=any(bool(src.multimodal) for _, src in sources) or None)
        write_json_atomic(marker_path, {"fingerprint": fp, "counts": counts, "hash": hash_files(out)})
        return out, counts

    def train(self, k: int, step: str, base: str, adapter: str | None, outputs: dict[str, Any]) -> dict[str, Any]:
        from synth.train import recipe_from_dict, run_stage

        spec = getattr(self.spec, step)
        data, counts = self.train_data(k, spec.data, outputs, step)
        out = self.run_dir / round_dir(k) / step
        # The run's seed decides data order, LoRA init and dropout too, unless the step sets its own.
        fields = {"seed": self.round_seed, **spec.train_fields(), "model": base, "dataset": str(data),
                  "output_dir": str(out), "overwrite": True}
        if adapter:
            fields["adapter"] = adapter
        elif step == "dpo":
            raise SynthError("loop.dpo: DPO starts from the round's SFT adapter; keep loop.sft")  # never: sft runs first
        recipe = recipe_from_dict(fields, step, source=f"loop.{step}")
        fp = digest({"recipe": recipe.model_dump(mode="json"), "data": hash_files(data),
                     "adapter": weights_hash(adapter), "seed": self.round_seed})
        marker_path = self.marker(k, step)
        marker = read_json(marker_path)
        if marker and marker.get("fingerprint") == fp and (out / "train_summary.json").is_file():
            self.say(f"round {k} {step}: reused ({out})")
            return marker["result"]
        self.say(f"round {k} {step}: {sum(counts.values()):,} rows ({_counts_text(counts)}), "
                 f"from {adapter or base}")
        result = run_stage(step, recipe)  # seeds the global RNG first: same seed, same adapter
        summary = result.summary
        entry = {"output_dir": str(out), "rows": summary.get("data", {}).get("train_rows"), "data": counts,
                 "steps": summary.get("steps"), "tokens": summary.get("tokens"),
                 "seconds": summary.get("train_seconds"), "final_train_loss": summary.get("final_train_loss"),
                 "from": adapter or base, "weights": weights_hash(out), "seed": recipe.seed}
        for key in ("eval_rewards_accuracies", "eval_rewards_margins"):
            if key in summary:
                entry[key] = summary[key]
        write_json_atomic(marker_path, {"fingerprint": fp, "result": entry, "finished": time.time()})
        gc.collect()
        return entry

    def merge(self, k: int, base: str, adapter: str) -> str:
        from synth.train import recipe_from_dict, run_stage

        out = self.run_dir / round_dir(k) / "merged"
        fp = digest([base, weights_hash(adapter)])
        marker_path = self.marker(k, "merge")
        marker = read_json(marker_path)
        if not (marker and marker.get("fingerprint") == fp and out.is_dir()):
            recipe = recipe_from_dict({"model": base, "adapter": adapter, "output_dir": str(out), "overwrite": True},
                                      "merge", source="loop.serve.merge")
            run_stage("merge", recipe)
            write_json_atomic(marker_path, {"fingerprint": fp, "output": str(out)})
        return str(out)

    def evaluate_base(self, model: Model) -> dict[str, Any]:
        return self.evaluate(model, self.run_dir / "eval_base", "eval_base")

    def evaluate(self, model: Model, out: Path, step: str) -> dict[str, Any]:
        """Model on the held-out split (and the held-out preferences): metrics, with a marker."""
        from synth.train.evaluate import ModelSpec, evaluate, write_report

        spec = self.spec.eval
        sets = [("sft", spec.data)] + ([("preferences", spec.preferences)] if spec.preferences else [])
        fp = digest({"model": model.identity, "eval": spec.model_dump(mode="json"),
                     "data": [self.outputs[name][2] for _, name in sets]})
        marker_path = self.marker(None, step.replace("/", os.sep))
        marker = read_json(marker_path)
        if marker and marker.get("fingerprint") == fp and out.is_dir():
            return marker["metrics"]
        label = f"model_{model.index}"
        metrics: dict[str, Any] = {"model": label, "seconds": 0.0}
        for kind, name in sets:
            self.say(f"{step}: model {model.index} on {name}")
            report = evaluate([ModelSpec(label, model.base, model.adapter)], self.outputs[name][0].path,
                              limit=spec.limit, max_new_tokens=spec.max_new_tokens, batch_size=spec.batch_size,
                              beta=spec.beta, device=spec.device, precision=spec.precision)
            write_report(report, out / ("eval.json" if kind == "sft" else "preferences.json"))
            values = report.metrics[label]
            metrics["seconds"] += report.seconds[label]
            intervals = metrics.setdefault("intervals", {})
            if kind == "sft":
                kept = ("exact_match", "normalized_accuracy", "contains_accuracy", "mean_logprob_per_token")
                metrics.update({k: values.get(k) for k in (*kept, "rows", "short_answer_rows")})
                # relative to the run folder: the manifest stays true when the folder moves
                metrics["predictions"] = (out / "eval_predictions.jsonl").relative_to(self.run_dir).as_posix()
            else:
                kept = ("preference_accuracy", "reward_accuracy", "reward_margin")
                metrics.update({k: values.get(k) for k in (*kept, "pairs")})
            intervals.update({k: values["intervals"].get(k) for k in kept if values["intervals"].get(k)})
        metrics["seconds"] = round(metrics["seconds"], 1)
        write_json_atomic(marker_path, {"fingerprint": fp, "metrics": metrics})
        return metrics


SCORES = ("exact_match", "normalized_accuracy", "contains_accuracy", "mean_logprob_per_token",
          "preference_accuracy", "reward_accuracy")


def _score(metrics: dict | None, metric: str) -> float | None:
    return None if not metrics else metrics.get(metric)


def _change(before: dict | None, after: dict) -> dict[str, float]:
    if not before:
        return {}
    return {k: after[k] - before[k] for k in SCORES
            if isinstance(after.get(k), (int, float)) and isinstance(before.get(k), (int, float))}


def _change_test(run_dir: Path, before: dict | None, after: dict) -> dict[str, dict]:
    """The change of each share score from the model before, tested on the same held-out rows (McNemar's
    exact test on the two rounds' predictions): is it distinguishable from run-to-run noise?"""
    from synth.train.evaluate import PREDICTION_FIELDS, compare_prediction_files

    paths = [(m or {}).get("predictions") for m in (before, after)]
    paths = [run_dir / p if p else None for p in paths]
    if not all(paths) or not all(p.is_file() for p in paths):
        return {}
    tests = {metric: compare_prediction_files(paths[0], paths[1], metric) for metric in PREDICTION_FIELDS}
    return {metric: test for metric, test in tests.items() if test is not None}


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n:,}" for name, n in counts.items())


# ---------------------------------------------------------------- entry point


def run_loop(path: str | os.PathLike, overrides: list[str] | None = None, options: RunOptions | None = None,
             console=None) -> LoopResult:
    """Run (or resume) a recipe's closed loop; see the module docs."""
    from synth.run.runner import prepare, run_dir_for

    options = options or RunOptions()
    plan = prepare(path, overrides)
    if plan.recipe.loop is None:
        raise SynthError(f"{path}: no 'loop:' block; add one (rounds, sft, eval), or run it with synth run")
    if options.rerun:
        raise SynthError("--rerun is not supported with a loop; change the recipe (fingerprints rerun what changed)")
    if not any(True for _ in loop_backends(plan.recipe)) and console is not None:
        console.print(f"[yellow]note:[/] no backend has model: {LOOP_MODEL}; every round trains on the same data")
    return Loop(plan, run_dir_for(plan, options), options, console).run()
