"""select_traces: NaturalThoughts-style selection of teacher reasoning traces, and a mixed
System-1 / System-2 SFT export.

1. Traces: the configured teachers' rows of ``responses`` (the respond stage; point
   ``select_traces.teachers`` at a reasoning model to use real traces). Each response is split
   into ``reasoning`` and ``answer`` (``<think>...</think>``, a separate reasoning column, or,
   when allowed, the text before a marked final answer) and gets a status; the result is
   the ``traces`` table.
2. Strategies, each configurable, each writing its picks with the reason to ``selected_traces``
   keyed by (question_id, model, sample_idx, strategy):
   ``random`` (seeded), ``long_cot`` (reasoning tokens at or above a quantile or a threshold),
   ``disagreement`` (the traces of questions whose teachers' final answers differ),
   ``strategy_diversity`` (an LLM tags each trace's reasoning strategies into
   ``trace_strategies``; picks cover every tag, rare tags first, traces with more strategies
   first).
3. Export: every selected trace once, as chat messages with either the full trace (System-2)
   or the answer only (System-1), by ratio or by difficulty, with the mode named in the system
   prompt; JSONL and Parquet under ``select_traces.export_dir``.
"""
from __future__ import annotations

import logging

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from jobs.common.llm_stage import GEN_META, USABLE_INPUTS, generate_rows, model_config, row_status, usable_questions
from jobs.common.runner import StageContext
from udfs.traces import STRATEGY_SCHEMA, TRACE_OK, TRACE_UNTAGGED
from udfs.traces_udf import strategies_udf, trace_udf
from jobs.common.stage import Output, Stage
from jobs.common.storage import write_export

log = logging.getLogger("nr")

TRACE_KEY = ["question_id", "model", "sample_idx"]
KEY = TRACE_KEY + ["strategy"]
TAG_KEY = ["question_id", "teacher", "sample_idx", "tagger"]

SELECTED_SCHEMA = "question_id string, model string, sample_idx int, strategy string, rank int, reason string"
TAGS_SCHEMA = (
    "question_id string, teacher string, sample_idx int, tagger string, strategies array<string>, status string, "
    "raw_output string, prompt_name string, prompt_hash string, prompt_tokens int, completion_tokens int, "
    "finish_reason string, error string"
)


# --------------------------------------------------------------------------- traces


def build_traces(ctx: StageContext) -> DataFrame:
    """The teachers' responses to usable questions, parsed into reasoning and answer."""
    cfg = ctx.cfg.select_traces
    labels = [model_config(ctx.cfg, t).name for t in cfg.teachers]
    r = ctx.store.read("responses").where(F.col("model").isin(labels))
    r = r.join(usable_questions(ctx).select("question_id"), "question_id", "left_semi")
    field = F.col(cfg.reasoning_col) if cfg.reasoning_col and cfg.reasoning_col in r.columns else F.lit(None)
    if cfg.reasoning_col and cfg.reasoning_col not in r.columns:
        log.warning("[select_traces] responses has no column %r (select_traces.reasoning_col): reading "
                    "<think> tags instead", cfg.reasoning_col)
    p = trace_udf()(F.col("response"), field.cast("string"), F.col("completion_tokens"))
    t = r.withColumn("_t", p)
    status = (F.when(F.col("status") != "ok", F.concat(F.lit("response_"), F.col("status")))
              .otherwise(F.col("_t.status")))
    return t.select(*TRACE_KEY, status.alias("status"), "_t.reasoning", "_t.answer", "_t.final_answer",
                    "_t.answer_key", "_t.reasoning_tokens")


def usable(traces: DataFrame, allow_untagged: bool) -> DataFrame:
    ok = [TRACE_OK] + ([TRACE_UNTAGGED] if allow_untagged else [])
    return traces.where(F.col("status").isin(ok))


# --------------------------------------------------------------------------- strategy tags


