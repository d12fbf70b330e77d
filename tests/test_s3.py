"""S3 through a real S3 API on this machine (moto's server on 127.0.0.1).

Local pyspark has no hadoop-aws, so Spark itself cannot read s3a:// here; with
``storage.io=auto`` our tasks move those bytes through ``udfs/fs.py`` and delta-rs commits, so
the pipeline's own tables, exports, benchmarks and standalone tools work on S3 with only config
changes. What stays Spark's on a cluster (its Parquet reader/writer on s3a://) is the same call
on a local folder, covered by the rest of the suite.
"""
from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.common import storage as st
from jobs.common.config import load_config
from tests.conftest import REPO
from tests.moto_s3 import CREDS, assert_clear, deny_unknown_keys, s3, s3_server, spark_s3  # noqa: F401
from udfs import fs

SCHEMA = "id long, name string, score double, tags array<string>"


def frame(spark, ids, name="n"):
    return spark.createDataFrame([(i, f"{name}{i}", i / 2, [f"t{i}"]) for i in ids], SCHEMA)


def s3_config(s3, tmp_path, *more):
    opts = [f"storage.storage_options.{k}={v}" for k, v in s3.options.items()]
    return load_config(None, [f"storage.root={s3.uri('root')}", "pipeline.progress=false", *opts,
                              f"llm.cache_dir={tmp_path / 'cache'}", *more])


# --------------------------------------------------------------------------- the filesystem layer


def test_local_s3_s3a_and_dbfs_paths_behave_the_same(s3, tmp_path, monkeypatch):
    monkeypatch.setenv(fs.DBFS_MOUNT_ENV, str(tmp_path / "dbfs"))
    roots = [str(tmp_path / "local"), s3.uri("a"), f"s3a://{s3.bucket}/b", "dbfs:/c", f"file://{tmp_path}/d"]
    for root in roots:
        fs.write_text(f"{root}/x/one.jsonl", '{"q": 1}\n', s3.options)
        fs.write_bytes(f"{root}/x/two.csv", b"a,b\n1,2\n", s3.options)
        assert fs.exists(f"{root}/x/one.jsonl", s3.options) and fs.isdir(f"{root}/x", s3.options)
        assert not fs.exists(f"{root}/x/none", s3.options)
        assert fs.read_text(f"{root}/x/one.jsonl", s3.options) == '{"q": 1}\n'
        assert [p for p, _ in fs.list_files(f"{root}/x", s3.options)] == [f"{root}/x/one.jsonl", f"{root}/x/two.csv"]
        assert fs.glob(f"{root}/x/*.csv", s3.options) == [f"{root}/x/two.csv"]
        fs.delete_dir(f"{root}/x", s3.options)
        assert not fs.exists(f"{root}/x/one.jsonl", s3.options)
    assert os.path.isdir(tmp_path / "dbfs"), "dbfs:/ is Databricks' FUSE mount"
    # pyarrow leaves empty "folder" marker objects (keys ending in /) after deletes; no data remains.
    assert [k for k in s3.keys() if not k.endswith("/")] == []


def test_storage_options_reach_the_filesystem(s3):
    """Region and endpoint come from storage_options, not only from the environment."""
    fs.write_text(s3.uri("k/v.txt"), "hello", s3.options)
    s3fs_, inner = fs.resolve(s3.uri("k/v.txt"), s3.options)
    assert s3fs_.region == "us-east-1" and inner == f"{s3.bucket}/k/v.txt"
    assert fs.boto3_client_kwargs(s3.options) == {"region_name": "us-east-1", "endpoint_url": s3.endpoint}
    bridge_fs, base = st._filesystem(s3.uri("k"), s3.options)
    assert base == f"{s3.bucket}/k" and bridge_fs.get_file_info(f"{base}/v.txt").size == 5


def test_missing_bucket_and_missing_key_are_named(s3):
    with pytest.raises(fs.BucketNotFound) as e:
        fs.read_text("s3://no-such-bucket-nr/x.json", s3.options)
    assert_clear(e.value, "s3://no-such-bucket-nr/x.json", "no-such-bucket-nr", "does not exist")
    with pytest.raises(fs.PathNotFound) as e:
        fs.read_text(s3.uri("nothing/here.json"), s3.options)
    assert not isinstance(e.value, fs.BucketNotFound)
    assert_clear(e.value, s3.uri("nothing/here.json"), "no such file")


