"""annotate: rate each document's reasoning content on four axes (ARCHITECTURE.md §1).

documents (status ok, minus near-duplicates when doc_dedup ran) -> annotations, keyed by doc_id.
``selected`` marks the documents that go on to synthesis under ``annotate.select``: minimum
scores per axis, set per chunk; or a rank rule (``top_fraction`` / ``top_n``), which depends on
the whole table and is therefore applied once every chunk is in (``apply_rank_selection``).
A rank rule is how a user sets the yield: it does not move with the model's arithmetic on a
given CPU the way a score threshold does.
"""
from __future__ import annotations

import logging
import math
from typing import Optional

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.common.config import RANK_KEYS
from jobs.common.llm_stage import generate_rows, row_status, structured
from jobs.common.runner import StageContext
from udfs.parsers import AXES
from jobs.common.stage import Output, Stage, Work

log = logging.getLogger("nr")

KEY = ["doc_id"]


def documents_to_annotate(ctx: StageContext) -> DataFrame:
    docs = ctx.store.read("documents").where(F.col("status") == "ok")
    if ctx.cfg.doc_dedup.enabled and ctx.store.exists("dedup_documents_clusters"):
        dupes = ctx.store.read("dedup_documents_clusters").where(~F.col("keep")).select(F.col("id").alias("doc_id"))
        docs = docs.join(dupes, "doc_id", "left_anti")
    return docs


# The paper's selection axes: rank rules rank by their sum unless the rule names axes.
DEFAULT_RANK_AXES = ("complexity", "reasoning")
# A tie group whose first k ids are found by sorting (Spark's top-k: k rows per partition and
# on the driver); a larger k is narrowed by doc_id prefix counts first.
TOP_K_SORT_LIMIT = 100_000


def is_rank_rule(rule: dict) -> bool:
    return any(k in rule for k in RANK_KEYS)


def selection_expr(rule: dict):
    """Status ok and every named axis at or above its minimum. Under a rank rule a chunk's rows
    are not selected yet: the rank is applied when the stage's chunks are all in."""
    if is_rank_rule(rule):
        return F.lit(False)
    return _passes_minimums(rule)


def _passes_minimums(rule: dict) -> Column:
    cond = F.col("status") == "ok"
    for axis, minimum in rule.items():
        if axis in AXES:
            cond = cond & (F.col(axis) >= minimum)
    return F.coalesce(cond, F.lit(False))


def rank_score(rule: dict) -> Column:
    axes = [a for a in AXES if a in rule] or list(DEFAULT_RANK_AXES)
    total = F.lit(0)
    for a in axes:
        total = total + F.coalesce(F.col(a), F.lit(0))
    return total


def rank_cutoff(scored: DataFrame, n: int) -> Optional[tuple[int, Optional[str]]]:
    """The last of the first ``n`` rows of ``scored`` (``score`` int, ``doc_id``) in the order
    score descending, doc_id ascending, as (score, doc_id): a row is among the first ``n`` iff
    ``score > s or (score == s and doc_id <= id)``. None when ``n`` is 0; doc_id None when every
    row of score ``s`` is in. Two small jobs at any scale: the count per score (a handful of
    values), then the k-th doc_id of the cut score's tie group (``kth_smallest_id``)."""
    if n <= 0:
        return None
    counts = sorted(((r["score"], r["count"]) for r in scored.groupBy("score").count().collect()), reverse=True)
    above = 0
    for score, count in counts:
        if above + count >= n:
            k = n - above
            if k == count:
                return int(score), None
            return int(score), kth_smallest_id(scored.where(F.col("score") == score).select("doc_id"), k)
        above += count
    return (int(counts[-1][0]), None) if counts else None


def kth_smallest_id(ids: DataFrame, k: int, sort_limit: int = TOP_K_SORT_LIMIT) -> str:
    """The k-th smallest ``doc_id`` (1-based) of ``ids``. Up to ``sort_limit`` a top-k sort;
    beyond, the ids are counted by prefix (3 more characters each round), the prefix holding
    the k-th is kept and k reduced by the ids before it: memory bounded by the prefix counts,
    a scan of the shrinking group per round."""
    depth = 0
    while k > sort_limit:
        depth += 3
        prefix = F.substring("doc_id", 1, depth)
        below = 0
        for r in ids.groupBy(prefix.alias("p")).count().orderBy("p").collect():
            if below + r["count"] >= k:
                ids = ids.where(prefix == r["p"])
                k -= below
                break
            below += r["count"]
    return ids.orderBy("doc_id").limit(k).collect()[-1]["doc_id"]


