"""Near-duplicate removal: word MinHash LSH, exact verification, distributed connected components.

    items (id, text)            one row per key; status 'ok' rows of the stage's table
      -> docs                   mapInArrow over Arrow batches (udfs.minhash): b band hashes and
                                the sorted shingle-hash set of every text, tokenized once
      -> candidate pairs        band rows partitioned and sorted by band hash, each bucket's
                                run paired in Python; giant buckets linked linearly; pairs
                                whose shingle counts rule out the threshold skipped
      -> verified pairs         Jaccard of the two shingle-hash sets >= threshold on every
                                candidate (numpy). When the sets and band hashes fit in a
                                broadcast, in the bucket pass itself, each distinct pair once
                                (in its first shared band); otherwise the pairs are shuffled,
                                de-duplicated and joined to their sets
      -> connected components   alternating large-star / small-star over DataFrames
      -> clusters               (id, cluster_id, keep) for every item; one kept row per cluster

Each step's wall time is logged at INFO ("dedup step ...").

The result identifies duplicates; removing them is an anti-join on ``keep = false``, done by
the stages that read ``dedup_*_clusters`` (annotate for documents, the question stages and
the dataset for questions) or by ``remove_duplicates``.

Stages: ``doc_dedup`` (documents, before annotation; off by default) and ``question_dedup``
(``jobs/stages``). Standalone: ``nr dedup`` (``jobs/tools/dedup.py``).

Determinism: every step is a function of the set of (id, text) rows -- permutation
parameters from the seed, band hashes from signature values, pairs ordered by id, cluster
ids = smallest member id, kept row by (score desc, id) -- so partitioning, task order and
retries cannot change the output.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Optional

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs.common.config import DedupConfig
from udfs import minhash

log = logging.getLogger("nr")


CLUSTERS_SCHEMA = "id string, cluster_id string, keep boolean"
PAIRS_SCHEMA = "id_a string, id_b string, jaccard double"

# Internal column names; they never leave this module.
_TEXT, _SCORE, _IDX = "_dd_text", "_dd_score", "_dd_idx"
_IDX_PAIRS_SCHEMA = "id_a long, id_b long, jaccard double"


@dataclass
class DedupStats:
    """What one dedup run saw and did; ``clusters`` counts clusters of two or more rows."""

    rows: int = 0
    null_ids: int = 0
    empty_texts: int = 0
    bands: int = 0
    rows_per_band: int = 0
    s_curve: dict = field(default_factory=dict)
    candidate_pairs: int = 0
    verified_pairs: int = 0
    clusters: int = 0
    removed: int = 0
    cc_iterations: int = 0
    removed_chars: int = 0  # text characters of the removed rows, each cut at ``chars_cap`` (when asked)

    @classmethod
    def for_config(cls, cfg: DedupConfig) -> "DedupStats":
        """Empty counts with the LSH parameters and S-curve that ``cfg`` gives."""
        bands, rows = lsh_params(cfg)
        return cls(bands=bands, rows_per_band=rows, s_curve=s_curve(cfg.threshold, bands, rows))

    def summary(self) -> str:
        curve = ", ".join(f"P({s})={p:.3f}" for s, p in self.s_curve.items())
        return (f"rows={self.rows} null_ids={self.null_ids} empty_texts={self.empty_texts} candidate_pairs={self.candidate_pairs} verified_pairs={self.verified_pairs} "
                f"clusters={self.clusters} removed={self.removed} (b={self.bands} r={self.rows_per_band}; {curve})")


class _Steps:
    """Wall-clock time of each dedup step, logged at INFO as it ends (for tuning and for users)."""

    def __init__(self):
        self.t0 = self.last = time.monotonic()

    def done(self, step: str, detail: str = "") -> None:
        now = time.monotonic()
        log.info("dedup step %-22s %6.1fs (total %6.1fs)%s", step, now - self.last, now - self.t0,
                 f"  {detail}" if detail else "")
        self.last = now


# --------------------------------------------------------------------------- LSH parameters


def lsh_params(cfg: DedupConfig) -> tuple[int, int]:
    """(bands, rows): the configured override, else the weighted FP/FN optimum for the threshold."""
    if cfg.bands is not None:
        return cfg.bands, cfg.rows
    return minhash.optimal_param(cfg.threshold, cfg.num_perm, cfg.false_positive_weight, cfg.false_negative_weight)


def s_curve(threshold: float, bands: int, rows: int) -> dict[str, float]:
    """Candidate probability at threshold - 0.1, threshold and threshold + 0.1."""
    points = (max(0.0, threshold - 0.1), threshold, min(1.0, threshold + 0.1))
    return {f"{s:.2f}": float(minhash.candidate_probability(s, bands, rows)) for s in points}


# --------------------------------------------------------------------------- transforms


def _partitions(spark: SparkSession) -> int:
    return max(int(spark.conf.get("spark.sql.shuffle.partitions")), spark.sparkContext.defaultParallelism)


def prepare_items(df: DataFrame, id_col: str, text_col: str, score_col: Optional[str] = None,
                  drop_null_ids: bool = True) -> DataFrame:
    """(id string, _dd_text string[, _dd_score double]) range-partitioned and sorted by id, null ids
    dropped (unless ``drop_null_ids`` is false: the caller counts them first).

    The explicit repartition spreads the Python signature work over every core; a source
    read as one or two large splits would otherwise run it in one task. Range partitioning
    with sorted partitions makes ``monotonically_increasing_id`` increase with the id, which
    ``find_duplicate_clusters`` uses as a 64-bit stand-in for it.
    """
    for c in (id_col, text_col) + ((score_col,) if score_col else ()):
        if c not in df.columns:
            raise ValueError(f"column {c!r} is not in the input; columns: {sorted(df.columns)}")
    cols = [F.col(id_col).cast("string").alias("id"), F.col(text_col).cast("string").alias(_TEXT)]
    if score_col:
        cols.append(F.col(score_col).cast("double").alias(_SCORE))
    out = df.select(*cols)
    if drop_null_ids:
        out = out.where(F.col("id").isNotNull())
    return out.repartitionByRange(_partitions(df.sparkSession), "id").sortWithinPartitions("id")


def compute_docs(items: DataFrame, cfg: DedupConfig, bands: int, rows: int) -> DataFrame:
    """(id long, band_hashes array<bigint>, shingles binary): one row per item with at least one
    token, ``id`` being its ``_IDX``; ``shingles`` is its sorted set of 64-bit shingle hashes
    packed as bytes, for verification."""
    fn = functools.partial(minhash.doc_batches, num_perm=cfg.num_perm, seed=cfg.seed, ngram=cfg.ngram,
                           bands=bands, rows=rows, id_col=_IDX, text_col=_TEXT)
    return items.select(_IDX, _TEXT).mapInArrow(fn, "id long, band_hashes array<bigint>, shingles binary")


def find_candidate_pairs(docs: DataFrame, cfg: DedupConfig) -> DataFrame:
    """Distinct (id_a, id_b), id_a < id_b, of items that share a band hash.

    Band rows (band hash, id, shingle count) are hash-partitioned by band hash and sorted,
    so each bucket is one run of rows that a Python pass turns into pairs
    (``minhash.bucket_pair_batches``) -- one shuffle, no per-bucket collect. The band hash is
    seeded with the band index, so it alone keys the bucket; two bands whose hashes
    collide only add candidates, which verification drops.

    A bucket of n <= ``max_bucket_size`` ids yields its n(n-1)/2 pairs. A larger bucket
    (boilerplate, templated questions) would be quadratic, so it yields 2(n-1) pairs
    instead: every member with the bucket's smallest id, and every member with its
    predecessor in id order. When the bucket's members really are near-duplicates of each
    other, those links verify and connect the whole bucket into one cluster. The recall
    cost: a duplicate pair that shares only giant buckets and is neither a (smallest,
    member) nor a neighbour pair is not verified itself -- it is still clustered when the
    links around it verify, and lost (and absent from the pairs table) when they do not.

    Pairs whose shingle counts alone rule out the threshold (min/max < threshold bounds
    the Jaccard) are not emitted. The result is hash-partitioned by id_a, which the
    verification join reuses.
    """
    parts = _partitions(docs.sparkSession)
    n_shingles = (F.octet_length("shingles") / 8).cast("int")
    band_rows = docs.select(F.explode("band_hashes").alias("key"), "id", n_shingles.alias("n"))
    fn = functools.partial(minhash.bucket_pair_batches, max_bucket_size=cfg.max_bucket_size,
                           threshold=cfg.threshold)
    pairs = (band_rows.repartition(parts, "key").sortWithinPartitions("key", "id")
             .mapInArrow(fn, f"id_a {docs.schema['id'].dataType.simpleString()}, "
                             f"id_b {docs.schema['id'].dataType.simpleString()}"))
    return (pairs.where(F.col("id_a") < F.col("id_b"))  # an id listed twice in a bucket pairs with itself
            .repartition(parts, "id_a").distinct())


def verify_in_buckets(docs: DataFrame, cfg: DedupConfig, sets) -> DataFrame:
    """(id_a, id_b, jaccard) of the verified candidates, plus (null, null, pairs checked) rows:
    candidates and their verification in one pass, for inputs whose shingle sets and band
    hashes fit in a broadcast (``sets``, a broadcast ``minhash.DocSets``).

    Band rows (band hash, band index, id, shingle count) are partitioned and sorted by band
    hash as in ``find_candidate_pairs``; each bucket's pairs are verified where they are
    made (``minhash.bucket_verify_batches``), each distinct pair in one bucket only, so no
    candidate pair is shuffled, de-duplicated or joined to its sets.
    """
    parts = _partitions(docs.sparkSession)
    n_shingles = (F.octet_length("shingles") / 8).cast("int")
    band_rows = docs.select(F.posexplode("band_hashes").alias("band", "key"), "id", n_shingles.alias("n"))
    fn = functools.partial(minhash.bucket_verify_batches, sets=sets, max_bucket_size=cfg.max_bucket_size,
                           threshold=cfg.threshold)
    return (band_rows.repartition(parts, "key").sortWithinPartitions("key", "id")
            .mapInArrow(fn, _IDX_PAIRS_SCHEMA))


def _to_arrow(df: DataFrame):
    """A small DataFrame on the driver as an Arrow table (``toArrow`` from Spark 4.0)."""
    import pyarrow as pa

    if hasattr(df, "toArrow"):
        return df.toArrow()
    from pyspark.sql.pandas.types import to_arrow_schema

    # Spark's own types, so an empty frame keeps them (pandas alone would give null columns)
    return pa.Table.from_pandas(df.toPandas(), schema=to_arrow_schema(df.schema), preserve_index=False)


def verify_pairs(candidates: DataFrame, docs: DataFrame, cfg: DedupConfig, tally: bool = False) -> DataFrame:
    """(id_a, id_b, jaccard) for the candidates whose Jaccard reaches the threshold.

    Each pair gets both items' sorted shingle-hash sets (two joins on the id) and
    ``minhash.jaccard_hash_batches`` intersects them in numpy. The Jaccard of the hash
    sets is the shingle-set Jaccard unless two different shingles of the pair share a
    64-bit hash (odds about k^2 / 2^64 for k shingles). This is the path for inputs whose
    sets do not fit in a broadcast; smaller ones verify in the buckets (``verify_in_buckets``).
    """
    sh = docs.select("id", "shingles")
    joined = (candidates
              .join(sh.select(F.col("id").alias("id_a"), F.col("shingles").alias("shingles_a")), "id_a")
              .join(sh.select(F.col("id").alias("id_b"), F.col("shingles").alias("shingles_b")), "id_b")
              .select("id_a", "id_b", "shingles_a", "shingles_b"))
    fn = functools.partial(minhash.jaccard_hash_batches, threshold=cfg.threshold, tally=tally)
    kind = docs.schema["id"].dataType.simpleString()
    return joined.mapInArrow(fn, f"id_a {kind}, id_b {kind}, jaccard double")


def _materialize(df: DataFrame, reliable: bool) -> DataFrame:
    return df.checkpoint(eager=True) if reliable else df.localCheckpoint(eager=True)


def _large_star(e: DataFrame) -> DataFrame:
    """Every node's larger neighbours move to the smallest node of its closed neighbourhood."""
    nbr = e.unionByName(e.select(F.col("v").alias("u"), F.col("u").alias("v")))
    m = F.least(F.col("u"), F.min("v").over(Window.partitionBy("u")))
    # No distinct here: small-star's minimum ignores repeated edges and its own distinct drops them.
    return (nbr.withColumn("m", m).where(F.col("v") > F.col("u"))
            .select(F.col("v").alias("u"), F.col("m").alias("v")))


