"""Exact top-k retrieval by cosine, executor side (pure numpy; FAISS optional).

The driver broadcasts the seed matrix; each partition streams its question vectors through
``PartialTopK`` (one matrix product per Arrow batch, a running top-k per seed), and emits at
most ``seeds x k`` rows; a global top-k per seed over those rows is then exact.

Order is total: score descending, then id ascending, so ties are broken the same way in
every partition, in the global step and in a brute-force check. Scores are computed in
float64 from the float32 vectors: every product of two float32 values is exact in float64,
so two identical vectors score identically, and a different split of the matrix moves a
score by a last-bit rounding at most (far below any real gap between two questions).
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence

import numpy as np
import pandas as pd

TOPK_FIELDS = "seed_id string, question_id string, score double"


def top_k_exact(scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` best entries of one score row (score desc, id asc).

    >>> top_k_exact(np.array([0.5, 0.9, 0.5, 0.1]), np.array(["d", "c", "a", "b"]), 2).tolist()
    [1, 2]
    """
    n = scores.shape[0]
    if n <= k:
        cand = np.arange(n)
    else:
        kth = np.partition(scores, n - k)[n - k]  # the k-th largest value
        cand = np.flatnonzero(scores >= kth)  # every tie at the boundary stays a candidate
    order = np.lexsort((ids[cand], -scores[cand]))
    return cand[order[:k]]


def brute_force_top_k(vectors: np.ndarray, ids: np.ndarray, seeds: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per seed: (ids, scores) of the k nearest vectors, over the whole matrix at once."""
    scores = np.asarray(seeds, np.float64) @ np.asarray(vectors, np.float64).T
    out = []
    for row in scores:
        pos = top_k_exact(row, ids, k)
        out.append((ids[pos], row[pos]))
    return out


class PartialTopK:
    """A running top-k per seed over batches of (ids, vectors).

    With ``faiss`` set, each batch's candidates come from a FAISS inner-product index searched
    for ``k + faiss_margin`` neighbours (float32), then are re-scored exactly in float64 and
    cut with the same total order; the margin absorbs float32 reordering at the boundary.
    """

    def __init__(self, seeds: np.ndarray, k: int, *, faiss: bool = False, faiss_margin: int = 64):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.seeds = np.ascontiguousarray(seeds, dtype=np.float64)
        self.k = int(k)
        self.faiss = faiss
        self.faiss_margin = int(faiss_margin)
        s = self.seeds.shape[0]
        self._ids = [np.empty(0, dtype=str) for _ in range(s)]
        self._scores = [np.empty(0, dtype=np.float64) for _ in range(s)]

    def _batch_candidates(self, vectors: np.ndarray, ids: np.ndarray):
        """Per seed: (positions into the batch, their exact scores)."""
        if self.faiss and vectors.shape[0] > self.k + self.faiss_margin:
            import faiss

            index = faiss.IndexFlatIP(vectors.shape[1])
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
            _, pos = index.search(np.ascontiguousarray(self.seeds, dtype=np.float32), self.k + self.faiss_margin)
            v64 = np.asarray(vectors, np.float64)
            for i, p in enumerate(pos):
                p = p[p >= 0]
                yield p, v64[p] @ self.seeds[i]
            return
        scores = self.seeds @ np.asarray(vectors, np.float64).T
        n = scores.shape[1]
        if n <= self.k:
            for row in scores:
                yield np.arange(n), row
            return
        # Only entries at or above each seed's k-th best score can survive the merge; ties at
        # the boundary stay in, the merge's total order decides among them.
        kth = np.partition(scores, n - self.k, axis=1)[:, n - self.k]
        for row, t in zip(scores, kth):
            pos = np.flatnonzero(row >= t)
            yield pos, row[pos]

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids = np.asarray(ids).astype(str)
        for i, (pos, sc) in enumerate(self._batch_candidates(vectors, ids)):
            all_ids = np.concatenate([self._ids[i], ids[pos]])
            all_scores = np.concatenate([self._scores[i], sc])
            keep = top_k_exact(all_scores, all_ids, self.k)
            self._ids[i], self._scores[i] = all_ids[keep], all_scores[keep]

    def rows(self, seed_ids: Sequence[str]) -> pd.DataFrame:
        parts = [pd.DataFrame({"seed_id": sid, "question_id": self._ids[i].astype(object), "score": self._scores[i]})
                 for i, sid in enumerate(seed_ids)]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["seed_id", "question_id", "score"])


def stack_vectors(values: Sequence) -> np.ndarray:
    """A column of array<float> values -> (n, d) float32 matrix; a wrong length is an error."""
    if len(values) == 0:
        return np.empty((0, 0), dtype=np.float32)
    mat = np.stack([np.asarray(v, dtype=np.float32) for v in values])
    if mat.ndim != 2:
        raise ValueError("vectors of different lengths in one column")
    return mat


def partial_topk_batches(batches: Iterator[pd.DataFrame], *, seeds, seed_ids: Sequence[str], k: int,
                         faiss: bool = False, faiss_margin: int = 64) -> Iterator[pd.DataFrame]:
    """``mapInPandas`` body over (question_id, embedding): at most ``len(seeds) x k`` rows per
    partition. ``seeds`` is a broadcast variable (``.value``) or the matrix itself."""
    matrix = getattr(seeds, "value", seeds)
    state: Optional[PartialTopK] = None
    for pdf in batches:
        if pdf.empty:
            continue
        if state is None:
            state = PartialTopK(matrix, k, faiss=faiss, faiss_margin=faiss_margin)
        vectors = stack_vectors(pdf["embedding"].tolist())
        if vectors.shape[1] != state.seeds.shape[1]:
            raise ValueError(f"question vectors have dimension {vectors.shape[1]}, seeds {state.seeds.shape[1]}: "
                             "embed both with the same model")
        state.add(pdf["question_id"].to_numpy(), vectors)
    if state is not None:
        yield state.rows(seed_ids)
