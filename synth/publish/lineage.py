"""What a dataset folder holds and how it was made: splits, kind, sidecar files, stages and upstream sources.

Read by the dataset card (`synth push`) and the HTML report (`synth report`). Sidecars are looked up
inside the output folder first (``rejects.jsonl``, ``failures.jsonl``, ``report.json``, ``usage.json``,
``manifest.json``, ``mix_report.json``, ``self_instruct_stats.json``), then under the older names beside it
(``OUT.rejects.jsonl``, ``OUT.report.json``, ...). Upstream datasets named by a sidecar (a mix's sources,
the folder `generate` or `evolve` read) are followed when they still exist on disk.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.errors import SynthError

JSON_SIDECARS = ("manifest.json", "report.json", "usage.json", "mix_report.json", "self_instruct_stats.json")
JSONL_SIDECARS = ("rejects.jsonl", "failures.jsonl")
EVOLVE_METHODS = ("evol-instruct", "mmevol")
MAX_DEPTH = 4  # how far upstream sources are followed (a mix of generated sets of adapted sets ...)
MAX_META_ROWS = 200_000  # meta is counted over at most this many rows of a split


@dataclass
class Stage:
    """One step of how a dataset was made, with its counts: the rows of the card's table and the chart's bars."""

    name: str
    kind: str  # adapt, read, filter, dedup, sample, split, seeds, evolve, generate, self-instruct, prefs, stage
    seen: int | None = None
    kept: int | None = None
    dropped: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)  # requests that failed (retried next run), not drops
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    source: str | None = None  # the mix source (or upstream dataset) the step belongs to

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


@dataclass
class Lineage:
    """A dataset with what synth knows of its making: sidecars, steps, usage, rejects, upstream datasets."""

    path: Path
    name: str
    kind: str  # sft, preference or other
    splits: dict[str, Any]  # split name -> datasets.Dataset
    sidecars: dict[str, Path] = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)
    usage: list[dict[str, Any]] = field(default_factory=list)  # usage blocks (tokens, model) of LLM steps
    rejects: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    upstream: list[Lineage] = field(default_factory=list)
    meta: dict[str, Counter] = field(default_factory=dict)  # key -> Counter of values (source, template, ...)
    methods: list[str] = field(default_factory=list)
    meta_keys: Counter = field(default_factory=Counter)  # top-level meta keys and how many rows carry each
    meta_rows_counted: int = 0

    @property
    def rows(self) -> int:
        return sum(len(d) for d in self.splits.values())

    @property
    def multimodal(self) -> bool:
        return any("images" in d.column_names for d in self.splits.values())

    @property
    def features(self):
        return next(iter(self.splits.values())).features

    def walk(self):
        """This dataset, then every upstream one (depth first)."""
        yield self
        for up in self.upstream:
            yield from up.walk()

    def all_methods(self) -> list[str]:
        seen: list[str] = []
        for node in self.walk():
            for method in node.methods:
                if method not in seen:
                    seen.append(method)
        return seen

    def all_stages(self) -> list[Stage]:
        """Upstream steps first (the order things happened), then this dataset's own."""
        out: list[Stage] = []
        for up in self.upstream:
            out += up.all_stages()
        return out + self.stages

    def tokens(self) -> dict[str, Any]:
        """Requests and tokens of every LLM step, this dataset's and upstream (cost when known)."""
        total: dict[str, Any] = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": None}
        for node in self.walk():
            for block in node.usage:
                for key in ("requests", "prompt_tokens", "completion_tokens"):
                    total[key] += int(block.get(key) or 0)
                if block.get("cost") is not None:
                    total["cost"] = (total["cost"] or 0.0) + float(block["cost"])
        return total

    def models(self) -> list[str]:
        names: Counter = Counter()
        for node in self.walk():
            names.update({str(k): v for k, v in node.meta.get("model", Counter()).items() if k})
            for block in node.usage:
                if block.get("model"):
                    names[str(block["model"])] += 0  # known, even if no sample names it
        return [name for name, _ in names.most_common()]


