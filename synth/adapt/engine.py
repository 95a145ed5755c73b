"""The adaptation engine: a template set applied to a dataset through `datasets.Dataset.map`.

The source is opened by the one reader (`synth.data.open_source`: image columns undecoded, relative image
paths resolved against the dataset's own folder) and stays in Arrow (memory-mapped); it is processed in
batches, in `num_proc` processes, straight into a cache file inside the output's temporary folder, so
nothing holds the whole dataset in Python lists. Images travel as encoded bytes and are checked without
decoding pixels (`synth.data.images`: a truncated JPEG or a corrupt PNG is a bad image). Rows are built
directly in the SFT layout of `synth.records` (no per-record pydantic validation); the result is written
through `synth.data.OutputFolder`, rejects (``--on-error skip``) in ``rejects.jsonl`` inside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from synth.adapt.template_set import TemplateSet, load_template_set
from synth.data.images import ImageError, image_ref
from synth.errors import SynthError
from synth.records import content_id, image_hash, sft_features
from synth.templating import TemplateError

# The string escaper of `json.dumps(..., ensure_ascii=False)` (the C one), for JSON written by hand.
_json_str = json.encoder.encode_basestring

ID_COLUMN = "id"
REJECT_COLUMN = "_reject"
REJECT_DETAIL_COLUMN = "_reject_detail"
ROW_COLUMN = "_row"  # the input row an output row came from (dropped after the map)
STAGE_NAME = "adapt"


class FieldError(SynthError):
    """A record lacks a field a template set reads (or it has the wrong shape)."""


class LabelError(FieldError):
    """A record's label is not among the classes of the set."""


def reject_reason(error: BaseException) -> str:
    """Short stable key for the rejects file and the summary."""
    if isinstance(error, LabelError):
        return "unknown_label"
    if isinstance(error, TemplateError):
        return "template_error"
    if isinstance(error, ImageError):
        return "bad_image"
    if isinstance(error, FieldError):
        return "missing_field"
    return "bad_record"


# ---------------------------------------------------------------- deterministic choices


def stable_int(*parts: Any) -> int:
    """A 64-bit integer from the parts; stable across processes and runs (unlike Python's `hash`)."""
    key = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def choose_variant(seed: int, set_name: str, record_id: str, turn: int, count: int) -> int:
    """Which instruction variant a record (and turn) gets; the set name keeps sets from moving in lockstep."""
    return stable_int(seed, set_name, record_id, turn) % count


def shuffled_options(options: list, seed: int, record_id: str, turn: int) -> list:
    """The options in a deterministic per-record (and per-turn) order."""
    order = list(options)
    random.Random(stable_int(seed, record_id, turn, "options")).shuffle(order)
    return order


# ---------------------------------------------------------------- reading fields


_MISSING = object()


def get_path(row: dict, path: str, record_id: str) -> Any:
    """Follow a dotted path (``answers.text.0``) through structs and lists."""
    value: Any = row
    walked = []
    for key in path.split("."):
        if isinstance(value, dict):
            value = value.get(key, _MISSING)
        elif isinstance(value, (list, tuple)) and key.lstrip("-").isdigit():
            index = int(key)
            value = value[index] if -len(value) <= index < len(value) else _MISSING
        else:
            value = _MISSING
        if value is _MISSING:
            where = ".".join(walked) or "the record"
            raise FieldError(f"record {record_id}: field '{path}' not found ({where} has no '{key}')")
        walked.append(key)
    return value


def path_steps(path: str) -> tuple[tuple[str, int | None], ...]:
    """A dotted path split once: each key with its list index (None when it is not a number)."""

    def index(key: str) -> int | None:
        try:
            return int(key) if key.lstrip("-").isdigit() else None
        except ValueError:  # a digit `int` refuses (e.g. "²"): `get_path` reports it
            return None

    return tuple((key, index(key)) for key in path.split("."))


