"""The end-of-run summary: what each stage did in this run, and what the tables now hold.

The headline figures are read from the tables, not from this run's counters, so a resumed
run reports the whole dataset, not only the part it added.
"""
from __future__ import annotations

import io
from jobs.common.config import PipelineConfig

LLM_TABLES = ["annotations", "questions", "responses", "judgments"]


def _reasons(counts: dict) -> str:
    parts = [f"{k}={v}" for k, v in sorted(counts.items()) if k.startswith(("dropped_", "failed_")) and v]
    return ", ".join(parts)


def headline(cfg: PipelineConfig, spark) -> dict:
    """Figures a person wants after a run, read from the tables under storage.root."""
    from pyspark.sql import functions as F

    from jobs.common.storage import TableStore

    store = TableStore(spark, cfg.storage)
    h: dict = {}

    def read(name):
        try:
            return store.read(name) if store.exists(name) else None
        except Exception:  # a summary must not fail a finished run
            return None

    docs = read("documents")
    if docs is not None:
        h["documents"] = docs.count()
        h["documents_ok"] = docs.where(F.col("status") == "ok").count()
    ann = read("annotations")
    if ann is not None:
        h["annotated"] = ann.where(F.col("status") == "ok").count()
        h["selected"] = ann.where(F.col("selected")).count()
    qs = read("questions")
    if qs is not None:
        h["questions"] = qs.where(F.col("status") == "ok").count()
    dd = read("dedup_questions_clusters")
    if dd is not None:
        h["removed_duplicates"] = dd.where(~F.col("keep")).count()
    cont = read("contamination")
    if cont is not None:
        h["removed_contaminated"] = cont.select("item_id").distinct().count()
    resp = read("responses")
    if resp is not None:
        h["responses"] = resp.where(F.col("status") == "ok").count()
    jd = read("judgments")
    if jd is not None:
        h["judged"] = jd.where(F.col("status") == "ok").count()
    ds = read("dataset")
    if ds is not None:
        h["dataset"] = ds.count()
    h.update(selftrain_headline(read))
    failures, prompt_tokens, completion_tokens = {}, 0, 0
    for name, df in (("annotate", ann), ("synthesize", qs), ("respond", resp), ("judge", jd),
                     ("sample", read("samples"))):
        if df is None:
            continue
        for row in df.where(F.col("status") != "ok").groupBy("status").count().collect():
            failures[f"{name}:{row['status']}"] = row["count"]
        tok = df.agg(F.sum("prompt_tokens").alias("p"), F.sum("completion_tokens").alias("c")).collect()[0]
        prompt_tokens += tok["p"] or 0
        completion_tokens += tok["c"] or 0
    h["not_ok_by_stage"] = failures
    h["prompt_tokens"] = prompt_tokens
    h["completion_tokens"] = completion_tokens
    return h


def selftrain_headline(read) -> dict:
    """Self-training figures: samples, pass@1 / maj@k against references, majority share, and
    the exported rows per selection rule (SFT and DPO)."""
    from pyspark.sql import functions as F

    h: dict = {}
    samples = read("samples")
    if samples is not None:
        h["samples"] = samples.where(F.col("status") == "ok").count()
    qs = read("question_scores")
    if qs is not None:
        r = qs.agg(F.count(F.lit(1)).alias("n"), F.avg("pass_at_1").alias("p"), F.avg("maj_at_k").alias("m"),
                   F.count("pass_at_1").alias("nr"), F.avg("majority_share").alias("s")).collect()[0]
        h["selftrain"] = {"questions": r["n"], "with_reference": r["nr"], "pass_at_1": r["p"], "maj_at_k": r["m"],
                          "majority_share": r["s"]}
    for kind in ("sft", "dpo"):
        t = read(f"train_{kind}")
        if t is not None:
            h[f"train_{kind}"] = {x["rule"]: x["count"] for x in t.groupBy("rule").count().collect()}
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
        h = headline(cfg, spark)
        order = [("documents", "documents in"), ("documents_ok", "documents usable"), ("annotated", "annotated"),
                 ("selected", "selected"), ("questions", "questions"), ("removed_duplicates", "removed as duplicates"),
                 ("removed_contaminated", "removed as contaminated"), ("responses", "responses"),
                 ("judged", "judgments"), ("dataset", "dataset rows")]
        lines = [f"{label}: {h[k]}" for k, label in order if k in h]
        if lines:
            console.print("dataset so far -- " + " | ".join(lines))
        st = h.get("selftrain")
        if st:
            console.print(f"self-training -- samples: {h.get('samples', 0)} | questions: {st['questions']} "
                          f"({st['with_reference']} with reference) | pass@1: {_fmt(st['pass_at_1'])} | "
                          f"maj@k: {_fmt(st['maj_at_k'])} | mean majority share: {_fmt(st['majority_share'])}")
        for kind in ("sft", "dpo"):
            if h.get(f"train_{kind}") is not None:
                per_rule = ", ".join(f"{k}={v}" for k, v in sorted(h[f"train_{kind}"].items())) or "none"
                console.print(f"train {kind} rows per rule: {per_rule}")
        if h.get("not_ok_by_stage"):
            console.print("not ok (stage:status=count): " + ", ".join(
                f"{k}={v}" for k, v in sorted(h["not_ok_by_stage"].items())))
        if h.get("prompt_tokens") or h.get("completion_tokens"):
            console.print(f"tokens in tables: prompt={h['prompt_tokens']} completion={h['completion_tokens']}")
    return buf.getvalue()