def test_wrong_credentials_name_the_path_and_no_secret(s3, monkeypatch, deny_unknown_keys):
    fs.write_text(s3.uri("secret/file.txt"), "x", s3.options)
    deny_unknown_keys()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
    with pytest.raises(fs.AccessDenied) as e:
        fs.read_text(s3.uri("secret/file.txt"), s3.options)
    assert_clear(e.value, s3.uri("secret/file.txt"), "access denied", "AWS_ACCESS_KEY_ID")
    with pytest.raises(fs.AccessDenied) as e:
        fs.write_text(s3.uri("secret/new.txt"), "x", s3.options)
    assert_clear(e.value, s3.uri("secret/new.txt"), "access denied")


def test_config_refuses_secrets_in_storage_options():
    from jobs.common.config import ConfigError

    with pytest.raises(ConfigError) as e:
        load_config(None, ["storage.storage_options.AWS_SECRET_ACCESS_KEY=abc123456"])
    assert "environment" in str(e.value) and "abc123456" not in str(e.value)


# --------------------------------------------------------------------------- Delta tables on S3


def test_spark_here_cannot_reach_s3_so_our_tasks_move_the_bytes(spark, s3, tmp_path):
    cfg = s3_config(s3, tmp_path)
    assert not st.spark_handles(spark, s3.uri("root/t"), cfg.storage)
    assert st.spark_handles(spark, str(tmp_path), cfg.storage)
    assert st.spark_handles(spark, s3.uri("root/t"), cfg.storage.model_copy(update={"io": "spark"}))


def test_bridge_commits_reads_and_keys_present_on_s3(spark_s3, s3, tmp_path):
    spark = spark_s3
    cfg = s3_config(s3, tmp_path)
    store = st.TableStore(spark, cfg.storage)
    assert store.backend.name == "bridge"
    assert store.append_new("t", frame(spark, range(6)), ["id"]) == 6
    assert store.append_new("t", frame(spark, range(4, 9), name="other"), ["id"]) == 3
    assert store.append_new("t", frame(spark, range(9)), ["id"]) == 0, "a re-run adds nothing"
    assert store.version("t") == 1
    assertDataFrameEqual(store.read("t").where("id < 6"), frame(spark, range(6)))
    assert sorted(r.id for r in store.keys_present("t", ["id"]).collect()) == list(range(9))
    # The commit is an ordinary Delta table on S3 that delta-rs reads with the same options.
    dt = DeltaTable(s3.uri("root/t"), storage_options=s3.options)
    assert dt.version() == 1 and sorted(dt.to_pyarrow_table().column("id").to_pylist()) == list(range(9))
    adds = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    assert sum(a["num_records"] for a in adds) == 9 and all(a["min.id"] is not None for a in adds)
    # Every object under the table is in the log or is the log: nothing staged was left behind.
    data_keys = {k for k in s3.keys("root/t/") if "/_delta_log/" not in k and not k.endswith("/")}
    assert data_keys == {f"root/t/{a['path']}" for a in adds}
    store.overwrite("t", frame(spark, range(100, 102)))
    assert store.read("t").count() == 2 and store.read("t", version=1).count() == 9


def test_a_stage_on_s3_writes_its_table_and_its_runs_row(spark_s3, s3, tmp_path):
    from jobs.pipeline import run_stage

    cfg = s3_config(s3, tmp_path)
    row = run_stage(cfg, "bootstrap", spark=spark_s3)
    assert row["status"] == "ok" and row["counts"]["out"] > 0
    store = st.TableStore(spark_s3, cfg.storage)
    runs = store.read("runs").collect()
    assert [(r.stage, r.status, r.run_id) for r in runs] == [("bootstrap", "ok", row["run_id"])]
    dclm = store.read(f"{cfg.storage.root}/sources/dclm")
    with open(os.path.join(REPO, "data", "sample", "dclm_baseline.jsonl")) as f:
        assert dclm.count() == sum(1 for line in f if line.strip())
    again = run_stage(cfg, "bootstrap", spark=spark_s3)
    assert again["counts"].get("out") is None and store.read("runs").count() == 2


