"""Driver side of the LLM layer: render prompts into messages, run generation over Arrow batches."""
from __future__ import annotations

import contextlib
import functools
import logging
from typing import Mapping, Optional, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType

from jobs.common.config import ModelConfig, SamplingConfig
from jobs.common.gpu import map_in_pandas
from jobs.common.spark import is_local
from udfs.llm.engines import POOL_ENV, config_hash
from udfs.llm.generate import OUTPUT_FIELDS, PARSED_PREFIX, generate_batches
from udfs.llm.prompts import load_prompt

MESSAGES_TYPE = "array<struct<role:string,content:string>>"
log = logging.getLogger("nr")


class PromptFieldError(ValueError):
    pass


def _render_col(prompt_name: str, fields: list[str]) -> Column:
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(MESSAGES_TYPE)
    def render(*cols):
        import pandas as pd

        prompt = load_prompt(prompt_name)
        out = []
        for values in zip(*cols):
            out.append(prompt.render(dict(zip(fields, values))))
        return pd.Series(out)

    return render(*[F.col(f) for f in fields])


def _checked_prompt(df: DataFrame, prompt_name: str):
    """The named prompt; a template field missing from ``df`` is an error here, before any task."""
    prompt = load_prompt(prompt_name)
    missing = sorted(f for f in prompt.fields if f not in df.columns)
    if missing:
        raise PromptFieldError(
            f"prompt {prompt_name!r} needs column(s) {missing} that the input lacks; columns: {sorted(df.columns)}")
    return prompt


def with_prompt(df: DataFrame, prompt_name: str, out_col: str = "messages") -> DataFrame:
    """Add the rendered chat ``messages`` plus ``prompt_name`` and ``prompt_hash`` columns.

    A template field missing from ``df`` is an error here, before any task runs.
    """
    prompt = _checked_prompt(df, prompt_name)
    fields = sorted(prompt.fields)
    return (df.withColumn(out_col, _render_col(prompt_name, fields))
            .withColumn("prompt_name", F.lit(prompt.name)).withColumn("prompt_hash", F.lit(prompt.sha)))


def output_schema(df: DataFrame, key_cols: Sequence[str], passthrough: Sequence[str]) -> StructType:
    fields = [df.schema[c] for c in list(key_cols) + list(passthrough)]
    return StructType(fields + list(ddl_struct(OUTPUT_FIELDS).fields))


@functools.lru_cache(maxsize=64)
def ddl_struct(ddl: str) -> StructType:
    """A DDL column list as a StructType: ``StructType.fromDDL`` on Spark >= 4.0; Spark 3.5
    (EMR 7) parses it through the active context. Cached: every chunk of an LLM stage asks
    for the same few, and each parse is a round trip to the JVM (callers only read it)."""
    from_ddl = getattr(StructType, "fromDDL", None)
    if from_ddl is not None:
        return from_ddl(ddl)
    from pyspark.sql.types import _parse_datatype_string

    return _parse_datatype_string(ddl)


def local_threads(spark, engine: str, torch_threads: Optional[int]) -> Optional[int]:
    """Threads per Python worker for a model that runs inside the worker in local mode, else None.

    Spark starts its Python workers with ``OMP_NUM_THREADS`` set to the task's cores (1 in
    local mode), so a model left to that setting computes on one core of the machine (vLLM's
    CPU build then generated at 0.57x its own speed on 2 cores). Local mode runs
    cores / threads workers of ``threads`` threads each: all cores, no oversubscription.
    """
    if not is_local(spark) or engine not in ("auto", "vllm", "transformers", "sentence_transformers"):
        return None
    cores = spark.sparkContext.defaultParallelism
    return max(1, min(int(torch_threads or cores), cores))


