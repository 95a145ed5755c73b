"""Mixture recipes: weighted samples from many SFT (or preference) datasets, one train/validation DatasetDict.

A recipe (YAML, mapped 1:1 onto `MixRecipe`) lists sources. For each source, in order:

1. read it (local path, resolved against the recipe's folder first, or a Hub id; optional split and limit);
2. pass it through its filter chain (`synth.clean.registry`), rejects going to ``OUT.rejects.jsonl``;
3. tag every record with ``meta.source`` = the source's name.

Then all sources go through one global dedup (optional; earlier sources win), each source gets a target
size, and is sampled: down without replacement, up (only where ``upsample: true``) by repeating the whole
source ``target // n`` times plus a draw of the remainder without replacement; the repeats carry
``meta.mix.upsampled_copy`` (1, 2, ...). Target sizes:

- a source with ``count`` gets exactly that many;
- the other sources share ``total - sum(counts)`` in proportion ``p_i ∝ weight_i * n_i ** (1 / T)``, where
  ``n_i`` is the source's size after filters and dedup and ``T`` is ``temperature`` (no temperature: the
  weights alone; ``T = 1``: proportional to size; large ``T``: towards uniform);
- no ``total``: the largest mix that needs no up-sampling of the weighted sources;
- ``cap`` bounds a source's final share (the mix is then smaller than ``total``).

The mix is shuffled and split: ``validation`` is a count (int) or a fraction (float in (0, 1)); copies of
one sample never straddle the two splits. Output: a `save_to_disk` DatasetDict written atomically, with
``mix_report.json`` (the table's numbers) inside it.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from synth.errors import SynthError, validation_message

FilterItem = str | dict[str, dict[str, Any] | None]


class MixSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="save_to_disk folder, Parquet/JSONL/CSV file or folder, or Hub id")
    name: str | None = Field(None, description="name kept in meta.source; default: the path's last part")
    split: str | None = None
    limit: int | None = Field(None, ge=1, description="read only the first N rows")
    weight: float | None = Field(None, ge=0, description="relative share of the mix (default 1)")
    count: int | None = Field(None, ge=0, description="exact number of samples instead of a weight")
    cap: int | None = Field(None, ge=0, description="at most this many samples from this source")
    upsample: bool = Field(False, description="allow sampling with replacement when the target exceeds the source")
    filters: list[FilterItem] = Field(default_factory=list, description="filter chain: name, 'name:k=v' or {name: {options}}")

    @model_validator(mode="after")
    def _weight_or_count(self):
        if self.weight is not None and self.count is not None:
            raise ValueError("give a weight or a count, not both")
        return self

    @property
    def label(self) -> str:
        return self.name or _default_name(self.path)


class MixRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sources: list[MixSource] = Field(default_factory=list, description="datasets to mix (at least one)")
    total: int | None = Field(None, ge=1, description="size of the mix (train + validation)")
    temperature: float | None = Field(None, gt=0, description="p_i ∝ weight_i * n_i^(1/T) across weighted sources")
    dedup: bool | dict[str, Any] = Field(False, description="global dedup across sources: true or DedupConfig options")
    seed: int = 0
    validation: int | float = Field(0, description="validation split: a count (int) or a fraction in (0, 1)")

    @model_validator(mode="after")
    def _check(self):
        if not self.sources:
            raise ValueError("no sources: list at least one dataset under 'sources'")
        names = [s.label for s in self.sources]
        for index, name in enumerate(names):
            if names.index(name) != index:
                raise ValueError(f"source name '{name}' is used twice; give the sources distinct 'name's")
        if isinstance(self.validation, float) and not 0 <= self.validation < 1:
            raise ValueError("validation: a fraction must be in [0, 1); use an integer for a count")
        if isinstance(self.validation, int) and self.validation < 0:
            raise ValueError("validation: must not be negative")
        return self


def _default_name(path: str) -> str:
    return Path(path.rstrip("/")).name.split(".")[0] or path


def load_recipe(path: str | os.PathLike) -> MixRecipe:
    """Parse and validate a recipe file; errors name the file and the key path."""
    from synth.io import read_yaml

    path = Path(path)
    data = read_yaml(path, "recipe")
    if not isinstance(data, dict):
        raise SynthError(f"{path}: a recipe is a mapping with at least 'sources:'")
    try:
        return MixRecipe.model_validate(data)
    except ValidationError as e:
        raise SynthError(recipe_error(e, str(path))) from None


def recipe_error(error: ValidationError, source: str) -> str:
    """One line naming the file and the key path; our own checks read as plain sentences."""
    return validation_message(error, source).replace("Value error, ", "").replace(" <root>: ", " ")


# ---------------------------------------------------------------- the math


def source_probabilities(sizes: Sequence[int], weights: Sequence[float], temperature: float | None) -> list[float]:
    """Mixing probabilities p_i ∝ w_i * n_i^(1/T); without a temperature, p_i ∝ w_i."""
    if temperature is None:
        raw = [float(w) for w in weights]
    else:
        raw = [float(w) * (n ** (1.0 / temperature) if n > 0 else 0.0) for w, n in zip(weights, sizes, strict=True)]
    total = sum(raw)
    if total <= 0:
        return [0.0 for _ in raw]
    return [r / total for r in raw]


def apportion(total: int, probabilities: Sequence[float]) -> list[int]:
    """Integer shares of `total` that sum to it (largest remainder; ties to the earlier source)."""
    exact = [total * p for p in probabilities]
    counts = [math.floor(x) for x in exact]
    left = total - sum(counts)
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:left]:
        counts[i] += 1
    return counts


def sample_plan(size: int, target: int, rng) -> list[tuple[int, int]]:
    """(row index, copy number) pairs: a draw without replacement, or whole repeats plus a remainder."""
    if target <= size:
        return [(int(i), 0) for i in sorted(rng.choice(size, target, replace=False))]
    repeats, rest = divmod(target, size)
    plan = [(i, copy) for copy in range(repeats) for i in range(size)]
    plan += [(int(i), repeats) for i in sorted(rng.choice(size, rest, replace=False))]
    return plan


def _rng(seed: int, label: str):
    import numpy as np

    # Per-source streams: adding or reordering sources does not change what another source draws.
    return np.random.default_rng([seed, zlib.crc32(label.encode())])


# ---------------------------------------------------------------- running a recipe


@dataclass
class SourceReport:
    name: str
    path: str
    split: str | None
    read: int = 0
    after_filters: int = 0
    after_dedup: int = 0
    target: int = 0
    in_mix: int = 0
    upsampled: int = 0  # extra copies drawn beyond the source's own rows
    capped: bool = False
    share: float = 0.0
    filters: dict[str, dict] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class MixResult:
    out: Path
    kind: str
    seed: int
    train: int
    validation: int
    sources: list[SourceReport]
    rejects_file: Path | None = None
    dedup: dict | None = None

    @property
    def total(self) -> int:
        return self.train + self.validation

    def as_dict(self) -> dict[str, Any]:
        # No output path: two runs with the same recipe and seed write byte-identical reports.
        return {
            "kind": self.kind,
            "seed": self.seed,
            "total": self.total,
            "train": self.train,
            "validation": self.validation,
            "dedup": self.dedup,
            "sources": [s.as_dict() for s in self.sources],
        }


def _where(recipe_name: str, index: int, source: MixSource) -> str:
    return f"{recipe_name}: sources.{index} ({source.label})"


def _resolve(path: str, base_dir: Path | None) -> str:
    """A relative path is looked up beside the recipe first, then as given (cwd or Hub id)."""
    if base_dir is not None and not os.path.isabs(path) and (base_dir / path).exists():
        return str(base_dir / path)
    return path


def _read_source(source: MixSource, where: str, base_dir: Path | None):
    from synth.io import read_dataset
    from synth.records import dataset_kind

    try:
        dataset = read_dataset(_resolve(source.path, base_dir), source.split)
    except SynthError as e:
        raise SynthError(f"{where}: {e}") from None
    if source.limit is not None:
        dataset = dataset.select(range(min(source.limit, len(dataset))))
    kind = dataset_kind(dataset)
    if kind == "other":
        raise SynthError(
            f"{where}: not an SFT or preference dataset (columns: {', '.join(dataset.column_names)}); "
            "it needs 'messages' or 'prompt'/'chosen'/'rejected' — convert raw data with `synth adapt` first"
        )
    return dataset, kind


def _records(dataset, kind: str) -> list[dict]:
    from synth.clean.apply import _ROW, iter_records
    from synth.records import content_id

    has_ids = "id" in dataset.column_names
    out = []
    for record in iter_records(dataset):
        record.pop(_ROW, None)
        record["meta"] = dict(record.get("meta") or {})
        if not has_ids or not record.get("id"):  # e.g. a Hub dataset: give it synth's stable content id
            turns = record["messages"] if kind == "sft" else record["prompt"] + record["chosen"] + record["rejected"]
            record["id"] = content_id(turns, record.get("images") or [])
        out.append(record)
    return out


def _tag_source(record: dict, name: str) -> dict:
    meta = record["meta"]
    previous = meta.get("source")
    if previous is not None and previous != name:
        meta.setdefault("mix", {})["origin"] = previous  # e.g. the dataset an adapted sample came from
    meta["source"] = name
    return record


def _targets(recipe: MixRecipe, sizes: list[int], recipe_name: str, where: list[str]) -> tuple[list[int], list[bool]]:
    """Target size per source, and whether its cap bit."""
    counted = [s.count for s in recipe.sources]
    weighted = [i for i, s in enumerate(recipe.sources) if s.count is None]
    fixed = sum(c for c in counted if c is not None)
    targets = [c or 0 for c in counted]
    if weighted:
        weights = [recipe.sources[i].weight if recipe.sources[i].weight is not None else 1.0 for i in weighted]
        probs = source_probabilities([sizes[i] for i in weighted], weights, recipe.temperature)
        if sum(probs) == 0:
            raise SynthError(
                f"{recipe_name}: the weighted sources have zero total weight "
                "(all weights are 0 or the sources are empty); raise a weight or use counts"
            )
        if recipe.total is not None:
            remaining = recipe.total - fixed
            if remaining < 0:
                raise SynthError(
                    f"{recipe_name}: the source counts add up to {fixed}, more than total: {recipe.total}"
                )
        else:
            for i, p in zip(weighted, probs, strict=True):
                if p > 0 and sizes[i] == 0:
                    raise SynthError(
                        f"{where[i]}: no samples left after filters and dedup; remove it, set its weight to 0, "
                        "or relax its filters"
                    )
            # The largest mix in which no weighted source needs more rows than it has.
            remaining = min(math.floor(sizes[i] / p + 1e-9) for i, p in zip(weighted, probs, strict=True) if p > 0)
        for i, share in zip(weighted, apportion(remaining, probs), strict=True):
            targets[i] = share
    capped = []
    for i, source in enumerate(recipe.sources):
        bit = source.cap is not None and targets[i] > source.cap
        capped.append(bit)
        if bit:
            targets[i] = source.cap
    for i, source in enumerate(recipe.sources):
        if targets[i] > sizes[i] and (sizes[i] == 0 or not source.upsample):
            asked = f"count {source.count}" if source.count is not None else "its weight"
            fix = "lower its count/weight or the total" if sizes[i] == 0 else (
                "set upsample: true on the source to sample with replacement, or lower its count/weight or the total"
            )
            raise SynthError(
                f"{where[i]}: {asked} needs {targets[i]} samples but the source has only {sizes[i]} after filters "
                f"and dedup; {fix}"
            )
    return targets, capped


def _split(rows: list[dict], validation: float, rng, recipe_name: str) -> tuple[list[dict], list[dict]]:
    """Shuffle and split; all copies of one sample (same id) land in the same split."""
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    want = round(validation * len(rows)) if isinstance(validation, float) else validation
    if want > len(rows):
        raise SynthError(f"{recipe_name}: validation: {want} samples asked but the mix has only {len(rows)}; lower it")
    if want == 0:
        return rows, []
    groups: dict[str, list[int]] = {}
    for position, row in enumerate(rows):
        groups.setdefault(row["id"], []).append(position)
    picked: set[int] = set()
    for positions in groups.values():  # in shuffled order of first appearance
        if len(picked) + len(positions) <= want:
            picked.update(positions)
            if len(picked) == want:
                break
    train = [r for p, r in enumerate(rows) if p not in picked]
    valid = [r for p, r in enumerate(rows) if p in picked]
    return train, valid


def _to_arrow(records: list[dict], kind: str):
    """Records in the canonical layout (text-only content becomes parts when any sample has images)."""
    from datasets import Dataset

    from synth.records import dump_meta, preference_features, sft_features

    message_columns = ("messages",) if kind == "sft" else ("prompt", "chosen", "rejected")
    multimodal = any(r.get("images") for r in records) or any(
        isinstance(m.get("content"), list) for r in records for c in message_columns for m in r.get(c) or []
    )

    def messages(value):
        out = []
        for m in value or []:
            content = m.get("content")
            if multimodal and isinstance(content, str):
                content = [{"type": "text", "text": content}]
            elif multimodal:
                content = [{"type": p.get("type"), "text": p.get("text")} for p in content]
            elif isinstance(content, list):
                content = "".join(p.get("text") or "" for p in content if p.get("type") == "text")
            out.append({"role": m["role"], "content": content})
        return out

    rows = []
    for record in records:
        row = {"id": str(record.get("id") or "")}
        for column in message_columns:
            row[column] = messages(record.get(column))
        if multimodal:
            row["images"] = list(record.get("images") or [])
        row["meta"] = dump_meta(record["meta"])
        rows.append(row)
    features = sft_features(multimodal) if kind == "sft" else preference_features(multimodal)
    return Dataset.from_list(rows, features=features)


def run_mix(
    recipe: MixRecipe,
    out: str | os.PathLike,
    *,
    recipe_name: str = "recipe",
    base_dir: str | os.PathLike | None = None,
    seed: int | None = None,
    overwrite: bool = False,
    backend_factory: Callable[[], Any] | None = None,
) -> MixResult:
    """Build the mixture described by `recipe` into `out` (a save_to_disk DatasetDict)."""
    from datasets import DatasetDict

    from synth.clean.registry import build_filters
    from synth.io import atomic_path, check_output, quiet_datasets, rejects_path, write_json
    from synth.progress import progress
    from synth.stages import RejectsWriter

    out = check_output(out, overwrite)
    seed = recipe.seed if seed is None else seed
    base = Path(base_dir) if base_dir is not None else None
    wheres = [_where(recipe_name, i, s) for i, s in enumerate(recipe.sources)]
    final_rejects = rejects_path(out)
    partial_rejects = final_rejects.with_name(final_rejects.name + ".partial")
    writer = RejectsWriter(partial_rejects)
    reports: list[SourceReport] = []
    pools: list[list[dict]] = []
    kinds: list[str] = []
    # Build every filter chain and the dedup first: a typo fails before any dataset is read.
    chains = []
    for i, source in enumerate(recipe.sources):
        try:
            chains.append(build_filters(source.filters, backend_factory=backend_factory))
        except SynthError as e:
            raise SynthError(f"{wheres[i]}: {e}") from None
    deduper = None
    if recipe.dedup is not False:
        from synth.clean.dedup import Dedup

        try:
            deduper = Dedup(recipe.dedup if isinstance(recipe.dedup, dict) else {})
        except ValidationError as e:
            raise SynthError(validation_message(e, f"{recipe_name}: dedup")) from None
    try:
        # 1-3: read, filter, tag each source.
        with progress() as bar:
            task = bar.add_task("reading sources", total=len(recipe.sources), tokens="")
            for i, (source, stages) in enumerate(zip(recipe.sources, chains, strict=True)):
                dataset, kind = _read_source(source, wheres[i], base)
                if kinds and kind != kinds[0]:
                    raise SynthError(
                        f"{wheres[i]}: a {kind} dataset, but sources.0 ({recipe.sources[0].label}) is {kinds[0]}; "
                        "a mix holds one kind (SFT or preference)"
                    )
                kinds.append(kind)
                report = SourceReport(source.label, source.path, source.split, read=len(dataset))
                records = _records(dataset, kind)
                for stage in stages:
                    stage.rejects = writer
                    records = stage.run(records)
                kept = [_tag_source(r, source.label) for r in records]
                report.after_filters = len(kept)
                report.filters = {stage.name: stage.stats.as_dict() for stage in stages}
                reports.append(report)
                pools.append(kept)
                bar.advance(task)

        # 4: one dedup over all sources in recipe order (earlier sources keep their samples).
        dedup_stats = None
        if deduper is not None:
            deduper.rejects = writer
            # The stage remembers what it kept, so feeding the sources one after another dedups across them.
            pools = [list(deduper.run(pool)) for pool in pools]
            dedup_stats = deduper.stats.as_dict()
        for report, pool in zip(reports, pools, strict=True):
            report.after_dedup = len(pool)

        # 5-6: targets and sampling.
        targets, capped = _targets(recipe, [len(p) for p in pools], recipe_name, wheres)
        mixed: list[dict] = []
        for i, (source, pool) in enumerate(zip(recipe.sources, pools, strict=True)):
            report = reports[i]
            report.target, report.capped = targets[i], capped[i]
            for index, copy in sample_plan(len(pool), targets[i], _rng(seed, source.label)):
                record = dict(pool[index])
                if copy:
                    record["meta"] = {**record["meta"], "mix": {**record["meta"].get("mix", {}), "upsampled_copy": copy}}
                    report.upsampled += 1
                mixed.append(record)
            report.in_mix = targets[i]
        total = len(mixed)
        for report in reports:
            report.share = report.in_mix / total if total else 0.0
        if total == 0:
            raise SynthError(f"{recipe_name}: the mix is empty (every source has 0 samples after filters, dedup and caps)")

        # 7-8: split and write atomically (dataset, report inside; rejects beside it).
        train, valid = _split(mixed, recipe.validation, _rng(seed, "\x00split"), recipe_name)
        splits = {"train": _to_arrow(train, kinds[0])}
        if valid:
            splits["validation"] = _to_arrow(valid, kinds[0])
        result = MixResult(out, kinds[0], seed, len(train), len(valid), reports, dedup=dedup_stats)
        writer.close()
        with atomic_path(out, overwrite) as tmp, quiet_datasets():
            DatasetDict(splits).save_to_disk(str(tmp))
            write_json(result.as_dict(), tmp / "mix_report.json")
        if partial_rejects.exists():
            os.replace(partial_rejects, final_rejects)
            result.rejects_file = final_rejects
        elif final_rejects.exists():
            final_rejects.unlink()  # stale from an earlier run into the same --out
        return result
    finally:
        writer.close()
        if partial_rejects.exists():
            partial_rejects.unlink()


def mix_file(recipe_path: str | os.PathLike, out: str | os.PathLike, **kwargs) -> MixResult:
    """Load a recipe file and run it; relative source paths resolve against the recipe's folder."""
    recipe = load_recipe(recipe_path)
    return run_mix(recipe, out, recipe_name=str(recipe_path), base_dir=Path(recipe_path).resolve().parent, **kwargs)
