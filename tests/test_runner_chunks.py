"""The chunk machinery of LLM stages: one pending scan, staged chunks, ordered idempotent
commits, counts from one aggregation; and the generation UDF's engine calls."""
import doctest
import os

import pandas as pd
import pytest
from pyspark.sql import functions as F

from jobs.common import chunks, runner
from jobs.common.stage import Output, Stage
from udfs.llm import generate as gen
from udfs.llm.base import Completion, Sampling


def _stage(name, fn) -> Stage:
    return Stage(name, "corpus", "whole_table", fn, "toy", inputs=("src",), outputs=(Output("dst", ("k",)),))


def _src(spark, store, n=120):
    store.overwrite("src", spark.range(n).select(F.format_string("k%04d", "id").alias("k"), F.col("id").alias("v")))


def _out(df):
    status = F.when(F.col("v") % 7 == 0, F.lit("no_json")).otherwise(F.lit("ok"))
    return df.select("k", status.alias("status"), F.lit(5).alias("prompt_tokens"),
                     (F.col("v") % 3).cast("int").alias("completion_tokens"))


def test_doctests():
    assert doctest.testmod(chunks).failed == 0 and doctest.testmod(gen).failed == 0


def test_pending_is_evaluated_once_and_counts_come_from_the_chunks(spark, cfg, store, monkeypatch):
    _src(spark, store)
    acc = spark.sparkContext.accumulator(0)

    @F.udf("long")
    def seen(v):  # counts how often the pending plan's rows are computed
        acc.add(1)
        return v

    calls = []

    def fn(part):
        calls.append(1)
        return _out(part)

    def run(ctx):
        src = ctx.store.read("src").withColumn("v", seen("v"))
        ctx.count("out", ctx.process_in_chunks(ctx.pending(src, "dst", ["k"]), ["k"], fn, "dst", ["k"], chunk_rows=25))

    stage = _stage("once", run)
    monkeypatch.setattr(cfg.pipeline, "chunks_in_flight", 2)
    row = runner.run_stage(cfg, stage, spark=spark)
    assert acc.value == 120, "the pending rows are computed once, not once per chunk"
    assert len(calls) >= 120 // 25
    c = row["counts"]
    assert c["out"] == 120 and c["failed_no_json"] == len([v for v in range(120) if v % 7 == 0])
    assert c["prompt_tokens"] == 5 * 120 and c["completion_tokens"] == sum(v % 3 for v in range(120))
    dst = store.read("dst")
    assert dst.count() == 120 and dst.select("k").distinct().count() == 120
    # one Delta commit per chunk, and the staging is gone once the call finished
    assert store.version("dst") == len(calls) - 1
    assert not os.path.exists(os.path.join(cfg.storage.root, "_staging", "once", "dst-1"))


def test_a_failed_run_resumes_from_its_staging_and_commits_nothing_twice(spark, cfg, store, monkeypatch):
    _src(spark, store, 100)
    state = {"n": 0, "fail_after": 3}

    def fn(part):
        state["n"] += 1
        if state["fail_after"] is not None and state["n"] > state["fail_after"]:
            raise RuntimeError("preempted")
        return _out(part)

    def run(ctx):
        pending = ctx.pending(ctx.store.read("src"), "dst", ["k"])
        ctx.count("out", ctx.process_in_chunks(pending, ["k"], fn, "dst", ["k"], chunk_rows=10))

    stage = _stage("resume", run)
    # one chunk job at a time, so that "the 4th call fails" is the 4th chunk (commits stay in the background)
    monkeypatch.setattr(cfg.pipeline, "chunks_in_flight", 1)
    with pytest.raises(RuntimeError, match="preempted"):
        runner.run_stage(cfg, stage, spark=spark)
    committed = store.read("dst").count()
    assert committed == 30, "the chunks before the failing one commit, in order; none after it"
    staging = os.path.join(cfg.storage.root, "_staging", "resume", "dst-1")
    assert os.listdir(staging), "a failed call keeps its staging for the re-run"

    state.update(n=0, fail_after=None)
    row = runner.run_stage(cfg, stage, spark=spark)
    assert row["counts"]["out"] == 70 and state["n"] == 7, "only the uncommitted chunks run again"
    dst = store.read("dst")
    assert dst.count() == 100 and dst.select("k").distinct().count() == 100
    assert not os.path.exists(staging)


