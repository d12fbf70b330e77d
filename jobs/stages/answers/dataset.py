"""dataset: the released rows, in the published ``natural_reasoning`` schema
(``question``, ``reference_answer``, ``responses: [{response_model, response}]``) plus our
lineage and scores as extra columns; exported to JSONL and Parquet.

Built whole each run (it is a join of small tables), skipped when nothing changed.
"""
from __future__ import annotations


from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.common.llm_stage import USABLE_INPUTS, removed_question_ids
from jobs.common.runner import StageContext
from jobs.common.stage import Output, Stage
from jobs.common.storage import write_export


def build_dataset(ctx: StageContext) -> DataFrame:
    store = ctx.store
    qs = store.read("questions").where(F.col("status") == "ok")
    removed = removed_question_ids(ctx)
    kept = qs if removed is None else qs.join(removed, "question_id", "left_anti")
    docs = store.read("documents").select("doc_id", "source", "url")
    out = kept.select("question_id", "doc_id", "question", "reference_answer", "answer_bucket").join(docs, "doc_id", "left")
    if store.exists("annotations"):
        out = out.join(store.read("annotations").select("doc_id", "domain"), "doc_id", "left")
    else:
        out = out.withColumn("domain", F.lit(None).cast("string"))

    resp_type = "array<struct<response_model:string,response:string>>"
    if store.exists("responses"):
        r = store.read("responses").where(F.col("status") == "ok")
        responses = r.groupBy("question_id").agg(
            F.array_sort(F.collect_list(F.struct(F.col("model").alias("response_model"), F.col("sample_idx"),
                                                 F.col("response")))).alias("_r"))
        responses = responses.select(
            "question_id", F.transform("_r", lambda x: F.struct(x["response_model"].alias("response_model"),
                                                                 x["response"].alias("response"))).alias("responses"))
        out = out.join(responses, "question_id", "left")
        out = out.withColumn("responses", F.coalesce("responses", F.array().cast(resp_type)))
    else:
        out = out.withColumn("responses", F.array().cast(resp_type))

    if store.exists("judgments"):
        j = store.read("judgments").where(F.col("status") == "ok")
        q = j.where(F.col("kind") == "quality").groupBy("question_id").agg(
            F.max("score").alias("question_quality_score"), F.first("improved_question", True).alias("improved_question"))
        ra = j.where(F.col("kind") == "reference_agreement").groupBy("question_id").agg(
            F.avg("score").alias("reference_agreement"))
        ss = j.where(F.col("kind") == "self_score").groupBy("question_id").agg(F.avg("score").alias("self_score"))
        out = out.join(q, "question_id", "left").join(ra, "question_id", "left").join(ss, "question_id", "left")
    else:
        out = (out.withColumn("question_quality_score", F.lit(None).cast("double"))
               .withColumn("improved_question", F.lit(None).cast("string"))
               .withColumn("reference_agreement", F.lit(None).cast("double"))
               .withColumn("self_score", F.lit(None).cast("double")))

    cfg = ctx.cfg.dataset
    if cfg.require_reference:
        out = out.where(F.col("reference_answer").isNotNull())
    if cfg.min_quality is not None:
        out = out.where(F.col("question_quality_score") >= cfg.min_quality)
    return out.select(
        "question", "reference_answer", "responses",
        "question_id", "doc_id", "source", "url", "domain", "answer_bucket",
        F.when(F.col("question_quality_score").isNull(), None)
        .when(F.col("question_quality_score") >= 7, "high").otherwise("low").alias("quality_band"),
        "question_quality_score", "improved_question", "reference_agreement", "self_score",
    )


def export(ctx: StageContext, df: DataFrame) -> str:
    return write_export(ctx.spark, df, ctx.cfg.expand(ctx.cfg.dataset.export_dir), ctx.cfg.dataset.formats,
                        ctx.cfg.storage, ["question_id"])


def run(ctx: StageContext) -> None:
    if ctx.up_to_date():
        ctx.count("skipped_up_to_date", 1)
        return
    qs = ctx.store.read("questions")
    ctx.count("in", qs.where(F.col("status") == "ok").count())
    removed = removed_question_ids(ctx)
    ok_ids = qs.where(F.col("status") == "ok").select("question_id")
    if removed is not None:
        ctx.count("dropped_removed", ok_ids.join(removed, "question_id", "left_semi").count())
    ds = build_dataset(ctx).persist()
    n = ds.count()
    ctx.store.overwrite("dataset", ds)
    where = export(ctx, ds)
    ctx.count("out", n)
    ctx.count("with_reference", ds.where(F.col("reference_answer").isNotNull()).count())
    ctx.count("with_responses", ds.where(F.size("responses") > 0).count())
    ctx.metrics["exported"] = 1.0
    import logging

    logging.getLogger("nr").info("[dataset] %d rows exported to %s", n, where)
    ds.unpersist()


def funnel(table, kept: dict) -> list[tuple[str, int]]:
    ds = table("dataset", "the funnel's last step")
    return [] if ds is None else [("dataset", ds.count())]


STAGE = Stage(
    "dataset", "answers", "whole_table", run,
    "joins the usable questions with their documents, responses and judgments; exports JSONL and Parquet",
    sections=("dataset",), inputs=(*USABLE_INPUTS, "documents", "annotations", "responses", "judgments"),
    required=("questions", "documents"), outputs=(Output("dataset", ("question_id",)),), funnel=funnel,
    headline=(("rows", "dataset", "dataset rows"),),
)
