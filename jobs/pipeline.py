"""The pipeline's entry point: ``spark-submit jobs/pipeline.py --config conf/emr.yaml [--stages a,b]``
(one stage: ``--stages NAME``).

Runs the configured stages in the registry's order (``jobs.stages``), each through the stage
runner (one ``runs`` row per stage), and ends with a summary a person can read in ten seconds.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
from typing import Optional, Union

if __package__ in (None, ""):  # spark-submit jobs/pipeline.py from a checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs.common import runner  # noqa: E402
from jobs.common.config import ConfigError, PipelineConfig  # noqa: E402
from jobs.common.stage import Stage  # noqa: E402
from jobs.common.storage import TableStore  # noqa: E402
from jobs.ops.args import command_line, parse, parse_common, print_log_line, start_spark  # noqa: E402
from jobs.ops.preflight import check_stage_names, preflight  # noqa: E402
from jobs.ops.report import write_report  # noqa: E402
from jobs.ops.summary import render_summary  # noqa: E402
from jobs.stages import BY_NAME, configured, get  # noqa: E402

log = logging.getLogger("nr")


def run_stage(cfg: PipelineConfig, stage: Union[str, Stage], spark=None, pipeline_run_id: Optional[str] = None) -> dict:
    """Run one stage (by name or spec) and record it in ``runs``; returns the runs row."""
    spec = get(stage) if isinstance(stage, str) else stage
    return runner.run_stage(cfg, spec, spark=spark, pipeline_run_id=pipeline_run_id)


def run_pipeline(cfg: PipelineConfig, stages: Optional[list[str]] = None, spark=None,
                 pipeline_run_id: Optional[str] = None, cmd: str = "nr run") -> list[dict]:
    names = list(stages or configured(cfg))
    check_stage_names(names)
    spark = spark or start_spark(cfg)
    preflight(cfg, names, TableStore(spark, cfg.storage), cmd)
    pipeline_run_id = pipeline_run_id or uuid.uuid4().hex[:16]
    rows = []
    for name in names:
        stage = BY_NAME[name]
        reason = stage.skip_reason(cfg)
        if reason:
            log.info("[%s] skipped: %s", name, reason)
            rows.append({"stage": name, "status": "skipped", "error": reason, "counts": {}, "wall_seconds": 0.0})
            continue
        try:
            rows.append(runner.run_stage(cfg, stage, spark=spark, pipeline_run_id=pipeline_run_id))
        except Exception as e:  # run_stage logged it and wrote its runs row; later stages need its output
            rows.append({"stage": name, "status": "failed", "error": f"{type(e).__name__}: {e}",
                         "counts": {}, "wall_seconds": 0.0})
            later = names[names.index(name) + 1:]
            if later:
                log.error("stopping: %s failed, not running %s", name, ", ".join(later))
            break
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="nr run", description="Run the pipeline's stages in order.")
    parse_common(p)
    p.add_argument("--stages", default=None, help="comma-separated subset, e.g. ingest,annotate")
    p.add_argument("--report", nargs="?", const="", default=None, metavar="DIR",
                   help="after a run without failures, write the report (as nr report does) in the same "
                        "Spark session; DIR defaults to report.output_dir")
    run_id = uuid.uuid4().hex[:16]
    args, cfg = parse(p, argv, run_id)
    if cfg is None:
        return 2
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    try:
        rows = run_pipeline(cfg, stages, spark=None, pipeline_run_id=run_id, cmd=command_line("nr run", args))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        print_log_line()
        return 2
    spark = start_spark(cfg, read_only=True)
    print(render_summary(rows, cfg, spark))
    print_log_line()
    if any(r["status"] == "failed" for r in rows):
        if args.report is not None:
            print("report: not written, a stage failed", file=sys.stderr)
        return 1
    if args.report is not None:
        return write_report(cfg, spark, args.report or None)
    return 0


def stage_main(name: str, argv: Optional[list[str]] = None) -> int:
    """``nr stage NAME``: one stage, its preflight, and its summary."""
    p = argparse.ArgumentParser(prog=f"nr stage {name}", description=f"Run the {name} stage.")
    parse_common(p)
    run_id = uuid.uuid4().hex[:16]
    args, cfg = parse(p, argv, run_id)
    if cfg is None:
        return 2
    spark = start_spark(cfg)
    try:
        preflight(cfg, [name], TableStore(spark, cfg.storage), command_line("nr run", args))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        print_log_line()
        return 2
    try:
        row = run_stage(cfg, name, spark=spark, pipeline_run_id=run_id)
    except Exception as e:
        print(f"error: stage {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
        print_log_line()
        return 1
    print(render_summary([row], cfg, spark))
    print_log_line()
    return 0


def select_main(argv: Optional[list[str]] = None) -> int:
    """``nr select targeted|traces --config FILE [--set k=v] [--seeds FILE] [--top-k N] [--target-size N]``:
    the stage alone, the shortcuts turned into ``--set`` overrides."""
    p = argparse.ArgumentParser(prog="nr select", description="Run a selection stage on the pipeline's tables.")
    p.add_argument("what", choices=["targeted", "traces"])
    p.add_argument("--seeds", help="targeted: seed questions file (sets select_targeted.seeds_path)")
    p.add_argument("--seeds-format", choices=["jsonl", "parquet", "delta"])
    p.add_argument("--top-k", type=int, help="targeted: questions retrieved per seed")
    p.add_argument("--target-size", type=int, help="targeted: questions selected (k of k-means)")
    args, rest = p.parse_known_args(argv)
    extra = {"select_targeted.seeds_path": args.seeds, "select_targeted.seeds_format": args.seeds_format,
             "select_targeted.top_k": args.top_k, "select_targeted.target_size": args.target_size}
    for key, value in extra.items():
        if value is not None:
            rest += ["--set", f"{key}={value}"]
    return stage_main("select_targeted" if args.what == "targeted" else "select_traces", rest)


if __name__ == "__main__":
    sys.exit(main())
