"""No generation call hangs and no broken engine is called again (udfs.llm.generate, watchdog).

The stand-in is the scripted engine's fault mode: ``step_error_on`` raises as a vLLM step
does and leaves the call's requests queued, so that any later call on the same engine spins
forever; ``sleep_on`` is a call that stops making progress.
"""
from __future__ import annotations

import json
import re
import threading
import time
import uuid

import pandas as pd
import pytest

from jobs.pipeline import run_stage
from jobs.common.storage import TableStore
from tests.test_llm_error_retry import config as retry_config
from udfs.llm import engines
from udfs.llm.base import FatalEngineError
from udfs.llm.generate import generate_batches
from udfs.llm.watchdog import EXIT_STATUS, GenerationTimeout, deadline, default_timeout_s


def _cfg(**kw) -> dict:
    return {"engine": "scripted", "label": f"standin-{uuid.uuid4().hex[:8]}", "batch_size": 64, "engine_kwargs": kw}


def _frames(texts: list[str]) -> list[pd.DataFrame]:
    return [pd.DataFrame({"k": [f"k{i}" for i in range(len(texts))],
                          "messages": [[{"role": "user", "content": t}] for t in texts]})]


def _generate(cfg: dict, texts: list[str], **kw) -> pd.DataFrame:
    return pd.concat(generate_batches(iter(_frames(texts)), model_cfg=cfg, sampling={}, key_cols=["k"], **kw))


def test_a_step_error_rebuilds_the_engine_and_only_the_bad_row_fails():
    cfg = _cfg(step_error_on="BAD")
    texts = [f"row {i}" for i in range(16)]
    texts[11] = "BAD row"
    t0 = time.monotonic()
    # The deadline is the safety net: without the rebuild the second call would spin until it.
    out = _generate(cfg, texts, call_timeout_s=20).set_index("k")
    assert time.monotonic() - t0 < 15
    assert out.loc["k11", "error"] and "inside a model step" in out.loc["k11", "error"]
    ok = out.drop(index="k11")
    assert ok["error"].isna().all() and (ok["finish_reason"] == "stop").all() and len(ok) == 15
    # one build, then one per failed call: 16 -> 8 -> 4 -> 2 -> 1 rows, each broke the engine
    assert engines.engine_constructions()[engines.config_hash(cfg)] == 6


def test_an_engine_that_breaks_on_every_call_fails_the_task_instead_of_bisecting_forever():
    cfg = _cfg(step_error_on="row")  # every row breaks it
    with pytest.raises(FatalEngineError, match="engine broke on"):
        _generate(cfg, [f"row {i}" for i in range(32)], call_timeout_s=20)


def test_the_deadline_fails_the_task_naming_model_and_requests_and_discards_the_engine():
    cfg = _cfg(sleep_on="SLOW")
    with pytest.raises(GenerationTimeout) as e:
        _generate(cfg, ["fast", "SLOW row", "also fast"], call_timeout_s=1.5)
    msg = str(e.value)
    assert cfg["label"] in msg and "3 conversation(s)" in msg and "1.5 s deadline" in msg
    assert "3 request(s) in flight" in msg and "llm.call_timeout_s" in msg
    # the engine that timed out is never handed out again
    key = engines.config_hash(cfg)
    assert engines.engine_constructions()[key] == 1
    engines.get_engine(cfg)
    assert engines.engine_constructions()[key] == 2


def test_a_deadline_fails_at_its_block_or_not_at_all_never_later():
    for _ in range(20):
        with deadline(5, lambda: "late"):
            pass
    fired = 0
    for _ in range(200):  # deadlines that race the end of their block
        try:
            with deadline(0.0005, lambda: "raced"):
                sum(range(2000))
        except GenerationTimeout:
            fired += 1
        # an exception scheduled but not delivered before the block ended must not land here
        for _ in range(2000):
            pass
    assert 0 <= fired <= 200


