"""The one writer: records from a generator → a dataset folder that appears whole or not at all.

`OutputFolder` builds the output in a temporary sibling folder and renames it into place at the end, so
a crash (even ``kill -9``) leaves the previous output untouched and no partial file at the final path.
Everything a command writes lives inside the folder: the dataset (``save_to_disk`` layout), and the
sidecars ``rejects.jsonl`` (records a stage decided to drop), ``failures.jsonl`` (records whose LLM request
failed: retried by the next run), ``report.json`` and ``usage.json``. Stale sidecars an older synth wrote
beside the folder (``OUT.rejects.jsonl``, ...) are removed when the new output lands.

Records go through `datasets.Dataset.from_generator` (Arrow batches written as they come, never a Python
list of the whole dataset). Images keep their encoded bytes: a JPEG stays a JPEG.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from synth.data.hf import quiet_datasets
from synth.errors import DiskFull, SynthError, disk_full_error, known_secrets, redact_data
from synth.ownership import check_replaceable, mark

LEGACY_SIDECARS = (".rejects.jsonl", ".report.json", ".usage.json", ".failures.jsonl")
REJECTS = "rejects.jsonl"
FAILURES = "failures.jsonl"
REPORT = "report.json"
USAGE = "usage.json"


def check_output(out: str | os.PathLike, overwrite: bool, inputs: Iterable[Any] = ()) -> Path:
    """Fail early (before any work) when OUT exists and may not be replaced: without overwrite, or (with
    it) when synth did not write it or it is / holds one of `inputs`."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise SynthError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    if overwrite:
        check_replaceable(out, inputs, choose="choose another --out")
    return out


class RecordLog:
    """A JSONL sidecar of records a stage dropped or could not process (id, stage, reason, detail, ...).
    Opened lazily: no file when nothing was logged."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._file = None
        self.count = 0
        self.first: dict | None = None  # the first entry, for an error line once the file is gone
        self._secrets: list[str] = []

    def write(self, record_id: Any, stage: str, reason: str, detail: str = "", **extra: Any) -> None:
        self.count += 1
        if self.first is None:
            self.first = {"id": record_id, "stage": stage, "reason": reason, "detail": detail}
        if self.path is None:
            return
        if self._file is None:
            self._file = open(self.path, "w", encoding="utf-8")
            self._secrets = known_secrets()
        # a failure's detail may quote a server that repeated the key: redacted like every error text
        entry = redact_data({"id": record_id, "stage": stage, "reason": reason, "detail": detail, **extra},
                            self._secrets)
        self._file.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class OutputFolder:
    """``with OutputFolder(out, overwrite) as folder:`` write into ``folder.path``; renamed onto `out` when
    the block ends without an error, removed otherwise."""

    def __init__(self, out: str | os.PathLike, overwrite: bool = False, inputs: Iterable[Any] = ()):
        self.final = check_output(out, overwrite, inputs)
        self.overwrite = overwrite
        self._tmp: Path | None = None
        self.path: Path = self.final
        self.rejects = RecordLog(None)
        self.failures = RecordLog(None)
        self.committed = False

    def __enter__(self) -> OutputFolder:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(self.final)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.", suffix=".tmp", dir=self.final.parent))
        self.path = self._tmp / self.final.name
        try:
            self.path.mkdir()
            mark(self.path)  # a later --overwrite may replace this folder, and only such a folder
        except BaseException as e:  # no __exit__ when __enter__ fails: clean up here
            shutil.rmtree(self._tmp, ignore_errors=True)
            if disk_full_error(e) is not None:
                raise DiskFull(self.final) from None
            raise
        self.rejects = RecordLog(self.path / REJECTS)
        self.failures = RecordLog(self.path / FAILURES)
        return self

    def write_json(self, name: str, value: Any) -> Path:
        target = self.path / name
        with open(target, "w", encoding="utf-8") as f:
            json.dump(redact_data(value), f, ensure_ascii=False, indent=2, default=str)
            f.write("\n")
        return target

    def scratch(self, name: str) -> Path:
        """A folder for temporary files on the same disk, outside the output; removed with the temp folder."""
        assert self._tmp is not None
        path = self._tmp / f".{name}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._tmp is not None
        try:
            self.rejects.close()
            self.failures.close()
            if exc_type is None:
                _fsync_tree(self.path)
                if self.final.exists():
                    if not self.overwrite:
                        raise SynthError(f"{self.final} already exists; pass --overwrite to replace it")
                    check_replaceable(self.final, (), choose="choose another --out")
                    os.replace(self.final, self._tmp / ".old")
                os.replace(self.path, self.final)
                self.committed = True
                for suffix in LEGACY_SIDECARS:  # an older synth's sidecars beside the folder are stale now
                    stale = self.final.with_name(self.final.name + suffix)
                    if stale.is_file():
                        stale.unlink()
        except BaseException as e:
            if disk_full_error(e) is not None:
                raise DiskFull(self.final) from None
            raise
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)
        if exc is not None and disk_full_error(exc) is not None:
            raise DiskFull(self.final) from None  # the temp folder is gone: nothing half-written is left


def _remove_stale_temps(final: Path) -> None:
    """Temp folders a killed run left beside the output (``.NAME.*.tmp``) hold nothing anyone needs."""
    for stale in final.parent.glob(f".{final.name}.*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def _fsync_tree(path: Path) -> None:
    """Flush the files to disk before the rename makes them the output (a crash must not leave it empty)."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