def apply_rank_selection(ctx: StageContext) -> None:
    """Under a rank rule, set ``selected`` over the whole annotations table: the top
    ``top_fraction`` of the documents annotated (rounded up) or ``top_n``, among those that pass
    the rule's minimums, by the sum of its axes, ties by doc_id. The table is rewritten only
    when the selection changed (a re-run of a finished stage commits nothing)."""
    rule = ctx.cfg.annotate.select
    ann = ctx.store.read("annotations")
    total = ann.count()
    n = int(rule["top_n"]) if "top_n" in rule else math.ceil(rule["top_fraction"] * total)
    eligible, score_col = _passes_minimums(rule), rank_score(rule)
    cut = rank_cutoff(ann.where(eligible).select(score_col.alias("score"), "doc_id"), n)
    if cut is None:
        chosen = F.lit(False)
    else:
        score, last_id = cut
        tie = score_col == score
        if last_id is not None:
            tie = tie & (F.col("doc_id") <= F.lit(last_id))
        chosen = eligible & ((score_col > score) | tie)
    chosen = F.coalesce(chosen, F.lit(False))
    changed = ann.where(chosen != F.col("selected")).count()
    log.info("[annotate] rank selection: %d of %d documents (%s); %d changed", n if cut else 0, total,
             ", ".join(f"{k}={v}" for k, v in rule.items()), changed)
    if changed:
        ctx.store.overwrite("annotations", ann.withColumn("selected", chosen))


def annotate_chunk(ctx: StageContext, docs: DataFrame) -> DataFrame:
    cfg = ctx.cfg.annotate
    rows = docs.select("doc_id", F.substring("text", 1, cfg.max_doc_chars).alias("text"))
    sampling = structured(cfg.sampling, "annotation", cfg.structured_output)
    gen = generate_rows(ctx, rows, prompt=cfg.prompt, model_name=cfg.model, sampling=sampling, key_cols=KEY,
                        parser="annotation")
    out = gen.select(
        "doc_id",
        row_status(F.col("p.status")).alias("status"),
        *[F.when(F.col("p.status") == "ok", F.col(f"p.{a}")).alias(a)
          for a in ("completeness", "complexity", "correctness", "reasoning", "domain")],
        F.col("text").alias("raw_output"),
        "model", "prompt_name", "prompt_hash", "prompt_tokens", "completion_tokens", "finish_reason", "error",
    )
    return out.withColumn("selected", selection_expr(cfg.select))


def work(ctx: StageContext) -> list[Work]:
    """The documents not yet annotated."""
    pending = ctx.pending(documents_to_annotate(ctx), "annotations", KEY)
    return [Work(pending, tuple(KEY), lambda part: annotate_chunk(ctx, part), "annotations")]


def run(ctx: StageContext) -> None:
    ctx.count("in", documents_to_annotate(ctx).count())
    ctx.run_work(work(ctx))
    if is_rank_rule(ctx.cfg.annotate.select) and ctx.store.exists("annotations"):
        apply_rank_selection(ctx)
    ann = ctx.store.read("annotations")
    ctx.count("selected", ann.where(F.col("selected")).count())


def funnel(table, kept: dict) -> list[tuple[str, int]]:
    ann = table("annotations", "the funnel's selection")
    return [] if ann is None else [("selected", ann.where(F.col("selected")).count())]


STAGE = Stage(
    "annotate", "corpus", "llm", run, "rates each document's reasoning content on four axes and selects the best",
    sections=("annotate",), inputs=("documents", "dedup_documents_clusters"), required=("documents",),
    outputs=(Output("annotations", tuple(KEY)),), roles=lambda cfg: [cfg.annotate.model], work=work,
    pending_unit="documents", funnel=funnel,
    headline=(("rows", "annotations", "annotations"), ("count", "selected", "selected")),
)
