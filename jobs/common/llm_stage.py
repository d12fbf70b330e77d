"""What every LLM stage shares: prompt -> generate -> parse -> one status per row.

A row's ``status`` is ``ok`` or exactly one reason: ``llm_error`` (the engine failed this
row), ``too_long`` (the prompt did not fit the context), or the parser's reason
(``no_json``, ``truncated``, ``missing_field``, ...). The raw output always stays.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.common.config import ModelConfig, PipelineConfig, SamplingConfig
from jobs.common.runner import StageContext
from udfs.echo import ECHO_THRESHOLD

GEN_META = ["model", "prompt_name", "prompt_hash", "prompt_tokens", "completion_tokens", "finish_reason", "error"]


def model_config(cfg: PipelineConfig, name: str) -> ModelConfig:
    return cfg.llm.models[name]


def generate_rows(
    ctx: StageContext,
    df: DataFrame,
    *,
    prompt: Optional[str] = None,
    model_name: str,
    sampling: Optional[SamplingConfig] = None,
    key_cols: Sequence[str],
    parser: Optional[str] = None,
    route_col: Optional[str] = None,
    routes: Optional[Mapping[str, tuple[str, SamplingConfig]]] = None,
    echo: bool = False,
    overrides_col: Optional[str] = None,
) -> DataFrame:
    """Render ``prompt`` from ``df``'s columns and generate; returns keys + prompt_name/prompt_hash
    + sample_idx + generation columns, and with ``parser`` the ``p`` struct of ``parsed``.
    Rendering, generation and parsing run in one Python pass per task (``llm.generate``), and
    ``routes`` give rows of several kinds their own prompt and sampling in that one pass."""
    from jobs.common import llm

    return llm.generate(
        df,
        key_cols=list(key_cols),
        model=model_config(ctx.cfg, model_name),
        sampling=sampling,
        cache_dir=ctx.cfg.llm.cache_dir,
        storage_options=ctx.cfg.storage.storage_options,
        prompt=prompt,
        parser=parser,
        route_col=route_col,
        routes=routes,
        call_timeout_s=ctx.cfg.llm.call_timeout_s,
        echo=echo,
        overrides_col=overrides_col,
    )


def structured(sampling: SamplingConfig, parser: str, enabled: bool) -> SamplingConfig:
    """The sampling config with the parser's JSON schema attached, unless one is set or it is off."""
    from udfs.parsers import SCHEMAS

    if not enabled or sampling.json_schema is not None:
        return sampling
    return sampling.model_copy(update={"json_schema": SCHEMAS[parser]})


def row_status(parsed_status: Optional[Column] = None, echo: bool = False) -> Column:
    """``ok`` or the row's one reason. With ``echo`` (generations asked for with ``echo``), a
    row whose text only repeats the prompt's instructions is ``echoes_prompt`` (``udfs.echo``)."""
    base = (
        F.when(F.col("error").isNotNull(), F.lit("llm_error"))
        .when(F.col("finish_reason") == "too_long", F.lit("too_long"))
    )
    echoed = F.coalesce(F.col("prompt_overlap") >= ECHO_THRESHOLD, F.lit(False))
    if parsed_status is None:
        status = base.when(F.coalesce(F.length(F.trim(F.col("text"))), F.lit(0)) == 0, F.lit("empty"))
        if echo:
            status = status.when(echoed, F.lit("echoes_prompt"))
        return status.when(F.col("finish_reason") == "length", F.lit("truncated")).otherwise(F.lit("ok"))
    if echo:
        base = base.when((parsed_status == "ok") & echoed, F.lit("echoes_prompt"))
    return base.otherwise(parsed_status)


# The tables ``usable_questions`` reads: a stage that reads usable questions lists them among its inputs.
USABLE_INPUTS = ("questions", "dedup_questions_clusters", "contamination", "semdedup_questions_clusters")


def removed_question_ids(ctx: StageContext) -> Optional[DataFrame]:
    """question_ids removed as near-duplicates (MinHash, and SemDeDup when it ran) or as
    contaminated, when those stages ran."""
    parts = []
    if ctx.cfg.question_dedup.enabled and ctx.store.exists("dedup_questions_clusters"):
        parts.append(ctx.store.read("dedup_questions_clusters").where(~F.col("keep")).select(F.col("id").alias("question_id")))
    if ctx.cfg.decontaminate.enabled and ctx.store.exists("contamination"):
        parts.append(ctx.store.read("contamination").select(F.col("item_id").alias("question_id")))
    if ctx.cfg.semdedup.enabled and ctx.store.exists("semdedup_questions_clusters"):
        parts.append(ctx.store.read("semdedup_questions_clusters").where(~F.col("keep"))
                     .select(F.col("id").alias("question_id")))
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out.distinct()


def run_on_usable_questions(ctx: StageContext, work, cols: Sequence[str] = ("question_id", "question")) -> None:
    """The run of a stage whose rows are the usable questions: count them, then its passes
    (``work(ctx, questions)``) over one cached copy."""
    qs = usable_questions(ctx).select(*cols).persist()
    ctx.count("in", qs.count())
    ctx.run_work(work(ctx, qs))
    qs.unpersist()


def usable_questions(ctx: StageContext) -> DataFrame:
    """Questions that parsed, minus near-duplicates and contaminated ones."""
    qs = ctx.store.read("questions").where(F.col("status") == "ok")
    removed = removed_question_ids(ctx)
    return qs if removed is None else qs.join(removed, "question_id", "left_anti")
