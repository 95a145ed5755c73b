"""The one reader: any source users hand over → synth records in batches.

Sources: a ``save_to_disk`` folder (Dataset or DatasetDict), Parquet, JSONL/JSON, CSV (a file or a folder of
them), an image folder, or a Hugging Face Hub id (with ``config``, ``revision``, ``split``, ``streaming``).
Images stay encoded (``{"bytes", "path"}``; image columns are read with ``Image(decode=False)``), relative
image paths resolve against the dataset's own folder (or ``image_root``, the user's ``--image-root``)
whatever the working directory, and none may leave it.
Rows of peer layouts (TRL, LLaVA, sharegpt, alpaca, OpenAI) are converted by `synth.data.layouts`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.data.hf import EmptyDatasetError, quiet_datasets, without_image_decoding
from synth.data.layouts import RecordError, detect_layout, kind_of, to_record
from synth.errors import SynthError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
FILE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


# ---------------------------------------------------------------- loading


def _pick_split(dsd, split: str | None, source: str):
    from datasets import DatasetDict, IterableDatasetDict

    if not isinstance(dsd, (DatasetDict, IterableDatasetDict)):
        return dsd
    if split:
        if split not in dsd:
            raise SynthError(f"{source}: no split '{split}' (splits: {', '.join(dsd)}); pass --split NAME")
        return dsd[split]
    if "train" in dsd:
        return dsd["train"]
    if len(dsd) == 1:
        return next(iter(dsd.values()))
    raise SynthError(f"{source}: several splits ({', '.join(dsd)}); pass --split NAME")


def _bad_json_line(path: Path) -> tuple[int, str] | None:
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                return lineno, e.msg
            if not isinstance(value, dict):
                return lineno, "a line must hold one JSON object"
    return None


def _is_blank(path: Path) -> bool:
    if path.stat().st_size == 0:
        return True
    if path.stat().st_size > 1 << 16:
        return False
    return not path.read_text(encoding="utf-8", errors="replace").strip()


def _load_files(builder: str, files: list[str], source: str, streaming: bool):
    from datasets import load_dataset

    blank = [f for f in files if _is_blank(Path(f))]
    if blank and len(blank) == len(files):
        raise EmptyDatasetError(f"{blank[0]}: the file is empty; give a file with at least one record")
    files = [f for f in files if f not in blank]
    options = _csv_text_options(files[0]) if builder == "csv" else {}
    try:
        with quiet_datasets():
            dataset = load_dataset(builder, data_files=files, split="train", streaming=streaming, **options)
        return _exact_json_columns(dataset, files) if builder == "json" else dataset
    except Exception as e:  # datasets raises many types; find the real cause for the user
        if builder == "json":
            for f in files:
                if f.endswith(".jsonl"):
                    bad = _bad_json_line(Path(f))
                    if bad:
                        raise SynthError(f"{f}:{bad[0]}: malformed JSON line ({bad[1]}); fix or remove it") from None
        raise SynthError(f"{source}: cannot read as {builder}: {first_line(e)}") from None


def _csv_text_options(path: str) -> dict:
    """How to read a CSV without mangling its text. Only an empty cell is missing (pandas would also take
    "NA", "null", "None" ... for missing). A CSV of a chat layout (messages, conversations,
    prompt/completion, alpaca ...) is read as text, cell for cell: an answer "3" or "007" is not a number,
    "true" not a bool. Other CSVs (labelled sources for adapt) keep pandas' column types."""
    import csv

    from datasets import Features, Value

    options: dict = {"keep_default_na": False, "na_values": [""]}
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        header = next(csv.reader(f), [])
    if header and detect_layout(set(header)) != "raw" and len(set(header)) == len(header):
        options["features"] = Features({name: Value("string") for name in header})
    return options


def _json_paths(features) -> list[list]:
    from datasets.utils.json import get_json_field_paths_from_feature

    return get_json_field_paths_from_feature(features) if features else []


def _exact_json_columns(dataset, files: list[str]):
    """The dataset with its ``Json`` columns read exactly as the files hold them.

    `datasets` reads a field that mixes types (content as a string in one row and a list of parts in the
    next) as a ``Json`` column, and stores a string that parses as JSON as that JSON: the answer
    ``"[1, 3, 5]"`` comes back as a list, ``"3"`` as a number. Those fields are read again here and stored
    as their JSON encoding, which `datasets` decodes back to exactly the value in the file."""
    paths = _json_paths(dataset.features)
    if not paths:
        return dataset
    rows = _json_rows(files)
    if rows is None:  # a shape read by `datasets` only (a JSON object of columns): left as it came
        return dataset
    features = dataset.features
    columns = list(features)

    def generate(files=files):
        for row in _json_rows(files):
            row = {name: row.get(name) for name in columns}
            for path in paths:
                row = _json_encoded_at(row, path)
            yield row

    from datasets import Dataset, IterableDataset

    if isinstance(dataset, IterableDataset):
        return IterableDataset.from_generator(generate, features=features)
    import hashlib

    # the cache key: these files as they are now (an edited file is read again)
    stamp = "exact-json-1|" + "|".join(f"{os.path.abspath(f)}:{os.stat(f).st_size}:{os.stat(f).st_mtime_ns}" for f in files)
    with quiet_datasets():
        return Dataset.from_generator(
            generate, features=features, fingerprint=hashlib.sha256(stamp.encode()).hexdigest()[:16]
        )


