"""Publish synth datasets on the Hugging Face Hub: each dataset one config with its splits, Parquet shards
with the image bytes embedded, and a generated dataset card.

`push` goes through `datasets` (`DatasetDict.push_to_hub`, which shards, embeds and uploads) and
`huggingface_hub` (repo creation, the card). `write_folder` writes the same repository offline: the
shards are cut and named as `push_to_hub` cuts and names them (``CONFIG/SPLIT-00000-of-0000N.parquet``),
images embedded with `datasets.table.embed_table_storage`, plus the README.md card, so the folder can be
inspected, tested and read back with ``load_dataset(PATH)``.

The token comes from ``HF_TOKEN`` or the saved login (`huggingface_hub.get_token`) and goes only into the
Hub calls: never into the card, the folder, the output or a log.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.errors import SynthError
from synth.publish.card import HubConfig, build_card
from synth.publish.lineage import describe

DEFAULT_MAX_SHARD_SIZE = "500MB"
_CONFIG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class PushResult:
    repo_id: str
    configs: list[HubConfig]
    files: list[Path] = field(default_factory=list)  # --to-dir: what was written, relative to the folder
    url: str | None = None


# ---------------------------------------------------------------- inputs


def parse_sources(items: list[str]) -> list[tuple[str | None, Path]]:
    """``PATH`` or ``NAME=PATH`` (the config name) for each dataset to publish."""
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if sep and name and not Path(item).exists():
            out.append((name.strip(), Path(path.strip())))
        else:
            out.append((None, Path(item)))
    return out


def _config_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "data"


def load_configs(sources: list[tuple[str | None, Path]]) -> list[HubConfig]:
    """Read each dataset and its lineage; name configs by kind (`sft`, `preference`) when each kind occurs
    once, else by folder name. `data` and `default` are not allowed as names (datasets reserves them)."""
    if not sources:
        raise SynthError("nothing to push: give one or more dataset folders (e.g. synth push demo/mix --repo USER/NAME)")
    lineages = [(name, describe(path)) for name, path in sources]
    for _, lineage in lineages:
        if lineage.kind not in ("sft", "preference"):
            raise SynthError(
                f"{lineage.path}: not an SFT (messages) or preference (prompt/chosen/rejected) dataset "
                f"(columns: {', '.join(lineage.features)}); push the output of synth adapt/generate/mix/prefs"
            )
        if lineage.rows == 0:
            raise SynthError(f"{lineage.path}: the dataset has no rows; leave it out of the push")
    kinds = [lin.kind for _, lin in lineages]
    configs = []
    for name, lineage in lineages:
        if name is None:
            name = lineage.kind if kinds.count(lineage.kind) == 1 else _config_name(lineage.path.resolve().name)
        if name in ("data", "default") or not _CONFIG_NAME.match(name):
            raise SynthError(f"{lineage.path}: '{name}' cannot be a config name; give one as NAME=PATH (letters, digits, - _ .)")
        if name in [c.name for c in configs]:
            raise SynthError(f"{lineage.path}: config name '{name}' is used twice; name them as NAME=PATH")
        configs.append(HubConfig(name, lineage))
    return configs


def check_repo_id(repo_id: str) -> str:
    if not _REPO_ID.match(repo_id or ""):
        raise SynthError(f"--repo '{repo_id}': expected USER/NAME (or ORG/NAME), e.g. --repo alice/shapes-sft")
    return repo_id


def splits_of(config: HubConfig):
    from datasets import DatasetDict

    return DatasetDict(config.lineage.splits)


# ---------------------------------------------------------------- offline: the folder push_to_hub would make


def _shard_plan(dataset, max_shard_size: str | int) -> tuple[int, int, int | None, bool]:
    """(num_shards, dataset_nbytes, writer_batch_size, embed) exactly as `Dataset._push_parquet_shards_to_hub`
    decides them (one process: num_proc None)."""
    from datasets import config
    from datasets.arrow_writer import (
        get_writer_batch_size_from_data_size,
        get_writer_batch_size_from_features,
    )
    from datasets.features.features import require_decoding
    from datasets.utils.py_utils import convert_file_size_to_int

    # The private estimate is the one push_to_hub shards by (it counts image files a path points to).
    nbytes = dataset._estimate_nbytes() if hasattr(dataset, "_estimate_nbytes") else dataset.data.nbytes
    batch_size = get_writer_batch_size_from_features(dataset.features) or get_writer_batch_size_from_data_size(len(dataset), nbytes)
    embed = any(require_decoding(f, ignore_decode_attribute=True) for f in dataset.features.values())
    num_shards = int(nbytes / convert_file_size_to_int(max_shard_size or config.MAX_SHARD_SIZE)) + 1
    return max(num_shards, 1), nbytes, batch_size, embed


def write_split(dataset, folder: Path, data_dir: str, split: str, max_shard_size: str | int) -> tuple[list[Path], Any, int]:
    """One split's Parquet shards; returns (files, SplitInfo, bytes written)."""
    from datasets import SplitInfo
    from datasets.table import embed_table_storage

    from synth.data.reader import quiet_datasets

    num_shards, nbytes, batch_size, embed = _shard_plan(dataset, max_shard_size)
    files, written = [], 0
    (folder / data_dir).mkdir(parents=True, exist_ok=True)
    with quiet_datasets():
        for index in range(num_shards):
            shard = dataset.shard(num_shards=num_shards, index=index, contiguous=True)
            if embed:
                fmt = shard.format
                shard = shard.with_format("arrow").map(embed_table_storage, batched=True, batch_size=batch_size, keep_in_memory=True)
                shard = shard.with_format(**fmt)
            relative = Path(data_dir) / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
            shard.to_parquet(str(folder / relative), batch_size=batch_size)
            written += (folder / relative).stat().st_size
            files.append(relative)
    return files, SplitInfo(name=split, num_bytes=nbytes, num_examples=len(dataset)), written


