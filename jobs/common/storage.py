"""Delta tables with two backends behind one interface (ARCHITECTURE.md §5).

* ``NativeDelta``: the session has Delta's SQL extension (Databricks, EMR with delta-spark).
* ``BridgeDelta``: any other Spark. delta-rs reads the snapshot and hands its file list to
  Spark's Parquet reader; Spark writes Parquet into a fresh folder inside the table, and one
  atomic delta-rs commit adds exactly those files, with their statistics.

``TableStore`` maps table names to ``<storage.root>/<name>`` and picks the backend.
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Optional, Sequence
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession

from jobs.common.config import StorageConfig
from jobs.common.spark import has_delta_extension
from udfs import fs as nrfs

log = logging.getLogger(__name__)

# Reader features whose meaning a plain Parquet scan of the file list would get wrong.
# deletionVectors is refused only when a file actually carries one (Databricks enables the
# feature on new tables; a table without deleted rows reads correctly). The file list comes
# from delta-rs, so checkpoint formats (v2Checkpoint) need nothing from us.
UNSUPPORTED_READER_FEATURES = {"columnMapping", "typeWidening", "typeWidening-preview"}


class StorageError(RuntimeError):
    pass


class UnsupportedTableError(StorageError):
    pass


class SchemaMismatchError(StorageError):
    pass


class ConcurrentWriteError(StorageError):
    pass


# --------------------------------------------------------------------------- fault injection

# Test-only: ``NR_FAULT=point@table:n[:delay_ms]`` SIGKILLs this process the n-th time a commit
# to ``table`` (the folder's name) reaches ``point`` — at once, or ``delay_ms`` later from a
# timer thread, so the kill lands while the step after the point runs. The kill-and-resume
# trials (tests/test_kill_resume.py) use it to stop ``nr run`` exactly between a chunk's
# Parquet write and its Delta commit (``before_commit``), during the commit (``before_commit``
# with a delay) and right after it (``after_commit``), which timing alone hits only by chance.
# Unset, it costs one environment lookup per commit.
FAULT_ENV = "NR_FAULT"
_fault_hits: dict[str, int] = {}


def fault_point(point: str, path: str) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    where, _, rest = spec.partition(":")
    if where != f"{point}@{path.rstrip('/').rsplit('/', 1)[-1]}":
        return
    nth, _, delay_ms = rest.partition(":")
    _fault_hits[where] = _fault_hits.get(where, 0) + 1
    if _fault_hits[where] != int(nth or 1):
        return
    import signal
    import threading

    log.warning("%s=%s: killing this process", FAULT_ENV, spec)
    if delay_ms:
        threading.Timer(int(delay_ms) / 1000, os.kill, (os.getpid(), signal.SIGKILL)).start()
    else:
        os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------- paths


def delta_uri(path: str) -> str:
    """The URI delta-rs understands (s3a:// -> s3://, local paths made absolute)."""
    if path.startswith("s3a://") or path.startswith("s3n://"):
        return "s3://" + path.split("://", 1)[1]
    if path.startswith("dbfs:/"):
        raise StorageError(f"{path}: dbfs paths need the native Delta backend (run on Databricks)")
    if path.startswith("file://"):
        return os.path.abspath(urlparse(path).path)
    if nrfs.is_remote(path):
        return path
    return os.path.abspath(os.path.expanduser(path))


def spark_uri(path: str, s3_scheme: str = "s3a") -> str:
    if path.startswith("s3://") and s3_scheme != "s3":
        return f"{s3_scheme}://" + path[len("s3://"):]
    return path


# --------------------------------------------------------------------------- who moves the bytes


def spark_handles(spark: SparkSession, path: str, cfg: StorageConfig) -> bool:
    """Whether Spark's own readers and writers can reach ``path``; if not, our tasks move the
    bytes through ``udfs.fs`` (pyarrow's filesystems, with ``storage_options``).

    ``storage.io=auto`` asks Hadoop for a filesystem class for the path's scheme: EMR and
    Databricks have one for s3/s3a, a local pyspark has none (no hadoop-aws jars), and there the
    bridge, exports and the standalone tools still work on S3.
    """
    if cfg.io != "auto":
        return cfg.io == "spark"
    if not nrfs.is_remote(path):
        return True
    scheme = spark_uri(nrfs.s3_uri(path), cfg.spark_s3_scheme).split("://", 1)[0]
    return _hadoop_has_scheme(spark, scheme)


def _hadoop_has_scheme(spark: SparkSession, scheme: str) -> bool:
    sc = getattr(spark, "sparkContext", None)
    try:
        jsc = sc._jsc if sc is not None else None
    except Exception:  # Spark Connect: no JVM here; the cluster behind it reads its own storage
        return True
    if jsc is None:
        return True
    try:
        sc._jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(scheme, jsc.hadoopConfiguration())
        return True
    except Exception:  # ClassNotFound (no hadoop-aws) or UnsupportedFileSystemException
        return False


def write_task_files(spark: SparkSession, df: DataFrame, folder: str, fmt: str, cfg: StorageConfig) -> int:
    """``df`` as one file per partition under ``folder`` (``parquet`` or ``jsonl``), written by the
    tasks through ``udfs.fs``. Returns the rows written.

    File names are fixed by partition, so a retried task overwrites its own file; the folder is
    emptied first, as Spark's ``mode("overwrite")`` does.
    """
    import functools

    body = {"parquet": nrfs.write_parquet_task, "jsonl": nrfs.write_jsonl_task}[fmt]
    opts = dict(cfg.storage_options)
    nrfs.require_bucket(folder, opts)  # on the driver: a clear error before any task starts
    nrfs.delete_dir(folder, opts)
    written = df.mapInArrow(functools.partial(body, folder=folder, options=opts), "path string, rows long")
    rows = int(sum(r["rows"] for r in written.collect()))  # one small row per partition
    if rows == 0:
        # No task wrote a file, and an object store has no empty folders: leave one empty file
        # (with the schema, for Parquet) so the output exists and reads back as zero rows.
        from pyspark.sql.pandas.types import to_arrow_schema

        with nrfs.open_output(nrfs.join(folder, f"part-00000.{'json' if fmt == 'jsonl' else fmt}"), opts) as f:
            if fmt == "parquet":
                pq.write_table(to_arrow_schema(df.schema).empty_table(), f)
    return rows


def write_parquet(spark: SparkSession, df: DataFrame, folder: str, cfg: StorageConfig, mode: str = "overwrite") -> None:
    """Parquet files of ``df`` in ``folder``: Spark's writer where Spark reaches the path, else ours."""
    if spark_handles(spark, folder, cfg):
        df.write.mode(mode).parquet(spark_uri(folder, cfg.spark_s3_scheme))
        return
    if mode == "errorifexists" and nrfs.exists(folder, dict(cfg.storage_options)):
        raise StorageError(f"{folder}: already exists")
    write_task_files(spark, df, folder, "parquet", cfg)


def read_parquet_files(spark: SparkSession, uris: Sequence[str], schema: pa.Schema, cfg: StorageConfig,
                       base: Optional[str] = None) -> DataFrame:
    """Parquet files as a DataFrame with ``schema``'s columns: Spark's reader where Spark reaches
    them, else tasks reading them through ``udfs.fs`` (no Hive-partitioned tables there)."""
    import functools

    from pyspark.sql.pandas.types import from_arrow_schema

    spark_schema = from_arrow_schema(schema)
    if not uris:
        return spark.createDataFrame([], spark_schema)
    if spark_handles(spark, uris[0], cfg):
        reader = spark.read.schema(spark_schema)
        if base:
            # Hive-style folders carry the partition values; basePath lets Spark put them back.
            reader = reader.option("basePath", spark_uri(base, cfg.spark_s3_scheme))
        return reader.parquet(*[spark_uri(u, cfg.spark_s3_scheme) for u in uris]).select(
            *[f"`{n}`" for n in schema.names])
    if base:
        raise UnsupportedTableError(
            f"{base}: a partitioned table on storage this Spark cannot reach itself; read it on a cluster "
            "whose Spark has the storage's filesystem (hadoop-aws on OSS Spark)")
    from pyspark.sql.pandas.types import to_arrow_schema

    paths = spark.createDataFrame([(u,) for u in uris], "path string")
    paths = paths.repartition(max(1, min(len(uris), spark.sparkContext.defaultParallelism * 4)))
    # The tasks hand Spark the Arrow types Spark itself uses (no large or view types, UTC micros).
    out = to_arrow_schema(spark_schema)
    body = functools.partial(nrfs.read_parquet_task, schema_bytes=out.serialize().to_pybytes(),
                             options=dict(cfg.storage_options))
    return paths.mapInArrow(body, spark_schema)


# JSONL files as the corpora ship them: plain, gzip or zstd.
JSONL_SUFFIXES = tuple(f"{e}{c}" for e in (".json", ".jsonl") for c in ("", ".gz", ".zst", ".bz2"))


def read_files(spark: SparkSession, path: str, fmt: str, cfg: StorageConfig,
               reader_options: Optional[dict] = None) -> DataFrame:
    """A JSONL or Parquet file or folder as a DataFrame, wherever it lies (the standalone tools' input).

    Spark reads it where it reaches the storage. Otherwise Parquet files are read by tasks
    through ``udfs.fs``, and JSONL (whose schema Spark infers) is first copied to the driver's
    disk -- which only a local master's executors share, so a cluster that cannot reach the
    storage is an error that says so.
    """
    reader = spark.read.options(**(reader_options or {}))
    if spark_handles(spark, path, cfg):
        target = spark_uri(path, cfg.spark_s3_scheme)
        return reader.json(target) if fmt == "jsonl" else reader.parquet(target)
    opts = dict(cfg.storage_options)
    if nrfs.isdir(path, opts):
        ext = JSONL_SUFFIXES if fmt == "jsonl" else (".parquet",)
        files = [p for p, _ in nrfs.list_files(path, opts, recursive=True)
                 if p.endswith(ext) and not p.rsplit("/", 1)[-1].startswith(("_", "."))]
    elif nrfs.isfile(path, opts):
        files = [path]
    else:
        raise nrfs.translate(FileNotFoundError(path), path, "read", opts)
    if not files:
        raise StorageError(f"{path}: no {fmt} files in this folder")
    if fmt == "parquet":
        with nrfs.open_input(files[0], opts) as f:
            schema = _strip_metadata(pq.read_schema(f))
        return read_parquet_files(spark, files, schema, cfg)
    from jobs.common.spark import is_local

    if not is_local(spark):
        raise StorageError(f"{path}: this cluster's Spark has no filesystem for it (hadoop-aws on OSS Spark); "
                           "install it, or convert the input to Parquet")
    import atexit
    import shutil
    import tempfile

    local = tempfile.mkdtemp(prefix="nr-input-")
    atexit.register(shutil.rmtree, local, True)  # Spark reads lazily: keep the copy for the session
    for i, f in enumerate(files):  # pyarrow's input streams decompress .gz / .zst / .bz2: the copies are plain
        nrfs.download(f, os.path.join(local, f"{i:05d}.json"), opts)
    log.info("%s: %d JSONL file(s) copied to %s for local Spark", path, len(files), local)
    return reader.json(local)


def read_table(spark: SparkSession, path: str, fmt: str, cfg: StorageConfig,
               reader_options: Optional[dict] = None) -> DataFrame:
    """The one reader of a table by format, wherever it lies: a Delta table (native or through the
    bridge), or JSONL / Parquet files (``read_files``). ``storage_options`` apply to every format."""
    if fmt == "delta":
        return make_backend(spark, cfg).read(path)
    if fmt in ("jsonl", "parquet"):
        return read_files(spark, path, fmt, cfg, reader_options)
    raise ValueError(f"unknown input format {fmt!r}: jsonl, parquet or delta")


def write_export(spark: SparkSession, df: DataFrame, target: str, formats: Sequence[str], cfg: StorageConfig,
                 order_by: Sequence[str], shards: Optional[int] = None) -> str:
    """The one writer of an export: ``target/<format>`` folders of JSONL and/or Parquet files of
    ``df`` in ``order_by`` order; with ``shards``, that many files split by ranges of
    ``order_by``. Spark's writer where Spark reaches the storage, else the tasks write the files
    through ``udfs.fs`` with ``storage_options``. Returns ``target``."""
    if shards:
        ordered = df.repartitionByRange(shards, *order_by).sortWithinPartitions(*order_by)
    else:
        ordered = df.orderBy(*order_by).coalesce(max(1, spark.sparkContext.defaultParallelism // 2))
    for fmt in formats:
        folder = f"{target}/{fmt}"
        if not spark_handles(spark, target, cfg):
            write_task_files(spark, ordered, folder, fmt, cfg)
            continue
        writer = ordered.write.mode("overwrite")
        if fmt == "jsonl":
            writer.option("ignoreNullFields", "false").json(spark_uri(folder, cfg.spark_s3_scheme))
        else:
            writer.parquet(spark_uri(folder, cfg.spark_s3_scheme))
    return target


# --------------------------------------------------------------------------- backends


class DeltaBackend:
    name = "base"

    def __init__(self, spark: SparkSession, cfg: StorageConfig):
        self.spark = spark
        self.cfg = cfg

    def exists(self, path: str) -> bool: ...
    def version(self, path: str) -> Optional[int]: ...
    def num_rows(self, path: str) -> Optional[int]: ...
    def read(self, path: str, version: Optional[int] = None) -> DataFrame: ...
    def append(self, path: str, df: DataFrame) -> int: ...
    def overwrite(self, path: str, df: DataFrame) -> int: ...
    def append_new(self, path: str, df: DataFrame, keys: Sequence[str]) -> int: ...
    def delete_where(self, path: str, predicate: str) -> None: ...

    # Chunked, idempotent appends (the stage runner's chunk commits): ``stage_append`` writes a
    # chunk's files without making them visible, ``commit_staged`` adds them in one commit that
    # carries Delta's application transaction (``app_id``, ``txn_version``), and
    # ``txn_version`` reads back the last committed version of ``app_id``.
    def stage_append(self, path: str, df: DataFrame) -> "_Staged": ...
    def staged_location(self, path: str, staged: "_Staged") -> str: ...
    def commit_staged(self, path: str, staged: "_Staged", app_id: str, txn_version: int) -> bool: ...
    def discard_staged(self, path: str, staged: "_Staged") -> None: ...
    def txn_version(self, path: str, app_id: str) -> Optional[int]: ...

    reads_staged = False  # read_staged works (the driver reads staged files itself)

    def read_staged(self, path: str, staged: "_Staged", columns: Sequence[str]) -> Optional[pa.Table]:
        """``columns`` of staged files, read here on the driver; None when this backend cannot."""
        return None


def _check_schema(path: str, table_schema: "pa.Schema | list[tuple[str, str]]", new: list[tuple[str, str]]) -> None:
    old = dict(table_schema)
    new_d = dict(new)
    missing = [c for c in old if c not in new_d]
    extra = [c for c in new_d if c not in old]
    changed = [f"{c}: {old[c]} -> {new_d[c]}" for c in old if c in new_d and old[c] != new_d[c]]
    if missing or extra or changed:
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if extra:
            parts.append(f"new columns {extra}")
        if changed:
            parts.append(f"changed types {changed}")
        raise SchemaMismatchError(
            f"{path}: the data does not match the table's schema ({'; '.join(parts)}); "
            "write to a new table or overwrite it"
        )


def _spark_fields(df: DataFrame) -> list[tuple[str, str]]:
    return [(f.name, f.dataType.simpleString()) for f in df.schema.fields]


# Delta's optimistic-concurrency failures (delta.exceptions / io.delta.exceptions): another
# writer committed between our read and our commit. Retrying re-reads the table.
_NATIVE_CONFLICTS = ("ConcurrentAppendException", "ConcurrentDeleteReadException", "ConcurrentDeleteDeleteException",
                     "ConcurrentTransactionException", "ConcurrentWriteException", "MetadataChangedException",
                     "ProtocolChangedException", "DELTA_CONCURRENT_")


def _is_native_conflict(e: BaseException) -> bool:
    text = f"{type(e).__name__} {e}"
    return any(name in text for name in _NATIVE_CONFLICTS)


def _is_already_exists(e: BaseException) -> bool:
    text = str(e).lower()
    return "already exists" in text or "path_already_exists" in text


class NativeDelta(DeltaBackend):
    """Delta through the session's own Delta support (delta-spark or Databricks).

    Every write returns the number of rows it committed: each commit is tagged with a unique
    ``userMetadata`` and its ``operationMetrics`` (``numOutputRows``, ``numTargetRowsInserted``)
    are read back from the table's history, so the figure is Delta's own even when a
    concurrent writer commits around ours. A keyed append whose rows are all present commits
    nothing (the table's version stays), and a conflicting concurrent commit is retried up to
    ``storage.commit_retries`` times.
    """

    name = "native"
    _TAG_CONF = "spark.databricks.delta.commitInfo.userMetadata"

    def _dt(self, path: str):
        from delta.tables import DeltaTable

        return DeltaTable.forPath(self.spark, path)

    def exists(self, path: str) -> bool:
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(self.spark, path)

    def version(self, path: str) -> Optional[int]:
        if not self.exists(path):
            return None
        return int(self._dt(path).history(1).collect()[0]["version"])

    def num_rows(self, path: str) -> Optional[int]:
        """``count()`` of a Delta table is answered from the log's statistics by Delta's
        metadata-only count (Delta >= 2.2): no data file is opened."""
        return self.read(path).count() if self.exists(path) else None

    def read(self, path: str, version: Optional[int] = None) -> DataFrame:
        r = self.spark.read.format("delta")
        if version is not None:
            r = r.option("versionAsOf", version)
        return r.load(path)

    def _save(self, path: str, df: DataFrame, mode: str, tag: str) -> None:
        w = df.write.format("delta").mode(mode).option("userMetadata", tag)
        if mode == "overwrite":
            w = w.option("overwriteSchema", "true")
        w.save(path)

    def _committed_rows(self, path: str, tag: str, metric: str, fallback) -> int:
        """The ``metric`` of the commit tagged ``tag``; ``fallback()`` when history has no metrics
        (``spark.databricks.delta.history.metricsEnabled`` off)."""
        from pyspark.sql import functions as F

        hist = self._dt(path).history(50).where(F.col("userMetadata") == tag).select("operationMetrics").limit(1)
        rows = hist.collect()
        metrics = dict(rows[0][0] or {}) if rows else {}
        if metric in metrics:
            return int(metrics[metric])
        log.debug("%s: commit %s has no %s in its history; counting the rows instead", path, tag, metric)
        return int(fallback())

    def _with_retries(self, path: str, attempt_fn):
        retries = self.cfg.commit_retries
        for attempt in range(retries + 1):
            try:
                return attempt_fn()
            except Exception as e:
                if not _is_native_conflict(e) or attempt == retries:
                    if _is_native_conflict(e):
                        raise ConcurrentWriteError(f"{path}: gave up after {retries + 1} conflicting commits: {e}") from e
                    raise
                log.warning("%s: another writer committed first (%s); retry %d/%d", path, type(e).__name__,
                            attempt + 1, retries)
                time.sleep(min(0.1 * 2**attempt, 5))

    def _write(self, path: str, df: DataFrame, mode: str) -> int:
        if mode == "append" and self.exists(path):
            _check_schema(path, _spark_fields(self.read(path)), _spark_fields(df))
        tag = f"nr-{uuid.uuid4().hex}"
        self._with_retries(path, lambda: self._save(path, df, mode, tag))
        return self._committed_rows(path, tag, "numOutputRows", df.count)

    def append(self, path: str, df: DataFrame) -> int:
        return self._write(path, df, "append")

    def overwrite(self, path: str, df: DataFrame) -> int:
        return self._write(path, df, "overwrite")

    def append_new(self, path: str, df: DataFrame, keys: Sequence[str]) -> int:
        keys = list(keys)
        df = df.dropDuplicates(keys)
        tag = f"nr-{uuid.uuid4().hex}"

        def attempt() -> int:
            if not self.exists(path):
                try:
                    # errorifexists: a writer that created the table first turns this into a keyed merge
                    self._save(path, df, "errorifexists", tag)
                    return self._committed_rows(path, tag, "numOutputRows", df.count)
                except Exception as e:
                    if not _is_already_exists(e):
                        raise
                    log.info("%s: created concurrently; merging into it", path)
            _check_schema(path, _spark_fields(self.read(path)), _spark_fields(df))
            # The rows not yet present, computed once: when there are none, nothing is committed
            # (a re-run leaves the table's version as it is); otherwise MERGE inserts them, and
            # Delta's conflict check sees a writer that slipped in between.
            existing = self.read(path).select(*keys)
            cond = [df[k].eqNullSafe(existing[k]) for k in keys]
            new = df.join(existing, cond, "left_anti").persist()
            try:
                n = new.count()
                if n == 0:
                    return 0
                merge_cond = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
                prev = self.spark.conf.get(self._TAG_CONF, None)
                self.spark.conf.set(self._TAG_CONF, tag)
                try:
                    self._dt(path).alias("t").merge(new.alias("s"), merge_cond).whenNotMatchedInsertAll().execute()
                finally:
                    if prev is None:
                        self.spark.conf.unset(self._TAG_CONF)
                    else:
                        self.spark.conf.set(self._TAG_CONF, prev)
                return self._committed_rows(path, tag, "numTargetRowsInserted", lambda: n)
            finally:
                new.unpersist()

        return self._with_retries(path, attempt)

    def delete_where(self, path: str, predicate: str) -> None:
        self._with_retries(path, lambda: self._dt(path).delete(predicate))

    def stage_append(self, path: str, df: DataFrame) -> "_Staged":
        # Delta's writer commits as it writes: stage as Parquet in a folder Delta ignores (a
        # leading underscore), then commit_staged copies it in with txnAppId/txnVersion.
        folder = f"_nr_staged/part-{uuid.uuid4().hex}"
        df.write.mode("errorifexists").parquet(f"{path.rstrip('/')}/{folder}")
        return _Staged(folder, [], None, -1)

    def staged_location(self, path: str, staged: "_Staged") -> str:
        return f"{path.rstrip('/')}/{staged.folder}"

    def commit_staged(self, path: str, staged: "_Staged", app_id: str, txn_version: int) -> bool:
        done = self.txn_version(path, app_id)
        if done is not None and done >= txn_version:
            self.discard_staged(path, staged)
            return False
        data = self.spark.read.parquet(self.staged_location(path, staged))
        if self.exists(path):
            _check_schema(path, _spark_fields(self.read(path)), _spark_fields(data))
        # Delta skips a write whose (txnAppId, txnVersion) it has already committed.
        (data.write.format("delta").mode("append").option("txnAppId", app_id)
         .option("txnVersion", int(txn_version)).save(path))
        self.discard_staged(path, staged)
        return True

    def discard_staged(self, path: str, staged: "_Staged") -> None:
        jvm = self.spark._jvm
        target = jvm.org.apache.hadoop.fs.Path(self.staged_location(path, staged))
        target.getFileSystem(self.spark._jsc.hadoopConfiguration()).delete(target, True)

    def txn_version(self, path: str, app_id: str) -> Optional[int]:
        if not self.exists(path):
            return None
        jvm = self.spark._jvm
        try:  # Delta's own snapshot (the signature of update() moved between Delta releases)
            log_ = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(self.spark._jsparkSession, path)
            got = log_.update(False, jvm.scala.Option.empty(), jvm.scala.Option.empty()).transactions().get(app_id)
            return int(got.get()) if got.isDefined() else None
        except Exception:
            from deltalake import DeltaTable

            return DeltaTable(delta_uri(path), storage_options=dict(self.cfg.storage_options) or None
                              ).transaction_version(app_id)


@dataclass
class _Staged:
    folder: str  # relative to the table root
    files: list  # AddAction
    schema: pa.Schema
    rows: int


class BridgeDelta(DeltaBackend):
    """Spark writes Parquet, delta-rs commits. See module docstring."""

    name = "bridge"
    reads_staged = True

    def __init__(self, spark: SparkSession, cfg: StorageConfig):
        super().__init__(spark, cfg)
        # Spark's default INT96 timestamps would make the table need Delta's timestampNanos
        # feature, which most readers (delta-rs among them) cannot read. A session we were
        # given (spark-submit, notebooks) may not have this set.
        spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")

    def _options(self) -> dict:
        return dict(self.cfg.storage_options)

    def _table(self, path: str, version: Optional[int] = None):
        from deltalake import DeltaTable

        nrfs.require_bucket(delta_uri(path), self._options())

        dt = DeltaTable(delta_uri(path), storage_options=self._options() or None, version=version)
        return dt

    def exists(self, path: str) -> bool:
        from deltalake import DeltaTable

        nrfs.require_bucket(delta_uri(path), self._options())
        return DeltaTable.is_deltatable(delta_uri(path), storage_options=self._options() or None)

    def version(self, path: str) -> Optional[int]:
        return self._table(path).version() if self.exists(path) else None

    def _refuse_unsupported(self, path: str, dt) -> None:
        proto = dt.protocol()
        feats = set(proto.reader_features or [])
        bad = sorted(feats & UNSUPPORTED_READER_FEATURES)
        mode = (dt.metadata().configuration or {}).get("delta.columnMapping.mode", "none")
        if mode not in (None, "none") and "columnMapping" not in bad:
            bad.append("columnMapping")
        if proto.min_reader_version > 3:
            bad.append(f"minReaderVersion={proto.min_reader_version}")
        if "deletionVectors" in feats and _has_deletion_vectors(dt):
            bad.append("deletionVectors (files with deleted rows)")
        if bad:
            raise UnsupportedTableError(
                f"{path}: the Delta bridge cannot read this table: reader feature(s) {', '.join(bad)} "
                "are not honored by a plain Parquet scan; read it on a Spark with Delta's jars (native backend)"
            )

    def read(self, path: str, version: Optional[int] = None) -> DataFrame:
        if not self.exists(path):
            raise StorageError(f"{path}: not a Delta table (no _delta_log)")
        dt = self._table(path, version)
        self._refuse_unsupported(path, dt)
        arrow_schema = pa.schema(dt.schema().to_arrow())
        base = dt.table_uri if dt.metadata().partition_columns else None
        return read_parquet_files(self.spark, dt.file_uris(), arrow_schema, self.cfg, base)

    # ---- writing

    def _stage(self, path: str, df: DataFrame) -> _Staged:
        table_uri = delta_uri(path)
        folder = f"part-{uuid.uuid4().hex}"
        write_parquet(self.spark, df, table_uri.rstrip("/") + "/" + folder, self.cfg, mode="errorifexists")
        fs, base = _filesystem(table_uri, self._options())
        with nrfs.access(f"{path}/{folder}", "list staged files", self._options()):
            infos = fs.get_file_info(_selector(base + "/" + folder))
        actions = []
        schema = None
        rows = 0
        for info in sorted(infos, key=lambda i: i.path):
            fname = info.path.rsplit("/", 1)[-1]
            if info.type.name != "File":
                continue
            if not fname.endswith(".parquet") or fname.startswith((".", "_")):
                fs.delete_file(info.path)  # _SUCCESS, .crc: not part of the table
                continue
            with nrfs.access(f"{path}/{folder}/{fname}", "read footer", self._options()):
                meta = pq.ParquetFile(fs.open_input_file(info.path)).metadata
            schema = schema or meta.schema.to_arrow_schema()
            rows += meta.num_rows
            actions.append(_add_action(f"{folder}/{fname}", info.size, meta, schema))
        if schema is None:
            from pyspark.sql.pandas.types import to_arrow_schema

            schema = to_arrow_schema(df.schema)
        schema = _strip_metadata(schema)
        return _Staged(folder, actions, schema, rows)

    def _discard(self, path: str, staged: _Staged) -> None:
        try:
            nrfs.delete_dir(delta_uri(path).rstrip("/") + "/" + staged.folder, self._options())
        except OSError:
            log.warning("could not remove uncommitted files in %s/%s", path, staged.folder)

    def _commit(self, path: str, staged: _Staged, mode: str, expected_version: Optional[int],
                txns: Sequence = ()) -> None:
        """Commit ``staged`` as version ``expected_version + 1`` and nothing else.

        delta-rs would rebase a blind append onto a newer version by itself; with no
        automatic retries the log write is a compare-and-swap, and our loop decides.
        """
        from deltalake import DeltaTable
        from deltalake import Schema as DeltaSchema
        from deltalake.transaction import CommitProperties, create_table_with_add_actions

        uri = delta_uri(path)
        opts = self._options() or None
        if expected_version is None:
            create_table_with_add_actions(uri, DeltaSchema.from_arrow(staged.schema), staged.files, mode="error",
                                          storage_options=opts,
                                          commit_properties=CommitProperties(app_transactions=list(txns)) if txns else None)
            return
        dt = DeltaTable(uri, storage_options=opts, version=expected_version)
        if mode == "append":
            _check_schema(path, _arrow_fields(pa.schema(dt.schema().to_arrow())), _arrow_fields(staged.schema))
        dt.create_write_transaction(list(staged.files), mode=mode, schema=staged.schema,
                                    commit_properties=CommitProperties(max_commit_retries=0,
                                                                       app_transactions=list(txns) or None))

    def _write(self, path: str, df: DataFrame, mode: str, keys: Optional[Sequence[str]] = None) -> int:
        from deltalake.exceptions import CommitFailedError, DeltaError

        retries = self.cfg.commit_retries
        staged: Optional[_Staged] = None
        for attempt in range(retries + 1):
            read_version = self.version(path)
            if staged is None or keys is not None:
                # Keyed writes re-stage on every attempt: the anti-join must see the newest snapshot.
                data = _anti_join_existing(self, path, df, keys, read_version) if keys is not None else df
                if mode == "append" and read_version is not None:
                    current = _arrow_fields(pa.schema(self._table(path).schema().to_arrow()))
                    _check_schema(path, current, _spark_fields(data))
                staged = self._stage(path, data)
                if staged.rows == 0 and read_version is not None and mode == "append":
                    self._discard(path, staged)  # nothing new: leave the table's version as it is
                    return 0
            try:
                fault_point("before_commit", path)  # the Parquet files are written, the commit is not
                self._commit(path, staged, mode, read_version)
                fault_point("after_commit", path)
                return staged.rows
            except CommitFailedError as e:
                reason = str(e)
            except DeltaError as e:
                if read_version is None and "exist" in str(e).lower():
                    reason = "table created concurrently"
                else:
                    self._discard(path, staged)
                    raise
            except BaseException:
                self._discard(path, staged)
                raise
            log.warning("%s: another writer committed first (%s); retry %d/%d", path, reason, attempt + 1, retries)
            if keys is not None:
                self._discard(path, staged)
            time.sleep(min(0.1 * 2**attempt, 5))
        if staged is not None:
            self._discard(path, staged)
        raise ConcurrentWriteError(f"{path}: gave up after {retries + 1} conflicting commits")

    def append(self, path: str, df: DataFrame) -> int:
        return self._write(path, df, "append")

    def overwrite(self, path: str, df: DataFrame) -> int:
        return self._write(path, df, "overwrite")

    def append_new(self, path: str, df: DataFrame, keys: Sequence[str]) -> int:
        return self._write(path, df, "append", keys=keys)

    def stage_append(self, path: str, df: DataFrame) -> _Staged:
        return self._stage(path, df)

    def staged_location(self, path: str, staged: _Staged) -> str:
        return spark_uri(delta_uri(path).rstrip("/") + "/" + staged.folder, self.cfg.spark_s3_scheme)

    def commit_staged(self, path: str, staged: _Staged, app_id: str, txn_version: int) -> bool:
        """One append of the staged files that records (``app_id``, ``txn_version``); False (and
        the files removed) when that transaction is already in the log. A conflict with another
        writer re-checks the transaction and retries: the files are a blind append."""
        from deltalake.exceptions import CommitFailedError, DeltaError
        from deltalake.transaction import Transaction

        txn = Transaction(app_id=app_id, version=int(txn_version), last_updated=int(time.time() * 1000))
        for attempt in range(self.cfg.commit_retries + 1):
            read_version = self.version(path)
            done = self.txn_version(path, app_id) if read_version is not None else None
            if done is not None and done >= txn_version:
                self._discard(path, staged)
                return False
            try:
                fault_point("before_commit", path)  # the chunk's Parquet files are written, the commit is not
                self._commit(path, staged, "append", read_version, txns=[txn])
                fault_point("after_commit", path)
                return True
            except CommitFailedError as e:
                reason = str(e)
            except DeltaError as e:
                if not (read_version is None and "exist" in str(e).lower()):
                    raise
                reason = "table created concurrently"
            log.warning("%s: another writer committed first (%s); retry %d/%d", path, reason, attempt + 1,
                        self.cfg.commit_retries)
            time.sleep(min(0.1 * 2**attempt, 5))
        raise ConcurrentWriteError(f"{path}: gave up after {self.cfg.commit_retries + 1} conflicting commits")

    def discard_staged(self, path: str, staged: _Staged) -> None:
        self._discard(path, staged)

    def read_staged(self, path: str, staged: _Staged, columns: Sequence[str]) -> Optional[pa.Table]:
        # The footers were read at staging (staged.files): only the named column chunks are fetched.
        fs, base = _filesystem(delta_uri(path), self._options())
        parts = []
        for action in staged.files:
            with nrfs.access(f"{path}/{action.path}", "read staged columns", self._options()):
                parts.append(pq.read_table(fs.open_input_file(f"{base}/{action.path}"), columns=list(columns)))
        if not parts:
            return staged.schema.empty_table().select(list(columns))
        return pa.concat_tables(parts)

    def txn_version(self, path: str, app_id: str) -> Optional[int]:
        return self._table(path).transaction_version(app_id) if self.exists(path) else None

    def read_arrow(self, path: str, columns: Sequence[str]) -> pa.Table:
        with nrfs.access(path, "read", self._options()):
            return self._table(path).to_pyarrow_table(columns=list(columns))

    def num_rows(self, path: str) -> Optional[int]:
        """Rows in the current snapshot from the log's per-file statistics (no data read);
        None when a file has no numRecords."""
        if not self.exists(path):
            return None
        actions = self._table(path).get_add_actions(flatten=True)
        counts = actions.column("num_records").to_pylist() if "num_records" in actions.schema.names else [None]
        return None if any(c is None for c in counts) else int(sum(counts))

    def delete_where(self, path: str, predicate: str) -> None:
        # delta-rs rewrites the files holding matching rows and commits once (conflict-checked)
        self._table(path).delete(predicate)


def _has_deletion_vectors(dt) -> bool:
    for batch in dt.deletion_vectors():
        if batch.num_rows:
            return True
    return False


def _anti_join_existing(backend: BridgeDelta, path: str, df: DataFrame, keys: Sequence[str], version) -> DataFrame:
    df = df.dropDuplicates(list(keys))
    if version is None:
        return df
    existing = backend.read(path, version).select(*keys)
    return df.join(existing, on=list(keys), how="left_anti")


def _arrow_fields(schema: pa.Schema) -> list[tuple[str, str]]:
    from pyspark.sql.pandas.types import from_arrow_type

    return [(f.name, from_arrow_type(f.type).simpleString()) for f in schema]


def _strip_metadata(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, f.type, f.nullable) for f in schema])


def _filesystem(uri: str, options: dict):
    return nrfs.resolve(uri, options)


def _selector(base: str):
    import pyarrow.fs as pafs

    # An empty frame written by our tasks leaves no folder at all on an object store.
    return pafs.FileSelector(base, recursive=False, allow_not_found=True)


def _stat_value(v):
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if hasattr(v, "isoformat"):
        s = v.isoformat()
        return s if "+" in s or s.endswith("Z") else s + "Z"
    if isinstance(v, float) and v != v:
        return None
    return v


def _add_action(rel_path: str, size: int, meta: "pq.FileMetaData", schema: pa.Schema):
    """An add action with Delta statistics taken from the Parquet footer (top-level primitive columns)."""
    from deltalake.transaction import AddAction

    mins, maxs, nulls = {}, {}, {}
    top = {f.name: f for f in schema}
    for ci in range(meta.num_columns):
        col = meta.schema.column(ci)
        name = col.path
        if "." in name or name not in top:
            continue  # nested: Delta stats on nested leaves are optional; skip them
        lo = hi = None
        nc = 0
        ok = True
        for rg in range(meta.num_row_groups):
            st = meta.row_group(rg).column(ci).statistics
            if st is None:
                ok = False
                break
            nc += st.null_count or 0
            if st.has_min_max:
                lo = st.min if lo is None else min(lo, st.min)
                hi = st.max if hi is None else max(hi, st.max)
        if not ok:
            continue
        nulls[name] = nc
        if lo is None:
            continue
        lo, hi = _stat_value(lo), _stat_value(hi)
        if isinstance(lo, str) and (len(lo) > 32 or len(hi or "") > 32):
            continue  # a cut max would not be an upper bound: leave long strings without min/max
        if lo is not None and hi is not None:
            mins[name], maxs[name] = lo, hi
    stats = {"numRecords": meta.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}
    return AddAction(
        path=rel_path,
        size=size,
        partition_values={},
        modification_time=int(time.time() * 1000),
        data_change=True,
        stats=json.dumps(stats, default=str),
    )


# --------------------------------------------------------------------------- the store


class TableStore:
    """Named tables under one root, on the backend the session supports."""

    def __init__(self, spark: SparkSession, cfg: StorageConfig):
        self.spark = spark
        self.cfg = cfg
        self.backend: DeltaBackend = make_backend(spark, cfg)

    def path(self, name_or_path: str) -> str:
        if "/" in name_or_path or "\\" in name_or_path:
            return name_or_path
        return f"{self.cfg.root.rstrip('/')}/{name_or_path}"

    def exists(self, name: str) -> bool:
        return self.backend.exists(self.path(name))

    def version(self, name: str) -> Optional[int]:
        return self.backend.version(self.path(name))

    def read(self, name: str, version: Optional[int] = None) -> DataFrame:
        return self.backend.read(self.path(name), version)

    def read_or_empty(self, name: str, schema) -> DataFrame:
        return self.read(name) if self.exists(name) else self.spark.createDataFrame([], schema)

    def append(self, name: str, df: DataFrame) -> int:
        return self.backend.append(self.path(name), df)

    def overwrite(self, name: str, df: DataFrame) -> int:
        return self.backend.overwrite(self.path(name), df)

    def append_new(self, name: str, df: DataFrame, keys: Sequence[str]) -> int:
        """Append the rows whose keys are not in the table yet (idempotent under retries)."""
        return self.backend.append_new(self.path(name), df, keys)

    def stage_append(self, name: str, df: DataFrame) -> _Staged:
        """Write ``df``'s files for ``name`` without committing them (see ``commit_staged``)."""
        return self.backend.stage_append(self.path(name), df)

    def staged_location(self, name: str, staged: _Staged) -> str:
        """Where Spark reads the staged files (their counts come from one aggregation there)."""
        return self.backend.staged_location(self.path(name), staged)

    def commit_staged(self, name: str, staged: _Staged, app_id: str, txn_version: int) -> bool:
        """Commit staged files once: False when (``app_id``, ``txn_version``) is already committed."""
        return self.backend.commit_staged(self.path(name), staged, app_id, txn_version)

    def discard_staged(self, name: str, staged: _Staged) -> None:
        self.backend.discard_staged(self.path(name), staged)

    @property
    def reads_staged(self) -> bool:
        return self.backend.reads_staged

    def read_staged(self, name: str, staged: _Staged, columns: Sequence[str]) -> Optional[pa.Table]:
        """``columns`` of staged files as one Arrow table on the driver (a chunk's output is
        small); None when the backend cannot, and Spark reads them instead."""
        return self.backend.read_staged(self.path(name), staged, columns)

    def txn_version(self, name: str, app_id: str) -> Optional[int]:
        """The last transaction version ``app_id`` committed to ``name`` (None: none, or no table)."""
        return self.backend.txn_version(self.path(name), app_id)

    def num_rows(self, name: str) -> Optional[int]:
        """Row count from the Delta log's statistics, without reading data; None when unknown."""
        return self.backend.num_rows(self.path(name))

    def read_small(self, name: str, columns: Sequence[str], max_rows: int) -> Optional[pa.Table]:
        """The named columns of a table of at most ``max_rows`` rows (counted from the Delta log)
        as an Arrow table read on the driver, without Spark; None when the table is larger, its
        size is unknown, or the backend reads only through Spark."""
        fn = getattr(self.backend, "read_arrow", None)
        n = self.num_rows(name) if fn is not None else None
        if n is None or n > max_rows:
            return None
        return fn(self.path(name), list(columns))

    def delete_where(self, name: str, predicate: str) -> int:
        """Delete the rows matching a SQL ``predicate``; returns how many. No match, no commit."""
        if not self.exists(name):
            return 0
        n = self.read(name).where(predicate).count()
        if n:
            self.backend.delete_where(self.path(name), predicate)
        return n

    def keys_present(self, name: str, keys: Sequence[str]) -> Optional[DataFrame]:
        return self.read(name).select(*keys).distinct() if self.exists(name) else None


def make_backend(spark: SparkSession, cfg: StorageConfig) -> DeltaBackend:
    choice = cfg.backend
    if choice == "auto":
        choice = "native" if has_delta_extension(spark) else "bridge"
    if choice == "native":
        if not has_delta_extension(spark):
            raise StorageError(
                "storage.backend=native but the Spark session lacks io.delta.sql.DeltaSparkSessionExtension"
            )
        return NativeDelta(spark, cfg)
    if cfg.root.startswith("dbfs:/"):
        raise StorageError("storage.root on dbfs:/ needs the native Delta backend (Databricks)")
    return BridgeDelta(spark, cfg)

