"""Mixture recipes: weighted samples from many SFT (or preference) datasets, one train/validation DatasetDict.

A recipe (YAML, mapped 1:1 onto `MixRecipe`) lists sources. For each source, in order:

1. read it through the one reader (`synth.data.open_source`: a local path, resolved against the recipe's
   folder first, or a Hub id; any layout it knows; optional split and limit);
2. stream it through its filter chain (`synth.clean.registry`), rejects going to ``rejects.jsonl``;
3. tag every record with ``meta.source`` = the source's name;
4. stream it through the global dedup (optional; earlier sources win) into an Arrow dataset on disk.

Nothing holds a source's rows in Python lists: the records stream from the reader to an Arrow file, and
the mix is built from those files by row index. Each source gets a target size and is sampled by index
(`Dataset.select`): down without replacement, up (only where ``upsample: true``) by repeating the whole
source ``target // n`` times plus a draw of the remainder without replacement; the repeats carry
``meta.mix.upsampled_copy`` (1, 2, ...), written by a batched map over the ``meta`` column only. Target
sizes:

- a source with ``count`` gets exactly that many;
- the other sources share ``total - sum(counts)`` in proportion ``p_i ∝ weight_i * n_i ** (1 / T)``, where
  ``n_i`` is the source's size after filters and dedup and ``T`` is ``temperature`` (no temperature: the
  weights alone; ``T = 1``: proportional to size; large ``T``: towards uniform);
- no ``total``: the largest mix that needs no up-sampling of the weighted sources;
- ``cap`` bounds a source's final share (the mix is then smaller than ``total``).

The mix is shuffled and split by index: ``validation`` is a count (int) or a fraction (float in (0, 1));
copies of one sample never straddle the two splits. Output: a `save_to_disk` DatasetDict written through
`synth.data.OutputFolder` (it appears whole or not at all), with ``mix_report.json`` (the table's numbers)
and ``rejects.jsonl`` inside it.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from synth.errors import SynthError, validation_message
from synth.recipe_file import read_recipe, validate

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


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> MixRecipe:
    """Read, override (``-s path=value``) and validate a recipe file through synth's one recipe loader;
    every error names the file and line of the key (or the override)."""
    doc = read_recipe(path, "recipe", overrides, shape="a mapping with at least 'sources:'")
    return validate(MixRecipe, doc)


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


def sample_indices(size: int, target: int, rng):
    """Row indices and copy numbers (numpy arrays): a draw without replacement, or whole repeats of the
    source (copy-major) plus a draw of the remainder."""
    import numpy as np

    if target <= size:
        return np.sort(rng.choice(size, target, replace=False)).astype(np.int64), np.zeros(target, dtype=np.int64)
    repeats, rest = divmod(target, size)
    indices = np.concatenate([np.tile(np.arange(size, dtype=np.int64), repeats), np.sort(rng.choice(size, rest, replace=False))])
    copies = np.concatenate([np.repeat(np.arange(repeats, dtype=np.int64), size), np.full(rest, repeats, dtype=np.int64)])
    return indices, copies


def sample_plan(size: int, target: int, rng) -> list[tuple[int, int]]:
    """`sample_indices` as (row index, copy number) pairs."""
    indices, copies = sample_indices(size, target, rng)
    return [(int(i), int(c)) for i, c in zip(indices, copies, strict=True)]


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


def _open_source(source: MixSource, where: str, base_dir: Path | None):
    from synth.data import open_source

    try:
        src = open_source(_resolve(source.path, base_dir), source.split, limit=source.limit)
    except SynthError as e:
        raise SynthError(f"{where}: {e}") from None
    if src.kind == "raw":
        raise SynthError(
            f"{where}: not an SFT or preference dataset (columns: {', '.join(src.columns)}); "
            "it needs 'messages' or 'prompt'/'chosen'/'rejected' (or a peer layout: sharegpt, alpaca, OpenAI, ...) "
            "— convert raw data with `synth adapt` first"
        )
    return src


def _turns(record: dict, kind: str) -> list[dict]:
    return record["messages"] if kind == "sft" else record["prompt"] + record["chosen"] + record["rejected"]


def _source_records(src, kind: str, advance: Callable[[], None]) -> Iterator[dict]:
    """The source's records, each with an id (synth's stable content id where the source has none)."""
    from synth.records import content_id

    for record in src.records():
        advance()
        if not record.get("id"):  # e.g. a Hub dataset: give it synth's stable content id
            record["id"] = content_id(_turns(record, kind), record.get("images") or [])
        yield record


def _counted(records: Iterable[dict], counter: list[int]) -> Iterator[dict]:
    for record in records:
        counter[0] += 1
        yield record


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


def _build_pool(records: Iterable[dict], kind: str, multimodal: bool, scratch: Path):
    """A source's kept records as an Arrow dataset on disk (an empty one when nothing was kept)."""
    import itertools

    from datasets import Dataset

    from synth.data import build_dataset
    from synth.data.writer import features_for

    records = iter(records)
    first = next(records, None)
    if first is None:  # `Dataset.from_generator` refuses a generator that yields nothing
        features = features_for(kind, multimodal)
        return Dataset.from_dict({name: [] for name in features}, features=features)
    return build_dataset(itertools.chain([first], records), kind=kind, multimodal=multimodal, scratch=scratch)