def _small_star(e: DataFrame) -> DataFrame:
    """Every node and its smaller neighbours move to the smallest of them."""
    down = e.select(F.greatest("u", "v").alias("u"), F.least("u", "v").alias("v"))
    down = down.withColumn("m", F.min("v").over(Window.partitionBy("u")))
    moved = down.select(F.col("v").alias("u"), F.col("m").alias("v"))
    own = down.select("u", F.col("m").alias("v"))
    return moved.unionByName(own).where(F.col("u") != F.col("v")).distinct()


def _is_star_forest(e: DataFrame) -> bool:
    """True when every edge (child u > parent v) hangs off a root: no node has two parents
    and no parent has a parent. Connectivity is preserved by both star steps, so each
    star is then one whole component, centred on its smallest id."""
    roles = (e.select(F.col("u").alias("n"), F.lit(1).alias("as_child"), F.lit(0).alias("as_parent"))
             .unionByName(e.select(F.col("v").alias("n"), F.lit(0).alias("as_child"), F.lit(1).alias("as_parent"))))
    bad = (roles.groupBy("n").agg(F.sum("as_child").alias("c"), F.max("as_parent").alias("p"))
           .where((F.col("c") > 1) | ((F.col("c") >= 1) & (F.col("p") == 1))))
    return bad.limit(1).count() == 0


