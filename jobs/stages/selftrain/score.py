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

from typing import Optional

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.common.llm_stage import generate_rows, model_config, structured
from jobs.common.runner import StageContext
from jobs.common.stage import Output, Stage

KEY = ["question_id", "model", "temperature", "sample_idx"]
QUESTION_KEY = ["question_id", "model"]
# generate() adds its own model and sample_idx columns: the sample's travel under these names.
GEN_KEY = ["question_id", "s_model", "temperature", "s_idx"]
SHARE_BUCKETS = [(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0001)]


def _for_generate(rows: DataFrame) -> DataFrame:
    return rows.withColumnRenamed("model", "s_model").withColumnRenamed("sample_idx", "s_idx")


def _from_generate(gen: DataFrame) -> DataFrame:
    return gen.drop("model", "sample_idx").withColumnRenamed("s_model", "model").withColumnRenamed("s_idx", "sample_idx")


ROUTE = "_route"
# What the judge's generation and the equivalence check add to a sample's row, with their types.
JUDGED = {"self_score": "double", "self_score_status": "string", "judge_model": "string", "_pt_ss": "long",
          "_ct_ss": "long", "ref_agree": "boolean", "ref_method": "string", "_pt_ref": "long", "_ct_ref": "long"}


def _judged_rows(ctx: StageContext, ok: DataFrame, long: DataFrame, judge_name: str) -> Optional[DataFrame]:
    """The self-score of every answered sample and the judge's verdict on the long references,
    from ONE generation (a route per kind): two generation branches in one Spark job run as
    two concurrent tasks, and the second one takes a second Python worker, which builds a
    second engine. Returns partial rows (KEY + ``JUDGED``), one per sample and kind."""
    from jobs.stages.answers.judge import PROMPTS, selfscore_sampling
    from udfs.selftrain import self_score_udf

    cfg, jcfg = ctx.cfg.score, ctx.cfg.judge
    fields = GEN_KEY + ["question", "response", "reference_answer"]
    routes, parts = {}, []
    if cfg.self_score:
        routes["self_score"] = (PROMPTS["self_score"], selfscore_sampling(ctx))
        parts.append(_for_generate(ok).select(*fields, F.lit("self_score").alias(ROUTE)))
    if cfg.reference:
        routes["reference"] = (PROMPTS["reference_agreement"],
                               structured(jcfg.sampling, "verdict", jcfg.structured_output))
        parts.append(_for_generate(long).select(*fields, F.lit("reference").alias(ROUTE)))
    if not parts:
        return None
    rows = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
    gen = _from_generate(generate_rows(ctx, rows, model_name=judge_name, key_cols=GEN_KEY + [ROUTE],
                                       route_col=ROUTE, routes=routes, parser="verdict" if cfg.reference else None))
    is_ss, is_ref = F.col(ROUTE) == "self_score", F.col(ROUTE) == "reference"
    s = self_score_udf(jcfg.self_score_floor)(F.col("first_token_logprobs"))
    failed = F.when(F.col("error").isNotNull(), "llm_error").when(F.col("finish_reason") == "too_long", "too_long")
    cols = {"self_score": F.when(is_ss, s.score), "self_score_status": F.when(is_ss, failed.otherwise(s.status)),
            "judge_model": F.when(is_ss, F.lit(model_config(ctx.cfg, judge_name).name)),
            "_pt_ss": F.when(is_ss, F.col("prompt_tokens")), "_ct_ss": F.when(is_ss, F.col("completion_tokens"))}
    if cfg.reference:
        judged = F.when(F.col("error").isNotNull(), None).when(F.col("p.verdict") == "Yes", True) \
            .when(F.col("p.verdict") == "No", False)
        method = F.when(F.col("error").isNotNull(), "judge:llm_error").when(F.col("p.status") == "ok", "judge") \
            .otherwise(F.concat(F.lit("judge:"), F.col("p.status")))
        cols.update({"ref_agree": F.when(is_ref, judged), "ref_method": F.when(is_ref, method),
                     "_pt_ref": F.when(is_ref, F.col("prompt_tokens")),
                     "_ct_ref": F.when(is_ref, F.col("completion_tokens"))})
    return gen.select(*KEY, *[cols.get(c, F.lit(None)).cast(t).alias(c) for c, t in JUDGED.items()])


def judged(ctx: StageContext, ok: DataFrame, judge_name: str) -> Optional[DataFrame]:
    """KEY + ``JUDGED``, one row per answered sample that was judged or checked: the LLM's part
    (``_judged_rows``) and answer equivalence for references of at most
    ``short_reference_words`` words, merged per sample."""
    from udfs.selftrain import equivalence_udf

    cfg = ctx.cfg.score
    with_ref = ok.where(F.col("reference_answer").isNotNull() & (F.length(F.trim("reference_answer")) > 0))
    words = F.size(F.split(F.trim(F.col("reference_answer")), r"\s+"))
    parts = []
    llm_rows = _judged_rows(ctx, ok, with_ref.where(words > cfg.short_reference_words), judge_name)
    if llm_rows is not None:
        parts.append(llm_rows)
    if cfg.reference:
        eq = equivalence_udf(cfg.equivalence_timeout_s)(F.col("answer"), F.col("reference_answer"))
        short = {"ref_agree": F.col("e.agree"), "ref_method": F.concat(F.lit("equivalence:"), F.col("e.method")),
                 "_pt_ref": F.lit(0), "_ct_ref": F.lit(0)}
        parts.append(with_ref.where(words <= cfg.short_reference_words).withColumn("e", eq).select(
            *KEY, *[short.get(c, F.lit(None)).cast(t).alias(c) for c, t in JUDGED.items()]))
    if not parts:
        return None
    rows = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
    return rows.groupBy(*KEY).agg(*[F.first(c, ignorenulls=True).alias(c) for c in JUDGED])


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
    out = map_in_pandas(llm.model_input(with_msgs, model, GEN_KEY), fn, schema,
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
    checked = judged(ctx, ok, judge_name)
    if checked is not None:
        out = out.join(checked, KEY, "left")
    else:
        out = out.select("*", *[F.lit(None).cast(t).alias(c) for c, t in JUDGED.items()])
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


STAGE = Stage(
    "score", "selftrain", "incremental", run,
    "scores every sample: final-answer agreement, self-score, reference match, optional reward",
    sections=("score",), inputs=("samples", "questions"),
    outputs=(Output("sample_scores", tuple(KEY)), Output("answer_classes", tuple(KEY)),
             Output("question_scores", tuple(QUESTION_KEY))),
    roles=lambda cfg: [m for m in (cfg.score.judge_model, cfg.score.reward_model) if m],
)
