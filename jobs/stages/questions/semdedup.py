"""semdedup (optional): semantic near-duplicates among the questions, SemDeDup-style.

question_embeddings -> semdedup_questions_clusters (id, kmeans_cluster, group_id, keep,
max_cosine, group_size). K-means (Spark MLlib, seeded) over all question vectors; inside a
cluster, pairs with cosine >= 1 - eps are duplicates and each connected group keeps one
member (lowest id, or the judge's highest quality score). Later stages anti-join the ids
with ``keep = false``, as they do for the MinHash table. The stage runs when listed in
``pipeline.stages``; ``semdedup.enabled: false`` makes later stages ignore its table.

The k-means and within-cluster helpers here are shared with targeted selection.
"""
from __future__ import annotations

import functools
import logging
import math
from typing import Optional

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.common.runner import StageContext
from udfs.clusters import GROUP_FIELDS, groups_in_cluster
from jobs.common.stage import Output, Stage

log = logging.getLogger("nr")

TABLE = "semdedup_questions_clusters"


class ClusteringError(ValueError):
    pass


class _OneCentre:
    def __init__(self, centre):
        self._centre = centre

    def clusterCenters(self):
        return [self._centre]


def fit_kmeans(vectors: DataFrame, k: int, *, seed: int, max_iter: int, sort_by: Optional[str] = None):
    """Seeded Spark MLlib k-means over ``embedding`` (array<float>).

    Returns (model, ``vectors`` + ``kmeans_cluster``, number of clusters). ``k`` above the row
    count is an error the caller decides about; Spark may return fewer centres than ``k``
    when points coincide, and the count returned is the real one.
    """
    from pyspark.ml.clustering import KMeans
    from pyspark.ml.functions import array_to_vector

    if k < 1:
        raise ClusteringError(f"k-means needs k >= 1, got {k}")
    if k == 1:  # MLlib refuses k=1; one cluster is every row around the mean
        from pyspark.ml.stat import Summarizer

        mean = (vectors.select(Summarizer.mean(array_to_vector("embedding")).alias("m")).first()["m"].toArray())
        return _OneCentre(mean), vectors.withColumn("kmeans_cluster", F.lit(0)), 1
    # k-means|| samples per partition: the same seed gives the same centres only over the same
    # rows in the same partitions. A Delta snapshot reads back that way; a frame that comes out
    # of a shuffle does not, and is re-split by key and sorted first (sort_by).
    feats = vectors.withColumn("_features", array_to_vector("embedding"))
    if sort_by:
        parts = vectors.sparkSession.sparkContext.defaultParallelism
        feats = feats.repartition(parts, sort_by).sortWithinPartitions(sort_by)  # hash of the key: same split every run
    model = KMeans(k=k, seed=seed, maxIter=max_iter, featuresCol="_features",
                   predictionCol="kmeans_cluster").fit(feats)
    assigned = model.transform(feats).drop("_features").withColumn("kmeans_cluster", F.col("kmeans_cluster").cast("int"))
    return model, assigned, len(model.clusterCenters())


def semantic_duplicates(vectors: DataFrame, *, min_cosine: float, n_clusters: int, seed: int, max_iter: int,
                        scores: Optional[DataFrame] = None, sort_by: Optional[str] = None) -> DataFrame:
    """(id, kmeans_cluster, group_id, keep, max_cosine, group_size) for ``vectors``
    (question_id, embedding); ``scores`` (question_id, score) picks the kept member."""
    _, assigned, _ = fit_kmeans(vectors, n_clusters, seed=seed, max_iter=max_iter, sort_by=sort_by)
    data = assigned.select(F.col("question_id").alias("id"), "kmeans_cluster", "embedding")
    if scores is not None:
        data = data.join(scores.select(F.col("question_id").alias("id"), "score"), "id", "left")
    fn = functools.partial(groups_in_cluster, min_cosine=float(min_cosine))
    return data.groupBy("kmeans_cluster").applyInPandas(fn, GROUP_FIELDS)


def quality_scores(ctx: StageContext) -> Optional[DataFrame]:
    if not ctx.store.exists("judgments"):
        return None
    j = ctx.store.read("judgments").where((F.col("kind") == "quality") & (F.col("status") == "ok"))
    return j.groupBy("question_id").agg(F.max("score").alias("score"))


def run(ctx: StageContext) -> None:
    from jobs.stages.questions.embed import ok_embeddings

    if ctx.up_to_date():
        ctx.count("skipped_up_to_date", 1)
        return
    cfg = ctx.cfg.semdedup
    vectors = ok_embeddings(ctx).persist()  # k-means iterates over it
    n = vectors.count()
    ctx.count("in", n)
    if n == 0:
        ctx.store.overwrite(TABLE, ctx.spark.createDataFrame([], GROUP_FIELDS))
        vectors.unpersist()
        return
    k = cfg.n_clusters or math.ceil(n / cfg.cluster_rows)
    if k > n:
        log.warning("[semdedup] n_clusters=%d is more than the %d vectors: using %d", k, n, n)
        ctx.count("clusters_clamped_to_rows", 1)
        k = n
    scores = quality_scores(ctx) if cfg.keep == "highest_quality" else None
    out = semantic_duplicates(vectors, min_cosine=1 - cfg.eps, n_clusters=k, seed=cfg.seed, max_iter=cfg.max_iter,
                              scores=scores).persist()
    ctx.store.overwrite(TABLE, out)
    removed = out.where(~F.col("keep")).count()
    ctx.count("out", n - removed)
    ctx.count("dropped_semantic_duplicate", removed)
    ctx.metrics["kmeans_clusters"] = float(k)
    out.unpersist()
    vectors.unpersist()


STAGE = Stage(
    "semdedup", "questions", "whole_table", run,
    "optional: removes semantic near-duplicates (k-means, then cosine within a cluster)",
    sections=("semdedup",), inputs=("question_embeddings", "judgments"),
    outputs=(Output(TABLE, ("id",)),),
)
