"""judge: question quality (1-10 + improved question), reference-answer agreement (Yes/No),
and the self-score logp(Yes) - logp(No) of each response.

judgments are keyed by (question_id, kind, judge_model, response_model, sample_idx);
question-level judgments use response_model = '' and sample_idx = -1 so keys are never null.
"""
from __future__ import annotations

import sys

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.common.config import SamplingConfig
from jobs.common.llm_stage import generate_rows, model_config, row_status, structured, usable_questions
from jobs.common.runner import StageContext

NAME = "judge"
INPUTS = ["questions", "responses", "dedup_questions_clusters", "contamination"]
OUTPUTS = ["judgments"]
KEY = ["question_id", "kind", "judge_model", "response_model", "sample_idx"]
PROMPTS = {"quality": "judge_quality", "reference_agreement": "judge_reference", "self_score": "judge_selfscore"}
GEN_COLS = ["prompt_name", "prompt_hash", "prompt_tokens", "completion_tokens", "finish_reason", "error"]



def quality_chunk(ctx: StageContext, qs: DataFrame) -> DataFrame:
    cfg = ctx.cfg.judge
    gen = generate_rows(ctx, qs.select("question_id", "question"), prompt=PROMPTS["quality"], model_name=cfg.model,
                        sampling=structured(cfg.sampling, "quality", cfg.structured_output), key_cols=["question_id"],
                        parser="quality")
    return gen.select(
        "question_id", F.lit("quality").alias("kind"), F.col("model").alias("judge_model"),
        F.lit("").alias("response_model"), F.lit(-1).alias("sample_idx"),
        row_status(F.col("p.status")).alias("status"),
        F.col("p.score").alias("score"), F.lit(None).cast("string").alias("verdict"),
        F.col("p.improved_question").alias("improved_question"), F.lit(None).cast("string").alias("explanation"),
        F.col("text").alias("raw_output"), *GEN_COLS,
    )


def _per_response(ctx: StageContext, pairs: DataFrame, prompt: str, sampling: SamplingConfig,
                  parser: str | None = None) -> DataFrame:
    # generate() adds its own sample_idx (always 0 here); carry the response's index under another name.
    rows = pairs.withColumnRenamed("sample_idx", "resp_idx").withColumnRenamed("model", "response_model")
    cols = ["question_id", "response_model", "resp_idx", "question", "response"]
    if "reference_answer" in rows.columns:
        cols.append("reference_answer")
    return generate_rows(ctx, rows.select(*cols), prompt=prompt, model_name=ctx.cfg.judge.model, sampling=sampling,
                         key_cols=["question_id", "response_model", "resp_idx"], parser=parser)


def reference_chunk(ctx: StageContext, pairs: DataFrame) -> DataFrame:
    cfg = ctx.cfg.judge
    p = _per_response(ctx, pairs, PROMPTS["reference_agreement"], structured(cfg.sampling, "verdict", cfg.structured_output),
                      parser="verdict")
    return p.select(
        "question_id", F.lit("reference_agreement").alias("kind"), F.col("model").alias("judge_model"),
        "response_model", F.col("resp_idx").alias("sample_idx"),
        row_status(F.col("p.status")).alias("status"),
        F.when(F.col("p.verdict") == "Yes", 1.0).when(F.col("p.verdict") == "No", 0.0).alias("score"),
        F.col("p.verdict").alias("verdict"), F.lit(None).cast("string").alias("improved_question"),
        F.col("p.explanation").alias("explanation"), F.col("text").alias("raw_output"), *GEN_COLS,
    )


def selfscore_sampling(ctx: StageContext) -> SamplingConfig:
    # One token at temperature 0 with the top-k logprobs of that token (paper, Figure 11).
    return SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=1, n=1, seed=0, logprobs=ctx.cfg.judge.self_score_top_k)


def selfscore_chunk(ctx: StageContext, pairs: DataFrame) -> DataFrame:
    from udfs.parse_udf import selfscore_udf

    gen = _per_response(ctx, pairs, PROMPTS["self_score"], selfscore_sampling(ctx))
    # status: ok, no_logprobs, or no_verdict (neither Yes nor No among the top k: no score)
    scored = gen.withColumn("s", selfscore_udf(ctx.cfg.judge.self_score_floor)(F.col("first_token_logprobs")))
    return scored.select(
        "question_id", F.lit("self_score").alias("kind"), F.col("model").alias("judge_model"),
        "response_model", F.col("resp_idx").alias("sample_idx"),
        row_status(F.col("s.status")).alias("status"), F.col("s.score").alias("score"),
        F.when(F.col("s.score") > 0, "Yes").when(F.col("s.score") <= 0, "No").alias("verdict"),
        F.lit(None).cast("string").alias("improved_question"), F.lit(None).cast("string").alias("explanation"),
        F.col("text").alias("raw_output"), *GEN_COLS,
    )


def _pending(ctx: StageContext, df: DataFrame, kind: str, judge_model: str, keys: list[str]) -> DataFrame:
    if not ctx.store.exists("judgments"):
        return df
    done = (ctx.store.read("judgments").where((F.col("kind") == kind) & (F.col("judge_model") == judge_model))
            .select(*keys).distinct())
    return df.join(done, keys, "left_anti")


def run(ctx: StageContext) -> None:
    cfg = ctx.cfg.judge
    judge_model = model_config(ctx.cfg, cfg.model).name
    qs = usable_questions(ctx).select("question_id", "question", "reference_answer").persist()
    ctx.count("in_questions", qs.count())
    responses = None
    if ctx.store.exists("responses"):
        responses = (ctx.store.read("responses").where(F.col("status") == "ok")
                     .select("question_id", "model", "sample_idx", "response")
                     .join(qs, "question_id", "inner").persist())
        ctx.count("in_responses", responses.count())
    for kind in cfg.kinds:
        if kind == "quality":
            pending = _pending(ctx, qs, kind, judge_model, ["question_id"])
            fn, chunk_keys = (lambda part: quality_chunk(ctx, part)), ["question_id"]
        else:
            if responses is None:
                ctx.count(f"skipped_{kind}_no_responses", 1)
                continue
            pairs = responses
            if kind == "reference_agreement":
                pairs = pairs.where(F.col("reference_answer").isNotNull())
            renamed = pairs.withColumnRenamed("model", "response_model")
            pending = _pending(ctx, renamed, kind, judge_model, ["question_id", "response_model", "sample_idx"]) \
                .withColumnRenamed("response_model", "model")
            chunk = reference_chunk if kind == "reference_agreement" else selfscore_chunk
            fn, chunk_keys = (lambda part, c=chunk: c(ctx, part)), ["question_id", "model", "sample_idx"]
        n = ctx.process_in_chunks(pending, chunk_keys, fn, "judgments", KEY)
        ctx.count(f"out_{kind}", n)
        ctx.count("out", n)
    qs.unpersist()
    if responses is not None:
        responses.unpersist()


def main(argv: list[str] | None = None) -> int:
    from jobs.pipeline import stage_main

    return stage_main(NAME, argv)


if __name__ == "__main__":
    sys.exit(main())
