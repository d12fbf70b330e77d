"""sample: N responses per usable question from each policy model, spread over a temperature
list (paper §6: 32 per question over {0, 0.5, ..., 1.2}); the self-training stages score them.

One engine request per (question, model, temperature) asks for ``n`` samples with a seed, so
the prompt is processed once and the samples are reproducible. ``samples`` is keyed by
(question_id, model, temperature, sample_idx); a resumed run skips the (question, model,
temperature) requests already answered.
"""
from __future__ import annotations


from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.common.config import SamplingConfig
from jobs.common.llm_stage import USABLE_INPUTS, generate_rows, model_config, row_status, usable_questions
from jobs.common.runner import StageContext
from jobs.common.stage import Output, Stage

KEY = ["question_id", "model", "temperature", "sample_idx"]
REQUEST_KEY = ["question_id", "model", "temperature"]


def sampling_plan(ctx: StageContext) -> DataFrame:
    """One row per temperature with the number of samples requested there."""
    cfg = ctx.cfg.self_sample
    rows = [(float(t), int(cfg.samples_at(t))) for t in cfg.temperatures if cfg.samples_at(t) > 0]
    return ctx.spark.createDataFrame(rows, "temperature double, n int")


def sample_questions(ctx: StageContext) -> DataFrame:
    qs = usable_questions(ctx).select("question_id", "question")
    k = ctx.cfg.self_sample.max_questions
    return qs.orderBy("question_id").limit(k) if k else qs


def sample_chunk(ctx: StageContext, requests: DataFrame, model_name: str) -> DataFrame:
    """(question_id, question, temperature, n) requests -> one row per sample."""
    cfg = ctx.cfg.self_sample
    base = SamplingConfig(temperature=0.0, top_p=cfg.top_p, max_tokens=cfg.max_tokens, n=1, seed=cfg.seed)
    # Per-row sampling: the engine merges these over the base settings (udfs.llm.generate).
    rows = requests.select("question_id", "question", "temperature",
                           F.to_json(F.struct("temperature", "n")).alias("overrides"))
    gen = generate_rows(ctx, rows, prompt=cfg.prompt, model_name=model_name, sampling=base,
                        key_cols=["question_id", "temperature"], overrides_col="overrides", echo=True)
    return gen.select(
        "question_id", "model", "temperature", F.col("sample_idx").cast("int").alias("sample_idx"),
        F.col("text").alias("response"), row_status(echo=True).alias("status"),
        F.lit(float(cfg.top_p)).alias("top_p"), F.lit(int(cfg.max_tokens)).alias("max_tokens"),
        F.lit(int(cfg.seed)).alias("seed"),
        "prompt_name", "prompt_hash", "prompt_tokens", "completion_tokens", "finish_reason", "error",
    )


def run(ctx: StageContext) -> None:
    qs = sample_questions(ctx).persist()
    ctx.count("in", qs.count())
    plan = sampling_plan(ctx)
    ctx.metrics["samples_per_question"] = float(sum(r.n for r in plan.collect()))
    for name in ctx.cfg.self_sample.models:
        label = model_config(ctx.cfg, name).name
        requests = qs.crossJoin(F.broadcast(plan)).withColumn("model", F.lit(label))
        pending = ctx.pending(requests, "samples", REQUEST_KEY).drop("model")
        n = ctx.process_in_chunks(pending, ["question_id", "temperature"],
                                  lambda part, m=name: sample_chunk(ctx, part, m), "samples", KEY)
        ctx.count("out", n)
        ctx.count(f"out_{label}", n)
    qs.unpersist()


STAGE = Stage(
    "sample", "selftrain", "incremental", run,
    "samples each policy model's answers at the configured temperatures (self-training pool)",
    sections=("self_sample",), inputs=USABLE_INPUTS,
    outputs=(Output("samples", tuple(KEY)),), roles=lambda cfg: cfg.self_sample.models,
    headline=(("rows", "samples", "self-training samples"),),
)
