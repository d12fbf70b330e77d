"""The README's main command with the real local model (SmolLM2-135M on CPU, vLLM where it
imports, else transformers), in float32 and in bfloat16: the run exits 0, every stage is ok,
every row has a valid status, the report is written, and the yield clears its floors whatever
the CPU's arithmetic (annotate.select ranks the pages instead of thresholding their scores).
Content quality is not asserted: a 135M model writes poor questions."""
from __future__ import annotations

import json

import pytest
from pyspark.sql import functions as F

from jobs import cli
from jobs.common.config import load_config
from jobs.common.storage import TableStore
from tests.conftest import REPO

PARSE = {"no_json", "truncated", "invalid_json", "missing_field", "invalid_value"}
GEN = {"ok", "llm_error", "too_long", "empty"}
VALID = {
    "annotations": GEN | PARSE,
    "questions": GEN | PARSE | {"empty_question", "question_too_short", "not_self_contained", "echoes_prompt",
                                "reference_is_question"},
    "responses": GEN | {"truncated", "echoes_prompt"},
    "judgments": GEN | PARSE | {"no_logprobs", "no_verdict"},
    "samples": GEN | {"truncated", "echoes_prompt"},
}
# The floors for the sample, in either dtype.
MIN_QUESTIONS, MIN_DATASET = 15, 10


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_main_command_with_smollm2(spark, real_model, tmp_path, dtype, capsys):
    overrides = [f"storage.root={tmp_path / 'root'}", "pipeline.progress=false",
                 f"llm.models.default.dtype={dtype}"]
    args = ["run", "--config", f"{REPO}/conf/local.yaml", "--report", str(tmp_path / "report")]
    for o in overrides:
        args += ["--set", o]
    rc = cli.main(args)
    out = capsys.readouterr()
    assert rc == 0, out.err[-4000:]
    assert out.out.strip().splitlines()[-1].endswith("index.html")

    cfg = load_config(f"{REPO}/conf/local.yaml", overrides)
    store = TableStore(spark, cfg.storage)
    runs = store.read("runs").collect()
    assert runs and all(r["status"] in ("ok", "skipped") for r in runs), \
        [(r["stage"], r["error"]) for r in runs if r["status"] not in ("ok", "skipped")]
    questions = store.read("questions").where(F.col("status") == "ok").count()
    dataset = store.read("dataset").count()
    assert questions >= MIN_QUESTIONS and dataset >= MIN_DATASET, (dtype, questions, dataset)
    for table, valid in VALID.items():
        df = store.read(table)
        statuses = {r.status for r in df.select("status").distinct().collect()}
        assert df.count() > 0 and statuses <= valid, (table, statuses)
        assert df.agg(F.sum("completion_tokens")).collect()[0][0] > 0, table
    assert {r.model for r in store.read("annotations").select("model").distinct().collect()} == {"SmolLM2-135M-Instruct"}
    sc = store.read("judgments").where((F.col("kind") == "self_score") & (F.col("status") == "ok"))
    assert sc.count() > 0 and sc.where(F.col("score").isNull()).count() == 0, "real first-token logprobs"
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["funnel"][-1] == {"step": "dataset", "count": dataset}
    assert report["embedding_map"] and report["embedding_map"]["points"] >= 3