def test_a_call_stuck_in_native_code_ends_the_worker_after_the_grace_period():
    stuck = threading.Lock()
    stuck.acquire()
    exits = []
    threading.Timer(2.0, stuck.release).start()
    t0 = time.monotonic()
    with pytest.raises(GenerationTimeout, match="native wait"):
        with deadline(0.2, lambda: "native wait", grace_s=0.3, on_stuck=exits.append):
            stuck.acquire()  # a C-level wait: the in-thread exception cannot land before it returns
            time.sleep(1)
    assert exits == [EXIT_STATUS]
    assert time.monotonic() - t0 < 4


def test_the_default_deadline_grows_with_the_tokens_asked_for():
    assert default_timeout_s(0, 0) < default_timeout_s(30_000, 0) < default_timeout_s(30_000, 10_000)


# --- in a stage: the same faults under Spark --------------------------------------------------

STEP_FAULT, HANG = "STEPFAULT", "HANGHERE"
PAGES = [f"page {i} {STEP_FAULT if i == 3 else ''}: we derive the result step by step, therefore the claim "
         "holds because of the bound. " * 4 for i in range(8)]


def _stage_config(root, src, *extra):
    """test_llm_error_retry's one-source scripted config, 4 rows a chunk, with both stand-in faults."""
    return retry_config(root, src, "pipeline.chunk_rows=4", f"llm.models.default.engine_kwargs.step_error_on={STEP_FAULT}",
                        f"llm.models.default.engine_kwargs.sleep_on={HANG}", *extra)


def _pages(tmp_path, pages):
    src = tmp_path / "pages.jsonl"
    src.write_text("".join(json.dumps({"url": f"u{i}", "text": t}) + "\n" for i, t in enumerate(pages)))
    return src


def test_a_stage_whose_engine_breaks_inside_a_step_completes_with_the_row_at_fault_failed(spark, tmp_path):
    src, root = _pages(tmp_path, PAGES), str(tmp_path / "root")
    cfg = _stage_config(root, src, "llm.call_timeout_s=60")
    run_stage(cfg, "ingest", spark=spark)
    t0 = time.monotonic()
    row = run_stage(cfg, "annotate", spark=spark)
    assert row["status"] == "ok" and time.monotonic() - t0 < 60
    got = {r.doc_id: (r.status, r.error) for r in TableStore(spark, cfg.storage).read("annotations").collect()}
    failed = {k: v for k, v in got.items() if v[0] == "llm_error"}
    assert len(got) == 8 and len(failed) == 1 and "inside a model step" in next(iter(failed.values()))[1]
    assert row["counts"]["failed_llm_error"] == 1


def test_a_stage_whose_call_hangs_fails_at_the_deadline_naming_stage_and_chunk_and_resumes(spark, tmp_path):
    pages = [p.replace(STEP_FAULT, "") for p in PAGES]
    pages[6] = pages[6] + HANG  # in the second chunk (4 rows a chunk, in doc order)
    src, root = _pages(tmp_path, pages), str(tmp_path / "root")
    run_stage(_stage_config(root, src), "ingest", spark=spark)
    t0 = time.monotonic()
    deadline_error = (r"\[annotate\] chunk [12]/2: a scripted call of \d+ conversation\(s\) exceeded its 3 s "
                      r"deadline with \d+ request\(s\) in flight")
    with pytest.raises(Exception, match=deadline_error):
        run_stage(_stage_config(root, src, "llm.call_timeout_s=3"), "annotate", spark=spark)
    assert time.monotonic() - t0 < 90
    store = TableStore(spark, _stage_config(root, src).storage)
    failed = store.read("runs").where("stage = 'annotate'").collect()
    assert [r.status for r in failed] == ["failed"] and re.search(deadline_error, failed[0].error)
    done = store.read("annotations").count() if store.exists("annotations") else 0
    assert done in (0, 4)  # the other chunk may have committed before the failure
    # the hang is gone (a server back, a fixed engine): the re-run resumes and finishes
    cfg = _stage_config(root, src)
    cfg.llm.models["default"].engine_kwargs.pop("sleep_on")
    row = run_stage(cfg, "annotate", spark=spark)
    assert row["status"] == "ok" and store.read("annotations").count() == 8
    assert row["counts"]["out"] == 8 - done