def connected_components(edges: DataFrame, src: str = "id_a", dst: str = "id_b", max_iterations: int = 50,
                         checkpoint_interval: int = 3) -> tuple[DataFrame, int]:
    """(id, cluster_id) for every node on an edge; cluster_id is the component's smallest id.
    The labels come back persisted.

    Alternating large-star and small-star (Kiveris et al., "Connected Components in
    MapReduce and Beyond", SoCC 2014), each a window aggregate plus a distinct, until the
    edge set is a star forest (converges in O(log n) rounds); see ``star_forest``.
    Returns the labels and the number of rounds run.
    """
    forest, rounds = star_forest(edges, src, dst, max_iterations, checkpoint_interval)
    labels = forest_labels(forest).persist()
    labels.count()
    forest.unpersist()
    return labels, rounds


def star_forest(edges: DataFrame, src: str = "id_a", dst: str = "id_b", max_iterations: int = 50,
                checkpoint_interval: int = 3) -> tuple[DataFrame, int]:
    """The components of ``edges`` as distinct (u = member, v = the component's smallest id)
    edges, u > v, materialized; and the number of rounds run.

    Each round's edges are checkpointed eagerly (the next round and the convergence test
    both read them): locally, and every ``checkpoint_interval`` rounds reliably when the
    session has a checkpoint directory, so neither the plan nor the recomputation after a
    lost block grows without bound.
    """
    spark = edges.sparkSession
    reliable = bool(spark.sparkContext.getCheckpointDir())
    e = (edges.select(F.greatest(src, dst).alias("u"), F.least(src, dst).alias("v"))
         .where(F.col("u") != F.col("v")).distinct()).localCheckpoint(eager=True)
    # No test before the first round: real edge sets are rarely star forests already, and a
    # round leaves one unchanged, so starting with a round saves a job.
    rounds, converged = 0, False
    while not converged:
        if rounds >= max_iterations:
            e.unpersist()
            raise RuntimeError(f"connected components did not converge in {max_iterations} rounds "
                               "(raise max_cc_iterations)")
        rounds += 1
        nxt = _small_star(_large_star(e))
        # Each round is materialized with its lineage cut: a persisted round whose parent is
        # unpersisted can be recompiled and recomputed from the start (every earlier round again).
        nxt = _materialize(nxt, reliable and rounds % checkpoint_interval == 0)
        converged = _is_star_forest(nxt)
        e.unpersist()
        e = nxt
        log.debug("dedup: connected components round %d%s", rounds, " (converged)" if converged else "")
    return e, rounds