def _split_positions(ids, validation: int | float, rng, recipe_name: str):
    """Shuffled positions of the train and validation rows; all copies of one sample (same id) land in the
    same split. `ids` is the mix's id column (Arrow); the work is done on integer codes, not Python rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(ids)
    order = rng.permutation(n)
    want = round(validation * n) if isinstance(validation, float) else validation
    if want > n:
        raise SynthError(f"{recipe_name}: validation: {want} samples asked but the mix has only {n}; lower it")
    if want == 0:
        return order, order[:0]
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    codes = pc.dictionary_encode(ids).indices.to_numpy(zero_copy_only=False)[order]
    sizes = np.bincount(codes)
    if sizes.max() == 1:  # no copies: the first `want` rows of the shuffle
        mask = np.arange(n) < want
    else:
        # groups in shuffled order of first appearance; whole groups while they fit
        unique, first = np.unique(codes, return_index=True)
        picked = np.zeros(len(sizes), dtype=bool)
        taken = 0
        for group in unique[np.argsort(first, kind="stable")]:
            size = int(sizes[group])
            if taken + size <= want:
                picked[group] = True
                taken += size
                if taken == want:
                    break
        mask = picked[codes]
    return order[~mask], order[mask]


def _mark_copies(dataset, copies, fingerprint: str, scratch: Path):
    """``meta.mix.upsampled_copy`` on the rows that are copies: a batched map over the ``meta`` column only
    (images and messages pass through as stored)."""
    from synth.records import dump_meta, load_meta

    def mark(metas: list[str], positions: list[int]) -> dict[str, list[str]]:
        out = []
        for meta, position in zip(metas, positions, strict=True):
            copy = int(copies[position])
            if copy:
                value = load_meta(meta)
                value["mix"] = {**value.get("mix", {}), "upsampled_copy": copy}
                meta = dump_meta(value)
            out.append(meta)
        return {"meta": out}

    return dataset.map(
        mark,
        input_columns=["meta"],
        with_indices=True,
        batched=True,
        batch_size=1000,
        cache_file_name=str(scratch / "mix.arrow"),
        new_fingerprint=fingerprint,
        desc="marking copies",
    )


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
    import hashlib
    import json

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from datasets import DatasetDict, concatenate_datasets

    from synth.clean.registry import build_filters
    from synth.data import REJECTS, OutputFolder, check_output, quiet_datasets, save
    from synth.progress import progress

    base = Path(base_dir) if base_dir is not None else None
    recipe_file = base / recipe_name if base is not None and Path(recipe_name).name == recipe_name else recipe_name
    out = check_output(out, overwrite, inputs=[recipe_file, *(_resolve(s.path, base) for s in recipe.sources)])
    seed = recipe.seed if seed is None else seed
    wheres = [_where(recipe_name, i, s) for i, s in enumerate(recipe.sources)]
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
    # Open every source (memory-mapped, nothing read yet): kinds and layout are known before any work.
    sources = [_open_source(source, wheres[i], base) for i, source in enumerate(recipe.sources)]
    kind = sources[0].kind
    for i, src in enumerate(sources):
        if src.kind != kind:
            raise SynthError(
                f"{wheres[i]}: a {src.kind} dataset, but sources.0 ({recipe.sources[0].label}) is {kind}; "
                "a mix holds one kind (SFT or preference)"
            )
    multimodal = any(src.multimodal for src in sources)
    # Output fingerprints from what decides the content, so the same recipe and seed give the same bytes.
    identity = json.dumps(
        [recipe.model_dump(mode="json"), seed, [getattr(src.dataset, "_fingerprint", None) for src in sources]],
        sort_keys=True, default=str,
    )

    def fingerprint(part: str) -> str:
        return hashlib.sha256(f"{identity}:{part}".encode()).hexdigest()[:16]

    reports: list[SourceReport] = []
    pools = []
    with OutputFolder(out, overwrite) as folder:
        # 1-4: read, filter, tag and dedup each source, streaming into an Arrow dataset on disk.
        with progress() as bar:
            task = bar.add_task("reading sources", total=sum(src.num_rows or 0 for src in sources), tokens="")
            for i, (source, src, stages) in enumerate(zip(recipe.sources, sources, chains, strict=True)):
                report = SourceReport(source.label, source.path, source.split, read=src.num_rows or 0)
                records: Iterable[dict] = _source_records(src, kind, lambda: bar.advance(task))
                for stage in stages:
                    stage.rejects = folder.rejects
                    records = stage.run(records)
                after_filters = [0]
                records = _counted((_tag_source(r, source.label) for r in records), after_filters)
                if deduper is not None:
                    # The stage remembers what it kept, so feeding the sources one after another dedups across them.
                    deduper.rejects = folder.rejects
                    records = deduper.run(records)
                try:
                    pool = _build_pool(records, kind, multimodal, folder.scratch(f"source{i}"))
                except SynthError as e:
                    raise SynthError(f"{wheres[i]}: {e}") from None
                report.after_filters = after_filters[0]
                report.after_dedup = len(pool)
                report.filters = {stage.name: stage.stats.as_dict() for stage in stages}
                reports.append(report)
                pools.append(pool)
        dedup_stats = deduper.stats.as_dict() if deduper is not None else None

        # 5-6: targets, and the rows of each source by index.
        targets, capped = _targets(recipe, [len(p) for p in pools], recipe_name, wheres)
        parts, copies, used_pools, used_indices = [], [], [], []
        for i, (source, pool) in enumerate(zip(recipe.sources, pools, strict=True)):
            report = reports[i]
            report.target, report.capped = targets[i], capped[i]
            indices, copy = sample_indices(len(pool), targets[i], _rng(seed, source.label))
            report.upsampled = int(np.count_nonzero(copy))
            report.in_mix = targets[i]
            if len(indices):
                parts.append(pool.select(indices, new_fingerprint=fingerprint(f"source{i}")))
                copies.append(copy)
                used_pools.append(pool)
                used_indices.append(indices)
        total = sum(targets)
        for report in reports:
            report.share = report.in_mix / total if total else 0.0
        if total == 0:
            raise SynthError(f"{recipe_name}: the mix is empty (every source has 0 samples after filters, dedup and caps)")
        with quiet_datasets():
            mixed = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
            all_copies = np.concatenate(copies)
            if all_copies.any():
                mixed = _mark_copies(mixed, all_copies, fingerprint("copies"), folder.scratch("mix"))

            # 7-8: shuffle and split by index; write the DatasetDict with the report (and rejects) inside.
            # The ids straight from each source's Arrow column (a gather through the mix's indices mapping
            # would copy far more than the ids).
            ids = pa.chunked_array(
                [pc.take(pool.data.column("id"), pa.array(idx)) for pool, idx in zip(used_pools, used_indices, strict=True)],
                type=pa.string(),
            )
            train_at, valid_at = _split_positions(ids, recipe.validation, _rng(seed, "\x00split"), recipe_name)
            splits = {"train": mixed.select(train_at, new_fingerprint=fingerprint("train"))}
            if len(valid_at):
                splits["validation"] = mixed.select(valid_at, new_fingerprint=fingerprint("validation"))
        result = MixResult(out, kind, seed, len(train_at), len(valid_at), reports, dedup=dedup_stats)
        save(DatasetDict(splits), folder.path)
        folder.write_json("mix_report.json", result.as_dict())
        has_rejects = folder.rejects.count > 0
    result.rejects_file = out / REJECTS if has_rejects else None
    return result


def mix_file(recipe_path: str | os.PathLike, out: str | os.PathLike, overrides: list[str] | None = None,
             **kwargs) -> MixResult:
    """Load a recipe file (with ``-s path=value`` overrides) and run it; relative source paths resolve
    against the recipe's folder."""
    recipe = load_recipe(recipe_path, overrides)
    return run_mix(recipe, out, recipe_name=str(recipe_path), base_dir=Path(recipe_path).resolve().parent, **kwargs)