# ---------------------------------------------------------------- reading


def sidecar(folder: Path, name: str) -> Path | None:
    """``folder/name`` (the new layout) or ``folder.name`` beside it (the legacy one)."""
    inside = folder / name
    if inside.is_file():
        return inside
    beside = folder.with_name(f"{folder.name}.{name}")
    return beside if beside.is_file() else None


def load_splits(path: str | os.PathLike) -> dict[str, Any]:
    """Every split of a dataset: a saved DatasetDict keeps its splits, anything else is one 'train' split."""
    from datasets import DatasetDict

    from synth.data.reader import load

    folder = Path(path)
    if not folder.exists():
        raise SynthError(f"{folder}: no such dataset folder or file")
    data = load(folder, all_splits=True)
    if isinstance(data, DatasetDict):
        if not data:
            raise SynthError(f"{folder}: the saved DatasetDict has no splits")
        return dict(data)
    return {"train": data}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise SynthError(f"{path}: unreadable sidecar file ({e}); remove it or rerun the command that wrote it") from e


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a rejects/failures file; a malformed line is an error naming the file and line."""
    from synth.io import read_jsonl as read_lines

    return [row for _, row in read_lines(path, "sidecar")]


def parse_meta(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except (TypeError, json.JSONDecodeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def meta_column(dataset, limit: int | None = None) -> list[dict[str, Any]]:
    """The parsed ``meta`` of each row (empty dicts when the dataset has no meta column)."""
    if "meta" not in dataset.column_names:
        return [{}] * (len(dataset) if limit is None else min(limit, len(dataset)))
    part = dataset if limit is None or len(dataset) <= limit else dataset.select(range(limit))
    return [parse_meta(v) for v in part.with_format("arrow")["meta"].to_pylist()]


def pick_rows(metas: list[dict[str, Any]], count: int, seed: int = 0) -> list[int]:
    """`count` row positions spread over the sources (round robin over ``meta.source``, shuffled with
    `seed` within each), in row order: every source shows up, and the same call picks the same rows."""
    import random

    groups: dict[str, list[int]] = defaultdict(list)
    for i, meta in enumerate(metas):
        groups[str(meta.get("source") or "")].append(i)
    rng = random.Random(seed)
    for rows in groups.values():
        rng.shuffle(rows)
    picked: list[int] = []
    queues = [groups[k] for k in sorted(groups)]
    while len(picked) < count and any(queues):
        for rows in queues:
            if rows and len(picked) < count:
                picked.append(rows.pop())
    return sorted(picked)


# ---------------------------------------------------------------- methods from meta

META_KEYS = ("source", "template", "operator", "model", "strategy", "form", "round")


def methods_of(meta: dict[str, Any]) -> list[str]:
    """The methods a sample's provenance shows (used for tags and citations)."""
    found = []
    source = meta.get("source")
    if source == "self-instruct":
        found.append("self-instruct")
    if source in EVOLVE_METHODS:
        found.append(source)
    if meta.get("template"):
        found.append("adapt")
    if isinstance(meta.get("generation"), dict):
        found.append("generate")
    if isinstance(meta.get("pseudo_label"), dict):
        found.append("pseudo-label")
    if meta.get("strategy"):
        found.append(f"prefs:{meta['strategy']}")
    scores = meta.get("scores") if isinstance(meta.get("scores"), dict) else {}
    if "capfilt" in scores or "capfilt" in meta:
        found.append("capfilt")
    if isinstance(meta.get("mix"), dict):
        found.append("mix")
    if isinstance(meta.get("seed_meta"), dict):
        found += [m for m in methods_of(meta["seed_meta"]) if m not in found]
    return found