def dataset_info(config: HubConfig, split_infos: list, written: int, features):
    """`DatasetInfo` as `datasets`' push_to_hub records it in the card for a newly pushed config."""
    from datasets import DatasetInfo
    from datasets.splits import SplitDict

    info = DatasetInfo(config_name=config.name, features=features, splits=SplitDict(), download_size=0, dataset_size=0)
    for split_info in split_infos:
        info.splits.add(split_info)
        info.dataset_size += split_info.num_bytes
    info.download_size = written
    info.size_in_bytes = info.download_size + info.dataset_size
    return info


def write_folder(
    configs: list[HubConfig], repo_id: str, out: str | os.PathLike, *, max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False, **card_options: Any,
) -> PushResult:
    """Write exactly the repository `push` would upload (shards + README.md) into `out`, atomically."""
    from synth.data.writer import OutputFolder

    result = PushResult(repo_id, configs)
    with OutputFolder(out, overwrite) as folder:
        infos = {}
        for config in configs:
            split_infos, written, features = [], 0, None
            for split, dataset in config.lineage.splits.items():
                files, split_info, size = write_split(dataset, folder.path, config.data_dir, split, max_shard_size)
                result.files += files
                split_infos.append(split_info)
                written += size
                features = dataset.features
            infos[config.name] = dataset_info(config, split_infos, written, features)
        card = build_card(configs, repo_id, infos=infos, **card_options)
        card.save(str(folder.path / "README.md"))
        result.files.append(Path("README.md"))
    return result


# ---------------------------------------------------------------- online


def _offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    if value is None:
        return bool(constants.HF_HUB_OFFLINE)
    return value.strip().upper() in constants.ENV_VARS_TRUE_VALUES


def hub_token() -> str:
    """The token for the upload: HF_TOKEN or the saved login. Offline or none: a clear error, nothing sent."""
    from huggingface_hub import get_token

    local = "pass --to-dir PATH to write the folder locally instead"
    if _offline():
        raise SynthError(f"HF_HUB_OFFLINE is set: cannot reach the Hugging Face Hub, nothing was uploaded; unset it to push, or {local}")
    token = get_token()
    if not token:
        raise SynthError(f"no Hugging Face token: set HF_TOKEN or run `hf auth login`; nothing was uploaded ({local})")
    return token


def _network_errors() -> tuple[type[BaseException], ...]:
    """What the Hub client raises for HTTP errors and unreachable servers (its HTTP library varies by version)."""
    import importlib

    from huggingface_hub.errors import HfHubHTTPError

    errors: list[type[BaseException]] = [HfHubHTTPError, OSError]
    for module in ("httpx", "httpx2"):
        try:
            errors.append(importlib.import_module(module).HTTPError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _hub_error(e: Exception, repo_id: str) -> SynthError:
    status = getattr(getattr(e, "response", None), "status_code", None)
    hint = {401: "the token is invalid or expired", 403: "the token may not write to this repo (needs write access)",
            404: "no such user or organization"}.get(status, "check the network and the repo name")
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return SynthError(f"push to {repo_id} failed ({hint}): {first}")


def push(
    configs: list[HubConfig], repo_id: str, *, private: bool = False, max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
    commit_message: str | None = None, token: str | None = None, **card_options: Any,
) -> PushResult:
    """Create the repo, upload the card, then each config with `DatasetDict.push_to_hub`; `push_to_hub`
    adds each config's `dataset_info` to the card it finds, so the Hub ends up with the same README as
    `write_folder` writes."""
    from huggingface_hub import HfApi

    from synth.data.reader import quiet_datasets

    token = token or hub_token()
    message = commit_message or "synth push"
    card = build_card(configs, repo_id, **card_options)
    try:
        api = HfApi(token=token)
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        card.push_to_hub(repo_id, token=token, repo_type="dataset", commit_message=f"{message}: dataset card")
        for i, config in enumerate(configs):
            with quiet_datasets():
                splits_of(config).push_to_hub(
                    repo_id,
                    config_name=config.name,
                    set_default=i == 0,
                    data_dir=config.data_dir,
                    private=private,
                    token=token,
                    max_shard_size=max_shard_size,
                    embed_external_files=True,
                    commit_message=f"{message}: config {config.name}",
                )
    except _network_errors() as e:  # HTTP status, network and offline errors
        raise _hub_error(e, repo_id) from None
    return PushResult(repo_id, configs, url=str(url))


def push_folder_summary(result: PushResult, folder: str | os.PathLike) -> str:
    """The line `synth push --to-dir` prints: what was written and how to read it back."""
    shards = [f for f in result.files if f.suffix == ".parquet"]
    names = ", ".join(f"{c.name} ({', '.join(f'{s} {len(d):,}' for s, d in c.lineage.splits.items())})" for c in result.configs)
    return (f"wrote {len(shards)} Parquet shard{'s' if len(shards) != 1 else ''} + README.md to {folder}: {names}; "
            f"nothing uploaded (read it back with load_dataset(\"{folder}\"); run without --to-dir to upload to "
            f"{result.repo_id})")