def walk_path(row: dict, steps: tuple[tuple[str, int | None], ...]) -> Any:
    """`get_path` for the hot loop (same rules, no error text): the value, or `_MISSING`."""
    value: Any = row
    for key, index in steps:
        if isinstance(value, dict):
            value = value.get(key, _MISSING)
        elif index is not None and isinstance(value, (list, tuple)):
            value = value[index] if -len(value) <= index < len(value) else _MISSING
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def as_items(value: Any, variable: str, record_id: str) -> list:
    """A list of items; a struct of equal-length lists (a `Sequence` of structs) becomes a list of dicts."""
    if value is None:
        return []
    if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
        keys = list(value)
        return [dict(zip(keys, vals)) for vals in zip(*value.values())]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise FieldError(f"record {record_id}: variable '{variable}' must be a list, got {type(value).__name__}")


# ---------------------------------------------------------------- rendering


class Renderer:
    """Turns one source row into sample rows (SFT layout). Picklable: workers compile their own templates."""

    def __init__(
        self,
        template_set: TemplateSet,
        seed: int = 0,
        source_name: str = "",
        base_dir: str | Path | None = None,
        label_names: dict[str, list[str]] | None = None,
        verify_images: bool = True,
        classes: list[str] | None = None,
    ):
        self.ts = template_set
        self.seed = seed
        self.source_name = source_name
        # a Path stays as it is: an `ImageRoot` (--image-root) keeps its type, for its error messages
        self.base_dir = (base_dir if isinstance(base_dir, Path) else Path(base_dir)) if base_dir else None
        self.label_names = label_names or {}
        self.verify_images = verify_images
        self.multimodal = template_set.multimodal
        if template_set.classes is not None and classes is None:
            classes = template_set.classes.names
            if classes is None:
                raise SynthError(
                    f"template set '{template_set.name}' needs its class list: pass classes (--classes), "
                    "or use `class_list` to read it from the dataset"
                )
        self.classes = list(classes) if classes is not None else None
        self._class_set = set(self.classes or ())
        self._ignore_case = template_set.classes is not None and template_set.classes.ignore_case
        self._folded = {c.casefold(): c for c in reversed(self.classes or ())}
        # an integer label is an index into the list (as in a ClassLabel column) unless the names are numbers
        self._index_labels = not any(_is_int_text(c) for c in self._class_set)
        self._text_variables = [
            (var, path, path_steps(path))
            for var, path in template_set.variables.items()
            if not (var == "image" and template_set.multimodal)
        ]
        # Per-set constants of the hot path, computed once: the key prefix of `choose_variant` and the
        # fixed part of the meta JSON (written by hand in `dump_meta`'s sorted-key form, see `meta_json`).
        self._variant_prefix = f"{seed}\x1f{template_set.name}\x1f"
        self._variant_count = len(template_set.instructions)
        self._meta_source = '"source": ' + _json_str(str(source_name)) + ', "source_id": '
        self._base_resolved = self.base_dir.resolve() if self.base_dir else None
        self._image_steps = path_steps(template_set.variables["image"]) if self.multimodal else ()
        self._meta_rest = (
            ', "task": ' + _json_str(template_set.task) + ', "template": ' + _json_str(template_set.name)
        )

    # -- one record

    def variables(self, row: dict, record_id: str) -> dict[str, Any]:
        values: dict[str, Any] = dict(self.ts.constants)
        for var, path, steps in self._text_variables:
            # plain column names are the common case: skip the path walk
            value = row[path] if path in row else walk_path(row, steps)
            if value is _MISSING:
                get_path(row, path, record_id)  # raises the error that says where the path stops
            if value is None:  # jinja would print "None" into the sample
                raise FieldError(f"record {record_id}: field '{path}' (variable '{var}') is empty (null)")
            names = self.label_names.get(var)
            if names is not None and isinstance(value, int) and 0 <= value < len(names):
                value = names[value]
            values[var] = value
        if self.classes is not None:
            values[self.ts.classes.variable] = self.class_of(values[self.ts.classes.variable], record_id)
            values["classes"] = self.classes
        return values

    def class_of(self, value: Any, record_id: str) -> str:
        """The record's class name; a label outside the class list is an error, never a made-up answer."""
        text = str(value)
        if not isinstance(value, (dict, list)):
            if text in self._class_set:
                return text
            if self._ignore_case and text.casefold() in self._folded:
                return self._folded[text.casefold()]
        if self._index_labels and isinstance(value, int) and not isinstance(value, bool):
            if 0 <= value < len(self.classes):
                return self.classes[value]
        shown = ", ".join(self.classes[:12]) + (f", ... ({len(self.classes)} in all)" if len(self.classes) > 12 else "")
        raise LabelError(
            f"record {record_id}: label {value!r} (variable '{self.ts.classes.variable}') is not among the "
            f"classes ({shown}); fix the record or pass --classes with the full list"
        )

    def image(self, row: dict, record_id: str) -> dict:
        column = self.ts.variables["image"]
        # The one resolver: paths inside the dataset folder only; bytes checked whole (truncated JPEGs too).
        ref = image_ref(get_path(row, column, record_id), self.base_dir, record_id, check=self.verify_images)
        return {"bytes": ref["bytes"], "path": None}  # no source path in the output: it is location-free

    def image_path(self, row: dict) -> str | None:
        """The row's image path relative to the dataset folder, for provenance (``meta.source_image``):
        a relative path as the source holds it, an absolute one (an image folder) inside the folder.
        None for embedded images without a name and for paths outside the folder (never a home path)."""
        cell = walk_path(row, self._image_steps)
        path = cell.get("path") if isinstance(cell, dict) else cell if isinstance(cell, str) else None
        if not path or path.startswith("data:"):
            return None
        candidate = Path(path)
        if not candidate.is_absolute():
            return candidate.as_posix()
        if self._base_resolved is None:
            return None
        try:
            return candidate.resolve().relative_to(self._base_resolved).as_posix()
        except (ValueError, OSError):
            return None

    def turn_variables(self, base: dict, item: Any, record_id: str, turn: int) -> dict:
        mc = self.ts.multiple_choice
        if item is None and mc is None:
            return base  # nothing to add; rendering only reads the variables
        v = dict(base)
        if item is not None:
            if isinstance(item, dict):
                v.update(item)
            v["item"] = item
            v["index"] = turn
        if mc is not None:
            options = v.get(mc.options)
            answer = v.get(mc.answer)
            if not isinstance(options, list) or not options:
                raise FieldError(
                    f"record {record_id}: multiple choice needs a non-empty list in '{mc.options}'"
                )
            if answer not in options:
                raise FieldError(f"record {record_id}: answer {answer!r} is not among the options {options}")
            options = shuffled_options(options, self.seed, record_id, turn)
            index = options.index(answer)
            v[mc.options] = options
            v["answer_index"] = index
            v["answer_letter"] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[index]
        return v

    def render_turn(self, v: dict, record_id: str, turn: int) -> tuple[int, str, str]:
        compiled = self.ts.compiled
        # = choose_variant(self.seed, self.ts.name, record_id, turn, count), with the key prefix built once
        key = f"{self._variant_prefix}{record_id}\x1f{turn}".encode()
        k = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % self._variant_count
        instruction = compiled.instructions[k](v, record_id).strip()
        answer = compiled.answer(v, record_id).strip()
        if not instruction or not answer:
            which = "answer" if instruction else f"instructions[{k}]"
            raise FieldError(f"record {record_id}: template set '{self.ts.name}' {which} rendered empty text")
        return k, instruction, answer

    def render_system(self, v: dict, record_id: str) -> str | None:
        compiled = self.ts.compiled
        if compiled.system is None:
            return None
        return compiled.system(v, record_id).strip()

    def build(
        self, system: str | None, turns: list[tuple[str, str]], image: dict | None
    ) -> tuple[list, list]:
        """Messages (and images) in the Arrow layout: parts when multimodal, plain strings otherwise."""
        messages = []
        if self.multimodal:
            if system is not None:
                messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
            for i, (instruction, answer) in enumerate(turns):
                parts = [{"type": "text", "text": instruction}]
                if i == 0:  # the image goes with the first user turn only
                    image_part = {"type": "image", "text": None}
                    parts = (
                        [image_part, *parts] if self.ts.image_position == "before" else [*parts, image_part]
                    )
                messages.append({"role": "user", "content": parts})
                messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
            return messages, [image]
        if system is not None:
            messages.append({"role": "system", "content": system})
        for instruction, answer in turns:
            messages.append({"role": "user", "content": instruction})
            messages.append({"role": "assistant", "content": answer})
        return messages, []

    def meta_json(self, meta: dict) -> str:
        """``dump_meta(meta)`` for the meta dicts built here, written directly: it runs once per sample and
        the general encoder costs more than the rendering. Keys in sorted order, as ``sort_keys`` writes
        them: item < items < source < source_id < source_image < task < template < variant < variants."""
        text = "{"
        if "item" in meta:
            text += f'"item": {meta["item"]}, '
        if "items" in meta:
            text += '"items": [' + ", ".join(map(str, meta["items"])) + "], "
        text += self._meta_source + _json_str(meta["source_id"])
        if "source_image" in meta:
            text += ', "source_image": ' + _json_str(meta["source_image"])
        text += self._meta_rest
        if "variant" in meta:
            return text + f', "variant": {meta["variant"]}}}'
        return text + ', "variants": [' + ", ".join(map(str, meta["variants"])) + "]}"

    def render_record(self, row: dict, record_id: str) -> list[dict]:
        """All samples of one source row: ``{"id", "messages", "images", "meta"}`` (meta as a dict)."""
        return [
            {"id": sample_id, "messages": messages, "images": images, "meta": meta}
            for sample_id, messages, images, meta in self._render(row, record_id)
        ]

    def _render(self, row: dict, record_id: str) -> list[tuple[str, list, list, dict]]:
        """The samples of one row as ``(id, messages, images, meta)`` tuples."""
        base = self.variables(row, record_id)
        image = self.image(row, record_id) if self.multimodal else None
        # the image's hash goes into every sample's id: compute it once per record
        image_digests = [image_hash(image["bytes"])] if image else []
        meta_base = {
            "source": self.source_name,
            "source_id": record_id,
            "template": self.ts.name,
            "task": self.ts.task,
        }
        if image is not None:
            image_path = self.image_path(row)
            if image_path:
                meta_base["source_image"] = image_path
        items_cfg = self.ts.items

        if items_cfg is None:
            v = self.turn_variables(base, None, record_id, 0)
            k, instruction, answer = self.render_turn(v, record_id, 0)
            messages, images = self.build(self.render_system(v, record_id), [(instruction, answer)], image)
            meta = {**meta_base, "variant": k}
            return [(content_id(messages, image_digests=image_digests), messages, images, meta)]

        items = as_items(base[items_cfg.variable], items_cfg.variable, record_id)
        indexed = list(enumerate(items))
        if items_cfg.unique:
            seen = Counter(it.get(items_cfg.unique) if isinstance(it, dict) else it for it in items)
            indexed = [
                (i, it)
                for i, it in indexed
                if seen[it.get(items_cfg.unique) if isinstance(it, dict) else it] == 1
            ]

        samples = []
        if items_cfg.mode == "expand":
            for turn, item in indexed:
                v = self.turn_variables(base, item, record_id, turn)
                k, instruction, answer = self.render_turn(v, record_id, turn)
                messages, images = self.build(
                    self.render_system(v, record_id), [(instruction, answer)], image
                )
                meta = {**meta_base, "variant": k, "item": turn}
                samples.append((content_id(messages, image_digests=image_digests), messages, images, meta))
            return samples

        # group: one conversation per `max_turns` items, the image in its first user turn
        size = items_cfg.max_turns
        for start in range(0, len(indexed), size):
            chunk = indexed[start : start + size]
            turns, variants, system = [], [], None
            for turn, item in chunk:
                v = self.turn_variables(base, item, record_id, turn)
                if system is None:
                    system = self.render_system(v, record_id)
                k, instruction, answer = self.render_turn(v, record_id, turn)
                turns.append((instruction, answer))
                variants.append(k)
            messages, images = self.build(system, turns, image)
            meta = {**meta_base, "variants": variants, "items": [t for t, _ in chunk]}
            samples.append((content_id(messages, image_digests=image_digests), messages, images, meta))
        return samples

    # -- a batch, as `Dataset.map(batched=True, with_indices=True)` calls it

    def map_batch(self, batch: dict[str, list], indices: list[int], skip_errors: bool = False):
        """The output rows of a batch as a `pyarrow.Table` in the output schema: pyarrow converts the
        nested ``messages`` in one C call, cheaper than `datasets` encoding the Python lists itself."""
        import pyarrow as pa

        columns_out = self.map_batch_columns(batch, indices, skip_errors)
        schema = self._output_schema
        return pa.Table.from_arrays(
            [pa.array(columns_out[f.name], type=f.type) for f in schema], schema=schema
        )

    @cached_property
    def _output_schema(self):
        return _output_features(self.ts.multimodal).arrow_schema

    def map_batch_columns(
        self, batch: dict[str, list], indices: list[int], skip_errors: bool = False
    ) -> dict[str, list]:
        columns = list(batch)
        ids = batch.get(ID_COLUMN)
        out: dict[str, list] = {
            "id": [],
            "messages": [],
            "meta": [],
            REJECT_COLUMN: [],
            REJECT_DETAIL_COLUMN: [],
            ROW_COLUMN: [],
        }
        if self.multimodal:
            out["images"] = []
        for i, (index, values) in enumerate(zip(indices, zip(*batch.values()))):
            row = dict(zip(columns, values))
            record_id = str(ids[i]) if ids is not None and ids[i] is not None else f"row-{index}"
            try:
                samples = self._render(row, record_id)
            except Exception as e:
                if not skip_errors:
                    if isinstance(e, SynthError):
                        raise
                    raise SynthError(f"record {record_id}: {type(e).__name__}: {e}") from e
                # A rejected record keeps one placeholder row (its source id and why); dropped after the map.
                out["id"].append(record_id)
                out["messages"].append([])
                out["meta"].append("")
                out[REJECT_COLUMN].append(reject_reason(e))
                out[REJECT_DETAIL_COLUMN].append(
                    str(e) if isinstance(e, SynthError) else f"record {record_id}: {type(e).__name__}: {e}"
                )
                out[ROW_COLUMN].append(index)
                if self.multimodal:
                    out["images"].append([])
                continue
            for sample_id, messages, images, meta in samples:
                out["id"].append(sample_id)
                out["messages"].append(messages)
                out["meta"].append(self.meta_json(meta))
                out[REJECT_COLUMN].append(None)
                out[REJECT_DETAIL_COLUMN].append(None)
                out[ROW_COLUMN].append(index)
                if self.multimodal:
                    out["images"].append(images)
        return out


