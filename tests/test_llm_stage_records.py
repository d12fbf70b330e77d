"""What an LLM stage records per row and per run, on the annotate stage with the scripted engine.

Every output row carries the model label, the prompt's name and content hash; a row the
engine failed and a row too long for the context each get their status and a count in
``runs``; the token counts in ``runs`` are the sums over the rows written; a prompt that
needs a column the input lacks stops the stage before anything is generated or written.
"""
from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from jobs.pipeline import run_stage
from jobs.common.config import validate_config
from jobs.common.llm import PromptFieldError
from jobs.common.storage import TableStore
from udfs.llm.prompts import load_prompt


def stage_config(root: str, **annotate) -> dict:
    return validate_config({
        "storage": {"root": root},
        "pipeline": {"progress": False, "chunk_rows": 4},
        "llm": {"models": {"default": {"engine": "scripted", "label": "scripted-test", "max_model_len": 800,
                                       "too_long": "mark", "engine_kwargs": {"fail_on": "BADROW"}}}},
        "annotate": annotate,
    }, "test")


def write_documents(spark, store: TableStore) -> None:
    texts = [f"document {i} about triangles and their angles" for i in range(8)]
    # annotate renders to about 220 words plus the text, and asks for 256 tokens: 800 fits all but the last
    texts += ["this one is a BADROW for the engine", "long " * 600]
    docs = spark.createDataFrame([(f"d{i:02d}", t, "ok") for i, t in enumerate(texts)],
                                 "doc_id string, text string, status string")
    store.overwrite("documents", docs)


def test_rows_carry_prompt_and_model_and_runs_carry_tokens_and_failures(spark, tmp_path):
    cfg = stage_config(str(tmp_path / "root"))
    store = TableStore(spark, cfg.storage)
    write_documents(spark, store)
    row = run_stage(cfg, "annotate", spark=spark)

    ann = store.read("annotations")
    prompt = load_prompt("annotate")
    assert ann.count() == 10
    recorded = {(r.model, r.prompt_name, r.prompt_hash) for r in ann.collect()}
    assert recorded == {("scripted-test", "annotate", prompt.sha)}
    status = {r.doc_id: r.status for r in ann.collect()}
    assert status["d08"] == "llm_error" and status["d09"] == "too_long"

    sums = ann.agg(F.sum("prompt_tokens").alias("p"), F.sum("completion_tokens").alias("c")).collect()[0]
    counts = row["counts"]
    assert sums.p > 0 and sums.c > 0
    assert (counts["prompt_tokens"], counts["completion_tokens"]) == (sums.p, sums.c)
    assert counts["failed_llm_error"] == 1 and counts["failed_too_long"] == 1
    runs = store.read("runs").where(F.col("stage") == "annotate").collect()
    assert len(runs) == 1 and runs[0].counts["completion_tokens"] == sums.c
    assert runs[0].metrics["completion_tokens_per_s"] > 0


def test_prompt_field_missing_from_input_stops_the_stage_before_generation(spark, tmp_path):
    # "respond" needs a ``question`` column; annotate's input has doc_id and text only.
    cfg = stage_config(str(tmp_path / "root"), prompt="respond")
    store = TableStore(spark, cfg.storage)
    write_documents(spark, store)
    with pytest.raises(PromptFieldError, match="question"):
        run_stage(cfg, "annotate", spark=spark)
    assert not store.exists("annotations")
    [run] = store.read("runs").where(F.col("stage") == "annotate").collect()
    assert run.status == "failed" and "PromptFieldError" in run.error
