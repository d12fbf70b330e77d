"""NaturalThoughts trace selection: parsing, each strategy on hand-written traces, the stage and
its System-1/System-2 export."""
from __future__ import annotations

import glob
import json
import os

import pytest
from pyspark.sql import functions as F

from jobs.common.config import validate_config
from jobs.pipeline import run_stage
from jobs.common.storage import TableStore
from jobs.stages.selection.select_traces import (long_cot_threshold, select_disagreement, select_long_cot, select_random,
                                select_strategy_diversity)
from udfs.traces import answer_key, final_answer, parse_strategies, parse_trace

GOOD = "question_id string, model string, sample_idx int, reasoning_tokens int, answer_key string"


# --------------------------------------------------------------------------- parsing


def test_doctests_of_the_selection_modules():
    import doctest

    from udfs import clusters, embed, retrieval, traces

    for mod in (traces, retrieval, clusters, embed):
        assert doctest.testmod(mod).failed == 0, mod.__name__


@pytest.mark.parametrize("text, field, status, reasoning, answer", [
    ("<think>First add, then check.</think>\nThe answer is 4.", None, "ok", "First add, then check.", "The answer is 4."),
    ("Add them and check.</think>\n\\boxed{4}", None, "ok", "Add them and check.", "\\boxed{4}"),
    ("The result is 4.", "Add, then check.", "ok", "Add, then check.", "The result is 4."),
    ("<think>Adding 2 and 2 gives", None, "unclosed_think", "Adding 2 and 2 gives", None),
    ("<think></think>4", None, "empty_reasoning", None, "4"),
    ("<think>We add.</think>   ", None, "empty_answer", "We add.", None),
    ("Step 1: add.\nStep 2: check.\nFinal answer: 4", None, "untagged", "Step 1: add.\nStep 2: check.", "Final answer: 4"),
    ("It is 4.", None, "no_trace", None, "It is 4."),
    ("We add two and two.\nThen we check.\n\nSo it is 4.", None, "untagged", "We add two and two.\nThen we check.",
     "So it is 4."),
    ("", None, "empty", None, None),
    (None, None, "empty", None, None),
])
def test_parse_trace(text, field, status, reasoning, answer):
    assert parse_trace(text, field) == {"status": status, "reasoning": reasoning, "answer": answer}


def test_final_answers_and_their_normal_form():
    assert final_answer("so \\boxed{x^{2}+1}") == "x^{2}+1"
    assert final_answer("Answer: 12 kg\nThat is all.") == "12 kg"
    assert final_answer("We reason.\nIt is 5") == "It is 5"
    assert answer_key("X = 3.") == answer_key("$x=3$") == "x=3"
    assert answer_key("option 4") != answer_key("option 5")
    assert final_answer(None) is None and answer_key("  ") is None


def test_strategy_tags_are_parsed_and_normalized():
    assert parse_strategies('```json\n{"strategies": ["Working Backwards", "the case analysis", "Case-analysis"]}\n```') \
        == {"status": "ok", "strategies": ["working-backwards", "case-analysis"]}
    assert parse_strategies('{"strategies": []}')["status"] == "invalid_value"
    assert parse_strategies('{"labels": ["x"]}')["status"] == "missing_field"
    assert parse_strategies('{"strategies": ["a", "b"')["status"] == "truncated"
    assert len(parse_strategies(json.dumps({"strategies": [f"s{i}" for i in range(20)]}))["strategies"]) == 8


# --------------------------------------------------------------------------- strategies on hand-written traces


def picks(df):
    return [(r.question_id, r.model, r.sample_idx) for r in df.orderBy("rank").collect()]


def test_long_cot_threshold_and_quantile(spark):
    good = spark.createDataFrame([("q1", "A", 0, 10, "1"), ("q2", "A", 0, 200, "1"), ("q3", "A", 0, 120, "1"),
                                  ("q4", "A", 0, 50, "1"), ("q5", "A", 0, 30, "1")], GOOD)
    assert picks(select_long_cot(good, 10, 100, "")) == [("q2", "A", 0), ("q3", "A", 0)]
    t = long_cot_threshold(good, 0.5, None)
    assert t == 50
    assert picks(select_long_cot(good, 10, t, "")) == [("q2", "A", 0), ("q3", "A", 0), ("q4", "A", 0)]
    assert picks(select_long_cot(good, 1, t, "")) == [("q2", "A", 0)]
    reason = select_long_cot(good, 1, 100, "").first().reason
    assert reason == "reasoning_tokens=200 >= 100"