def _count_meta(lineage: Lineage) -> None:
    counts: dict[str, Counter] = defaultdict(Counter)
    methods: Counter = Counter()
    keys: Counter = Counter()
    rows = 0
    for dataset in lineage.splits.values():
        for meta in meta_column(dataset, MAX_META_ROWS):
            rows += 1
            keys.update(meta.keys())
            for key in META_KEYS:
                value = meta.get(key)
                if value is not None and not isinstance(value, (dict, list)):
                    counts[key][str(value)] += 1
            methods.update(methods_of(meta))
    lineage.meta = dict(counts)
    lineage.meta_keys = keys
    lineage.meta_rows_counted = rows
    _add_methods(lineage, [m for m, _ in methods.most_common()])


def _add_methods(lineage: Lineage, methods) -> None:
    for method in methods:
        if method and method not in lineage.methods:
            lineage.methods.append(method)


# ---------------------------------------------------------------- stages from sidecars

SETTING_KEYS = (
    "model", "backend", "temperature", "top_p", "max_tokens", "n", "seed", "rounds", "judge", "judge_temperature",
    "judge_max_tokens", "judge_batch_size", "output", "image_input", "answer_temperature", "answer_max_tokens",
    "prompt_style", "operators", "interaction_forms", "template", "strategy", "threshold", "near",
)


def _settings(*blocks: dict[str, Any] | None) -> dict[str, Any]:
    """The sampling and method settings worth showing (scalars and small weight maps), first block wins."""
    out: dict[str, Any] = {}
    for block in blocks:
        for key in SETTING_KEYS:
            if not block or key in out or key not in block:
                continue
            value = block[key]
            if isinstance(value, dict):
                value = {k: v for k, v in value.items() if isinstance(v, (int, float)) and v}
                if not value:
                    continue
            elif value is None or value == "" or isinstance(value, list):
                continue
            out[key] = value
    return out


def _reasons_by_round(rejects: list[dict[str, Any]], stage: str) -> dict[int, Counter]:
    """Evolution rejects carry their round (older ones say ``round N, operator: ...`` in the detail)."""
    per: dict[int, Counter] = defaultdict(Counter)
    for row in rejects:
        if row.get("stage") != stage:
            continue
        match = re.match(r"round (\d+)", str(row.get("detail") or ""))
        round_ = row.get("round", match.group(1) if match else None)
        if round_ is not None:
            per[int(round_)][str(row.get("reason") or "?")] += 1
    return per


def _evolve_stages(doc: dict[str, Any], rejects: list[dict[str, Any]]) -> list[Stage]:
    method = doc.get("method", "evolve")
    config = doc.get("config") or {}
    settings = _settings({"model": doc.get("model"), "image_input": doc.get("image_input")}, config)
    skipped = {str(k): int(v) for k, v in (doc.get("seeds_skipped") or {}).items()}
    seeds = int(doc.get("seeds") or 0)
    stages = [Stage(f"{method} seeds", "seeds", seen=seeds, kept=seeds - sum(skipped.values()), dropped=skipped, settings=settings)]
    per_round = doc.get("per_round") or {}
    by_round = _reasons_by_round(rejects, method)
    eliminated = {str(k): int(v) for k, v in (doc.get("eliminated") or {}).items()}
    for key in sorted(per_round, key=int):
        counts = per_round[key]
        reasons = dict(by_round.get(int(key), {}))
        lost = int(counts.get("eliminated") or 0)
        if not reasons and lost:
            reasons = eliminated if len(per_round) == 1 else {"eliminated": lost}
        stage = Stage(f"{method} round {key}", "evolve", seen=int(counts.get("generated") or 0),
                      kept=int(counts.get("kept") or 0), dropped=reasons)
        if counts.get("failed"):
            stage.failed = {"failed": int(counts["failed"])}
        stages.append(stage)
    if doc.get("failed") and stages[1:]:
        stages[-1].notes.append("failed: " + ", ".join(f"{k} {v}" for k, v in doc["failed"].items()))
    forms = doc.get("interaction_forms") or {}
    if forms:
        stages[-1].notes.append("forms: " + ", ".join(f"{k} {v}" for k, v in forms.items()))
    return stages