def _is_int_text(text: str) -> bool:
    return text.lstrip("-").isdigit()


# ---------------------------------------------------------------- whole datasets


def parse_classes(value: str | list[str] | None) -> list[str] | None:
    """``--classes a,b,c`` (or a list, from a recipe) as a list of names; duplicates and blanks are errors."""
    if value is None:
        return None
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else [str(n).strip() for n in value]
    if not names or any(not n for n in names):
        raise SynthError(f"--classes {value!r}: give the class names separated by commas, e.g. --classes cat,dog")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SynthError(f"--classes: class '{repeated[0]}' is listed twice")
    return names


def class_list(dataset, ts: TemplateSet, classes: list[str] | None = None) -> tuple[list[str] | None, str | None]:
    """The class list a set with `classes:` renders with, and a note when it was guessed from the data.

    First to last: `classes` (``--classes``), the names of a ClassLabel column, the set's own ``names``,
    the distinct labels of the dataset (sorted: numbers by value). None for a set without `classes:`.
    """
    from datasets import ClassLabel

    if ts.classes is None:
        if classes:
            raise SynthError(
                f"--classes (recipe: classes:): template set '{ts.name}' has no class list to set "
                "(it has no `classes:` section)"
            )
        return None, None
    if classes:
        return list(classes), None
    path = ts.variables[ts.classes.variable]
    feature = dataset.features.get(path)
    if isinstance(feature, ClassLabel):
        return list(feature.names), None
    if ts.classes.names:
        return list(ts.classes.names), None
    if path in dataset.column_names:
        values = dataset.unique(path)
    else:
        steps = path_steps(path)
        values = {walk_path(row, steps) for row in dataset.select_columns([path.split(".", 1)[0]])}
    values = {v for v in values if v is not None and v is not _MISSING and not isinstance(v, (dict, list))}
    def is_number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    names = [str(v) for v in sorted(v for v in values if is_number(v))]
    names = list(dict.fromkeys(names + sorted(str(v) for v in values if not is_number(v))))
    if not names:
        raise SynthError(f"template set '{ts.name}': column '{path}' has no labels to take the classes from; "
                         "pass --classes")
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    note = (f"classes taken from the {len(names)} distinct values of '{path}': {shown}; "
            "pass --classes (recipe: classes:) to give the list and its order")
    return names, note


