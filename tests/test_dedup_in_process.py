"""The in-process dedup path (``nr dedup`` on small inputs): the same output as the Spark path."""
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.common.config import DedupConfig
from jobs.common.lsh import find_duplicate_clusters, find_duplicate_clusters_in_process
from jobs.tools.dedup import cli_main
from tests.test_dedup import BASE, ODD_TEXTS
from udfs import minhash


def _union_find_labels(n, edges):
    parent = list(range(n))

    def root(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [root(x) for x in range(n)]  # the root is the smallest node: we always hang the larger root


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=60))))
def test_min_label_components_equal_union_find(case):
    n, edges = case
    a = np.array([e[0] for e in edges], dtype=np.int64)
    b = np.array([e[1] for e in edges], dtype=np.int64)
    labels, _ = minhash.min_label_components(n, a, b)
    assert labels.tolist() == _union_find_labels(n, edges)


def test_long_chain_in_few_rounds():
    n = 5000
    perm = np.random.default_rng(0).permutation(n)
    labels, rounds = minhash.min_label_components(n, perm[:-1], perm[1:])
    assert (labels == 0).all() and rounds <= 20


def _rows():
    """Chains, exact and near duplicates, odd texts, a giant bucket, ids out of order."""
    rng = np.random.default_rng(7)
    vocab = [f"v{i}" for i in range(200)]
    rows = []
    for g in range(30):
        base = list(rng.choice(vocab, 25))
        for k in range(int(rng.integers(1, 4))):
            t = list(base)
            for _ in range(int(rng.integers(0, 9))):
                t[int(rng.integers(25))] = f"e{g}_{k}_{int(rng.integers(50))}"
            rows.append((f"{int(rng.integers(10**6)):06d}-{g}-{k}", " ".join(t)))
    rows += [(f"odd{i}", t) for i, t in enumerate(ODD_TEXTS)]
    rows += [(f"same{i:02d}", BASE + " same") for i in range(14)]  # one bucket over max_bucket_size=5
    rows += [("Ω", BASE.upper()), ("a\tb", BASE + " tail")]
    return rows


def _sorted(rows):
    return sorted(tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in rows)


@pytest.mark.parametrize("cfg", [DedupConfig(max_bucket_size=5), DedupConfig(ngram=3, threshold=0.5),
                                 DedupConfig(keep="highest_score", score_col="q", num_perm=64),
                                 # the path for inputs too large to broadcast: shuffled, de-duplicated pairs
                                 DedupConfig(broadcast_shingles_mb=0)])
def test_in_process_equals_spark(spark, cfg):
    rows = _rows()
    scores = [None if i % 5 == 0 else float((i * 37) % 11) for i in range(len(rows))]
    scores[3] = float("nan")
    df = spark.createDataFrame([(i, t, s) for (i, t), s in zip(rows, scores)], "id string, text string, q double")
    c_s, p_s, st_s = find_duplicate_clusters(df.repartition(3), "id", "text", cfg)
    table = pa.table({"id": [r[0] for r in rows], "text": [r[1] for r in rows], "q": scores})
    c_l, p_l, st_l = find_duplicate_clusters_in_process(table, "id", "text", cfg)
    assert _sorted(c_l.to_pylist()) == _sorted(c_s.collect())
    assert _sorted(p_l.to_pylist()) == _sorted(p_s.collect())
    assert p_l.num_rows > 10 and (~np.asarray(c_l.column("keep"))).sum() > 10
    assert c_l.schema == pa.schema([("id", pa.string()), ("cluster_id", pa.string()), ("keep", pa.bool_())])
    for k in ("rows", "null_ids", "empty_texts", "candidate_pairs", "verified_pairs", "clusters", "removed"):
        assert getattr(st_l, k) == getattr(st_s, k), k
    c_s.unpersist()
    p_s.unpersist()


def test_null_ids_are_counted_on_both_paths(spark):
    rows = [("a", BASE), (None, BASE), ("b", BASE + " x"), (None, "other"), ("c", ""), ("d", None)]
    c_s, _, st_s = find_duplicate_clusters(spark.createDataFrame(rows, "id string, text string"), "id", "text",
                                           DedupConfig())
    c_l, _, st_l = find_duplicate_clusters_in_process(
        pa.table({"id": [r[0] for r in rows], "text": [r[1] for r in rows]}), "id", "text", DedupConfig())
    for st_ in (st_s, st_l):
        assert (st_.rows, st_.null_ids, st_.empty_texts, st_.removed) == (4, 2, 2, 1)
    assert _sorted(c_l.to_pylist()) == _sorted(c_s.collect()) == [
        ("a", "a", True), ("b", "a", False), ("c", "c", True), ("d", "d", True)]


