"""Exact and fast ROUGE-L novelty filtering (the Self-Instruct "is this instruction new?" check).

A candidate is *not novel* when its ROUGE-L F-measure against any instruction already in the pool is above
a threshold (0.7 in Self-Instruct). The decisions are exactly those of the reference `rouge_score`
package (``RougeScorer(["rougeL"], use_stemmer=...)``): same tokenizer, same floating-point formula for
the F-measure. The speed comes from doing as little as possible per pair:

1. every instruction is tokenized once and its tokens are mapped to ints;
2. for a candidate of length ``la`` and a pool entry of length ``lb`` the LCS needed to pass the threshold,
   ``need(la, lb)``, is computed once per length pair with the reference formula, so no float is compared
   per pair; lengths for which even a full match cannot reach it are never looked at;
3. LCS <= |multiset intersection|. By the prefix principle, if the intersection reaches ``need`` then one of
   the candidate's ``la - need + 1`` rarest tokens occurs in the pool entry, so only the inverted-index
   postings of those rare tokens are visited (numpy), and most of the pool is never touched;
4. the exact multiset intersection prunes again; only the survivors get an LCS, computed bit-parallel on
   Python ints (Allison-Dix / Hyyrö: one add, two ors, one subtract per token).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

_TOKEN_RE = re.compile(r"[a-z0-9]+")
_NON_ALNUM_RE = re.compile(r"[^a-z0-9]+")
_VALID_TOKEN_RE = re.compile(r"^[a-z0-9]+$")
_IMPOSSIBLE = 1 << 30


def rouge_tokens(text: str, stemmer=None) -> list[str]:
    """Tokens exactly as `rouge_score` makes them: lowercase, runs of [a-z0-9], optional Porter stems."""
    if stemmer is None:
        # Without a stemmer, "replace non-alphanumerics by spaces, split, drop empties" is just this.
        return _TOKEN_RE.findall(text.lower())
    words = _NON_ALNUM_RE.sub(" ", text.lower()).split()
    # Same order as rouge_score: stem words longer than 3 characters, then drop invalid tokens.
    words = [stemmer.stem(w) if len(w) > 3 else w for w in words]
    return [w for w in words if _VALID_TOKEN_RE.match(w)]


def rouge_l_fmeasure_from_lcs(lcs: int, target_len: int, prediction_len: int) -> float:
    """The F-measure with the reference's float operations (bit-for-bit equal; symmetric in the lengths)."""
    if target_len == 0 or prediction_len == 0:
        return 0.0
    precision = lcs / prediction_len
    recall = lcs / target_len
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def _match_masks(seq: Sequence[int]) -> dict[int, int]:
    """For each token, the bit set of the positions where it occurs in `seq`."""
    masks: dict[int, int] = {}
    for position, token in enumerate(seq):
        masks[token] = masks.get(token, 0) | (1 << position)
    return masks


def _lcs_bitparallel(masks: dict[int, int], length: int, other: Sequence[int]) -> int:
    """LCS length of the sequence behind `masks` (of `length` tokens) and `other`, bit-parallel."""
    full = (1 << length) - 1
    v = full
    get = masks.get
    for token in other:
        u = v & get(token, 0)
        if u:
            v = ((v + u) | (v - u)) & full
    return length - v.bit_count()


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence of two token sequences."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    return _lcs_bitparallel(_match_masks(b), len(b), a)


def rouge_l_fmeasure(target: str, prediction: str, use_stemmer: bool = False) -> float:
    """ROUGE-L F-measure of two texts, equal to ``RougeScorer(["rougeL"]).score(target, prediction)``."""
    stemmer = _porter_stemmer() if use_stemmer else None
    t, p = rouge_tokens(target, stemmer), rouge_tokens(prediction, stemmer)
    return rouge_l_fmeasure_from_lcs(lcs_length(t, p), len(t), len(p))


def _porter_stemmer():
    # The reference's stemmer (nltk's Porter, default mode); only needed for use_stemmer=True.
    try:
        from nltk.stem import porter
    except ImportError as e:  # pragma: no cover - depends on the environment
        from synth.errors import SynthError

        raise SynthError(
            "use_stemmer=True needs nltk: pip install nltk (or keep the default, no stemmer)"
        ) from e
    return porter.PorterStemmer()


