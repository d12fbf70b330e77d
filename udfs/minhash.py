"""Word-level MinHash for near-duplicate detection, vectorized with numpy (executor side).

Definitions (the pure-Python reference functions at the bottom follow them literally; the
vectorized code must give bit-identical results, and the tests check that it does):

* **tokens**: ``re.findall(r"\\w+", text.lower())`` -- lower-cased Unicode word tokens.
  ASCII texts take a byte-translation fast path that yields the same tokens.
* **shingles**: word n-grams (the tokens ``i .. i+n-1``); a text with fewer than ``n``
  tokens (but at least one) is a single shingle of all its tokens; a text without tokens
  has no shingle. A shingle *set* is what Jaccard is measured on.
* **64-bit base hash**: a token hashes to ``xxh64(utf-8 bytes)``; a multi-token shingle
  folds its token hashes left to right with ``h = fmix64(h * GOLDEN + t) mod 2^64``.
  The fold is vectorizable, so n-gram shingles never go through a Python loop.
* **permutations**: ``pi_i(x) = (a_i * x + b_i) mod p`` with ``p = 2^61 - 1`` and
  ``x = base hash mod p``. ``a_i * x`` needs up to 122 bits, more than uint64 holds, so
  datasketch's legacy scheme, datatrove and text-dedup, which evaluate it in wrapping
  uint64 arithmetic, compute a different function from the one they claim (the product
  is silently reduced mod 2^64 first). Here ``a`` and ``x`` are split into 32-bit
  halves, the four partial products each fit in 64 bits, and the Mersenne identity
  ``2^61 = 1 (mod p)`` folds them back (see ``_MinHasher``): every intermediate is
  below 2^64 and the result is the exact residue.
* **signature**: the minimum of each permutation over the text's shingles;
  ``EMPTY_HASH`` (= p, above every residue) for a text without shingles.
* **band hash**: band ``j`` of a signature (values ``j*r .. j*r+r-1``) folds to one
  64-bit value seeded with ``j``, stored as a signed int64 for Spark.

The permutation parameters come from a splitmix64 stream of the seed, not from numpy's
random generators, so a signature is the same on every machine and numpy version.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import xxhash

MERSENNE_PRIME = (1 << 61) - 1
EMPTY_HASH = MERSENNE_PRIME
GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1

_P = np.uint64(MERSENNE_PRIME)
_M32 = np.uint64(0xFFFFFFFF)
_U = np.uint64  # short alias for shift counts and constants in uint64 arithmetic
_WORD = re.compile(r"\w+")
_xxh64 = xxhash.xxh64_intdigest


# --------------------------------------------------------------------------- tokens and shingles


def _ascii_word_table() -> bytes:
    """bytes.translate table: ASCII word characters lower-cased, everything else a space."""
    table = bytearray(b" " * 256)
    for c in range(128):
        ch = chr(c)
        if ch.isalnum() or ch == "_":
            table[c] = ord(ch.lower())
    return bytes(table)


_ASCII_TABLE = _ascii_word_table()


def tokenize(text: Optional[str]) -> list[str]:
    """Lower-cased word tokens.

    >>> tokenize("Hello, World! It's 2 o'clock; x_1 = Ünïcode.")
    ['hello', 'world', 'it', 's', '2', 'o', 'clock', 'x_1', 'ünïcode']
    >>> tokenize(None)
    []
    """
    return _WORD.findall(text.lower()) if text else []


def token_bytes(text: Optional[str]) -> list[bytes]:
    """``[t.encode() for t in tokenize(text)]``, several times faster on ASCII text.

    >>> token_bytes("What is 2+2?")
    [b'what', b'is', b'2', b'2']
    """
    if not text:
        return []
    if text.isascii():
        # On ASCII, \\w is [A-Za-z0-9_] and lower() only touches A-Z: one C-level translate does both.
        return text.encode("ascii").translate(_ASCII_TABLE).split()
    return [t.encode("utf-8") for t in _WORD.findall(text.lower())]


def shingle_set(text: Optional[str], ngram: int = 1) -> set[bytes]:
    """The text's set of word n-gram shingles (as space-joined UTF-8 bytes).

    >>> sorted(shingle_set("A rose is a rose.", 2))
    [b'a rose', b'is a', b'rose is']
    >>> shingle_set("too short", 3)
    {b'too short'}
    """
    toks = token_bytes(text)
    if ngram == 1 or not toks:
        return set(toks)
    if len(toks) < ngram:
        return {b" ".join(toks)}
    return {b" ".join(toks[i : i + ngram]) for i in range(len(toks) - ngram + 1)}


def jaccard(a: set, b: set) -> float:
    """Exact Jaccard similarity; 0.0 when both sets are empty (an empty text duplicates nothing).

    >>> jaccard({1, 2, 3}, {2, 3, 4})
    0.5
    """
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def text_jaccard(text_a: Optional[str], text_b: Optional[str], ngram: int = 1) -> float:
    return jaccard(shingle_set(text_a, ngram), shingle_set(text_b, ngram))


# --------------------------------------------------------------------------- 64-bit hashing


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer (a bijection), elementwise, wrapping uint64; modifies ``h``."""
    h ^= h >> _U(33)
    h *= _U(0xFF51AFD7ED558CCD)
    h ^= h >> _U(33)
    h *= _U(0xC4CEB9FE1A85EC53)
    h ^= h >> _U(33)
    return h


