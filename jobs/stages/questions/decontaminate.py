"""decontaminate: flag questions that share a 13-gram with MATH, GPQA, MMLU-Pro or MMLU-STEM
(ARCHITECTURE.md §8). The matching is ``jobs.common.contamination``; ``nr decontaminate`` runs
it on any table."""
from __future__ import annotations

import logging

from pyspark.sql import functions as F

from jobs.common.config import expand_path
from jobs.common.contamination import build_benchmark_index, contaminated_counts, find_contamination, index_path, \
    report_lines
from jobs.common.runner import StageContext
from jobs.common.stage import Output, Stage

log = logging.getLogger("nr")


def run(ctx: StageContext) -> None:
    if ctx.up_to_date():
        ctx.count("skipped_up_to_date", 1)
        return
    cfg = ctx.cfg.decontaminate
    bench = build_benchmark_index(ctx.spark, cfg.benchmarks, expand_path(cfg.benchmarks_dir, ctx.cfg.storage.root),
                                  cfg.ngram, index_path(cfg.index, ctx.cfg.storage.root),
                                  ctx.cfg.storage.storage_options)
    ctx.count("checked_benchmarks", len(bench.checked))
    for name, k in bench.ngram_counts.items():
        ctx.count(f"benchmark_ngrams_{name}", k)
    for name in bench.skipped:
        ctx.count(f"skipped_benchmark_{name}", 1)
    items = ctx.store.read("questions").where(F.col("status") == "ok")
    total = items.count()
    ctx.count("in", total)
    # persist justification: the table is written, then counted for the report.
    cont = find_contamination(items, "question_id", cfg.text_cols, bench, cfg.ngram, cfg.min_matches,
                              cfg.tokenize).persist()
    ctx.store.overwrite("contamination", cont)
    flagged, per = contaminated_counts(cont, bench)
    ctx.count("dropped_contaminated", flagged)
    ctx.count("out", total - flagged)
    for name, k in per.items():
        ctx.count(f"contaminated_{name}", k)
        ctx.metrics[f"contaminated_pct_{name}"] = 100.0 * k / total if total else 0.0
    for line in report_lines(total, flagged, per, bench):
        log.info("[decontaminate] %s", line.strip())
    cont.unpersist()


def funnel(table, kept: dict) -> list[tuple[str, int]]:
    cont = table("contamination", "the funnel's decontamination step") if "questions" in kept else None
    if cont is None:
        return []
    kept["questions"] = kept["questions"].join(cont.select(F.col("item_id").alias("question_id")), "question_id",
                                               "left_anti")
    return [("after decontamination", kept["questions"].count())]


STAGE = Stage(
    "decontaminate", "questions", "whole_table", run,
    "flags questions sharing a 13-gram with MATH, GPQA, MMLU-Pro or MMLU-STEM (hashed index, no benchmark text)",
    sections=("decontaminate",), inputs=("questions",), required=("questions",),
    outputs=(Output("contamination", ("item_id", "benchmark", "benchmark_item_id")),), funnel=funnel,
    headline=(("count", "dropped_contaminated", "removed as contaminated"),),
)
