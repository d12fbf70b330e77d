"""The whole pipeline once with the real local model (SmolLM2-135M on CPU, vLLM where it
imports, else transformers) on a handful of documents: every table is populated and every
row has a valid status. Content quality is not asserted: a 135M model writes poor questions."""
from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from jobs.common.config import load_config
from jobs.common.storage import TableStore
from jobs.pipeline import run_pipeline
from tests.conftest import REPO

VALID = {
    "annotations": {"ok", "llm_error", "too_long", "empty", "no_json", "truncated", "invalid_json", "missing_field",
                    "invalid_value"},
    "questions": {"ok", "llm_error", "too_long", "empty", "no_json", "truncated", "invalid_json", "missing_field",
                  "invalid_value", "empty_question", "question_too_short", "not_self_contained"},
    "responses": {"ok", "llm_error", "too_long", "empty", "truncated"},
    "judgments": {"ok", "llm_error", "too_long", "empty", "no_json", "truncated", "invalid_json", "missing_field",
                  "invalid_value", "no_logprobs", "no_verdict"},
}


@pytest.mark.slow
def test_whole_pipeline_with_smollm2(spark, tmp_path):
    root = tmp_path / "smol"
    cfg = load_config(f"{REPO}/conf/local.yaml", [
        f"storage.root={root}", "pipeline.progress=false",
        # the question stages (self-training with SmolLM2: test_selftrain_smollm2; all: run-sample.sh)
        "pipeline.stages=[bootstrap,ingest,doc_dedup,annotate,synthesize,question_dedup,decontaminate,respond,"
        "judge,dataset]",
        # a handful of documents: the first few of each source, every one selected
        "annotate.select={}", "annotate.sampling.max_tokens=64",
        "synthesize.sampling.max_tokens=160", "respond.sampling.max_tokens=384", "respond.sampling.n=2", "judge.sampling.max_tokens=64",
    ])
    sources = [s.model_copy(update={"max_docs": 2, "filter": " AND ".join(
        f"({c})" for c in (s.filter, "length(text) >= 1500") if c)}) for s in cfg.ingest.sources]
    cfg = cfg.model_copy(update={"ingest": cfg.ingest.model_copy(update={"sources": sources})})
    rows = run_pipeline(cfg, spark=spark)
    assert [r["status"] for r in rows if r["status"] != "skipped"] == ["ok"] * 9, rows
    store = TableStore(spark, cfg.storage)
    assert store.read("documents").where(F.col("status") == "ok").count() == 4
    for table, valid in VALID.items():
        df = store.read(table)
        assert df.count() > 0, table
        statuses = {r.status for r in df.select("status").distinct().collect()}
        assert statuses <= valid, (table, statuses)
        assert df.where(F.col("raw_output" if "raw_output" in df.columns else "response").isNull()).count() == 0 \
            or table == "responses"
        assert df.agg(F.sum("completion_tokens")).collect()[0][0] > 0, table
    model = {r.model for r in store.read("annotations").select("model").distinct().collect()}
    assert model == {"SmolLM2-135M-Instruct"}
    sc = store.read("judgments").where((F.col("kind") == "self_score") & (F.col("status") == "ok"))
    assert sc.count() > 0 and sc.where(F.col("score").isNull()).count() == 0, "real first-token logprobs"
    assert store.read("dataset").count() >= 0