def test_disagreement_picks_the_traces_of_disputed_questions(spark):
    good = spark.createDataFrame([
        ("q1", "A", 0, 5, "4"), ("q1", "B", 0, 5, "4"),            # agree
        ("q2", "A", 0, 5, "x=3"), ("q2", "B", 0, 5, "x=3"),        # agree once normalized
        ("q3", "A", 0, 5, "7"), ("q3", "B", 0, 5, "8"),            # disagree
        ("q4", "A", 0, 5, "1"), ("q4", "B", 0, 5, "2"), ("q4", "B", 1, 5, "3"),  # three answers
    ], GOOD)
    assert picks(select_disagreement(good, 10, 2)) == [
        ("q4", "A", 0), ("q4", "B", 0), ("q4", "B", 1), ("q3", "A", 0), ("q3", "B", 0)]
    assert picks(select_disagreement(good, 10, 3)) == [("q4", "A", 0), ("q4", "B", 0), ("q4", "B", 1)]
    assert select_disagreement(good, 1, 2).first().reason == "3 distinct final answers across 3 traces"


def test_strategy_diversity_covers_rare_tags_first(spark):
    tagged = spark.createDataFrame([
        ("t1", "A", 0, ["case-analysis", "algebra"]),
        ("t2", "A", 0, ["algebra"]),
        ("t3", "A", 0, ["algebra", "estimation", "unit-analysis"]),
        ("t4", "A", 0, ["backtracking", "algebra"]),
        ("t5", "A", 0, ["algebra", "case-analysis"]),
        ("t6", "A", 0, []),
    ], "question_id string, model string, sample_idx int, strategies array<string>")
    # algebra is on 5 traces, case-analysis on 2, the others on 1: round one files each trace
    # under its rarest tag and takes the rarest tags first; t5 is case-analysis's second.
    assert [p[0] for p in picks(select_strategy_diversity(tagged, 10))] == ["t4", "t3", "t1", "t2", "t5"]
    assert [p[0] for p in picks(select_strategy_diversity(tagged, 3))] == ["t4", "t3", "t1"]
    first = select_strategy_diversity(tagged, 1).first()
    assert first.reason == "2 strategies; filed under 'backtracking' (1 traces), round 1"


def test_random_is_seeded_and_bounded(spark):
    good = spark.createDataFrame([(f"q{i}", "A", i % 2, 5, "1") for i in range(40)], GOOD)
    a, b, c = (picks(select_random(good, 10, s)) for s in (1, 1, 2))
    assert a == b and a != c and len(a) == 10 and len(set(a)) == 10
    assert len(picks(select_random(good, 100, 1))) == 40


# --------------------------------------------------------------------------- the stage


RESPONSES = "question_id string, model string, sample_idx int, response string, status string, completion_tokens int"


def stage_config(root: str, **select) -> dict:
    scripted = {"engine": "scripted", "engine_kwargs": {"script": "udfs.llm.scripted_pipeline:respond"}}
    return {
        "storage": {"root": root},
        "pipeline": {"progress": False, "chunk_rows": 3},
        "llm": {"models": {"default": {**scripted, "label": "tagger"}, "teacher_a": {**scripted, "label": "A"},
                           "teacher_b": {**scripted, "label": "B"}}},
        "select_traces": {"teachers": ["teacher_a", "teacher_b"], "size": 10, **select},
    }


@pytest.fixture()
def trace_store(spark, tmp_path):
    cfg = validate_config(stage_config(str(tmp_path / "root")), "test")
    store = TableStore(spark, cfg.storage)
    qs = [(f"q{i}", f"Question number {i}: how many steps does the proof take?", "ok") for i in range(4)]
    store.overwrite("questions", spark.createDataFrame(qs, "question_id string, question string, status string"))
    long = "Step 1: suppose the claim fails. Step 2: consider each case and check it. " * 4
    rows = [
        ("q0", "A", 0, f"<think>{long}</think>\nFinal answer: 4", "ok", 120),
        ("q0", "B", 0, "<think>Restate, then apply the principle.</think>\nFinal answer: 5", "ok", 20),
        ("q1", "A", 0, "Step 1: restate.\nFinal answer: 7", "ok", 10),
        ("q1", "B", 0, "<think>Substitute and solve.</think> Final answer: 7.", "ok", 12),
        ("q2", "A", 0, "Just 9.", "ok", 3),                               # no trace
        ("q2", "B", 0, "<think>Going on and on", "truncated", 64),        # cut off by max_tokens
        ("q3", "A", 0, "<think>Check units.</think>\nAnswer: 2 m", "ok", 15),
        ("q3", "C", 0, "<think>Not a teacher.</think> 3", "ok", 9),       # not a configured teacher
    ]
    store.overwrite("responses", spark.createDataFrame(rows, RESPONSES))
    return cfg, store


