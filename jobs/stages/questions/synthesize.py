"""synthesize: one self-contained question (+ reference answer when the document has one)
per selected document. annotations (selected) x documents -> questions."""
from __future__ import annotations


from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.common.llm_stage import generate_rows, row_status, structured
from jobs.common.runner import StageContext
from udfs.keys import content_key_col
from jobs.common.stage import Output, Stage, Work

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


def work(ctx: StageContext) -> list[Work]:
    """The selected documents without a questions row: a document that has one (good or
    failed) is done, so a resume goes by doc_id."""
    pending = ctx.pending(selected_documents(ctx), "questions", ["doc_id"])
    return [Work(pending, ("doc_id",), lambda part: synthesize_chunk(ctx, part), "questions")]


def run(ctx: StageContext) -> None:
    ctx.count("in", selected_documents(ctx).count())
    ctx.run_work(work(ctx))
    q = ctx.store.read("questions")
    ctx.count("with_reference", q.where((F.col("status") == "ok") & F.col("reference_answer").isNotNull()).count())


def funnel(table, kept: dict) -> list[tuple[str, int]]:
    qs = table("questions", "the funnel's questions")
    if qs is None:
        return []
    kept["questions"] = qs.where(F.col("status") == "ok").select("question_id")
    return [("questions", kept["questions"].count())]


STAGE = Stage(
    "synthesize", "questions", "llm", run,
    "writes a self-contained question (and a reference answer when the page has one) per selected document",
    sections=("synthesize",), inputs=("annotations", "documents"), required=("annotations", "documents"),
    outputs=(Output("questions", tuple(KEY)),), roles=lambda cfg: [cfg.synthesize.model], work=work,
    pending_unit="selected documents", funnel=funnel,
    headline=(("rows", "questions", "questions"),),
)
