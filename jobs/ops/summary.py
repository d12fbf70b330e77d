"""The end-of-run summary: what each stage did in this run, and what the tables now hold (the
figures each stage spec's ``headline`` names, in pipeline order).

Nothing here scans a table. "This run" comes from the stages' ``runs`` rows; "dataset so
far" from the latest ``runs`` row of each stage (its ``counts``: every stage counts what it
kept and dropped) plus the tables' row counts from the Delta log's per-file statistics. At a
billion documents the old way (about fifteen filtered counts after every run) re-read every
table; this reads the ``runs`` table, which has one row per stage run.
"""
from __future__ import annotations

import io
from typing import Optional

from rich.console import Console

from jobs.common import runs
from jobs.common.config import PipelineConfig
from jobs.common.logs import render_tables
from jobs.common.storage import TableStore
from jobs.stages import STAGES


def _reasons(counts: dict, most: int = 3) -> str:
    """The drop and failure counts, largest first; past ``most`` only their number and total
    (``runs`` and ``nr status`` have them all)."""
    parts = sorted(runs.drop_reasons(counts).items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{k}={v}" for k, v in parts[:most])
    rest = parts[most:]
    if rest:
        text += f" (+{len(rest)} more: {sum(v for _, v in rest)} rows)"
    return text


def _newest(history: dict, stage: str, key: str) -> Optional[dict]:
    return next((r for r in history.get(stage, []) if key in r["counts"]), None)


def headline(cfg: PipelineConfig, spark, this_run: Optional[list[dict]] = None) -> dict:
    """Figures a person wants after a run, without scanning a table."""
    store = TableStore(spark, cfg.storage)
    h: dict = {"tables": {}, "stages": {}, "lines": []}
    try:
        history = runs.ok_history(store, [st.name for st in STAGES if any(k == "count" for k, _, _ in st.headline)]
                                  + ["score", "train_data"])
    except Exception:
        history = {}
    for stage in STAGES:
        for kind, ref, label in stage.headline:
            if kind == "rows":
                try:
                    n = store.num_rows(ref) if store.exists(ref) else None
                except Exception:  # a summary must not fail a finished run
                    n = None
                if n is not None:
                    h["tables"][ref] = n
                    h["lines"].append(f"{label}: {n}")
            else:
                found = _newest(history, stage.name, ref)
                if found is not None:
                    h["stages"][f"{stage.name}:{ref}"] = found["counts"][ref]
                    h["lines"].append(f"{label}: {found['counts'][ref]}")
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
    table_rows = []
    for r in rows:
        c = r.get("counts") or {}
        p, cc = c.get("prompt_tokens", 0), c.get("completion_tokens", 0)
        table_rows.append([
            r["stage"], r["status"] + (f" ({r['error']})" if r.get("error") and r["status"] != "ok" else ""),
            f"{r.get('wall_seconds') or 0:.1f}", str(c.get("in", "")), str(c.get("out", "")),
            f"{p}/{cc}" if p or cc else "", _reasons(c),
        ])
    buf = io.StringIO()
    buf.write(render_tables((f"this run (storage.root = {cfg.storage.root})",
                             ["stage", "status", "wall s", "in", "out", "tokens prompt/completion", "dropped / failed"],
                             table_rows), width=150, title_justify="center"))
    console = Console(file=buf, width=150, force_terminal=False, color_system=None)
    if spark is not None:
        h = headline(cfg, spark, rows)
        if h["lines"]:
            console.print("dataset so far -- " + " | ".join(h["lines"]))
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


