"""The `adapt` operator: labelled rows → instruction samples with one or several template sets.

Its config is the one declaration of its options: the recipe's ``type: adapt`` keys, the flags of
``synth adapt`` and its docs page come from it. It adapts a whole Arrow dataset at once (`map_dataset`:
`datasets.map` over batches, in ``num_proc`` processes, see `synth.adapt.engine`), which the CLI and the
runner use; its records path (`run`) gathers the records into a table and adapts that, for dry runs and
Python chains. With several sets the samples of one record stay together, in the order the sets are listed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from synth.core.fields import NameOrFile
from synth.core.operator import DatasetResult
from synth.errors import SynthError
from synth.pipeline.stage import POSITION, Map, StageConfig


class AdaptConfig(StageConfig):
    template: list[NameOrFile(".yaml", ".yml")] = Field(  # type: ignore[valid-type]
        min_length=1, description="Template set: a shipped name (see `synth templates`) or a YAML file; "
                                  "several sets give every record the samples of each, in order")
    map: dict[str, str] = Field(
        default_factory=dict,
        description="Template variable → the column it reads instead (dotted paths allowed); on the command "
                    "line VARIABLE=COLUMN, repeatable")
    seed: int | None = Field(
        None, description="Seed for the choice of instruction variants and option order "
                          "(default: the recipe's seed; 0 on the command line)")
    classes: list[str] | str | None = Field(
        None, description="Class list, in order, for a set with classes (e.g. classification): a list or "
                          "NAME,NAME,... (default: a ClassLabel column's names, else the distinct labels of the "
                          "whole input)")
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="fail: stop at the first bad record; skip: count it and write it to rejects.jsonl")
    verify_images: bool = Field(
        True, description="Check every image's bytes whole (a truncated JPEG or corrupt PNG is a bad record)")
    num_proc: int = Field(1, ge=1, description="Worker processes")

    @field_validator("template", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("template")
    @classmethod
    def _known_sets(cls, value: list[str]) -> list[str]:
        """A mistyped shipped set name fails where it is written (a recipe's line), with a 'did you mean'."""
        from synth.adapt.template_set import is_set_path, shipped_names, unknown_set_message

        for name in value:
            if not is_set_path(name) and name not in shipped_names():
                raise ValueError(unknown_set_message(name))
        return value

    @field_validator("classes", mode="before")
    @classmethod
    def _class_names(cls, value: Any) -> Any:
        from synth.adapt.engine import parse_classes

        if value is None:
            return None
        try:  # "a,b,c" (the command line) or a list (a recipe)
            return parse_classes(value if isinstance(value, (str, list)) else str(value))
        except SynthError as e:  # a ValueError: the recipe error names the file and line
            raise ValueError(str(e).removeprefix("--classes: ")) from None


def load_sets(config: AdaptConfig) -> list:
    """The config's template sets, loaded and checked, with `map` applied."""
    from synth.adapt.template_set import load_template_set

    sets = []
    for name in config.template:
        ts = load_template_set(name)
        sets.append(ts.with_mapping(config.map) if config.map else ts)
    return sets


class Adapt(Map):
    """Turn a labelled dataset into instruction samples with template sets (`synth templates` lists them).

    A set maps columns to template variables and gives each record one of its paraphrased instructions
    (a stable hash of seed, set and record id) and the answer from its label; list columns become one
    sample per item or one conversation. Bad records stop the run, or go to rejects.jsonl with
    ``on_error: skip``.
    """

    name = "adapt"
    Config = AdaptConfig
    output_kind = "sft"
    writes = ("id", "messages", "images", "meta")
    cli_flags = {"template": ["--template", "-t"], "subset": ["--config", "--subset"]}

    def __init__(self, config: AdaptConfig | dict | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        # a bad set, variant or --map fails here, before any record is read
        self.sets = load_sets(self.config)
        self.multimodal = any(ts.multimodal for ts in self.sets)
        self.classes: dict[str, list[str] | None] = {}  # set name -> its class list, from the whole input
        self.notes: list[str] = []

    def prepare(self, source) -> None:
        """The class list of each set with `classes:`, read from the whole input (so every shard renders
        the same list): --classes, a ClassLabel column's names, the set's names, or the distinct labels."""
        from synth.adapt.engine import class_list

        self.classes, self.notes = {}, []
        for ts in self.sets:
            if ts.classes is None or self.config.classes:
                continue
            if ts.columns[ts.classes.variable] in source.dataset.column_names:  # else the run says it is missing
                self.classes[ts.name], note = class_list(source.dataset, ts)
                self.notes += [note] if note and note not in self.notes else []

    @classmethod
    def fingerprint_extra(cls, config: AdaptConfig) -> Any:
        # an edited template file changes the samples: its content, not its name, decides
        return [ts.model_dump(mode="json") for ts in load_sets(config)]

    @property
    def seed(self) -> int:
        return self.config.seed if self.config.seed is not None else 0

    def map_dataset(self, dataset, *, name: str, label: str, base_dir: Path | None,
                    scratch: Path | None) -> DatasetResult:
        """Every set over `dataset` (Arrow, batched), with the class lists `prepare` read from the whole
        input (unprepared: from `dataset`)."""
        import numpy as np
        from datasets import concatenate_datasets

        from synth.adapt.engine import adapt_dataset
        parts, rows_from, rejects, notes, rejected = [], [], [], list(self.notes), Counter()
        for ts in self.sets:
            classes = self.config.classes or self.classes.get(ts.name)
            result = adapt_dataset(dataset, ts, seed=self.seed, source_name=name, source_label=label,
                                   base_dir=base_dir, num_proc=self.config.num_proc, on_error=self.config.on_error,
                                   cache_dir=scratch, verify_images=self.config.verify_images, classes=classes)
            notes += [n for n in result.notes if n not in notes]
            prefix = f"{ts.name}:" if len(self.sets) > 1 else ""
            for reject in result.rejects:
                rejects.append({**reject, "template": ts.name})
                rejected[prefix + reject["reason"]] += 1
            out = result.dataset
            if ts.multimodal != self.multimodal and len(out):  # text sets beside image sets: one layout
                out = _as_image_text(out)
            parts.append(out)
            rows_from.append(result.rows_from)
        merged = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        order = np.concatenate(rows_from) if rows_from else np.zeros(0, dtype=np.int64)
        if len(parts) > 1 and len(merged):
            sort = np.argsort(order, kind="stable")  # a record's samples together, sets in order
            merged, order = merged.select(sort), order[sort]
        report = {"stage": self.name, "template": ", ".join(ts.name for ts in self.sets),
                  "task": ", ".join(dict.fromkeys(ts.task for ts in self.sets)), "seed": self.seed,
                  "records": len(dataset), "samples": len(merged),
                  "skipped": dict(sorted(Counter(r["reason"] for r in rejects).items()))}
        return DatasetResult(dataset=merged, rows_from=order, read=len(dataset), rejects=rejects,
                             rejected=dict(rejected), notes=notes, multimodal=self.multimodal, report=report)

    def run(self, records: Iterable[dict]) -> Iterator[dict]:
        """The samples of `records` (gathered into one table first: the class list may come from all of them)."""
        from datasets import Dataset

        from synth.data.reader import Source

        rows = list(records)
        if not rows:
            return
        dataset = Dataset.from_list(rows)
        result = self.map_dataset(dataset, name=self.name, label=self.name, base_dir=None, scratch=None)
        for reject in result.rejects:
            self.stats.dropped[reject["reason"]] += 1
            self.rejects.write(reject["id"], self.name, reject["reason"], reject["detail"],
                               template=reject["template"])
        self.stats.seen += len(rows)
        self.stats.kept += len(set(result.rows_from.tolist()))
        for sample, row in zip(Source(self.name, result.dataset, None, "messages").records(), result.rows_from):
            if POSITION in rows[row]:  # row order travels with the records (the runner's tracking)
                sample[POSITION] = rows[row][POSITION]
            yield sample


OPERATOR_CLASSES = (Adapt,)


def _as_image_text(dataset):
    """A text set's samples in the image-text layout: each turn's text as one text part, no images."""
    from synth.records import sft_features

    features = sft_features(True)

    def convert(batch: dict) -> dict:
        return {
            "messages": [[{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in turns]
                         for turns in batch["messages"]],
            "images": [[] for _ in batch["messages"]],
        }

    from synth.data.hf import quiet_datasets

    with quiet_datasets():  # no progress bars of datasets' own in synth's output
        converted = dataset.map(convert, batched=True)
        return converted.select_columns(list(features)).cast(features)