# ---------------------------------------------------------------- records → Arrow


def features_for(kind: str, multimodal: bool):
    from synth.records import preference_features, sft_features

    if kind == "sft":
        return sft_features(multimodal)
    if kind == "preference":
        return preference_features(multimodal)
    raise SynthError(f"no fixed layout for records of kind '{kind}'; pass features")


def record_to_row(record: dict, kind: str, multimodal: bool) -> dict:
    """A record in the Arrow layout of `synth.records` (ids filled in, meta as JSON, images as refs)."""
    from synth.data.images import image_ref
    from synth.records import content_id, dump_meta, messages_to_arrow

    images = [image_ref(v, None, record.get("id") or "?", check=False) if not _is_ref(v) else v
              for v in record.get("images") or []]
    if kind == "sft":
        row = {"messages": messages_to_arrow(record["messages"], multimodal)}
        conversation = record["messages"]
    else:
        row = {k: messages_to_arrow(record[k], multimodal) for k in ("prompt", "chosen", "rejected")}
        conversation = record["prompt"] + record["chosen"] + record["rejected"]
    if images and not multimodal:
        raise SynthError(
            f"record {record.get('id')}: has images but the output is text-only; "
            "this is a bug in the stage that produced it"
        )
    row["id"] = record.get("id") or content_id(conversation, images)
    if multimodal:
        row["images"] = images
    meta = record.get("meta")
    row["meta"] = meta if isinstance(meta, str) else dump_meta(meta or {})
    return row


def _is_ref(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("bytes"), (bytes, bytearray))


def peek(records: Iterable[dict], n: int = 256) -> tuple[list[dict], Iterator[dict]]:
    """The first `n` records and an iterator over all of them (for deciding the layout up front)."""
    it = iter(records)
    head = list(itertools.islice(it, n))
    return head, itertools.chain(head, it)


SHARD_BYTES = 500 << 20  # like save_to_disk's default max_shard_size


