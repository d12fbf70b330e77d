"""score: what the self-training rules need to know about every sample (paper §6).

Per sample (``sample_scores``, keyed like ``samples``), committed in chunks:
  * the final answer (last balanced ``\\boxed{}``, else "the answer is ..."; status ``no_answer``);
  * the self-score logp(Yes) - logp(No) with the judge's Figure-11 prompt, by the sample's own
    model unless ``score.judge_model`` names another; ``no_verdict`` when neither Yes nor No is
    in the top k;
  * agreement with the reference answer, where the question has one: answer equivalence
    (math-verify, else normalized strings) for references of at most
    ``score.short_reference_words`` words, the judge's Yes/No for longer ones;
  * optionally a reward from a reward model (``score.reward_model``).
Samples whose generation failed keep a row, with ``sample_<status>`` in every score status.

Per question, built whole from ``sample_scores`` when it changed (a Spark aggregation):
  * ``answer_classes`` (keyed like ``samples``): each answered sample's equivalence class, 0 =
    the majority, with the majority answer, its share and the number of distinct answers;
  * ``question_scores`` (``question_id``, ``model``): pass@1 and maj@k against the reference.
"""
from __future__ import annotations

import sys
from typing import Optional

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.common.llm_stage import generate_rows, model_config, structured
from jobs.common.runner import StageContext

NAME = "score"
INPUTS = ["samples", "questions"]
OUTPUTS = ["sample_scores", "answer_classes", "question_scores"]
KEY = ["question_id", "model", "temperature", "sample_idx"]
QUESTION_KEY = ["question_id", "model"]
# generate() adds its own model and sample_idx columns: the sample's travel under these names.
GEN_KEY = ["question_id", "s_model", "temperature", "s_idx"]
SHARE_BUCKETS = [(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0001)]


def _for_generate(rows: DataFrame) -> DataFrame:
    return rows.withColumnRenamed("model", "s_model").withColumnRenamed("sample_idx", "s_idx")


def _from_generate(gen: DataFrame) -> DataFrame:
    return gen.drop("model", "sample_idx").withColumnRenamed("s_model", "model").withColumnRenamed("s_idx", "sample_idx")


def _judge(ctx: StageContext, rows: DataFrame, prompt: str, sampling, judge_name: str,
           parser: Optional[str] = None) -> DataFrame:
    cols = GEN_KEY + [c for c in ("question", "response", "reference_answer") if c in _for_generate(rows).columns]
    return generate_rows(ctx, _for_generate(rows).select(*cols), prompt=prompt, model_name=judge_name,
                         sampling=sampling, key_cols=GEN_KEY, parser=parser)


def self_scores(ctx: StageContext, ok: DataFrame, judge_name: str) -> DataFrame:
    from jobs.judge import PROMPTS, selfscore_sampling
    from udfs.selftrain import self_score_udf

    gen = _judge(ctx, ok, PROMPTS["self_score"], selfscore_sampling(ctx), judge_name)
    s = self_score_udf(ctx.cfg.judge.self_score_floor)(F.col("first_token_logprobs"))
    gen = gen.withColumn("s", s)
    failed = F.when(F.col("error").isNotNull(), "llm_error").when(F.col("finish_reason") == "too_long", "too_long")
    return _from_generate(gen).select(
        *KEY, F.col("s.score").alias("self_score"), failed.otherwise(F.col("s.status")).alias("self_score_status"),
        F.lit(model_config(ctx.cfg, judge_name).name).alias("judge_model"),
        F.col("prompt_tokens").alias("_pt_ss"), F.col("completion_tokens").alias("_ct_ss"))


