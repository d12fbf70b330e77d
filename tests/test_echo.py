"""A generation that only repeats its prompt's instructions is flagged, not kept (udfs.echo)."""
from __future__ import annotations

import pandas as pd
from pyspark.sql import functions as F

from jobs.common.llm_stage import row_status
from jobs.stages.questions.synthesize import _plain
from udfs.echo import ECHO_THRESHOLD, instruction_bigrams, prompt_overlap
from udfs.llm.generate import generate_batches
from udfs.llm.prompts import load_prompt

# What SmolLM2 wrote on real pages (issue: a question and a sampled answer that were the prompt).
ECHOED_QUESTION = "What is the answer to the question"
SAMPLE_INSTRUCTIONS = load_prompt("sample").sections[-1][1].replace("${question}", "").strip()


def echo_script(messages, sampling, sample_idx):
    """The scripted model: repeats its instructions when the question says ECHO, else answers."""
    if "ECHO" in messages[-1]["content"]:
        return SAMPLE_INSTRUCTIONS
    return "Each term doubles, so after 10 steps the count is 2^10 = 1024. Final answer: \\boxed{1024}"


def test_real_echoes_are_over_the_threshold_and_real_text_is_far_below():
    assert prompt_overlap(ECHOED_QUESTION, instruction_bigrams("synthesize")) >= ECHO_THRESHOLD
    assert prompt_overlap(SAMPLE_INSTRUCTIONS, instruction_bigrams("sample")) == 1.0
    real = ("A 2.0 kg block slides down a frictionless incline of 30 degrees from a height of 5 m. What is its "
            "speed at the bottom, and how long does the slide take if the incline is straight?")
    for name in ("synthesize", "respond", "sample"):
        assert prompt_overlap(real, instruction_bigrams(name)) < ECHO_THRESHOLD / 3
    # the question a response quotes is not the template's own text: quoting it is not an echo
    assert prompt_overlap(real + " Reason step by step.", instruction_bigrams("respond")) < ECHO_THRESHOLD / 2


def test_generation_measures_the_overlap_of_each_sample_with_its_template():
    frame = pd.DataFrame({"question_id": ["q1", "q2"], "temperature": [0.8, 0.8],
                          "question": ["How many cells after 10 doublings? ECHO", "How many cells after 10 doublings?"],
                          "overrides": ['{"n": 2}', '{"n": 2}']})
    cfg = {"engine": "scripted", "label": "echo-test", "engine_kwargs": {"script": f"{__name__}:echo_script"}}
    out = pd.concat(generate_batches(iter([frame]), model_cfg=cfg, sampling={"max_tokens": 200},
                                     key_cols=["question_id", "temperature"], prompt="sample",
                                     overrides_col="overrides", echo=True))
    by_q = out.groupby("question_id")["prompt_overlap"].agg(list).to_dict()
    assert len(by_q["q1"]) == 2 and all(v >= ECHO_THRESHOLD for v in by_q["q1"])
    assert all(v < ECHO_THRESHOLD for v in by_q["q2"])
    # without echo the column is there, and null
    plain = pd.concat(generate_batches(iter([frame]), model_cfg=cfg, sampling={"max_tokens": 200},
                                       key_cols=["question_id", "temperature"], prompt="sample"))
    assert plain["prompt_overlap"].isna().all()


def test_echoed_rows_get_their_own_status(spark):
    rows = [("ok text", None, "stop", 0.1), ("echo", None, "stop", 0.9), ("short", None, "stop", None),
            ("failed", "boom", "error", 0.9), ("cut echo", None, "length", 0.95)]
    df = spark.createDataFrame(rows, "text string, error string, finish_reason string, prompt_overlap double")
    got = [r[0] for r in df.select(row_status(echo=True)).collect()]
    assert got == ["ok", "echoes_prompt", "ok", "llm_error", "echoes_prompt"]
    # stages that do not ask for echo are unaffected
    assert [r[0] for r in df.select(row_status()).collect()] == ["ok", "ok", "ok", "llm_error", "truncated"]
    parsed = df.withColumn("p", F.lit("ok")).select(row_status(F.col("p"), echo=True)).collect()
    assert [r[0] for r in parsed] == ["ok", "echoes_prompt", "ok", "llm_error", "echoes_prompt"]


def test_a_reference_that_restates_the_question_compares_equal(spark):
    df = spark.createDataFrame([("What is 2 + 2?", "what is 2+2"), ("What is 2 + 2?", "4")], "q string, r string")
    assert [r[0] for r in df.select(_plain(F.col("q")) == _plain(F.col("r"))).collect()] == [True, False]
