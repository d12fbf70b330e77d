"""question_dedup: word MinHash LSH over the questions (Jaccard >= 0.55 by default), one kept
per cluster (ARCHITECTURE.md §7). The kernels are ``jobs.common.lsh``; ``nr dedup`` runs them
on any table."""
from __future__ import annotations

from pyspark.sql import functions as F

from jobs.common.runner import StageContext
from jobs.common.stage import Output, Stage
from jobs.stages.corpus.doc_dedup import OUTPUT_KEYS, dedup_table


def run(ctx: StageContext) -> None:
    dedup_table(ctx, "questions", "question_id", "question", ctx.cfg.question_dedup, "dedup_questions")


def funnel(table, kept: dict) -> list[tuple[str, int]]:
    dd = table("dedup_questions_clusters", "the funnel's dedup step") if "questions" in kept else None
    if dd is None:
        return []
    kept["questions"] = kept["questions"].join(dd.where(~F.col("keep")).select(F.col("id").alias("question_id")),
                                               "question_id", "left_anti")
    return [("after dedup", kept["questions"].count())]


STAGE = Stage(
    "question_dedup", "questions", "whole_table", run, "removes near-duplicate questions (word MinHash LSH)",
    sections=("question_dedup",), inputs=("questions",),
    outputs=(Output("dedup_questions_clusters", OUTPUT_KEYS["clusters"]),
             Output("dedup_questions_pairs", OUTPUT_KEYS["pairs"])), funnel=funnel,
    headline=(("count", "dropped_near_duplicate", "removed as duplicates"),),
)
