"""ingest reads the corpora as they are downloaded: DCLM-baseline's nested folders of .jsonl,
.jsonl.gz and .jsonl.zst shards, FineMath's folders of Parquet shards, and globs; a folder with
nothing readable is a SourceError that says what the folder holds."""
import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from jobs.common.config import SourceConfig, load_config, validate_config
from jobs.common.storage import TableStore
from jobs.pipeline import run_stage
from jobs.stages.corpus.ingest import SourceError, _extension
from tests.moto_s3 import s3, s3_server, spark_s3  # noqa: F401
from udfs import fs

DCLM_PROB = "fasttext_openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train_prob"


def page(i: int, kind: str) -> dict:
    return {"text": f"{kind} page {i}: " + "a worked example with several steps " * 4, "url": f"https://{kind}.example/{i}",
            DCLM_PROB: 0.5}


def write_dclm_layout(spark, root: str) -> int:
    """global-shard_01_of_10/local-shard_{0,1}_of_10/shard_*_processed.jsonl[.gz|.zst], plus files
    that are not shards (a README, a .gitattributes). Returns the number of pages."""
    n = 0
    plain = os.path.join(root, "global-shard_01_of_10", "local-shard_0_of_10")
    os.makedirs(plain)
    with open(os.path.join(plain, "shard_00000000_processed.jsonl"), "w") as f:
        for i in range(3):
            f.write(json.dumps(page(n, "plain")) + "\n")
            n += 1
    with gzip.open(os.path.join(plain, "shard_00000001_processed.jsonl.gz"), "wt") as f:
        for i in range(2):
            f.write(json.dumps(page(n, "gz")) + "\n")
            n += 1
    # zstd through the zstd-jni library Spark ships (no zstd module needed in Python)
    zst = os.path.join(root, "global-shard_01_of_10", "local-shard_1_of_10")
    os.makedirs(zst)
    body = "".join(json.dumps(page(n + i, "zst")) + "\n" for i in range(4)).encode()
    n += 4
    jvm = spark.sparkContext._jvm
    out = jvm.com.github.luben.zstd.ZstdOutputStream(
        jvm.java.io.FileOutputStream(os.path.join(zst, "shard_00000000_processed.jsonl.zst")))
    out.write(bytearray(body))
    out.close()
    with open(os.path.join(root, "README.md"), "w") as f:
        f.write("# DCLM-baseline\nnot a shard\n")
    with open(os.path.join(root, ".gitattributes"), "w") as f:
        f.write("*.zst filter=lfs\n")
    return n


def write_finemath_layout(root: str) -> int:
    """data/finemath-3plus/train-0000{0,1}-of-00002.parquet plus a README."""
    shards = os.path.join(root, "data", "finemath-3plus")
    os.makedirs(shards)
    n = 0
    for s in range(2):
        rows = [{"text": f"math page {n + i}: " + "solve for x and check the result " * 4,
                 "url": f"https://fm.example/{n + i}", "score": 3.5, "int_score": 4} for i in range(5)]
        n += len(rows)
        pq.write_table(pa.Table.from_pylist(rows), os.path.join(shards, f"train-{s:05d}-of-00002.parquet"))
    with open(os.path.join(root, "README.md"), "w") as f:
        f.write("# FineMath\n")
    return n


def config(tmp_path, sources: list[dict]):
    return validate_config({"storage": {"root": str(tmp_path / "root")}, "pipeline": {"progress": False},
                            "ingest": {"sources": sources, "min_chars": 10}}, "test")


def test_both_download_layouts_ingest_from_their_top_folders(spark, tmp_path):
    dclm_pages = write_dclm_layout(spark, str(tmp_path / "dclm"))
    fm_pages = write_finemath_layout(str(tmp_path / "finemath"))
    cfg = config(tmp_path, [
        {"name": "dclm", "path": str(tmp_path / "dclm"), "format": "jsonl", "keep_cols": [DCLM_PROB]},
        {"name": "finemath", "path": str(tmp_path / "finemath"), "format": "parquet",
         "keep_cols": ["score", "int_score"], "filter": "int_score >= 3"},
    ])
    row = run_stage(cfg, "ingest", spark=spark)
    docs = TableStore(spark, cfg.storage).read("documents")
    got = {r["source"]: r["count"] for r in docs.groupBy("source").count().collect()}
    assert got == {"dclm": dclm_pages, "finemath": fm_pages}
    assert row["counts"]["in"] == dclm_pages + fm_pages
    kinds = {r[0] for r in docs.where(F.col("source") == "dclm").select(F.split("url", r"\.")[0]).collect()}
    assert kinds == {"https://plain", "https://gz", "https://zst"}  # every compression was read
    assert docs.where(F.col("text").contains("not a shard")).count() == 0  # the README is not a page


def test_a_glob_of_shards_ingests(spark, tmp_path):
    fm_pages = write_finemath_layout(str(tmp_path / "finemath"))
    cfg = config(tmp_path, [{"name": "finemath", "format": "parquet",
                             "path": str(tmp_path / "finemath" / "data" / "*" / "train-*.parquet")}])
    run_stage(cfg, "ingest", spark=spark)
    assert TableStore(spark, cfg.storage).read("documents").count() == fm_pages


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_folder_without_shards_says_what_it_holds(spark, tmp_path, fmt):
    folder = tmp_path / "download"
    (folder / "sub").mkdir(parents=True)
    (folder / "README.md").write_text("# nothing here\n")
    (folder / "sub" / "notes.txt").write_text("still nothing\n")
    cfg = config(tmp_path, [{"name": "dclm", "path": str(folder), "format": fmt}])
    with pytest.raises(SourceError) as e:
        run_stage(cfg, "ingest", spark=spark)
    msg = str(e.value)
    assert str(folder) in msg and "2 file(s)" in msg and "1 .md" in msg and "1 .txt" in msg


def test_extensions_count_compression_with_the_format():
    assert _extension("a/b/shard_00000000_processed.jsonl.zst") == ".jsonl.zst"
    assert _extension("x.parquet") == ".parquet" and _extension("README") == "(no extension)"


def test_both_layouts_ingest_from_s3_prefixes(spark_s3, s3, tmp_path):
    dclm_pages = write_dclm_layout(spark_s3, str(tmp_path / "dclm"))
    fm_pages = write_finemath_layout(str(tmp_path / "finemath"))
    for name in ("dclm", "finemath"):
        fs.upload(str(tmp_path / name), s3.uri(f"downloads/{name}"), s3.options)
    opts = [f"storage.storage_options.{k}={v}" for k, v in s3.options.items()]
    cfg = load_config(None, [f"storage.root={s3.uri('root')}", "pipeline.progress=false", "ingest.min_chars=10", *opts])
    cfg = cfg.model_copy(update={"ingest": cfg.ingest.model_copy(update={"sources": [
        SourceConfig(name="dclm", path=s3.uri("downloads/dclm"), format="jsonl", keep_cols=[DCLM_PROB]),
        SourceConfig(name="finemath", path=s3.uri("downloads/finemath"), format="parquet")]})})
    run_stage(cfg, "ingest", spark=spark_s3)
    docs = TableStore(spark_s3, cfg.storage).read("documents")
    assert {r["source"]: r["count"] for r in docs.groupBy("source").count().collect()} == {
        "dclm": dclm_pages, "finemath": fm_pages}