def reference_agreement(ctx: StageContext, ok: DataFrame, judge_name: str) -> DataFrame:
    from jobs.judge import PROMPTS
    from udfs.selftrain import equivalence_udf

    cfg = ctx.cfg.score
    with_ref = ok.where(F.col("reference_answer").isNotNull() & (F.length(F.trim("reference_answer")) > 0))
    words = F.size(F.split(F.trim(F.col("reference_answer")), r"\s+"))
    short = with_ref.where(words <= cfg.short_reference_words)
    eq = equivalence_udf(cfg.equivalence_timeout_s)(F.col("answer"), F.col("reference_answer"))
    short_out = short.withColumn("e", eq).select(
        *KEY, F.col("e.agree").alias("ref_agree"), F.concat(F.lit("equivalence:"), F.col("e.method")).alias("ref_method"),
        F.lit(0).alias("_pt_ref"), F.lit(0).alias("_ct_ref"))
    long = with_ref.where(words > cfg.short_reference_words)
    jcfg = ctx.cfg.judge
    gen = _judge(ctx, long, PROMPTS["reference_agreement"], structured(jcfg.sampling, "verdict", jcfg.structured_output),
                 judge_name, parser="verdict")
    p = _from_generate(gen)
    judged = F.when(F.col("error").isNotNull(), None).when(F.col("p.verdict") == "Yes", True) \
        .when(F.col("p.verdict") == "No", False)
    method = F.when(F.col("error").isNotNull(), "judge:llm_error").when(F.col("p.status") == "ok", "judge") \
        .otherwise(F.concat(F.lit("judge:"), F.col("p.status")))
    long_out = p.select(*KEY, judged.alias("ref_agree"), method.alias("ref_method"),
                        F.col("prompt_tokens").alias("_pt_ref"), F.col("completion_tokens").alias("_ct_ref"))
    return short_out.unionByName(long_out)


def rewards(ctx: StageContext, ok: DataFrame) -> DataFrame:
    import functools

    from jobs.common import llm
    from jobs.common.gpu import map_in_pandas
    from pyspark.sql.types import StructType

    from udfs.llm.reward import REWARD_FIELDS, reward_batches

    model = model_config(ctx.cfg, ctx.cfg.score.reward_model)
    rows = _for_generate(ok).select(*GEN_KEY, "question", "response")
    with_msgs = llm.with_prompt(rows, "reward").select(*GEN_KEY, "messages")
    model_cfg = llm.engine_config(model, ctx.cfg.llm.cache_dir, with_msgs.sparkSession)
    fn = functools.partial(reward_batches, model_cfg=model_cfg, key_cols=GEN_KEY)
    schema = StructType([with_msgs.schema[c] for c in GEN_KEY] + list(llm.ddl_struct(REWARD_FIELDS).fields))
    out = map_in_pandas(with_msgs.repartition(llm._partitions(with_msgs, model), *GEN_KEY), fn, schema,
                        model.gpus_per_task)
    return out.withColumnRenamed("s_model", "model").withColumnRenamed("s_idx", "sample_idx").select(
        *KEY, "reward", "reward_status", F.lit(model.name).alias("reward_model"))


def _sample_status(col: str, enabled: bool) -> Column:
    """A score status: the scorer's own, else why the sample was not scored."""
    return (F.when(F.col("status") != "ok", F.concat(F.lit("sample_"), F.col("status")))
            .otherwise(F.coalesce(F.col(col), F.lit("off" if not enabled else "no_reference"))))


