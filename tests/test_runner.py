"""The stage runner: runs rows, chunked commits, resume after a crash, idempotent re-runs."""
import pytest
from pyspark.sql import functions as F

from jobs import pipeline
from jobs.common import runner
from jobs.common.stage import Output, Stage


def make_stage(name, fn, inputs=("src",), outputs=("dst",)) -> Stage:
    """A toy stage spec (whole-table kind: no llm_error retry)."""
    return Stage(name, "corpus", "whole_table", fn, "toy", inputs=tuple(inputs),
                 outputs=tuple(Output(o, ("k",)) for o in outputs))


class Boom(RuntimeError):
    pass


def chunked_stage(fail_after_chunks=None):
    state = {"chunks": 0}

    def fn(df):
        state["chunks"] += 1
        if fail_after_chunks is not None and state["chunks"] > fail_after_chunks:
            raise Boom("preempted")
        return df.select("k", (F.col("v") * 2).alias("v2"), F.lit("ok").alias("status"),
                         F.lit(3).alias("prompt_tokens"), F.lit(1).alias("completion_tokens"))

    def run(ctx):
        src = ctx.store.read("src")
        ctx.count("in", src.count())
        pending = ctx.pending(src, "dst", ["k"])
        ctx.count("out", ctx.process_in_chunks(pending, ["k"], fn, "dst", ["k"], chunk_rows=10))

    return run, state


def test_killed_stage_resumes_with_every_key_once(spark, cfg, store, monkeypatch):
    store.overwrite("src", spark.range(100).select(F.col("id").cast("string").alias("k"), F.col("id").alias("v")))
    run, state = chunked_stage(fail_after_chunks=4)
    toy = make_stage("toy", run)
    with pytest.raises(Boom):
        runner.run_stage(cfg, toy, spark=spark)
    partial = store.read("dst").count()
    assert 0 < partial < 100, "chunks before the crash are committed"

    run2, state2 = chunked_stage()
    toy = make_stage("toy", run2)
    row = runner.run_stage(cfg, toy, spark=spark)
    dst = store.read("dst")
    assert dst.count() == 100 and dst.select("k").distinct().count() == 100
    assert row["counts"]["out"] == 100 - partial
    assert sorted(r.v2 for r in dst.collect()) == [2 * i for i in range(100)]

    # a third run has nothing to do and does not commit
    v = store.version("dst")
    row3 = runner.run_stage(cfg, toy, spark=spark)
    assert store.version("dst") == v and row3["counts"].get("out", 0) == 0

    runs = store.read("runs").where(F.col("stage") == "toy").orderBy("started_at").collect()
    assert [r.status for r in runs] == ["failed", "ok", "ok"]
    assert "Boom: preempted" in runs[0].error
    assert runs[1].input_versions == {"src": 0}
    assert runs[1].counts["prompt_tokens"] == 3 * (100 - partial)
    assert runs[1].metrics["rows_per_s"] > 0 and runs[1].wall_seconds > 0
    assert runs[1].config_hash == cfg.config_hash()


def test_up_to_date_tracks_inputs_and_outputs(spark, cfg, store, monkeypatch):
    store.overwrite("src", spark.range(3).select(F.col("id").cast("string").alias("k")))
    seen = []

    def run(ctx):
        if ctx.up_to_date():
            seen.append("skipped")
            return
        seen.append("ran")
        ctx.store.overwrite("dst", ctx.store.read("src"))

    whole = make_stage("whole", run)
    runner.run_stage(cfg, whole, spark=spark)
    runner.run_stage(cfg, whole, spark=spark)
    store.append("src", spark.range(3, 4).select(F.col("id").cast("string").alias("k")))
    runner.run_stage(cfg, whole, spark=spark)
    assert seen == ["ran", "skipped", "ran"]


def test_unknown_stage(cfg):
    with pytest.raises(KeyError, match="unknown stage"):
        pipeline.run_stage(cfg, "nope")