def test_a_commit_already_in_the_log_is_not_repeated(spark, cfg, store):
    df = spark.range(5).select(F.col("id").cast("string").alias("k"))
    first = store.stage_append("t", df)
    assert store.commit_staged("t", first, "app", 0) is True
    again = store.stage_append("t", df)
    assert store.commit_staged("t", again, "app", 0) is False, "same (app, version): dropped"
    older = store.stage_append("t", df)
    assert store.commit_staged("t", older, "app", -1) is False
    assert store.read("t").count() == 5 and store.txn_version("t", "app") == 0
    assert store.commit_staged("t", store.stage_append("t", df), "app", 1) is True
    assert store.txn_version("t", "app") == 1 and store.txn_version("t", "other") is None
    assert store.num_rows("t") == 10


# ---- the generation UDF's engine calls (pure: no Spark, no model)


class RecordingEngine:
    name, max_model_len = "rec", 2048

    def __init__(self, continuous: bool, fail_on: str = "\0"):
        self.continuous_batching = continuous
        self.fail_on = fail_on
        self.calls = []

    def chat(self, convs, samplings):
        self.calls.append([c[-1]["content"] for c in convs])
        if any(self.fail_on in c[-1]["content"] for c in convs):
            raise ValueError("bad row")
        return [[Completion(c[-1]["content"].upper(), 1, 1)] for c in convs]


def _run(engine, texts, batch_size=4, batches=2):
    frames = []
    per = -(-len(texts) // batches)
    for i in range(0, len(texts), per):
        frames.append(pd.DataFrame({"k": [f"k{j}" for j in range(i, min(i + per, len(texts)))],
                                    "messages": [[{"role": "user", "content": t}] for t in texts[i:i + per]]}))
    orig = gen.get_engine
    gen.get_engine = lambda cfg: engine
    try:
        out = pd.concat(gen.generate_batches(iter(frames), model_cfg={"label": "m", "batch_size": batch_size},
                                             sampling={}, key_cols=["k"]))
    finally:
        gen.get_engine = orig
    return dict(zip(out["k"], zip(out["text"], out["error"])))


def test_continuous_batching_engine_gets_the_whole_partition_longest_first():
    texts = ["a", "ccc", "bb", "dddd", "e"]
    eng = RecordingEngine(continuous=True)
    got = _run(eng, texts)
    assert eng.calls == [["dddd", "ccc", "bb", "a", "e"]], "one call over both Arrow batches, sorted by length"
    assert got == {f"k{i}": (t.upper(), None) for i, t in enumerate(texts)}


def test_other_engines_get_batch_size_calls_and_a_bad_row_is_bisected_out():
    texts = [f"row{i}" + "x" * i for i in range(8)]
    texts[5] = "BAD" + texts[5]
    eng = RecordingEngine(continuous=False, fail_on="BAD")
    got = _run(eng, texts, batch_size=4)
    assert [len(c) for c in eng.calls[:1]] == [4]
    assert got["k5"][1] and "bad row" in got["k5"][1]
    assert all(got[f"k{i}"] == (texts[i].upper(), None) for i in range(8) if i != 5)
    # a failing call of 4 is split in halves: 4 -> 2 -> 1, not retried row by row
    assert len(eng.calls) <= 2 + 2 + 2


def test_sampling_default_is_shared():
    assert gen.prompts_per_call(RecordingEngine(True), {"batch_size": 3}, 50) == 50
    assert gen.prompts_per_call(RecordingEngine(False), {"batch_size": 3}, 50) == 3
    assert Sampling() == Sampling.from_dict({})
