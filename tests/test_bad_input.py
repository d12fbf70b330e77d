"""The bad-input matrix: ingest and the standalone tools over JSONL, Parquet and Delta inputs.

Row-level problems (null, empty and whitespace-only text, a 50 MB text, invalid UTF-8 and
unparseable lines in JSONL, NUL and control characters, duplicate rows and null urls) each
end as a documents row with a documented status and a count in ``runs``; none crashes the
stage. File-level problems (a missing text column, a text column of the wrong type, Parquet
files whose schemas conflict) stop the stage with an error that names the source, the path,
and the file and column, and leave what was committed before untouched.
"""
from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake
from pyspark.sql import functions as F

from jobs.common.config import load_config
from jobs.pipeline import run_stage
from jobs.common.storage import TableStore
from jobs.stages.corpus.ingest import SourceError

BIG = 50 * 1024 * 1024
GOOD = "a page long enough to be a document, with words and numbers 1 2 3. " * 3
CONTROL = "a page with a NUL \x00 here and controls \x01\x07\x1b\x1f and a BOM \ufeff in the middle of it."
ROWS = [  # (url, text, expected status)
    ("u-good", GOOD, "ok"),
    ("u-null", None, "null_text"),
    ("u-empty", "", "empty_text"),
    ("u-blank", " \n\t \r\n ", "empty_text"),
    ("u-big", "y" * BIG, "too_long"),
    ("u-control", CONTROL, "ok"),
    ("u-dup", GOOD + " twice", "ok"),
    ("u-dup", GOOD + " twice", "ok"),  # the same row again: one document, counted as a duplicate
    (None, GOOD + " without a url", "ok"),
]
STATUSES = {"ok", "corrupt_record", "null_text", "empty_text", "too_short", "too_long"}


def write_sources(tmp_path) -> dict:
    table = pa.table({"url": [r[0] for r in ROWS], "text": [r[1] for r in ROWS]})
    paths = {}
    jsonl = tmp_path / "in.jsonl"
    with open(jsonl, "wb") as f:
        for url, text, _ in ROWS:
            f.write(json.dumps({"url": url, "text": text}).encode() + b"\n")
        f.write(b'{"url": "u-badutf8", "text": "caf\xe9 \xff\xfe not utf-8 bytes in a page of text"}\n')
        f.write(b'{"url": "u-broken", "text": "a line cut off in the mid\n')
    paths["jsonl"] = str(jsonl)
    os.makedirs(tmp_path / "pq")
    pq.write_table(table, tmp_path / "pq" / "part-0.parquet")
    # a later file with one more column: the schemas merge
    pq.write_table(pa.table({"url": ["u-later"], "text": [GOOD + " later"], "lang": ["en"]}),
                   tmp_path / "pq" / "part-1.parquet")
    paths["parquet"] = str(tmp_path / "pq")
    write_deltalake(str(tmp_path / "delta"), table)
    paths["delta"] = str(tmp_path / "delta")
    return paths


def ingest_cfg(root, sources: list[dict], max_chars: int = 200_000):
    return load_config(None, [f"storage.root={root}", "pipeline.progress=false", f"ingest.max_chars={max_chars}",
                              "ingest.sources=" + json.dumps(sources)])


