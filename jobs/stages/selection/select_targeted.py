"""select_targeted: a curated subset similar to a set of seed questions (the paper's
science-reasoning-15k recipe, its constants as defaults).

1. Seeds (a JSONL/Parquet/Delta file of seed questions) are embedded with the same encoder as
   the questions; their vectors are written to ``targeted_seeds``.
2. Top-k per seed by cosine, exact and distributed: the seed matrix is broadcast, each
   partition keeps a running top-k per seed (``udfs.retrieval``), and a global top-k per seed
   over those partial lists follows. Question vectors never reach the driver.
3. The union of the top-k sets, minus near-duplicates: the MinHash/decontamination/SemDeDup
   removals already applied to every stage, plus embedding cosine >= ``dedup_cosine`` among
   the retrieved questions.
4. Seeded Spark MLlib k-means with k = ``target_size``; from each cluster the member nearest
   its centre. ``selected_targeted`` holds the cluster id, the distance, the cluster size and
   the seeds that retrieved each question; it is exported as JSONL and Parquet.

``nr select targeted --config ... [--seeds FILE] [--top-k N] [--target-size N]`` runs it alone.
"""
from __future__ import annotations

import functools
import logging
import math
from typing import Optional

import numpy as np
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from jobs.common.config import PipelineConfig
from jobs.common.llm_stage import USABLE_INPUTS, removed_question_ids
from jobs.common.runner import StageContext
from udfs import fs
from udfs.embed import EMBED_FIELDS
from udfs.retrieval import TOPK_FIELDS, partial_topk_batches
from jobs.common.stage import Output, Stage
from jobs.common.storage import read_table, write_export

log = logging.getLogger("nr")

KEY = ["question_id"]
TABLE = "selected_targeted"
SEEDS_TABLE = "targeted_seeds"
REASON = "nearest_to_centre"

SELECTED_SCHEMA = (
    "question_id string, question string, cluster_id int, distance double, cluster_size bigint, "
    "seeds array<string>, best_seed_score double, reason string, model string"
)

SEEDS_SCHEMA = "seed_id string, " + EMBED_FIELDS + ", seed_question string"


class SeedError(ValueError):
    """The seed questions are missing, empty or unusable."""


# --------------------------------------------------------------------------- seeds


def seeds_location(cfg: PipelineConfig) -> str:
    from jobs.stages.corpus.bootstrap import sample_dir

    sel = cfg.select_targeted
    return cfg.expand(sel.seeds_path) if sel.seeds_path else str(sample_dir(None) / "seeds.jsonl")


def read_seeds(ctx: StageContext) -> DataFrame:
    """(seed_id, seed_question) from the configured file or table; a missing file, missing
    columns, no rows or repeated ids are errors that name the config key."""
    import os

    sel = ctx.cfg.select_targeted
    path = seeds_location(ctx.cfg)
    where = f"select_targeted.seeds_path={path}"
    local = fs.is_local(path)
    if sel.seeds_format == "delta":
        if not ctx.store.exists(path):
            raise SeedError(f"{where}: no Delta table there")
        raw = ctx.store.read(path)
    else:
        if local and not os.path.exists(path):
            raise SeedError(f"{where}: file not found")
        raw = read_table(ctx.spark, path, sel.seeds_format, ctx.cfg.storage)
    missing = [c for c in (sel.seed_id_col, sel.seed_text_col) if c not in raw.columns]
    if missing:
        raise SeedError(f"{where}: column(s) {missing} missing (select_targeted.seed_id_col / seed_text_col); "
                        f"columns: {sorted(raw.columns)}")
    seeds = raw.select(F.col(sel.seed_id_col).cast("string").alias("seed_id"),
                       F.col(sel.seed_text_col).cast("string").alias("seed_question"))
    stats = seeds.agg(F.count("*").alias("n"), F.countDistinct("seed_id").alias("ids"),
                      F.sum(F.col("seed_id").isNull().cast("int")).alias("null_ids")).first()
    if stats["n"] == 0:
        raise SeedError(f"{where}: no seed questions")
    if stats["null_ids"] or stats["ids"] != stats["n"]:
        raise SeedError(f"{where}: seed ids must be present and unique ({stats['n']} rows, {stats['ids']} distinct ids)")
    return seeds


