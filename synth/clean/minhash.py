"""Vectorised word n-gram hashing, MinHash signatures and an LSH index over bands.

Tokens: NFKC, lower case, split on whitespace, leading/trailing punctuation trimmed, empty tokens dropped
("Hello, world!" -> ["hello", "world"]; "don't" stays one token). pyarrow does this for a whole batch in C.
Words are hashed in numpy (a polynomial over their UTF-8 bytes, then splitmix64); an n-gram hash is a polynomial combination of
its word hashes, computed for all windows of the batch at once. A text shorter than n words is one
n-gram of all its words; an empty text has no n-grams.

MinHash: each n-gram hash is folded to 32 bits and hashed by every permutation at once with
multiply-add-shift, ``h_i(x) = ((a_i * x + b_i) mod 2**64) >> 32`` (a 2-universal family for 32-bit
keys); the signature keeps the minimum per permutation. The minimum of the 64-bit values is taken before
the shift (the shift is monotone), which saves a pass over the big matrix.

LSH: the signature is cut into ``bands`` bands of ``rows`` rows; records sharing one band are candidates.
`optimal_bands` picks (bands, rows) for a threshold by minimising the weighted false-positive and
false-negative areas under the S-curve, the same criterion datasketch uses.

`RensaIndex` does the sketching and the LSH with rensa (Rust) over the same shingle hashes: the default
engine of `Dedup` when rensa is installed (faster in `bench/clean_bench.py`); the numpy path is the fallback.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

_NGRAM_BASE = np.uint64(0x9E3779B97F4A7C15)
_LENGTH_MIX = np.uint64(0xC2B2AE3D27D4EB4F)
_BAND_BASE = np.uint64(0x100000001B3)
_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\u00a1\u00ab\u00b7\u00bb\u00bf\u2013\u2014\u2018\u2019\u201c\u201d\u2026"
MAX_HASH = np.uint32(0xFFFFFFFF)


def _normalized_lists(texts: Sequence[str]):
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(texts, type=pa.large_string())
    return pc.utf8_split_whitespace(pc.utf8_trim_whitespace(pc.utf8_lower(pc.utf8_normalize(arr, form="NFKC"))))


def _trimmed(lists, count: int):
    import pyarrow as pa
    import pyarrow.compute as pc

    flat = pc.utf8_trim(lists.flatten(), characters=_PUNCTUATION)
    keep = pc.not_equal(pc.utf8_length(flat), 0)
    parents = pc.list_parent_indices(lists).to_numpy()[keep.to_numpy(zero_copy_only=False)]
    counts = np.bincount(parents, minlength=count).astype(np.int64)
    offsets = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return pa.LargeListArray.from_arrays(pa.array(offsets), pc.filter(flat, keep))


def tokenize(texts: Sequence[str]):
    """A pyarrow list array of word tokens per text (see the module docstring for the rule)."""
    return _trimmed(_normalized_lists(texts), len(texts))


def tokenize_with_normalized(texts: Sequence[str]) -> tuple[Any, list[str]]:
    """(word tokens per text, each text normalised: NFKC, lower case, whitespace collapsed to one space)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    lists = _normalized_lists(texts)
    return _trimmed(lists, len(texts)), pc.binary_join(lists, pa.scalar(" ", pa.large_string())).to_pylist()


def words_of(text: str) -> list[str]:
    """Word tokens of one text, exactly as the batch path sees them."""
    return tokenize([text])[0].as_py()


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads every input bit over the whole word (in place on a copy)."""
    x = x.copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def hash_strings(strings) -> np.ndarray:
    """A 64-bit hash of each non-empty string of a pyarrow (large_)string array, computed in numpy:
    a polynomial over the UTF-8 bytes, then splitmix64. Stable across runs, batches and machines."""
    import pyarrow as pa

    count = len(strings)
    if count == 0:
        return np.zeros(0, dtype=np.uint64)
    strings = strings.cast(pa.large_string())
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64)[strings.offset : strings.offset + count + 1]
    data = np.frombuffer(strings.buffers()[2], dtype=np.uint8)
    start, stop = int(offsets[0]), int(offsets[-1])
    lengths = np.diff(offsets)
    if stop == start:
        return _mix64(np.zeros(count, dtype=np.uint64))
    # Weight of a byte = BASE ** (its distance from the end of its string), all mod 2**64.
    distance = np.repeat(offsets[1:] - 1, lengths) - np.arange(start, stop)
    powers = np.empty(int(lengths.max()), dtype=np.uint64)
    powers[0] = 1
    with np.errstate(over="ignore"):
        np.cumprod(np.full(len(powers) - 1, _NGRAM_BASE, dtype=np.uint64), out=powers[1:])
        weighted = data[start:stop].astype(np.uint64) * powers[distance]
        nonempty = lengths > 0
        sums = np.zeros(count, dtype=np.uint64)
        sums[nonempty] = np.add.reduceat(weighted, (offsets[:-1] - start)[nonempty])
        sums += lengths.astype(np.uint64) * _LENGTH_MIX
    return _mix64(sums)


def word_hashes(words) -> tuple[np.ndarray, np.ndarray]:
    """For a list array of tokens: (uint64 hash of every word, flat; int64 offsets, one more than texts)."""
    import pyarrow.compute as pc

    offsets = words.offsets.to_numpy().astype(np.int64)
    offsets = offsets - offsets[0]
    flat = words.flatten()
    if len(flat) == 0:
        return np.zeros(0, dtype=np.uint64), offsets
    # Hash each distinct word once (a batch repeats its vocabulary many times), then gather.
    encoded = pc.dictionary_encode(flat)
    return hash_strings(encoded.dictionary)[encoded.indices.to_numpy()], offsets


def _window_hashes(flat: np.ndarray, starts: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(len(starts), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            out = out * _NGRAM_BASE + flat[starts + j]
        out ^= np.uint64(n) * _LENGTH_MIX
    return out


def ngram_hashes(texts: Sequence[str], n: int, short: str = "whole") -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the word n-grams of each text: (flat uint64 hashes, int64 record index of each).

    ``short="whole"``: a text with fewer than n words gives one n-gram of all its words;
    ``short="skip"``: it gives none.
    """
    return ngram_hashes_of_words(tokenize(texts), n, short)