def _fold(h: np.ndarray, t: np.ndarray) -> np.ndarray:
    """One step of the shingle fold: ``fmix64(h * GOLDEN + t) mod 2^64``."""
    return _fmix64(h * _U(GOLDEN) + t)


def _mod_p(h: np.ndarray) -> np.ndarray:
    """``h mod (2^61 - 1)`` for any uint64, without overflow: 2^61 = 1 (mod p)."""
    r = (h & _P) + (h >> _U(61))  # <= p - 1 + 7 < 2p
    return np.minimum(r, r - _P)  # r - p wraps to a huge value unless r >= p


def shingle_hashes(texts: Sequence[Optional[str]], ngram: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Base hashes of every text's shingles, flattened in text order.

    Returns ``(counts, hashes)``: ``counts[i]`` shingles belong to text ``i`` and
    ``hashes`` is uint64 of length ``counts.sum()``. Unigram shingles are de-duplicated
    per text (a cheap set) because repeats cost permutation work and never change a
    minimum; n-gram shingles may repeat, which is harmless for the same reason.
    """
    if ngram == 1:
        per_text = [set(token_bytes(t)) for t in texts]
        counts = np.fromiter(map(len, per_text), dtype=np.int64, count=len(per_text))
        total = int(counts.sum())
        flat = itertools.chain.from_iterable(per_text)
        return counts, np.fromiter(map(_xxh64, flat), dtype=np.uint64, count=total)

    per_text = [token_bytes(t) for t in texts]
    n_tok = np.fromiter(map(len, per_text), dtype=np.int64, count=len(per_text))
    total = int(n_tok.sum())
    th = np.fromiter(map(_xxh64, itertools.chain.from_iterable(per_text)), dtype=np.uint64, count=total)
    counts = np.where(n_tok >= ngram, n_tok - ngram + 1, np.minimum(n_tok, 1))
    if total == 0:
        return counts, th
    # A shingle starts at every token that has n-1 more tokens of its own text after it; a
    # shorter text has one shingle, starting at its first token and holding all its tokens.
    pos = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(n_tok) - n_tok, n_tok)
    starts = np.flatnonzero(pos <= np.repeat(np.maximum(n_tok - ngram, 0), n_tok))
    width = np.minimum(np.repeat(n_tok, n_tok)[starts], ngram)
    h = th[starts]
    for k in range(1, ngram):
        nxt = th[np.minimum(starts + k, total - 1)]
        h = np.where(width > k, _fold(h, nxt), h)
    return counts, h


# --------------------------------------------------------------------------- permutations and signatures


def _splitmix64(state: int) -> tuple[int, int]:
    state = (state + GOLDEN) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)``: uint64 arrays with ``1 <= a < p`` and ``0 <= b < p``, fixed by ``seed``."""
    state = seed & _MASK64
    a, b = [], []
    for _ in range(num_perm):
        state, za = _splitmix64(state)
        state, zb = _splitmix64(state)
        a.append(1 + za % (MERSENNE_PRIME - 1))
        b.append(zb % MERSENNE_PRIME)
    return np.array(a, dtype=np.uint64), np.array(b, dtype=np.uint64)


def mulmod(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``(x[i] * a[j]) mod (2^61 - 1)`` as a ``(len(x), len(a))`` matrix, exactly, for entries
    below 2^61: ``_MinHasher``'s own arithmetic with ``b = 0``, so checking this checks it.

    >>> int(mulmod(np.uint64(MERSENNE_PRIME - 1), np.uint64(MERSENNE_PRIME - 1))[0, 0])  # (-1)^2
    1
    """
    x = np.atleast_1d(np.asarray(x, dtype=np.uint64))
    a = np.atleast_1d(np.asarray(a, dtype=np.uint64))
    return _MinHasher(a, np.zeros_like(a), block=max(1, len(x)))._block_values(x).copy()


class _MinHasher:
    """Exact ``min over shingles of (a*x + b) mod p`` per text, a block of shingles at a time.

    With ``a = a1*2^32 + a0`` and ``x = x1*2^32 + x0`` (``a1, x1 < 2^29``)::

        a*x = a1*x1 * 2^64 + (a1*x0 + a0*x1) * 2^32 + a0*x0

    and modulo p, where 2^61 = 1:

    * ``a1*x1 * 2^64 = 8*a1*x1``                       (< 2^61)
    * with ``mid = a1*x0 + a0*x1 < 2^62 = mh*2^29 + ml``:
      ``mid * 2^32 = mh*2^61 + ml*2^32 = mh + ml*2^32`` (< 2^33 and < 2^61)
    * ``lo = a0*x0 < 2^64 = (lo >> 61)*2^61 + (lo & p) = (lo >> 61) + (lo & p)``

    Their sum plus ``b`` stays below 2^64 (about 2^63), one more fold brings it below
    ``p + 5`` and a wrap-around minimum subtracts p where needed. About twenty
    in-place numpy operations per (shingle, permutation), on buffers sized to stay in
    cache; allocating temporaries instead is roughly twice as slow.
    """

    def __init__(self, a: np.ndarray, b: np.ndarray, block: int = 256):
        self.num_perm = len(a)
        self.a0 = (a & _M32)[None, :]
        self.a1 = (a >> _U(32))[None, :]
        self.a1x8 = ((a >> _U(32)) << _U(3))[None, :]
        self.b = b[None, :]
        self.block = block
        shape = (block, self.num_perm)
        self._lo, self._mid, self._tmp, self._acc = (np.empty(shape, dtype=np.uint64) for _ in range(4))

    def _block_values(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        lo, mid, tmp, acc = self._lo[:n], self._mid[:n], self._tmp[:n], self._acc[:n]
        x0 = (x & _M32)[:, None]
        x1 = (x >> _U(32))[:, None]
        np.multiply(x0, self.a0, out=lo)
        np.multiply(x0, self.a1, out=mid)
        np.multiply(x1, self.a0, out=tmp)
        mid += tmp
        np.multiply(x1, self.a1x8, out=acc)
        acc += self.b
        np.bitwise_and(lo, _P, out=tmp)
        acc += tmp
        lo >>= _U(61)
        acc += lo
        np.right_shift(mid, _U(29), out=tmp)
        acc += tmp
        mid <<= _U(32)
        mid &= _P
        acc += mid
        np.right_shift(acc, _U(61), out=tmp)
        acc &= _P
        acc += tmp
        np.subtract(acc, _P, out=tmp)
        np.minimum(acc, tmp, out=acc)
        return acc

    def signatures(self, counts: np.ndarray, hashes: np.ndarray) -> np.ndarray:
        """``(len(counts), num_perm)`` uint64 signatures of texts whose shingle hashes are
        ``hashes``, ``counts[i]`` of them for text ``i`` (in order)."""
        out = np.full((len(counts), self.num_perm), EMPTY_HASH, dtype=np.uint64)
        present = np.flatnonzero(counts > 0)
        if len(present) == 0:
            return out
        x = _mod_p(hashes)
        starts = np.cumsum(counts[present]) - counts[present]
        mins = out[present]
        total = len(x)
        for lo in range(0, total, self.block):
            hi = min(lo + self.block, total)
            vals = self._block_values(x[lo:hi])
            # texts overlapping [lo, hi): the one holding lo, up to the last one starting before hi
            first = int(np.searchsorted(starts, lo, side="right")) - 1
            last = int(np.searchsorted(starts, hi, side="left"))
            rel = np.maximum(starts[first:last], lo) - lo
            np.minimum(mins[first:last], np.minimum.reduceat(vals, rel, axis=0), out=mins[first:last])
        out[present] = mins
        return out


def minhash_signatures(texts: Sequence[Optional[str]], num_perm: int = 128, seed: int = 42, ngram: int = 1,
                       block: int = 256) -> np.ndarray:
    """``(len(texts), num_perm)`` uint64 MinHash signatures; ``EMPTY_HASH`` rows for texts without tokens."""
    a, b = permutations(num_perm, seed)
    counts, hashes = shingle_hashes(texts, ngram)
    return _MinHasher(a, b, block).signatures(counts, hashes)


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``(len(sig), bands)`` int64: band ``j`` folds values ``j*rows .. j*rows+rows-1``, seeded with ``j``."""
    n = sig.shape[0]
    if bands * rows > sig.shape[1]:
        raise ValueError(f"bands*rows={bands * rows} exceeds the signature length {sig.shape[1]}")
    v = sig[:, : bands * rows].reshape(n, bands, rows)
    h = np.broadcast_to(np.arange(bands, dtype=np.uint64), (n, bands)).copy()
    for j in range(rows):
        h = _fold(h, v[:, :, j])
    return h.view(np.int64)


# --------------------------------------------------------------------------- LSH parameters


def candidate_probability(s, bands: int, rows: int):
    """The S-curve: probability that two texts with Jaccard ``s`` share at least one band.

    >>> round(float(candidate_probability(0.5, 20, 5)), 4)
    0.4701
    """
    return 1.0 - (1.0 - np.power(s, rows)) ** bands


# NumPy 2.0 renamed trapz to trapezoid; EMR 7 ships NumPy 1.26, which has only trapz.
_trapezoid = getattr(np, "trapezoid", None) or np.trapz


def optimal_param(threshold: float, num_perm: int, false_positive_weight: float = 0.1,
                  false_negative_weight: float = 0.9) -> tuple[int, int]:
    """``(bands, rows)`` with ``bands * rows <= num_perm`` minimising

        w_fp * integral_0^t P(candidate | s) ds + w_fn * integral_t^1 (1 - P(candidate | s)) ds

    -- the expected false-positive and false-negative mass for a Jaccard uniformly
    spread over [0, 1] (the rule of datasketch and text-dedup). A larger false-negative
    weight moves the S-curve left of the threshold: more candidates to verify, fewer
    duplicates missed. Verification makes false positives cost only time, so the
    default leans to recall: at 0.55 and 128 permutations, 0.3 / 0.7 gives 25 bands of
    5 rows and P(candidate | 0.55) = 0.73; 0.1 / 0.9 gives 28 of 4 and 0.93.

    >>> optimal_param(0.55, 128)
    (28, 4)
    >>> optimal_param(0.55, 128, 0.5, 0.5)
    (21, 6)
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    lo = np.linspace(0.0, threshold, 2001)
    hi = np.linspace(threshold, 1.0, 2001)
    best, best_err = (1, 1), np.inf
    for b in range(1, num_perm + 1):
        r = np.arange(1, num_perm // b + 1, dtype=np.float64)[:, None]
        fp = _trapezoid(1.0 - (1.0 - lo[None, :] ** r) ** b, lo, axis=1)
        fn = _trapezoid((1.0 - hi[None, :] ** r) ** b, hi, axis=1)
        err = false_positive_weight * fp + false_negative_weight * fn
        i = int(np.argmin(err))
        if err[i] < best_err - 1e-12:
            best, best_err = (b, i + 1), float(err[i])
    return best


# --------------------------------------------------------------------------- Arrow batch adapters (UDF bodies)


def unique_per_text(counts: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each text's shingle hashes de-duplicated and sorted (as int64), still flattened in text order.

    Returns ``(counts, hashes)`` like ``shingle_hashes``; ``hashes`` is int64 (the uint64 bits).
    """
    h = np.asarray(hashes, dtype=np.uint64).view(np.int64)
    owner = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    order = np.lexsort((h, owner))
    h, owner = h[order], owner[order]
    keep = np.ones(len(h), dtype=bool)
    keep[1:] = (h[1:] != h[:-1]) | (owner[1:] != owner[:-1])
    h, owner = h[keep], owner[keep]
    return np.bincount(owner, minlength=len(counts)).astype(np.int64), h


def int64_binary(counts: np.ndarray, values: np.ndarray):
    """An Arrow binary array whose element ``i`` packs ``counts[i]`` int64 values (little-endian)."""
    import pyarrow as pa

    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(np.asarray(counts, dtype=np.int64) * 8)
    data = np.ascontiguousarray(values, dtype="<i8")  # little-endian on every machine
    return pa.Array.from_buffers(pa.binary(), len(counts), [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def binary_int64(arr) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``int64_binary``: ``(counts, values)`` of a (possibly sliced) Arrow binary array."""
    n = len(arr)
    if n == 0:  # an empty array may have no buffers (e.g. built from an empty pandas column on Spark 3.5)
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset: arr.offset + n + 1]
    if offsets[-1] == offsets[0]:
        return np.zeros(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0]: offsets[-1]]
    return np.diff(offsets).astype(np.int64) // 8, data.view("<i8").astype(np.int64, copy=False)


def doc_batches(batches: Iterable, *, num_perm: int, seed: int, ngram: int, bands: int, rows: int,
                id_col: str = "id", text_col: str = "text", block: int = 256) -> Iterator:
    """``mapInArrow`` body: (id, text) -> (id, band_hashes list<int64>, shingles binary), one row
    per text with at least one token.

    ``shingles`` is the text's set of 64-bit shingle hashes, sorted, packed as bytes
    (``int64_binary``; Spark moves one binary value far faster than an array of longs):
    what verification intersects, so a text is tokenized once for both its signature and
    every pair it is in.
    """
    import pyarrow as pa

    a, b = permutations(num_perm, seed)
    hasher = _MinHasher(a, b, block)
    for batch in batches:
        counts, hashes = shingle_hashes(batch.column(text_col).to_pylist(), ngram)
        keep = np.flatnonzero(counts > 0)
        counts, sets = unique_per_text(counts[keep], hashes)
        hb = band_hashes(hasher.signatures(counts, sets.view(np.uint64)), bands, rows)
        band_offsets = pa.array(np.arange(0, hb.size + 1, bands, dtype=np.int32))
        yield pa.RecordBatch.from_arrays(
            [batch.column(id_col).take(pa.array(keep)),
             pa.ListArray.from_arrays(band_offsets, pa.array(hb.reshape(-1))),
             int64_binary(counts, sets)],
            names=["id", "band_hashes", "shingles"])


def bucket_pair_batches(batches: Iterable, *, max_bucket_size: int, threshold: float) -> Iterator:
    """``mapInArrow`` body over (key, id, n) rows sorted by (key, id) within the partition, every
    row of a key in one partition: (id_a, id_b) candidate pairs, ``id_a < id_b``.

    A run of ``m <= max_bucket_size`` rows with one key yields its pairs; a longer run links
    each member to the run's first and to its predecessor only. A pair whose shingle counts
    ``n`` differ by more than the threshold allows (``min / max < threshold`` implies
    ``J < threshold``) is skipped: it could never verify. A run may continue into the next
    Arrow batch, so the last run of a batch is held back until the following one.
    """
    import pyarrow as pa

    for tbl, a, b in _bucket_runs(batches, max_bucket_size, threshold):
        ids = tbl.column("id").combine_chunks() if tbl.column("id").num_chunks > 1 else tbl.column("id").chunk(0)
        yield pa.RecordBatch.from_arrays([ids.take(pa.array(a)), ids.take(pa.array(b))], names=["id_a", "id_b"])


def _bucket_runs(batches: Iterable, max_bucket_size: int, threshold: float) -> Iterator:
    """(table, a, b): row-index pairs of ``bucket_pair_batches``' rule, per stretch of whole runs."""
    import pyarrow as pa

    pending = None
    for batch in itertools.chain(batches, [None]):
        if batch is None:
            if pending is None:
                return
            tbl, last = pending, True
        else:
            tbl = pa.Table.from_batches([batch]) if pending is None else pa.concat_tables(
                [pending, pa.Table.from_batches([batch])])
            last = False
        if tbl.num_rows == 0:
            continue
        key = tbl.column("key").to_numpy()
        change = np.flatnonzero(key[1:] != key[:-1]) + 1
        starts = np.concatenate(([0], change))
        if not last:  # hold back the final run: it may go on in the next batch
            cut = int(starts[-1])
            pending = tbl.slice(cut)
            tbl, key, starts = tbl.slice(0, cut), key[:cut], starts[:-1]
        else:
            pending = None
        if tbl.num_rows == 0:
            continue
        a, b = _run_pairs(starts, tbl.num_rows, max_bucket_size)
        if len(a) == 0:
            continue
        n = tbl.column("n").to_numpy().astype(np.float64)
        na, nb = n[a], n[b]
        ok = np.minimum(na, nb) >= threshold * np.maximum(na, nb) - 1e-9
        yield tbl, a[ok], b[ok]


@dataclass
class DocSets:
    """Every item's band hashes and sorted shingle-hash set, by (sorted) int64 id: what
    ``bucket_verify_batches`` looks pairs up in, shipped to every task as one broadcast."""

    ids: np.ndarray  # int64, sorted
    offsets: np.ndarray  # int64, len(ids) + 1, into values
    # Each item's shingle hashes as dense ranks (uint32, the order of the hashes): each item's
    # run sorted, so (pair << 32 | rank) keys of consecutive pairs are sorted (``_set_jaccard``).
    values: np.ndarray
    bands: np.ndarray  # (len(ids), b) int64 band hashes
    giant: np.ndarray  # sorted band hashes of buckets with more than max_bucket_size items

    @classmethod
    def from_docs(cls, docs, max_bucket_size: int) -> "DocSets":
        """From an Arrow table of (id int64, band_hashes list<int64>, shingles binary) rows."""
        import pyarrow as pa
        import pyarrow.compute as pc

        order = pc.sort_indices(docs.column("id")).to_numpy()
        ids = docs.column("id").to_numpy()[order]
        counts, values = binary_int64(docs.column("shingles").combine_chunks().take(pa.array(order)))
        bands_col = docs.column("band_hashes").combine_chunks().take(pa.array(order))
        b = len(bands_col[0]) if len(bands_col) else 0
        bands = pc.list_flatten(bands_col).to_numpy().reshape(len(ids), b) if b else np.zeros((len(ids), 0), np.int64)
        keys, sizes = np.unique(bands, return_counts=True)
        offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        ranks = np.unique(values, return_inverse=True)[1].reshape(-1).astype(np.uint32)
        return cls(ids, offsets, ranks, bands, keys[sizes > max_bucket_size])


def bucket_verify_batches(batches: Iterable, *, sets, max_bucket_size: int, threshold: float) -> Iterator:
    """``mapInArrow`` body over (key, band, id, n) rows sorted by (key, id) within the partition,
    every row of a key in one partition: (id_a, id_b, jaccard) of the verified pairs, plus one
    row (null, null, pairs checked) per batch.

    The candidates are ``bucket_pair_batches``' pairs, verified here against ``sets`` (a
    ``DocSets`` or a Spark broadcast of one) instead of being shuffled, de-duplicated and
    joined to their sets. A pair that shares several bands is checked once: in its first
    shared band, unless that band's bucket is a giant one (where not every pair is emitted),
    in which case in its first shared band that is not. So each distinct candidate is
    verified and counted once, except the links of giant buckets (first member, predecessor),
    which are checked in every giant bucket that links them: still linear in the bucket size.
    """
    sets = getattr(sets, "value", sets)
    empty = True
    for tbl, a, b in _bucket_runs(batches, max_bucket_size, threshold):
        ids = tbl.column("id").to_numpy()
        band = tbl.column("band").to_numpy()
        ia, ib = ids[a], ids[b]
        pa_, pb_ = np.searchsorted(sets.ids, ia), np.searchsorted(sets.ids, ib)
        j = band[a]
        same = (band[b] == j) & (ia != ib)
        ra, rb = sets.bands[pa_], sets.bands[pb_]
        earlier = (ra == rb) & (np.arange(ra.shape[1])[None, :] < j[:, None])
        if earlier.any() and len(sets.giant):
            earlier &= ~np.isin(ra, sets.giant)
        first = (ia != ib) & ~(same & earlier.any(axis=1))
        pa_, pb_, ia, ib = pa_[first], pb_[first], ia[first], ib[first]
        jac = _set_jaccard(sets, pa_, pb_)
        ok = np.flatnonzero(jac >= threshold)
        empty = False
        yield _with_tally(ia[ok], ib[ok], jac[ok], len(ia))
    if empty:
        yield _with_tally(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), 0)


def _with_tally(ia: np.ndarray, ib: np.ndarray, jac: np.ndarray, checked: int):
    """A batch of verified pairs and, last, the tally row (null, null, pairs checked)."""
    import pyarrow as pa

    mask = np.zeros(len(ia) + 1, dtype=bool)
    mask[-1] = True
    return pa.RecordBatch.from_arrays(
        [pa.array(np.append(ia, 0), mask=mask), pa.array(np.append(ib, 0), mask=mask),
         pa.array(np.append(jac, float(checked)), type=pa.float64())], names=["id_a", "id_b", "jaccard"])


def _set_jaccard(sets: DocSets, pa_: np.ndarray, pb_: np.ndarray) -> np.ndarray:
    """Exact Jaccard of the shingle-hash sets of items ``pa_[i]`` and ``pb_[i]`` (positions in ``sets``).

    Pair i's members become keys ``i << 32 | rank``; each item's ranks are sorted, so the keys
    of all a-sides are one sorted array and so are the b-sides': the intersections are one
    ``searchsorted`` of the a-keys in the b-keys, with no sort.
    """
    la = sets.offsets[pa_ + 1] - sets.offsets[pa_]
    lb = sets.offsets[pb_ + 1] - sets.offsets[pb_]
    n = len(la)
    pair_a = np.repeat(np.arange(n, dtype=np.int64), la)
    ka = (pair_a << 32) | sets.values[_ranges(sets.offsets[pa_], la)].astype(np.int64)
    kb = (np.repeat(np.arange(n, dtype=np.int64), lb) << 32) | sets.values[_ranges(sets.offsets[pb_], lb)].astype(np.int64)
    inter = np.zeros(n, dtype=np.int64)
    if len(ka) and len(kb):
        pos = np.minimum(np.searchsorted(kb, ka), len(kb) - 1)
        inter = np.bincount(pair_a[kb[pos] == ka], minlength=n)
    return _jaccard(la, lb, inter)


def _jaccard(la: np.ndarray, lb: np.ndarray, inter: np.ndarray) -> np.ndarray:
    """|A & B| / |A | B| per pair from the set sizes and intersection sizes; 0 when a set is empty."""
    union = la + lb - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((la > 0) & (lb > 0), inter / np.maximum(union, 1), 0.0)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``range(starts[i], starts[i] + lengths[i])``."""
    total = int(lengths.sum())
    return np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(total, dtype=np.int64)


def _pair_jaccard(la: np.ndarray, va: np.ndarray, lb: np.ndarray, vb: np.ndarray) -> np.ndarray:
    """Jaccard per pair of the sets ``va`` (``la[i]`` values for pair i, in pair order) and ``vb``:
    the members of both are tagged with their pair and sorted by (pair, hash); a hash listed
    twice for one pair is in the intersection (a set has no repeats)."""
    n = len(la)
    pair = np.concatenate([np.repeat(np.arange(n, dtype=np.int64), la), np.repeat(np.arange(n, dtype=np.int64), lb)])
    h = np.concatenate([va, vb])
    order = np.lexsort((h, pair))
    h, pair = h[order], pair[order]
    dup = (h[1:] == h[:-1]) & (pair[1:] == pair[:-1])
    inter = np.bincount(pair[1:][dup], minlength=n)
    return _jaccard(la, lb, inter)


def _run_pairs(starts: np.ndarray, total: int, max_bucket_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-index pairs (earlier, later) within runs beginning at ``starts`` of rows ``0 .. total-1``."""
    lengths = np.diff(np.append(starts, total))
    run_start = np.repeat(starts, lengths)
    pos = np.arange(total, dtype=np.int64) - run_start
    big = np.repeat(lengths > max_bucket_size, lengths)
    # small runs: row e pairs with every earlier row of its run (pos of them)
    fan = np.where(big, 0, pos)
    later = np.repeat(np.arange(total, dtype=np.int64), fan)
    earlier = np.repeat(run_start, fan) + (np.arange(len(later), dtype=np.int64) - np.repeat(np.cumsum(fan) - fan, fan))
    # giant runs: row e links to its run's first row and to its predecessor
    g = np.flatnonzero(big & (pos >= 1))
    g2 = g[pos[g] >= 2]
    later = np.concatenate([later, g, g2])
    earlier = np.concatenate([earlier, run_start[g], g2 - 1])
    return earlier, later


def jaccard_hash_batches(batches: Iterable, *, threshold: float, tally: bool = False) -> Iterator:
    """``mapInArrow`` body: (id_a, id_b, shingles_a, shingles_b binary of sorted int64 hashes, see
    ``int64_binary``) -> (id_a, id_b, jaccard) for the
    pairs whose Jaccard reaches ``threshold``.

    Jaccard of the two sorted shingle-hash sets, all pairs of a batch at once: the members
    of both sets are tagged with their pair, sorted by (pair, hash), and a hash listed
    twice for one pair is in the intersection (each set has no repeats). With ``tally`` each
    batch also yields a row (null, null, number of pairs it checked), so the caller counts
    the candidates in the same pass.
    """
    import pyarrow as pa

    for batch in batches:
        la, va = binary_int64(batch.column("shingles_a"))
        lb, vb = binary_int64(batch.column("shingles_b"))
        n = len(la)
        j = _pair_jaccard(la, va, lb, vb)
        ok = np.flatnonzero(j >= threshold)
        yield pa.RecordBatch.from_arrays(
            [batch.column("id_a").take(pa.array(ok)), batch.column("id_b").take(pa.array(ok)),
             pa.array(j[ok], type=pa.float64())], names=["id_a", "id_b", "jaccard"])
        if tally:
            yield pa.RecordBatch.from_arrays(
                [pa.nulls(1, batch.column("id_a").type), pa.nulls(1, batch.column("id_b").type),
                 pa.array([float(n)], type=pa.float64())],
                names=["id_a", "id_b", "jaccard"])


def signature_batches(batches: Iterable, *, num_perm: int, seed: int, ngram: int,
                      id_col: str = "id", text_col: str = "text") -> Iterator:
    """``mapInArrow`` body: (id, text) -> (id, signature array<bigint>) for every row."""
    import pyarrow as pa

    for batch in batches:
        sig = minhash_signatures(batch.column(text_col).to_pylist(), num_perm, seed, ngram)
        offsets = pa.array(np.arange(0, sig.size + 1, num_perm, dtype=np.int32))
        arr = pa.ListArray.from_arrays(offsets, pa.array(sig.view(np.int64).reshape(-1)))
        yield pa.RecordBatch.from_arrays([batch.column(id_col), arr], names=["id", "signature"])


# --------------------------------------------------------------------------- in-process dedup (small inputs)


@dataclass
class LocalDedup:
    """What ``dedup_in_process`` returns: row-aligned cluster labels and the verified pairs,
    all as positions in the input (``ids[cluster]`` is the cluster id)."""

    cluster: np.ndarray  # int64, the position of the cluster's smallest id, per input row
    keep: np.ndarray  # bool per input row
    pair_a: np.ndarray  # int64 positions, ids[pair_a] < ids[pair_b]
    pair_b: np.ndarray
    jaccard: np.ndarray  # float64
    candidate_pairs: int
    rounds: int


def dedup_in_process(ids, texts, *, num_perm: int, seed: int, ngram: int, bands: int, rows: int, threshold: float,
                     max_bucket_size: int, scores=None, batch_rows: int = 8192,
                     pair_batch: int = 1 << 16) -> LocalDedup:
    """The whole dedup in one process, over the same UDF bodies the Spark path maps over its
    partitions (``doc_batches``, ``bucket_verify_batches``), so the two give the same pairs,
    Jaccards, clusters and counts for the same rows.

    ``ids`` is an Arrow string array without nulls or repeats, ``texts`` an Arrow string array
    of the same length, ``scores`` (keep the highest) an Arrow float64 array or None. Ids are
    replaced by their rank in byte order (Spark's string order) for the whole computation: band rows sort by (band hash, rank) as Spark sorts them by
    (band hash, id), and a component's smallest rank is its smallest id.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(ids)
    order = pc.sort_indices(ids).to_numpy()
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n, dtype=np.int64)
    by_rank = pa.table({"id": pa.array(np.arange(n, dtype=np.int64)), "text": texts.take(pa.array(order))})
    docs = pa.Table.from_batches(
        list(doc_batches(by_rank.to_batches(max_chunksize=batch_rows), num_perm=num_perm, seed=seed, ngram=ngram,
                         bands=bands, rows=rows, block=256)),
        schema=pa.schema([("id", pa.int64()), ("band_hashes", pa.list_(pa.int64())), ("shingles", pa.binary())]))
    sets = DocSets.from_docs(docs, max_bucket_size)
    sizes = np.diff(sets.offsets)

    # candidates: band rows sorted by (band hash, rank), every bucket one run, verified where made
    b_idx = np.tile(np.arange(bands, dtype=np.int32), len(sets.ids))
    key, member = sets.bands.reshape(-1), np.repeat(sets.ids, bands)
    srt = np.lexsort((member, key))
    band_rows = pa.table({"key": key[srt], "band": b_idx[srt], "id": member[srt], "n": np.repeat(sizes, bands)[srt]})
    va, vb, vj, checked = [], [], [], 0
    for out in bucket_verify_batches(band_rows.to_batches(max_chunksize=pair_batch), sets=sets,
                                     max_bucket_size=max_bucket_size, threshold=threshold):
        ok = out.column("id_a").is_valid().to_numpy(zero_copy_only=False)
        va.append(out.column("id_a").to_numpy(zero_copy_only=False)[ok].astype(np.int64))
        vb.append(out.column("id_b").to_numpy(zero_copy_only=False)[ok].astype(np.int64))
        vj.append(out.column("jaccard").to_numpy()[ok])
        checked += int(out.column("jaccard").to_numpy()[~ok].sum())
    va, vb, vj = np.concatenate(va), np.concatenate(vb), np.concatenate(vj)
    # a pair checked twice (it shares two giant buckets) is listed once, as the Spark path's distinct does
    _, first = np.unique(va * max(n, 1) + vb, return_index=True)
    va, vb, vj = va[first], vb[first], vj[first]

    label, rounds = min_label_components(n, va, vb)
    if scores is not None:
        scores = scores.take(pa.array(order))
        scores = (scores.to_numpy(zero_copy_only=False), np.asarray(scores.is_null().to_numpy(zero_copy_only=False)))
    keep = _kept_members(label, scores)
    return LocalDedup(cluster=order[label[rank]], keep=keep[rank], pair_a=order[va], pair_b=order[vb], jaccard=vj,
                      candidate_pairs=checked, rounds=rounds)


def min_label_components(n: int, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    """For nodes ``0 .. n-1`` and edges ``(a[i], b[i])``: each node's component label, the
    smallest node of its component; and the rounds run.

    Each round hooks both ends of every edge (and their current labels) to the smaller
    label, then pointer-jumps to the root; labels only ever point to smaller nodes of the
    same component, and a round that changes nothing means every edge joins equal labels.

    >>> min_label_components(6, np.array([4, 1, 5]), np.array([1, 3, 3]))[0].tolist()
    [0, 1, 2, 1, 1, 1]
    """
    lab = np.arange(n, dtype=np.int64)
    rounds = 0
    while len(a):
        rounds += 1
        m = np.minimum(lab[a], lab[b])
        new = lab.copy()
        for tgt in (a, b, lab[a], lab[b]):
            np.minimum.at(new, tgt, m)
        while True:
            nxt = new[new]
            if np.array_equal(nxt, new):
                break
            new = nxt
        if np.array_equal(new, lab):
            break
        lab = new
    return lab, rounds


def _kept_members(label: np.ndarray, scores: Optional[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """One kept node per component: the smallest, or the highest score with Spark's order for
    ``score desc nulls last, id asc`` (NaN above every number, then numbers, then nulls);
    ``scores`` is (float64 values, null mask)."""
    n = len(label)
    if scores is None:
        return label == np.arange(n)
    val, null = scores
    nan = np.isnan(val) & ~null
    group = np.where(nan, 0, np.where(null, 2, 1))
    neg = np.where(group == 1, -val, 0.0)
    order = np.lexsort((np.arange(n), neg, group, label))
    first = np.ones(n, dtype=bool)
    first[1:] = label[order][1:] != label[order][:-1]
    keep = np.zeros(n, dtype=bool)
    keep[order[first]] = True
    return keep


# --------------------------------------------------------------------------- reference (test oracle)


def shingle_hash_reference(tokens: Sequence[str]) -> int:
    """Base hash of one shingle with Python integers."""
    h = _xxh64(tokens[0].encode("utf-8"))
    for t in tokens[1:]:
        z = (h * GOLDEN + _xxh64(t.encode("utf-8"))) & _MASK64
        z ^= z >> 33
        z = (z * 0xFF51AFD7ED558CCD) & _MASK64
        z ^= z >> 33
        z = (z * 0xC4CEB9FE1A85EC53) & _MASK64
        h = z ^ (z >> 33)
    return h


def signature_reference(text: Optional[str], num_perm: int = 128, seed: int = 42, ngram: int = 1) -> list[int]:
    """The signature with Python's unbounded integers: the regex tokenizer, tuples of tokens
    as shingles, and ``(a*x + b) % p`` that cannot overflow."""
    toks = tokenize(text)
    if not toks:
        return [EMPTY_HASH] * num_perm
    if len(toks) < ngram:
        grams = {tuple(toks)}
    else:
        grams = {tuple(toks[i : i + ngram]) for i in range(len(toks) - ngram + 1)}
    xs = [shingle_hash_reference(g) % MERSENNE_PRIME for g in grams]
    a, b = permutations(num_perm, seed)
    return [min((int(ai) * x + int(bi)) % MERSENNE_PRIME for x in xs) for ai, bi in zip(a, b)]
