"""Bad samples through the score and train_data stages: a 100k-character response, 10k nested
braces, LaTeX that sympy chokes on, empty samples. Each gets a status; nothing crashes or hangs."""
from __future__ import annotations

import pytest

from jobs.common.config import validate_config
from jobs.common.storage import TableStore
from jobs.pipeline import run_pipeline

SCRIPT = "udfs.llm.scripted_pipeline:respond"
NASTY = "\\frac{" * 20 + "1" + "}{2}" * 20
SAMPLES = [
    # (temperature, sample_idx, response, generation status)
    (0.0, 0, "Halving one gives \\boxed{\\frac{1}{2}}", "ok"),
    (0.7, 0, "word " * 20_000 + "so \\boxed{0.5}", "ok"),
    (0.7, 1, "\\boxed" + "{" * 10_000 + "1" + "}" * 10_000, "ok"),
    (0.7, 2, "\\boxed{" + NASTY + "}", "ok"),
    (0.7, 3, "", "empty"),
    (1.0, 0, None, "llm_error"),
    (1.0, 1, "I could not finish the computation.", "ok"),
]


@pytest.fixture(scope="module")
def scored(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("selftrain_bad")
    cfg = validate_config({
        "storage": {"root": str(root)}, "pipeline": {"progress": False},
        "llm": {"models": {"default": {"engine": "scripted", "label": "scripted", "engine_kwargs": {"script": SCRIPT}}}},
        "score": {"equivalence_timeout_s": 1, "reward_model": "default"},
    }, "test")
    store = TableStore(spark, cfg.storage)
    store.overwrite("questions", spark.createDataFrame(
        [("q1", "d1", "What is one half as a number?", "0.5", "ok")],
        "question_id string, doc_id string, question string, reference_answer string, status string"))
    store.overwrite("samples", spark.createDataFrame(
        [("q1", "scripted", t, i, r, s) for t, i, r, s in SAMPLES],
        "question_id string, model string, temperature double, sample_idx int, response string, status string"))
    rows = run_pipeline(cfg, stages=["score", "train_data"], spark=spark)
    return cfg, store, rows


def test_every_bad_sample_gets_a_status(scored):
    _, store, rows = scored
    assert [r["status"] for r in rows] == ["ok", "ok"]
    got = {(r.temperature, r.sample_idx): r for r in store.read("sample_scores").collect()}
    assert len(got) == len(SAMPLES)
    assert got[0.0, 0].answer == "\\frac{1}{2}" and got[0.0, 0].ref_agree is True
    assert got[0.7, 0].answer == "0.5" and got[0.7, 0].ref_agree is True, "100k characters"
    assert got[0.7, 1].answer_status == "ok" and got[0.7, 1].ref_agree is False
    assert got[0.7, 1].ref_method == "equivalence:string", "10k nested braces never reach sympy"
    assert got[0.7, 2].ref_agree is False and got[0.7, 2].ref_method == "equivalence:timeout"
    assert (got[0.7, 3].answer_status, got[0.7, 3].self_score_status, got[0.7, 3].ref_status) == \
        ("empty", "sample_empty", "sample_empty")
    assert (got[1.0, 0].answer_status, got[1.0, 0].reward_status) == ("empty", "sample_llm_error")
    assert (got[1.0, 1].answer_status, got[1.0, 1].self_score_status) == ("no_answer", "no_verdict")
    assert got[1.0, 1].self_score is None


def test_classes_and_selection_over_bad_samples(scored):
    _, store, rows = scored
    classes = {(r.temperature, r.sample_idx): r for r in store.read("answer_classes").collect()}
    assert classes[0.0, 0].answer_class == 0 == classes[0.7, 0].answer_class, "1/2 and 0.5 are one class"
    assert classes[0.0, 0].majority_share == pytest.approx(0.5) and classes[0.0, 0].n_distinct == 3
    assert classes[1.0, 1].answer_class is None
    sft = {r.rule: r for r in store.read("train_sft").collect()}
    assert (sft["self_consistency"].temperature, sft["self_consistency"].sample_idx) == (0.0, 0)
    assert sft["reference"].answer in ("\\frac{1}{2}", "0.5")
    q = store.read("question_scores").collect()[0]
    assert q.pass_at_1 == pytest.approx(2 / 5) and q.maj_at_k == 1.0
    assert next(r for r in rows if r["stage"] == "score")["counts"]["equivalence_timeouts"] >= 1
