"""annotate: rate each document's reasoning content on four axes (DESIGN §1).

documents (status ok, minus near-duplicates when doc_dedup ran) -> annotations, keyed by doc_id.
``selected`` marks the documents that go on to synthesis under ``annotate.select``.
"""
from __future__ import annotations

import sys

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.common.llm_stage import generate_rows, row_status, structured
from jobs.common.runner import StageContext

NAME = "annotate"
INPUTS = ["documents", "dedup_documents_clusters"]
OUTPUTS = ["annotations"]
KEY = ["doc_id"]


def documents_to_annotate(ctx: StageContext) -> DataFrame:
    docs = ctx.store.read("documents").where(F.col("status") == "ok")
    if ctx.cfg.doc_dedup.enabled and ctx.store.exists("dedup_documents_clusters"):
        dupes = ctx.store.read("dedup_documents_clusters").where(~F.col("keep")).select(F.col("id").alias("doc_id"))
        docs = docs.join(dupes, "doc_id", "left_anti")
    return docs


def selection_expr(rule: dict[str, int]):
    cond = F.col("status") == "ok"
    for axis, minimum in rule.items():
        cond = cond & (F.col(axis) >= minimum)
    return F.coalesce(cond, F.lit(False))


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


def run(ctx: StageContext) -> None:
    unknown = set(ctx.cfg.annotate.select) - {"completeness", "complexity", "correctness", "reasoning"}
    if unknown:
        raise ValueError(f"annotate.select names unknown axes {sorted(unknown)}")
    docs = documents_to_annotate(ctx)
    ctx.count("in", docs.count())
    pending = ctx.pending(docs, "annotations", KEY)
    ctx.count("out", ctx.process_in_chunks(pending, KEY, lambda part: annotate_chunk(ctx, part), "annotations", KEY))
    ann = ctx.store.read("annotations")
    ctx.count("selected", ann.where(F.col("selected")).count())


def main(argv: list[str] | None = None) -> int:
    from jobs.pipeline import stage_main

    return stage_main(NAME, argv)


if __name__ == "__main__":
    sys.exit(main())
