"""Content-derived keys: the Spark expressions equal the pure-Python functions."""
from pyspark.sql import functions as F

from udfs.keys import content_key, content_key_col, doc_id, question_id, stable_hash


def test_spark_and_python_keys_agree(spark):
    rows = [("dclm", "https://x.example/a", "text é ✓"), ("finemath", None, ""), ("s", "u", None)]
    df = spark.createDataFrame(rows, "source string, url string, text string")
    got = df.select(content_key_col(F.col("source"), F.col("url"), F.col("text")).alias("k"),
                    content_key_col(F.col("source"), F.col("text")).alias("q")).collect()
    assert [r.k for r in got] == [doc_id(*r) for r in rows]
    assert [r.q for r in got] == [question_id(s, t) for s, _, t in rows]


def test_keys_are_pinned_and_fields_stay_apart():
    # A changed recipe would silently re-key every stored table: the digits are pinned.
    assert content_key("dclm", "https://a.example/x", "hello")[:8] == "a89ed9b2"
    assert doc_id("a", "b", "c") != doc_id("a", "bc", "")  # the separator keeps fields apart
    assert doc_id(None, "b", "c") == doc_id("", "b", "c")
    assert len(doc_id("a", "b", "c")) == 32 and len(content_key("x", length=8)) == 8


def test_stable_hash_ignores_key_order():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    assert len(stable_hash({})) == 16