def test_a_missing_bucket_fails_the_write_with_its_name(spark_s3, s3, tmp_path):
    cfg = load_config(None, ["storage.root=s3://no-such-bucket-nr/root",
                             *[f"storage.storage_options.{k}={v}" for k, v in s3.options.items()]])
    store = st.TableStore(spark_s3, cfg.storage)
    with pytest.raises(fs.StorageAccessError) as e:
        store.append("t", frame(spark_s3, range(2)))
    assert_clear(e.value, "s3://no-such-bucket-nr/root/t", "no-such-bucket-nr")


# --------------------------------------------------------------------------- exports


def test_export_to_s3_writes_jsonl_and_parquet_that_read_back(spark_s3, s3, tmp_path):
    from types import SimpleNamespace

    from jobs.stages.answers.dataset import export

    cfg = s3_config(s3, tmp_path, f"dataset.export_dir=s3://{s3.bucket}/exports/v1")
    rows = [(f"q{i}", None if i % 2 else f"a{i}", [(f"m{i}", f"r{i}")], f"id{i:02d}") for i in range(7)]
    df = spark_s3.createDataFrame(rows, "question string, reference_answer string, "
                                        "responses array<struct<response_model:string,response:string>>, "
                                        "question_id string")
    fs.write_text(s3.uri("exports/v1/jsonl/stale.json"), '{"old": 1}\n', s3.options)
    where = export(SimpleNamespace(cfg=cfg, spark=spark_s3), df)
    assert where == s3.uri("exports/v1")
    lines = [json.loads(line) for p, _ in fs.list_files(s3.uri("exports/v1/jsonl"), s3.options)
             for line in fs.read_text(p, s3.options).splitlines()]
    assert sorted(x["question_id"] for x in lines) == [f"id{i:02d}" for i in range(7)], "stale files are gone"
    assert all("reference_answer" in x for x in lines), "null fields are written, as Spark's writer does"
    assert lines[0]["responses"][0] == {"response_model": "m0", "response": "r0"}
    assert read_parquet_s3(s3, "exports/v1/parquet").num_rows == 7


# --------------------------------------------------------------------------- the standalone tools on S3


def read_parquet_s3(s3, folder) -> pa.Table:
    parts = []
    for p, _ in fs.list_files(s3.uri(folder), s3.options):
        with fs.open_input(p, s3.options) as f:
            parts.append(pq.read_table(f))
    return pa.concat_tables(parts)


def storage_args(s3) -> list[str]:
    return [a for k, v in s3.options.items() for a in ("--storage-option", f"{k}={v}")]


BASE = "the quick brown fox jumps over the lazy dog near the old river bank today"


def test_nr_dedup_reads_jsonl_from_s3_and_writes_parquet_to_s3(spark_s3, s3):
    from jobs.tools.dedup import cli_main

    rows = [{"id": "a", "text": BASE}, {"id": "b", "text": BASE + " again"},
            {"id": "c", "text": "completely different words about linear algebra and eigenvalues"}]
    s3.put("in/part-0.jsonl", "".join(json.dumps(r) + "\n" for r in rows[:2]).encode())
    s3.put("in/part-1.jsonl", (json.dumps(rows[2]) + "\n").encode())
    assert cli_main(["--input", s3.uri("in"), "--input-format", "jsonl", "--id-col", "id", "--text-col", "text",
                     "--output", s3.uri("out"), *storage_args(s3)]) == 0
    clusters = {r["id"]: r for r in read_parquet_s3(s3, "out/clusters").to_pylist()}
    assert {k: (v["cluster_id"], v["keep"]) for k, v in clusters.items()} == {
        "a": ("a", True), "b": ("a", False), "c": ("c", True)}
    pairs = read_parquet_s3(s3, "out/pairs").to_pylist()
    assert [(p["id_a"], p["id_b"]) for p in pairs] == [("a", "b")] and pairs[0]["jaccard"] > 0.55


