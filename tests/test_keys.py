"""Content-derived keys: the Spark expressions equal the pure-Python functions."""
from pyspark.sql import functions as F

from jobs.common.llm_stage import content_key_col
from jobs.ingest import doc_id_col
from udfs.keys import doc_id, question_id


def test_spark_and_python_keys_agree(spark):
    rows = [("dclm", "https://x.example/a", "text é ✓"), ("finemath", None, ""), ("s", "u", None)]
    df = spark.createDataFrame(rows, "source string, url string, text string")
    got = df.select(doc_id_col(F.col("source"), F.col("url"), F.col("text")).alias("k"),
                    content_key_col(F.col("source"), F.col("text")).alias("q")).collect()
    assert [r.k for r in got] == [doc_id(*r) for r in rows]
    assert [r.q for r in got] == [question_id(s, t) for s, _, t in rows]


def test_keys_are_stable_and_distinct():
    assert doc_id("a", "b", "c") == doc_id("a", "b", "c")
    assert doc_id("a", "b", "c") != doc_id("a", "bc", "")  # the separator keeps fields apart
    assert len(doc_id("a", "b", "c")) == 32
