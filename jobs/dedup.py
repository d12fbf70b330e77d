"""Near-duplicate removal: word-level MinHash LSH, verified pairs, distributed connected components.

    signatures (mapInPandas) -> candidate pairs (group by band, band hash)
      -> exact Jaccard on every candidate -> connected components (large-star / small-star)
      -> one kept row per cluster (lowest id, or highest score)

Stages: ``doc_dedup`` (documents, before annotation) and ``question_dedup`` (questions).
Standalone: ``nr dedup --input PATH --input-format jsonl|parquet|delta --id-col ID --text-col TEXT --output DIR``.
"""
from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.common.config import DedupConfig
from jobs.common.runner import StageContext
from udfs import minhash

log = logging.getLogger("nr")

STAGE_IO = {
    "doc_dedup": (["documents"], ["dedup_documents_clusters", "dedup_documents_pairs"]),
    "question_dedup": (["questions"], ["dedup_questions_clusters", "dedup_questions_pairs"]),
}


@dataclass
class DedupStats:
    rows: int = 0
    bands: int = 0
    rows_per_band: int = 0
    candidate_pairs: int = 0
    verified_pairs: int = 0
    clusters: int = 0
    removed: int = 0
    cc_iterations: int = 0
    s_curve: dict = field(default_factory=dict)


def lsh_params(cfg: DedupConfig) -> tuple[int, int]:
    if cfg.bands is not None:
        return cfg.bands, cfg.rows
    return minhash.optimal_param(cfg.threshold, cfg.num_perm, cfg.false_positive_weight, cfg.false_negative_weight)


def compute_band_hashes(df: DataFrame, id_col: str, text_col: str, cfg: DedupConfig, bands: int, rows: int) -> DataFrame:
    fn = functools.partial(minhash.band_rows_batches, id_col="id", text_col="text", num_perm=cfg.num_perm,
                           seed=cfg.seed, ngram=cfg.ngram, bands=bands, rows=rows)
    src = df.select(F.col(id_col).cast("string").alias("id"), F.col(text_col).cast("string").alias("text"))
    return src.mapInPandas(fn, "id string, band int, band_hash long")


def find_candidate_pairs(bands_df: DataFrame, max_bucket_size: int) -> DataFrame:
    """Pairs (id_a < id_b) that share a band. A bucket larger than ``max_bucket_size`` is not
    expanded into all its pairs: each member is paired with the bucket's smallest id and
    with its successor in id order, which keeps the work linear; a true duplicate pair inside
    such a bucket is still found when it is connected through those verified links."""
    buckets = (bands_df.groupBy("band", "band_hash").agg(F.array_sort(F.collect_set("id")).alias("ids"))
               .where(F.size("ids") > 1))
    small = buckets.where(F.size("ids") <= max_bucket_size)
    pairs_small = (small.select(F.posexplode("ids").alias("i", "id_a"), "ids")
                   .select("id_a", F.explode(F.slice("ids", F.col("i") + 2, max_bucket_size)).alias("id_b")))
    big = buckets.where(F.size("ids") > max_bucket_size)
    pairs_big = (big.select(F.posexplode("ids").alias("i", "id_b"), "ids")
                 .where(F.col("i") > 0)
                 .select(F.explode(F.array(F.col("ids")[0], F.col("ids")[F.col("i") - 1])).alias("id_a"), "id_b")
                 .where(F.col("id_a") < F.col("id_b")))
    return pairs_small.unionByName(pairs_big).distinct()


def verify_pairs(pairs: DataFrame, texts: DataFrame, cfg: DedupConfig) -> DataFrame:
    """Exact word-shingle Jaccard for every candidate; keeps pairs at or above the threshold."""
    a = texts.select(F.col("id").alias("id_a"), F.col("text").alias("text_a"))
    b = texts.select(F.col("id").alias("id_b"), F.col("text").alias("text_b"))
    joined = pairs.join(a, "id_a").join(b, "id_b").select("id_a", "id_b", "text_a", "text_b")
    fn = functools.partial(minhash.jaccard_batches, ngram=cfg.ngram)
    scored = joined.mapInPandas(fn, "id_a string, id_b string, jaccard double")
    return scored.where(F.col("jaccard") >= cfg.threshold)