@dataclass
class AdaptResult:
    dataset: Any  # datasets.Dataset in the SFT layout
    records: int
    rejects: list[dict] = field(default_factory=list)
    out: Path | None = None
    rejects_file: Path | None = None
    notes: list[str] = field(default_factory=list)  # e.g. where the class list came from
    rows_from: Any = None  # numpy array: the input row of each sample, in output order

    @property
    def samples(self) -> int:
        return len(self.dataset)

    @property
    def skipped(self) -> int:
        return len(self.rejects)

    def reasons(self) -> Counter:
        return Counter(r["reason"] for r in self.rejects)

    def report(self, ts: TemplateSet, seed: int) -> dict[str, Any]:
        """What ``report.json`` holds (no paths: the same run gives the same bytes wherever it runs)."""
        return {
            "stage": STAGE_NAME,
            "template": ts.name,
            "task": ts.task,
            "seed": seed,
            "records": self.records,
            "samples": self.samples,
            "skipped": dict(sorted(self.reasons().items())),
        }


def check_columns(dataset, ts: TemplateSet, source_name: str) -> None:
    available = dataset.column_names
    for var, column in ts.columns.items():
        if column not in available:
            raise SynthError(
                f"{source_name}: template set '{ts.name}' reads column '{column}' (variable '{var}'), "
                f"which the dataset lacks (columns: {', '.join(available)}); pass --map {var}=COLUMN"
            )


