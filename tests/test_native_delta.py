"""The native Delta backend's logic, without Delta's jars: a fake ``delta.tables`` and a fake
table store stand in for delta-spark, with Delta's optimistic-concurrency rule (a MERGE whose
snapshot is older than a concurrent commit that added rows fails with
ConcurrentAppendException; blind appends never conflict) and its commit history
(``userMetadata``, ``operationMetrics``). What runs for real is ``NativeDelta``: the counts it
returns, the zero-row short-circuit, the retries, and that keyed appends never double a key.
"""
from __future__ import annotations

import re
import sys
import threading
import types

import pandas as pd
import pytest

from jobs.common import storage as st

SCHEMA = "k string, v long"


class ConcurrentAppendException(Exception):
    """Named like delta.exceptions.ConcurrentAppendException."""


class FakeLake:
    """Tables as pandas snapshots with a Delta-like log: version, operation, metrics, userMetadata."""

    def __init__(self, spark):
        self.spark = spark
        self.tables: dict[str, list[pd.DataFrame]] = {}
        self.schemas: dict[str, object] = {}
        self.log: dict[str, list[dict]] = {}
        self.lock = threading.Lock()
        self.metrics_enabled = True
        self.before_merge_commit = None  # hook(path): another writer slipping in
        self.before_create = None

    def version(self, path):
        return len(self.tables[path]) - 1

    def current(self, path) -> pd.DataFrame:
        return self.tables[path][-1]

    def commit(self, path, rows: pd.DataFrame, operation, metric, tag, read_version=None, mode="append", schema=None):
        with self.lock:
            if path not in self.tables:
                if mode == "errorifexists" or read_version is None:
                    self.tables[path], self.log[path] = [], []
                    self.schemas[path] = schema
            elif mode == "errorifexists":
                raise RuntimeError(f"[DELTA_PATH_EXISTS] {path} already exists")
            if read_version is not None and self.version(path) != read_version:
                added = any(int(e["operationMetrics"].get("numOutputRows", e["operationMetrics"].get(
                    "numTargetRowsInserted", "0"))) for e in self.log[path][read_version + 1:])
                if added:
                    raise ConcurrentAppendException(
                        f"ConcurrentAppendException: files were added to {path} by a concurrent update")
            base = self.tables[path][-1] if self.tables[path] and mode != "overwrite" else rows.iloc[0:0]
            self.tables[path].append(pd.concat([base, rows], ignore_index=True))
            if schema is not None and mode == "overwrite":
                self.schemas[path] = schema
            metrics = {metric: str(len(rows))} if self.metrics_enabled else {}
            self.log[path].append({"version": self.version(path), "operation": operation,
                                   "userMetadata": tag, "operationMetrics": metrics})


def install_fake_delta(monkeypatch, lake: FakeLake):
    class FakeMerge:
        def __init__(self, table, source, cond):
            self.table, self.source = table, source
            self.keys = re.findall(r"t\.`([^`]+)` <=> s\.`\1`", cond)

        def whenNotMatchedInsertAll(self):
            return self

        def execute(self):
            path = self.table.path
            read_version = lake.version(path)  # the snapshot the MERGE reads
            present = set(map(tuple, lake.current(path)[self.keys].itertuples(index=False)))
            src = self.source.toPandas()
            ins = src[[tuple(r) not in present for r in src[self.keys].itertuples(index=False)]]
            if lake.before_merge_commit:
                lake.before_merge_commit(path)
            tag = lake.spark.conf.get("spark.databricks.delta.commitInfo.userMetadata", None)
            lake.commit(path, ins, "MERGE", "numTargetRowsInserted", tag, read_version=read_version)

    class FakeDeltaTable:
        def __init__(self, spark, path):
            self.spark, self.path = spark, path

        @classmethod
        def forPath(cls, spark, path):
            assert path in lake.tables, path
            return cls(spark, path)

        @classmethod
        def isDeltaTable(cls, spark, path):
            return path in lake.tables

        def history(self, n=None):
            rows = sorted(lake.log[self.path], key=lambda e: -e["version"])[:n]
            return lake.spark.createDataFrame(
                rows, "version long, operation string, userMetadata string, operationMetrics map<string,string>")

        def alias(self, _):
            return self

        def merge(self, source, cond):
            return FakeMerge(self, source, cond)

    mod = types.ModuleType("delta.tables")
    mod.DeltaTable = FakeDeltaTable
    monkeypatch.setitem(sys.modules, "delta", types.ModuleType("delta"))
    monkeypatch.setitem(sys.modules, "delta.tables", mod)


