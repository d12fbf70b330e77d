"""Cluster-local work on unit vectors, executor side (pure numpy/scipy): near-duplicate groups
inside one k-means cluster (SemDeDup) and distances to assigned centres."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

from udfs.retrieval import stack_vectors

GROUP_FIELDS = "id string, kmeans_cluster int, group_id string, keep boolean, max_cosine double, group_size int"


def duplicate_groups(ids: Sequence[str], vectors: np.ndarray, min_cosine: float,
                     scores: Optional[Sequence[Optional[float]]] = None, block: int = 2048) -> pd.DataFrame:
    """Connected groups of items whose cosine is >= ``min_cosine``; one kept per group.

    The kept member is the one with the highest score (when scores are given), then the
    lowest id; ``group_id`` is the kept member's id. The Gram matrix is built ``block`` rows at
    a time, so a large cluster costs ``block x n`` memory, not ``n x n``.

    >>> v = np.array([[1, 0], [0.999, 0.0447], [0, 1]], dtype=np.float32)
    >>> duplicate_groups(["b", "a", "c"], v, 0.99)[["id", "group_id", "keep"]].values.tolist()
    [['b', 'a', False], ['a', 'a', True], ['c', 'c', True]]
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ids = np.asarray(ids).astype(str)
    n = len(ids)
    v = np.asarray(vectors, dtype=np.float64)
    rows, cols = [], []
    max_cos = np.full(n, -np.inf)
    for start in range(0, n, block):
        sims = v[start:start + block] @ v.T
        local = np.arange(sims.shape[0])
        sims[local, start + local] = -np.inf  # an item is not its own duplicate
        if n > 1:
            max_cos[start:start + block] = sims.max(axis=1)
        r, c = np.nonzero(sims >= min_cosine)
        rows.append(r + start)
        cols.append(c)
    r = np.concatenate(rows) if rows else np.empty(0, int)
    c = np.concatenate(cols) if cols else np.empty(0, int)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    score = np.full(n, -np.inf) if scores is None else np.array(
        [-np.inf if s is None or pd.isna(s) else float(s) for s in scores])
    # Best first: highest score, then lowest id; the first row of each label is its kept member.
    order = np.lexsort((ids, -score))
    first = {}
    for i in order:
        first.setdefault(label[i], i)
    kept = np.array([first[label[i]] for i in range(n)])
    sizes = np.bincount(label, minlength=label.max() + 1 if n else 0)
    return pd.DataFrame({
        "id": ids.astype(object),
        "group_id": ids[kept].astype(object),
        "keep": kept == np.arange(n),
        "max_cosine": np.where(np.isfinite(max_cos), max_cos, np.nan),
        "group_size": sizes[label].astype("int32") if n else np.empty(0, "int32"),
    })


def groups_in_cluster(pdf: pd.DataFrame, *, min_cosine: float) -> pd.DataFrame:
    """``applyInPandas`` body for one k-means cluster: (id, kmeans_cluster, embedding[, score])."""
    out = duplicate_groups(pdf["id"].tolist(), stack_vectors(pdf["embedding"].tolist()), min_cosine,
                           pdf["score"].tolist() if "score" in pdf else None)
    out.insert(1, "kmeans_cluster", np.int32(pdf["kmeans_cluster"].iloc[0]) if len(pdf) else np.int32(0))
    return out


def centre_distances(vectors: np.ndarray, centres: np.ndarray, assignment: np.ndarray) -> np.ndarray:
    """Euclidean distance of each vector to its assigned centre (float64).

    >>> centre_distances(np.array([[3.0, 4.0]]), np.array([[0.0, 0.0], [3.0, 0.0]]), np.array([1])).tolist()
    [4.0]
    """
    diff = np.asarray(vectors, np.float64) - np.asarray(centres, np.float64)[np.asarray(assignment, int)]
    return np.sqrt((diff * diff).sum(axis=1))
