"""The LLM layer: prompts, scripted engine, truncation rule, self-score, vLLM output mapping,
the Arrow-batch generation UDF in local Spark, and the real transformers engine on SmolLM2."""
from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
from pyspark.sql import functions as F

from jobs.common.config import ModelConfig, SamplingConfig
from jobs.common.llm import PromptFieldError, engine_config, engine_worker_pool, generate, with_prompt
from udfs.llm.base import FatalEngineError, Sampling
from udfs.llm.engines import config_hash
from udfs.llm.prompts import load_prompt
from udfs.llm.scripted import ScriptedEngine
from udfs.llm.selfscore import yes_no_score
from udfs.llm.truncate import CUT, fit_messages
from udfs.llm.vllm_engine import completion_from_output, to_sampling_kwargs


def test_prompts_load_render_and_hash():
    p = load_prompt("judge_reference")
    assert p.fields == {"question", "reference_answer", "response"}
    msgs = p.render({"question": "Q?", "reference_answer": "42", "response": "It is 42 ($5)"})
    assert [m["role"] for m in msgs] == ["system", "user"] and "It is 42 ($5)" in msgs[1]["content"]
    assert len(p.sha) == 12 and p.sha == load_prompt("judge_reference").sha
    with pytest.raises(FileNotFoundError, match="known prompts"):
        load_prompt("nope")


def test_sampling_with_a_json_schema_is_hashable():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    a, b = Sampling(json_schema=schema), Sampling(json_schema=dict(reversed(list(schema.items()))))
    assert a == b and hash(a) == hash(b) and len({a, b, Sampling()}) == 2


def test_selfscore_variants_and_floor():
    assert yes_no_score({" Yes": -0.2, "No": -1.7}) == pytest.approx(1.5)
    assert yes_no_score({"yes": -1.0, "YES": -1.0, "no": -0.5}) > -0.5 + 0.0 - 1.0
    assert yes_no_score({"Yes": -0.1}, floor=-20) == pytest.approx(19.9)
    assert yes_no_score(None) is None and yes_no_score({}) is None


def test_truncation_rule_keeps_system_head_and_tail():
    count = lambda ms: sum(len(m["content"].split()) for m in ms)  # noqa: E731
    body = " ".join(f"w{i}" for i in range(1000))
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": body}]
    fitted, truncated, too_long = fit_messages(msgs, count, 300)
    assert truncated and not too_long and count(fitted) <= 300
    assert fitted[0] == msgs[0] and fitted[1]["content"].startswith("w0 w1") and fitted[1]["content"].endswith("w999")
    assert CUT.strip() in fitted[1]["content"]
    assert fit_messages(msgs, count, 300, mode="mark") == (msgs, False, True)
    assert fit_messages(msgs, count, 5000) == (msgs, False, False)


def test_scripted_engine_n_errors_and_too_long():
    e = ScriptedEngine({"model": "s", "max_model_len": 50, "too_long": "mark",
                        "engine_kwargs": {"fail_on": "BAD", "fatal_on": "FATAL"}})
    out = e.chat([[{"role": "user", "content": "hi"}], [{"role": "user", "content": "BAD"}],
                  [{"role": "user", "content": "x " * 100}]], [Sampling(n=3, max_tokens=8)] * 3)
    assert len(out[0]) == 3 and out[0][0].text != out[0][1].text and out[0][0].finish_reason == "stop"
    assert out[1][0].error and out[1][0].finish_reason == "error"
    assert out[2][0].finish_reason == "too_long"
    with pytest.raises(FatalEngineError):
        e.chat([[{"role": "user", "content": "FATAL"}]], [Sampling()])


def test_vllm_sampling_mapping_and_recorded_outputs():
    assert to_sampling_kwargs(Sampling(temperature=0.0, top_p=0.5, max_tokens=9, n=2, seed=3, logprobs=20)) == {
        "n": 2, "temperature": 0.0, "top_p": 1.0, "max_tokens": 9, "seed": 3, "logprobs": 20}
    assert to_sampling_kwargs(Sampling(temperature=0.7, top_p=0.9, seed=None, stop=("##",)))["stop"] == ["##"]
    lp = lambda v, t: SimpleNamespace(logprob=v, decoded_token=t)  # noqa: E731
    recorded = SimpleNamespace(text="Yes", token_ids=[9891], finish_reason="length",
                               logprobs=[{9891: lp(-0.2, "Yes"), 1770: lp(-1.9, "No"), 5: lp(-3.0, None)}])
    c = completion_from_output(recorded, prompt_tokens=40, want_logprobs=True, truncated=False)
    assert c.completion_tokens == 1 and c.finish_reason == "length" and c.prompt_tokens == 40
    assert c.first_token_logprobs == {"Yes": -0.2, "No": -1.9, "5": -3.0}
    assert yes_no_score(c.first_token_logprobs) == pytest.approx(1.7)