@dataclass
class NoveltyMatch:
    """A pool entry too similar to the candidate (the first one found, not necessarily the most similar)."""

    index: int
    text: str
    score: float


class _Postings:
    """Growing numpy arrays (pool entry ids, token counts) for one token."""

    __slots__ = ("ids", "counts", "size")

    def __init__(self) -> None:
        self.ids = np.empty(4, dtype=np.int32)
        self.counts = np.empty(4, dtype=np.int32)
        self.size = 0

    def append(self, entry: int, count: int) -> None:
        if self.size == len(self.ids):
            self.ids = np.concatenate([self.ids, np.empty_like(self.ids)])
            self.counts = np.concatenate([self.counts, np.empty_like(self.counts)])
        self.ids[self.size] = entry
        self.counts[self.size] = count
        self.size += 1


@dataclass
class NoveltyStats:
    """How much work the pruning saved (pairs = candidate x pool entries at the time of the check)."""

    checks: int = 0
    pairs: int = 0
    visited: int = 0  # pool entries reached through the rare-token postings
    overlap_checked: int = 0  # ... that also passed the length/prefix bound
    lcs_computed: int = 0  # ... that also passed the exact multiset bound

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class RougeNoveltyIndex:
    """A growing pool of instructions; `check` says whether a candidate is too close to any of them.

    ``check(text)`` returns a `NoveltyMatch` when some pool entry has ROUGE-L F > `threshold`, else None;
    ``add(text)`` puts a text in the pool; ``add_if_novel(text)`` does both, as Self-Instruct does.
    """

    threshold: float = 0.7
    use_stemmer: bool = False
    stats: NoveltyStats = field(default_factory=NoveltyStats)

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"ROUGE-L threshold must be in [0, 1], got {self.threshold}")
        self._stemmer = _porter_stemmer() if self.use_stemmer else None
        self._vocab: dict[str, int] = {}
        self._texts: list[str] = []
        self._seqs: list[list[int]] = []
        self._counts: list[dict[int, int]] = []
        self._lengths = np.empty(16, dtype=np.int32)
        self._postings: dict[int, _Postings] = {}
        self._max_len = 0
        self._need_rows: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._texts)

    # ------------------------------------------------------------ tokens and thresholds

    def encode(self, text: str) -> list[int]:
        """Token ids of a text (new tokens get new ids)."""
        vocab = self._vocab
        ids = []
        for token in rouge_tokens(text, self._stemmer):
            tid = vocab.get(token)
            if tid is None:
                tid = vocab[token] = len(vocab)
            ids.append(tid)
        return ids

    def _need(self, la: int, lb: int) -> int:
        """Smallest LCS whose reference F-measure exceeds the threshold, or _IMPOSSIBLE."""
        if la == 0 or lb == 0:
            return _IMPOSSIBLE
        # F is 2L/(la+lb) up to float rounding, so the answer sits next to this estimate; the values below
        # the estimate are far below the threshold (steps of 2/(la+lb) >> rounding error).
        start = max(0, int(self.threshold * (la + lb) / 2) - 2)
        for lcs in range(start, min(la, lb) + 1):
            if rouge_l_fmeasure_from_lcs(lcs, la, lb) > self.threshold:
                return lcs
        return _IMPOSSIBLE

    def _need_row(self, la: int) -> np.ndarray:
        """need(la, lb) for every lb in 0..max pool length."""
        row = self._need_rows.get(la)
        if row is None or len(row) <= self._max_len:
            row = np.array([self._need(la, lb) for lb in range(self._max_len + 1)], dtype=np.int64)
            self._need_rows[la] = row
        return row

    # ------------------------------------------------------------ pool

    def add(self, text: str, ids: list[int] | None = None) -> int:
        """Put a text in the pool; returns its index."""
        seq = self.encode(text) if ids is None else ids
        entry = len(self._texts)
        counts: dict[int, int] = {}
        for tid in seq:
            counts[tid] = counts.get(tid, 0) + 1
        self._texts.append(text)
        self._seqs.append(seq)
        self._counts.append(counts)
        if entry == len(self._lengths):
            self._lengths = np.concatenate([self._lengths, np.empty_like(self._lengths)])
        self._lengths[entry] = len(seq)
        self._max_len = max(self._max_len, len(seq))
        for tid, count in counts.items():
            postings = self._postings.get(tid)
            if postings is None:
                postings = self._postings[tid] = _Postings()
            postings.append(entry, count)
        return entry

    def extend(self, texts: Iterable[str]) -> None:
        for text in texts:
            self.add(text)

    def check(self, text: str, ids: list[int] | None = None) -> NoveltyMatch | None:
        """A pool entry with ROUGE-L F > threshold, or None when the text is novel."""
        seq = self.encode(text) if ids is None else ids
        self.stats.checks += 1
        n = len(self._texts)
        self.stats.pairs += n
        la = len(seq)
        if la == 0 or n == 0:
            return None  # the reference scores an empty token list 0 against everything
        need_row = self._need_row(la)
        need_min = int(need_row.min())
        if need_min > la:
            return None  # no pool length can reach the threshold

        counts: dict[int, int] = {}
        for tid in seq:
            counts[tid] = counts.get(tid, 0) + 1

        # Prefix filter: the rarest tokens first; any match needs one of the first la - need_min + 1.
        postings = self._postings
        order = sorted(counts, key=lambda t: postings[t].size if t in postings else 0)
        prefix_size = la - need_min + 1
        covered = 0
        partial = None
        for tid in order:
            if covered >= prefix_size:
                break
            covered += counts[tid]
            p = postings.get(tid)
            if p is None:
                continue
            if partial is None:
                partial = np.zeros(n, dtype=np.int64)
            ids_view = p.ids[: p.size]
            partial[ids_view] += np.minimum(p.counts[: p.size], counts[tid])
        if partial is None:
            return None
        rest = la - covered  # occurrences outside the prefix: at best they all match
        visited = np.flatnonzero(partial)
        self.stats.visited += len(visited)
        lengths = self._lengths[visited]
        bound = np.minimum(partial[visited] + rest, np.minimum(lengths, la))
        survivors = visited[bound >= need_row[lengths]]
        if len(survivors) == 0:
            return None
        self.stats.overlap_checked += len(survivors)
        # Most promising first, so a duplicate is found after few LCS.
        survivors = survivors[np.argsort(-partial[survivors], kind="stable")]

        masks = _match_masks(seq)
        all_counts, all_seqs = self._counts, self._seqs
        for entry in survivors.tolist():
            lb = len(all_seqs[entry])
            need = int(need_row[lb])
            other = all_counts[entry]
            overlap = 0
            for tid, c in counts.items():
                oc = other.get(tid)
                if oc:
                    overlap += c if c < oc else oc
            if overlap < need:
                continue
            self.stats.lcs_computed += 1
            lcs = _lcs_bitparallel(masks, la, all_seqs[entry])
            score = rouge_l_fmeasure_from_lcs(lcs, la, lb)
            if score > self.threshold:
                return NoveltyMatch(index=entry, text=self._texts[entry], score=score)
        return None

    def add_if_novel(self, text: str) -> NoveltyMatch | None:
        """Check, and add the text to the pool when it is novel. Returns the blocking match, if any."""
        ids = self.encode(text)
        match = self.check(text, ids)
        if match is None:
            self.add(text, ids)
        return match


def filter_novel(
    texts: Iterable[str], threshold: float = 0.7, pool: Iterable[str] = (), use_stemmer: bool = False
):
    """Keep each text whose ROUGE-L F against the pool (and the texts kept before it) is <= threshold.

    Returns ``(kept_indices, index)``; the index holds the pool plus the kept texts.
    """
    index = RougeNoveltyIndex(threshold=threshold, use_stemmer=use_stemmer)
    index.extend(pool)
    kept = [i for i, text in enumerate(texts) if index.add_if_novel(text) is None]
    return kept, index
