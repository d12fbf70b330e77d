"""``nr status --config F [--json]``: where the pipeline stands.

Every table with its rows and Delta version (from the Delta log, never a scan of the data),
each stage's last run from ``runs`` (status, when, wall time, counts, drop reasons), and which
stages are out of date because an input table or a config section the stage depends on
changed since its last successful run. Stages, tables and sections come from the stage specs
(``jobs.stages``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Optional

from jobs.common import runs as runs_table
from jobs.common.config import PipelineConfig
from jobs.common.logs import render_tables
from jobs.common.storage import TableStore
from jobs.ops.args import parse, parse_common, start_spark
from jobs.stages import STAGES, configured, producer_of


def outputs_of(cfg: PipelineConfig, stage) -> list[str]:
    """Tables (names under storage.root, or paths) a stage writes under ``cfg``."""
    return list(stage.writes(cfg)) if stage.writes else stage.output_tables


def known_tables(cfg: PipelineConfig) -> list[tuple[str, str]]:
    """(label, path or name) of every table the pipeline reads or writes, in pipeline order."""
    seen, out = set(), []

    def add(label: str, ref: str) -> None:
        if ref not in seen:
            seen.add(ref)
            out.append((label, ref))

    for i, src in enumerate(cfg.ingest.sources):
        if src.format == "delta":
            add(f"source:{src.name}", cfg.expand(src.path))
    for stage in STAGES:
        for t in stage.output_tables:
            add(t, t)
    add("runs", "runs")
    return out


def tables_status(cfg: PipelineConfig, store) -> list[dict]:
    out = []
    for label, ref in known_tables(cfg):
        path = store.path(ref)
        version = store.backend.version(path) if store.backend.exists(path) else None
        rows = store.num_rows(path) if version is not None else None
        out.append({"table": label, "path": path, "exists": version is not None, "rows": rows, "version": version})
    return out


# --------------------------------------------------------------------------- runs


def _iso(t) -> Optional[str]:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.isoformat(timespec="seconds")


def collect_status(cfg: PipelineConfig, spark) -> dict:
    store = TableStore(spark, cfg.storage)
    tables = tables_status(cfg, store)
    versions = {t["table"]: t["version"] for t in tables if t["version"] is not None}
    runs = runs_table.latest(store)
    stages = []
    stale: set[str] = set()
    pipeline = configured(cfg)
    for stage in STAGES:
        name = stage.name
        skip = stage.skip_reason(cfg)
        entry = runs.get(name, {})
        last = entry.get("last")
        row = {
            "stage": name, "in_pipeline": name in pipeline, "skipped": skip,
            "last_status": last["status"] if last else None,
            "last_finished_at": _iso(last["finished_at"]) if last else None,
            "last_wall_seconds": round(last["wall_seconds"], 2) if last and last["wall_seconds"] is not None else None,
            "last_error": last["error"] if last else None,
            "counts": dict(last["counts"] or {}) if last else {},
            "drop_reasons": runs_table.drop_reasons(last["counts"]) if last else {},
            "last_ok_finished_at": _iso(entry["last_ok"]["finished_at"]) if entry.get("last_ok") else None,
        }
        row["out_of_date"] = [] if skip else runs_table.out_of_date_reasons(stage, cfg, entry.get("last_ok"), versions)
        if row["out_of_date"] != ["never ran successfully"]:
            # a stage whose inputs' writer will run again is out of date with it
            row["out_of_date"] += [f"upstream stage {p} is out of date" for p in
                                   dict.fromkeys(producer_of(t) for t in stage.inputs)
                                   if p in stale and p in pipeline and not skip]
        if row["out_of_date"]:
            stale.add(name)
        stages.append(row)
    return {"storage_root": cfg.storage.root, "tables": tables, "stages": stages}


def render_status(st: dict) -> str:
    t_rows = [[t["table"], "-" if t["rows"] is None else f"{t['rows']:,}",
               "-" if t["version"] is None else str(t["version"]), t["path"] if t["exists"] else "(missing)"]
              for t in st["tables"]]
    s_rows = []
    for s in st["stages"]:
        c = s["counts"]
        state = ("skipped: " + s["skipped"]) if s["skipped"] else (
            "up to date" if not s["out_of_date"] else "out of date: " + "; ".join(s["out_of_date"]))
        s_rows.append([s["stage"], s["last_status"] or "-", (s["last_finished_at"] or "-").replace("+00:00", "Z"),
                       "-" if s["last_wall_seconds"] is None else f"{s['last_wall_seconds']:.1f}",
                       str(c.get("in", "")), str(c.get("out", "")),
                       ", ".join(f"{k}={v}" for k, v in s["drop_reasons"].items()), state])
    return render_tables(
        (f"tables (storage.root = {st['storage_root']}; rows and versions from the Delta log)",
         ["table", "rows", "version", "path"], t_rows),
        ("stages (last run from the runs table)",
         ["stage", "last run", "finished", "wall s", "in", "out", "dropped / failed", "state"], s_rows))


# --------------------------------------------------------------------------- plan


# --------------------------------------------------------------------------- commands


def status_main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="nr status", description="Tables, stage runs and what is out of date.")
    parse_common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args, cfg = parse(p, argv)
    if cfg is None:
        return 2
    st = collect_status(cfg, start_spark(cfg, read_only=True))
    print(json.dumps(st, indent=2, default=str) if args.json else render_status(st))
    return 0