@pytest.fixture(scope="module")
def matrix_run(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("bad_input")
    paths = write_sources(base)
    cfg = ingest_cfg(str(base / "root"), [{"name": fmt, "path": p, "format": fmt} for fmt, p in paths.items()])
    row = run_stage(cfg, "ingest", spark=spark)
    store = TableStore(spark, cfg.storage)
    docs = store.read("documents").select("source", "url", "status", "n_chars", F.length("text").alias("text_len"),
                                          F.substring("text", 1, 300).alias("head")).collect()
    return cfg, store, row, docs, paths


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "delta"])
def test_every_bad_row_gets_a_status(matrix_run, fmt):
    _, _, _, docs, _ = matrix_run
    mine = [d for d in docs if d.source == fmt]
    assert {d.status for d in mine} <= STATUSES
    by_url = {}
    for d in mine:
        if d.status != "corrupt_record":
            by_url.setdefault(d.url, []).append(d)
    for url, _, status in ROWS:
        if fmt == "jsonl" and url == "u-big" and url not in by_url:
            continue  # Spark's JSON parser (Jackson) refuses strings over 20M chars: see below
        assert [d.status for d in by_url[url]] == [status], (fmt, url)
    if fmt == "jsonl" and "u-big" not in by_url:
        # the whole 50 MB line is kept as a corrupt_record, its real length counted
        [big] = [d for d in mine if d.status == "corrupt_record" and d.n_chars > BIG]
    else:
        big = by_url["u-big"][0]
        assert big.n_chars == BIG  # the count records the real size
    assert big.text_len == 200_000  # the stored text is cut to max_chars
    assert by_url["u-control"][0].head == CONTROL  # NUL and control characters survive unchanged
    if fmt == "jsonl":
        corrupt = [d for d in mine if d.status == "corrupt_record"]
        assert any("a line cut off" in d.head for d in corrupt), "the cut-off line is kept, raw, as corrupt_record"
        if "u-badutf8" in by_url:
            assert by_url["u-badutf8"][0].status == "ok" and "\ufffd" in by_url["u-badutf8"][0].head
        else:
            assert any("not utf-8 bytes" in d.head for d in corrupt)
    if fmt == "parquet":
        assert by_url["u-later"][0].status == "ok"  # the file with an extra column was merged in


def test_counts_in_runs_cover_every_input_row(matrix_run):
    _, store, row, docs, _ = matrix_run
    c = row["counts"]
    n_jsonl = len(ROWS) + 2
    assert c["in_jsonl"] == n_jsonl and c["in_parquet"] == len(ROWS) + 1 and c["in_delta"] == len(ROWS)
    assert c["dropped_exact_duplicate_row"] == 3  # one per source
    assert c["in"] == c["out"] + c["dropped_exact_duplicate_row"]
    by_status = {}
    for d in docs:
        by_status[d.status] = by_status.get(d.status, 0) + 1
    for status, n in by_status.items():
        assert c["ok" if status == "ok" else f"dropped_{status}"] == n, status
    [runs_row] = store.read("runs").where(F.col("stage") == "ingest").collect()
    assert runs_row.status == "ok" and dict(runs_row.counts) == {k: v for k, v in c.items()}


def _parquet(path, table):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path)


def test_file_level_problems_name_the_file_and_column_and_lose_nothing(spark, tmp_path, matrix_run):
    root = str(tmp_path / "root")
    good = tmp_path / "good"
    _parquet(str(good / "a.parquet"), pa.table({"url": ["g"], "text": [GOOD]}))
    cfg = ingest_cfg(root, [{"name": "good", "path": str(good), "format": "parquet"}])
    run_stage(cfg, "ingest", spark=spark)
    store = TableStore(spark, cfg.storage)
    version, committed = store.version("documents"), store.read("documents").count()

    # text column missing
    nocol = tmp_path / "nocol"
    _parquet(str(nocol / "a.parquet"), pa.table({"url": ["x"], "body": [GOOD]}))
    # text column of the wrong type (JSONL numbers, Parquet integers, a Delta struct)
    wrong_jsonl = tmp_path / "wrong.jsonl"
    wrong_jsonl.write_text('{"url": "a", "text": 12}\n{"url": "b", "text": 13}\n')
    wrong_pq = tmp_path / "wrongpq"
    _parquet(str(wrong_pq / "a.parquet"), pa.table({"url": ["x"], "text": [42]}))
    wrong_delta = tmp_path / "wrongdelta"
    write_deltalake(str(wrong_delta), pa.table({"url": ["x"], "text": [{"a": 1}]}))
    # the text column changes type between two files of one source
    drift = tmp_path / "drift"
    _parquet(str(drift / "part-0.parquet"), pa.table({"url": ["x"], "text": [GOOD]}))
    _parquet(str(drift / "part-1.parquet"), pa.table({"url": ["y"], "text": [7]}))

    cases = [
        ("nocol", "parquet", str(nocol), ["'text'", "not found", str(nocol), "body"]),
        ("wrongjsonl", "jsonl", str(wrong_jsonl), ["'text'", "bigint", "expected string", str(wrong_jsonl)]),
        ("wrongpq", "parquet", str(wrong_pq), ["'text'", "bigint", "expected string"]),
        ("wrongdelta", "delta", str(wrong_delta), ["'text'", "struct", "expected string"]),
        ("drift", "parquet", str(drift), ["'text'", "part-0.parquet", "part-1.parquet", "cannot be read"]),
    ]
    for name, fmt, path, expected in cases:
        bad = ingest_cfg(root, [{"name": "good", "path": str(good), "format": "parquet"},
                                {"name": name, "path": path, "format": fmt}])
        with pytest.raises(SourceError) as err:
            run_stage(bad, "ingest", spark=spark)
        msg = str(err.value)
        assert f"source {name!r}" in msg and all(e in msg for e in expected), msg
        assert store.version("documents") == version and store.read("documents").count() == committed
    failed = store.read("runs").where((F.col("stage") == "ingest") & (F.col("status") == "failed")).collect()
    assert len(failed) == len(cases) and all("SourceError" in r.error for r in failed)