def write_records(
    records: Iterable[dict],
    folder: Path | str,
    *,
    kind: str = "sft",
    multimodal: bool | None = None,
    features=None,
    scratch: Path | None = None,
    on_row: Callable[[dict], None] | None = None,
) -> int:
    """Write records (one split) as a ``save_to_disk`` dataset in `folder`; the number of rows written.
    `multimodal=None` decides from the first records; `features` + raw rows for other layouts.

    Rows stream through `datasets`' own `ArrowWriter` straight into the folder's shard files (rotated at
    about 500 MB), so neither the rows nor a second copy of the output is ever held or re-read;
    `save_to_disk` would re-read (memory-map) everything it writes. `scratch` is unused (kept for callers)."""
    from datasets import DatasetInfo
    from datasets.arrow_writer import ArrowWriter

    features, rows = _rows_for(records, kind, multimodal, features, on_row)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shards: list[Path] = []
    total = 0
    writer = None
    try:
        for row in rows:
            if writer is None:
                shards.append(folder / f".shard-{len(shards):05d}.arrow")
                writer = ArrowWriter(features=features, path=str(shards[-1]), embed_local_files=True)
            writer.write(row)
            total += 1
            if writer._num_bytes >= SHARD_BYTES:  # bytes flushed so far (every writer_batch_size rows)
                writer.finalize()
                writer = None
        if writer is not None:
            writer.finalize()
            writer = None
    finally:
        if writer is not None:
            writer.close()
    if not shards:  # no rows: one empty shard, as save_to_disk writes for an empty dataset
        shards.append(folder / ".shard-00000.arrow")
        empty = ArrowWriter(features=features, path=str(shards[0]))
        empty.finalize()
    names = [f"data-{i:05d}-of-{len(shards):05d}.arrow" for i in range(len(shards))]
    for shard, name in zip(shards, names):
        os.replace(shard, folder / name)
    _write_dataset_metadata(folder, names, DatasetInfo(features=features))
    return total


def _write_dataset_metadata(folder: Path, shard_names: list[str], info) -> None:
    """``state.json`` and ``dataset_info.json`` in the layout `Dataset.save_to_disk` writes (and
    `load_from_disk` reads)."""
    from dataclasses import asdict

    state = {
        "_data_files": [{"filename": name} for name in shard_names],
        "_fingerprint": uuid.uuid4().hex[:16],
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    with open(folder / "state.json", "w", encoding="utf-8") as f:
        json.dump(state, f, indent=2, sort_keys=True)
    dataset_info = asdict(info)
    with open(folder / "dataset_info.json", "w", encoding="utf-8") as f:
        json.dump({key: dataset_info[key] for key in sorted(dataset_info)}, f, indent=2)


def _rows_for(records, kind, multimodal, features, on_row):
    """The features to write and the Arrow rows (records converted unless raw `features` were given)."""
    if features is None:
        if multimodal is None:
            head, records = peek(records)
            multimodal = any(r.get("images") for r in head)
        features = features_for(kind, multimodal)
        convert = True
    else:
        convert = False

    def rows() -> Iterator[dict]:
        for record in records:
            row = record_to_row(record, kind, multimodal) if convert else record
            if on_row is not None:
                on_row(row)
            yield row

    return features, rows()


def build_dataset(
    records: Iterable[dict],
    *,
    kind: str = "sft",
    multimodal: bool | None = None,
    features=None,
    scratch: Path | None = None,
    on_row: Callable[[dict], None] | None = None,
):
    """A memory-mapped `datasets.Dataset` built from a generator of records (Arrow files in `scratch`)."""
    from datasets import Dataset

    features, rows = _rows_for(records, kind, multimodal, features, on_row)
    head, rows = peek(rows, 1)
    if not head:  # from_generator cannot build a dataset of no rows ("corresponds to no data")
        return Dataset.from_dict({name: [] for name in features}, features=features)

    from datasets.exceptions import DatasetGenerationError

    cache = str(scratch) if scratch else tempfile.mkdtemp(prefix="synth-write-")
    try:
        with quiet_datasets():
            # A fixed fingerprint: datasets would otherwise try to hash (pickle) the generator and its closure.
            ds = Dataset.from_generator(lambda: rows, features=features, cache_dir=cache, fingerprint=uuid.uuid4().hex)
    except DatasetGenerationError as e:
        # datasets wraps whatever the generator raised; a SynthError (bad record, dead backend) is the user's
        # message and must reach the CLI as it is.
        if isinstance(e.__cause__, SynthError):
            raise e.__cause__ from None
        raise
    return ds


def save(dataset, folder: Path | str) -> None:
    """``save_to_disk`` (a Dataset or DatasetDict) without datasets' own progress bar."""
    with quiet_datasets():
        if hasattr(dataset, "num_rows") and not isinstance(dataset.num_rows, dict) and len(dataset) == 0:
            # save_to_disk picks zero shards for an empty dataset, which load_from_disk cannot read back
            dataset.save_to_disk(str(folder), num_shards=1)
        else:
            dataset.save_to_disk(str(folder))
