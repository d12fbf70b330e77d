"""judge: question quality (1-10 + improved question), reference-answer agreement (Yes/No),
and the self-score logp(Yes) - logp(No) of each response.

judgments are keyed by (question_id, kind, judge_model, response_model, sample_idx);
question-level judgments use response_model = '' and sample_idx = -1 so keys are never null.
"""
from __future__ import annotations

from typing import Optional

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.common.config import SamplingConfig
from jobs.common.llm_stage import USABLE_INPUTS, generate_rows, model_config, row_status, structured, usable_questions
from jobs.common.runner import StageContext
from jobs.common.stage import Output, Stage, Work

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


def _responses(ctx: StageContext, qs: DataFrame) -> Optional[DataFrame]:
    if not ctx.store.exists("responses"):
        return None
    return (ctx.store.read("responses").where(F.col("status") == "ok")
            .select("question_id", "model", "sample_idx", "response").join(qs, "question_id", "inner"))


def work(ctx: StageContext, qs: Optional[DataFrame] = None, responses: Optional[DataFrame] = None) -> list[Work]:
    """Per judgment kind, what this judge model has not judged yet: questions for quality,
    (question, response) pairs for the others (none before respond has written responses)."""
    cfg = ctx.cfg.judge
    judge_model = model_config(ctx.cfg, cfg.model).name
    if qs is None:
        qs = usable_questions(ctx).select("question_id", "question", "reference_answer")
        responses = _responses(ctx, qs)
    out = []
    for kind in cfg.kinds:
        mine = (F.col("kind") == kind) & (F.col("judge_model") == judge_model)
        if kind == "quality":
            out.append(Work(ctx.pending(qs, "judgments", ["question_id"], where=mine), ("question_id",),
                            lambda part: quality_chunk(ctx, part), "judgments", label=kind))
            continue
        if responses is None:
            continue
        pairs = responses.where(F.col("reference_answer").isNotNull()) if kind == "reference_agreement" else responses
        keys = ["question_id", "response_model", "sample_idx"]
        pending = ctx.pending(pairs.withColumnRenamed("model", "response_model"), "judgments", keys, where=mine) \
            .withColumnRenamed("response_model", "model")
        chunk = reference_chunk if kind == "reference_agreement" else selfscore_chunk
        out.append(Work(pending, ("question_id", "model", "sample_idx"), lambda part, c=chunk: c(ctx, part),
                        "judgments", label=kind))
    return out


def run(ctx: StageContext) -> None:
    qs = usable_questions(ctx).select("question_id", "question", "reference_answer").persist()
    ctx.count("in_questions", qs.count())
    responses = _responses(ctx, qs)
    if responses is not None:
        responses = responses.persist()
        ctx.count("in_responses", responses.count())
    else:
        for kind in ctx.cfg.judge.kinds:
            if kind != "quality":
                ctx.count(f"skipped_{kind}_no_responses", 1)
    ctx.run_work(work(ctx, qs, responses))
    qs.unpersist()
    if responses is not None:
        responses.unpersist()


STAGE = Stage(
    "judge", "answers", "llm", run,
    "rates question quality, reference-answer agreement and each response's self-score",
    sections=("judge",), inputs=(*USABLE_INPUTS, "responses"), required=("questions",),
    outputs=(Output("judgments", tuple(KEY)),), roles=lambda cfg: [cfg.judge.model], work=work,
    pending_unit="judgments", headline=(("rows", "judgments", "judgments"),),
)
