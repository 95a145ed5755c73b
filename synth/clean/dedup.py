"""Dedup: exact (normalised text + image bytes), near-duplicate text (MinHash LSH), near-duplicate images.

Keep rule: the FIRST record in input order wins; every later duplicate is dropped and its reject names the
kept twin (``detail`` starts with ``twin=<kept id>``). Records from several sources can be fed as one
stream (the mixture does that); the twin's ``meta.source`` is named too when present.

Decisions, in order, for each record:

1. ``exact_duplicate``: same normalised text (NFKC, lower case, whitespace collapsed) and the same image
   bytes as a kept record.
2. ``near_duplicate``: a kept record shares at least one LSH band with it AND their estimated Jaccard
   similarity (fraction of equal MinHash slots) is >= ``threshold`` AND their images match (same count;
   with ``images`` on, each pair within ``image_distance`` bits of perceptual hash, otherwise identical
   bytes). Among candidates that pass, the earliest kept one is the twin. This is datasketch's
   MinHashLSH query followed by a signature check, so the same job can be compared with it.
3. ``near_duplicate_image`` (only with ``image_only``): its images are perceptual near-duplicates of a
   kept record's images, whatever the text (web alt-text scrapes; not for VQA data, where one image
   carries many questions).

Text is the whole conversation (all turns). Shingles are word n-grams (`synth.clean.minhash`).
Engines (``engine``): ``rensa`` (the default when installed: Rust R-MinHash sketches and LSH over synth's
shingle hashes, faster; sketch size bands x rows) or ``numpy`` (vectorised MinHash, the fallback); the
same tokens, shingles, bands, rows and keep rule, different hash families (decisions agree ~99%).
Images are compared by their encoded bytes (exact) and, for near duplicates, by a perceptual hash of the
decoded pixels (the only decode). Dedup must see every earlier record to judge a later one, so it is an
`Aggregate`; it still streams its output (a record leaves as soon as it is known to be first).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from synth.clean.common import record_images, record_text
from synth.clean.minhash import (
    LSHIndex,
    MinHasher,
    RensaIndex,
    band_keys,
    optimal_bands,
    rensa_available,
    tokenize_with_normalized,
)
from synth.clean.phash import blocks, hamming, image_phash
from synth.data.writer import RecordLog
from synth.errors import SynthError
from synth.pipeline import Aggregate, Rejected, StageConfig
from synth.records import image_hash, load_meta

PHASH_CACHE_SIZE = 100_000  # perceptual hashes remembered by image digest (~20 MB)


class DedupConfig(StageConfig):
    exact: bool = Field(True, description="drop exact duplicates (same normalised text and image bytes)")
    near: bool = Field(True, description="drop near-duplicate texts (MinHash LSH); off: exact duplicates only")
    threshold: float = Field(0.8, gt=0.0, le=1.0, description="estimated Jaccard at or above which texts are near-duplicates")
    shingle: int = Field(5, ge=1, le=64, description="words per shingle (word n-gram)")
    num_perm: int = Field(128, ge=8, le=1024, description="MinHash permutations")
    bands: int | None = Field(None, ge=1, description="LSH bands; derived from threshold when unset")
    rows: int | None = Field(None, ge=1, description="rows per band; derived from threshold when unset")
    seed: int = Field(1, description="seed of the MinHash permutations")
    images: bool = Field(True, description="compare images by perceptual hash (off: by exact bytes)")
    image_hash: Literal["phash", "dhash"] = Field("phash", description="perceptual hash of images: phash or dhash")
    image_distance: int = Field(6, ge=0, le=31, description="max differing bits for near-duplicate images")
    image_only: bool = Field(False, description="drop near-duplicate images whatever their text")
    batch_size: int = Field(4096, ge=1, description="records hashed per batch")
    engine: Literal["auto", "rensa", "numpy"] = Field(
        "auto", description="near-duplicate engine: rensa (Rust) when installed, else numpy"
    )

    @model_validator(mode="after")
    def _bands_fit(self):
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither")
        if self.image_only and not self.images:
            raise ValueError("image_only compares perceptual hashes: it needs images on")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands * rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self

    def lsh_params(self) -> tuple[int, int]:
        if self.bands is not None:
            return self.bands, self.rows
        return optimal_bands(self.threshold, self.num_perm)


class _Kept:
    """What we remember of a kept record to name it and compare images."""

    __slots__ = ("id", "source", "image_keys")

    def __init__(self, record_id: str, source: str | None, image_keys: tuple):
        self.id, self.source, self.image_keys = record_id, source, image_keys


def _source(record: dict) -> str | None:
    meta = record.get("meta")
    try:
        return load_meta(meta).get("source") if meta else None
    except (ValueError, TypeError):
        return None


class Dedup(Aggregate):
    """Drop exact and near duplicates, keeping the first in input order.

    Input: records with text (messages / prompt+chosen+rejected / text columns) and optional ``images``.
    Output: the kept records, unchanged. ``twins`` maps each dropped id to its kept twin's id.
    """

    name: ClassVar[str] = "dedup"
    Config: ClassVar[type[StageConfig]] = DedupConfig
    reads: ClassVar[tuple[str, ...]] = ("messages", "prompt", "chosen", "rejected", "images", "image", "meta")
    #: may sit in a `filter` chain (it only drops records)
    filter_chain: ClassVar[bool] = True
    #: `synth dedup --exact-only` (older spelling) is `--no-near`
    cli_flags: ClassVar[dict[str, list[str]]] = {"near": ["--near/--no-near", " /--exact-only"]}

    def __init__(self, config: DedupConfig | dict | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        cfg: DedupConfig = self.config
        self.bands, self.rows = cfg.lsh_params()
        self.engine = self._engine(cfg)
        if self.engine == "rensa":
            self.index = RensaIndex(cfg.num_perm, self.bands, self.rows, cfg.shingle, cfg.seed, cfg.threshold)
        else:
            self.hasher = MinHasher(cfg.num_perm, cfg.shingle, cfg.seed)
            self.index = LSHIndex(cfg.num_perm, self.bands, self.rows)
        self._exact: dict[int, _Kept] = {}
        self._slots: list[_Kept] = []
        self._image_pieces = cfg.image_distance + 1
        self._image_buckets: dict[tuple[int, int], list[_Kept]] = {}
        self.twins: dict[str, str] = {}
        # Perceptual hashes cost a decode per image: only when a near-duplicate check will use them.
        self._perceptual = cfg.images and (cfg.near or cfg.image_only)
        self._phash_cache: dict[str, int] = {}  # image bytes digest -> perceptual hash

    def describe(self) -> str:
        """One line on how near-duplicates were found (printed after a `synth dedup` run)."""
        cfg: DedupConfig = self.config
        if not cfg.near:
            return f"exact duplicates only; images by {'perceptual hash' if cfg.images else 'exact bytes'}"
        return (f"near-duplicates ({self.engine} engine): estimated Jaccard >= {cfg.threshold}, {cfg.shingle}-word "
                f"shingles, {cfg.num_perm} permutations, LSH {self.bands} bands x {self.rows} rows; images by "
                f"{'perceptual hash' if cfg.images else 'exact bytes'}")

    @staticmethod
    def _engine(cfg: DedupConfig) -> str:
        if cfg.engine == "numpy":
            return "numpy"
        if rensa_available():
            return "rensa"
        if cfg.engine == "rensa":
            raise SynthError("dedup engine 'rensa' needs the rensa package: pip install rensa (or use engine numpy)")
        return "numpy"

    # ------------------------------------------------------------ per-record keys

    def _image_keys(self, images: list, digests: tuple, record_id: str) -> tuple:
        """Perceptual hashes; an image seen before (by its bytes' digest) is not decoded again: one picture
        often carries many questions (VQA)."""
        keys = []
        for image, digest in zip(images, digests, strict=True):
            key = self._phash_cache.get(digest)
            if key is None:
                key = image_phash(image, self.config.image_hash, record_id)
                if len(self._phash_cache) >= PHASH_CACHE_SIZE:
                    self._phash_cache.pop(next(iter(self._phash_cache)))  # oldest first
                self._phash_cache[digest] = key
            keys.append(key)
        return tuple(keys)

    def _images_match(self, a: tuple, b: tuple) -> bool:
        if len(a) != len(b):
            return False
        if not self.config.images:
            return a == b
        limit = self.config.image_distance
        return all(hamming(x, y) <= limit for x, y in zip(a, b, strict=True))

    @staticmethod
    def _detail(twin: _Kept, extra: str = "") -> str:
        text = f"twin={twin.id}"
        if twin.source:
            text += f" source={twin.source}"
        return text + (f" {extra}" if extra else "")

    # ------------------------------------------------------------ decisions

    def _decide(self, exact_key: int, image_keys: tuple, keys, signature, has_shingles: bool):
        cfg: DedupConfig = self.config
        if cfg.exact:
            twin = self._exact.get(exact_key)
            if twin is not None:
                return Rejected("exact_duplicate", self._detail(twin)), twin
        if cfg.near and has_shingles:
            for slot in self.index.candidates(keys):
                twin = self._slots[slot]
                if not self._images_match(twin.image_keys, image_keys):
                    continue
                similarity = self.index.similarity(slot, signature)
                if similarity >= cfg.threshold:
                    return Rejected("near_duplicate", self._detail(twin, f"jaccard={similarity:.2f}")), twin
        if cfg.image_only and cfg.images and image_keys:
            seen: set[int] = set()
            for block in blocks(image_keys[0], self._image_pieces):
                for twin in self._image_buckets.get(block, ()):
                    if id(twin) in seen:
                        continue
                    seen.add(id(twin))
                    if self._images_match(twin.image_keys, image_keys):
                        distance = max(hamming(x, y) for x, y in zip(twin.image_keys, image_keys, strict=True))
                        return Rejected("near_duplicate_image", self._detail(twin, f"bits={distance}")), twin
        return None, None

    def _remember(self, record_id: str, record: dict, exact_key: int, image_keys: tuple, keys, signature, has_shingles: bool):
        kept = _Kept(record_id, _source(record), image_keys)
        if self.config.exact:
            self._exact.setdefault(exact_key, kept)
        if self.config.near and has_shingles:
            self.index.add(keys, signature)
            self._slots.append(kept)
        if self.config.image_only and self.config.images and image_keys:
            for block in blocks(image_keys[0], self._image_pieces):
                self._image_buckets.setdefault(block, []).append(kept)

    def _run_batch(self, batch: list[dict]) -> Iterator[dict]:
        import xxhash

        cfg: DedupConfig = self.config
        words, normalized = tokenize_with_normalized([record_text(r) for r in batch])
        if cfg.near and self.engine == "rensa":
            signatures, has_shingles = self.index.sketches_of_words(words)
            all_keys = signatures  # rensa's LSH takes the sketch itself
        elif cfg.near:
            signatures, has_shingles = self.hasher.signatures_of_words(words)
            all_keys = band_keys(signatures, self.bands, self.rows).tolist()
        for i, record in enumerate(batch):
            record_id = str(record.get("id") or "")
            images = record_images(record)
            exact_text = normalized[i]
            image_keys: tuple = ()
            if images:
                try:
                    contents = tuple(image_hash(img) for img in images)
                    image_keys = self._image_keys(images, contents, record_id or "?") if self._perceptual else contents
                except (SynthError, OSError, ValueError) as e:
                    self.account(record, Rejected("unreadable_image", str(e)))
                    continue
                exact_text = "\x00".join((exact_text, *contents))
            exact_key = xxhash.xxh3_128_intdigest(exact_text.encode())
            keys = all_keys[i] if cfg.near else None
            signature = signatures[i] if cfg.near else None
            shingled = bool(has_shingles[i]) if cfg.near else False
            verdict, twin = self._decide(exact_key, image_keys, keys, signature, shingled)
            if verdict is not None:
                self.twins[record_id] = twin.id
                self.account(record, verdict)
                continue
            self._remember(record_id, record, exact_key, image_keys, keys, signature, shingled)
            yield from self.account(record, record)

    def run(self, records: Iterable[dict]) -> Iterator[dict]:
        batch: list[dict] = []
        for record in records:
            batch.append(record)
            if len(batch) >= self.config.batch_size:
                yield from self._run_batch(batch)
                batch = []
        if batch:
            yield from self._run_batch(batch)


def dedup(
    records: Iterable[dict],
    config: DedupConfig | dict | None = None,
    *,
    rejects: RecordLog | str | None = None,
) -> list[dict]:
    """Deduplicate records (from one or several sources); returns the kept ones in input order.

    `rejects`: a `RecordLog` (shared with other stages) or a path for the dropped records' JSONL.
    """
    stage = Dedup(config)
    own_writer = not isinstance(rejects, RecordLog)
    stage.rejects = rejects if isinstance(rejects, RecordLog) else RecordLog(rejects)
    try:
        return list(stage.run(records))
    finally:
        if own_writer:
            stage.rejects.close()


OPERATOR_CLASSES = (Dedup,)
