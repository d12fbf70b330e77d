"""Word MinHash LSH dedup: exact arithmetic, verified pairs, chains, determinism, odd inputs."""
import numpy as np
import pytest
from pyspark.sql import functions as F

from jobs.common.config import DedupConfig
from jobs.dedup import connected_components, find_duplicate_clusters
from udfs import minhash

BASE = ("a block of mass two kilograms slides down a frictionless incline of thirty degrees "
        "starting from rest and we want its speed after it has travelled five metres along the slope")


def test_signatures_equal_big_integer_reference():
    a, b = minhash.permutations(64, 7)
    texts = [BASE, BASE.replace("two", "three"), "", None, "one", "ünïcode wörds and 数字 42", "x " * 3000]
    sig = minhash.signatures(texts, a, b, n=2, chunk=17)
    for i, t in enumerate(texts):
        assert [int(v) for v in sig[i]] == minhash.signature_reference(t, a, b, n=2), i


def test_mulmod_matches_python_on_extremes():
    p = minhash.MERSENNE
    vals = np.array([0, 1, 2, p - 1, p - 2, 2**32 - 1, 2**32, 2**60 + 12345], dtype=np.uint64)
    got = minhash.mulmod(vals[:, None], vals[None, :])
    for i, x in enumerate(vals):
        for j, y in enumerate(vals):
            assert int(got[i, j]) == (int(x) * int(y)) % p


def test_jaccard_estimate_within_theory():
    a, b = minhash.permutations(256, 1)
    words = [f"w{i}" for i in range(200)]
    rng = np.random.RandomState(0)
    errs = []
    for _ in range(40):
        x = set(rng.choice(words, 60, replace=False))
        y = set(list(x)[:40]) | set(rng.choice(words, 20, replace=False))
        sx, sy = minhash.signatures([" ".join(x), " ".join(y)], a, b)
        est = float(np.mean(sx == sy))
        errs.append(est - minhash.jaccard(x, y))
    # the estimator's std is sqrt(J(1-J)/k) <= 1/(2 sqrt(256)) = 0.031; allow 3 sigma on each, ~0 mean
    assert max(abs(e) for e in errs) < 0.1 and abs(np.mean(errs)) < 0.02


def test_s_curve_and_parameters():
    b, r = minhash.optimal_param(0.55, 128)
    assert b * r <= 128
    assert minhash.candidate_probability(0.55, b, r) > 0.5  # recall-leaning
    assert minhash.candidate_probability(0.65, b, r) > 0.95
    assert minhash.candidate_probability(0.3, b, r) < 0.1


def frame(spark, rows, parts=2):
    return spark.createDataFrame(rows, "id string, text string").repartition(parts)


def clusters_of(df):
    out = {}
    for r in df.collect():
        out.setdefault(r.cluster_id, set()).add(r.id)
    return sorted(sorted(v) for v in out.values() if len(v) > 1)


def test_known_groups_chains_and_keep(spark):
    w = BASE.split()
    a = " ".join(w)
    b = " ".join(w[:-4] + ["x1", "x2", "x3", "x4"])                            # J(a, b) = 0.76
    c = " ".join(w[:-8] + ["x1", "x2", "x3", "x4", "y1", "y2", "y3", "y4"])    # J(b, c) = 0.76, J(a, c) = 0.57
    far = "completely different text about cooking rice with water and salt in a pot"
    rows = [("id-b", b), ("id-a", a), ("id-c", c), ("z", far), ("empty", ""), ("none", None), ("one", "word")]
    cfg = DedupConfig(threshold=0.7, num_perm=256)
    ja = minhash.jaccard(minhash.shingle_set(a), minhash.shingle_set(b))
    jb = minhash.jaccard(minhash.shingle_set(b), minhash.shingle_set(c))
    jc = minhash.jaccard(minhash.shingle_set(a), minhash.shingle_set(c))
    assert ja >= 0.7 and jb >= 0.7 and jc < 0.7, (ja, jb, jc)
    clusters, pairs, stats = find_duplicate_clusters(frame(spark, rows), "id", "text", cfg)
    assert clusters_of(clusters) == [["id-a", "id-b", "id-c"]]  # the chain ends in one cluster
    kept = {r.id for r in clusters.where("keep").collect()}
    assert kept == {"id-a", "z", "empty", "none", "one"}
    assert clusters.count() == len(rows) and stats.removed == 2
    got_pairs = {(r.id_a, r.id_b) for r in pairs.collect()}
    assert ("id-a", "id-c") not in got_pairs and all(r.jaccard >= 0.7 for r in pairs.collect())


def test_deterministic_across_partitions_and_runs(spark):
    rng = np.random.RandomState(3)
    vocab = [f"v{i}" for i in range(300)]
    rows = []
    for g in range(30):
        base = list(rng.choice(vocab, 30))
        for k in range(3):
            t = list(base)
            t[rng.randint(30)] = f"edit{g}_{k}"
            rows.append((f"{g:03d}-{k}", " ".join(t)))
    cfg = DedupConfig()
    results = []
    for parts in (1, 3, 5):
        c, p, _ = find_duplicate_clusters(frame(spark, rows, parts), "id", "text", cfg)
        results.append((sorted(map(tuple, c.collect())), sorted(map(tuple, p.collect()))))
    assert results[0] == results[1] == results[2]


def test_highest_score_keep(spark):
    rows = [("a", BASE, 1.0), ("b", BASE + " again", 9.0)]
    df = spark.createDataFrame(rows, "id string, text string, q double")
    c, _, _ = find_duplicate_clusters(df, "id", "text", DedupConfig(keep="highest_score", score_col="q"))
    assert {r.id for r in c.where("keep").collect()} == {"b"}


def test_giant_bucket_is_linear(spark):
    rows = [(f"n{i:04d}", BASE) for i in range(60)]
    c, p, stats = find_duplicate_clusters(frame(spark, rows), "id", "text", DedupConfig(max_bucket_size=10))
    assert stats.candidate_pairs < 60 * 3  # not 60*59/2
    assert clusters_of(c) == [sorted(r[0] for r in rows)]


def test_connected_components_long_chain(spark):
    edges = spark.createDataFrame([(f"n{i:03d}", f"n{i + 1:03d}") for i in range(40)], "id_a string, id_b string")
    labels, iters = connected_components(edges)
    assert {r.cluster_id for r in labels.collect()} == {"n000"} and labels.count() == 41


def test_question_dedup_stage_removes_from_dataset_inputs(spark, cfg, store):
    from jobs.common.runner import run_stage

    qs = spark.createDataFrame(
        [("q1", "d1", BASE, "ok"), ("q2", "d2", BASE + " please", "ok"), ("q3", "d3", "other question text here", "ok"),
         ("q4", "d4", None, "no_json")], "question_id string, doc_id string, question string, status string")
    store.overwrite("questions", qs)
    row = run_stage(cfg, "question_dedup", spark=spark)
    assert row["counts"]["dropped_near_duplicate"] == 1 and row["counts"]["in"] == 3
    cl = store.read("dedup_questions_clusters")
    assert {r.id for r in cl.where(~F.col("keep")).collect()} == {"q2"}
    v = store.version("dedup_questions_clusters")
    row2 = run_stage(cfg, "question_dedup", spark=spark)
    assert row2["counts"]["skipped_up_to_date"] == 1 and store.version("dedup_questions_clusters") == v
