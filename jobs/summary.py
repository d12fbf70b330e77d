"""The end-of-run summary: what each stage did, and what the tables now hold."""
from __future__ import annotations

import io
from typing import Optional

from jobs.common.config import PipelineConfig

TABLES = [
    "documents", "dedup_documents_clusters", "annotations", "questions", "dedup_questions_clusters",
    "contamination", "responses", "judgments", "dataset",
]


def _reasons(counts: dict) -> str:
    parts = [f"{k}={v}" for k, v in sorted(counts.items()) if k.startswith(("dropped_", "failed_")) and v]
    return ", ".join(parts)


def table_counts(cfg: PipelineConfig, spark) -> dict[str, int]:
    from jobs.common.storage import TableStore

    store = TableStore(spark, cfg.storage)
    out = {}
    for t in TABLES:
        try:
            if store.exists(t):
                out[t] = store.read(t).count()
        except Exception:  # a summary must not fail a finished run
            continue
    return out


def render_summary(rows: list[dict], cfg: PipelineConfig, spark=None) -> str:
    from rich.console import Console
    from rich.table import Table

    buf = io.StringIO()
    console = Console(file=buf, width=140, force_terminal=False, color_system=None)
    t = Table(title=f"pipeline summary (storage.root = {cfg.storage.root})")
    for col in ("stage", "status", "wall s", "in", "out", "tokens (prompt/completion)", "dropped / failed"):
        t.add_column(col)
    total_p = total_c = 0
    for r in rows:
        c = r.get("counts") or {}
        p, cc = c.get("prompt_tokens", 0), c.get("completion_tokens", 0)
        total_p += p
        total_c += cc
        t.add_row(
            r["stage"], r["status"] + (f" ({r['error']})" if r.get("error") and r["status"] != "ok" else ""),
            f"{r.get('wall_seconds') or 0:.1f}", str(c.get("in", "")), str(c.get("out", "")),
            f"{p}/{cc}" if p or cc else "", _reasons(c),
        )
    console.print(t)
    if spark is not None:
        counts = table_counts(cfg, spark)
        if counts:
            console.print("tables: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    if total_p or total_c:
        console.print(f"tokens this run: prompt={total_p} completion={total_c}")
    return buf.getvalue()
