"""``adapt``: labelled rows → instruction samples with one or several template sets (`synth.adapt`).

Each shard goes through `synth.adapt.adapt_dataset` (the engine's Arrow batch path), once per template
set. With several sets the samples of one record stay together, in the order the sets are listed.
``meta.source`` is the name of the stage the rows came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from synth.run.adapters.base import Preview, StageAdapter
from synth.run.adapters.sources import resolve_path
from synth.run.recipe import StageSpec


class AdaptSpec(StageSpec):
    """Apply template sets to the rows of `input` (``synth templates`` lists the shipped sets)."""

    type: Literal["adapt"]
    input: str
    template: list[str] = Field(min_length=1, description="template set name(s) or YAML path(s)")
    map: dict[str, str] = Field(default_factory=dict, description="template variable → column (dotted paths allowed)")
    seed: int | None = Field(None, description="variant and option-order seed (default: the recipe's seed)")
    limit: int | None = Field(None, ge=1, description="only the first N rows of the input")
    on_error: Literal["fail", "skip"] = Field("fail", description="skip: a bad row goes to rejects.jsonl")
    verify_images: bool = True
    classes: list[str] | None = Field(
        None, description="class list of a set with classes (e.g. classification); default: a ClassLabel "
                          "column's names, else the distinct labels of the whole input")

    @field_validator("template", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("classes", mode="before")
    @classmethod
    def _class_names(cls, value: Any) -> Any:
        from synth.adapt import parse_classes
        from synth.errors import SynthError

        try:
            return parse_classes(value) if isinstance(value, (str, list)) else value
        except SynthError as e:  # a ValueError: the recipe error names the file and line
            raise ValueError(str(e).removeprefix("--classes: ")) from None


def load_sets(spec: AdaptSpec) -> list:
    from synth.adapt import load_template_set

    sets = []
    for name in spec.template:
        ts = load_template_set(name)
        sets.append(ts.with_mapping(spec.map) if spec.map else ts)
    return sets


class AdaptAdapter(StageAdapter):
    type = "adapt"
    Spec = AdaptSpec

    def check(self, spec: AdaptSpec) -> list[tuple[tuple, dict]]:
        """A mistyped shipped set name fails when the recipe loads, at its line, with a 'did you mean'."""
        from synth.adapt.template_set import is_set_path, shipped_names, unknown_set_message

        return [(("template",), {"type": "value_error", "msg": unknown_set_message(name)})
                for name in spec.template if not is_set_path(name) and name not in shipped_names()][:1]

    def resolve(self, spec: AdaptSpec, base_dir: Path) -> AdaptSpec:
        paths = [resolve_path(t, base_dir) if t.endswith((".yaml", ".yml")) else t for t in spec.template]
        return spec.model_copy(update={"template": paths})

    def fingerprint_extra(self, spec: AdaptSpec) -> Any:
        # an edited template file changes the samples: its content, not its name, decides
        return [ts.model_dump(mode="json") for ts in load_sets(spec)]

    def output_layout(self, spec: AdaptSpec, src) -> tuple[str, bool]:
        return "sft", any(ts.multimodal for ts in load_sets(spec))

    def execute(self, spec: AdaptSpec, ctx, inputs, folder, tracker) -> dict[str, Any]:
        import numpy as np
        from datasets import concatenate_datasets

        from synth.adapt import adapt_dataset
        from synth.data import save
        from synth.records import load_meta, sft_features
        from synth.run.shards import column

        src = inputs[0]
        dataset = src.dataset
        ids = ([str(v) for v in column(dataset, "id")] if "id" in dataset.column_names
               else [f"row-{i}" for i in range(len(dataset))])
        positions = tracker.global_positions if tracker.global_positions is not None else np.arange(len(dataset))
        sets = load_sets(spec)
        multimodal = any(ts.multimodal for ts in sets)
        seed = spec.seed if spec.seed is not None else ctx.seed
        source_name = (ctx.task.inputs[0].get("stage") if ctx.task else None) or src.name
        parts, part_positions, rejected = [], [], {}
        for ts in sets:
            result = adapt_dataset(dataset, ts, seed=seed, source_name=source_name, base_dir=src.base_dir,
                                   on_error=spec.on_error, cache_dir=folder.scratch("adapt"),
                                   verify_images=spec.verify_images, classes=_classes(spec, ts, ctx, dataset))
            prefix = f"{ts.name}:" if len(sets) > 1 else ""
            for reject in result.rejects:
                folder.rejects.write(reject["id"], reject["stage"], reject["reason"], reject["detail"],
                                     template=ts.name)
                rejected[prefix + reject["reason"]] = rejected.get(prefix + reject["reason"], 0) + 1
            out = result.dataset
            if ts.multimodal != multimodal:  # text sets beside image sets: one layout for the stage
                out = out.cast(sft_features(multimodal)) if len(out) else out
            parts.append(out)
            part_positions.append(_positions(ids, positions, [load_meta(m).get("source_id") for m in column(out, "meta")]))
        merged = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        order_positions = np.concatenate(part_positions) if part_positions else np.zeros(0, dtype=np.int64)
        if len(parts) > 1 and len(merged):
            order = np.argsort(order_positions, kind="stable")  # a record's samples together, sets in order
            merged = merged.select(order)
            order_positions = order_positions[order]
        save(merged, folder.path)
        if ctx.progress is not None:
            ctx.progress.add(records=len(dataset))
        tracker.positions, tracker.ok = order_positions.tolist(), True
        # read: input records; kept: those that gave at least one sample (rejects are counted per set)
        kept = len(set(order_positions.tolist()))
        return {"counts": {"read": len(dataset), "kept": kept, "rows": len(merged),
                           "rejected": rejected, "failed": {}},
                "kind": "sft", "multimodal": multimodal}

    def sample(self, spec: AdaptSpec, ctx, records: list[dict], src) -> list[dict]:
        from synth.adapt import Renderer, class_list

        out = []
        for ts in load_sets(spec):
            try:
                classes = class_list(src.dataset, ts, spec.classes)[0] if src is not None else spec.classes
                renderer = Renderer(ts, spec.seed if spec.seed is not None else ctx.seed, spec.input,
                                    src.base_dir if src is not None else None, classes=classes)
            except Exception:  # no class list to show: the run itself says why
                continue
            for i, record in enumerate(records):
                try:
                    out.extend(renderer.render_record(record, str(record.get("id") or f"row-{i}")))
                except Exception:  # a dry run shows what renders; the run itself reports bad rows
                    continue
        return out

    def preview(self, spec: AdaptSpec, ctx, records, rows) -> Preview:
        return Preview(note=f"{len(spec.template)} template set(s)")


def _classes(spec: AdaptSpec, ts, ctx, shard) -> list[str] | None:
    """The class list of a set with `classes:`, read from the whole input (not this shard), so every shard
    renders the same list."""
    from synth.adapt import class_list
    from synth.run.adapters.base import DataRef

    if ts.classes is None or spec.classes:
        return spec.classes
    whole = DataRef.from_dict(ctx.task.inputs[0]).open(allow_empty=True).dataset if ctx.task else shard
    if ts.columns[ts.classes.variable] not in whole.column_names:
        return None  # `adapt_dataset` says which column is missing
    return class_list(whole, ts)[0]


def _positions(ids: list[str], positions, source_ids: list[str]):
    """The input position of each output row: rows come out in input order, each naming its record's id."""
    import numpy as np

    out = np.empty(len(source_ids), dtype=np.int64)
    cursor = 0
    for k, source_id in enumerate(source_ids):
        while cursor < len(ids) and ids[cursor] != source_id:
            cursor += 1
        if cursor >= len(ids):
            raise RuntimeError(f"adapt: sample of record {source_id} out of input order")
        out[k] = positions[cursor]
    return out


ADAPTERS = (AdaptAdapter,)
