"""Word-level MinHash with exact modular arithmetic, vectorized with numpy (executor side).

Permutations are ``h_i(x) = (a_i * x + b_i) mod p`` with the Mersenne prime ``p = 2^61 - 1``.
``a * x`` needs up to 122 bits, which overflows uint64 in the usual numpy implementations
(datasketch, datatrove, text-dedup compute it in wrapping uint64 arithmetic); here the
product is split into 32-bit halves and reduced with ``2^61 = 1 (mod p)`` so every
intermediate fits in 64 bits and the result is the exact residue.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np
import xxhash

MERSENNE = (1 << 61) - 1
_P = np.uint64(MERSENNE)
_MASK32 = np.uint64(0xFFFFFFFF)
_MASK29 = np.uint64((1 << 29) - 1)
_WORD = re.compile(r"\w+", re.UNICODE)
EMPTY = np.uint64(MERSENNE)  # the signature value of a text with no tokens


def tokenize(text: str | None) -> list[str]:
    """Lower-cased word tokens.

    >>> tokenize("Hello, World! It's 2 o'clock.")
    ['hello', 'world', 'it', 's', '2', 'o', 'clock']
    """
    return _WORD.findall(text.lower()) if text else []


def shingles(tokens: Sequence[str], n: int = 1) -> set[str]:
    """Word n-grams; a text shorter than n words is one shingle of all its words."""
    if not tokens:
        return set()
    if len(tokens) < n:
        return {" ".join(tokens)}
    return {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def shingle_set(text: str | None, n: int = 1) -> set[str]:
    return shingles(tokenize(text), n)


def hash64(items: Iterable[str]) -> np.ndarray:
    return np.fromiter((xxhash.xxh64_intdigest(s.encode("utf-8")) for s in items), dtype=np.uint64)


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    a = rng.randint(1, 2**31 - 1, size=num_perm, dtype=np.int64).astype(np.uint64)
    a = (a << np.uint64(30)) ^ rng.randint(0, 2**30, size=num_perm, dtype=np.int64).astype(np.uint64)
    b = (rng.randint(0, 2**31 - 1, size=num_perm, dtype=np.int64).astype(np.uint64) << np.uint64(30)) ^ \
        rng.randint(0, 2**30, size=num_perm, dtype=np.int64).astype(np.uint64)
    return a % _P, b % _P


def _reduce(v: np.ndarray) -> np.ndarray:
    """v mod p for v < 2^64, using 2^61 = 1 (mod p)."""
    v = (v & _P) + (v >> np.uint64(61))
    v = (v & _P) + (v >> np.uint64(61))
    return np.where(v >= _P, v - _P, v)


def mulmod(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(a * x) mod p exactly, for a, x < p, elementwise with broadcasting, in uint64."""
    a1, a0 = a >> np.uint64(32), a & _MASK32
    x1, x0 = x >> np.uint64(32), x & _MASK32
    hi = a1 * x1                       # < 2^58, weight 2^64 = 8 (mod p)
    mid = a1 * x0 + a0 * x1            # < 2^62, weight 2^32
    lo = a0 * x0                       # < 2^64
    mid_part = (mid >> np.uint64(29)) + ((mid & _MASK29) << np.uint64(32))  # mid*2^32 = (mid>>29)*2^61 + ...
    total = _reduce(lo) + _reduce(hi << np.uint64(3)) + _reduce(mid_part)  # each < p, sum < 2^63
    return _reduce(total)


