"""``nr plan --config F [--stages a,b]``: a dry run. Nothing is written.

Which stages would run or be skipped; for the first chunked stage (one with ``Stage.work``)
its pending rows, counted with the same pending rule its run uses (one anti-join per pass),
for later ones "depends on the stages before"; prompt tokens estimated from the per-row
averages of earlier runs; and what preflight would stop.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Optional, Sequence

from pyspark.sql import functions as F

from jobs.common import runs as runs_table
from jobs.common.config import PipelineConfig
from jobs.common.logs import render_tables
from jobs.common.runner import StageContext
from jobs.common.storage import TableStore
from jobs.ops.args import parse, parse_common, start_spark
from jobs.ops.preflight import PreflightError, check_stage_names, preflight_problems
from jobs.stages import BY_NAME, configured
from jobs.stages.corpus.bootstrap import sample_targets


# Stages whose pending rows the plan counts (one anti-join each): the LLM stages and embed.


# What a pending row of a counted stage is, for the plan's wording.


def token_averages(store) -> dict[str, dict]:
    """stage -> prompt/completion tokens per output row over every successful run that produced rows."""
    if not store.exists("runs"):
        return {}
    c = F.col("counts")
    agg = (store.read("runs").where((F.col("status") == "ok") & (F.coalesce(c["out"], F.lit(0)) > 0)
                                    & (F.coalesce(c["prompt_tokens"], F.lit(0)) > 0))
           .groupBy("stage").agg(F.sum(c["out"]).alias("rows"), F.sum(c["prompt_tokens"]).alias("prompt"),
                                 F.sum(c["completion_tokens"]).alias("completion"), F.count("*").alias("runs")))
    return {r["stage"]: {"rows": r["rows"], "runs": r["runs"],
                         "prompt_per_row": r["prompt"] / r["rows"],
                         "completion_per_row": (r["completion"] or 0) / r["rows"]} for r in agg.collect()}


@dataclass
class PlanStep:
    stage: str
    action: str  # run | skip
    detail: str
    pending: Optional[int] = None
    prompt_tokens_estimate: Optional[int] = None
    prompt_tokens_per_row: Optional[float] = None


def make_plan(cfg: PipelineConfig, spark, stages: Optional[Sequence[str]] = None) -> dict:
    names = list(stages or configured(cfg))
    check_stage_names(names)
    store = TableStore(spark, cfg.storage)
    runs = runs_table.latest(store, names)
    tokens = token_averages(store)
    versions = {t: v for t in {t for n in names for t in BY_NAME[n].inputs} if (v := store.version(t)) is not None}
    steps: list[PlanStep] = []
    first_llm_done = False
    running: list[str] = []  # stages before this one that would run
    for name in names:
        stage = BY_NAME[name]
        skip = stage.skip_reason(cfg)
        if skip:
            steps.append(PlanStep(name, "skip", skip))
            continue
        avg = tokens.get(name)
        per_row = round(avg["prompt_per_row"], 1) if avg else None
        if stage.work is not None:
            # A later LLM stage is counted too when nothing before it would run (its input is final).
            if (first_llm_done and running) or any(not store.exists(t) for t in stage.required):
                detail = "depends on the stages before"
                step = PlanStep(name, "run", detail, prompt_tokens_per_row=per_row)
            else:
                ctx = StageContext(spark, cfg, store, name, "plan", "plan", spec=stage)
                n = sum(w.pending.count() for w in stage.work(ctx))
                detail = f"{n:,} {stage.pending_unit} pending"
                if running:
                    detail += f" (counted before {', '.join(running)} run)"
                est = None
                if per_row is not None:
                    # respond writes sampling.n rows per pending question, each with its prompt counted
                    mult = cfg.respond.sampling.n if name == "respond" else 1
                    est = int(round(n * mult * avg["prompt_per_row"]))
                step = PlanStep(name, "run" if n else "skip", detail if n else "nothing pending",
                                pending=n, prompt_tokens_estimate=est, prompt_tokens_per_row=per_row)
            first_llm_done = True
        elif stage.kind == "whole_table":
            reasons = runs_table.out_of_date_reasons(stage, cfg, runs.get(name, {}).get("last_ok"), versions)
            if running:
                reasons = reasons or [f"inputs may change when {', '.join(running)} run"]
            step = PlanStep(name, "run", "; ".join(reasons)) if reasons else \
                PlanStep(name, "skip", "up to date: inputs and config unchanged since the last run")
        elif name == "bootstrap":
            todo = [p for p in sample_targets(cfg).values() if not store.backend.exists(p)]
            step = PlanStep(name, "run" if todo else "skip",
                            f"writes {', '.join(todo)}" if todo else "sample tables already written")
        elif name == "ingest":
            step = PlanStep(name, "run", "reads the sources, adds the rows not yet in documents")
        else:
            step = PlanStep(name, "run", "adds the rows of its input not yet in its output (not counted)")
        steps.append(step)
        # ingest re-reads its sources every run but changes documents only when they grew.
        if step.action == "run" and name != "ingest":
            running.append(name)
    problems = preflight_problems(cfg, names, store, cmd="nr run")
    total = sum(s.prompt_tokens_estimate or 0 for s in steps)
    return {"storage_root": cfg.storage.root, "steps": [s.__dict__ for s in steps], "problems": problems,
            "prompt_tokens_estimate": total or None}


def render_plan(p: dict) -> str:
    rows = [[s["stage"], s["action"], s["detail"],
             "" if s["prompt_tokens_estimate"] is None else f"~{s['prompt_tokens_estimate']:,}",
             "" if s["prompt_tokens_per_row"] is None else f"{s['prompt_tokens_per_row']:,.0f}"] for s in p["steps"]]
    text = render_tables((f"plan (storage.root = {p['storage_root']}; dry run, nothing is written)",
                          ["stage", "action", "detail", "prompt tokens (est.)", "prompt tokens/row (earlier runs)"],
                          rows))
    if p["problems"]:
        text += "\nthe run would stop before its first stage:\n" + "\n".join("error: " + m for m in p["problems"]) + "\n"
    return text


def plan_main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="nr plan", description="Dry run: what `nr run` would do. Writes nothing.")
    parse_common(p)
    p.add_argument("--stages", default=None, help="comma-separated subset, e.g. annotate,synthesize")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args, cfg = parse(p, argv)
    if cfg is None:
        return 2
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    try:
        plan = make_plan(cfg, start_spark(cfg, read_only=True), stages)
    except PreflightError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(plan, indent=2, default=str) if args.json else render_plan(plan))
    return 0