def _generate_stage(doc: dict[str, Any]) -> Stage:
    stats = doc.get("stats") or {}
    usage = doc.get("usage") or {}
    stage = Stage(
        doc.get("command") or "generate", "generate", seen=stats.get("seen"), kept=stats.get("kept"),
        dropped={str(k): int(v) for k, v in (stats.get("dropped") or {}).items()},
        failed={str(k): int(v) for k, v in (stats.get("failed") or {}).items()},
        settings=_settings({"model": usage.get("model"), "backend": usage.get("backend")}, doc.get("config")),
    )
    if doc.get("seconds") is not None:
        stage.notes.append(f"{doc['seconds']:.1f} s")
    return stage


def _self_instruct_stages(doc: dict[str, Any]) -> list[Stage]:
    settings = _settings(doc)
    inst, cls, items = doc.get("instructions") or {}, doc.get("classification") or {}, doc.get("instances") or {}
    stages = [
        Stage("self-instruct instructions", "self-instruct", seen=inst.get("parsed"), kept=inst.get("kept"),
              dropped=dict(inst.get("rejected") or {}), settings=settings,
              notes=[f"{inst.get('requests', 0)} requests, target {inst.get('target', '?')}"]),
        Stage("self-instruct classification", "self-instruct", seen=cls.get("tasks"),
              kept=(cls.get("tasks") or 0) - sum((cls.get("rejected") or {}).values()), dropped=dict(cls.get("rejected") or {}),
              notes=[f"{cls.get('classification', 0)} classification tasks"]),
        Stage("self-instruct instances", "self-instruct", seen=items.get("tasks"), kept=items.get("kept"),
              dropped=dict(items.get("rejected") or {})),
    ]
    responses = doc.get("responses")
    if isinstance(responses, dict):
        stages.append(Stage("self-instruct responses", "self-instruct", seen=responses.get("seen"),
                            kept=responses.get("kept"), dropped=dict(responses.get("dropped") or {})))
    return stages


def _generic_stages(doc: dict[str, Any]) -> list[Stage]:
    """``{"stages": [{name, seen, kept, dropped}, ...]}`` or a name -> counts map (run manifests, new reports)."""
    items = doc.get("stages")
    if isinstance(items, dict):
        items = [{"name": k, **v} for k, v in items.items() if isinstance(v, dict)]
    stages = []
    for item in items or []:
        if not isinstance(item, dict):
            continue
        counts = item.get("counts") if isinstance(item.get("counts"), dict) else item
        dropped = counts.get("dropped") or counts.get("rejected") or {}
        failed = counts.get("failed") if isinstance(counts.get("failed"), dict) else {}
        name = str(item.get("name") or item.get("type") or "stage")
        stages.append(Stage(
            name, _kind_of(name),
            seen=counts.get("seen"), kept=counts.get("kept"),
            dropped={str(k): int(v) for k, v in dropped.items()} if isinstance(dropped, dict) else {},
            failed={str(k): int(v) for k, v in failed.items()},
            settings=_settings(item, item.get("config") if isinstance(item.get("config"), dict) else None),
        ))
    return stages


def _resolve_upstream(value: str, folder: Path) -> Path | None:
    """A source path as a sidecar recorded it: absolute, from the working directory, or beside the dataset."""
    path = Path(value)
    # Beside the dataset first (a recipe's paths are relative to its folder), then the working directory.
    candidates = [path] if path.is_absolute() else [*(parent / path for parent in list(folder.resolve().parents)[:3]), path]
    for candidate in candidates:
        if candidate.exists() and candidate.resolve() != folder.resolve():
            return candidate
    return None