def worker_partitions(spark, threads: Optional[int]) -> int:
    """Partitions for a model's tasks: cores / threads workers in local mode (``local_threads``),
    one per core otherwise."""
    cores = spark.sparkContext.defaultParallelism
    return max(1, cores // threads) if threads else max(1, cores)


def _partitions(df: DataFrame, model: ModelConfig) -> int:
    return worker_partitions(df.sparkSession, local_threads(df.sparkSession, model.engine, model.torch_threads))


def spread(df: DataFrame, partitions: int, key_cols: Sequence[str]) -> DataFrame:
    """``df`` over ``partitions`` model tasks, split by key hash; one task takes the rows as
    they are (a local model on all cores): no shuffle, which would add a stage to every chunk."""
    if partitions <= 1:
        return df.coalesce(1)
    return df.repartition(partitions, *[F.col(k) for k in key_cols])


def model_input(df: DataFrame, model: ModelConfig, key_cols: Sequence[str]) -> DataFrame:
    return spread(df, _partitions(df, model), key_cols)


def engine_config(model: ModelConfig, cache_dir: Optional[str] = None, spark=None) -> dict:
    """The plain dict an executor builds its engine from (``udfs.llm.engines.get_engine``);
    with ``spark``, in local mode, the worker's thread count is filled in (``local_threads``)."""
    model_cfg = model.model_dump(mode="json")
    model_cfg["label"] = model.name
    if cache_dir:
        model_cfg["cache_dir"] = cache_dir
    threads = local_threads(spark, model.engine, model.torch_threads) if spark is not None else None
    if threads:
        model_cfg["torch_threads"] = threads
    return model_cfg


def generate(
    df: DataFrame,
    *,
    key_cols: Sequence[str],
    model: ModelConfig,
    sampling: Optional[SamplingConfig] = None,
    messages_col: str = "messages",
    overrides_col: Optional[str] = None,
    cache_dir: Optional[str] = None,
    storage_options: Optional[dict] = None,
    prompt: Optional[str] = None,
    parser: Optional[str] = None,
    route_col: Optional[str] = None,
    routes: Optional[Mapping[str, tuple[str, SamplingConfig]]] = None,
    call_timeout_s: Optional[float] = None,
    echo: bool = False,
) -> DataFrame:
    """keys (+ prompt_name/prompt_hash when present) + sample_idx, model, text, token counts,
    finish_reason, first_token_logprobs, error: one row per (key, sample).

    With ``prompt`` (a prompt name) the conversations are rendered in the generation task from
    ``df``'s columns (``with_prompt``'s result without its ``messages`` column crossing into
    Python and back); with ``parser`` a ``p`` struct of the parser's fields is added, parsed in
    the same task (``udfs.parse_udf.parse_frame``). Either way the chunk's rows make one Python pass.

    With ``routes`` (``{route: (prompt name, sampling)}``) instead of ``prompt`` and ``sampling``,
    each row is rendered and sampled by the route named in its ``route_col`` (a key column):
    rows of several kinds go through one generation task, one engine and one ``chat`` call,
    and ``prompt_name``/``prompt_hash`` are each row's own.
    """
    if model.engine == "openai" and not model.base_url:
        # Checked here so the run stops before any task, not in every Python worker.
        raise ValueError(f"model {model.name!r}: the openai engine needs base_url (e.g. http://host:8000/v1)")
    if routes:
        if prompt or sampling is not None or route_col not in key_cols:
            raise ValueError("routes replace prompt and sampling, and need route_col among key_cols")
        templates = {k: _checked_prompt(df, name) for k, (name, _) in routes.items()}
        route_cfg = {k: {"prompt": name, "sampling": s.model_dump(mode="json")} for k, (name, s) in routes.items()}
        template = None
    else:
        if sampling is None:
            raise ValueError("generate needs sampling (or routes)")
        template = _checked_prompt(df, prompt) if prompt else None
        templates = {"": template} if template else {}
        route_cfg = None
    # rendered in the task from the templates' fields, else the rows carry their messages
    rendered = bool(templates)
    passthrough = [c for c in ("prompt_name", "prompt_hash") if c in df.columns and not rendered]
    inputs = sorted({f for t in templates.values() for f in t.fields}) if rendered else [messages_col]
    cols = list(dict.fromkeys(list(key_cols) + passthrough + inputs + ([overrides_col] if overrides_col else [])))
    model_cfg = engine_config(model, cache_dir, df.sparkSession)
    if storage_options:  # region/endpoint for a model staged from S3 (udfs.staging); never secrets
        model_cfg["storage_options"] = dict(storage_options)
    fn = functools.partial(
        generate_batches, model_cfg=model_cfg, sampling=sampling.model_dump(mode="json") if sampling else {},
        key_cols=list(key_cols), messages_col=messages_col, overrides_col=overrides_col, passthrough=passthrough,
        prompt=prompt, parser=parser, route_col=route_col, routes=route_cfg, call_timeout_s=call_timeout_s,
        echo=echo,
    )
    schema = output_schema(df, key_cols, passthrough)
    if parser:
        from udfs.parse_udf import PARSE_SPECS

        parsed_fields = ddl_struct(PARSE_SPECS[parser][1]).fields
        schema = StructType(list(schema.fields) + [StructField(PARSED_PREFIX + f.name, f.dataType) for f in parsed_fields])
    src = model_input(df.select(*cols), model, key_cols)
    with engine_worker_pool(df.sparkSession, config_hash(model_cfg)):
        out = map_in_pandas(src, fn, schema, model.gpus_per_task)
    gen_cols = [f.name for f in output_schema(df, key_cols, []).fields[len(key_cols):]]
    select = [F.col(k) for k in key_cols] + [F.col(c) for c in passthrough]
    if routes:
        def per_route(attr: str) -> Column:
            col = None
            for k, t in templates.items():
                col = (F if col is None else col).when(F.col(route_col) == k, F.lit(getattr(t, attr)))
            return col

        select += [per_route("name").alias("prompt_name"), per_route("sha").alias("prompt_hash")]
    elif template:
        select += [F.lit(template.name).alias("prompt_name"), F.lit(template.sha).alias("prompt_hash")]
    select += [F.col(c) for c in gen_cols]
    if parser:
        select.append(F.struct(*[F.col(PARSED_PREFIX + f.name).alias(f.name) for f in parsed_fields]).alias("p"))
    return out.select(*select)


@contextlib.contextmanager
def engine_worker_pool(spark, pool: str):
    """Give the Python UDFs created inside the block their own worker pool.

    A UDF captures ``SparkContext.environment`` when it is created, and Spark keeps one
    Python worker factory (one set of idle workers) per distinct environment. Generation UDFs
    of one model config therefore share workers among themselves only, across chunks and
    stages: the next task finds the worker that already built the engine (``reuse`` must stay
    on, Spark's default) instead of a worker that ran a parser and would build a second one.
    """
    # one lookup (``sparkContext.getConf()`` copies the whole SparkConf over py4j, every chunk)
    if (spark.conf.get("spark.python.worker.reuse", "true") or "true").lower() == "false":
        log.warning("spark.python.worker.reuse is false: every generation task starts a fresh Python worker "
                    "and loads the model again; set it to true")
    env = spark.sparkContext.environment
    before = env.get(POOL_ENV)
    env[POOL_ENV] = pool
    try:
        yield
    finally:
        if before is None:
            env.pop(POOL_ENV, None)
        else:
            env[POOL_ENV] = before
