"""Generation efficiency: the annotate stage against raw ``vllm.LLM.chat`` on the same prompts.

    .venv/bin/python benchmarks/bench_llm_efficiency.py [--config conf/local.yaml] [--docs 0] [--rounds 1]

1. Stage: a fresh storage root, ``bootstrap`` + ``ingest`` of the bundled sample, then the
   ``annotate`` stage with the config's model (vLLM; on this machine vLLM's CPU build), in
   a child process. Its time is the stage's wall time from its ``runs`` row (staging, engine
   build in the Spark worker, generation, parsing, commits); its tokens are the stage's
   prompt + completion token counts.
2. Raw: another child process renders exactly the prompts the stage sent (the documents it
   annotated, cut at ``annotate.max_doc_chars``, through the same template), builds
   ``vllm.LLM`` with the same engine arguments (``udfs.llm.vllm_engine.engine_args``) and
   calls ``LLM.chat`` once on all of them with the same sampling and JSON schema. Its time is
   the engine build plus the call (the stage's time includes its engine build too).

Printed: tokens and seconds of both, tokens/s of both (also raw without its load), and as
the last line ``ratio <stage tokens/s / raw tokens/s>`` (target >= 0.90). With ``--rounds
K`` the pair runs K times, every other round raw first (stage, raw, raw, stage, ...: a
machine whose speed drifts during the runs weighs on both sides alike), each round is
printed, and the last line is the median of the K ratios. Run it on a GPU
node with a GPU config the same way. The two runs take minutes of every core: nothing else
should run meanwhile (the load average is printed).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _cfg(config: str, root: str):
    from jobs.common.config import load_config

    return load_config(config, [f"storage.root={root}", "pipeline.progress=false"])


def stage_worker(config: str, root: str, docs: int, out: str) -> None:
    """Child 1: run annotate; write its figures and the prompts it sent."""
    from pyspark.sql import functions as F

    from jobs.common.storage import TableStore
    from jobs.common.logs import setup as setup_logging
    from jobs.pipeline import run_pipeline

    setup_logging("WARNING")
    cfg = _cfg(config, root)
    from jobs.common.spark import get_spark

    spark = get_spark(cfg.spark, checkpoint_dir=f"{root}/_checkpoints")
    run_pipeline(cfg, ["bootstrap", "ingest"], spark=spark)
    store = TableStore(spark, cfg.storage)
    if docs:  # keep the first N usable documents (by key) so the run size is chosen
        keep = store.read("documents").where(F.col("status") == "ok").orderBy("doc_id").limit(docs)
        store.overwrite("documents", keep.localCheckpoint())
    rows = run_pipeline(cfg, ["annotate"], spark=spark)
    row = rows[-1]
    if row["status"] != "ok":
        raise SystemExit(f"annotate ended {row['status']}: {row.get('error')}")
    ann = store.read("annotations").select("doc_id")
    texts = (store.read("documents").join(ann, "doc_id", "left_semi")
             .select("doc_id", F.substring("text", 1, cfg.annotate.max_doc_chars).alias("text"))
             .orderBy("doc_id").collect())
    c = row["counts"]
    with open(out, "w") as f:
        json.dump({"seconds": row["wall_seconds"], "prompt_tokens": c.get("prompt_tokens", 0),
                   "completion_tokens": c.get("completion_tokens", 0), "rows": c.get("out", 0),
                   "texts": [r["text"] for r in texts]}, f)
    spark.stop()


def raw_worker(config: str, root: str, stage_out: str, out: str) -> None:
    """Child 2: the same prompts through ``vllm.LLM.chat`` directly."""
    from jobs.common.llm_stage import structured
    from udfs.llm.base import Sampling
    from udfs.llm.models import resolve_model
    from udfs.llm.prompts import load_prompt
    from udfs.llm.vllm_engine import (
        _cuda_available, count_page_cache_as_free, cpu_available_bytes, engine_args, prepare_cpu_env,
        vllm_sampling_params,
    )

    cfg = _cfg(config, root)
    with open(stage_out) as f:
        texts = json.load(f)["texts"]
    prompt = load_prompt(cfg.annotate.prompt)
    convs = [prompt.render({"text": t}) for t in texts]
    sampling = Sampling.from_dict(structured(cfg.annotate.sampling, "annotation",
                                             cfg.annotate.structured_output).model_dump(mode="json"))
    model = cfg.llm.models[cfg.annotate.model]
    model_cfg = model.model_dump(mode="json")
    on_gpu = _cuda_available()
    t0 = time.perf_counter()
    if not on_gpu:
        prepare_cpu_env(model_cfg)
    from vllm import LLM

    if not on_gpu:
        count_page_cache_as_free()
    path = resolve_model(model.model, "vllm", cfg.llm.cache_dir)
    llm = LLM(**engine_args(model_cfg, path, on_gpu, None if on_gpu else cpu_available_bytes()))
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    outputs = llm.chat(convs, sampling_params=[vllm_sampling_params(sampling)] * len(convs), use_tqdm=False)
    chat_s = time.perf_counter() - t1
    with open(out, "w") as f:
        json.dump({"load_s": load_s, "chat_s": chat_s, "rows": len(convs),
                   "prompt_tokens": sum(len(o.prompt_token_ids or ()) for o in outputs),
                   "completion_tokens": sum(len(s.token_ids or ()) for o in outputs for s in o.outputs)}, f)


def _child(args: list[str]) -> None:
    subprocess.run([sys.executable, os.path.abspath(__file__), *args], check=True, cwd=REPO)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=os.path.join(REPO, "conf", "local.yaml"))
    p.add_argument("--docs", type=int, default=0, help="annotate only the first N documents (0: all)")
    p.add_argument("--rounds", type=int, default=1,
                   help="stage/raw pairs, alternating which runs first; the last line is their median ratio")
    p.add_argument("--child", choices=["stage", "raw"], help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--stage-out", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child == "stage":
        stage_worker(args.config, args.root, args.docs, args.out)
        return 0
    if args.child == "raw":
        raw_worker(args.config, args.root, args.stage_out, args.out)
        return 0

    ratios = []
    with tempfile.TemporaryDirectory(prefix="nr-bench-llm-") as tmp:
        print(f"# config {args.config}; {args.rounds} round(s); load avg {os.getloadavg()[0]:.2f}", flush=True)
        for i in range(args.rounds):
            root, s_out, r_out = (os.path.join(tmp, f"{name}{i}") for name in ("root", "stage.json", "raw.json"))
            stage_cmd = ["--child", "stage", "--config", args.config, "--root", root, "--docs", str(args.docs),
                         "--out", s_out]
            # Odd rounds run raw first, on the prompts round 0's stage sent: stage, raw, raw,
            # stage, ... so a drift in this machine's speed weighs on both sides alike.
            raw_first = i % 2 == 1
            texts = os.path.join(tmp, "stage.json0") if raw_first else s_out
            raw_cmd = ["--child", "raw", "--config", args.config, "--root", root, "--stage-out", texts, "--out", r_out]
            for cmd in ([raw_cmd, stage_cmd] if raw_first else [stage_cmd, raw_cmd]):
                _child(cmd)
            with open(s_out) as f:
                st = json.load(f)
            with open(r_out) as f:
                raw = json.load(f)
            ratios.append(_report(st, raw, i, args.rounds))
    print(f"ratio {statistics.median(ratios):.3f}")
    return 0


def _report(st: dict, raw: dict, i: int, rounds: int) -> float:
    st_tok = st["prompt_tokens"] + st["completion_tokens"]
    raw_tok = raw["prompt_tokens"] + raw["completion_tokens"]
    raw_s = raw["load_s"] + raw["chat_s"]
    tag = f"[round {i + 1}/{rounds}] " if rounds > 1 else ""
    print(f"{tag}stage (annotate): {st['rows']} rows, {st['prompt_tokens']} prompt + {st['completion_tokens']} "
          f"completion tokens in {st['seconds']:.1f}s = {st_tok / st['seconds']:.1f} tokens/s")
    print(f"{tag}raw vllm.LLM.chat: {raw['rows']} prompts, {raw['prompt_tokens']} prompt + {raw['completion_tokens']} "
          f"completion tokens in {raw['load_s']:.1f}s load + {raw['chat_s']:.1f}s chat = {raw_tok / raw_s:.1f} tokens/s "
          f"({raw_tok / raw['chat_s']:.1f} tokens/s without the load)")
    ratio = (st_tok / st["seconds"]) / (raw_tok / raw_s)
    print(f"{tag}stage / raw: {ratio:.3f} ({(st_tok / st['seconds']) / (raw_tok / raw['chat_s']):.3f} without raw's "
          f"load); load avg {os.getloadavg()[0]:.2f}", flush=True)
    return ratio


if __name__ == "__main__":
    sys.exit(main())