def ngram_hashes_of_words(words, n: int, short: str = "whole") -> tuple[np.ndarray, np.ndarray]:
    """`ngram_hashes` for texts already tokenised (a pyarrow list array from `tokenize`)."""
    texts = range(len(words))
    flat, offsets = word_hashes(words)
    lengths = np.diff(offsets)
    counts = np.maximum(lengths - n + 1, 0)
    total = int(counts.sum())
    first = np.repeat(offsets[:-1], counts)
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    parts = [_window_hashes(flat, first + within, n)]
    owners = [np.repeat(np.arange(len(texts), dtype=np.int64), counts)]
    if short == "whole":
        for length in np.unique(lengths[(lengths > 0) & (lengths < n)]):
            who = np.nonzero(lengths == length)[0]
            parts.append(_window_hashes(flat, offsets[who], int(length)))
            owners.append(who)
    hashes = np.concatenate(parts)
    owner = np.concatenate(owners)
    order = np.argsort(owner, kind="stable")
    return hashes[order], owner[order]


class MinHasher:
    """MinHash signatures (uint32, `num_perm` per text) for batches of texts, seeded and deterministic."""

    def __init__(self, num_perm: int = 128, shingle: int = 5, seed: int = 1, chunk_cols: int = 4096):
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.shingle = shingle
        self.a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self.b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
        self.chunk_cols = chunk_cols

    def signatures(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(signatures of shape (len(texts), num_perm) uint32; bool mask of texts that had any shingle)."""
        return self.signatures_of_words(tokenize(texts))

    def signatures_of_words(self, words) -> tuple[np.ndarray, np.ndarray]:
        """`signatures` for texts already tokenised (a pyarrow list array from `tokenize`)."""
        texts = range(len(words))
        hashes, owner = ngram_hashes_of_words(words, self.shingle)
        # Layout (num_perm, shingles): the row-wise reduce is several times faster than along axis 0.
        sig = np.full((self.num_perm, len(texts)), np.uint64(0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
        keys = (hashes ^ (hashes >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
        buf = np.empty((self.num_perm, min(self.chunk_cols, max(len(keys), 1))), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for start in range(0, len(keys), self.chunk_cols):
                stop = min(start + self.chunk_cols, len(keys))
                part = buf[:, : stop - start]
                np.multiply(self.a[:, None], keys[None, start:stop], out=part)
                part += self.b[:, None]
                rows = owner[start:stop]
                seg = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
                mins = np.minimum.reduceat(part, seg, axis=1)
                who = rows[seg]
                sig[:, who] = np.minimum(sig[:, who], mins)
        has_shingles = np.zeros(len(texts), dtype=bool)
        has_shingles[owner] = True
        return np.ascontiguousarray((sig >> np.uint64(32)).astype(np.uint32).T), has_shingles


# ---------------------------------------------------------------- LSH parameters


def _false_positive_area(threshold: float, bands: int, rows: int) -> float:
    s = np.linspace(0.0, threshold, 401)
    return float(np.trapezoid(1 - (1 - s**rows) ** bands, s))


def _false_negative_area(threshold: float, bands: int, rows: int) -> float:
    s = np.linspace(threshold, 1.0, 401)
    return float(np.trapezoid((1 - s**rows) ** bands, s))


@lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising the weighted FP + FN error areas."""
    best, best_error = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            error = fp_weight * _false_positive_area(threshold, bands, rows) + fn_weight * _false_negative_area(
                threshold, bands, rows
            )
            if error < best_error:
                best, best_error = (bands, rows), error
    return best


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One uint64 key per (record, band): a polynomial hash of the band's rows."""
    sig = signatures.astype(np.uint64)
    keys = np.zeros((len(signatures), bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            key = np.full(len(signatures), np.uint64(band + 1), dtype=np.uint64)
            for col in range(band * rows, (band + 1) * rows):
                key = key * _BAND_BASE + sig[:, col]
            keys[:, band] = key
    return keys


class LSHIndex:
    """Band buckets over the signatures of kept records; candidates are verified by estimated Jaccard.

    One dict holds all bands (a band's index is mixed into its key, see `band_keys`); a bucket is a slot
    number, or a list of them once several kept records share it.
    """

    def __init__(self, num_perm: int, bands: int, rows: int):
        self.bands, self.rows, self.num_perm = bands, rows, num_perm
        self.buckets: dict[int, int | list[int]] = {}
        self._sigs = np.empty((1024, num_perm), dtype=np.uint32)
        self.size = 0

    def signature(self, slot: int) -> np.ndarray:
        return self._sigs[slot]

    def candidates(self, keys: Sequence[int]) -> list[int]:
        """Slots sharing at least one band, in insertion order (so the earliest kept comes first)."""
        get = self.buckets.get
        hits = [hit for hit in map(get, keys) if hit is not None]
        if not hits:
            return []
        found: set[int] = set()
        for hit in hits:
            if isinstance(hit, int):
                found.add(hit)
            else:
                found.update(hit)
        return sorted(found)

    def similarity(self, slot: int, signature: np.ndarray) -> float:
        """Estimated Jaccard: the fraction of equal signature slots."""
        return float(np.count_nonzero(self._sigs[slot] == signature)) / self.num_perm

    def add(self, keys: Sequence[int], signature: np.ndarray) -> int:
        if self.size == len(self._sigs):
            grown = np.empty((2 * len(self._sigs), self.num_perm), dtype=np.uint32)
            grown[: self.size] = self._sigs[: self.size]
            self._sigs = grown
        slot = self.size
        self._sigs[slot] = signature
        self.size += 1
        buckets = self.buckets
        for key in keys:
            hit = buckets.setdefault(key, slot)
            if hit is slot or hit == slot:
                continue
            if isinstance(hit, int):
                buckets[key] = [hit, slot]
            else:
                hit.append(slot)
        return slot


# ---------------------------------------------------------------- the rensa engine


def rensa_available() -> bool:
    try:
        import rensa  # noqa: F401
    except ImportError:
        return False
    return True


class RensaIndex:
    """The same job as `MinHasher` + `LSHIndex`, done by rensa (Rust R-MinHash sketches and LSH).

    Shingles are synth's word n-gram hashes (`ngram_hashes_of_words`), so tokens and shingles are the same
    as the numpy engine's; rensa sketches them with its own seeded hash family. rensa's LSH needs
    ``num_perm`` divisible by the bands, so the sketch has ``bands * rows`` slots (117 for the default 9 x
    13 of 128): the same LSH S-curve, and the estimated Jaccard is the fraction of equal slots among those.
    Deterministic for a seed (rensa's sketches are seeded; no process-dependent hashing).
    """

    def __init__(self, num_perm: int, bands: int, rows: int, shingle: int, seed: int, threshold: float):
        from rensa import RMinHashLSH

        self.bands, self.rows, self.shingle, self.seed = bands, rows, shingle, seed
        self.num_perm = bands * rows
        self._lsh = RMinHashLSH(threshold, self.num_perm, bands)
        self._sketches: list = []
        self.size = 0

    def sketches_of_words(self, words) -> tuple[list, np.ndarray]:
        """(one rensa ``RMinHash`` per text; bool mask of texts that had any shingle)."""
        from rensa import RMinHash

        count = len(words)
        hashes, owner = ngram_hashes_of_words(words, self.shingle)
        bounds = np.zeros(count + 1, dtype=np.int64)
        np.cumsum(np.bincount(owner, minlength=count), out=bounds[1:])
        # 8-byte tokens: numpy's fixed-width bytes drop trailing NULs, which is still one-to-one for 8 bytes.
        tokens = hashes.view("S8").tolist()
        edges = bounds.tolist()
        sketches = RMinHash.from_token_sets(
            [tokens[edges[i] : edges[i + 1]] for i in range(count)], self.num_perm, self.seed
        )
        return sketches, np.diff(bounds) > 0

    def candidates(self, sketch) -> list[int]:
        """Slots sharing at least one band, in insertion order (so the earliest kept comes first)."""
        return sorted(self._lsh.query(sketch))

    def similarity(self, slot: int, sketch) -> float:
        return sketch.jaccard(self._sketches[slot])

    def add(self, sketch, _signature=None) -> int:
        slot = self.size
        self._lsh.insert(slot, sketch)
        self._sketches.append(sketch)
        self.size += 1
        return slot
