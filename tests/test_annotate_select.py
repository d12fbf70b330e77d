"""annotate.select's rank rule: the first n documents by score (descending), ties by doc_id,
computed with counts and a bounded top-k at any size (jobs.stages.corpus.annotate.rank_cutoff)."""
from __future__ import annotations

import hashlib
import random

import pytest

from jobs.stages.corpus.annotate import kth_smallest_id, rank_cutoff
from jobs.common.config import AnnotateConfig


def _rows(n: int, seed: int = 7) -> list[tuple[int, str]]:
    rng = random.Random(seed)
    # few score values, so the cut falls inside large tie groups
    return [(rng.choice([0, 2, 2, 3, 4, 4, 4, 8]), hashlib.sha256(str(i).encode()).hexdigest()[:32]) for i in range(n)]


def _expected(rows, n):
    return set(sorted(rows, key=lambda r: (-r[0], r[1]))[:n])


def _chosen(rows, cut):
    if cut is None:
        return set()
    score, last = cut
    return {r for r in rows if r[0] > score or (r[0] == score and (last is None or r[1] <= last))}


@pytest.mark.parametrize("n", [0, 1, 2, 3, 37, 2_499, 2_500, 4_000, 5_000])
def test_rank_cutoff_keeps_exactly_the_first_n_by_score_then_doc_id(spark, n):
    rows = _rows(4_000)
    df = spark.createDataFrame(rows, "score int, doc_id string")
    cut = rank_cutoff(df, n)
    assert _chosen(rows, cut) == _expected(rows, n)


def test_rank_cutoff_on_no_rows(spark):
    assert rank_cutoff(spark.createDataFrame([], "score int, doc_id string"), 5) is None


@pytest.mark.parametrize("k", [1, 17, 500, 999, 1_000])
def test_kth_smallest_id_narrows_by_prefix_beyond_the_sort_limit(spark, k):
    ids = sorted(r[1] for r in _rows(1_000, seed=k))
    df = spark.createDataFrame([(i,) for i in ids], "doc_id string")
    # a sort limit of 10 makes every k above it go through the prefix rounds
    assert kth_smallest_id(df, k, sort_limit=10) == ids[k - 1]


def test_config_accepts_rank_rules_and_rejects_bad_ones():
    assert AnnotateConfig(select={"top_fraction": 0.2}).select == {"top_fraction": 0.2}
    assert AnnotateConfig(select={"reasoning": 1, "top_n": 20}).select["top_n"] == 20
    for bad in ({"top_fraction": 0}, {"top_fraction": 1.5}, {"top_n": -1}, {"top_n": 2.5},
                {"top_n": 3, "top_fraction": 0.1}, {"depth": 2}):
        with pytest.raises(ValueError):
            AnnotateConfig(select=bad)