def usage_blocks(doc: Any) -> list[dict[str, Any]]:
    """Usage records in any of the shapes commands write: one flat block (requests, tokens, model), a
    wrapper with ``usage`` (and ``by_stage``), or a list of blocks (one per backend)."""
    if isinstance(doc, list):
        return [b for item in doc for b in usage_blocks(item)]
    if not isinstance(doc, dict):
        return []
    if isinstance(doc.get("by_stage"), dict):
        return [b for item in doc["by_stage"].values() for b in usage_blocks(item)]
    if isinstance(doc.get("usage"), (dict, list)):
        return [{**b, "model": b.get("model") or doc.get("model")} for b in usage_blocks(doc["usage"])]
    if any(k in doc for k in ("prompt_tokens", "completion_tokens", "requests")):
        return [doc]
    return []


Step = tuple[list[Stage], set[str], list[tuple[str, str | None]], list[str]]  # stages, reject names, upstream, methods


def _read_sidecar(file_name: str, doc: dict[str, Any], lineage: Lineage) -> Step | None:
    """The steps one sidecar document describes, recognised by its shape (each command writes its own)."""
    source = [(doc["source"], None)] if isinstance(doc.get("source"), str) else []
    if file_name == "mix_report.json" or (isinstance(doc.get("sources"), list) and doc.get("kind") in ("sft", "preference")):
        names = _mix_filter_names(doc)
        methods = ["mix", *(["dedup"] if doc.get("dedup") else []), *(n for n in names if _kind_of(n) not in ("filter", "dedup"))]
        upstream = [(s["path"], s.get("name")) for s in doc.get("sources") or [] if s.get("path")]
        return _mix_stages(doc), names, upstream, methods
    if doc.get("method") in EVOLVE_METHODS and "per_round" in doc:
        base = (doc.get("config") or {}).get("base_dir")
        return _evolve_stages(doc, lineage.rejects), {doc["method"]}, [(base, None)] if base else source, [doc["method"]]
    if "stats" in doc and (doc.get("command") == "generate" or file_name == "usage.json"):  # the older shape
        return [_generate_stage(doc)], {"generate"}, source, ["generate"]
    if doc.get("command") == "prefs" or ("strategy" in doc and "prompts_with_pairs" in doc):
        stage = _prefs_stage(doc)
        return [stage], {stage.name, "prefs", str(doc.get("strategy")), *(doc.get("stages") or {})}, source, [f"prefs:{doc.get('strategy')}"]
    if doc.get("stage") == "adapt" and "template" in doc:
        return [_adapt_stage(doc, lineage)], {"adapt"}, source, ["adapt"]
    if file_name == "self_instruct_stats.json" or isinstance(doc.get("instructions"), dict):
        names = {"self-instruct", "self_instruct", "novelty", "instructions", "instances", "classify", "responses"}
        return _self_instruct_stages(doc), names, [], ["self-instruct"]
    stages = _generic_stages(doc)
    if not stages:
        return None
    methods = [_kind_of(s.name) for s in stages if _kind_of(s.name) != "filter"]
    return stages, {s.name for s in stages}, source, methods


def _adapt_stage(doc: dict[str, Any], lineage: Lineage) -> Stage:
    skipped = {str(k): int(v) for k, v in (doc.get("skipped") or {}).items()}
    records = doc.get("records")
    stage = Stage(f"adapt {doc.get('template')}", "adapt", seen=records,
                  kept=None if records is None else records - sum(skipped.values()), dropped=skipped,
                  settings=_settings({"template": doc.get("template"), "seed": doc.get("seed")}))
    if doc.get("samples") is not None:
        stage.notes.append(f"{doc['samples']:,} samples")
    if doc.get("task"):
        stage.notes.append(str(doc["task"]))
    return stage