def test_in_process_refuses_what_it_cannot_cast_like_spark():
    from jobs.common.lsh import NotInProcess

    with pytest.raises(NotInProcess):
        find_duplicate_clusters_in_process(pa.table({"id": [1.5, 2.5], "text": ["a", "b"]}), "id", "text",
                                           DedupConfig())
    with pytest.raises(ValueError, match="not a key"):
        find_duplicate_clusters_in_process(pa.table({"id": [1, 1], "text": ["a", "b"]}), "id", "text", DedupConfig())
    c, _, _ = find_duplicate_clusters_in_process(pa.table({"id": [10, 9], "text": [BASE, BASE]}), "id", "text",
                                                 DedupConfig())
    assert sorted(c.to_pylist(), key=str) == sorted([{"id": "10", "cluster_id": "10", "keep": True},
                                                     {"id": "9", "cluster_id": "10", "keep": False}], key=str)


def _read(folder):
    return _sorted(pq.read_table(folder).to_pylist())


def test_cli_in_process_and_spark_write_the_same(spark, tmp_path, capsys):
    rows = _rows() + [(None, BASE)]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"uid": i, "body": t}) + "\n" for i, t in rows))
    common = ["--input", str(src), "--input-format", "jsonl", "--id-col", "uid", "--text-col", "body",
              "--max-bucket-size", "5"]
    assert cli_main([*common, "--output", str(tmp_path / "auto")]) == 0
    printed = capsys.readouterr().out
    assert "in process" in printed and "null ids:         1" in printed
    assert cli_main([*common, "--output", str(tmp_path / "spark"), "--engine", "spark"]) == 0
    assert "Spark" in capsys.readouterr().out
    for t in ("clusters", "pairs"):
        assert _read(tmp_path / "auto" / t) == _read(tmp_path / "spark" / t)
    # a rerun replaces the folder's content
    assert cli_main([*common, "--output", str(tmp_path / "auto")]) == 0
    assert os.listdir(tmp_path / "auto" / "clusters") == ["part-00000.parquet"]
    # parquet and delta inputs take the same path
    pq.write_table(pa.table({"uid": [r[0] for r in rows], "body": [r[1] for r in rows]}), tmp_path / "in.parquet")
    assert cli_main([*common[:0], "--input", str(tmp_path / "in.parquet"), "--input-format", "parquet",
                     "--id-col", "uid", "--text-col", "body", "--max-bucket-size", "5",
                     "--output", str(tmp_path / "pq"), "--engine", "in-process"]) == 0
    assert _read(tmp_path / "pq" / "pairs") == _read(tmp_path / "spark" / "pairs")


def test_cli_in_process_errors(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"uid": 1.5, "body": "x"}) + "\n")
    common = ["--input", str(src), "--input-format", "jsonl", "--id-col", "uid", "--text-col", "body",
              "--engine", "in-process"]
    assert cli_main([*common, "--output", str(tmp_path / "o")]) == 2
    assert "in-process" in capsys.readouterr().err
    assert cli_main([*common, "--output", "s3://bucket/o"]) == 2
    assert cli_main([*common[:6], "--text-col", "nope", "--output", str(tmp_path / "o")]) == 2
    assert "no column nope" in capsys.readouterr().err


def test_question_dedup_stage_small_input_in_process_writes_what_spark_writes(spark, tmp_path, monkeypatch):
    """The stage takes the driver path for a small ``questions`` table (in_process_max_rows) and
    Spark for a larger one (0 forces it): the same two tables and the same runs counts."""
    from jobs.common.config import validate_config
    from jobs.pipeline import run_stage
    from jobs.common.storage import TableStore
    import jobs.stages.corpus.doc_dedup as dedup

    calls = []
    real = dedup.find_duplicate_clusters_in_process
    monkeypatch.setattr(dedup, "find_duplicate_clusters_in_process", lambda *a, **k: calls.append(1) or real(*a, **k))
    rows = _rows()
    questions = [(qid, t, "ok" if i % 9 else "failed") for i, (qid, t) in enumerate(rows)] + [("nul", BASE, None)]
    got = {}
    for max_rows in (0, 20_000):
        cfg = validate_config({"storage": {"root": str(tmp_path / f"r{max_rows}")}, "pipeline": {"progress": False},
                               "question_dedup": {"max_bucket_size": 5, "in_process_max_rows": max_rows}}, "test")
        store = TableStore(spark, cfg.storage)
        store.overwrite("questions", spark.createDataFrame(questions, "question_id string, question string, status string"))
        before = len(calls)
        row = run_stage(cfg, "question_dedup", spark=spark)
        assert len(calls) - before == (1 if max_rows else 0)  # which path ran
        got[max_rows] = ({k: v for k, v in row["counts"].items()},
                         _sorted(store.read("dedup_questions_clusters").collect()),
                         _sorted(store.read("dedup_questions_pairs").collect()),
                         store.read("dedup_questions_clusters").schema)
    assert got[0] == got[20_000]
    counts = got[0][0]
    assert counts["in"] == sum(1 for q in questions if q[2] == "ok") and counts["dropped_near_duplicate"] > 10
