"""Delta bridge round trips: what Spark writes, delta-rs commits, and both read back."""
import json
import threading

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.common import storage as st

SCHEMA = "id long, name string, score double, tags array<string>"


def frame(spark, ids, name="n"):
    return spark.createDataFrame([(i, f"{name}{i}", i / 2, [f"t{i}"]) for i in ids], SCHEMA)


def test_backend_is_bridge_without_delta_jars(store):
    assert store.backend.name == "bridge"


def test_append_then_read_back_by_spark_and_deltalake(spark, store):
    store.append("t", frame(spark, range(5)))
    store.append("t", frame(spark, range(5, 8)))
    assert store.version("t") == 1
    assertDataFrameEqual(store.read("t"), frame(spark, range(8)))
    dt = DeltaTable(store.path("t"))
    got = dt.to_pyarrow_table() if hasattr(dt, "to_pyarrow_table") else None
    assert sorted(got.column("id").to_pylist()) == list(range(8))
    assert got.column("tags").to_pylist()[0][0].startswith("t")


def test_commit_carries_file_statistics(spark, store):
    store.append("t", frame(spark, range(10)).coalesce(1))
    actions = pa.table(DeltaTable(store.path("t")).get_add_actions(flatten=True)).to_pylist()
    assert len(actions) == 1
    a = actions[0]
    assert a["num_records"] == 10 and a["min.id"] == 0 and a["max.id"] == 9 and a["null_count.name"] == 0


def test_overwrite_replaces_content(spark, store):
    store.append("t", frame(spark, range(5)))
    store.overwrite("t", frame(spark, range(100, 102)))
    assertDataFrameEqual(store.read("t"), frame(spark, range(100, 102)))
    assert DeltaTable(store.path("t")).to_pyarrow_table().num_rows == 2
    # time travel still sees the old snapshot
    assert store.read("t", version=0).count() == 5


def test_append_new_skips_present_keys_and_is_idempotent(spark, store):
    assert store.append_new("t", frame(spark, range(5)), ["id"]) == 5
    v = store.version("t")
    assert store.append_new("t", frame(spark, range(5)), ["id"]) == 0
    assert store.version("t") == v, "a no-op keyed append must not commit"
    assert store.append_new("t", frame(spark, range(3, 9), name="other"), ["id"]) == 4
    rows = {r.id: r.name for r in store.read("t").collect()}
    assert sorted(rows) == list(range(9))
    assert rows[3] == "n3" and rows[8] == "other8", "first write wins for a key"


def test_append_new_dedupes_within_the_batch(spark, store):
    df = frame(spark, [1, 1, 2])
    assert store.append_new("t", df, ["id"]) == 2


def test_schema_mismatch_is_an_explicit_error(spark, store):
    store.append("t", frame(spark, range(2)))
    with pytest.raises(st.SchemaMismatchError, match="missing columns \\['tags'\\]"):
        store.append("t", frame(spark, range(2)).drop("tags"))
    with pytest.raises(st.SchemaMismatchError, match="changed types"):
        store.append("t", frame(spark, range(2)).withColumn("score", F.lit("x")))
    assert store.version("t") == 0
    # nothing half-written is left visible
    assert store.read("t").count() == 2


def test_empty_frame_creates_an_empty_table(spark, store):
    store.append("e", spark.createDataFrame([], SCHEMA))
    assert store.exists("e") and store.read("e").count() == 0
    assert [f.name for f in store.read("e").schema] == ["id", "name", "score", "tags"]


def test_concurrent_keyed_appends_never_double_a_key(spark, store):
    store.append_new("t", frame(spark, [0]), ["id"])
    errors = []

    def writer(lo):
        try:
            store.append_new("t", frame(spark, range(lo, lo + 20)), ["id"])
        except Exception as e:  # pragma: no cover - surfaced by the assert below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(lo,)) for lo in (0, 10, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ids = [r.id for r in store.read("t").select("id").collect()]
    assert sorted(ids) == list(range(30)), "every key exactly once"


def test_keyed_append_retries_when_a_writer_slips_in(spark, store, monkeypatch):
    """A commit that lands between our anti-join and our commit with overlapping keys forces a retry."""
    store.append_new("t", frame(spark, [0]), ["id"])
    backend = store.backend
    real_stage = backend._stage
    calls = {"n": 0}

    def stage_then_race(path, df):
        staged = real_stage(path, df)
        calls["n"] += 1
        if calls["n"] == 1:  # another writer commits keys 1..3 right now
            write_deltalake(path, pa.table({"id": [1, 2, 3], "name": ["x1", "x2", "x3"],
                                            "score": [0.0] * 3, "tags": [["x"]] * 3}),
                            mode="append", schema_mode=None)
        return staged

    monkeypatch.setattr(backend, "_stage", stage_then_race)
    added = store.append_new("t", frame(spark, range(1, 6)), ["id"])
    assert calls["n"] == 2 and added == 2
    rows = {r.id: r.name for r in store.read("t").collect()}
    assert sorted(rows) == [0, 1, 2, 3, 4, 5] and rows[1] == "x1"


