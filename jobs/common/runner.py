"""The stage runner: resumable, idempotent stages that leave one ``runs`` row each (DESIGN §4).

A stage is a module in ``jobs/`` with ``NAME``, ``INPUTS``, ``OUTPUTS`` and ``run(ctx)``.
``run`` reads its inputs through ``ctx.store``, skips keys already in its output, and
records what it did in ``ctx.counts`` (``in``, ``out``, ``dropped_<reason>``,
``failed_<status>``, token totals). The runner adds the bookkeeping: input and output
Delta versions, config hashes, wall time, rows/s and tokens/s.
"""
from __future__ import annotations

import datetime as dt
import importlib
import logging
import math
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.common.config import PipelineConfig
from jobs.common.spark import get_spark, is_local
from jobs.common.storage import TableStore

log = logging.getLogger("nr")

# Stage name -> module. Order is the pipeline's order.
STAGE_MODULES: dict[str, str] = {
    "bootstrap": "jobs.bootstrap",
    "ingest": "jobs.ingest",
    "doc_dedup": "jobs.dedup",
    "annotate": "jobs.annotate",
    "synthesize": "jobs.synthesize",
    "question_dedup": "jobs.dedup",
    "decontaminate": "jobs.decontaminate",
    "embed": "jobs.embed",
    "semdedup": "jobs.semdedup",
    "respond": "jobs.respond",
    "judge": "jobs.judge",
    "dataset": "jobs.dataset",
    "select_targeted": "jobs.select_targeted",
    "select_traces": "jobs.select_traces",
}

RUNS_SCHEMA = (
    "run_id string, pipeline_run_id string, stage string, status string, error string, "
    "started_at timestamp, finished_at timestamp, wall_seconds double, config_hash string, "
    "stage_config_hash string, input_versions map<string,bigint>, output_versions map<string,bigint>, "
    "counts map<string,bigint>, metrics map<string,double>"
)


class StageNotBuilt(RuntimeError):
    pass


@dataclass
class StageContext:
    spark: SparkSession
    cfg: PipelineConfig
    store: TableStore
    stage: str
    run_id: str
    pipeline_run_id: str
    counts: Counter = field(default_factory=Counter)
    metrics: dict = field(default_factory=dict)

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] += int(n)

    def count_by(self, df: DataFrame, col: str, prefix: str, skip: Sequence[str] = ("ok",)) -> dict:
        """Add ``prefix + value`` counts for every value of ``col`` in ``df`` except ``skip``."""
        got = {r[0]: r[1] for r in df.groupBy(col).count().collect()}
        for value, n in got.items():
            if value not in skip:
                self.count(f"{prefix}{value}", n)
        return got

    @property
    def show_progress(self) -> bool:
        return self.cfg.pipeline.progress and is_local(self.spark)

    def up_to_date(self, inputs: Sequence[str], outputs: Sequence[str]) -> bool:
        """True when this stage's last successful run saw the same input versions and stage
        config, and its outputs are still at the versions it left. Whole-table stages (dedup,
        decontamination, dataset) use it to make a re-run change nothing."""
        if not self.store.exists("runs"):
            return False
        last = (
            self.store.read("runs")
            .where((F.col("stage") == self.stage) & (F.col("status") == "ok"))
            .orderBy(F.col("finished_at").desc())
            .limit(1)
            .collect()
        )
        if not last:
            return False
        last = last[0]
        section = self.stage if self.stage in type(self.cfg).model_fields else None
        if section and last["stage_config_hash"] != self.cfg.config_hash(section):
            return False
        now_in = {t: v for t in inputs if (v := self.store.version(t)) is not None}
        now_out = {t: self.store.version(t) for t in outputs}
        if any(v is None for v in now_out.values()):
            return False
        return dict(last["input_versions"] or {}) == now_in and dict(last["output_versions"] or {}) == now_out

    def pending(self, df: DataFrame, output: str, keys: Sequence[str]) -> DataFrame:
        """Rows of ``df`` whose keys are not yet in ``output``: what a resumed stage still has to do."""
        done = self.store.keys_present(output, keys)
        return df if done is None else df.join(done, on=list(keys), how="left_anti")

    def process_in_chunks(
        self,
        pending: DataFrame,
        chunk_keys: Sequence[str],
        fn: Callable[[DataFrame], DataFrame],
        output: str,
        output_keys: Sequence[str],
        status_col: Optional[str] = "status",
        sum_cols: Sequence[str] = ("prompt_tokens", "completion_tokens"),
        chunk_rows: Optional[int] = None,
    ) -> int:
        """Run ``fn`` over ``pending`` one chunk at a time, committing each chunk to ``output``.

        Chunks are hash buckets of the key, so no driver-side key list is needed and a
        crash loses at most the chunk in flight; a re-run recomputes ``pending`` and goes on.
        Each chunk's output is persisted so the model runs once, for the write and the counts.
        """
        chunk_rows = chunk_rows or self.cfg.pipeline.chunk_rows
        total = pending.count()
        if total == 0:
            if not self.store.exists(output):
                # Nothing came in (e.g. a selection that kept no document): the output table
                # still exists, empty with its schema, so the stages after it read zero rows.
                # limit(0) is planned as an empty relation: no UDF runs, no model loads.
                self.store.append_new(output, fn(pending).limit(0), output_keys)
            log.info("[%s] nothing to do: every key is already in %s", self.stage, output)
            return 0
        n_chunks = max(1, math.ceil(total / chunk_rows))
        bucket = F.pmod(F.xxhash64(*[F.col(k) for k in chunk_keys]), F.lit(n_chunks))
        written = 0
        with _progress(self, total, f"{self.stage} -> {output}") as advance:
            for i in range(n_chunks):
                part = pending.where(bucket == i)
                out = fn(part).persist()
                try:
                    n_in = part.count() if n_chunks > 1 else total
                    written += self.store.append_new(output, out, output_keys)
                    if status_col and status_col in out.columns:
                        self.count_by(out, status_col, "failed_")
                    present = [c for c in sum_cols if c in out.columns]
                    if present:
                        row = out.agg(*[F.sum(c).alias(c) for c in present]).collect()[0]
                        for c in present:
                            self.count(c, row[c] or 0)
                finally:
                    out.unpersist()
                log.info("[%s] chunk %d/%d committed (%d rows in)", self.stage, i + 1, n_chunks, n_in)
                advance(n_in)
        return written