def score_chunk(ctx: StageContext, part: DataFrame, model_name: str) -> DataFrame:
    """Samples (with their question and reference) -> one ``sample_scores`` row each."""
    from udfs.selftrain import extract_udf

    cfg = ctx.cfg.score
    judge_name = cfg.judge_model or model_name
    base = part.withColumn("x", extract_udf()(F.col("response"))).select(
        *KEY, "status", "question", "reference_answer", "response",
        F.col("x.answer").alias("answer"), F.col("x.status").alias("answer_status"),
        F.col("x.source").alias("answer_source"))
    ok = base.where(F.col("status") == "ok")
    out = base.drop("question", "reference_answer", "response")
    if cfg.self_score:
        out = out.join(self_scores(ctx, ok, judge_name), KEY, "left")
    else:
        out = out.select("*", F.lit(None).cast("double").alias("self_score"),
                         F.lit(None).cast("string").alias("self_score_status"),
                         F.lit(None).cast("string").alias("judge_model"), F.lit(0).alias("_pt_ss"), F.lit(0).alias("_ct_ss"))
    if cfg.reference:
        out = out.join(reference_agreement(ctx, ok, judge_name), KEY, "left")
    else:
        out = out.select("*", F.lit(None).cast("boolean").alias("ref_agree"), F.lit(None).cast("string").alias("ref_method"),
                         F.lit(0).alias("_pt_ref"), F.lit(0).alias("_ct_ref"))
    if cfg.reward_model:
        out = out.join(rewards(ctx, ok), KEY, "left")
    else:
        out = out.select("*", F.lit(None).cast("double").alias("reward"), F.lit(None).cast("string").alias("reward_status"),
                         F.lit(None).cast("string").alias("reward_model"))
    ref_status = F.when(F.col("status") != "ok", F.concat(F.lit("sample_"), F.col("status"))) \
        .when(F.col("ref_method").isNull(), F.lit("off" if not cfg.reference else "no_reference")) \
        .when(F.col("ref_agree").isNull(), F.col("ref_method")).otherwise(F.lit("ok"))
    return out.select(
        *KEY, F.col("status").alias("sample_status"), "answer", "answer_status", "answer_source",
        "self_score", _sample_status("self_score_status", cfg.self_score).alias("self_score_status"), "judge_model",
        "ref_agree", "ref_method", ref_status.alias("ref_status"),
        "reward", _sample_status("reward_status", bool(cfg.reward_model)).alias("reward_status"), "reward_model",
        (F.coalesce("_pt_ss", F.lit(0)) + F.coalesce("_pt_ref", F.lit(0))).cast("long").alias("prompt_tokens"),
        (F.coalesce("_ct_ss", F.lit(0)) + F.coalesce("_ct_ref", F.lit(0))).cast("long").alias("completion_tokens"),
    )


def build_answer_classes(ctx: StageContext, scores: DataFrame, version: int) -> DataFrame:
    """Self-consistency: one grouped pass over the answered samples of every (question, model)."""
    from udfs.selftrain import CONSISTENCY_SCHEMA, consistency

    cfg = ctx.cfg.score
    rows = scores.where(F.col("sample_status") == "ok").select(*KEY, "answer")
    timeout_s, max_checks = cfg.equivalence_timeout_s, cfg.max_checks_per_question

    def fn(pdf):
        return consistency(pdf, timeout_s=timeout_s, max_checks=max_checks)

    return rows.groupBy(*QUESTION_KEY).applyInPandas(fn, CONSISTENCY_SCHEMA).withColumn("source_version", F.lit(version))


def build_question_scores(classes: DataFrame, scores: DataFrame) -> DataFrame:
    """pass@1 (share of samples that agree with the reference) and maj@k (the majority class
    agrees), for questions with a reference; the majority share for all."""
    s = scores.where(F.col("sample_status") == "ok").select(*KEY, "ref_agree", "self_score", "reward")
    j = classes.join(s, KEY, "left")
    agree = F.col("ref_agree").cast("double")
    return j.groupBy(*QUESTION_KEY).agg(
        F.first("n_samples").alias("n_samples"), F.first("n_answered").alias("n_answered"),
        F.first("n_distinct").alias("n_distinct"), F.first("majority_answer", True).alias("majority_answer"),
        F.first("majority_share", True).alias("majority_share"),
        F.count("ref_agree").alias("n_judged"),
        F.avg(agree).alias("pass_at_1"),
        F.avg(F.when(F.col("answer_class") == 0, agree)).alias("_maj_agree"),
        F.avg("self_score").alias("mean_self_score"), F.avg("reward").alias("mean_reward"),
        F.sum("equivalence_timeouts").alias("equivalence_timeouts"),
        F.first("source_version").alias("source_version"),
    ).withColumn("maj_at_k", F.when(F.col("n_judged") > 0, (F.col("_maj_agree") >= 0.5).cast("double"))).drop("_maj_agree")