def item_fields(features, path: str) -> set[str] | None:
    """The keys of the items in the list column at `path` (dotted), from the dataset's features; an empty
    set for plain values; None when the features do not say (e.g. JSON-typed columns)."""
    from datasets import LargeList, List, Value

    feature: Any = features
    for key in path.split("."):
        if isinstance(feature, (List, LargeList)) and key.lstrip("-").isdigit():
            feature = feature.feature
        elif isinstance(feature, dict) and key in feature:
            feature = feature[key]
        else:
            return None
    if (
        isinstance(feature, dict)
        and feature
        and all(isinstance(f, (List, LargeList)) for f in feature.values())
    ):
        return set(feature)  # a Sequence of structs: a struct of lists
    if isinstance(feature, (List, LargeList)):
        inner = feature.feature
    elif isinstance(feature, list) and feature:
        inner = feature[0]
    else:
        return None
    if isinstance(inner, dict):
        return set(inner)
    return set() if isinstance(inner, Value) else None


def _prepare(dataset, ts: TemplateSet):
    """Only the columns the set reads (+ id); image columns as encoded bytes; ClassLabel names."""
    from datasets import ClassLabel, Image

    needed = sorted(set(ts.columns.values()) | ({ID_COLUMN} & set(dataset.column_names)))
    dataset = dataset.select_columns(needed)
    if ts.multimodal:
        column = ts.columns["image"]
        if isinstance(dataset.features[column], Image) and dataset.features[column].decode:
            dataset = dataset.cast_column(column, Image(decode=False))
    label_names = {
        var: dataset.features[path].names
        for var, path in ts.variables.items()
        if path in dataset.features and isinstance(dataset.features[path], ClassLabel)
    }
    return dataset, label_names


