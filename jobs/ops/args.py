"""The command-line pieces every ``nr`` command shares: ``--config``, ``--set``, ``--log-level``,
loading the config with a readable error, the run's log file, and a session for read-only
commands."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from jobs.common import logs
from jobs.common.config import ConfigError, PipelineConfig, load_config
from jobs.common.spark import get_spark


def parse_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default=None, help="YAML config (default: code defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set storage.root=/tmp/nr (repeatable)")
    parser.add_argument("--log-level", default=os.environ.get("NR_LOG_LEVEL", "INFO"))


def parse(p: argparse.ArgumentParser, argv: Optional[list[str]], run_id: Optional[str] = None):
    """(args, config), or (args, None) after printing a config error. With ``run_id`` a local
    storage root gets the run's full log at ``<root>/logs/<run id>.log``."""
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        logs.setup(args.log_level)
        print(f"error: {e}", file=sys.stderr)
        return args, None
    log_file = None
    if run_id and not logs.is_debug(args.log_level):
        log_file = logs.log_path_for(cfg.storage.root, run_id)
    logs.setup(args.log_level, log_file)
    return args, cfg


def command_line(prog: str, args) -> str:
    """How the user called us, for the fixes error messages suggest."""
    return prog + (f" --config {args.config}" if args.config else "") + "".join(f" --set {o}" for o in args.overrides)


def print_log_line() -> None:
    if logs.current().path:
        print(f"log: {logs.current().path}")


def start_spark(cfg: PipelineConfig, read_only: bool = False):
    """The session for a command; a local JVM started here sends its output to the run's log
    file. Read-only commands (status, plan, report) get no checkpoint folder: they write nothing."""
    with logs.jvm_output(logs.current()):
        if read_only:
            return get_spark(cfg.spark)
        return get_spark(cfg.spark, checkpoint_dir=f"{cfg.storage.root}/_checkpoints")
