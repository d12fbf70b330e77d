"""doc_dedup: word MinHash LSH over the documents before annotation (off by default; it saves
the annotate calls of near-duplicate pages), and the body both dedup stages share
(ARCHITECTURE.md §7). The kernels are ``jobs.common.lsh``."""
from __future__ import annotations

import logging

from pyspark.sql import functions as F

from jobs.common.config import DedupConfig
from jobs.common.lsh import CLUSTERS_SCHEMA, PAIRS_SCHEMA, DedupStats, NotInProcess, find_duplicate_clusters, \
    find_duplicate_clusters_in_process
from jobs.common.runner import StageContext
from jobs.common.stage import Output, Stage

log = logging.getLogger("nr")


OUTPUT_KEYS = {"clusters": ("id",), "pairs": ("id_a", "id_b")}


def dedup_table(ctx: StageContext, table: str, id_col: str, text_col: str, cfg: DedupConfig, prefix: str) -> None:
    """The dedup stages' one body: ``<prefix>_clusters`` and ``<prefix>_pairs`` of ``table``'s
    ok rows, rebuilt unless the stage is up to date."""
    if ctx.up_to_date():
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


def _small_input(ctx: StageContext, table: str, id_col: str, text_col: str, cfg: DedupConfig):
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


def run(ctx: StageContext) -> None:
    dedup_table(ctx, "documents", "doc_id", "text", ctx.cfg.doc_dedup, "dedup_documents")


STAGE = Stage(
    "doc_dedup", "corpus", "whole_table", run, "optional: removes near-duplicate documents before annotation",
    sections=("doc_dedup",), inputs=("documents",),
    outputs=(Output("dedup_documents_clusters", OUTPUT_KEYS["clusters"]),
             Output("dedup_documents_pairs", OUTPUT_KEYS["pairs"])),
)