def tag_chunk(ctx: StageContext, part: DataFrame) -> DataFrame:
    cfg = ctx.cfg.select_traces.tagger
    sampling = cfg.sampling
    if cfg.structured_output and sampling.json_schema is None:
        sampling = sampling.model_copy(update={"json_schema": STRATEGY_SCHEMA})
    # the generation adds its own sample_idx (of the tagger's samples): the trace's is renamed meanwhile
    keyed = part.withColumnRenamed("sample_idx", "trace_sample_idx")
    gen = generate_rows(ctx, keyed, prompt=cfg.prompt, model_name=cfg.model, sampling=sampling,
                        key_cols=["question_id", "teacher", "trace_sample_idx"])
    parsed = gen.where(F.col("sample_idx") == 0).withColumn("_p", strategies_udf()(F.col("text")))
    return parsed.select(
        "question_id", "teacher", F.col("trace_sample_idx").cast("int").alias("sample_idx"),
        F.col("model").alias("tagger"), F.col("_p.strategies").alias("strategies"),
        row_status(F.col("_p.status")).alias("status"), F.col("text").alias("raw_output"),
        *[c for c in GEN_META if c != "model"])


def tag_strategies(ctx: StageContext, good: DataFrame) -> int:
    """Tag every usable trace not tagged yet by this tagger (chunked, resumable)."""
    cfg = ctx.cfg.select_traces
    label = model_config(ctx.cfg, cfg.tagger.model).name
    todo = good.join(ctx.store.read("questions").select("question_id", "question"), "question_id").select(
        "question_id", F.col("model").alias("teacher"), "sample_idx", "question",
        F.substring("reasoning", 1, cfg.tagger.max_reasoning_chars).alias("reasoning"),
        F.lit(label).alias("tagger"))
    pending = ctx.pending(todo, "trace_strategies", TAG_KEY).drop("tagger")
    return ctx.process_in_chunks(pending, ["question_id", "teacher", "sample_idx"], lambda p: tag_chunk(ctx, p),
                                 "trace_strategies", TAG_KEY)


# --------------------------------------------------------------------------- strategies


def _picked(df: DataFrame, strategy: str, order: list[Column], size: int, reason: Column) -> DataFrame:
    """The first ``size`` rows of ``df`` in ``order`` (keys break ties), as selection rows.

    orderBy + limit plans as a top-k per partition and one merge, not a global sort."""
    keys = [F.col(k).asc() for k in TRACE_KEY]
    top = df.withColumn("reason", reason).orderBy(*order, *keys).limit(size)
    w = Window.orderBy(*order, *keys)  # over at most ``size`` rows
    return top.select(*TRACE_KEY, F.lit(strategy).alias("strategy"),
                      F.row_number().over(w).cast("int").alias("rank"), "reason")


def select_random(good: DataFrame, size: int, seed: int) -> DataFrame:
    h = F.xxhash64(F.lit(seed), *[F.col(k) for k in TRACE_KEY])
    return _picked(good.withColumn("_h", h), "random", [F.col("_h").asc()], size,
                   F.lit(f"random draw (seed {seed})"))


def long_cot_threshold(good: DataFrame, percentile: float, min_tokens) -> float:
    if min_tokens is not None:
        return float(min_tokens)
    row = good.agg(F.percentile_approx("reasoning_tokens", percentile, 10000).alias("t")).first()
    return float(row["t"]) if row and row["t"] is not None else float("inf")


def select_long_cot(good: DataFrame, size: int, threshold: float, percentile_note: str) -> DataFrame:
    long = good.where(F.col("reasoning_tokens") >= threshold)
    reason = F.format_string(f"reasoning_tokens=%d >= %s{percentile_note}", F.col("reasoning_tokens"),
                             F.lit(f"{threshold:g}"))
    return _picked(long, "long_cot", [F.col("reasoning_tokens").desc()], size, reason)


def answer_spread(good: DataFrame) -> DataFrame:
    """question_id, n_answers (distinct final answers), n_traces."""
    return good.groupBy("question_id").agg(F.countDistinct("answer_key").alias("n_answers"),
                                            F.count("*").alias("n_traces"))


