"""embed: one L2-normalized float32 vector per usable question and encoder model.

questions -> question_embeddings keyed by (question_id, model), with the vector's dimension
and a status (``ok``, ``empty_text``, ``zero_vector``, ``embed_error``). Chunked and resumable
like the LLM stages; the encoder (sentence-transformers' all-MiniLM-L6-v2 from the PyPI wheel
locally, vLLM's pooling runner on GPU clusters) is built once per Python worker.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from jobs.common.config import EmbedConfig
from jobs.common.gpu import map_in_pandas
from jobs.common.llm import ddl_struct, local_threads, spread, worker_partitions
from jobs.common.llm_stage import USABLE_INPUTS, run_on_usable_questions, usable_questions
from jobs.common.runner import StageContext
from udfs.embed import EMBED_FIELDS, embed_batches
from jobs.common.stage import Output, Stage, Work

KEY = ["question_id", "model"]
TABLE = "question_embeddings"


def encoder_dict(cfg: EmbedConfig) -> dict:
    d = cfg.model_dump(mode="json")
    d["label"] = cfg.name
    return d


def embed_texts(df: DataFrame, cfg: EmbedConfig, *, key_cols: Sequence[str], text_col: str) -> DataFrame:
    """keys + model, dim, embedding (array<float>, unit length), status, error."""
    schema = StructType([df.schema[k] for k in key_cols] + list(ddl_struct(EMBED_FIELDS).fields))
    # Local mode: one encoder per Python worker, each on `threads` threads (workers x threads = cores).
    enc, threads = encoder_dict(cfg), local_threads(df.sparkSession, cfg.engine, cfg.torch_threads)
    if threads:
        enc["torch_threads"] = threads
    fn = functools.partial(embed_batches, cfg=enc, text_col=text_col, key_cols=list(key_cols))
    parts = worker_partitions(df.sparkSession, threads)
    src = spread(df.select(*key_cols, text_col), parts, key_cols)
    return map_in_pandas(src, fn, schema, cfg.gpus_per_task)


def ok_embeddings(ctx: StageContext) -> DataFrame:
    """(question_id, embedding) of the configured model's usable vectors; the one read later stages share."""
    emb = ctx.store.read(TABLE).where((F.col("model") == ctx.cfg.embed.name) & (F.col("status") == "ok"))
    return emb.select("question_id", "embedding")


def work(ctx: StageContext, qs: Optional[DataFrame] = None) -> list[Work]:
    """The usable questions without a vector from the configured encoder."""
    cfg = ctx.cfg.embed
    qs = usable_questions(ctx).select("question_id", "question") if qs is None else qs
    pending = ctx.pending(qs, TABLE, ["question_id"], where=F.col("model") == cfg.name)
    return [Work(pending, ("question_id",),
                 lambda part: embed_texts(part, cfg, key_cols=["question_id"], text_col="question"),
                 TABLE, sum_cols=())]


def run(ctx: StageContext) -> None:
    run_on_usable_questions(ctx, work)


STAGE = Stage(
    "embed", "questions", "incremental", run, "embeds every usable question (all-MiniLM-L6-v2 by default)",
    sections=("embed",), inputs=USABLE_INPUTS, required=("questions",),
    outputs=(Output(TABLE, tuple(KEY)),), work=work, pending_unit="questions to embed",
)