@pytest.fixture()
def native(spark, cfg, monkeypatch):
    lake = FakeLake(spark)
    install_fake_delta(monkeypatch, lake)
    backend = st.NativeDelta(spark, cfg.storage.model_copy(update={"commit_retries": 3}))

    def read(path, version=None):
        snap = lake.tables[path][-1 if version is None else version]
        return spark.createDataFrame(snap, lake.schemas[path]) if len(snap) else spark.createDataFrame([], lake.schemas[path])

    def save(path, df, mode, tag):
        if mode == "errorifexists" and lake.before_create:
            hook, lake.before_create = lake.before_create, None
            hook(path)
        lake.commit(path, df.toPandas(), "WRITE", "numOutputRows", tag, mode=mode, schema=df.schema)

    monkeypatch.setattr(backend, "read", read)
    monkeypatch.setattr(backend, "_save", save)
    return backend, lake


def frame(spark, keys, v=0):
    return spark.createDataFrame([(str(k), v) for k in keys], SCHEMA)


def keys_of(lake, path):
    return list(lake.current(path)["k"])


def test_native_writes_return_the_rows_they_committed(spark, native):
    backend, lake = native
    assert backend.append("/t/a", frame(spark, range(5))) == 5
    assert backend.append("/t/a", frame(spark, range(5, 8))) == 3
    assert backend.overwrite("/t/a", frame(spark, range(4))) == 4
    assert backend.append_new("/t/b", frame(spark, [1, 2, 2, 3]), ["k"]) == 3  # created; in-batch duplicate dropped
    assert backend.append_new("/t/b", frame(spark, range(6)), ["k"]) == 3
    assert sorted(keys_of(lake, "/t/b")) == [str(i) for i in range(6)]


def test_native_keyed_append_of_present_rows_commits_nothing(spark, native):
    backend, lake = native
    backend.append_new("/t/c", frame(spark, range(4)), ["k"])
    v = lake.version("/t/c")
    assert backend.append_new("/t/c", frame(spark, [0, 1, 3]), ["k"]) == 0
    assert backend.append_new("/t/c", frame(spark, []), ["k"]) == 0
    assert lake.version("/t/c") == v  # no empty commit: "a re-run commits nothing"


def test_native_counts_without_history_metrics(spark, native):
    backend, lake = native
    lake.metrics_enabled = False
    assert backend.append("/t/d", frame(spark, range(3))) == 3
    assert backend.append_new("/t/d", frame(spark, range(5)), ["k"]) == 2


def test_native_keyed_append_retries_when_a_writer_slips_in(spark, native):
    backend, lake = native
    backend.append_new("/t/e", frame(spark, range(3)), ["k"])
    slipped = []

    def other_writer(path):
        if not slipped:  # once: a second driver commits keys 3..5 between our read and our commit
            slipped.append(True)
            lake.commit(path, frame(spark, [3, 4, 5], v=9).toPandas(), "WRITE", "numOutputRows", "other")

    lake.before_merge_commit = other_writer
    n = backend.append_new("/t/e", frame(spark, range(8)), ["k"])
    keys = keys_of(lake, "/t/e")
    assert sorted(keys) == sorted(str(i) for i in range(8)) and len(keys) == len(set(keys))
    assert n == 2  # 6 and 7: the other writer's 3..5 are not ours
    assert lake.current("/t/e").set_index("k").loc["4", "v"] == 9


def test_native_concurrent_creation_becomes_a_merge(spark, native):
    backend, lake = native
    lake.before_create = lambda path: lake.commit(path, frame(spark, [0, 1], v=7).toPandas(), "WRITE",
                                                  "numOutputRows", "other", mode="errorifexists",
                                                  schema=frame(spark, []).schema)
    assert backend.append_new("/t/f", frame(spark, range(4)), ["k"]) == 2
    keys = keys_of(lake, "/t/f")
    assert sorted(keys) == ["0", "1", "2", "3"] and len(keys) == 4


def test_native_gives_up_after_the_configured_conflicts(spark, native):
    backend, lake = native
    backend.append_new("/t/g", frame(spark, [0]), ["k"])
    counter = iter(range(100, 200))
    lake.before_merge_commit = lambda path: lake.commit(path, frame(spark, [next(counter)]).toPandas(), "WRITE",
                                                        "numOutputRows", "other")
    with pytest.raises(st.ConcurrentWriteError, match="gave up after 4 conflicting commits"):
        backend.append_new("/t/g", frame(spark, [1, 2]), ["k"])
    assert "1" not in keys_of(lake, "/t/g")


def test_native_two_writers_race_never_double_a_key(spark, native):
    backend, lake = native
    backend.append_new("/t/h", frame(spark, [0]), ["k"])
    barrier = threading.Barrier(2, timeout=60)
    results, errors = [], []

    def writer(keys):
        try:
            barrier.wait()
            results.append(backend.append_new("/t/h", frame(spark, keys), ["k"]))
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(range(0, 12),)), threading.Thread(target=writer, args=(range(6, 18),))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    keys = keys_of(lake, "/t/h")
    assert len(keys) == len(set(keys)) == 18
    # (no check on the two returned counts: the commit tag is a session setting, shared by the
    # two threads of this one session; two drivers have a session each)
    assert len(results) == 2