def select_disagreement(good: DataFrame, size: int, min_answers: int) -> DataFrame:
    disputed = good.join(answer_spread(good).where(F.col("n_answers") >= min_answers), "question_id")
    reason = F.format_string("%d distinct final answers across %d traces", F.col("n_answers"), F.col("n_traces"))
    return _picked(disputed, "disagreement", [F.col("n_answers").desc(), F.col("question_id").asc()], size, reason)


def select_strategy_diversity(tagged: DataFrame, size: int) -> DataFrame:
    """Cover the strategy vocabulary, rare tags first, traces with more strategies first.

    Each trace is filed under its rarest tag (fewest traces carry it; ties by name). Round r
    takes the r-th best trace of every tag (more distinct strategies first), rarer tags
    first within the round; the first ``size`` picks are kept. So every tag that is some
    trace's rarest is represented before any tag gets a second trace.
    ``tagged``: question_id, model, sample_idx, strategies (normalized, distinct).
    """
    t = tagged.where(F.size("strategies") > 0).withColumn("n_tags", F.size("strategies"))
    exploded = t.select(*TRACE_KEY, "n_tags", F.explode("strategies").alias("tag"))
    freq = exploded.groupBy("tag").agg(F.count("*").alias("tag_traces"))
    ranked = exploded.join(freq, "tag")
    rarest = Window.partitionBy(*TRACE_KEY).orderBy(F.col("tag_traces").asc(), F.col("tag").asc())
    anchor = (ranked.withColumn("_r", F.row_number().over(rarest)).where(F.col("_r") == 1).drop("_r"))
    within = Window.partitionBy("tag").orderBy(F.col("n_tags").desc(), *[F.col(k).asc() for k in TRACE_KEY])
    rounds = anchor.withColumn("round", F.row_number().over(within))
    reason = F.format_string("%d strategies; filed under '%s' (%d traces), round %d", F.col("n_tags"), F.col("tag"),
                             F.col("tag_traces"), F.col("round"))
    order = [F.col("round").asc(), F.col("tag_traces").asc(), F.col("tag").asc()]
    return _picked(rounds, "strategy_diversity", order, size, reason)


# --------------------------------------------------------------------------- SFT export


def _system_prompt(name: str) -> str:
    from udfs.llm.prompts import load_prompt

    return "\n".join(body for role, body in load_prompt(name).sections if role == "system")


def sft_rows(ctx: StageContext, selected: DataFrame, traces: DataFrame, good: DataFrame) -> DataFrame:
    """Each selected trace once, as chat messages in System-1 or System-2 form."""
    mix = ctx.cfg.select_traces.mix
    picks = selected.groupBy(*TRACE_KEY).agg(F.array_sort(F.collect_set("strategy")).alias("strategies"))
    rows = (picks.join(traces, TRACE_KEY).join(answer_spread(good), "question_id", "left")
            .join(ctx.store.read("questions").select("question_id", "question"), "question_id"))
    if mix.mode == "ratio":
        u = (F.abs(F.xxhash64(F.lit(mix.seed), *[F.col(k) for k in TRACE_KEY])) % 1_000_000) / 1_000_000.0
        system2 = u < F.lit(mix.system2_ratio)
    else:
        if mix.difficulty == "quality_score":
            scores = (ctx.store.read("judgments").where((F.col("kind") == "quality") & (F.col("status") == "ok"))
                      .groupBy("question_id").agg(F.max("score").alias("quality_score"))
                      if ctx.store.exists("judgments") else None)
            rows = (rows.join(scores, "question_id", "left") if scores is not None
                    else rows.withColumn("quality_score", F.lit(None).cast("double")))
        # a question without the measure (no judge score) is System-1: nothing says it is hard
        system2 = F.coalesce(F.col(mix.difficulty) >= F.lit(mix.difficulty_threshold), F.lit(False))
    rows = rows.withColumn("mode", F.when(system2, "system2").otherwise("system1"))
    thought = F.concat(F.lit("<think>\n"), F.col("reasoning"), F.lit("\n</think>\n\n"), F.col("answer"))
    msg = "struct<role:string,content:string>"

    def message(role: str, content: Column) -> Column:
        return F.struct(F.lit(role).alias("role"), content.alias("content")).cast(msg)

    system = F.when(F.col("mode") == "system2", F.lit(_system_prompt(mix.system2_prompt))) \
        .otherwise(F.lit(_system_prompt(mix.system1_prompt)))
    assistant = F.when(F.col("mode") == "system2", thought).otherwise(F.col("answer"))
    return rows.select(
        F.array(message("system", system), message("user", F.col("question")),
                message("assistant", assistant)).alias("messages"),
        "mode", "question_id", F.col("model").alias("teacher"), "sample_idx", "strategies", "reasoning_tokens",
        "final_answer")