def _prefs_stage(doc: dict[str, Any]) -> Stage:
    models = doc.get("models")
    stage = Stage(
        f"prefs {doc.get('strategy')}", "prefs", seen=doc.get("prompts"), kept=doc.get("prompts_with_pairs"),
        dropped={str(k): int(v) for k, v in (doc.get("dropped") or {}).items()},
        failed={str(k): int(v) for k, v in (doc.get("failed") or {}).items()},
        settings=_settings({"strategy": doc.get("strategy"), "model": ", ".join(map(str, models)) if isinstance(models, list) else models},
                           doc.get("config")),
    )
    if doc.get("pairs") is not None:
        stage.notes.append(f"{doc['pairs']:,} pairs")
    if doc.get("requests"):
        stage.notes.append(f"{doc['requests']:,} requests")
    return stage


def describe(path: str | os.PathLike, name: str | None = None, depth: int = 0, _seen: set | None = None) -> Lineage:
    """Read a dataset folder (or file) and everything synth left about how it was made."""
    from synth.records import dataset_kind

    folder = Path(path)
    splits = load_splits(folder)
    lineage = Lineage(folder, name or folder.name, dataset_kind(next(iter(splits.values()))), splits)
    seen = _seen if _seen is not None else set()
    seen.add(folder.resolve())
    for file_name in (*JSON_SIDECARS, *JSONL_SIDECARS):
        found = sidecar(folder, file_name)
        if found:
            lineage.sidecars[file_name] = found
    if "rejects.jsonl" in lineage.sidecars:
        lineage.rejects = read_jsonl(lineage.sidecars["rejects.jsonl"])
    if "failures.jsonl" in lineage.sidecars:
        lineage.failures = read_jsonl(lineage.sidecars["failures.jsonl"])
    _count_meta(lineage)

    upstream_paths: list[tuple[str, str | None]] = []  # (path as recorded, mix source name)
    explained: set[str] = set()  # reject stage names the sidecars already count
    usage_file: list[dict[str, Any]] = []
    usage_elsewhere: list[dict[str, Any]] = []
    for file_name in JSON_SIDECARS:
        if file_name not in lineage.sidecars:
            continue
        doc = _read_json(lineage.sidecars[file_name])
        if file_name == "usage.json":
            usage_file += usage_blocks(doc)
        if not isinstance(doc, dict):
            continue
        if file_name != "usage.json":
            usage_elsewhere += usage_blocks(doc.get("usage"))
        step = _read_sidecar(file_name, doc, lineage)
        if step is None:
            continue
        stages, names, upstream, methods = step
        lineage.stages += stages
        explained.update(names)
        upstream_paths += upstream
        _add_methods(lineage, methods)
    # usage.json is the command's own account; report.json may repeat it, so it only counts without one.
    lineage.usage = usage_file or usage_elsewhere

    # Rejects of steps no sidecar describes (adapt, synth filter/dedup): one stage per step name.
    by_stage: dict[str, Counter] = defaultdict(Counter)
    for row in lineage.rejects:
        by_stage[str(row.get("stage") or "?")][str(row.get("reason") or "?")] += 1
    leftover = {k: v for k, v in by_stage.items() if k not in explained}
    if not lineage.stages:
        lineage.stages += _stages_from_meta(lineage, leftover)
    else:
        for stage_name, reasons in leftover.items():
            lineage.stages.append(Stage(stage_name, _kind_of(stage_name), dropped=dict(reasons)))
    _add_methods(lineage, [_kind_of(k) for k in by_stage if _kind_of(k) in ("capfilt", "dedup", "decontam", "judge")])
    if lineage.failures and not any(st.failed for st in lineage.stages):
        reasons = Counter(str(r.get("reason") or r.get("error") or "failed") for r in lineage.failures)
        lineage.stages.append(Stage("failed requests (retried next run)", "failures", failed=dict(reasons)))

    if depth < MAX_DEPTH:
        for value, source_name in upstream_paths:
            found = _resolve_upstream(value, folder)
            if found is None or found.resolve() in seen:
                continue
            try:
                up = describe(found, source_name or found.name, depth + 1, seen)
            except SynthError:
                continue  # an upstream folder that is no dataset (e.g. a raw image folder gone stale)
            for stage in up.stages:
                stage.source = stage.source or up.name
            lineage.upstream.append(up)
            if source_name:  # the upstream's own steps now say what was read
                lineage.stages = [s for s in lineage.stages if not (s.kind == "read" and s.source == source_name)]
    return lineage


