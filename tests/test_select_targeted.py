"""Targeted selection: exact distributed top-k, seeded k-means, nearest-to-centre, bad input.

The retrieval and clustering checks use random unit vectors (no model), and so do the
stage-level ones here; the stage on the real MiniLM encoder's vectors is in tests/test_embed.py.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from jobs.common.config import load_config
from jobs.common.runner import StageContext
from jobs.pipeline import run_stage
from jobs.common.storage import TableStore
from jobs.stages.selection.select_targeted import SeedError, nearest_to_centres, read_seeds, retrieve_top_k
from jobs.stages.questions.semdedup import fit_kmeans
from udfs.clusters import centre_distances, duplicate_groups
from udfs.retrieval import PartialTopK, brute_force_top_k, top_k_exact


def unit_vectors(n: int, d: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def vectors_frame(spark, ids, vecs, partitions=4):
    pdf = pd.DataFrame({"question_id": list(ids), "embedding": [v.tolist() for v in vecs]})
    return spark.createDataFrame(pdf, "question_id string, embedding array<float>").repartition(partitions)


@pytest.fixture(scope="module")
def corpus():
    """20k random unit vectors, some planted exact duplicates (score ties), and 50 seeds."""
    n, d = 20_000, 32
    vecs = unit_vectors(n, d, seed=1)
    rng = np.random.default_rng(2)
    seeds = unit_vectors(50, d, seed=3)
    # Ties: for the first 10 seeds, copies of one vector scattered across the table (and
    # thus across partitions); their scores are equal, so only the id order can decide.
    for i in range(10):
        src = rng.integers(n)
        for dst in rng.choice(n, size=5, replace=False):
            vecs[dst] = vecs[src]
        seeds[i] = vecs[src]
    ids = np.array([f"q{(i * 7919) % n:06d}" for i in range(n)])  # ids unrelated to row order
    return ids, vecs, seeds


def test_top_k_equals_numpy_brute_force_with_id_tie_break(spark, corpus):
    ids, vecs, seeds = corpus
    k = 100
    got = retrieve_top_k(vectors_frame(spark, ids, vecs), [f"s{i:02d}" for i in range(50)], seeds, k).toPandas()
    ref = brute_force_top_k(vecs, ids, seeds, k)
    assert len(got) == 50 * k
    for i, (ref_ids, ref_scores) in enumerate(ref):
        mine = got[got.seed_id == f"s{i:02d}"].sort_values("rank")
        assert mine.question_id.tolist() == ref_ids.tolist(), f"seed {i}"
        # the same float64 dot products; a different matrix split may only move the last bit
        np.testing.assert_allclose(mine.score.to_numpy(), ref_scores, rtol=0, atol=1e-12)
        assert mine["rank"].tolist() == list(range(1, k + 1))
    # the planted duplicates are in the top-k with equal scores, in id order
    tied = got[(got.seed_id == "s00") & (np.isclose(got.score, 1.0))]
    assert len(tied) >= 6 and tied.sort_values("rank").question_id.tolist() == sorted(tied.question_id)


def test_faiss_partitions_give_the_same_top_k(corpus):
    pytest.importorskip("faiss")
    ids, vecs, seeds = corpus
    exact = PartialTopK(seeds, 50)
    fast = PartialTopK(seeds, 50, faiss=True, faiss_margin=16)
    for start in range(0, len(ids), 4096):
        exact.add(ids[start:start + 4096], vecs[start:start + 4096])
        fast.add(ids[start:start + 4096], vecs[start:start + 4096])
    sids = [str(i) for i in range(len(seeds))]
    pd.testing.assert_frame_equal(exact.rows(sids), fast.rows(sids))


def test_k_larger_than_the_table_returns_every_row_per_seed(spark):
    vecs = unit_vectors(7, 8, seed=5)
    ids = [f"q{i}" for i in range(7)]
    got = retrieve_top_k(vectors_frame(spark, ids, vecs, 3), ["a", "b"], unit_vectors(2, 8, seed=6), 50).toPandas()
    assert sorted(got.groupby("seed_id").size().tolist()) == [7, 7]


def test_top_k_exact_breaks_ties_by_id_and_refuses_bad_k():
    assert top_k_exact(np.array([1.0, 1.0, 1.0]), np.array(["c", "a", "b"]), 2).tolist() == [1, 2]
    with pytest.raises(ValueError):
        PartialTopK(np.ones((1, 2)), 0)


def test_dimension_mismatch_is_a_clear_error(spark):
    df = vectors_frame(spark, ["a", "b"], unit_vectors(2, 8, seed=1), 1)
    with pytest.raises(Exception, match="dimension 8, seeds 4"):
        retrieve_top_k(df, ["s"], unit_vectors(1, 4, seed=2), 1).collect()


def test_kmeans_is_reproducible_and_nearest_to_centre_matches_numpy(spark):
    n = 600
    rng = np.random.default_rng(11)
    centres_true = unit_vectors(6, 16, seed=12)
    vecs = centres_true[rng.integers(6, size=n)] + 0.15 * rng.standard_normal((n, 16)).astype(np.float32)
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"q{i:04d}" for i in range(n)]
    df = vectors_frame(spark, ids, vecs, 3)

    m1, a1, k1 = fit_kmeans(df, 6, seed=7, max_iter=10, sort_by="question_id")
    m2, a2, k2 = fit_kmeans(vectors_frame(spark, ids[::-1], vecs[::-1], 2), 6, seed=7, max_iter=10,
                            sort_by="question_id")
    assert k1 == k2 == 6
    assert np.array_equal(np.asarray(m1.clusterCenters()), np.asarray(m2.clusterCenters()))
    p1 = a1.select("question_id", "kmeans_cluster").toPandas().sort_values("question_id")
    p2 = a2.select("question_id", "kmeans_cluster").toPandas().sort_values("question_id")
    assert p1.kmeans_cluster.tolist() == p2.kmeans_cluster.tolist()

    centres = np.asarray(m1.clusterCenters())
    picked = nearest_to_centres(a1.select("question_id", "kmeans_cluster", "embedding"), centres).toPandas()
    # numpy: each vector's distance to its assigned centre, the minimum per cluster
    assign = p1.set_index("question_id").kmeans_cluster.reindex(ids).to_numpy()
    dist = centre_distances(vecs, centres, assign)
    for c in range(6):
        members = np.flatnonzero(assign == c)
        best = members[np.lexsort((np.array(ids)[members], dist[members]))[0]]
        row = picked[picked.cluster_id == c].iloc[0]
        assert row.question_id == ids[best]
        assert row.distance == pytest.approx(dist[best], abs=1e-9)
        assert row.cluster_size == len(members)
    assert len(picked) == 6

    one, a_one, k_one = fit_kmeans(df, 1, seed=7, max_iter=10)
    assert k_one == 1 and np.allclose(one.clusterCenters()[0], vecs.astype(np.float64).mean(axis=0), atol=1e-6)
    assert {r.kmeans_cluster for r in a_one.select("kmeans_cluster").distinct().collect()} == {0}


def test_duplicate_groups_keep_one_per_connected_group():
    base = unit_vectors(3, 8, seed=4)
    # a-b-c chained by high similarity (a~b, b~c) but a and c less similar: one group
    a = base[0]
    b = a + 0.08 * base[1]
    c = b + 0.08 * base[2]
    vs = np.stack([a, b / np.linalg.norm(b), c / np.linalg.norm(c), base[1], base[2]]).astype(np.float32)
    out = duplicate_groups(["qa", "qb", "qc", "qd", "qe"], vs, 0.995).set_index("id")
    assert out.loc[["qa", "qb", "qc"], "group_id"].tolist() == ["qa"] * 3
    assert out.keep.to_dict() == {"qa": True, "qb": False, "qc": False, "qd": True, "qe": True}
    assert out.loc["qa", "group_size"] == 3
    scored = duplicate_groups(["qa", "qb", "qc"], vs[:3], 0.995, scores=[3.0, None, 9.0]).set_index("id")
    assert scored.keep.to_dict() == {"qa": False, "qb": False, "qc": True}


# --------------------------------------------------------------------------- stage level


def seeded_cfg(tmp_path, seeds_path=None, **sets):
    overrides = [f"storage.root={tmp_path / 'root'}", "pipeline.progress=false"]
    if seeds_path is not None:
        overrides.append(f"select_targeted.seeds_path={seeds_path}")
    overrides += [f"{k}={v}" for k, v in sets.items()]
    return load_config(None, overrides)


def ctx_for(spark, cfg):
    return StageContext(spark, cfg, TableStore(spark, cfg.storage), "select_targeted", "t", "t")


def test_missing_or_malformed_seeds_are_clear_errors(spark, tmp_path):
    with pytest.raises(SeedError, match="select_targeted.seeds_path=.*file not found"):
        read_seeds(ctx_for(spark, seeded_cfg(tmp_path, tmp_path / "nope.jsonl")))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "text": "Why?"}) + "\n")
    with pytest.raises(SeedError, match=r"column\(s\) \['seed_id', 'question'\] missing"):
        read_seeds(ctx_for(spark, seeded_cfg(tmp_path, bad)))
    dup = tmp_path / "dup.jsonl"
    dup.write_text("".join(json.dumps({"seed_id": "s", "question": q}) + "\n" for q in ("A?", "B?")))
    with pytest.raises(SeedError, match="unique"):
        read_seeds(ctx_for(spark, seeded_cfg(tmp_path, dup)))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(SeedError):
        read_seeds(ctx_for(spark, seeded_cfg(tmp_path, empty)))


def test_bundled_seeds_are_read(spark, tmp_path):
    seeds = read_seeds(ctx_for(spark, seeded_cfg(tmp_path))).collect()
    assert len(seeds) >= 20 and all(r.seed_question.endswith(("?", ".")) for r in seeds)


def test_stage_without_embeddings_fails_with_a_clear_error(spark, tmp_path):
    with pytest.raises(SeedError, match="run the embed stage first"):
        run_stage(seeded_cfg(tmp_path), "select_targeted", spark=spark)


def test_semdedup_stage_removes_planted_duplicates_for_later_stages(spark, tmp_path):
    from jobs.common.llm_stage import removed_question_ids

    cfg = seeded_cfg(tmp_path, **{"semdedup.n_clusters": 3, "semdedup.eps": 0.02, "semdedup.keep": "highest_quality"})
    store = TableStore(spark, cfg.storage)
    vecs = unit_vectors(60, 16, seed=21)
    noise = np.random.default_rng(22).standard_normal((3, 16)).astype(np.float32) * 0.01
    dup = vecs[[4, 9, 9]] + noise  # q060 ~ q004; q061, q062 ~ q009 (a group of three)
    dup /= np.linalg.norm(dup, axis=1, keepdims=True)
    allv = np.vstack([vecs, dup])
    ids = [f"q{i:03d}" for i in range(len(allv))]
    emb = pd.DataFrame({"question_id": ids, "model": "all-MiniLM-L6-v2", "dim": 16,
                        "embedding": [v.tolist() for v in allv], "status": "ok", "error": None})
    emb.loc[5, "status"], emb.loc[5, "embedding"] = "zero_vector", None
    store.overwrite("question_embeddings", spark.createDataFrame(
        emb, "question_id string, model string, dim int, embedding array<float>, status string, error string"))
    store.overwrite("judgments", spark.createDataFrame(
        [("q062", "quality", "ok", 9.0), ("q009", "quality", "ok", 4.0)],
        "question_id string, kind string, status string, score double"))
    row = run_stage(cfg, "semdedup", spark=spark)
    out = {r.id: r for r in store.read("semdedup_questions_clusters").collect()}
    clustered = set(emb.question_id[emb.status == "ok"])
    assert set(out) == clustered and "q005" not in out, "the zero vector is not clustered"
    removed = {i for i, r in out.items() if not r.keep}
    assert removed == {"q060", "q009", "q061"}  # q004 lowest id; q062 has the best quality score
    assert out["q061"].group_id == "q062" and out["q061"].group_size == 3
    assert row["counts"] == {"in": len(clustered), "out": len(clustered) - len(removed),
                             "dropped_semantic_duplicate": len(removed)}
    ctx = ctx_for(spark, cfg)
    assert {r.question_id for r in removed_question_ids(ctx).collect()} == removed
    again = run_stage(cfg, "semdedup", spark=spark)
    assert again["counts"] == {"skipped_up_to_date": 1}