# --------------------------------------------------------------------------- stage


def run(ctx: StageContext) -> None:

    if ctx.up_to_date():
        ctx.count("skipped_up_to_date", 1)
        return
    cfg = ctx.cfg.select_traces
    traces = build_traces(ctx).persist()  # persist justification: statuses, every strategy and the export read it
    ctx.count("in", traces.count())
    ctx.store.overwrite("traces", traces)
    ctx.count_by(traces, "status", "trace_", skip=())
    good = usable(traces, cfg.allow_untagged).persist()
    n_good = good.count()

    picks = []
    if "random" in cfg.strategies:
        picks.append(select_random(good, cfg.size, cfg.seed))
    if "long_cot" in cfg.strategies:
        threshold = long_cot_threshold(good, cfg.long_cot_percentile, cfg.long_cot_min_tokens)
        ctx.metrics["long_cot_threshold_tokens"] = threshold if threshold != float("inf") else -1.0
        note = "" if cfg.long_cot_min_tokens is not None else f" (quantile {cfg.long_cot_percentile:g})"
        picks.append(select_long_cot(good, cfg.size, threshold, note))
    if "disagreement" in cfg.strategies:
        picks.append(select_disagreement(good, cfg.size, cfg.disagreement_min_answers))
    if "strategy_diversity" in cfg.strategies:
        ctx.count("tagged", tag_strategies(ctx, good) if n_good else 0)
        label = model_config(ctx.cfg, cfg.tagger.model).name
        tags = (ctx.store.read_or_empty("trace_strategies", TAGS_SCHEMA)
                .where((F.col("tagger") == label) & (F.col("status") == "ok"))
                .select("question_id", F.col("teacher").alias("model"), "sample_idx", "strategies"))
        picks.append(select_strategy_diversity(tags.join(good.select(*TRACE_KEY), TRACE_KEY, "left_semi"), cfg.size))

    selected = ctx.spark.createDataFrame([], SELECTED_SCHEMA)
    for p in picks:
        selected = selected.unionByName(p)
    selected = selected.persist()
    ctx.store.overwrite("selected_traces", selected)
    for strategy, n in ctx.count_by(selected, "strategy", "selected_", skip=()).items():
        log.info("[select_traces] %s: %d traces", strategy, n)
    export = sft_rows(ctx, selected, traces, good).persist()
    ctx.count("out", export.count())
    ctx.count_by(export, "mode", "sft_", skip=())
    where = write_export(ctx.spark, export, ctx.cfg.expand(cfg.export_dir), cfg.formats, ctx.cfg.storage,
                         ["question_id", "teacher", "sample_idx"])
    log.info("[select_traces] %d of %d usable traces exported to %s", ctx.counts["out"], n_good, where)
    for df in (export, selected, good, traces):
        df.unpersist()


STAGE = Stage(
    "select_traces", "selection", "whole_table", run,
    "NaturalThoughts: tags reasoning strategies and selects traces (random, long CoT, disagreement, diversity)",
    sections=("select_traces",), inputs=(*USABLE_INPUTS, "responses", "judgments"),
    outputs=(Output("traces", tuple(TRACE_KEY)), Output("trace_strategies", tuple(TAG_KEY)),
             Output("selected_traces", tuple(KEY))),
    roles=lambda cfg: [cfg.select_traces.tagger.model],
)