def _output_features(multimodal: bool):
    from datasets import Value

    features = sft_features(multimodal)
    features[REJECT_COLUMN] = Value("string")
    features[REJECT_DETAIL_COLUMN] = Value("string")
    features[ROW_COLUMN] = Value("int64")
    return features


def adapt_dataset(
    dataset,
    template_set: TemplateSet,
    *,
    seed: int = 0,
    source_name: str = "",
    source_label: str | None = None,
    base_dir: str | Path | None = None,
    num_proc: int | None = None,
    on_error: str = "fail",
    cache_dir: str | Path | None = None,
    batch_size: int = 1000,
    verify_images: bool = True,
    classes: list[str] | None = None,
) -> AdaptResult:
    """Apply a template set to a `datasets.Dataset`; returns the adapted dataset and the rejected records.

    `source_name` names the source in errors; `source_label` (default: `source_name`) is what samples record
    as ``meta.source``. `base_dir` is the folder relative image paths resolve against (None: only embedded
    images).
    `cache_dir` is where the map writes its Arrow files (default: a temporary folder of `datasets`); the
    source folder is never written to. `classes` is the class list of a set with `classes:` (default: see
    `class_list`; the note saying it was taken from the data is in the result's `notes`).
    """
    import numpy as np
    import pyarrow.compute as pc

    if on_error not in ("fail", "skip"):
        raise SynthError(f"--on-error must be 'fail' or 'skip', not '{on_error}'")
    ts = template_set
    check_columns(dataset, ts, source_name or "source")
    if ts.items is not None:  # the item keys the variants use, against the keys the data's items have
        ts.check_variables(item_fields(dataset.features, ts.variables[ts.items.variable]))
    else:
        ts.check_variables()
    classes, note = class_list(dataset, ts, classes)
    notes = [note] if note else []
    records = len(dataset)
    if records == 0:  # `map` would not run at all, so the output columns would be missing
        from datasets import Dataset

        features = sft_features(ts.multimodal)
        return AdaptResult(dataset=Dataset.from_dict({k: [] for k in features}, features=features), records=0,
                           notes=notes, rows_from=np.zeros(0, dtype=np.int64))
    dataset, label_names = _prepare(dataset, ts)
    source_label = source_name if source_label is None else source_label
    renderer = Renderer(ts, seed, source_label, base_dir, label_names, verify_images, classes)

    fingerprint = hashlib.sha256(
        json.dumps(
            [
                dataset._fingerprint,
                ts.model_dump(mode="json"),
                seed,
                source_name,
                source_label,
                str(base_dir),
                on_error,
                verify_images,
                classes,
            ],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:32]
    cache_file = str(Path(cache_dir) / f"adapt-{fingerprint}.arrow") if cache_dir else None
    num_proc = num_proc if num_proc and num_proc > 1 and records > 1 else None
    mapped = dataset.map(
        renderer.map_batch,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        fn_kwargs={"skip_errors": on_error == "skip"},
        remove_columns=dataset.column_names,
        features=_output_features(ts.multimodal),
        num_proc=num_proc,
        cache_file_name=cache_file,
        load_from_cache_file=False,
        new_fingerprint=fingerprint,
        desc=f"adapting with {ts.name}",
    )

    rejects: list[dict] = []
    flags = pc.is_valid(mapped.data.column(REJECT_COLUMN))
    rejected_count = pc.sum(flags).as_py() or 0
    if rejected_count:
        rejected = np.flatnonzero(flags.to_numpy(zero_copy_only=False))
        part = mapped.select(rejected).select_columns([ID_COLUMN, REJECT_COLUMN, REJECT_DETAIL_COLUMN])
        rejects = [
            {
                "id": r[ID_COLUMN],
                "stage": STAGE_NAME,
                "reason": r[REJECT_COLUMN],
                "detail": r[REJECT_DETAIL_COLUMN],
            }
            for r in part
        ]
        mapped = mapped.select(np.flatnonzero(~flags.to_numpy(zero_copy_only=False)))
    rows_from = mapped.with_format("arrow")[ROW_COLUMN].to_numpy()
    mapped = mapped.remove_columns([REJECT_COLUMN, REJECT_DETAIL_COLUMN, ROW_COLUMN])
    return AdaptResult(dataset=mapped, records=records, rejects=rejects, notes=notes, rows_from=rows_from)


def parse_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """``["var=column", ...]`` from the CLI into a dict, with a clear error for a malformed pair."""
    mapping = {}
    for pair in pairs:
        var, sep, column = pair.partition("=")
        if not sep or not var.strip() or not column.strip():
            raise SynthError(f"--map '{pair}': expected VARIABLE=COLUMN, e.g. --map caption=text")
        mapping[var.strip()] = column.strip()
    return mapping


def adapt(
    source: str | os.PathLike,
    template: str | os.PathLike | TemplateSet,
    out: str | os.PathLike,
    *,
    split: str | None = None,
    config: str | None = None,
    revision: str | None = None,
    seed: int = 0,
    num_proc: int | None = None,
    limit: int | None = None,
    mapping: dict[str, str] | None = None,
    on_error: str = "fail",
    overwrite: bool = False,
    verify_images: bool = True,
    classes: list[str] | None = None,
    image_root: str | os.PathLike | None = None,
) -> AdaptResult:
    """Read SOURCE, adapt it with a template set, write the SFT dataset to the folder OUT (appears whole or
    not at all), with ``rejects.jsonl`` and ``report.json`` inside it. An empty source is an error.
    `classes`: the class list of a set with `classes:` (see `class_list`); `image_root`: the folder relative
    image paths resolve under (default: the dataset's folder)."""
    from datasets import load_from_disk

    from synth.data import REJECTS, REPORT, OutputFolder, check_output, open_source, quiet_datasets, save

    ts = template if isinstance(template, TemplateSet) else load_template_set(template)
    if mapping:
        ts = ts.with_mapping(mapping)
    inputs = [source] + ([image_root] if image_root else [])
    check_output(out, overwrite, inputs=inputs)  # before reading anything
    src = open_source(source, split, config=config, revision=revision, limit=limit, image_root=image_root)
    with OutputFolder(out, overwrite) as folder:
        # The map's Arrow files live in the output's temporary folder (same disk) and go with it.
        result = adapt_dataset(
            src.dataset,
            ts,
            seed=seed,
            source_name=str(source),
            source_label=src.label,
            base_dir=src.base_dir,
            num_proc=num_proc,
            on_error=on_error,
            cache_dir=folder.scratch("adapt"),
            verify_images=verify_images,
            classes=classes,
        )
        for reject in result.rejects:
            folder.rejects.write(reject["id"], reject["stage"], reject["reason"], reject["detail"])
        save(result.dataset, folder.path)
        folder.write_json(REPORT, result.report(ts, seed))
    with quiet_datasets():
        result.dataset = load_from_disk(str(folder.final))
    result.out = folder.final
    result.rejects_file = folder.final / REJECTS if result.rejects else None
    return result
