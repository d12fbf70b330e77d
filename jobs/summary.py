"""The end-of-run summary: what each stage did in this run, and what the tables now hold.

Nothing here scans a table. "This run" comes from the stages' ``runs`` rows; "dataset so
far" from the latest ``runs`` row of each stage (its ``counts``: every stage counts what it
kept and dropped) plus the tables' row counts from the Delta log's per-file statistics. At a
billion documents the old way (about fifteen filtered counts after every run) re-read every
table; this reads the ``runs`` table, which has one row per stage run.
"""
from __future__ import annotations

import io
from typing import Optional

from jobs.common.config import PipelineConfig

LLM_TABLES = ["annotations", "questions", "responses", "judgments"]
# (table, label) whose row counts the summary shows, from Delta statistics.
TABLE_ROWS = [("documents", "documents"), ("annotations", "annotations"), ("questions", "questions"),
              ("responses", "responses"), ("judgments", "judgments"), ("dataset", "dataset rows"),
              ("samples", "self-training samples")]
# (stage, count key, label) taken from the stage's latest runs row.
STAGE_COUNTS = [("annotate", "selected", "selected"),
                ("question_dedup", "dropped_near_duplicate", "removed as duplicates"),
                ("decontaminate", "dropped_contaminated", "removed as contaminated")]


def _reasons(counts: dict, most: int = 3) -> str:
    """The drop and failure counts, largest first; past ``most`` only their number and total
    (``runs`` and ``nr status`` have them all)."""
    from jobs.status import drop_reasons

    parts = sorted(drop_reasons(counts).items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{k}={v}" for k, v in parts[:most])
    rest = parts[most:]
    if rest:
        text += f" (+{len(rest)} more: {sum(v for _, v in rest)} rows)"
    return text


def latest_runs(spark, cfg: PipelineConfig, stages: list[str]) -> dict[str, list[dict]]:
    """Per stage, the ``counts`` and ``metrics`` of its ok ``runs`` rows, newest first (the
    ``runs`` table has one small row per stage run; a run that found its stage up to date
    counts nothing, so a figure comes from the newest run that has it)."""
    from pyspark.sql import functions as F

    from jobs.common.storage import TableStore

    store = TableStore(spark, cfg.storage)
    if not store.exists("runs"):
        return {}
    out: dict[str, list[dict]] = {}
    for r in (store.read("runs").where((F.col("status") == "ok") & F.col("stage").isin(stages))
              .select("stage", "counts", "metrics").orderBy(F.col("finished_at").desc()).collect()):
        out.setdefault(r["stage"], []).append({"counts": dict(r["counts"] or {}), "metrics": dict(r["metrics"] or {})})
    return out


def _newest(history: dict, stage: str, key: str) -> Optional[dict]:
    return next((r for r in history.get(stage, []) if key in r["counts"]), None)


def headline(cfg: PipelineConfig, spark, this_run: Optional[list[dict]] = None) -> dict:
    """Figures a person wants after a run, without scanning a table."""
    from jobs.common.storage import TableStore

    store = TableStore(spark, cfg.storage)
    h: dict = {"tables": {}, "stages": {}}
    for table, _ in TABLE_ROWS:
        try:
            n = store.num_rows(table) if store.exists(table) else None
        except Exception:  # a summary must not fail a finished run
            n = None
        if n is not None:
            h["tables"][table] = n
    try:
        history = latest_runs(spark, cfg, sorted({st for st, _, _ in STAGE_COUNTS} | {"score", "train_data"}))
    except Exception:
        history = {}
    for stage, key, _ in STAGE_COUNTS:
        found = _newest(history, stage, key)
        if found is not None:
            h["stages"][f"{stage}:{key}"] = found["counts"][key]
    score = _newest(history, "score", "questions_scored")
    if score is not None:  # pass@1 / maj@k against references, as the score stage recorded them
        c, m = score["counts"], score["metrics"]
        h["selftrain"] = {"questions": c["questions_scored"], "with_reference": c.get("questions_with_reference", 0),
                          "pass_at_1": m.get("pass_at_1"), "maj_at_k": m.get("maj_at_k"),
                          "majority_share": m.get("majority_share_mean")}
    exported = _newest(history, "train_data", "out_sft")
    if exported is not None:
        for kind in ("sft", "dpo"):
            h[f"train_{kind}"] = {k[len(kind) + 1:]: v for k, v in exported["counts"].items()
                                  if k.startswith(kind + "_")}
    failures, prompt_tokens, completion_tokens = {}, 0, 0
    for r in this_run or []:
        c = r.get("counts") or {}
        for k, v in c.items():
            if k.startswith("failed_") and v:
                failures[f"{r['stage']}:{k[len('failed_'):]}"] = v
        prompt_tokens += c.get("prompt_tokens", 0)
        completion_tokens += c.get("completion_tokens", 0)
    h["not_ok_by_stage"] = failures
    h["prompt_tokens"] = prompt_tokens
    h["completion_tokens"] = completion_tokens
    return h


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def render_summary(rows: list[dict], cfg: PipelineConfig, spark=None) -> str:
    from rich.console import Console
    from rich.table import Table

    buf = io.StringIO()
    console = Console(file=buf, width=150, force_terminal=False, color_system=None)
    t = Table(title=f"this run (storage.root = {cfg.storage.root})")
    for col in ("stage", "status", "wall s", "in", "out", "tokens prompt/completion", "dropped / failed"):
        t.add_column(col, overflow="fold")
    for r in rows:
        c = r.get("counts") or {}
        p, cc = c.get("prompt_tokens", 0), c.get("completion_tokens", 0)
        t.add_row(
            r["stage"], r["status"] + (f" ({r['error']})" if r.get("error") and r["status"] != "ok" else ""),
            f"{r.get('wall_seconds') or 0:.1f}", str(c.get("in", "")), str(c.get("out", "")),
            f"{p}/{cc}" if p or cc else "", _reasons(c),
        )
    console.print(t)
    if spark is not None:
        h = headline(cfg, spark, rows)
        lines = [f"{label}: {h['tables'][t]}" for t, label in TABLE_ROWS if t in h["tables"]]
        lines += [f"{label}: {h['stages'][f'{st}:{k}']}" for st, k, label in STAGE_COUNTS if f"{st}:{k}" in h["stages"]]
        if lines:
            console.print("dataset so far -- " + " | ".join(lines))
        st = h.get("selftrain")
        if st:
            console.print(f"self-training -- questions: {st['questions']} ({st['with_reference']} with reference) | "
                          f"pass@1: {_fmt(st['pass_at_1'])} | maj@k: {_fmt(st['maj_at_k'])} | "
                          f"mean majority share: {_fmt(st['majority_share'])}")
        for kind in ("sft", "dpo"):
            if h.get(f"train_{kind}") is not None:
                per_rule = ", ".join(f"{k}={v}" for k, v in sorted(h[f"train_{kind}"].items())) or "none"
                console.print(f"train {kind} rows per rule: {per_rule}")
        if h.get("not_ok_by_stage"):
            console.print("not ok in this run (stage:status=count): " + ", ".join(
                f"{k}={v}" for k, v in sorted(h["not_ok_by_stage"].items())))
        if h.get("prompt_tokens") or h.get("completion_tokens"):
            console.print(f"tokens in this run: prompt={h['prompt_tokens']} completion={h['completion_tokens']}")
    return buf.getvalue()


