"""synthesize: one self-contained question (+ reference answer when the document has one)
per selected document. annotations (selected) x documents -> questions."""
from __future__ import annotations

import sys

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.common.llm_stage import content_key_col, generate_rows, row_status, structured
from jobs.common.runner import StageContext

NAME = "synthesize"
INPUTS = ["annotations", "documents"]
OUTPUTS = ["questions"]
KEY = ["question_id"]


def selected_documents(ctx: StageContext) -> DataFrame:
    sel = ctx.store.read("annotations").where(F.col("selected")).select("doc_id")
    return ctx.store.read("documents").join(sel, "doc_id", "left_semi")


def synthesize_chunk(ctx: StageContext, docs: DataFrame) -> DataFrame:
    cfg = ctx.cfg.synthesize
    rows = docs.select("doc_id", F.substring("text", 1, cfg.max_doc_chars).alias("text"))
    sampling = structured(cfg.sampling, "question", cfg.structured_output)
    p = generate_rows(ctx, rows, prompt=cfg.prompt, model_name=cfg.model, sampling=sampling, key_cols=["doc_id"],
                      parser="question", echo=True)
    status = row_status(F.col("p.status"), echo=True)
    # A reference answer that only restates the question answers nothing.
    status = F.when((status == "ok") & (_plain(F.col("p.reference_answer")) == _plain(F.col("p.question"))),
                    F.lit("reference_is_question")).otherwise(status)
    return p.select(
        content_key_col(F.col("doc_id"), F.col("p.question")).alias("question_id"),
        "doc_id",
        status.alias("status"),
        F.col("p.question").alias("question"),
        F.col("p.reference_answer").alias("reference_answer"),
        F.coalesce(F.col("p.answer_bucket"), F.lit("none")).alias("answer_bucket"),
        F.col("text").alias("raw_output"),
        "model", "prompt_name", "prompt_hash", "prompt_tokens", "completion_tokens", "finish_reason", "error",
    )


def _plain(c):
    """Lower case, letters and digits only: "What is X?" and "what is x" compare equal."""
    return F.regexp_replace(F.lower(c), r"[^\p{L}\p{N}]+", "")


def run(ctx: StageContext) -> None:
    docs = selected_documents(ctx)
    ctx.count("in", docs.count())
    # Resume on doc_id: a document that already has a questions row (good or failed) is done.
    done = ctx.store.keys_present("questions", ["doc_id"])
    pending = docs if done is None else docs.join(done, "doc_id", "left_anti")
    ctx.count("out", ctx.process_in_chunks(pending, ["doc_id"], lambda part: synthesize_chunk(ctx, part),
                                           "questions", KEY))
    q = ctx.store.read("questions")
    ctx.count("with_reference", q.where((F.col("status") == "ok") & F.col("reference_answer").isNotNull()).count())


def main(argv: list[str] | None = None) -> int:
    from jobs.pipeline import stage_main

    return stage_main(NAME, argv)


if __name__ == "__main__":
    sys.exit(main())
