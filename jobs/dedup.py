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

Stages: ``doc_dedup`` (documents, before annotation; off by default) and ``question_dedup``.
Standalone: ``nr dedup --input PATH --input-format jsonl|parquet|delta --id-col ID
--text-col TEXT --output DIR`` writes DIR/clusters and DIR/pairs as Parquet.

Determinism: every step is a function of the set of (id, text) rows -- permutation
parameters from the seed, band hashes from signature values, pairs ordered by id, cluster
ids = smallest member id, kept row by (score desc, id) -- so partitioning, task order and
retries cannot change the output.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

if __package__ in (None, ""):  # spark-submit jobs/dedup.py from a checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pyspark.sql import DataFrame, SparkSession, Window  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from jobs.common.config import DedupConfig  # noqa: E402
from udfs import minhash  # noqa: E402

log = logging.getLogger("nr")

STAGE_IO = {
    "doc_dedup": (["documents"], ["dedup_documents_clusters", "dedup_documents_pairs"]),
    "question_dedup": (["questions"], ["dedup_questions_clusters", "dedup_questions_pairs"]),
}

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
        log.debug("dedup step %-22s %6.1fs (total %6.1fs)%s", step, now - self.last, now - self.t0,
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


def compute_signatures(df: DataFrame, id_col: str, text_col: str, cfg: DedupConfig) -> DataFrame:
    """(id string, signature array<bigint>) with ``cfg.num_perm`` values per row.

    The dedup itself never materialises whole signatures (band hashes are all it needs);
    this is for inspection, Jaccard estimates and tests.
    """
    fn = functools.partial(minhash.signature_batches, num_perm=cfg.num_perm, seed=cfg.seed, ngram=cfg.ngram,
                           id_col="id", text_col=_TEXT)
    return prepare_items(df, id_col, text_col).mapInArrow(fn, "id string, signature array<bigint>")


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


def read_in_process(path: str, fmt: str, columns: list[str], max_bytes: int):
    """The columns of a local jsonl / parquet / delta input as an Arrow table, or
    ``NotInProcess`` when it is remote, larger than ``max_bytes`` on disk, or unreadable here
    (Spark, whose readers are more lenient, then reads it)."""
    import pyarrow as pa

    if "://" in path or not os.path.exists(path):
        raise NotInProcess("not a local path")
    size = os.path.getsize(path) if os.path.isfile(path) else sum(
        os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    if size > max_bytes:
        raise NotInProcess(f"{size} bytes on disk")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            schema = pq.read_schema(path) if os.path.isfile(path) else None
            names = schema.names if schema is not None else pq.ParquetDataset(path).schema.names
            missing = [c for c in columns if c not in names]
            if missing:
                return _missing(path, missing, names)
            return pq.read_table(path, columns=columns)
        if fmt == "jsonl":
            import pyarrow.json as pj

            if not os.path.isfile(path):
                raise NotInProcess("a jsonl folder")
            table = pj.read_json(path)
        elif fmt == "delta":
            from deltalake import DeltaTable

            table = DeltaTable(path).to_pyarrow_table()
        else:
            raise ValueError(f"unknown input format {fmt!r}: jsonl, parquet or delta")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
        raise NotInProcess(f"read here: {e}") from None
    missing = [c for c in columns if c not in table.column_names]
    return _missing(path, missing, table.column_names) if missing else table.select(columns)


def add_engine_args(p: argparse.ArgumentParser, max_rows: int) -> None:
    """The command-line choice between the in-process path and Spark."""
    p.add_argument("--engine", choices=["auto", "in-process", "spark"], default="auto",
                   help="auto: inputs up to --in-process-max-rows rows (and --in-process-max-mb on disk) run in "
                   "this process without starting Spark, same kernels and same output; larger ones on Spark")
    p.add_argument("--in-process-max-rows", type=int, default=max_rows)
    p.add_argument("--in-process-max-mb", type=int, default=256)


def input_in_process(args: argparse.Namespace, columns: list[Optional[str]]):
    """The command's input (these columns) as an Arrow table for the in-process path, or
    ``NotInProcess`` (remote output, too large, unreadable here)."""
    if "://" in args.output:
        raise NotInProcess("the output is not a local folder")
    table = read_in_process(args.input, args.input_format, list(dict.fromkeys(c for c in columns if c)),
                            args.in_process_max_mb << 20)
    if args.engine == "auto" and table.num_rows > args.in_process_max_rows:
        raise NotInProcess(f"{table.num_rows} rows > --in-process-max-rows {args.in_process_max_rows}")
    return table


def refuse_in_process(args: argparse.Namespace, e: Exception) -> int:
    print(f"error: --engine in-process: {args.input}: {e}", file=sys.stderr)
    return 2


def _missing(path: str, missing: list[str], names: list[str]):
    raise ValueError(f"{path} has no column {', '.join(missing)}; columns: {', '.join(sorted(names))}")


def write_in_process(table, folder: str) -> None:
    """``folder`` replaced by one Parquet file holding ``table`` (Spark's overwrite of a folder)."""
    import shutil

    import pyarrow.parquet as pq

    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    pq.write_table(table, os.path.join(folder, "part-00000.parquet"))


# --------------------------------------------------------------------------- stages


def _run(ctx, table: str, id_col: str, text_col: str, cfg: DedupConfig, prefix: str) -> None:
    inputs, outputs = STAGE_IO[ctx.stage]
    if ctx.up_to_date(inputs, outputs):
        log.info("[%s] up to date: %s and its config are unchanged since the last run", ctx.stage, table)
        ctx.count("skipped_up_to_date", 1)
        return
    spark = ctx.spark
    docs = ctx.stage == "doc_dedup"
    if ctx.store.exists(table):
        found = _small_input(ctx, table, id_col, text_col, cfg)
        if found is None:
            src = ctx.store.read(table).where(F.col("status") == "ok")
            found = find_duplicate_clusters(
                src, id_col, text_col, cfg, chars_cap=ctx.cfg.annotate.max_doc_chars if docs else None)
        clusters, pairs, stats = found
    else:
        log.warning("[%s] %s does not exist: writing empty results", ctx.stage, table)
        clusters, pairs = spark.createDataFrame([], CLUSTERS_SCHEMA), spark.createDataFrame([], PAIRS_SCHEMA)
        stats = DedupStats.for_config(cfg)
    ctx.store.overwrite(f"{prefix}_clusters", clusters)
    ctx.store.overwrite(f"{prefix}_pairs", pairs)
    clusters.unpersist()
    pairs.unpersist()
    ctx.count("in", stats.rows)
    ctx.count("dropped_null_id", stats.null_ids)
    ctx.count("empty_texts", stats.empty_texts)
    ctx.count("candidate_pairs", stats.candidate_pairs)
    ctx.count("verified_pairs", stats.verified_pairs)
    ctx.count("clusters", stats.clusters)
    ctx.count("dropped_near_duplicate", stats.removed)
    if docs:
        ctx.count("annotate_prompt_tokens_saved", annotate_tokens_saved(ctx.cfg.annotate.prompt, stats))
        ctx.metrics["annotate_prompt_tokens_saved_is_estimate_at_chars_per_token"] = CHARS_PER_TOKEN
    ctx.metrics.update({"b": stats.bands, "r": stats.rows_per_band, "cc_iterations": stats.cc_iterations,
                        **{f"p_candidate_at_{s}": p for s, p in stats.s_curve.items()}})


def _small_input(ctx, table: str, id_col: str, text_col: str, cfg: DedupConfig):
    """``find_duplicate_clusters``' result computed on the driver for an input of at most
    ``cfg.in_process_max_rows`` rows (the sample's few questions took 7-11 s of Spark jobs,
    well under a second here), as DataFrames over the Arrow results; None: take Spark."""
    import pyarrow.compute as pc

    if ctx.stage == "doc_dedup" or not cfg.in_process_max_rows:  # doc_dedup also sums removed text
        return None
    score_col = cfg.score_col if cfg.keep == "highest_score" else None
    cols = list(dict.fromkeys([id_col, text_col, "status"] + ([score_col] if score_col else [])))
    try:
        got = ctx.store.read_small(table, cols, cfg.in_process_max_rows)
        if got is None:
            return None
        got = got.filter(pc.fill_null(pc.equal(got["status"], "ok"), False))
        clusters, pairs, stats = find_duplicate_clusters_in_process(got, id_col, text_col, cfg, score_col)
    except (NotInProcess, KeyError) as e:
        log.info("[%s] deduplicating with Spark: %s", ctx.stage, e)
        return None
    return (ctx.spark.createDataFrame(clusters.to_pandas(), CLUSTERS_SCHEMA),
            ctx.spark.createDataFrame(pairs.to_pandas(), PAIRS_SCHEMA), stats)


CHARS_PER_TOKEN = 4  # English web text under a BPE tokenizer; the runs row names it an estimate


def annotate_tokens_saved(prompt_name: str, stats: DedupStats) -> int:
    """Estimated annotate prompt tokens the removed documents would have cost: the prompt
    rendered without a document, once per removed document, plus the documents' text as
    annotate cuts it (``max_doc_chars``), at ``CHARS_PER_TOKEN`` characters a token."""
    from udfs.llm.prompts import load_prompt

    frame_chars = sum(len(m["content"]) for m in load_prompt(prompt_name).render({}))
    return -(-(stats.removed * frame_chars + stats.removed_chars) // CHARS_PER_TOKEN)


def run_doc_dedup(ctx) -> None:
    _run(ctx, "documents", "doc_id", "text", ctx.cfg.doc_dedup, "dedup_documents")


def run_question_dedup(ctx) -> None:
    _run(ctx, "questions", "question_id", "question", ctx.cfg.question_dedup, "dedup_questions")


# --------------------------------------------------------------------------- entry points


def read_any(spark: SparkSession, path: str, fmt: str, storage=None) -> DataFrame:
    """A table from a path (local, s3://, dbfs:/): jsonl, parquet or delta (native or through the bridge)."""
    from jobs.common.config import StorageConfig
    from jobs.common.storage import make_backend, read_files

    storage = storage or StorageConfig(root="/")
    if fmt in ("jsonl", "parquet"):
        return read_files(spark, path, fmt, storage)
    if fmt == "delta":
        return make_backend(spark, storage).read(path)
    raise ValueError(f"unknown input format {fmt!r}: jsonl, parquet or delta")


def add_storage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="storage option for s3:// paths, as in storage.storage_options (AWS_REGION, "
                        "AWS_ENDPOINT_URL, ...); credentials come from the environment")


def storage_from_args(args) -> "StorageConfig":
    from jobs.common.config import StorageConfig

    opts = {}
    for kv in args.storage_option:
        if "=" not in kv:
            raise ValueError(f"--storage-option {kv!r}: expected KEY=VALUE")
        k, v = kv.split("=", 1)
        opts[k.strip()] = v
    return StorageConfig(root="/", storage_options=opts)


def local_checkpoints(out: str) -> str:
    """Checkpoints beside the output, or in a temporary folder when the output is on an object
    store (a local Spark cannot write there; its checkpoints are scratch anyway)."""
    from udfs import fs

    if fs.is_remote(out):
        import tempfile

        return tempfile.mkdtemp(prefix="nr-checkpoints-")
    return f"{out}/_checkpoints"


def cli_main(argv: list[str]) -> int:
    """``nr dedup``: clusters and verified pairs of any table, written as Parquet."""
    p = argparse.ArgumentParser(prog="nr dedup",
                                description="Near-duplicate clusters of any table (word MinHash LSH, verified pairs).")
    p.add_argument("--input", required=True, help="file or folder")
    p.add_argument("--input-format", choices=["jsonl", "parquet", "delta"], required=True)
    p.add_argument("--id-col", required=True, help="a key column (cast to string)")
    p.add_argument("--text-col", required=True)
    p.add_argument("--output", required=True, help="folder: writes OUTPUT/clusters and OUTPUT/pairs")
    p.add_argument("--threshold", type=float, default=0.55, help="word-shingle Jaccard threshold (default 0.55)")
    p.add_argument("--ngram", type=int, default=1, help="word n-gram shingle size (default 1)")
    p.add_argument("--num-perm", type=int, default=DedupConfig.model_fields["num_perm"].default)
    p.add_argument("--bands", type=int, default=None, help="override the bands chosen from the threshold")
    p.add_argument("--rows", type=int, default=None, help="rows per band, with --bands")
    p.add_argument("--seed", type=int, default=DedupConfig.model_fields["seed"].default)
    p.add_argument("--score-col", default=None, help="keep the highest-scoring row of a cluster, not the lowest id")
    p.add_argument("--max-bucket-size", type=int, default=DedupConfig.model_fields["max_bucket_size"].default)
    p.add_argument("--master", default=None, help="Spark master for a local run (default local[<cores>])")
    add_engine_args(p, 50_000)
    add_storage_args(p)
    args = p.parse_args(argv)

    from pydantic import ValidationError

    from jobs.common.storage import write_parquet

    from jobs.common.config import SparkConfig
    from jobs.common.spark import get_spark
    from jobs.pipeline import setup_logging

    setup_logging("INFO")
    try:
        cfg = DedupConfig(threshold=args.threshold, ngram=args.ngram, num_perm=args.num_perm, bands=args.bands,
                          rows=args.rows, seed=args.seed, max_bucket_size=args.max_bucket_size,
                          keep="highest_score" if args.score_col else "lowest_id", score_col=args.score_col)
    except ValidationError as e:
        problems = "; ".join(f"--{'-'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg']}"
                             if err["loc"] else err["msg"] for err in e.errors())
        print(f"error: {problems}", file=sys.stderr)
        return 2
    try:
        storage = storage_from_args(args)
    except (ValidationError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.output.rstrip("/")
    if args.engine != "spark":
        t0 = time.monotonic()
        try:
            table = input_in_process(args, [args.id_col, args.text_col, args.score_col])
            clusters, pairs, stats = find_duplicate_clusters_in_process(table, args.id_col, args.text_col, cfg)
            write_in_process(clusters, f"{out}/clusters")
            write_in_process(pairs, f"{out}/pairs")
            _print_summary(stats, out, time.monotonic() - t0, "in process")
            return 0
        except NotInProcess as e:
            if args.engine == "in-process":
                return refuse_in_process(args, e)
            log.info("dedup: on Spark: %s", e)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    spark = get_spark(SparkConfig(master=args.master), checkpoint_dir=local_checkpoints(out))
    df = read_any(spark, args.input, args.input_format, storage)
    missing = [c for c in (args.id_col, args.text_col, args.score_col) if c and c not in df.columns]
    if missing:
        print(f"error: {args.input} has no column {', '.join(missing)}; columns: {', '.join(sorted(df.columns))}",
              file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        clusters, pairs, stats = find_duplicate_clusters(df, args.id_col, args.text_col, cfg)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_parquet(spark, clusters, f"{out}/clusters", storage)
    write_parquet(spark, pairs, f"{out}/pairs", storage)
    clusters.unpersist()
    pairs.unpersist()
    _print_summary(stats, out, time.monotonic() - t0, "Spark")
    return 0


def _print_summary(stats: DedupStats, out: str, wall: float, engine: str) -> None:
    print(f"rows:             {stats.rows}")
    if stats.null_ids:
        print(f"null ids:         {stats.null_ids} (left out of the clusters)")
    print(f"empty texts:      {stats.empty_texts}")
    print(f"lsh:              b={stats.bands} r={stats.rows_per_band}; P(candidate | J) "
          + ", ".join(f"{s}: {p:.3f}" for s, p in stats.s_curve.items()))
    print(f"candidate pairs:  {stats.candidate_pairs}")
    print(f"verified pairs:   {stats.verified_pairs}")
    print(f"clusters:         {stats.clusters} (of two or more rows)")
    print(f"removed:          {stats.removed}")
    print(f"output:           {out}/clusters, {out}/pairs ({engine}, {wall:.1f}s, "
          f"{stats.rows / max(wall, 1e-9):.0f} rows/s)")


def main(argv: Optional[list[str]] = None) -> int:
    """``spark-submit jobs/dedup.py --config conf/emr.yaml``: the question_dedup stage."""
    from jobs.pipeline import stage_main

    return stage_main("question_dedup", argv)


if __name__ == "__main__":
    sys.exit(main())
