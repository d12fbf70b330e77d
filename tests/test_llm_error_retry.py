"""The retry policy for llm_error rows (``llm.retry_llm_errors``): rows the engine failed
after its own retries (a server outage) stay with status llm_error and a count in ``runs``;
a re-run regenerates them when the policy is on (the default) and keeps them when it is off.
"""
from __future__ import annotations

import json

from pyspark.sql import functions as F

from jobs.common.config import load_config
from jobs.pipeline import run_stage
from jobs.common.storage import TableStore

SCRIPT = "udfs.llm.scripted_pipeline:respond"
OUTAGE = "SERVERDOWN"  # the scripted engine fails every prompt holding this, as a server outage would
PAGES = [f"page {i} {OUTAGE if i == 2 else ''}: we derive the result step by step, therefore the claim holds "
         "because of the bound. " * 4 for i in range(6)]


def config(root, src, *extra):
    return load_config(None, [
        f"storage.root={root}", "pipeline.progress=false", "pipeline.chunk_rows=100",
        "ingest.sources=" + json.dumps([{"name": "pages", "path": str(src), "format": "jsonl"}]),
        "llm.models=" + json.dumps({"default": {"engine": "scripted", "label": "scripted",
                                                "engine_kwargs": {"script": SCRIPT}}}),
        *extra])


def statuses(store):
    return {r.doc_id: r.status for r in store.read("annotations").collect()}


def test_llm_error_rows_are_regenerated_by_a_rerun_unless_configured_off(spark, tmp_path):
    src = tmp_path / "pages.jsonl"
    src.write_text("".join(json.dumps({"url": f"u{i}", "text": t}) + "\n" for i, t in enumerate(PAGES)))
    root = str(tmp_path / "root")
    failing = f"llm.models.default.engine_kwargs.fail_on={OUTAGE}"
    run_stage(config(root, src), "ingest", spark=spark)
    row = run_stage(config(root, src, failing), "annotate", spark=spark)
    store = TableStore(spark, config(root, src).storage)
    first = statuses(store)
    failed = {k for k, v in first.items() if v == "llm_error"}
    assert len(failed) == 1 and row["counts"]["failed_llm_error"] == 1

    # policy off: the row stays as it is, nothing is committed
    v = store.version("annotations")
    row = run_stage(config(root, src, "llm.retry_llm_errors=false"), "annotate", spark=spark)
    assert statuses(store) == first and store.version("annotations") == v
    assert "retried_llm_error" not in row["counts"]

    # policy on (default), the server is back: the row is regenerated; no key is doubled
    row = run_stage(config(root, src), "annotate", spark=spark)
    after = statuses(store)
    assert after.keys() == first.keys() and store.read("annotations").count() == len(PAGES)
    assert after[next(iter(failed))] != "llm_error"
    assert {k: v for k, v in after.items() if k not in failed} == {k: v for k, v in first.items() if k not in failed}
    assert row["counts"]["retried_llm_error"] == 1 and row["counts"]["out"] == 1
    runs = store.read("runs").where(F.col("stage") == "annotate").orderBy("started_at").collect()
    assert [r.status for r in runs] == ["ok", "ok", "ok"]
