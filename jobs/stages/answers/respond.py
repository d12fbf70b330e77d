"""respond: answers from each configured responder model (temperature 0.7, top_p 0.9 by
default). Usable questions -> responses keyed by (question_id, model, sample_idx)."""
from __future__ import annotations

from typing import Optional

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.common.llm_stage import (USABLE_INPUTS, generate_rows, model_config, row_status, run_on_usable_questions,
                                   usable_questions)
from jobs.common.runner import StageContext
from jobs.common.stage import Output, Stage, Work

KEY = ["question_id", "model", "sample_idx"]


def respond_chunk(ctx: StageContext, questions: DataFrame, model_name: str) -> DataFrame:
    cfg = ctx.cfg.respond
    s = cfg.sampling
    gen = generate_rows(ctx, questions.select("question_id", "question"), prompt=cfg.prompt, model_name=model_name,
                        sampling=s, key_cols=["question_id"], echo=True)
    return gen.select(
        "question_id", "model", F.col("sample_idx").cast("int").alias("sample_idx"),
        F.col("text").alias("response"),
        row_status(echo=True).alias("status"),
        F.lit(float(s.temperature)).alias("temperature"), F.lit(float(s.top_p)).alias("top_p"),
        F.lit(int(s.max_tokens)).alias("max_tokens"),
        "prompt_name", "prompt_hash", "prompt_tokens", "completion_tokens", "finish_reason", "error",
    )


def work(ctx: StageContext, qs: Optional[DataFrame] = None) -> list[Work]:
    """Per responder model, the usable questions it has not answered yet."""
    qs = usable_questions(ctx).select("question_id", "question") if qs is None else qs
    out = []
    for name in ctx.cfg.respond.models:
        label = model_config(ctx.cfg, name).name
        pending = ctx.pending(qs, "responses", ["question_id"], where=F.col("model") == label)
        out.append(Work(pending, ("question_id",), lambda part, m=name: respond_chunk(ctx, part, m), "responses",
                        label=label))
    return out


def run(ctx: StageContext) -> None:
    run_on_usable_questions(ctx, work)


STAGE = Stage(
    "respond", "answers", "llm", run, "answers every usable question with each responder model",
    sections=("respond",), inputs=USABLE_INPUTS, required=("questions",),
    outputs=(Output("responses", tuple(KEY)),), roles=lambda cfg: cfg.respond.models, work=work,
    pending_unit="questions", headline=(("rows", "responses", "responses"),),
)