def _large_star(e: DataFrame) -> DataFrame:
    both = e.unionByName(e.select(F.col("v").alias("u"), F.col("u").alias("v")))
    mins = both.groupBy("u").agg(F.min("v").alias("mv")).select("u", F.least("u", "mv").alias("m"))
    return (both.join(mins, "u").where(F.col("v") > F.col("u"))
            .select(F.col("v").alias("u"), F.col("m").alias("v")).where(F.col("u") != F.col("v")).distinct())


def _small_star(e: DataFrame) -> DataFrame:
    o = e.select(F.greatest("u", "v").alias("u"), F.least("u", "v").alias("v")).distinct()
    mins = o.groupBy("u").agg(F.min("v").alias("m"))
    linked = o.join(mins, "u").select(F.col("v").alias("u"), F.col("m").alias("v"))
    return linked.unionByName(mins.select("u", F.col("m").alias("v"))).where(F.col("u") != F.col("v")).distinct()


def connected_components(edges: DataFrame, max_iterations: int = 50) -> tuple[DataFrame, int]:
    """(id, cluster_id = smallest id of its component) for every node on an edge.

    Alternating large-star and small-star (Kiveris et al., 2014) until the edge set stops
    changing; every round is checkpointed so the lineage stays short on long chains.
    """
    spark = edges.sparkSession
    e = edges.select(F.col("id_a").alias("u"), F.col("id_b").alias("v")).where(F.col("u") != F.col("v")).distinct()
    use_checkpoint = bool(spark.sparkContext.getCheckpointDir())
    e = e.checkpoint() if use_checkpoint else e.localCheckpoint()
    for it in range(1, max_iterations + 1):
        nxt = _small_star(_large_star(e))
        nxt = nxt.checkpoint() if use_checkpoint else nxt.localCheckpoint()
        changed = nxt.exceptAll(e).limit(1).count() + e.exceptAll(nxt).limit(1).count()
        e = nxt
        if changed == 0:
            break
    else:
        raise RuntimeError(f"connected components did not converge in {max_iterations} iterations")
    both = e.unionByName(e.select(F.col("v").alias("u"), F.col("u").alias("v")))
    labels = both.groupBy("u").agg(F.min("v").alias("mv")).select(
        F.col("u").alias("id"), F.least("u", "mv").alias("cluster_id"))
    return labels, it


def find_duplicate_clusters(df: DataFrame, id_col: str, text_col: str, cfg: DedupConfig,
                            score_col: Optional[str] = None) -> tuple[DataFrame, DataFrame, DedupStats]:
    """Pure transform: (clusters: id, cluster_id, keep) for every input row, (pairs: id_a, id_b, jaccard)."""
    stats = DedupStats()
    bands, rows = lsh_params(cfg)
    stats.bands, stats.rows_per_band = bands, rows
    t = cfg.threshold
    stats.s_curve = {f"{s:.2f}": float(minhash.candidate_probability(s, bands, rows))
                     for s in (max(0.0, t - 0.1), t, min(1.0, t + 0.1))}
    log.info("minhash lsh: b=%d r=%d; P(candidate | jaccard) = %s", bands, rows, stats.s_curve)
    score_col = score_col or (cfg.score_col if cfg.keep == "highest_score" else None)
    cols = [F.col(id_col).cast("string").alias("id"), F.col(text_col).cast("string").alias("text")]
    if score_col:
        cols.append(F.col(score_col).cast("double").alias("score"))
    items = df.select(*cols).dropDuplicates(["id"]).persist()
    stats.rows = items.count()
    band_df = compute_band_hashes(items, "id", "text", cfg, bands, rows)
    candidates = find_candidate_pairs(band_df, cfg.max_bucket_size).persist()
    stats.candidate_pairs = candidates.count()
    pairs = verify_pairs(candidates, items, cfg).persist()
    stats.verified_pairs = pairs.count()
    labels, stats.cc_iterations = connected_components(pairs, cfg.max_cc_iterations)
    clustered = items.join(labels, "id", "left").withColumn("cluster_id", F.coalesce("cluster_id", "id"))
    if score_col:
        from pyspark.sql.window import Window

        w = Window.partitionBy("cluster_id").orderBy(F.col("score").desc_nulls_last(), F.col("id"))
        clustered = clustered.withColumn("keep", F.row_number().over(w) == 1)
    else:
        clustered = clustered.withColumn("keep", F.col("id") == F.col("cluster_id"))
    clusters = clustered.select("id", "cluster_id", "keep").persist()
    stats.clusters = clusters.select("cluster_id").distinct().count()
    stats.removed = clusters.where(~F.col("keep")).count()
    candidates.unpersist()
    items.unpersist()
    return clusters, pairs.select("id_a", "id_b", "jaccard"), stats