def _json_rows(files: list[str]) -> Iterator[dict] | None:
    """The objects of JSON Lines files (also ``.json`` ones, as `datasets` reads them) and of JSON files
    holding a list of objects; None for another shape (e.g. one pretty-printed object of columns)."""
    modes = []
    for f in files:
        with open(f, encoding="utf-8") as handle:
            start = handle.read(4096).lstrip()[:1]
        if f.endswith(".jsonl") or (start == "{" and _is_json_lines(f)):
            modes.append("lines")
        elif start == "[":
            modes.append("list")
        else:
            return None

    def rows() -> Iterator[dict]:
        for f, mode in zip(files, modes):
            with open(f, encoding="utf-8") as handle:
                if mode == "lines":
                    yield from (json.loads(line) for line in handle if line.strip())
                else:
                    yield from json.load(handle)

    return rows()


def _is_json_lines(path: str) -> bool:
    with open(path, encoding="utf-8") as handle:
        try:
            return all(isinstance(json.loads(line), dict) for line in handle if line.strip())
        except json.JSONDecodeError:
            return False


def _json_encoded_at(value: Any, path: list) -> Any:
    """`value` with the field at `path` (keys, 0 for each list item) replaced by its JSON text."""
    if value is None:
        return None
    if not path:
        return json.dumps(value)
    key, rest = path[0], path[1:]
    if key == 0:
        return [_json_encoded_at(item, rest) for item in value] if isinstance(value, list) else value
    if not isinstance(value, dict):
        return value
    return {**value, key: _json_encoded_at(value.get(key), rest)}


def _saved_without_shards(path: Path) -> bool:
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("_data_files") == []


