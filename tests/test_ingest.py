"""ingest: column mapping, content keys, filters, sampling, bad-text statuses and counts."""
import json
import os
import subprocess
import sys

from pyspark.sql import functions as F

from jobs.stages.corpus import ingest
from jobs.common.config import load_config
from jobs.pipeline import run_stage
from udfs.keys import doc_id

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sources(spark, store, root):
    dclm = spark.createDataFrame(
        [("a long enough page " * 5, "https://a.example/1", 0.9),
         ("", "https://a.example/empty", 0.1),
         ("   \n ", "https://a.example/blank", 0.1),
         (None, "https://a.example/null", 0.1),
         ("x" * 50_000, "https://a.example/huge", 0.5),
         ("short", "https://a.example/short", 0.5),
         ("a long enough page " * 5, "https://a.example/1", 0.9)],  # the same row twice
        "text string, url string, fasttext_openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train_prob double")
    fm = spark.createDataFrame(
        [(f"math page {i} " * 10, f"https://m.example/{i}", float(i), i) for i in range(6)],
        "text string, url string, score double, int_score long")
    store.overwrite(f"{root}/sources/dclm", dclm)
    store.overwrite(f"{root}/sources/finemath", fm)


def test_ingest_statuses_counts_and_keys(spark, tmp_path):
    root = str(tmp_path / "root")
    cfg = load_config(None, [f"storage.root={root}", "ingest.min_chars=10", "ingest.max_chars=10000"])
    from jobs.common.storage import TableStore

    store = TableStore(spark, cfg.storage)
    sources(spark, store, root)
    row = run_stage(cfg, "ingest", spark=spark)
    docs = store.read("documents")
    c = row["counts"]
    assert c["in"] == 13 and c["in_dclm"] == 7 and c["in_finemath"] == 6
    assert c["dropped_not_selected_finemath"] == 3  # int_score >= 3 keeps 3, 4, 5
    assert c["dropped_exact_duplicate_row"] == 1
    assert c["dropped_empty_text"] == 2 and c["dropped_null_text"] == 1
    assert c["dropped_too_long"] == 1 and c["dropped_too_short"] == 1
    assert c["ok"] == 4 and c["out"] == 9 and docs.count() == 9
    by_url = {r.url: r for r in docs.collect()}
    assert by_url["https://a.example/huge"].status == "too_long" and len(by_url["https://a.example/huge"].text) == 10000
    good = by_url["https://a.example/1"]
    assert good.status == "ok" and good.doc_id == doc_id("dclm", good.url, good.text)
    assert json.loads(by_url["https://m.example/4"].meta) == {"score": 4.0, "int_score": 4}
    # re-running adds nothing and commits nothing
    v = store.version("documents")
    row2 = run_stage(cfg, "ingest", spark=spark)
    assert row2["counts"]["out"] == 0 and store.version("documents") == v


def test_sampling_and_max_docs_are_deterministic(spark, tmp_path):
    root = str(tmp_path / "root")
    from jobs.common.storage import TableStore

    cfg = load_config(None, [f"storage.root={root}"])
    store = TableStore(spark, cfg.storage)
    pages = spark.range(400).select(F.concat(F.lit("page "), F.col("id").cast("string")).alias("text"),
                                    F.concat(F.lit("u"), F.col("id").cast("string")).alias("url"))
    store.overwrite(f"{root}/src", pages)
    data = {"storage": {"root": root}, "ingest": {"sources": [
        {"name": "s", "path": "{root}/src", "sample_fraction": 0.25, "max_docs": 60}]}}
    from jobs.common.config import validate_config

    cfg = validate_config(data, "test")
    from jobs.common.runner import StageContext

    ids = []
    for parts in (1, 3):
        spark.conf.set("spark.sql.shuffle.partitions", str(parts))
        ctx = StageContext(spark, cfg, store, "ingest", "r", "r")
        ids.append(sorted(r.doc_id for r in ingest.build_documents(ctx).collect()))
    spark.conf.set("spark.sql.shuffle.partitions", "2")
    assert ids[0] == ids[1] and len(ids[0]) == 60


def test_missing_column_is_a_clear_error(spark, tmp_path):
    import pytest

    from jobs.common.config import validate_config
    from jobs.common.runner import StageContext
    from jobs.common.storage import TableStore

    root = str(tmp_path / "root")
    cfg = validate_config({"storage": {"root": root}, "ingest": {"sources": [
        {"name": "s", "path": "{root}/src", "text_col": "body"}]}}, "test")
    store = TableStore(spark, cfg.storage)
    store.overwrite(f"{root}/src", spark.createDataFrame([("t", "u")], "text string, url string"))
    with pytest.raises(ValueError, match="columns \\['body'\\] not found"):
        ingest.build_documents(StageContext(spark, cfg, store, "ingest", "r", "r"))


def test_cli_runs_bootstrap_and_ingest_on_the_bundled_sample(spark_subprocess, tmp_path):
    root = tmp_path / "fresh"
    env = dict(os.environ, NR_LOG_LEVEL="WARNING")
    out = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "run", "--config", "conf/local.yaml", "--stages", "bootstrap,ingest",
         "--set", f"storage.root={root}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    from deltalake import DeltaTable

    docs = DeltaTable(str(root / "documents")).to_pyarrow_table()
    assert docs.num_rows >= 100
    runs = DeltaTable(str(root / "runs")).to_pyarrow_table().to_pylist()
    assert sorted(r["stage"] for r in runs) == ["bootstrap", "ingest"] and all(r["status"] == "ok" for r in runs)


def test_spark_submit_entry_point(spark_subprocess, tmp_path):
    import shutil

    spark_submit = os.path.join(os.path.dirname(sys.executable), "spark-submit")
    if not os.path.exists(spark_submit):
        spark_submit = shutil.which("spark-submit")
    root = tmp_path / "ss"
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    out = subprocess.run(
        [spark_submit, "--master", "local[2]", "jobs/pipeline.py", "--config", "conf/local.yaml",
         "--stages", "bootstrap,ingest", "--set", f"storage.root={root}", "--log-level", "WARNING"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    from deltalake import DeltaTable

    assert DeltaTable(str(root / "documents")).to_pyarrow_table().num_rows >= 100
