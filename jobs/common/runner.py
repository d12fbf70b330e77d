"""The stage runner: resumable, idempotent stages that leave one ``runs`` row each (ARCHITECTURE.md §4).

A stage is a ``Stage`` spec (``jobs.common.stage``) whose ``run(ctx)`` reads its inputs through
``ctx.store``, skips keys already in its output, and records what it did in ``ctx.counts``
(``in``, ``out``, ``dropped_<reason>``, ``failed_<status>``, token totals). The runner adds the
bookkeeping: input and output Delta versions, config hashes, wall time, rows/s and tokens/s.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from pyspark.sql import Column, DataFrame, SparkSession

from jobs.common import attempts, chunks, logs, runs
from jobs.common.config import PipelineConfig
from jobs.common.runs import RUNS_SCHEMA
from jobs.common.spark import get_spark, is_local
from jobs.common.stage import Stage, Work
from jobs.common.storage import TableStore

log = logging.getLogger("nr")


@dataclass
class StageContext:
    spark: SparkSession
    cfg: PipelineConfig
    store: TableStore
    stage: str
    run_id: str
    pipeline_run_id: str
    spec: Optional[Stage] = None
    counts: Counter = field(default_factory=Counter)
    metrics: dict = field(default_factory=dict)
    input_versions: dict = field(default_factory=dict)  # the stage's inputs' Delta versions at its start
    _calls: Counter = field(default_factory=Counter)  # process_in_chunks calls per output, for staging slots

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

    def up_to_date(self) -> bool:
        """True when this stage's last successful run saw the same input versions and config
        sections, and its outputs are still at the versions it left. Whole-table stages (dedup,
        decontamination, dataset, ...) use it to make a re-run change nothing."""
        last = runs.latest(self.store, [self.stage]).get(self.stage, {}).get("last_ok")
        versions = {t: v for t in self.spec.inputs if (v := self.store.version(t)) is not None}
        if runs.out_of_date_reasons(self.spec, self.cfg, last, versions):
            return False
        now_out = {t: self.store.version(t) for t in self.spec.output_tables}
        if any(v is None for v in now_out.values()):
            return False
        return dict(last["output_versions"] or {}) == now_out

    def pending(self, df: DataFrame, output: str, keys: Sequence[str], where: Optional[Column] = None) -> DataFrame:
        """The pending rule every chunked stage shares: rows of ``df`` whose ``keys`` are not yet
        in ``output`` (among its rows matching ``where``, e.g. one model's); one anti-join."""
        if not self.store.exists(output):
            return df
        done = self.store.read(output)
        if where is not None:
            done = done.where(where)
        return df.join(done.select(*keys).distinct(), on=list(keys), how="left_anti")

    def run_work(self, works: Sequence[Work]) -> int:
        """Run each pass of a chunked stage (``Stage.work``), counting its committed rows as
        ``out`` (and ``out_<label>``); returns the total."""
        total = 0
        for w in works:
            n = self.process_in_chunks(w.pending, w.chunk_keys, w.fn, w.output, self.spec.key(w.output),
                                       status_col=w.status_col, sum_cols=w.sum_cols)
            self.count("out", n)
            if w.label:
                self.count(f"out_{w.label}", n)
            total += n
        return total

    def _default_in_flight(self) -> int:
        """2 chunk jobs at once (the next one's tasks fill the slots of the previous one's
        stragglers), except in local mode with an in-process model: there every concurrent
        generation task would load its own copy onto the same cores."""
        in_process = {"auto", "vllm", "transformers"}
        if is_local(self.spark) and any(m.engine in in_process for m in self.cfg.llm.models.values()):
            return 1
        return 2

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
        """Run ``fn`` over ``pending`` chunk by chunk, committing each chunk to ``output``; returns
        the rows committed by this call.

        ``pending`` is evaluated once, into a staging of Parquet files that the chunks read
        (``jobs.common.chunks`` has the design). Chunk jobs run ``pipeline.chunks_in_flight`` at
        a time while one thread commits their outputs in order, each commit an idempotent Delta
        transaction: a crash loses at most the chunks in flight, a re-run with the same inputs
        resumes from the same staging and commits nothing twice. ``chunk_keys`` must identify a
        row of ``pending`` (the input table's key). Counts (``failed_<status>``, ``sum_cols``)
        come from one aggregation of each chunk's written output.
        """
        chunk_rows = chunk_rows or self.cfg.pipeline.chunk_rows
        self._calls[output] += 1
        slot = f"{output}-{self._calls[output]}"
        plan = chunks.stage_pending(self, slot, pending, chunk_keys, output, output_keys, chunk_rows)
        if plan.total == 0:
            if not self.store.exists(output):
                # Nothing came in (e.g. a selection that kept no document): the output table
                # still exists, empty with its schema, so the stages after it read zero rows.
                # limit(0) is planned as an empty relation: no UDF runs, no model loads.
                self.store.append_new(output, fn(pending).limit(0), output_keys)
            log.info("[%s] nothing to do: every key is already in %s", self.stage, output)
            chunks.remove_path(self.spark, plan.slot_dir)
            return 0
        in_flight = self.cfg.pipeline.chunks_in_flight or self._default_in_flight()
        # with a progress bar on the console these lines (and each chunk's) go to the log file only
        log.info("[%s] %d pending rows in %d chunk(s) of <= %d rows, %d in flight", self.stage, plan.total,
                 len(plan.chunks), chunk_rows, in_flight, extra=logs.FILE_ONLY if self.show_progress else None)
        with _progress(self, plan.total, f"{self.stage} -> {output}") as advance:
            written = chunks.run_chunks(self, plan, fn, output, output_keys, status_col, sum_cols, in_flight, advance)
        # Only a finished call removes its staging: after a failure a re-run resumes from it.
        chunks.remove_path(self.spark, plan.slot_dir)
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


def run_stage(
    cfg: PipelineConfig,
    stage: Stage,
    spark: Optional[SparkSession] = None,
    pipeline_run_id: Optional[str] = None,
) -> dict:
    """Run one stage and record it in ``runs``. Returns the runs row as a dict."""
    spark = spark or get_spark(cfg.spark, checkpoint_dir=f"{cfg.storage.root}/_checkpoints")
    name = stage.name
    store = TableStore(spark, cfg.storage)
    outputs = stage.output_tables
    run_id = uuid.uuid4().hex[:16]
    ctx = StageContext(spark, cfg, store, name, run_id, pipeline_run_id or run_id, spec=stage)
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    input_versions = {t: v for t in stage.inputs if (v := store.version(t)) is not None}
    ctx.input_versions = dict(input_versions)
    stage_hash = stage.config_hash(cfg)
    status, error = "ok", None
    # a killed driver writes no runs row: a marker stands in until this run's row is written
    attempt = attempts.start(store, RUNS_SCHEMA, {
        "run_id": run_id, "pipeline_run_id": ctx.pipeline_run_id, "stage": name, "started_at": started.isoformat(),
        "config_hash": cfg.config_hash(), "input_versions": input_versions, "stage_config_hash": stage_hash})
    log.info("[%s] start (run %s)", name, run_id)
    try:
        if stage.kind == "llm" and cfg.llm.retry_llm_errors:
            for table in outputs:  # deleted rows are pending again: this run regenerates them
                if n := store.delete_where(table, "status = 'llm_error'"):
                    ctx.count("retried_llm_error", n)
        stage.run(ctx)
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
            "stage_config_hash": stage_hash,
            "input_versions": input_versions,
            "output_versions": {t: v for t in outputs if (v := _safe_version(store, t)) is not None},
            "counts": dict(ctx.counts),
            "metrics": _metrics(ctx, wall),
        }
        try:
            store.append("runs", spark.createDataFrame([row], RUNS_SCHEMA))
        except Exception:  # the stage's own error matters more than a failed bookkeeping write
            log.exception("[%s] could not write the runs row", name)
        else:
            attempts.finish(store, attempt)
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