def test_generate_10k_rows_one_engine_per_worker(spark):
    df = spark.range(10_000).select(F.format_string("k%05d", "id").alias("k"),
                                    F.format_string("question %d", "id").alias("question"))
    msgs = with_prompt(df, "respond")
    model = ModelConfig(engine="scripted", label="s", batch_size=64)
    out = generate(msgs, key_cols=["k"], model=model, sampling=SamplingConfig(n=2, max_tokens=64))
    rows = out.collect()
    assert len(rows) == 20_000 and {r.sample_idx for r in rows} == {0, 1}
    from udfs.llm.scripted import echo

    # exact output for every (row, sample), computed without Spark
    prompt = load_prompt("respond")
    got = {(r.k, r.sample_idx): (r.text, r.error, r.model, r.prompt_name, r.prompt_hash) for r in rows}
    expected = {}
    for i in range(10_000):
        msgs_i = prompt.render({"question": f"question {i}"})
        for idx in (0, 1):
            expected[(f"k{i:05d}", idx)] = (echo(msgs_i, Sampling(), idx), None, "s", "respond", prompt.sha)
    assert got == expected
    # One engine per Python worker: ask the workers how many engines they built. The probe is
    # a mapInPandas job created in the generation UDF's worker pool (SQL Python workers are
    # reused across SQL jobs of one pool; RDD jobs get other processes); at least one probed
    # worker must have built the engine (else the probe proves nothing) and none more than
    # once. The number of such workers is not bounded by the task slots: a task can start
    # before the previous task's worker is back in the idle pool.
    def probe(batches):
        import json as _json

        import pandas as _pd

        from udfs.llm.engines import engine_constructions

        for _ in batches:
            pass
        yield _pd.DataFrame({"pid": [os.getpid()], "counts": [_json.dumps(engine_constructions())]})

    with engine_worker_pool(spark, config_hash(engine_config(model, None, spark))):
        probe_df = spark.range(16).repartition(8).mapInPandas(probe, "pid long, counts string")
    seen = probe_df.collect()
    built = {r.pid: json.loads(r.counts) for r in seen if json.loads(r.counts)}
    assert built, "no probed worker had built an engine"
    for counts in built.values():
        assert all(v == 1 for v in counts.values()), counts


def test_routes_give_each_row_its_prompt_and_sampling_in_one_generation(spark):
    """Rows of two kinds in one generate() call: each is rendered by its route's prompt and
    sampled by its route's settings (n differs), and the plan has one generation node."""
    df = spark.createDataFrame([("a", "Q1?", "R1", "42"), ("b", "Q2?", "R2", "7")],
                               "k string, question string, response string, reference_answer string")
    rows = df.select("*", F.lit("ss").alias("route")).unionByName(df.select("*", F.lit("ref").alias("route")))
    model = ModelConfig(engine="scripted", label="s")
    routes = {"ss": ("judge_selfscore", SamplingConfig(max_tokens=1, logprobs=5)),
              "ref": ("judge_reference", SamplingConfig(n=2))}
    out = generate(rows, key_cols=["k", "route"], model=model, route_col="route", routes=routes)
    assert out._jdf.queryExecution().executedPlan().toString().count("MapInPandas") == 1
    from udfs.llm.scripted import echo

    got = {(r.k, r.route, r.sample_idx): (r.text, r.prompt_name, r.prompt_hash) for r in out.collect()}
    expected = {}
    for k, q, resp, ref in [("a", "Q1?", "R1", "42"), ("b", "Q2?", "R2", "7")]:
        fields = {"question": q, "response": resp, "reference_answer": ref}
        for route, (name, sampling) in routes.items():
            prompt = load_prompt(name)
            for idx in range(sampling.n):
                text = " ".join(echo(prompt.render(fields), Sampling(), idx).split()[:sampling.max_tokens])
                expected[(k, route, idx)] = (text, prompt.name, prompt.sha)
    assert got == expected
    with pytest.raises(ValueError, match="route_col"):
        generate(rows, key_cols=["k"], model=model, route_col="route", routes=routes)


def test_model_input_shuffles_only_to_spread_rows_over_several_tasks(spark):
    """One model task (a local model on all cores) takes the chunk's rows without a shuffle;
    several get the rows split by key hash."""
    from jobs.common.llm import spread

    df = spark.range(40).selectExpr("cast(id as string) as k").repartition(3)

    def plan(d):
        return d._jdf.queryExecution().executedPlan().toString()

    one = spread(df.where("k != '7'"), 1, ["k"])
    assert plan(one).count("Exchange") == 1 and one.rdd.getNumPartitions() == 1  # the input's own only
    two = spread(df, 2, ["k"])
    assert "hashpartitioning(k" in plan(two) and two.rdd.getNumPartitions() == 2
    assert sorted(r.k for r in one.collect()) == sorted(str(i) for i in range(40) if i != 7)