class _progress:
    """rich progress bar in local runs; log lines elsewhere."""

    def __init__(self, ctx: StageContext, total: int, desc: str):
        self.ctx, self.total, self.desc = ctx, total, desc
        self._bar = None

    def __enter__(self):
        if self.ctx.show_progress:
            try:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

                self._bar = Progress(
                    "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
                )
                self._bar.start()
                self._task = self._bar.add_task(self.desc, total=self.total)
            except Exception:  # a terminal that rich cannot drive must not stop the job
                self._bar = None
        return self.advance

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()
        return False


def load_stage(name: str):
    if name not in STAGE_MODULES:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGE_MODULES)}")
    try:
        return importlib.import_module(STAGE_MODULES[name])
    except ModuleNotFoundError as e:
        if e.name == STAGE_MODULES[name]:
            raise StageNotBuilt(name) from None
        raise


def stage_io(module, name: str) -> tuple[list[str], list[str]]:
    io = getattr(module, "STAGE_IO", None)
    if io and name in io:
        return list(io[name][0]), list(io[name][1])
    return list(getattr(module, "INPUTS", [])), list(getattr(module, "OUTPUTS", []))


def run_stage(
    cfg: PipelineConfig,
    name: str,
    spark: Optional[SparkSession] = None,
    pipeline_run_id: Optional[str] = None,
) -> dict:
    """Run one stage and record it in ``runs``. Returns the runs row as a dict."""
    spark = spark or get_spark(cfg.spark, checkpoint_dir=f"{cfg.storage.root}/_checkpoints")
    module = load_stage(name)
    store = TableStore(spark, cfg.storage)
    inputs, outputs = stage_io(module, name)
    run_id = uuid.uuid4().hex[:16]
    ctx = StageContext(spark, cfg, store, name, run_id, pipeline_run_id or run_id)
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    input_versions = {t: store.version(t) for t in inputs}
    status, error = "ok", None
    log.info("[%s] start (run %s)", name, run_id)
    try:
        stage_fn = getattr(module, "run_" + name, None) or module.run
        stage_fn(ctx)
    except BaseException as e:
        status, error = "failed", f"{type(e).__name__}: {e}"
        log.error("[%s] failed: %s\n%s", name, error, traceback.format_exc())
        raise
    finally:
        wall = time.monotonic() - t0
        row = {
            "run_id": run_id,
            "pipeline_run_id": ctx.pipeline_run_id,
            "stage": name,
            "status": status,
            "error": error,
            "started_at": started,
            "finished_at": dt.datetime.now(dt.timezone.utc),
            "wall_seconds": wall,
            "config_hash": cfg.config_hash(),
            "stage_config_hash": cfg.config_hash(name) if name in type(cfg).model_fields else None,
            "input_versions": {k: v for k, v in input_versions.items() if v is not None},
            "output_versions": {t: v for t in outputs if (v := _safe_version(store, t)) is not None},
            "counts": dict(ctx.counts),
            "metrics": _metrics(ctx, wall),
        }
        try:
            store.append("runs", spark.createDataFrame([row], RUNS_SCHEMA))
        except Exception:  # the stage's own error matters more than a failed bookkeeping write
            log.exception("[%s] could not write the runs row", name)
        log.info("[%s] %s in %.1fs: %s", name, status, wall, _fmt_counts(ctx.counts))
    return row


def _safe_version(store: TableStore, table: str) -> Optional[int]:
    try:
        return store.version(table)
    except Exception:
        return None


def _metrics(ctx: StageContext, wall: float) -> dict:
    m = {k: float(v) for k, v in ctx.metrics.items()}
    if wall > 0:
        if ctx.counts.get("in"):
            m["rows_per_s"] = ctx.counts["in"] / wall
        tokens = ctx.counts.get("completion_tokens", 0)
        if tokens:
            m["completion_tokens_per_s"] = tokens / wall
    return m


def _fmt_counts(counts: Counter) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no counts"