def record_statistics(ctx: StageContext, qscores: DataFrame) -> None:
    """pass@1 / maj@k means and the majority-share distribution into this run's counts and metrics."""
    share = F.col("majority_share")
    aggs = [F.count(F.lit(1)).alias("questions"), F.count("pass_at_1").alias("with_reference"),
            F.avg("pass_at_1").alias("pass_at_1"), F.avg("maj_at_k").alias("maj_at_k"),
            F.avg(share).alias("majority_share_mean"),
            F.percentile_approx(share, [0.25, 0.5, 0.75], 1000).alias("q"),
            F.sum("equivalence_timeouts").alias("timeouts")]
    aggs += [F.sum(((share >= lo) & (share < hi)).cast("int")).alias(f"b{i}") for i, (lo, hi) in enumerate(SHARE_BUCKETS)]
    r = qscores.agg(*aggs).collect()[0]
    ctx.count("questions_scored", r["questions"])
    ctx.count("questions_with_reference", r["with_reference"])
    ctx.count("equivalence_timeouts", r["timeouts"] or 0)
    for i, (lo, hi) in enumerate(SHARE_BUCKETS):
        ctx.count(f"majority_share_{lo:.2f}_{min(hi, 1.0):.2f}", r[f"b{i}"] or 0)
    for k in ("pass_at_1", "maj_at_k", "majority_share_mean"):
        if r[k] is not None:
            ctx.metrics[k] = float(r[k])
    if r["q"]:
        for name, v in zip(("p25", "p50", "p75"), r["q"]):
            if v is not None:
                ctx.metrics[f"majority_share_{name}"] = float(v)


def _classes_version(ctx: StageContext) -> Optional[int]:
    """The ``sample_scores`` version both per-question tables were built from; None when they
    disagree (a run stopped between the two writes) or are missing."""
    got = set()
    for t in ("answer_classes", "question_scores"):
        if not ctx.store.exists(t):
            return None
        got.add(ctx.store.read(t).agg(F.max("source_version")).collect()[0][0])
    return got.pop() if len(got) == 1 else None


def count_statuses(ctx: StageContext, scores: DataFrame) -> None:
    """Per-value counts of every score status, in one pass over ``sample_scores``."""
    cols = ("answer_status", "self_score_status", "ref_status", "reward_status")
    tagged = scores.select(F.explode(F.array(*[F.concat(F.lit(c + "_"), F.coalesce(c, F.lit("null"))) for c in cols])).alias("k"))
    for r in tagged.groupBy("k").count().collect():
        ctx.count(r["k"], r["count"])


def run(ctx: StageContext) -> None:
    samples = ctx.store.read("samples")
    qs = ctx.store.read("questions").select("question_id", "question", "reference_answer")
    for name in ctx.cfg.self_sample.models:
        label = model_config(ctx.cfg, name).name
        mine = samples.where(F.col("model") == label).select(*KEY, "response", "status")
        pending = ctx.pending(mine, "sample_scores", KEY).join(qs, "question_id", "inner")
        n = ctx.process_in_chunks(pending, KEY, lambda part, m=name: score_chunk(ctx, part, m), "sample_scores", KEY,
                                  status_col=None)
        ctx.count("out", n)
        ctx.count(f"out_{label}", n)
    scores = ctx.store.read("sample_scores")
    version = ctx.store.version("sample_scores")
    ctx.count("in", samples.count())
    count_statuses(ctx, scores)
    if _classes_version(ctx) == version:
        ctx.count("skipped_classes_up_to_date", 1)
        qscores = ctx.store.read("question_scores")
    else:
        classes = build_answer_classes(ctx, scores, version).persist()
        ctx.store.overwrite("answer_classes", classes)
        qscores = build_question_scores(classes, scores).persist()
        ctx.store.overwrite("question_scores", qscores)
        classes.unpersist()
    record_statistics(ctx, qscores)


def main(argv: list[str] | None = None) -> int:
    from jobs.pipeline import stage_main

    return stage_main(NAME, argv)


if __name__ == "__main__":
    sys.exit(main())