def test_standalone_tools_on_bad_rows(spark, tmp_path, capsys):
    from jobs.tools import decontaminate, dedup

    rows = [{"id": "1", "question": GOOD}, {"id": "2", "question": None}, {"id": "3", "question": ""},
            {"id": "4", "question": " \n "}, {"id": "5", "question": CONTROL}, {"id": "6", "question": GOOD}]
    src = tmp_path / "q.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq_dir = tmp_path / "qpq"
    _parquet(str(pq_dir / "a.parquet"), pa.table({"id": [r["id"] for r in rows], "question": [r["question"] for r in rows]}))
    delta_dir = tmp_path / "qdelta"
    write_deltalake(str(delta_dir), pa.table({"id": [r["id"] for r in rows], "question": [r["question"] for r in rows]}))
    bench = tmp_path / "bench.jsonl"  # a one-item benchmark holding the good text: fast, and it must match
    bench.write_text(json.dumps({"id": "b1", "q": GOOD}) + "\n")
    bench_cfg = tmp_path / "bench.yaml"
    bench_cfg.write_text(json.dumps({"benchmarks": [{"name": "tiny", "path": str(bench), "text_fields": ["q"],
                                                     "id_field": "id"}]}))
    for fmt, path in (("jsonl", src), ("parquet", pq_dir), ("delta", delta_dir)):
        out = tmp_path / f"out_{fmt}"
        rc = dedup.cli_main(["--input", str(path), "--input-format", fmt, "--id-col", "id", "--text-col", "question",
                             "--output", str(out), "--master", "local[2]"])
        assert rc == 0, fmt
        clusters = spark.read.parquet(str(out / "clusters"))
        removed = {r.id for r in clusters.where(~F.col("keep")).collect()}
        # rows 1 and 6 are the same text: the higher id goes; the control-character row stays
        # (how null and empty texts are clustered is jobs/common/lsh.py's own contract)
        assert "6" in removed and not removed & {"1", "5"}, (fmt, removed)
        rc = decontaminate.cli_main(["--input", str(path), "--input-format", fmt, "--id-col", "id",
                                     "--text-col", "question", "--output", str(out), "--master", "local[2]",
                                     "--benchmarks-config", str(bench_cfg)])
        assert rc == 0, fmt
        flagged = {r.item_id for r in spark.read.parquet(str(out / "contamination")).collect()}
        assert flagged == {"1", "6"}, (fmt, flagged)
    # file-level: a missing column is a clear error naming it
    capsys.readouterr()
    for tool in (dedup, decontaminate):
        rc = tool.cli_main(["--input", str(src), "--input-format", "jsonl", "--id-col", "id", "--text-col", "nope",
                            "--output", str(tmp_path / "o"), "--master", "local[2]"])
        assert rc == 2
    err = capsys.readouterr().err
    assert err.count("nope") >= 2 and str(src) in err
