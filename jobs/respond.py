"""respond: answers from each configured responder model (temperature 0.7, top_p 0.9 by
default). Usable questions -> responses keyed by (question_id, model, sample_idx)."""
from __future__ import annotations

import sys

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.common.llm_stage import generate_rows, model_config, row_status, usable_questions
from jobs.common.runner import StageContext

NAME = "respond"
INPUTS = ["questions", "dedup_questions_clusters", "contamination"]
OUTPUTS = ["responses"]
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


def run(ctx: StageContext) -> None:
    qs = usable_questions(ctx).select("question_id", "question").persist()
    ctx.count("in", qs.count())
    for name in ctx.cfg.respond.models:
        label = model_config(ctx.cfg, name).name
        pending = qs
        if ctx.store.exists("responses"):
            done = ctx.store.read("responses").where(F.col("model") == label).select("question_id").distinct()
            pending = qs.join(done, "question_id", "left_anti")
        n = ctx.process_in_chunks(pending, ["question_id"], lambda part, m=name: respond_chunk(ctx, part, m),
                                  "responses", KEY)
        ctx.count("out", n)
        ctx.count(f"out_{label}", n)
    qs.unpersist()


def main(argv: list[str] | None = None) -> int:
    from jobs.pipeline import stage_main

    return stage_main(NAME, argv)


if __name__ == "__main__":
    sys.exit(main())
