"""Reading and writing in Python: `read` (any source → a `datasets.Dataset`, through the one reader),
`write` (a Dataset or records → a synth dataset folder or an export format), and `saved_input` (an
in-memory Dataset saved once, so a pipeline's run folder can name it as its source)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from synth.errors import SynthError

INPUTS_DIR = "inputs"  # under synth's user cache (SYNTH_CACHE_DIR): in-memory datasets a pipeline ran on


def read(source: str | os.PathLike, split: str | None = None, *, config: str | None = None,
         revision: str | None = None, limit: int | None = None, streaming: bool = False,
         image_root: str | os.PathLike | None = None):
    """The rows of any dataset synth reads (a ``save_to_disk`` folder, Parquet, JSONL, CSV, an image
    folder, WebDataset shards, a Hub id) as a `datasets.Dataset` (an `IterableDataset` when `streaming`),
    read by `synth.data.open_source`. Images stay encoded (``{"bytes", "path"}``), not decoded."""
    from synth.data import open_source, quiet_datasets

    with quiet_datasets():
        return open_source(source, split, config=config, revision=revision, limit=limit, streaming=streaming,
                           image_root=image_root).dataset


def write(data: Any, out: str | os.PathLike, *, format: str | None = None, overwrite: bool = False,
          name: str | None = None, jsonl: bool = False) -> Path:
    """Write `data` (a `datasets.Dataset` / `DatasetDict`, or an iterable of synth records: SFT with
    ``messages`` or preference pairs with ``prompt``/``chosen``/``rejected``) to the folder `out`, whole or
    not at all: a synth dataset folder (``save_to_disk``), or with `format` an export for a trainer (one of
    `synth.export.FORMATS`: trl, llamafactory, llava, openai, webdataset; `name` and `jsonl` as in
    ``synth export``). Returns `out`."""
    from datasets import Dataset, DatasetDict, IterableDataset

    if isinstance(data, IterableDataset):
        raise SynthError("write: an IterableDataset cannot be written whole; pass a Dataset or records")
    if not isinstance(data, (Dataset, DatasetDict)):
        if isinstance(data, (str, bytes, dict)) or not isinstance(data, Iterable):
            raise SynthError(f"write: expected a datasets.Dataset or an iterable of records, not {type(data).__name__}")
        data = _records_dataset(data) if format else data
    if format is not None:
        from synth.export import export_dataset

        return export_dataset(data, out, format, overwrite=overwrite, name=name, jsonl=jsonl,
                              show_progress=False).out
    from synth.data import OutputFolder, save, write_records

    with OutputFolder(out, overwrite) as folder:
        if isinstance(data, (Dataset, DatasetDict)):
            save(data, folder.path)
        else:
            kind, records = _kind(data)
            write_records(records, folder.path, kind=kind)
    return Path(out)


def _kind(records: Iterable[dict]) -> tuple[str, Iterable[dict]]:
    from synth.data.writer import peek

    head, records = peek(records, 1)
    if head and not isinstance(head[0], dict):
        raise SynthError(f"write: records are dicts, not {type(head[0]).__name__}")
    if head and "chosen" in head[0]:
        return "preference", records
    if head and "messages" not in head[0]:
        raise SynthError(f"write: record {head[0].get('id', 1)} has no 'messages' (SFT) nor 'chosen' (preference); "
                         "write other rows as a datasets.Dataset")
    return "sft", records


def _records_dataset(records: Iterable[dict]):
    from synth.data import build_dataset

    kind, records = _kind(records)
    return build_dataset(records, kind=kind)


def saved_input(dataset) -> Path:
    """The folder holding `dataset` (a `Dataset` or `DatasetDict`), saved once under synth's cache by its
    fingerprint: the same data gives the same folder, so a second run reuses every stage."""
    from datasets import Dataset, DatasetDict

    from synth.data import save
    from synth.io import atomic_path
    from synth.paths import cache_dir
    from synth.run.manifest import digest

    if isinstance(dataset, DatasetDict):
        key = digest({split: ds._fingerprint for split, ds in dataset.items()})[:32]
    elif isinstance(dataset, Dataset):
        key = dataset._fingerprint
    else:
        raise SynthError(f"an in-memory source is a datasets.Dataset or DatasetDict, not {type(dataset).__name__} "
                         "(an IterableDataset cannot be saved: pass its path or Hub id)")
    folder = cache_dir() / INPUTS_DIR / key
    if not folder.is_dir():  # written whole or not at all: an existing folder is complete
        with atomic_path(folder) as target:
            save(dataset, target)
    return folder