def forest_labels(forest: DataFrame) -> DataFrame:
    """(id, cluster_id) of a star forest's edges: each member and each centre with its centre."""
    return forest.select(F.col("u").alias("id"), F.col("v").alias("cluster_id")).unionByName(
        forest.select(F.col("v").alias("id"), F.col("v").alias("cluster_id")).distinct())


def assign_clusters(items: DataFrame, labels: DataFrame, score: bool = False) -> DataFrame:
    """(id, cluster_id, keep) for every item: singletons are their own kept cluster; in a
    cluster the kept row is the smallest id, or the highest score (ties and nulls: smallest id).

    ``labels`` (id, cluster_id) are ``_IDX`` values, which order as the ids do; the
    cluster's ``_IDX`` is mapped back to its id with one more join (one row per cluster)."""
    cols = ["id", _IDX, _SCORE] if score else ["id", _IDX]
    out = (items.select(*cols).join(labels.withColumnRenamed("id", _IDX), _IDX, "left")
           .withColumn("_dd_cluster", F.coalesce(F.col("cluster_id"), F.col(_IDX))))
    if score:
        w = Window.partitionBy("_dd_cluster").orderBy(F.col(_SCORE).desc_nulls_last(), F.col(_IDX).asc())
        out = out.withColumn("keep", F.row_number().over(w) == 1)
    else:
        out = out.withColumn("keep", F.col(_IDX) == F.col("_dd_cluster"))
    centres = (items.select(F.col(_IDX).alias("_dd_cluster"), F.col("id").alias("cluster_id"))
               .join(labels.select(F.col("cluster_id").alias("_dd_cluster")).distinct(), "_dd_cluster"))
    return (out.drop("cluster_id").join(centres, "_dd_cluster", "left")
            .select("id", F.coalesce(F.col("cluster_id"), F.col("id")).alias("cluster_id"), "keep"))


