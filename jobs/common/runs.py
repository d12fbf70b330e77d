"""The ``runs`` table: one row per stage run (ARCHITECTURE.md §3), and the queries of it that
the runner, ``nr status``, ``nr plan``, the summary and the report share."""
from __future__ import annotations

from typing import Optional, Sequence

from pyspark.sql import Window
from pyspark.sql import functions as F

RUNS_SCHEMA = (
    "run_id string, pipeline_run_id string, stage string, status string, error string, "
    "started_at timestamp, finished_at timestamp, wall_seconds double, config_hash string, "
    "stage_config_hash string, input_versions map<string,bigint>, output_versions map<string,bigint>, "
    "counts map<string,bigint>, metrics map<string,double>"
)


def latest(store, stages: Optional[Sequence[str]] = None) -> dict[str, dict[str, dict]]:
    """stage -> {"last": its newest run, "last_ok": its newest successful run}: one small query
    of ``runs`` (at most two rows per stage reach the driver)."""
    if not store.exists("runs"):
        return {}
    runs = store.read("runs")
    if stages is not None:
        runs = runs.where(F.col("stage").isin(list(stages)))
    newest = Window.partitionBy("stage").orderBy(F.col("finished_at").desc(), F.col("run_id"))
    ok_newest = Window.partitionBy("stage", "ok").orderBy(F.col("finished_at").desc(), F.col("run_id"))
    ranked = (runs.withColumn("ok", F.col("status") == "ok")
              .withColumn("_rn", F.row_number().over(newest)).withColumn("_rn_ok", F.row_number().over(ok_newest))
              .where((F.col("_rn") == 1) | (F.col("ok") & (F.col("_rn_ok") == 1))))
    out: dict[str, dict[str, dict]] = {}
    for r in ranked.collect():
        d = r.asDict(recursive=True)
        entry = out.setdefault(d["stage"], {})
        if d["_rn"] == 1:
            entry["last"] = d
        if d["ok"] and d["_rn_ok"] == 1:
            entry["last_ok"] = d
    return out


def ok_history(store, stages: Sequence[str]) -> dict[str, list[dict]]:
    """Per stage, the ``counts`` and ``metrics`` of its successful runs, newest first (a run that
    found its stage up to date counts nothing, so a figure comes from the newest run that has it)."""
    if not store.exists("runs"):
        return {}
    out: dict[str, list[dict]] = {}
    for r in (store.read("runs").where((F.col("status") == "ok") & F.col("stage").isin(list(stages)))
              .select("stage", "counts", "metrics").orderBy(F.col("finished_at").desc()).collect()):
        out.setdefault(r["stage"], []).append({"counts": dict(r["counts"] or {}), "metrics": dict(r["metrics"] or {})})
    return out


def drop_reasons(counts: Optional[dict]) -> dict:
    """The ``dropped_*`` and ``failed_*`` counts of a runs row, by name."""
    return {k: v for k, v in sorted((counts or {}).items()) if k.startswith(("dropped_", "failed_")) and v}


def out_of_date_reasons(stage, cfg, last_ok: Optional[dict], versions: dict) -> list[str]:
    """Why ``stage`` (a ``Stage``) should run again: it never ran, a config section it depends on
    changed, or an input table changed since its last successful run. ``versions``: the
    current Delta version of each table that exists."""
    if last_ok is None:
        return ["never ran successfully"]
    reasons = []
    now = stage.config_hash(cfg)
    if now is not None and last_ok["stage_config_hash"] != now:
        named = [s for s in stage.sections if s]
        reasons.append(f"config section {' + '.join(repr(s) for s in named)} changed")
    seen = last_ok.get("input_versions") or {}
    for t in stage.inputs:
        v = versions.get(t)
        if v != seen.get(t):
            if seen.get(t) is None:
                reasons.append(f"input {t} appeared (v{v})")
            elif v is None:
                reasons.append(f"input {t} is gone")
            else:
                reasons.append(f"input {t} changed (v{seen[t]} -> v{v})")
    return reasons
