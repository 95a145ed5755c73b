"""Fingerprints and the run's manifest.

A stage's fingerprint hashes what decides its output: its type and (resolved) spec, its backend's model
and generation options, the adapter's version, the run's seed, and for each input the fingerprint of the
stage that wrote it plus a hash of that output's files (so an upstream rerun that changes data reruns
its readers, and one that writes the same bytes does not). A source's input fingerprint hashes its files
(a Hub dataset: id, config, split, revision).

``manifest.json`` sums the run up: recipe, versions, seed, executor, and per stage its fingerprint,
state, model and sampling, counts by reason, token usage and cost, timings, output rows and file hashes.
It is rewritten atomically after every stage, so a killed run still has one that is true up to its last
finished stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from synth.errors import redact_data
from synth.io import atomic_write_json

MANIFEST = "manifest.json"
RESOLVED_RECIPE = "recipe.yaml"
#: files of a dataset folder that change between identical runs (datasets' random fingerprint) or
#: describe the run rather than the data
VOLATILE_FILES = {"state.json", "report.json", "usage.json", "rejects.jsonl", "failures.jsonl"}
LIBRARIES = ("datasets", "pyarrow", "pydantic", "transformers", "torch", "openai", "huggingface_hub",
             "trl", "peft", "ray", "xgrammar")


def write_json_atomic(path: Path, value: Any) -> None:
    """A run folder's JSON file (manifest, marker): temp file → fsync → rename → fsync the folder, so it is
    the old file or the new one, whole, after a crash too. Secrets are redacted: a run folder is shared."""
    atomic_write_json(path, redact_data(value), sync_folder=True)


def read_json(path: Path) -> Any:
    """A run folder's JSON file; None when it is missing or damaged (the run redoes what it describes)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def versions() -> dict[str, str]:
    """synth, Python and the library versions that decide what a run writes."""
    from synth import __version__

    out = {"synth": __version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str, ensure_ascii=False).encode()).hexdigest()


def hash_files(path: str | os.PathLike, skip: set[str] = VOLATILE_FILES) -> str:
    """xxh3-128 over a file or a folder's files (relative names and bytes, in sorted order)."""
    from synth.core.fields import content_digest

    return content_digest(path, skip)


def file_hashes(path: str | os.PathLike) -> dict[str, str]:
    """Per-file xxh3-64 of an output (for the manifest: which files, which bytes)."""
    import xxhash

    path = Path(path)
    out = {}
    if not path.exists():
        return out
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h = xxhash.xxh3_64()
        with open(file, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        out[str(file.relative_to(path))] = h.hexdigest()
    return out


def file_sizes(path: str | os.PathLike) -> dict[str, int]:
    """Per-file sizes of an output (checked before its hashes: a truncated file shows without reading it)."""
    path = Path(path)
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}


def output_damage(path: str | os.PathLike, marker: dict) -> str | None:
    """What changed in a finished output since its marker recorded it (a file missing, truncated or
    edited), in a few words; None when it is as written. Files added beside it are not checked."""
    path = Path(path)
    if not path.exists():
        return f"{path} was deleted"
    hashes: dict[str, str] | None = marker.get("files")
    if not hashes:  # a marker from before synth recorded files: nothing to check against
        return None
    sizes: dict[str, int] = marker.get("sizes") or {}
    for name in hashes:
        file = path / name
        if not file.is_file():
            return f"{file} was deleted"
        if name in sizes and file.stat().st_size != sizes[name]:
            return f"{file} changed size ({sizes[name]:,} → {file.stat().st_size:,} bytes)"
    now = file_hashes(path)
    for name, value in hashes.items():
        if now.get(name) != value:
            return f"{path / name} was edited"
    return None


def source_fingerprint(ref) -> str:
    """A local source by its files; a Hub dataset by id, config, split and revision."""
    path = Path(ref.path)
    if path.exists():
        return hash_files(path, skip={"state.json"})
    if set("*?[") & set(ref.path) and ref.path.lower().endswith(".tar"):  # a glob of WebDataset shards
        from synth.data.webdataset import shard_paths

        return digest([hash_files(p) for p in shard_paths(ref.path)])
    return digest(["hub", ref.path, ref.config, ref.split, ref.revision])


def stage_fingerprint(*, type_: str, spec: dict, backend: dict | None, inputs: list[tuple[str, str, str]],
                      seed: int, adapter_version: int, extra: Any = None) -> str:
    from synth import __version__

    return digest({
        "type": type_, "spec": spec, "backend": backend, "inputs": inputs, "seed": seed,
        "adapter": adapter_version, "synth": __version__, "extra": extra,
    })


# ---------------------------------------------------------------- the manifest


def new_manifest(name: str, recipe_path: Path, recipe: dict, executor: dict, stages: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "state": "running",
        "recipe": str(recipe_path),
        "seed": recipe.get("seed", 0),
        "versions": versions(),
        "executor": executor,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.time(),
        "finished": None,
        "order": stages,
        "stages": {},
    }


def load_manifest(run_dir: Path) -> dict[str, Any] | None:
    return read_json(run_dir / MANIFEST)


def save_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    write_json_atomic(run_dir / MANIFEST, manifest)


def run_state(run_dir: Path, manifest: dict[str, Any] | None) -> str:
    """done | failed | running | interrupted (its process is gone without finishing) | unknown."""
    if manifest is None:
        return "unknown"
    state = manifest.get("state", "unknown")
    if state == "running":
        from synth.run.lock import is_locked

        return "running" if is_locked(run_dir) else "interrupted"
    return state
