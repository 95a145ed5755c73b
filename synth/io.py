"""Read datasets from anywhere users keep them; write them atomically.

Sources: a `save_to_disk` folder, Parquet, JSONL/JSON, CSV, an image folder, or a Hugging Face Hub id.
Outputs are written to a temporary sibling and renamed into place, so a crash or a bad record never
leaves a half-written dataset behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from synth.errors import SynthError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
_FILE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


# ---------------------------------------------------------------- reading


def _pick_split(dsd, split: str | None, source: str):
    from datasets import DatasetDict

    if not isinstance(dsd, DatasetDict):
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


def _find_bad_json_line(path: Path) -> tuple[int, str] | None:
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


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """Silence `datasets`' own progress bars and log lines (synth prints its own progress and errors)."""
    from datasets.utils import logging as ds_logging

    verbosity = ds_logging.get_verbosity()
    bars = ds_logging.is_progress_bar_enabled()
    ds_logging.set_verbosity_error()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        ds_logging.set_verbosity(verbosity)
        if bars:
            ds_logging.enable_progress_bar()


def _load_files(builder: str, files: list[str], source: str):
    from datasets import load_dataset

    try:
        with quiet_datasets():
            return load_dataset(builder, data_files=files, split="train")
    except Exception as e:  # datasets raises many types; find the real cause for the user
        if builder == "json":
            for f in files:
                if f.endswith(".jsonl"):
                    bad = _find_bad_json_line(Path(f))
                    if bad:
                        raise SynthError(f"{f}:{bad[0]}: malformed JSON line ({bad[1]}); fix or remove it") from e
        raise SynthError(f"{source}: cannot read as {builder}: {_first_line(e)}") from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


def read_dataset(source: str | os.PathLike, split: str | None = None):
    """Load a dataset from a local path (folder or file) or, failing that, a Hub id."""
    from datasets import load_from_disk

    source = str(source)
    path = Path(source)
    if path.is_dir():
        if any((path / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
            try:
                return _pick_split(load_from_disk(str(path)), split, source)
            except SynthError:
                raise
            except Exception as e:
                raise SynthError(f"{source}: cannot load saved dataset: {_first_line(e)}") from e
        files = sorted(p for p in path.rglob("*") if p.is_file())
        for suffix, builder in _FILE_BUILDERS.items():
            data = [str(p) for p in files if p.suffix == suffix]
            if data:
                return _load_files(builder, data, source)
        if any(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
            from datasets import load_dataset

            try:
                return load_dataset("imagefolder", data_dir=str(path), split=split or "train")
            except Exception as e:
                raise SynthError(f"{source}: cannot read image folder: {_first_line(e)}") from e
        raise SynthError(f"{source}: no dataset found (expected a saved dataset, Parquet, JSONL, CSV or images)")
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise SynthError(f"{source}: unknown file type '{path.suffix}' (use .parquet, .jsonl, .json or .csv)")
        return _load_files(builder, [str(path)], source)
    if path.suffix.lower() in _FILE_BUILDERS or source.startswith((".", "/")):
        raise SynthError(f"{source}: no such file or folder")
    return read_hub_dataset(source, split)


def read_hub_dataset(repo_id: str, split: str | None = None):
    """A dataset from the Hugging Face Hub by id (the `datasets` cache applies)."""
    from datasets import load_dataset

    try:
        return load_dataset(repo_id, split=split or "train")
    except Exception as e:
        raise SynthError(
            f"'{repo_id}' is not a local path and could not be loaded from the Hugging Face Hub: {_first_line(e)}"
        ) from e


def dataset_base_dir(source: str | os.PathLike) -> Path:
    """Folder against which relative image paths of a source are resolved."""
    path = Path(source).resolve()
    return path if path.is_dir() else path.parent


def resolve_image_path(base_dir: Path, value: str, record_id: str = "?") -> Path:
    """Join a relative image path to the dataset folder; refuse paths that escape it."""
    base = Path(base_dir).resolve()
    candidate = (base / value).resolve()
    if candidate != base and base not in candidate.parents:
        raise SynthError(
            f"record {record_id}: image path '{value}' points outside the dataset folder {base}; "
            "image paths must stay inside it"
        )
    return candidate


def open_image(value: Any, base_dir: Path | None = None, record_id: str = "?"):
    """A decoded, verified RGB PIL image from a path, bytes, dict or PIL image; clear error otherwise."""
    import io as _io

    from PIL import Image, UnidentifiedImageError

    where = "<bytes>"
    try:
        if isinstance(value, Image.Image):
            return value.convert("RGB")
        if isinstance(value, dict):
            if value.get("bytes"):
                data = value["bytes"]
            elif value.get("path"):
                return open_image(value["path"], base_dir, record_id)
            else:
                raise SynthError(f"record {record_id}: image entry has neither bytes nor path")
        elif isinstance(value, (bytes, bytearray)):
            data = bytes(value)
        elif isinstance(value, (str, os.PathLike)):
            path = resolve_image_path(base_dir, str(value), record_id) if base_dir else Path(value)
            where = str(path)
            if not path.is_file():
                raise SynthError(f"record {record_id}: image not found: {path}")
            data = path.read_bytes()
        else:
            raise SynthError(f"record {record_id}: unsupported image value of type {type(value).__name__}")
        image = Image.open(_io.BytesIO(data))
        image.load()
        return image.convert("RGB")
    except SynthError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise SynthError(f"record {record_id}: unreadable or corrupt image {where}: {_first_line(e)}") from e


def read_yaml(path: str | os.PathLike, what: str) -> Any:
    """Parse a YAML file (recipe, template set, filter chain); errors name the file, the line and `what`."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SynthError(f"{path}: no such {what} file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SynthError(f"{path}: cannot read {what}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SynthError(f"{where}: invalid YAML: {problem}") from None


# ---------------------------------------------------------------- writing


def check_output(out: str | os.PathLike, overwrite: bool) -> Path:
    out = Path(out)
    if out.exists() and not overwrite:
        raise SynthError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    return out


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling path; on success move it onto `final`, on error remove it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp / final.name
    try:
        yield target
        if final.exists():
            if not overwrite:
                raise SynthError(f"{final} already exists; pass --overwrite to replace it")
            trash = tmp / ".old"
            os.replace(final, trash)
        os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_dataset(dataset, out: str | os.PathLike, overwrite: bool = False, num_proc: int | None = None) -> Path:
    """`save_to_disk` into a temp folder, then rename into place."""
    out = check_output(out, overwrite)
    with atomic_path(out, overwrite) as tmp, quiet_datasets():
        if len(dataset) == 0:
            # save_to_disk picks zero shards for an empty dataset, which load_from_disk cannot read back
            dataset.save_to_disk(str(tmp), num_shards=1)
        else:
            dataset.save_to_disk(str(tmp), num_proc=num_proc)
    return out


def write_jsonl(rows: Iterable[dict], out: str | os.PathLike, overwrite: bool = True) -> int:
    count = 0
    with atomic_path(out, overwrite) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
                count += 1
    return count


def write_json(value: Any, out: str | os.PathLike, overwrite: bool = True) -> None:
    with atomic_path(out, overwrite) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(value, f, ensure_ascii=False, indent=2, default=str)
            f.write("\n")


def rejects_path(out: str | os.PathLike) -> Path:
    """Where a command writes the records it skipped, beside its output."""
    out = Path(out)
    return out.with_name(out.name + ".rejects.jsonl")