def pairs_by_id(pairs: DataFrame, items: DataFrame) -> DataFrame:
    """Verified pairs of ``_IDX`` values as pairs of ids (``id_a < id_b`` still holds: the
    stand-in orders as the ids do)."""
    ids = items.select(_IDX, "id")
    return (pairs.join(ids.select(F.col(_IDX).alias("id_a"), F.col("id").alias("_dd_a")), "id_a")
            .join(ids.select(F.col(_IDX).alias("id_b"), F.col("id").alias("_dd_b")), "id_b")
            .select(F.col("_dd_a").alias("id_a"), F.col("_dd_b").alias("id_b"), "jaccard"))


def find_duplicate_clusters(df: DataFrame, id_col: str, text_col: str, cfg: DedupConfig,
                            score_col: Optional[str] = None,
                            chars_cap: Optional[int] = None) -> tuple[DataFrame, DataFrame, DedupStats]:
    """The whole dedup as one transform.

    Returns ``(clusters, pairs, stats)``: clusters (id, cluster_id, keep) holds every row of
    ``df`` with a non-null id; pairs (id_a < id_b, jaccard) the verified near-duplicate
    pairs. Both come back persisted (the caller writes them, then may unpersist them).
    ``score_col`` (or ``cfg.score_col`` when ``cfg.keep == 'highest_score'``) picks the kept
    row. Raises ValueError when ids repeat: an id must identify one text. With ``chars_cap``,
    ``stats.removed_chars`` sums the removed rows' text lengths, each cut at ``chars_cap``.
    """
    stats = DedupStats.for_config(cfg)
    bands, rows = stats.bands, stats.rows_per_band
    log.debug("dedup: threshold=%.2f ngram=%d num_perm=%d -> b=%d bands x r=%d rows; P(candidate | J): %s",
             cfg.threshold, cfg.ngram, cfg.num_perm, bands, rows,
             ", ".join(f"{s}: {p:.3f}" for s, p in stats.s_curve.items()))
    if score_col is None and cfg.keep == "highest_score":
        score_col = cfg.score_col

    # persist justification: items feed the signatures, the verification join and the
    # final cluster table; reading and filtering the source three times costs more.
    steps = _Steps()
    cached = (prepare_items(df, id_col, text_col, score_col, drop_null_ids=False)
              .withColumn(_IDX, F.monotonically_increasing_id()).persist())
    has_id = F.col("id").isNotNull()
    row = cached.agg(F.count(F.lit(1)).alias("all"), F.count("id").alias("n"), F.countDistinct("id").alias("ids"),
                     F.sum(F.when(has_id & (F.coalesce(F.length(_TEXT), F.lit(0)) == 0), 1).otherwise(0)
                           ).alias("empty")).first()
    if row["n"] != row["ids"]:
        cached.unpersist()
        raise ValueError(f"column {id_col!r} is not a key: {row['n'] - row['ids']} rows repeat an id")
    stats.rows, stats.empty_texts = int(row["n"]), int(row["empty"] or 0)
    stats.null_ids = int(row["all"]) - stats.rows
    if stats.null_ids:
        log.warning("dedup: %d rows have a null %s; they are left out of the clusters", stats.null_ids, id_col)
    # A 64-bit stand-in for the id from here on (band rows, pairs, components): its order is
    # the ids' order, so every rule that orders ids holds unchanged, and longs shuffle, sort
    # and join much faster than strings. Ids come back in the two output tables only.
    items = cached.where(has_id)  # read from the cache
    steps.done("read+key check", f"rows={stats.rows}")

    # persist justification: the Python UDF's output (band hashes and shingle sets); the
    # candidate search and the verification both read it.
    docs = compute_docs(items, cfg, bands, rows).persist()
    size = docs.agg(F.sum(F.octet_length("shingles")).alias("b"), F.count(F.lit(1)).alias("n")).first()
    sets_mb = ((size["b"] or 0) + size["n"] * (bands + 2) * 8) / 2**20
    broadcast = sets_mb <= cfg.broadcast_shingles_mb
    steps.done("signatures+bands", f"shingle sets and bands {sets_mb:.1f} MB ({'broadcast' if broadcast else 'shuffled'})")
    # Candidates and their verification run as one job: the verifier adds a row
    # (null, null, pairs checked) per batch, which counts the candidates without a pass of their own.
    # persist justification: counted here, then its verified rows are cached as ``pairs``.
    sets = None
    if broadcast:
        sets = docs.sparkSession.sparkContext.broadcast(minhash.DocSets.from_docs(_to_arrow(docs), cfg.max_bucket_size))
        scored = verify_in_buckets(docs, cfg, sets).persist()
    else:
        scored = verify_pairs(find_candidate_pairs(docs, cfg), docs, cfg, tally=True).persist()
    checked = scored.agg(F.sum(F.when(F.col("id_a").isNull(), F.col("jaccard")))).first()[0]
    stats.candidate_pairs = int(checked or 0)
    steps.done("candidates+verification", f"candidates={stats.candidate_pairs}")
    # persist justification: fed to the components and to the written pairs.
    idx_pairs = scored.where(F.col("id_a").isNotNull())
    # a pair checked twice (it shares two giant buckets, or two bands' hashes collide) is listed once
    idx_pairs = (idx_pairs.distinct() if broadcast else idx_pairs).persist()
    docs.unpersist()

    forest, stats.cc_iterations = star_forest(idx_pairs, max_iterations=cfg.max_cc_iterations)
    scored.unpersist()  # idx_pairs is cached now (the components read all of it)
    # persist justification: returned for writing.
    pairs = pairs_by_id(idx_pairs, items).persist()
    # counted once each, however many buckets checked it (as the in-process path counts)
    stats.verified_pairs = pairs.count()
    idx_pairs.unpersist()
    steps.done("connected components", f"rounds={stats.cc_iterations} verified pairs={stats.verified_pairs}")
    clusters = assign_clusters(items, forest_labels(forest), score=bool(score_col)).persist()
    # one pass computes the cached table and its statistics: every cluster of two or more
    # rows keeps one and removes the rest
    sizes = clusters.agg(F.sum(F.when(~F.col("keep"), 1).otherwise(0)).alias("removed"),
                         F.countDistinct(F.when(~F.col("keep"), F.col("cluster_id"))).alias("clusters")).first()
    stats.removed, stats.clusters = int(sizes["removed"] or 0), int(sizes["clusters"])
    if chars_cap is not None and stats.removed:
        stats.removed_chars = int(
            clusters.where(~F.col("keep")).join(items.select("id", _TEXT), "id")
            .agg(F.sum(F.least(F.coalesce(F.length(_TEXT), F.lit(0)), F.lit(chars_cap)))).first()[0] or 0)
    steps.done("cluster table")
    forest.unpersist()
    cached.unpersist()
    if sets is not None:
        sets.unpersist()
    log.info("dedup: %s", stats.summary())
    return clusters, pairs, stats