def signatures(texts: Sequence[str | None], a: np.ndarray, b: np.ndarray, n: int = 1,
               chunk: int = 512) -> np.ndarray:
    """(len(texts), num_perm) uint64 MinHash signatures; a text without tokens gets all EMPTY.

    Blocks of about ``chunk`` shingles keep the (shingles x permutations) work in cache:
    larger blocks are memory-bound and several times slower.
    """
    num_perm = len(a)
    hashed = [hash64(shingle_set(t, n)) for t in texts]
    lengths = np.fromiter((len(h) for h in hashed), dtype=np.int64, count=len(hashed))
    out = np.full((len(texts), num_perm), EMPTY, dtype=np.uint64)
    nonempty = np.flatnonzero(lengths)
    if len(nonempty) == 0:
        return out
    ne_lengths = lengths[nonempty]
    flat = _reduce(np.concatenate([hashed[i] for i in nonempty]))
    starts = np.concatenate([[0], np.cumsum(ne_lengths)[:-1]])
    mins = np.empty((len(nonempty), num_perm), dtype=np.uint64)
    # Work on whole documents at a time so each block reduces with one reduceat.
    d = 0
    while d < len(nonempty):
        e = d + 1
        budget = ne_lengths[d]
        while e < len(nonempty) and budget + ne_lengths[e] <= chunk:
            budget += ne_lengths[e]
            e += 1
        lo, hi = starts[d], starts[d] + budget
        h = mulmod(a[None, :], flat[lo:hi, None]) + b[None, :]
        h = np.where(h >= _P, h - _P, h)
        mins[d:e] = np.minimum.reduceat(h, starts[d:e] - lo, axis=0)
        d = e
    out[nonempty] = mins
    return out


def signature_reference(text: str | None, a: Sequence[int], b: Sequence[int], n: int = 1) -> list[int]:
    """The same signature with Python integers (no overflow possible): the test oracle."""
    hs = [xxhash.xxh64_intdigest(s.encode("utf-8")) % MERSENNE for s in shingle_set(text, n)]
    if not hs:
        return [MERSENNE] * len(a)
    return [min((int(ai) * h + int(bi)) % MERSENNE for h in hs) for ai, bi in zip(a, b)]


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(docs, bands) int64 hashes of each band's rows."""
    out = np.empty((sig.shape[0], bands), dtype=np.int64)
    for j in range(bands):
        block = np.ascontiguousarray(sig[:, j * rows : (j + 1) * rows])
        raw = block.view(np.uint8).reshape(sig.shape[0], -1)
        out[:, j] = [np.int64(np.uint64(xxhash.xxh64_intdigest(r.tobytes(), seed=j)).view(np.int64)) for r in raw]
    return out


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def candidate_probability(s: float | np.ndarray, bands: int, rows: int):
    """The S-curve: probability that a pair with Jaccard s shares at least one band."""
    return 1.0 - (1.0 - np.power(s, rows)) ** bands


def optimal_param(threshold: float, num_perm: int, false_positive_weight: float = 0.3,
                  false_negative_weight: float = 0.7) -> tuple[int, int]:
    """(bands, rows) minimising the weighted areas under the S-curve below the threshold
    (false positives) and above it (false negatives)."""
    grid_lo = np.linspace(0.0, threshold, 201)
    grid_hi = np.linspace(threshold, 1.0, 201)
    best, best_err = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = np.trapezoid(candidate_probability(grid_lo, b, r), grid_lo)
            fn = np.trapezoid(1 - candidate_probability(grid_hi, b, r), grid_hi)
            err = false_positive_weight * fp + false_negative_weight * fn
            if err < best_err - 1e-15:
                best, best_err = (b, r), err
    return best


def band_rows_batches(batches, *, id_col: str, text_col: str, num_perm: int, seed: int, ngram: int,
                      bands: int, rows: int):
    """mapInPandas body: (id, text) batches -> (id, band, band_hash) rows; empty texts get no bands."""
    import pandas as pd

    a, b = permutations(num_perm, seed)
    for pdf in batches:
        texts = pdf[text_col].tolist()
        sig = signatures(texts, a, b, ngram)
        hb = band_hashes(sig, bands, rows)
        has_tokens = (sig[:, 0] != EMPTY)
        ids = pdf[id_col].to_numpy()[has_tokens]
        hb = hb[has_tokens]
        yield pd.DataFrame({
            "id": np.repeat(ids, bands),
            "band": np.tile(np.arange(bands, dtype=np.int32), len(ids)),
            "band_hash": hb.reshape(-1),
        })


def jaccard_batches(batches, *, ngram: int):
    """mapInPandas body: (id_a, id_b, text_a, text_b) -> (id_a, id_b, jaccard) exact."""
    import pandas as pd

    for pdf in batches:
        j = [jaccard(shingle_set(x, ngram), shingle_set(y, ngram)) for x, y in zip(pdf["text_a"], pdf["text_b"])]
        yield pd.DataFrame({"id_a": pdf["id_a"], "id_b": pdf["id_b"], "jaccard": np.asarray(j, dtype=np.float64)})