def embed_seeds(ctx: StageContext, seeds: DataFrame) -> tuple[list[str], np.ndarray]:
    """Seed ids and their (s, d) unit-vector matrix; the seed set is small by construction
    (hundreds), so it is collected. Unusable seeds are counted; none usable is an error."""
    from jobs.stages.questions.embed import embed_texts

    emb = embed_texts(seeds, ctx.cfg.embed, key_cols=["seed_id"], text_col="seed_question").persist()
    ctx.store.overwrite(SEEDS_TABLE, emb.join(seeds, "seed_id"))
    rows = emb.orderBy("seed_id").collect()
    emb.unpersist()
    good = [r for r in rows if r["status"] == "ok"]
    for r in rows:
        if r["status"] != "ok":
            ctx.count(f"dropped_seed_{r['status']}")
    ctx.count("seeds", len(good))
    if not good:
        raise SeedError(f"none of the {len(rows)} seed questions could be embedded "
                        f"(statuses: {sorted({r['status'] for r in rows})})")
    return [r["seed_id"] for r in good], np.asarray([r["embedding"] for r in good], dtype=np.float32)


# --------------------------------------------------------------------------- retrieval


def retrieve_top_k(vectors: DataFrame, seed_ids: list[str], seed_matrix: np.ndarray, k: int, *,
                   faiss: bool = False, faiss_margin: int = 64, partitions: Optional[int] = None) -> DataFrame:
    """(seed_id, question_id, score, rank): the exact top ``k`` of ``vectors`` (question_id,
    embedding) per seed, by cosine, ties to the lower id. Per partition at most
    ``seeds x k`` rows leave the scan; the global cut is a window per seed over those."""
    spark = vectors.sparkSession
    bc = spark.sparkContext.broadcast(np.ascontiguousarray(seed_matrix, dtype=np.float32))
    src = vectors.select("question_id", "embedding")
    if partitions:
        src = src.coalesce(partitions)  # fewer, longer scans: fewer partial lists to merge, no shuffle
    fn = functools.partial(partial_topk_batches, seeds=bc, seed_ids=list(seed_ids), k=int(k), faiss=faiss,
                           faiss_margin=faiss_margin)
    partial = src.mapInPandas(fn, TOPK_FIELDS)
    w = Window.partitionBy("seed_id").orderBy(F.col("score").desc(), F.col("question_id").asc())
    return partial.withColumn("rank", F.row_number().over(w)).where(F.col("rank") <= k)


def union_retrieved(top: DataFrame) -> DataFrame:
    """One row per retrieved question: the seeds that retrieved it and its best score."""
    return top.groupBy("question_id").agg(F.array_sort(F.collect_set("seed_id")).alias("seeds"),
                                          F.max("score").alias("best_seed_score"))


# --------------------------------------------------------------------------- clustering


def nearest_to_centres(assigned: DataFrame, centres: np.ndarray) -> DataFrame:
    """Per k-means cluster, the member nearest its centre (ties to the lower id), with the
    distance and the cluster's size. ``assigned``: question_id, kmeans_cluster, embedding."""
    from pyspark.sql.functions import pandas_udf

    from udfs.clusters import centre_distances
    from udfs.retrieval import stack_vectors

    bc = assigned.sparkSession.sparkContext.broadcast(np.asarray(centres, dtype=np.float64))

    @pandas_udf("double")
    def distance(emb, cluster):
        import pandas as pd

        return pd.Series(centre_distances(stack_vectors(emb.tolist()), bc.value, cluster.to_numpy()))

    d = assigned.withColumn("distance", distance("embedding", "kmeans_cluster"))
    by_cluster = Window.partitionBy("kmeans_cluster")
    ordered = by_cluster.orderBy(F.col("distance").asc(), F.col("question_id").asc())
    return (d.withColumn("cluster_size", F.count("*").over(by_cluster))
            .withColumn("_rank", F.row_number().over(ordered)).where(F.col("_rank") == 1)
            .drop("_rank", "embedding").withColumnRenamed("kmeans_cluster", "cluster_id"))


def empty_selection(ctx: StageContext) -> DataFrame:
    return ctx.spark.createDataFrame([], SELECTED_SCHEMA)