def load(
    source: str | os.PathLike,
    split: str | None = None,
    *,
    config: str | None = None,
    revision: str | None = None,
    streaming: bool = False,
    all_splits: bool = False,
    members: dict | None = None,
):
    """A `datasets` Dataset (IterableDataset when streaming) from a local path or, failing that, a Hub id.
    With `all_splits`, a DatasetDict stays whole (export writes every split). WebDataset shards (a list,
    a glob, a ``.tar`` or a folder of them) are read by `synth.data.webdataset`, `members` saying which
    member extensions fill the image / caption / json columns."""
    from datasets import load_from_disk

    from synth.data import webdataset

    shards = webdataset.shard_paths(source)
    if shards is not None:
        return webdataset.load_shards(shards, members, streaming=streaming)
    source = str(source)
    path = Path(source)
    if path.is_dir():
        if any((path / n).exists() for n in SAVED_MARKERS):
            try:
                with quiet_datasets():
                    loaded = load_from_disk(str(path))
            except Exception as e:
                if _saved_without_shards(path):  # datasets' save_to_disk of 0 rows writes no shard at all
                    raise EmptyDatasetError(f"{source}: the dataset is empty (0 rows); nothing to do") from None
                raise SynthError(f"{source}: cannot load saved dataset: {first_line(e)}") from None
            if all_splits and not split:
                return loaded
            data = _pick_split(loaded, split, source)
            return data.to_iterable_dataset() if streaming else data
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        for suffix, builder in FILE_BUILDERS.items():
            data = [str(p) for p in files if p.suffix.lower() == suffix]
            if data:
                return _load_files(builder, data, source, streaming)
        if any(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
            from datasets import load_dataset

            try:
                with quiet_datasets():
                    return load_dataset("imagefolder", data_dir=str(path), split=split or "train", streaming=streaming)
            except Exception as e:
                raise SynthError(f"{source}: cannot read image folder: {first_line(e)}") from None
        raise SynthError(f"{source}: no dataset found (expected a saved dataset, Parquet, JSONL, CSV or images)")
    if path.is_file():
        builder = FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise SynthError(f"{source}: unknown file type '{path.suffix}' (use .parquet, .jsonl, .json or .csv)")
        return _load_files(builder, [str(path)], source, streaming)
    if path.suffix.lower() in FILE_BUILDERS or source.startswith((".", "/", "~")):
        raise SynthError(f"{source}: no such file or folder")
    loaded = load_hub(source, split, config=config, revision=revision, streaming=streaming, all_splits=all_splits)
    return webdataset.builder_rows(loaded, members)  # a Hub repo of tar shards: the columns of local shards


def load_hub(
    repo_id: str,
    split: str | None = None,
    *,
    config: str | None = None,
    revision: str | None = None,
    streaming: bool = False,
    all_splits: bool = False,
):
    """A dataset from the Hugging Face Hub by id (the `datasets` cache applies)."""
    from datasets import load_dataset

    try:
        with quiet_datasets():
            loaded = load_dataset(
                repo_id, config, split=None if all_splits and not split else (split or "train"),
                revision=revision, streaming=streaming,
            )
    except Exception as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        hint = " (HF_HUB_OFFLINE is set: only datasets already in the local cache load)" if offline else ""
        raise SynthError(
            f"'{repo_id}' is not a local path and could not be loaded from the Hugging Face Hub{hint}: {first_line(e)}"
        ) from None
    return loaded


def base_dir_of(source: str | os.PathLike, image_root: str | os.PathLike | None = None) -> Path | None:
    """The folder image paths must stay inside: `image_root` when given (``--image-root``), else the
    dataset's folder (a file's parent); for a Hub id, the Hugging Face cache, where `datasets` leaves the
    files of image cells that hold a path and no bytes."""
    if image_root is not None:
        from synth.data.images import image_root as checked_root

        return checked_root(image_root)
    path = Path(source)
    if not path.exists():
        return hub_cache_root()
    path = path.resolve()
    return path if path.is_dir() else path.parent


def source_label(source: str | os.PathLike) -> str:
    """The name records give their dataset in ``meta.source``: the same from any working directory and
    without the folders above the dataset (which hold the user's home and end up on a Hub card). A folder
    is its name (``shapes``), a file its folder and name (``humaneval/test.jsonl``), a Hub id itself."""
    path = Path(source)
    if not path.exists():
        return str(source)
    path = path.resolve()
    if path.is_dir() or path.parent == Path(path.anchor):
        return path.name or str(source)
    return f"{path.parent.name}/{path.name}"


def hub_cache_root() -> Path:
    """The folder holding both the `datasets` cache (extracted archives) and the Hub's file cache (data
    files downloaded from a repo): their common parent, usually ``~/.cache/huggingface``."""
    import datasets.config
    from huggingface_hub import constants

    caches = [Path(datasets.config.HF_DATASETS_CACHE).resolve(), Path(constants.HF_HUB_CACHE).resolve()]
    common = Path(os.path.commonpath(caches))
    # caches moved apart (HF_DATASETS_CACHE elsewhere): the datasets cache, never a parent as wide as "/"
    return common if common != Path(common.anchor) else caches[0]


# ---------------------------------------------------------------- the source


@dataclass
class Source:
    """An opened dataset: where it came from, its layout, and its rows as records."""

    name: str
    dataset: Any
    base_dir: Path | None
    layout: str
    columns: list[str] = field(default_factory=list)
    check_images: bool = True

    @property
    def kind(self) -> str:
        return kind_of(self.layout)

    @property
    def label(self) -> str:
        """The dataset's name for ``meta.source`` (see `source_label`)."""
        return source_label(self.name)

    @property
    def num_rows(self) -> int | None:
        return getattr(self.dataset, "num_rows", None) if not _is_iterable(self.dataset) else None

    @property
    def multimodal(self) -> bool:
        """Whether the records carry images (image columns, or an images/image column of a peer layout)."""
        from datasets import Image

        if self.layout == "raw":
            return any(_has_image_feature(f) for f in (self.dataset.features or {}).values())
        return "images" in self.columns or "image" in self.columns or any(
            isinstance(f, Image) for f in (self.dataset.features or {}).values()
        )

    def rows(self, batch_size: int = 256) -> Iterator[list[dict]]:
        """The stored rows, undecoded, in batches (dicts of column → value)."""
        with quiet_datasets():
            for batch in self.dataset.iter(batch_size=batch_size):
                keys = list(batch)
                yield [dict(zip(keys, values)) for values in zip(*batch.values())]

    def batches(
        self,
        batch_size: int = 256,
        on_bad: Callable[[dict, RecordError], None] | None = None,
    ) -> Iterator[list[dict]]:
        """Records in batches. A row that cannot be read (its layout, its image) is an error naming it;
        with `on_bad`, it is handed to `on_bad(stub, error)` and skipped instead."""
        index = 0
        for rows in self.rows(batch_size):
            out = []
            for row in rows:
                index += 1
                where = f"{self.name}: row {index}" + (f" (id {row['id']})" if row.get("id") else "")
                try:
                    out.append(to_record(row, self.layout, where, self.base_dir, self.check_images))
                except SynthError as e:
                    error = e if isinstance(e, RecordError) else RecordError(str(e), getattr(e, "reason", "bad_record"))
                    if "row " not in str(error):
                        error = RecordError(f"{where}: {error}", error.reason)
                    if on_bad is None:
                        raise error from None
                    on_bad({"id": row.get("id") or f"row-{index}"}, error)
            if out:
                yield out

    def records(self, batch_size: int = 256, on_bad=None) -> Iterator[dict]:
        for batch in self.batches(batch_size, on_bad):
            yield from batch


def _is_iterable(dataset) -> bool:
    from datasets import IterableDataset

    return isinstance(dataset, IterableDataset)


def _has_image_feature(feature) -> bool:
    from datasets import Image

    if isinstance(feature, Image):
        return True
    inner = getattr(feature, "feature", None)
    if inner is not None:
        return _has_image_feature(inner)
    if isinstance(feature, dict):
        return any(_has_image_feature(v) for v in feature.values())
    if isinstance(feature, list) and feature:
        return _has_image_feature(feature[0])
    return False


def open_source(
    source: str | os.PathLike,
    split: str | None = None,
    *,
    config: str | None = None,
    revision: str | None = None,
    streaming: bool = False,
    limit: int | None = None,
    layout: str | None = None,
    allow_empty: bool = False,
    check_images: bool = True,
    image_root: str | os.PathLike | None = None,
    members: dict | None = None,
) -> Source:
    """Open a dataset for reading records (see the module docs). An empty dataset is an error unless
    `allow_empty`; `layout` forces a layout instead of detecting it from the columns; `image_root` is the
    folder relative image paths resolve under (default: the dataset's own folder); `members`: the
    WebDataset member extensions of each column (`synth.data.webdataset.Members`)."""
    if isinstance(source, (list, tuple)):  # a list of WebDataset shards
        from synth.data.webdataset import shard_paths, source_name

        name = source_name(shard_paths(source))
        base_dir = None
    else:
        name = str(source)
        base_dir = base_dir_of(source, image_root)  # a missing --image-root fails before any loading
    dataset = load(source, split, config=config, revision=revision, streaming=streaming, members=members)
    dataset = without_image_decoding(dataset)
    if limit is not None:
        dataset = dataset.take(limit) if _is_iterable(dataset) else dataset.select(range(min(limit, len(dataset))))
    columns = list(dataset.column_names or (dataset.features or {}).keys())
    if not allow_empty and not _is_iterable(dataset) and len(dataset) == 0:
        raise EmptyDatasetError(f"{name}: the dataset is empty (0 rows); nothing to do")
    return Source(
        name=name,
        dataset=dataset,
        base_dir=base_dir,
        layout=layout or detect_layout(set(columns)),
        columns=columns,
        check_images=check_images,
    )


def read_records(source: str | os.PathLike, split: str | None = None, **options) -> Iterator[dict]:
    """Shortcut: the records of a source, one at a time."""
    return open_source(source, split, **options).records()


def open_splits(
    source: str | os.PathLike,
    split: str | None = None,
    *,
    config: str | None = None,
    revision: str | None = None,
    check_images: bool = True,
    image_root: str | os.PathLike | None = None,
) -> dict[str | None, Source]:
    """Every split of a source, for commands that write one output per split (export): ``{None: source}``
    for a single dataset (or when `split` picks one), ``{split name: source}`` for a DatasetDict. An
    empty split is kept (its output is empty); a source whose splits are all empty is an error."""
    from datasets import DatasetDict, IterableDatasetDict

    if split is not None:
        return {None: open_source(source, split, config=config, revision=revision, check_images=check_images,
                                  image_root=image_root)}
    base_dir = base_dir_of(source, image_root)
    loaded = load(source, None, config=config, revision=revision, all_splits=True)
    if not isinstance(loaded, (DatasetDict, IterableDatasetDict)):
        loaded = {None: loaded}
    out: dict[str | None, Source] = {}
    for name, dataset in loaded.items():
        dataset = without_image_decoding(dataset)
        columns = list(dataset.column_names or (dataset.features or {}).keys())
        out[name] = Source(
            name=str(source) if name is None else f"{source} (split {name})",
            dataset=dataset,
            base_dir=base_dir,
            layout=detect_layout(set(columns)),
            columns=columns,
            check_images=check_images,
        )
    if all(s.num_rows == 0 for s in out.values()):
        raise EmptyDatasetError(f"{source}: the dataset is empty (0 rows); nothing to do")
    return out
