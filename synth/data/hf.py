"""Helpers over the `datasets` library that the reader, the writer and the WebDataset reader share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from synth.errors import SynthError


class EmptyDatasetError(SynthError):
    """The source holds no records."""


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """Silence `datasets`' own progress bars and log lines (synth prints its own progress and errors)."""
    from datasets.utils import logging as ds_logging

    verbosity = ds_logging.get_verbosity()
    bars = ds_logging.is_progress_bar_enabled()
    # CRITICAL, not ERROR: a failed load logs an ERROR line of its own before raising, and synth turns the
    # exception into its one error line.
    ds_logging.set_verbosity(ds_logging.CRITICAL)
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        ds_logging.set_verbosity(verbosity)
        if bars:
            ds_logging.enable_progress_bar()


def without_image_decoding(dataset):
    """The same dataset with every Image feature (also inside lists) read as ``{"bytes", "path"}``."""
    from datasets import Features, Image, LargeList, List, Sequence

    features = getattr(dataset, "features", None)
    if not features:
        return dataset

    def undecoded(feature):
        if isinstance(feature, Image):
            return Image(decode=False)
        if isinstance(feature, (List, LargeList)):
            return type(feature)(undecoded(feature.feature), **({"length": feature.length} if getattr(feature, "length", -1) != -1 else {}))
        if isinstance(feature, Sequence):
            return Sequence(undecoded(feature.feature), length=feature.length)
        if isinstance(feature, dict):
            return {k: undecoded(v) for k, v in feature.items()}
        if isinstance(feature, list) and feature:
            return [undecoded(feature[0])]
        return feature

    new = Features({k: undecoded(v) for k, v in features.items()})
    if new == features:
        return dataset
    from datasets import Dataset

    if isinstance(dataset, Dataset):
        # Only the decode flag changes, not the Arrow storage: a new view of the same (memory-mapped)
        # table. `cast` would rewrite every row into a cache file beside the user's dataset.
        import hashlib

        info = dataset.info.copy()
        info.features = new
        fingerprint = hashlib.sha256(f"{dataset._fingerprint}:undecoded".encode()).hexdigest()[:16]
        return Dataset(dataset.data, info=info, split=dataset.split, indices_table=dataset._indices, fingerprint=fingerprint)
    with quiet_datasets():
        return dataset.cast(new)  # an IterableDataset casts lazily
