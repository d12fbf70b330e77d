"""Chunked LLM stages at scale: one pending scan per stage run, chunks that are not barriers.

Design (the choice between a staged pending table with pipelined ordered commits, and
Structured Streaming ``availableNow`` with ``foreachBatch``; we take the first):

1. **Staging.** The pending rows (the stage's input minus the keys already in its output) are
   computed once and written as Parquet under ``<root>/_staging/<stage>/<slot>/<fingerprint>``,
   with ``maxRecordsPerFile = chunk_rows``. A chunk is a run of those files (sorted by name,
   packed up to ``chunk_rows`` rows), so a chunk reads only its own files: no re-scan of the
   input, no anti-join per chunk. The fingerprint hashes the stage's input Delta versions, the
   stage config and the call's keys: a resumed run with the same inputs reuses the staging
   (Spark's ``_SUCCESS`` marks it complete); anything else rebuilds it. The staging is removed
   when the call finishes.
2. **Pipelined, ordered, idempotent commits.** ``chunks_in_flight`` chunk jobs run at once
   (each writes its output files, uncommitted, and takes its counts from one aggregation of
   those files); a single committer thread adds them to the output table in chunk order, each
   commit carrying Delta's application transaction (``app_id`` = the staging, ``txnVersion`` =
   the chunk index). The next chunk's generation therefore never waits for a commit, and with
   more than one chunk in flight the tasks of chunk i+1 fill the slots that chunk i's
   stragglers leave idle. Because commits are in order, "every chunk <= the app's last
   txnVersion is in the table" holds at every moment: a resumed run skips exactly those chunks,
   a crash loses at most the chunks in flight, and a re-run commits nothing twice (a commit
   whose transaction is already in the log is dropped). Spark task retries stay the fault
   unit inside a chunk job.

Why not ``availableNow`` streaming: it gives the same exactly-once commit (the same
``txnAppId``/``txnVersion``), but each micro-batch is still a barrier (``foreachBatch`` runs
batch n+1 only after batch n's function returns, commit included), its file source re-lists
and tracks every staged file in its own checkpoint log, and it needs a checkpoint folder
beside the table; the staged files plus the table's own transaction ids carry the same state.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.common import logs
from jobs.common.storage import delta_uri, spark_uri
from udfs.keys import stable_hash
from udfs.llm.watchdog import NR_CHUNK_PROPERTY, NR_STAGE_PROPERTY

if TYPE_CHECKING:  # pragma: no cover
    from jobs.common.runner import StageContext

log = logging.getLogger("nr")

STAGING_DIR = "_staging"
# Written last, named with the build's id: a staging without it is incomplete and is rebuilt.
# The id goes into the Delta application id, so a rebuilt staging (new rows, new chunking)
# never inherits the transaction versions of an earlier one.
COMPLETE_MARKER = "_nr_complete_"


@dataclass(frozen=True)
class Chunk:
    index: int
    files: tuple
    rows: int


@dataclass
class StagedPending:
    """The pending rows of one ``process_in_chunks`` call, staged as Parquet files."""

    location: str  # Spark URI of the staging folder
    slot_dir: str  # its parent: one staging per (stage, call) slot; removed when the call finishes
    app_id: str  # Delta application id of this staging's commits
    chunks: list
    schema: object  # the pending rows' StructType

    @property
    def total(self) -> int:
        return sum(c.rows for c in self.chunks)


def _spark_path(ctx: "StageContext", rel: str) -> str:
    root = ctx.cfg.storage.root.rstrip("/")
    if root.startswith("dbfs:/"):
        return f"{root}/{rel}"
    return spark_uri(delta_uri(root).rstrip("/") + "/" + rel, ctx.cfg.storage.spark_s3_scheme)


def _fs(spark, path: str):
    jvm = spark._jvm
    p = jvm.org.apache.hadoop.fs.Path(path)
    return p.getFileSystem(spark._jsc.hadoopConfiguration()), p


def path_exists(spark, path: str) -> bool:
    fs, p = _fs(spark, path)
    return bool(fs.exists(p))


def remove_path(spark, path: str) -> None:
    fs, p = _fs(spark, path)
    if fs.exists(p):
        fs.delete(p, True)


def _completed_build(spark, location: str) -> Optional[str]:
    """The build id of a complete staging at ``location`` (its marker file), else None."""
    fs, _ = _fs(spark, location)
    found = fs.globStatus(spark._jvm.org.apache.hadoop.fs.Path(f"{location}/{COMPLETE_MARKER}*"))
    names = sorted(str(st.getPath().getName()) for st in (found or []))
    return names[0][len(COMPLETE_MARKER):] if names else None


def _mark_complete(spark, location: str, build: str) -> None:
    fs, p = _fs(spark, f"{location}/{COMPLETE_MARKER}{build}")
    fs.create(p, True).close()


def fingerprint(ctx: "StageContext", slot: str, pending: DataFrame, chunk_keys, output: str, output_keys,
                chunk_rows: int) -> str:
    """What a staging was built for: the same fingerprint on a re-run means its chunks still hold
    exactly the pending rows (the stage's config sections and ``llm`` are part of it)."""
    parts = {
        "stage": ctx.stage, "slot": slot, "output": output, "chunk_keys": list(chunk_keys),
        "output_keys": list(output_keys), "chunk_rows": chunk_rows,
        "inputs": dict(sorted((ctx.input_versions or {}).items())),
        "stage_config": ctx.spec.config_hash(ctx.cfg) if ctx.spec is not None else None,
        "llm": ctx.cfg.config_hash("llm"),
        "schema": pending.schema.json(),
        # Rows deleted from the output at this run's start (llm.retry_llm_errors) are pending
        # again: a staging built before the delete does not hold them.
        "retried": ctx.counts.get("retried_llm_error", 0),
    }
    return stable_hash(parts)


def pack_files(file_rows: Sequence[tuple[str, int]], chunk_rows: int) -> list[Chunk]:
    """Consecutive files (by name) packed into chunks of at most ``chunk_rows`` rows (a file
    holds at most ``chunk_rows``, so each chunk has at least one file); empty files are dropped.

    >>> [(c.index, c.files, c.rows) for c in pack_files([("b", 3), ("a", 4), ("c", 5), ("d", 0)], 8)]
    [(0, ('a', 'b'), 7), (1, ('c',), 5)]
    """
    chunks: list[Chunk] = []
    files: list[str] = []
    rows = 0
    for name, n in sorted(file_rows):
        if n <= 0:
            continue
        if files and rows + n > chunk_rows:
            chunks.append(Chunk(len(chunks), tuple(files), rows))
            files, rows = [], 0
        files.append(name)
        rows += n
    if files:
        chunks.append(Chunk(len(chunks), tuple(files), rows))
    return chunks


def stage_pending(ctx: "StageContext", slot: str, pending: DataFrame, chunk_keys, output: str, output_keys,
                  chunk_rows: int) -> StagedPending:
    """Stage ``pending`` once (or reuse a complete staging with the same fingerprint)."""
    spark = ctx.spark
    fp = fingerprint(ctx, slot, pending, chunk_keys, output, output_keys, chunk_rows)
    slot_dir = _spark_path(ctx, f"{STAGING_DIR}/{ctx.stage}/{slot}")
    location = f"{slot_dir}/{fp}"
    build = _completed_build(spark, location) if path_exists(spark, location) else None
    if build is not None:
        log.info("[%s] resuming from the staged pending rows in %s", ctx.stage, location)
    else:
        # A staging of this slot under another fingerprint was built from other inputs or
        # another config, and one without its marker is incomplete: both go.
        remove_path(spark, slot_dir)
        build = uuid.uuid4().hex[:12]
        (pending.write.mode("overwrite").option("maxRecordsPerFile", int(chunk_rows))
         .parquet(location))
        _mark_complete(spark, location, build)
    # The schema is given, not inferred: an empty pending set leaves no Parquet file to infer from.
    staged = spark.read.schema(pending.schema).parquet(location)
    # Row counts per file: Parquet footers only (no column is read), one small job.
    file_rows = [(r[0], int(r[1])) for r in
                 staged.select(F.input_file_name().alias("f")).groupBy("f").count().collect()]
    return StagedPending(location, slot_dir, f"nr/{ctx.stage}/{slot}/{fp}/{build}", pack_files(file_rows, chunk_rows),
                         staged.schema)


@dataclass
class _Done:
    chunk: Chunk
    staged: object
    rows: int
    by_status: dict
    sums: dict
    seconds: dict  # plan, write+counts: where a chunk's driver time goes (logged with its commit)


def run_chunks(ctx: "StageContext", plan: StagedPending, fn: Callable[[DataFrame], DataFrame], output: str,
               output_keys: Sequence[str], status_col: Optional[str], sum_cols: Sequence[str],
               in_flight: int, advance: Callable[[int], None]) -> int:
    """Run the chunks of ``plan`` not yet committed; returns the rows committed by this call."""
    store, spark = ctx.store, ctx.spark
    done_v = store.txn_version(output, plan.app_id)
    todo = [c for c in plan.chunks if done_v is None or c.index > done_v]
    if len(todo) < len(plan.chunks):
        skipped = plan.chunks[: len(plan.chunks) - len(todo)]
        log.info("[%s] %d chunk(s) of %s already committed (txnVersion %s): skipped", ctx.stage, len(skipped),
                 output, done_v)
        advance(sum(c.rows for c in skipped))
    n_chunks = len(plan.chunks)
    written = 0
    lock = threading.Lock()
    failed = threading.Event()

    def compute(chunk: Chunk) -> _Done:
        if failed.is_set():
            raise RuntimeError("an earlier chunk failed")
        t0 = time.perf_counter()
        # Thread-local: the chunk's tasks read them to name their stage and chunk in errors.
        spark.sparkContext.setLocalProperty(NR_STAGE_PROPERTY, ctx.stage)
        spark.sparkContext.setLocalProperty(NR_CHUNK_PROPERTY, f"{chunk.index + 1}/{n_chunks}")
        part = spark.read.schema(plan.schema).parquet(*chunk.files)
        # Building the plan pickles the stage's UDFs (cloudpickle walks sys.modules), which races
        # with another chunk thread's imports ("dictionary changed size during iteration"): plans
        # are built one at a time; the jobs that run them still overlap.
        with _PLAN_LOCK:
            out = fn(part)
        t1 = time.perf_counter()
        staged, rows, by_status, sums = _stage_chunk(store, output, out, output_keys, status_col, sum_cols)
        t2 = time.perf_counter()
        return _Done(chunk, staged, rows, by_status, sums, {"plan": t1 - t0, "write+counts": t2 - t1})

    def commit(d: _Done) -> None:
        nonlocal written
        if failed.is_set():  # an earlier commit failed: committing later chunks would skip it on resume
            store.discard_staged(output, d.staged)
            return
        t0 = time.perf_counter()
        try:
            committed = store.commit_staged(output, d.staged, plan.app_id, d.chunk.index)
        except BaseException:
            failed.set()
            raise
        with lock:
            if committed:
                written += d.rows
                for value, n in d.by_status.items():
                    if value != "ok":
                        ctx.count(f"failed_{value}", n)
                for c, v in d.sums.items():
                    ctx.count(c, v)
        log.info("[%s] chunk %d/%d committed to %s (%d rows in, %d out; %s)", ctx.stage, d.chunk.index + 1, n_chunks,
                 output, d.chunk.rows, d.rows if committed else 0,
                 ", ".join(f"{k} {v:.2f}s" for k, v in {**d.seconds, "commit": time.perf_counter() - t0}.items()),
                 extra=logs.FILE_ONLY if ctx.show_progress else None)
        advance(d.chunk.rows)

    computes: deque[Future] = deque()
    commits: list[Future] = []
    error: Optional[BaseException] = None
    with ThreadPoolExecutor(max(1, in_flight), thread_name_prefix=f"nr-{ctx.stage}-chunk") as workers, \
            ThreadPoolExecutor(1, thread_name_prefix=f"nr-{ctx.stage}-commit") as committer:
        try:
            for chunk in todo:
                computes.append(workers.submit(compute, chunk))
                while len(computes) >= max(1, in_flight):
                    commits.append(committer.submit(commit, computes.popleft().result()))
                    _raise_failed_commit(commits)
            while computes:
                commits.append(committer.submit(commit, computes.popleft().result()))
        except BaseException as e:  # stop: chunks computed before the failure still commit, in order
            error = e
            failed_compute = True
        else:
            failed_compute = False
        if failed_compute:
            for f in computes:  # computed after the failing chunk: never committed
                try:
                    d = f.result()
                except BaseException:
                    continue
                store.discard_staged(output, d.staged)
        commit_error = None
        for f in commits:
            try:
                f.result()
            except BaseException as e:
                commit_error = commit_error or e
    if commit_error is not None or error is not None:
        raise commit_error or error
    return written


_PLAN_LOCK = threading.Lock()


def _raise_failed_commit(commits: list) -> None:
    for f in commits:
        if f.done() and f.exception() is not None:
            raise f.exception()


def _stage_chunk(store, output: str, out: DataFrame, output_keys: Sequence[str], status_col: Optional[str],
                 sum_cols: Sequence[str]):
    """Write one chunk's output uncommitted, a key written once; returns (staged, rows, rows per
    status, column sums).

    Chunks hold disjoint input rows, so only ``fn`` repeating a key within a chunk makes a
    duplicate, which the stages do not. Where the backend reads staged files on the driver
    (the bridge), the chunk is written as it comes and its counts and a key check come from
    one read of a few columns (no second Spark job, no shuffle); a duplicated key, the rare
    case, rewrites the staged files de-duplicated (without running ``fn`` again). Elsewhere
    the write de-duplicates and one Spark aggregation of the written files gives the counts.
    """
    keys = list(output_keys)
    cols = list(dict.fromkeys(keys + [c for c in [status_col, *sum_cols] if c and c in out.columns]))
    if not store.reads_staged:
        staged = store.stage_append(output, out.dropDuplicates(keys))
        try:
            # Schema given: a chunk whose output is empty may leave no file to infer it from.
            written = out.sparkSession.read.schema(out.schema).parquet(store.staged_location(output, staged))
            return (staged, *_chunk_counts(written, status_col, sum_cols))
        except BaseException:
            store.discard_staged(output, staged)
            raise
    staged = store.stage_append(output, out)
    try:
        table = store.read_staged(output, staged, cols)
        if table.num_rows and table.group_by(keys).aggregate([([], "count_all")]).num_rows < table.num_rows:
            first = staged
            written = out.sparkSession.read.schema(out.schema).parquet(store.staged_location(output, first))
            staged = store.stage_append(output, written.dropDuplicates(keys))
            store.discard_staged(output, first)
            table = store.read_staged(output, staged, cols)
        return (staged, *_arrow_counts(table, status_col, sum_cols))
    except BaseException:
        store.discard_staged(output, staged)
        raise


def _arrow_counts(table, status_col: Optional[str], sum_cols: Sequence[str]) -> tuple[int, dict, dict]:
    """``_chunk_counts`` over an Arrow table read on the driver."""
    import pyarrow.compute as pc

    sums = {c: int(pc.sum(table[c]).as_py() or 0) for c in sum_cols if c in table.column_names}
    by_status: dict = {}
    if status_col and status_col in table.column_names:
        for r in table.group_by([status_col]).aggregate([([], "count_all")]).to_pylist():
            by_status[r[status_col]] = r["count_all"]
    return table.num_rows, by_status, sums


def _chunk_counts(out: DataFrame, status_col: Optional[str], sum_cols: Sequence[str]) -> tuple[int, dict, dict]:
    """Rows, rows per status and column sums of one chunk's output: one aggregation."""
    present = [c for c in sum_cols if c in out.columns]
    sums = [F.sum(F.col(c).cast("long")).alias(c) for c in present]
    has_status = bool(status_col and status_col in out.columns)
    grouped = out.groupBy(F.col(status_col).alias("_s")) if has_status else out.groupBy(F.lit(None).alias("_s"))
    rows, by_status, totals = 0, {}, {c: 0 for c in present}
    for r in grouped.agg(F.count(F.lit(1)).alias("_n"), *sums).collect():
        rows += r["_n"]
        if has_status:
            by_status[r["_s"]] = by_status.get(r["_s"], 0) + r["_n"]
        for c in present:
            totals[c] += r[c] or 0
    return rows, by_status, totals