def test_in_process_models_get_every_local_core(spark):
    """Spark starts Python workers with OMP_NUM_THREADS at the task's cores (1 here), which left
    vLLM's CPU build on one core; in local mode the worker's thread count is set explicitly."""
    from jobs.common.llm import _partitions

    cores = spark.sparkContext.defaultParallelism
    df = spark.range(4)
    for engine in ("vllm", "transformers", "auto"):
        cfg = engine_config(ModelConfig(engine=engine, label="m"), None, spark)
        assert cfg["torch_threads"] == cores and _partitions(df, ModelConfig(engine=engine)) == 1
    one = ModelConfig(engine="vllm", label="m", torch_threads=1)
    assert engine_config(one, None, spark)["torch_threads"] == 1 and _partitions(df, one) == cores
    # never more threads than cores, and nothing set for engines outside the worker
    assert engine_config(ModelConfig(engine="vllm", torch_threads=64), None, spark)["torch_threads"] == cores
    assert engine_config(ModelConfig(engine="scripted"), None, spark).get("torch_threads") is None
    assert engine_config(ModelConfig(engine="openai", base_url="http://h/v1"), None, spark).get("torch_threads") is None
    # what the worker does with it: OMP_NUM_THREADS replaced, not kept at Spark's 1
    from udfs.llm.vllm_engine import prepare_cpu_env

    before = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "VLLM_ENABLE_V1_MULTIPROCESSING")}
    import torch

    torch_before = torch.get_num_threads()
    try:
        os.environ["OMP_NUM_THREADS"] = "1"
        prepare_cpu_env({"torch_threads": cores})
        assert os.environ["OMP_NUM_THREADS"] == str(cores) and torch.get_num_threads() == cores
    finally:
        torch.set_num_threads(torch_before)
        for k, v in before.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def test_prompt_field_missing_fails_before_any_task(spark):
    df = spark.createDataFrame([("a",)], "k string")
    with pytest.raises(PromptFieldError, match="question"):
        with_prompt(df, "respond")


def test_row_error_vs_fatal_error(spark):
    df = spark.createDataFrame([("a", "fine"), ("b", "BAD row")], "k string, question string")
    model = ModelConfig(engine="scripted", label="s", engine_kwargs={"fail_on": "BAD", "fatal_on": "FATAL"})
    rows = {r.k: r for r in generate(with_prompt(df, "respond"), key_cols=["k"], model=model,
                                     sampling=SamplingConfig()).collect()}
    assert rows["a"].error is None and rows["b"].error and rows["b"].finish_reason == "error"
    bad = spark.createDataFrame([("c", "FATAL")], "k string, question string")
    with pytest.raises(Exception, match="scripted fatal error"):
        generate(with_prompt(bad, "respond"), key_cols=["k"], model=model, sampling=SamplingConfig()).collect()


def test_transformers_engine_on_smollm2(real_model):
    from udfs.llm.hf_engine import TransformersEngine

    e = TransformersEngine({"model": real_model, "max_model_len": 2048, "torch_threads": 2})
    convs = [[{"role": "user", "content": "What is 2+2? Answer briefly."}],
             [{"role": "user", "content": "Is water wet? Reply Yes or No."}],
             [{"role": "user", "content": "word " * 3000}]]
    # A json_schema (what structured-output stages send) is ignored here, not an error.
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    out = e.chat(convs, [Sampling(max_tokens=16, json_schema=schema), Sampling(max_tokens=1, logprobs=10),
                         Sampling(max_tokens=6, n=2, temperature=0.8, seed=5)])
    assert not any(c.error for cs in out for c in cs)
    assert out[0][0].text.strip() and out[0][0].completion_tokens > 0
    assert out[1][0].first_token_logprobs and yes_no_score(out[1][0].first_token_logprobs) is not None
    assert len(out[2]) == 2 and out[2][0].truncated_prompt and out[2][0].prompt_tokens <= 2048 - 6
    again = e.chat(convs[2:], [Sampling(max_tokens=6, n=2, temperature=0.8, seed=5)])
    assert [c.text for c in again[0]] == [c.text for c in out[2]], "seeded sampling is reproducible"


def test_an_engine_is_frozen_out_of_later_collections():
    """Spark's daemon runs gc.collect() after every task; a built engine is moved to the
    permanent generation, so those collections do not walk a model's objects again."""
    import gc
    import uuid

    from udfs.llm.engines import get_engine

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    get_engine({"engine": "scripted", "label": f"frozen-{uuid.uuid4().hex}", "engine_kwargs": {"script": "echo"}})
    assert gc.get_freeze_count() > 0
    gc.unfreeze()