def remove_duplicates(df: DataFrame, clusters: DataFrame, id_col: str) -> DataFrame:
    """``df`` without the rows a dedup run marked ``keep = false``."""
    drop = clusters.where(~F.col("keep")).select(F.col("id").alias("_dd_drop_id"))
    return df.join(drop, F.col(id_col).cast("string") == F.col("_dd_drop_id"), "left_anti")


# --------------------------------------------------------------------------- in-process path (small inputs)


class NotInProcess(Exception):
    """The input cannot take the in-process path (the reason is the message); Spark takes it."""


def find_duplicate_clusters_in_process(table, id_col: str, text_col: str, cfg: DedupConfig,
                                       score_col: Optional[str] = None):
    """``find_duplicate_clusters`` on an Arrow table in this process, without Spark.

    Same rows in, same rows out: the clusters and verified pairs equal the Spark path's (the
    kernels are the same functions, see ``minhash.dedup_in_process``), and so do the
    statistics. Ids are cast to string the way Spark casts them, which is only certain for
    string and integer columns; any other id, text or score type raises ``NotInProcess``.
    Returns ``(clusters, pairs, stats)`` as Arrow tables with ``CLUSTERS_SCHEMA``/``PAIRS_SCHEMA``.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    stats = DedupStats.for_config(cfg)
    if score_col is None and cfg.keep == "highest_score":
        score_col = cfg.score_col
    for c in (id_col, text_col) + ((score_col,) if score_col else ()):
        if c not in table.column_names:
            raise ValueError(f"column {c!r} is not in the input; columns: {sorted(table.column_names)}")
    ids, texts = table.column(id_col).combine_chunks(), table.column(text_col).combine_chunks()
    if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type) or pa.types.is_integer(ids.type)):
        raise NotInProcess(f"id column type {ids.type}")
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type) or pa.types.is_null(texts.type)):
        raise NotInProcess(f"text column type {texts.type}")
    scores = None
    if score_col:
        sc = table.column(score_col).combine_chunks()
        if not (pa.types.is_integer(sc.type) or pa.types.is_floating(sc.type) or pa.types.is_null(sc.type)):
            raise NotInProcess(f"score column type {sc.type}")
        scores = sc
    ids, texts = ids.cast(pa.string()), texts.cast(pa.string())
    present = pc.is_valid(ids)
    stats.null_ids = len(ids) - int(pc.sum(present).as_py() or 0)
    if stats.null_ids:
        log.warning("dedup: %d rows have a null %s; they are left out of the clusters", stats.null_ids, id_col)
        ids, texts = ids.filter(present), texts.filter(present)
        scores = scores.filter(present) if scores is not None else None
    stats.rows = len(ids)
    distinct = pc.count_distinct(ids).as_py() if len(ids) else 0
    if distinct != stats.rows:
        raise ValueError(f"column {id_col!r} is not a key: {stats.rows - distinct} rows repeat an id")
    stats.empty_texts = int(pc.sum(pc.fill_null(pc.equal(pc.utf8_length(texts), 0), True)).as_py() or 0)
    found = minhash.dedup_in_process(
        ids, texts, num_perm=cfg.num_perm, seed=cfg.seed, ngram=cfg.ngram, bands=stats.bands,
        rows=stats.rows_per_band, threshold=cfg.threshold, max_bucket_size=cfg.max_bucket_size,
        scores=scores.cast(pa.float64()) if scores is not None else None)
    stats.candidate_pairs, stats.verified_pairs, stats.cc_iterations = (
        found.candidate_pairs, len(found.jaccard), found.rounds)
    stats.removed = int((~found.keep).sum())
    stats.clusters = len(np.unique(found.cluster[~found.keep]))
    clusters = pa.table({"id": ids, "cluster_id": ids.take(pa.array(found.cluster)),
                         "keep": pa.array(found.keep, pa.bool_())})
    pairs = pa.table({"id_a": ids.take(pa.array(found.pair_a)), "id_b": ids.take(pa.array(found.pair_b)),
                      "jaccard": pa.array(found.jaccard, pa.float64())})
    log.info("dedup (in process): %s", stats.summary())
    return clusters, pairs, stats
