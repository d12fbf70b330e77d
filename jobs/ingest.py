"""ingest: source tables (DCLM-baseline, FineMath, ...) -> ``documents``.

Every source row either becomes a ``documents`` row or is counted under a drop reason.
Bad text (null, empty, too short, too long) is kept with a non-ok ``status`` so it never
disappears silently; selection (filter, sampling, max_docs) is counted, not stored.
"""
from __future__ import annotations

import sys

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.common.config import IngestConfig, SourceConfig
from jobs.common.runner import StageContext

NAME = "ingest"
INPUTS: list[str] = []
OUTPUTS = ["documents"]
KEY = ["doc_id"]

DOCUMENT_COLUMNS = ["doc_id", "source", "url", "text", "n_chars", "status", "meta"]


def doc_id_col(source: Column, url: Column, text: Column) -> Column:
    """sha256 of source, url and text joined by the unit separator; first 32 hex digits.

    Same as ``udfs.keys.doc_id`` so ids can be recomputed outside Spark.
    """
    sep = F.lit("\x1f")
    joined = F.concat(F.coalesce(source, F.lit("")), sep, F.coalesce(url, F.lit("")), sep, F.coalesce(text, F.lit("")))
    return F.substring(F.sha2(joined, 256), 1, 32)


def _fraction_hash(id_col: Column, seed: int) -> Column:
    # Deterministic, partition-independent sampling: a hash of the key, not rand().
    return F.pmod(F.xxhash64(id_col, F.lit(seed)), F.lit(1_000_000)) / F.lit(1_000_000.0)


def read_source(ctx: StageContext, src: SourceConfig) -> DataFrame:
    path = ctx.cfg.expand(src.path)
    if src.format == "delta":
        return ctx.store.backend.read(path)
    if src.format == "parquet":
        return ctx.spark.read.parquet(path)
    return ctx.spark.read.json(path)


def normalize_source(df: DataFrame, src: SourceConfig) -> DataFrame:
    """Map a source's columns onto the documents schema (before any filtering)."""
    missing = [c for c in [src.text_col, *([src.url_col] if src.url_col else []), *src.keep_cols] if c not in df.columns]
    if missing:
        raise ValueError(
            f"source {src.name!r}: columns {missing} not found; available: {sorted(df.columns)}"
        )
    meta = F.to_json(F.struct(*[F.col(c) for c in src.keep_cols])) if src.keep_cols else F.lit(None).cast("string")
    url = F.col(src.url_col).cast("string") if src.url_col else F.lit(None).cast("string")
    return df.select(
        F.lit(src.name).alias("source"),
        url.alias("url"),
        F.col(src.text_col).cast("string").alias("text"),
        meta.alias("meta"),
    )


def classify_text(df: DataFrame, cfg: IngestConfig) -> DataFrame:
    """Add n_chars and status: ok | null_text | empty_text | too_short | too_long."""
    n = F.length(F.col("text"))
    status = (
        F.when(F.col("text").isNull(), "null_text")
        .when(F.col("text").rlike(r"^\s*$"), "empty_text")  # trim() strips only spaces, not newlines
        .when(n < cfg.min_chars, "too_short")
        .when(n > cfg.max_chars, "too_long")
        .otherwise("ok")
    )
    return df.withColumn("n_chars", F.coalesce(n, F.lit(0))).withColumn("status", status)


def build_documents(ctx: StageContext) -> DataFrame:
    cfg = ctx.cfg.ingest
    parts = []
    for src in cfg.sources:
        raw = read_source(ctx, src)
        n_raw = raw.count()
        ctx.count(f"in_{src.name}", n_raw)
        ctx.count("in", n_raw)
        selected = raw
        if src.filter:
            selected = selected.where(F.expr(src.filter))
        docs = normalize_source(selected, src)
        docs = docs.withColumn("doc_id", doc_id_col(F.col("source"), F.col("url"), F.col("text")))
        if src.sample_fraction is not None:
            docs = docs.where(_fraction_hash(F.col("doc_id"), cfg.seed) < src.sample_fraction)
        if src.max_docs is not None:
            docs = docs.orderBy(F.xxhash64(F.col("doc_id"), F.lit(cfg.seed)), "doc_id").limit(src.max_docs)
        docs = docs.persist()
        n_kept = docs.count()
        ctx.count(f"dropped_not_selected_{src.name}", n_raw - n_kept)
        parts.append(docs)
    if not parts:
        raise ValueError("ingest.sources is empty: nothing to ingest")
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    out = classify_text(out, cfg)
    # A too-long text stays as evidence, cut to the bound so one page cannot blow up a table.
    out = out.withColumn(
        "text", F.when(F.col("status") == "too_long", F.substring("text", 1, cfg.max_chars)).otherwise(F.col("text"))
    )
    return out.select(*DOCUMENT_COLUMNS)


def run(ctx: StageContext) -> None:
    docs = build_documents(ctx).persist()
    total = docs.count()
    exact_dupes = total - docs.select("doc_id").distinct().count()
    ctx.count("dropped_exact_duplicate_row", exact_dupes)
    for status, n in ctx.count_by(docs.dropDuplicates(KEY), "status", "dropped_").items():
        if status == "ok":
            ctx.count("ok", n)
    added = ctx.store.append_new("documents", docs, KEY)
    ctx.count("out", added)
    ctx.count("already_present", total - exact_dupes - added)
    docs.unpersist()


def main(argv: list[str] | None = None) -> int:
    from jobs.pipeline import stage_main

    return stage_main(NAME, argv)


if __name__ == "__main__":
    sys.exit(main())