def _kind_of(stage_name: str) -> str:
    known = {"adapt": "adapt", "dedup": "dedup", "capfilt": "capfilt", "decontam": "decontam", "judge": "judge",
             "generate": "generate", "pseudo_label": "pseudo-label"}
    return known.get(stage_name, "filter")


def _stages_from_meta(lineage: Lineage, rejects: dict[str, Counter]) -> list[Stage]:
    """A dataset with no sidecar (adapt output, synth filter output, a foreign set): what its meta says."""
    stages = []
    templates = lineage.meta.get("template") or {}
    adapt_rejects = rejects.pop("adapt", Counter())
    if templates:
        sources = lineage.meta.get("source") or {}
        stages.append(Stage(
            "adapt " + ", ".join(templates), "adapt", kept=lineage.rows if not rejects else None, dropped=dict(adapt_rejects),
            settings={"template": ", ".join(templates)}, notes=[f"from {', '.join(sources)}"] if sources else [],
        ))
    elif adapt_rejects:
        rejects["adapt"] = adapt_rejects
    for stage_name, reasons in rejects.items():
        stages.append(Stage(stage_name, _kind_of(stage_name), dropped=dict(reasons)))
    if len(stages) == 1 and stages[0].kept is None:
        stages[0].kept = lineage.rows
        stages[0].seen = lineage.rows + stages[0].dropped_total
    if not stages:
        stages.append(Stage(f"source {lineage.name}", "dataset", kept=lineage.rows))
    return stages


def _mix_filter_names(doc: dict[str, Any]) -> set[str]:
    names = {"dedup"}
    for source in doc.get("sources") or []:
        names.update((source.get("filters") or {}).keys())
    return names


def _mix_stages(doc: dict[str, Any]) -> list[Stage]:
    stages: list[Stage] = []
    for source in doc.get("sources") or []:
        name = source.get("name") or source.get("path")
        stages.append(Stage(f"read {name}", "read", kept=source.get("read"), source=name,
                            settings={"path": source.get("path"), **({"split": source["split"]} if source.get("split") else {})}))
        for filter_name, counts in (source.get("filters") or {}).items():
            stages.append(Stage(f"filter {filter_name} ({name})", "filter", seen=counts.get("seen"), kept=counts.get("kept"),
                                dropped=dict(counts.get("dropped") or {}), source=name))
    dedup = doc.get("dedup")
    if isinstance(dedup, dict):
        stages.append(Stage("dedup (all sources)", "dedup", seen=dedup.get("seen"), kept=dedup.get("kept"),
                            dropped=dict(dedup.get("dropped") or {})))
    for source in doc.get("sources") or []:
        name = source.get("name") or source.get("path")
        pool, in_mix = source.get("after_dedup"), source.get("in_mix")
        stage = Stage(f"sample {name}", "sample", seen=pool, kept=in_mix, source=name)
        if pool is not None and in_mix is not None and in_mix < pool:
            stage.dropped = {"not_sampled": pool - in_mix}
        if source.get("capped"):
            stage.notes.append("capped")
        if source.get("upsampled"):
            stage.notes.append(f"+{source['upsampled']} repeated copies")
        if source.get("share") is not None:
            stage.notes.append(f"{100 * float(source['share']):.1f}% of the mix")
        stages.append(stage)
    split = Stage("split", "split", seen=doc.get("total"), kept=doc.get("total"), settings={"seed": doc.get("seed")})
    split.notes.append(", ".join(f"{k} {doc[k]}" for k in ("train", "validation") if doc.get(k) is not None))
    stages.append(split)
    return stages