def exported(cfg, kind="jsonl"):
    folder = os.path.join(cfg.expand(cfg.select_traces.export_dir), kind)
    lines = []
    for name in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(name) as f:
            lines += [json.loads(x) for x in f]
    return lines


def test_stage_selects_tags_and_exports_a_mix(spark, trace_store):
    cfg, store = trace_store
    row = run_stage(cfg, "select_traces", spark=spark)
    counts = row["counts"]
    traces = {(r.question_id, r.model): r.status for r in store.read("traces").collect()}
    assert traces == {("q0", "A"): "ok", ("q0", "B"): "ok", ("q1", "A"): "untagged", ("q1", "B"): "ok",
                      ("q2", "A"): "no_trace", ("q2", "B"): "response_truncated", ("q3", "A"): "ok"}
    assert counts["trace_no_trace"] == 1 and counts["trace_response_truncated"] == 1 and counts["in"] == 7

    sel = store.read("selected_traces")
    by = {s: sorted((r.question_id, r.model) for r in sel.where(F.col("strategy") == s).collect())
          for s in ("random", "long_cot", "disagreement", "strategy_diversity")}
    assert by["disagreement"] == [("q0", "A"), ("q0", "B")]  # 4 vs 5; q1 agrees on 7
    assert by["long_cot"] == [("q0", "A")]  # the one long trace is above the 0.9 quantile
    usable = [("q0", "A"), ("q0", "B"), ("q1", "A"), ("q1", "B"), ("q3", "A")]
    assert by["random"] == usable and by["strategy_diversity"] == usable  # size 10 > 5 usable
    tags = store.read("trace_strategies")
    assert tags.count() == 5 and tags.where(F.col("status") == "ok").count() == 5
    assert "proof-by-contradiction" in tags.where(F.col("question_id") == "q0").where(F.col("teacher") == "A") \
        .first().strategies

    lines = exported(cfg)
    assert len(lines) == counts["out"] == 5
    for line in lines:
        system, user, assistant = line["messages"]
        assert [system["role"], user["role"], assistant["role"]] == ["system", "user", "assistant"]
        assert user["content"].startswith("Question number")
        if line["mode"] == "system2":
            assert system["content"].startswith("[mode: think]") and assistant["content"].startswith("<think>\n")
        else:
            assert system["content"].startswith("[mode: answer]") and "<think>" not in assistant["content"]
    assert counts.get("sft_system1", 0) + counts.get("sft_system2", 0) == 5
    assert glob.glob(os.path.join(cfg.expand(cfg.select_traces.export_dir), "parquet", "*.parquet"))

    again = run_stage(cfg, "select_traces", spark=spark)
    assert again["counts"] == {"skipped_up_to_date": 1}


def test_mix_by_difficulty_and_strict_tags(spark, trace_store):
    _, store = trace_store
    cfg = validate_config(stage_config(store.cfg.root, allow_untagged=False, strategies=["random"],
                                       mix={"mode": "difficulty", "difficulty": "reasoning_tokens",
                                            "difficulty_threshold": 50}), "test")
    run_stage(cfg, "select_traces", spark=spark)
    modes = {(x["question_id"], x["teacher"]): x["mode"] for x in exported(cfg)}
    # untagged q1/A is not usable now; only q0/A has >= 50 reasoning tokens
    assert modes == {("q0", "A"): "system2", ("q0", "B"): "system1", ("q1", "B"): "system1", ("q3", "A"): "system1"}
    assert not store.exists("trace_strategies")


def test_all_system2_or_all_system1_by_ratio(spark, trace_store):
    _, store = trace_store
    for ratio, mode in ((1.0, "system2"), (0.0, "system1")):
        cfg = validate_config(stage_config(store.cfg.root, strategies=["random"], mix={"system2_ratio": ratio}), "t")
        run_stage(cfg, "select_traces", spark=spark)
        assert {x["mode"] for x in exported(cfg)} == {mode}


def test_unknown_teacher_is_a_config_error():
    with pytest.raises(Exception, match=r"select_traces.teachers\[0\]='nope' is not a model"):
        validate_config({"select_traces": {"teachers": ["nope"]}}, "test")
