"""The pipeline runner: ``spark-submit jobs/pipeline.py --config conf/emr.yaml [--stages a,b]``.

Runs the configured stages in order, each through the stage runner (one ``runs`` row per
stage), and ends with a summary a person can read in ten seconds.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
from typing import Optional

if __package__ in (None, ""):  # spark-submit jobs/pipeline.py from a checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs.common import logs  # noqa: E402
from jobs.common.config import ConfigError, PipelineConfig, load_config  # noqa: E402
from jobs.common.runner import StageNotBuilt, load_stage, run_stage  # noqa: E402
from jobs.common.spark import get_spark  # noqa: E402
from jobs.common.storage import TableStore  # noqa: E402

log = logging.getLogger("nr")


def setup_logging(level: str = "INFO", log_file: Optional[str] = None) -> None:
    """Our lines on the console, library chatter in ``log_file`` (jobs/common/logs.py); once per process."""
    logs.setup(level, log_file)


def stage_enabled(cfg: PipelineConfig, name: str) -> Optional[str]:
    """None when the stage should run, else the reason it is skipped (disabled, or nothing to do)."""
    from jobs.status import skip_reason

    reason = skip_reason(cfg, name)
    return None if reason == "not built yet" else reason


def start_spark(cfg: PipelineConfig):
    """The session for a run; a local JVM started here sends its output to the run's log file."""
    with logs.jvm_output(logs.current()):
        return get_spark(cfg.spark, checkpoint_dir=f"{cfg.storage.root}/_checkpoints")


def run_pipeline(cfg: PipelineConfig, stages: Optional[list[str]] = None, spark=None,
                 pipeline_run_id: Optional[str] = None, cmd: str = "nr run") -> list[dict]:
    from jobs.status import check_stage_names, preflight

    names = stages or cfg.pipeline.stages
    check_stage_names(names)
    spark = spark or start_spark(cfg)
    preflight(cfg, names, TableStore(spark, cfg.storage), cmd)
    pipeline_run_id = pipeline_run_id or uuid.uuid4().hex[:16]
    rows = []
    for name in names:
        reason = stage_enabled(cfg, name)
        if reason:
            log.info("[%s] skipped: %s", name, reason)
            rows.append({"stage": name, "status": "skipped", "error": reason, "counts": {}, "wall_seconds": 0.0})
            continue
        try:
            load_stage(name)
        except StageNotBuilt:
            log.warning("[%s] not built yet: skipped", name)
            rows.append({"stage": name, "status": "not built", "error": None, "counts": {}, "wall_seconds": 0.0})
            continue
        try:
            rows.append(run_stage(cfg, name, spark=spark, pipeline_run_id=pipeline_run_id))
        except Exception as e:  # run_stage logged it and wrote its runs row; later stages need its output
            rows.append({"stage": name, "status": "failed", "error": f"{type(e).__name__}: {e}",
                         "counts": {}, "wall_seconds": 0.0})
            later = names[names.index(name) + 1:]
            if later:
                log.error("stopping: %s failed, not running %s", name, ", ".join(later))
            break
    return rows


def print_summary(rows: list[dict], cfg: PipelineConfig, spark=None) -> None:
    from jobs.summary import render_summary

    print(render_summary(rows, cfg, spark))


def parse_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default=None, help="YAML config (default: code defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set storage.root=/tmp/nr (repeatable)")
    parser.add_argument("--log-level", default=os.environ.get("NR_LOG_LEVEL", "INFO"))


def _parse(p: argparse.ArgumentParser, argv: Optional[list[str]], run_id: Optional[str] = None):
    """(args, config), or (args, None) after printing a config error. With ``run_id`` a local
    storage root gets the run's full log at ``<root>/logs/<run id>.log``."""
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        setup_logging(args.log_level)
        print(f"error: {e}", file=sys.stderr)
        return args, None
    log_file = None
    if run_id and not logs.is_debug(args.log_level):
        log_file = logs.log_path_for(cfg.storage.root, run_id)
    setup_logging(args.log_level, log_file)
    return args, cfg


def _command(prog: str, args) -> str:
    """How the user called us, for the fixes error messages suggest."""
    return prog + (f" --config {args.config}" if args.config else "") + "".join(f" --set {o}" for o in args.overrides)


def _print_log_line() -> None:
    if logs.current().path:
        print(f"log: {logs.current().path}")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="nr run", description="Run the pipeline's stages in order.")
    parse_common(p)
    p.add_argument("--stages", default=None, help="comma-separated subset, e.g. ingest,annotate")
    p.add_argument("--report", nargs="?", const="", default=None, metavar="DIR",
                   help="after a run without failures, write the report (as nr report does) in the same "
                        "Spark session; DIR defaults to report.output_dir")
    run_id = uuid.uuid4().hex[:16]
    args, cfg = _parse(p, argv, run_id)
    if cfg is None:
        return 2
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    try:
        rows = run_pipeline(cfg, stages, spark=None, pipeline_run_id=run_id, cmd=_command("nr run", args))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        _print_log_line()
        return 2
    spark = get_spark(cfg.spark)
    print_summary(rows, cfg, spark)
    _print_log_line()
    if any(r["status"] == "failed" for r in rows):
        if args.report is not None:
            print("report: not written, a stage failed", file=sys.stderr)
        return 1
    if args.report is not None:
        from jobs.report import write_report

        return write_report(cfg, spark, args.report or None)
    return 0


def stage_main(name: str, argv: Optional[list[str]] = None) -> int:
    """Entry point of one stage: ``spark-submit jobs/<stage>.py --config ...``."""
    from jobs.status import preflight

    p = argparse.ArgumentParser(prog=f"nr stage {name}", description=f"Run the {name} stage.")
    parse_common(p)
    run_id = uuid.uuid4().hex[:16]
    args, cfg = _parse(p, argv, run_id)
    if cfg is None:
        return 2
    spark = start_spark(cfg)
    try:
        preflight(cfg, [name], TableStore(spark, cfg.storage), _command("nr run", args))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        _print_log_line()
        return 2
    try:
        row = run_stage(cfg, name, spark=spark, pipeline_run_id=run_id)
    except Exception as e:
        print(f"error: stage {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
        _print_log_line()
        return 1
    print_summary([row], cfg, spark)
    _print_log_line()
    return 0


if __name__ == "__main__":
    sys.exit(main())
