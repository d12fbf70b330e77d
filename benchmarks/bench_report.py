"""``nr report`` on a synthetic run with N questions (default 1M) on local[2].

Writes synthetic Delta tables shaped like a pipeline run (documents, annotations, questions,
responses, judgments, dedup, contamination, dataset, runs: N rows each, judgments 2N), then
times ``build_report`` (every statistic a Spark aggregation, only bounded results on the driver).
The peer, measured in the same run, is what a notebook user would write: the dataset table
collected with ``toPandas()`` and Table 1 computed in pandas. Last line: ``ratio <report s / peer s>``.

    python benchmarks/bench_report.py --n 1000000
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VOCAB = 5000


def synthetic_tables(spark, store, n: int) -> None:
    from pyspark.sql import functions as F

    from jobs.common.runs import RUNS_SCHEMA

    def text(seed: int, lo: int, hi: int):
        """lo..hi-1 words drawn from a 5000-word vocabulary by hashing (row id, position, seed)."""
        length = F.lit(lo) + F.pmod(F.xxhash64("id", F.lit(seed)), F.lit(hi - lo)).cast("int")
        return F.concat_ws(" ", F.transform(F.sequence(F.lit(1), length), lambda i: F.concat(
            F.lit("w"), F.pmod(F.xxhash64("id", i, F.lit(seed)), F.lit(VOCAB)).cast("string"))))

    base = spark.range(n).withColumn("qid", F.format_string("q%010d", "id")).withColumn(
        "did", F.format_string("d%010d", "id"))
    h = F.pmod(F.xxhash64("id"), F.lit(1000))
    source = F.when(h < 600, "dclm").otherwise("finemath")
    docs = base.select(F.col("did").alias("doc_id"), source.alias("source"),
                       F.concat(F.lit("https://example.org/"), "did").alias("url"), text(1, 5, 15).alias("text"),
                       F.lit(600).alias("n_chars"), F.lit("ok").alias("status"), F.lit(None).cast("string").alias("meta"))
    store.overwrite("documents", docs)
    ann = base.select(F.col("did").alias("doc_id"), F.lit("ok").alias("status"),
                      *[F.pmod(F.xxhash64("id", F.lit(k)), F.lit(5)).cast("int").alias(a)
                        for k, a in enumerate(["completeness", "complexity", "correctness", "reasoning"])],
                      F.format_string("domain%d", F.pmod(F.xxhash64("id", F.lit(9)), F.lit(20))).alias("domain"),
                      F.lit(True).alias("selected"), F.lit(500).alias("prompt_tokens"),
                      F.lit(60).alias("completion_tokens"))
    store.overwrite("annotations", ann)
    ref_len = F.pmod(F.xxhash64("id", F.lit(3)), F.lit(14)).cast("int")
    ref = F.when(ref_len == 0, F.lit(None).cast("string")).otherwise(text(4, 1, 14))
    qs = base.select(F.col("qid").alias("question_id"), F.col("did").alias("doc_id"), F.lit("ok").alias("status"),
                     text(2, 20, 90).alias("question"), ref.alias("reference_answer")) \
        .withColumn("answer_bucket", F.when(F.col("reference_answer").isNull(), "none")
                    .when(F.size(F.split("reference_answer", " ")) == 1, "single_word")
                    .when(F.size(F.split("reference_answer", " ")) < 10, "short").otherwise("long"))
    store.overwrite("questions", qs)
    resp = base.select(F.col("qid").alias("question_id"), F.lit("m").alias("model"), F.lit(0).alias("sample_idx"),
                       text(5, 20, 120).alias("response"), F.lit("ok").alias("status"))
    store.overwrite("responses", resp)
    quality = base.select(F.col("qid").alias("question_id"), F.lit("quality").alias("kind"), F.lit("ok").alias("status"),
                          (F.pmod(F.xxhash64("id", F.lit(6)), F.lit(10)) + 1).cast("double").alias("score"),
                          F.lit(None).cast("string").alias("verdict"))
    self_score = base.select(F.col("qid").alias("question_id"), F.lit("self_score").alias("kind"),
                             F.lit("ok").alias("status"), (F.rand(7) * 20 - 10).alias("score"),
                             F.lit(None).cast("string").alias("verdict"))
    store.overwrite("judgments", quality.unionByName(self_score))
    store.overwrite("dedup_questions_clusters", base.select(
        F.col("qid").alias("id"), F.format_string("q%010d", (F.col("id") / 2).cast("long") * 2).alias("cluster_id"),
        ((F.col("id") % 2 == 0) | (F.col("id") > 20000)).alias("keep")))
    store.overwrite("dedup_questions_pairs", base.where(F.col("id") < 20000).where(F.col("id") % 2 == 1).select(
        F.format_string("q%010d", F.col("id") - 1).alias("id_a"), F.col("qid").alias("id_b"),
        (F.lit(0.55) + F.rand(8) * 0.45).alias("jaccard")))
    store.overwrite("contamination", base.where(F.col("id") % 4000 == 3).select(
        F.col("qid").alias("item_id"), F.when(F.col("id") % 3 == 0, "math").otherwise("mmlu_pro").alias("benchmark"),
        F.col("id").cast("string").alias("benchmark_item_id"), F.lit("a b c d e f g h i j k l m").alias("matched_ngram"),
        F.lit(1).alias("match_count")))
    ds = (qs.join(docs.select("doc_id", "source", "url"), "doc_id").join(ann.select("doc_id", "domain"), "doc_id")
          .join(resp.groupBy("question_id").agg(F.collect_list(F.struct(F.col("model").alias("response_model"),
                                                                        "response")).alias("responses")), "question_id")
          .join(quality.select("question_id", F.col("score").alias("question_quality_score")), "question_id")
          .join(self_score.select("question_id", F.col("score").alias("self_score")), "question_id")
          .withColumn("reference_agreement", F.lit(None).cast("double")))
    store.overwrite("dataset", ds)
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    runs = [(f"r{i}", "p", s, "ok", None, now, now, 100.0 + i, "h", "h", {}, {},
             {"in": n, "out": n, "prompt_tokens": 500 * n, "completion_tokens": 60 * n}, {})
            for i, s in enumerate(["ingest", "annotate", "synthesize", "respond", "judge", "dataset"])]
    store.overwrite("runs", spark.createDataFrame(runs, RUNS_SCHEMA))


def peer_table1(spark, store) -> float:
    """The notebook way: collect the dataset with toPandas(), compute Table 1 in pandas."""
    t0 = time.monotonic()
    pdf = store.read("dataset").select("source", "question", "reference_answer", "answer_bucket", "responses").toPandas()
    qw = pdf["question"].str.split().str.len()
    rw = pdf["responses"].map(lambda rs: [len(r["response"].split()) for r in rs]).explode().astype(float)
    for _, part in [*pdf.groupby("source"), ("overall", pdf)]:
        idx = part.index
        _ = (len(part), qw[idx].mean(), qw[idx].std(), part["reference_answer"].notna().mean(),
             part["answer_bucket"].value_counts(), rw[idx].mean(), rw[idx].median())
    return time.monotonic() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--keep", default=None, help="reuse/keep the synthetic root in this folder")
    a = p.parse_args()

    from jobs.common.config import validate_config
    from jobs.common.spark import get_spark
    from jobs.common.storage import TableStore
    from jobs.common.logs import setup as setup_logging
    from jobs.ops.report import build_report

    setup_logging("WARNING")
    root = a.keep or tempfile.mkdtemp(prefix="nr-bench-report-")
    cfg = validate_config({"storage": {"root": root}, "spark": {"master": a.master, "shuffle_partitions": 4,
                                                                "driver_memory": "4g"}}, "bench")
    spark = get_spark(cfg.spark)
    store = TableStore(spark, cfg.storage)
    if not store.exists("dataset"):
        t0 = time.monotonic()
        synthetic_tables(spark, store, a.n)
        print(f"synthetic tables: {a.n:,} questions written in {time.monotonic() - t0:.1f}s under {root}")
    t0 = time.monotonic()
    d = build_report(cfg, spark, os.path.join(root, "report"))
    report_s = time.monotonic() - t0
    peer_s = peer_table1(spark, store)
    print(f"nr report: {report_s:.1f}s for {d['table1']['overall']['questions']:,} questions "
          f"({len(d['images'])} plots, {len(d['notes'])} notes), master {a.master}")
    print(f"peer (dataset.toPandas() + pandas Table 1 only): {peer_s:.1f}s")
    print(f"ratio {report_s / peer_s:.3f}")


if __name__ == "__main__":
    main()
