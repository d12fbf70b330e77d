"""13-gram decontamination against the real benchmark files in ../shared/data."""
import csv
import json
import os

import pytest
from pyspark.sql import functions as F

from jobs.benchmarks import BUILTIN, MMLU_STEM, load_benchmark
from jobs.common.config import BenchmarkConfig
from jobs.decontaminate import benchmark_ngrams, find_contamination
from tests.conftest import SHARED_DATA
from udfs import ngrams

BENCH = os.path.join(SHARED_DATA, "benchmarks")
pytestmark = pytest.mark.skipif(not os.path.isdir(BENCH), reason="../shared/data/benchmarks not present")


def long_math_question():
    with open(os.path.join(BENCH, "math_test.csv"), newline="") as f:
        for i, r in enumerate(csv.DictReader(f)):
            if len(ngrams.tokens(r["Question"])) >= 30:
                return str(i), r["Question"]


def long_gpqa_question():
    with open(os.path.join(BENCH, "gpqa_diamond.csv"), newline="") as f:
        r = next(r for r in csv.DictReader(f) if len(ngrams.tokens(r["Question"])) >= 30)
    return r["Record ID"], r["Question"]


def test_normalization_is_lm_evals():
    assert ngrams.normalize("Hello, World! (x+y)^2 — café") == "hello world xy2 — café"
    assert ngrams.tokens("a\tb\n c") == ["a", "b", "c"]
    assert len(ngrams.ngrams(" ".join(str(i) for i in range(20)), 13)) == 8


def test_builtin_benchmarks_load():
    sizes = {b.name: load_benchmark(b, BENCH)["benchmark_item_id"].nunique() for b in BUILTIN}
    assert sizes["math"] == 5000 and sizes["gpqa"] == 198 and sizes["mmlu_pro"] == 12030
    assert len(MMLU_STEM) == 19 and 3000 < sizes["mmlu_stem"] < 4000


@pytest.fixture(scope="module")
def bench(spark):
    df, per = benchmark_ngrams(spark, BUILTIN, BENCH, 13)
    return df.persist(), per


def test_catches_verbatim_embedded_varied_partial_and_not_paraphrase(spark, bench):
    bdf, per = bench
    assert set(per) == {"math", "gpqa", "mmlu_pro", "mmlu_stem"} and all(v > 0 for v in per.values())
    mid, mq = long_math_question()
    gid, gq = long_gpqa_question()
    words = gq.split()
    paraphrase = " ".join(w if (i % 8) else "banana" for i, w in enumerate(words))
    items = [
        ("verbatim", mq),
        ("embedded", "Here is a nice exercise from my class. " + mq + " Please help, thanks!"),
        ("varied", mq.upper().replace(",", " ,").replace("$", "")),
        ("partial", "Consider this: " + " ".join(gq.split()[5:18]) + " and then stop."),
        ("paraphrase", paraphrase),
        ("clean", "A completely original question about the thermal conductivity of a copper rod in winter"),
        ("empty", ""),
    ]
    df = spark.createDataFrame(items, "id string, q string")
    got = find_contamination(df, "id", ["q"], bdf).collect()
    flagged = {r.item_id for r in got}
    assert {"verbatim", "embedded", "partial"} <= flagged
    assert "paraphrase" not in flagged and "clean" not in flagged and "empty" not in flagged
    by = {(r.item_id, r.benchmark, r.benchmark_item_id) for r in got}
    assert ("verbatim", "math", mid) in by and ("partial", "gpqa", gid) in by
    partial = next(r for r in got if r.item_id == "partial" and r.benchmark == "gpqa")
    assert partial.match_count == 1 and len(partial.matched_ngram.split()) == 13
    if "varied" not in flagged:  # only $ removed and upper-cased: still the same normalized tokens
        pytest.fail("case/punctuation variant missed")


def test_short_texts_match_on_their_whole_sequence(spark, tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_text(json.dumps({"id": "s1", "q": "What is the capital of France?"}) + "\n")
    b = BenchmarkConfig(name="toy", format="jsonl", path=str(p), text_fields=["q"], id_field="id")
    bdf, per = benchmark_ngrams(spark, [b], str(tmp_path), 13)
    items = spark.createDataFrame([("same", "what is the CAPITAL of france"),
                                   ("longer", "Tell me: what is the capital of France? I need it for a quiz."),
                                   ("other", "What is the capital of Spain?")], "id string, q string")
    assert {r.item_id for r in find_contamination(items, "id", ["q"], bdf).collect()} == {"same"}


def test_missing_benchmark_is_an_error_unless_optional(spark, tmp_path):
    from jobs.benchmarks import BenchmarkMissing

    gone = BenchmarkConfig(name="gone", format="csv", path="{benchmarks_dir}/nope.csv", text_fields=["q"])
    with pytest.raises(BenchmarkMissing, match="nope.csv"):
        benchmark_ngrams(spark, [gone], str(tmp_path), 13)
    _, per = benchmark_ngrams(spark, [gone.model_copy(update={"optional": True})], str(tmp_path), 13)
    assert per == {}


def test_stage_records_counts(spark, cfg, store):
    from jobs.common.runner import run_stage

    _, mq = long_math_question()
    qs = spark.createDataFrame([("q1", mq, "ok"), ("q2", "a clean question about rivers and lakes", "ok"),
                                ("q3", mq, "no_json")], "question_id string, question string, status string")
    store.overwrite("questions", qs)
    row = run_stage(cfg.model_copy(update={"decontaminate": cfg.decontaminate.model_copy(
        update={"benchmarks_dir": BENCH})}), "decontaminate", spark=spark)
    c = row["counts"]
    assert c["in"] == 2 and c["dropped_contaminated"] == 1 and c["contaminated_math"] == 1 and c["checked_benchmarks"] == 4
    assert row["metrics"]["ngrams_gpqa"] > 0
    assert {r.item_id for r in store.read("contamination").collect()} == {"q1"}