def _record(ctx: StageContext, stats: DedupStats) -> None:
    ctx.count("in", stats.rows)
    ctx.count("candidate_pairs", stats.candidate_pairs)
    ctx.count("verified_pairs", stats.verified_pairs)
    ctx.count("clusters", stats.clusters)
    ctx.count("dropped_near_duplicate", stats.removed)
    ctx.metrics.update({"bands": stats.bands, "rows_per_band": stats.rows_per_band,
                        "cc_iterations": stats.cc_iterations,
                        **{f"p_candidate_at_{k}": v for k, v in stats.s_curve.items()}})


def _run(ctx: StageContext, table: str, id_col: str, cfg: DedupConfig, prefix: str) -> None:
    inputs, outputs = STAGE_IO[ctx.stage]
    if ctx.up_to_date(inputs, outputs):
        ctx.count("skipped_up_to_date", 1)
        return
    df = ctx.store.read(table).where(F.col("status") == "ok")
    text_col = "question" if table == "questions" else "text"
    clusters, pairs, stats = find_duplicate_clusters(df, id_col, text_col, cfg)
    ctx.store.overwrite(f"{prefix}_clusters", clusters)
    ctx.store.overwrite(f"{prefix}_pairs", pairs)
    clusters.unpersist()
    _record(ctx, stats)


def run_doc_dedup(ctx: StageContext) -> None:
    _run(ctx, "documents", "doc_id", ctx.cfg.doc_dedup, "dedup_documents")


def run_question_dedup(ctx: StageContext) -> None:
    _run(ctx, "questions", "question_id", ctx.cfg.question_dedup, "dedup_questions")


def read_any(spark, path: str, fmt: str) -> DataFrame:
    if fmt == "jsonl":
        return spark.read.json(path)
    if fmt == "parquet":
        return spark.read.parquet(path)
    from jobs.common.config import StorageConfig
    from jobs.common.storage import make_backend

    return make_backend(spark, StorageConfig(root="/")).read(path)


def cli_main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="nr dedup", description="Near-duplicate clusters of any table (word MinHash LSH).")
    p.add_argument("--input", required=True)
    p.add_argument("--input-format", choices=["jsonl", "parquet", "delta"], required=True)
    p.add_argument("--id-col", required=True)
    p.add_argument("--text-col", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--threshold", type=float, default=0.55)
    p.add_argument("--ngram", type=int, default=1)
    p.add_argument("--num-perm", type=int, default=128)
    p.add_argument("--master", default=None, help="Spark master for a local run (default local[<cores>])")
    args = p.parse_args(argv)
    from jobs.common.config import SparkConfig
    from jobs.common.spark import get_spark
    from jobs.pipeline import setup_logging

    setup_logging("INFO")
    cfg = DedupConfig(threshold=args.threshold, ngram=args.ngram, num_perm=args.num_perm)
    spark = get_spark(SparkConfig(master=args.master), checkpoint_dir=f"{args.output.rstrip('/')}/_checkpoints")
    df = read_any(spark, args.input, args.input_format)
    missing = [c for c in (args.id_col, args.text_col) if c not in df.columns]
    if missing:
        print(f"error: columns {missing} not in {args.input}; columns: {sorted(df.columns)}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    clusters, pairs, stats = find_duplicate_clusters(df, args.id_col, args.text_col, cfg)
    clusters.write.mode("overwrite").parquet(f"{args.output}/clusters")
    pairs.write.mode("overwrite").parquet(f"{args.output}/pairs")
    print(f"rows={stats.rows} bands={stats.bands} rows_per_band={stats.rows_per_band} "
          f"candidate_pairs={stats.candidate_pairs} verified_pairs={stats.verified_pairs} "
          f"clusters={stats.clusters} removed={stats.removed} seconds={time.monotonic() - t0:.1f}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    from jobs.pipeline import stage_main

    return stage_main("question_dedup", argv)


if __name__ == "__main__":
    sys.exit(main())