def test_refuses_column_mapping_with_the_feature_named(spark, store, tmp_path):
    path = tmp_path / "cm"
    (path / "_delta_log").mkdir(parents=True)
    schema = {"type": "struct", "fields": [{"name": "a", "type": "long", "nullable": True, "metadata": {
        "delta.columnMapping.id": 1, "delta.columnMapping.physicalName": "col-1"}}]}
    log = [
        {"protocol": {"minReaderVersion": 3, "minWriterVersion": 7,
                      "readerFeatures": ["columnMapping"], "writerFeatures": ["columnMapping"]}},
        {"metaData": {"id": "00000000-0000-0000-0000-000000000001", "format": {"provider": "parquet", "options": {}},
                      "schemaString": json.dumps(schema), "partitionColumns": [],
                      "configuration": {"delta.columnMapping.mode": "name"}, "createdTime": 0}},
    ]
    (path / "_delta_log" / "00000000000000000000.json").write_text("\n".join(json.dumps(x) for x in log) + "\n")
    with pytest.raises(st.UnsupportedTableError, match="columnMapping"):
        store.read(str(path))


def test_reads_tables_written_by_deltalake_including_partitions(spark, store, tmp_path):
    path = str(tmp_path / "ext")
    write_deltalake(path, pa.table({"x": [1, 2, 3], "part": ["a", "b", "a"]}), partition_by=["part"])
    df = store.read(path)
    assert sorted((r.x, r.part) for r in df.collect()) == [(1, "a"), (2, "b"), (3, "a")]


def test_missing_table_is_a_clear_error(store):
    with pytest.raises(st.StorageError, match="not a Delta table"):
        store.read("nope")


def test_uri_mapping():
    assert st.delta_uri("s3a://b/k") == "s3://b/k"
    assert st.spark_uri("s3://b/k") == "s3a://b/k"
    assert st.spark_uri("s3://b/k", "s3") == "s3://b/k"
    with pytest.raises(st.StorageError, match="native"):
        st.delta_uri("dbfs:/x")


def test_timestamps_readable_by_deltalake_whatever_the_session_default(spark, cfg):
    import datetime

    spark.conf.set("spark.sql.parquet.outputTimestampType", "INT96")  # Spark's own default
    store = st.TableStore(spark, cfg.storage)  # a bridge on a session we were handed
    store.append("ts", spark.createDataFrame([(datetime.datetime(2024, 5, 1, 12, 0),)], "t timestamp"))
    got = DeltaTable(store.path("ts")).to_pyarrow_table().column("t").to_pylist()
    assert got[0].replace(tzinfo=None) == datetime.datetime(2024, 5, 1, 12, 0)


class _FakeConf:
    def __init__(self, exts):
        self.exts = exts

    def get(self, key, default=None):
        return self.exts if key == "spark.sql.extensions" else default

    def set(self, key, value):
        pass


def test_backend_selection_follows_the_session():
    from types import SimpleNamespace

    from jobs.common.config import StorageConfig

    native = SimpleNamespace(conf=_FakeConf("io.delta.sql.DeltaSparkSessionExtension"))
    plain = SimpleNamespace(conf=_FakeConf(""))
    assert st.make_backend(native, StorageConfig()).name == "native"
    assert st.make_backend(plain, StorageConfig()).name == "bridge"
    with pytest.raises(st.StorageError, match="DeltaSparkSessionExtension"):
        st.make_backend(plain, StorageConfig(backend="native"))
    with pytest.raises(st.StorageError, match="native"):
        st.make_backend(plain, StorageConfig(root="dbfs:/x"))


def _has_delta_jars(spark) -> bool:
    try:
        spark._jvm.java.lang.Class.forName("io.delta.tables.DeltaTable")
        return True
    except Exception:
        return False


def test_native_backend_round_trip_where_the_jars_exist(spark, cfg):
    """Runs on a Spark with delta-spark on the classpath and the Delta SQL extension (not here:
    Maven is unreachable, so the jars cannot be fetched)."""
    from jobs.common.spark import has_delta_extension

    if not (_has_delta_jars(spark) and has_delta_extension(spark)):
        pytest.skip("no Delta jars / SQL extension in this session")
    store = st.TableStore(spark, cfg.storage)
    assert store.backend.name == "native"
    assert store.append_new("n", frame(spark, range(5)), ["id"]) == -1
    store.append_new("n", frame(spark, range(3, 8)), ["id"])
    assert sorted(r.id for r in store.read("n").collect()) == list(range(8))
    assert DeltaTable(store.path("n")).to_pyarrow_table().num_rows == 8