def test_nr_dedup_reports_a_missing_input_with_its_path(spark_s3, s3):
    from jobs.tools.dedup import cli_main

    with pytest.raises(fs.PathNotFound) as e:
        cli_main(["--input", s3.uri("nothing"), "--input-format", "parquet", "--id-col", "id", "--text-col", "t",
                  "--output", s3.uri("out"), *storage_args(s3)])
    assert_clear(e.value, s3.uri("nothing"), "no such file")


QUESTION = ("a train leaves the station at noon travelling at sixty miles per hour toward a city "
            "two hundred miles away so when does it arrive")


def test_the_benchmark_index_and_raw_benchmarks_read_from_s3_as_from_disk(s3, tmp_path):
    from jobs.common import benchmark_index as bi

    fs.upload(bi.BUILTIN_INDEX, s3.uri("index"), s3.options)
    local, remote = bi.read(bi.BUILTIN_INDEX), bi.read(s3.uri("index"), s3.options)
    assert remote.manifest == local.manifest and remote.ngrams.equals(local.ngrams)
    s3.put("bench/mine.jsonl", (json.dumps({"id": "b1", "question": QUESTION}) + "\n").encode())
    (tmp_path / "mine.jsonl").write_text(json.dumps({"id": "b1", "question": QUESTION}) + "\n")
    from jobs.common.config import BenchmarkConfig

    mine = BenchmarkConfig(name="mine", format="jsonl", path="{benchmarks_dir}/mine.jsonl",
                           text_fields=["question"], id_field="id")
    a, _ = bi.assemble(["math", mine], s3.uri("bench"), 13, s3.uri("index"), s3.options)
    b, _ = bi.assemble(["math", mine], str(tmp_path), 13, "builtin")
    assert a.ngrams.equals(b.ngrams) and a.items.equals(b.items)
    with pytest.raises(fs.BucketNotFound) as e:
        bi.read("s3://no-such-bucket-nr/index", s3.options)
    assert_clear(e.value, "s3://no-such-bucket-nr/index/manifest.json", "does not exist")


def test_nr_decontaminate_reads_parquet_and_benchmarks_from_s3_and_writes_to_s3(spark_s3, s3, tmp_path, capsys):
    from jobs.common import benchmark_index as bi
    from jobs.tools.decontaminate import cli_main

    fs.upload(bi.BUILTIN_INDEX, s3.uri("index"), s3.options)
    s3.put("bench/mine.jsonl", (json.dumps({"id": "b1", "question": QUESTION}) + "\n").encode())
    conf = tmp_path / "b.yaml"
    conf.write_text("benchmarks: [math, {name: mine, format: jsonl, path: '{benchmarks_dir}/mine.jsonl', "
                    "text_fields: [question], id_field: id}]\n")
    items = pa.table({"key": [7, 8], "text": ["Question: " + QUESTION.upper() + "!", "clean words only"]})
    buf = pa.BufferOutputStream()
    pq.write_table(items, buf)
    s3.put("items/part-0.parquet", buf.getvalue().to_pybytes())
    assert cli_main(["--input", s3.uri("items"), "--input-format", "parquet", "--id-col", "key",
                     "--text-col", "text", "--output", s3.uri("out"), "--benchmarks-config", str(conf),
                     "--benchmarks-dir", s3.uri("bench"), "--index", s3.uri("index"), *storage_args(s3)]) == 0
    rows = read_parquet_s3(s3, "out/contamination").to_pylist()
    assert [(r["item_id"], r["benchmark"], r["benchmark_item_id"]) for r in rows] == [("7", "mine", "b1")]
    checked = capsys.readouterr().out
    assert "math (" in checked and "mine (1 items" in checked, checked
    # A clean input still leaves a readable, empty contamination table.
    assert cli_main(["--input", s3.uri("items"), "--input-format", "parquet", "--id-col", "key",
                     "--text-col", "text", "--output", s3.uri("clean"), "--index", s3.uri("index"),
                     *storage_args(s3)]) == 0
    assert read_parquet_s3(s3, "clean/contamination").num_rows == 0