def select(ctx: StageContext, vectors: DataFrame, n: int, seed_ids: list[str], seed_matrix: np.ndarray
           ) -> tuple[DataFrame, DataFrame]:
    """The whole recipe over ``vectors`` (question_id, embedding; ``n`` rows): the selected
    rows, and the persisted candidate pool they were chosen from (the caller unpersists it)."""
    from jobs.stages.questions.semdedup import fit_kmeans, semantic_duplicates

    sel = ctx.cfg.select_targeted
    if sel.top_k > n:
        log.warning("[select_targeted] top_k=%d is more than the %d questions: every seed retrieves all", sel.top_k, n)
        ctx.count("top_k_exceeds_table", 1)
    top = retrieve_top_k(vectors, seed_ids, seed_matrix, min(sel.top_k, n), faiss=sel.faiss,
                         faiss_margin=sel.faiss_margin, partitions=sel.retrieval_partitions)
    # The union is at most seeds x top_k rows: broadcast it to fetch its vectors in one scan,
    # never shuffle the whole vector table. persist justification: dedup, k-means and the
    # output all read the pool.
    pool = vectors.join(F.broadcast(union_retrieved(top)), "question_id").persist()
    m = pool.count()
    ctx.count("retrieved", m)
    if sel.dedup_cosine is not None and m > 1:
        groups = semantic_duplicates(pool.select("question_id", "embedding"), min_cosine=sel.dedup_cosine,
                                     n_clusters=min(m, math.ceil(m / sel.dedup_cluster_rows)), seed=sel.seed,
                                     max_iter=sel.kmeans_max_iter, sort_by="question_id")
        dupes = groups.where(~F.col("keep")).select(F.col("id").alias("question_id"))
        kept = pool.join(dupes, "question_id", "left_anti").persist()
        ctx.count("dropped_near_duplicate", m - kept.count())
        pool.unpersist()
        pool = kept
    m = pool.count()
    k = sel.target_size
    if k > m:
        log.warning("[select_targeted] target_size=%d is more than the %d candidates left: k-means with k=%d "
                    "(every candidate is selected)", k, m, m)
        ctx.count("clusters_clamped_to_rows", 1)
        k = m
    model, assigned, n_centres = fit_kmeans(pool, k, seed=sel.seed, max_iter=sel.kmeans_max_iter, sort_by="question_id")
    ctx.metrics["kmeans_clusters"] = float(n_centres)
    picked = nearest_to_centres(assigned.select("question_id", "kmeans_cluster", "embedding"),
                                np.asarray(model.clusterCenters()))
    questions = ctx.store.read("questions").select("question_id", "question")
    out = (picked.join(pool.select("question_id", "seeds", "best_seed_score"), "question_id")
           .join(questions, "question_id", "left")
           .withColumn("reason", F.lit(REASON)).withColumn("model", F.lit(ctx.cfg.embed.name)))
    return out.select(*[f.split(" ")[0] for f in SELECTED_SCHEMA.split(", ")]), pool


def run(ctx: StageContext) -> None:
    from jobs.stages.questions.embed import ok_embeddings

    if ctx.up_to_date():
        ctx.count("skipped_up_to_date", 1)
        return
    sel = ctx.cfg.select_targeted
    seeds = read_seeds(ctx)  # before anything else: a missing seed file fails fast
    vectors = ok_embeddings(ctx) if ctx.store.exists("question_embeddings") else None
    if vectors is None:
        raise SeedError("select_targeted needs question_embeddings: run the embed stage first")
    removed = removed_question_ids(ctx)
    if removed is not None:
        vectors = vectors.join(removed, "question_id", "left_anti")
    # Not persisted (it is the whole vector table): this count reads the key and status
    # columns only; retrieval and the pool's vector fetch are the two scans of the vectors.
    n = vectors.count()
    ctx.count("in", n)
    pool = None
    if n == 0:  # nothing to retrieve from: no encoder is loaded for the seeds either
        out = empty_selection(ctx)
        ctx.store.overwrite(SEEDS_TABLE, ctx.spark.createDataFrame([], SEEDS_SCHEMA))
    else:
        seed_ids, matrix = embed_seeds(ctx, seeds)
        out, pool = select(ctx, vectors, n, seed_ids, matrix)
    out = out.persist()
    ctx.store.overwrite(TABLE, out)
    ctx.count("out", out.count())
    where = write_export(ctx.spark, out, ctx.cfg.expand(sel.export_dir), sel.formats, ctx.cfg.storage,
                         ["cluster_id", "question_id"])
    log.info("[select_targeted] %d questions selected, exported to %s", ctx.counts["out"], where)
    for df in (out, pool):
        if df is not None:
            df.unpersist()




STAGE = Stage(
    "select_targeted", "selection", "whole_table", run,
    "retrieves the questions nearest to seed questions and keeps one per k-means cluster",
    sections=("select_targeted",), inputs=(*USABLE_INPUTS, "question_embeddings"),
    outputs=(Output(TABLE, tuple(KEY)), Output(SEEDS_TABLE, ("seed_id",))),
)
