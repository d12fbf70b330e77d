"""The ``nr`` command.

    nr run --config conf/local.yaml [--stages a,b] [--set key=value ...]
    nr stage NAME --config conf/local.yaml [--set ...]
    nr status --config conf/local.yaml [--json]
    nr plan --config conf/local.yaml [--stages a,b] [--json]
    nr report --config conf/local.yaml [--output DIR]
    nr dedup --input PATH --input-format jsonl|parquet|delta --id-col ID --text-col TEXT --output DIR
    nr decontaminate --input PATH ... --output DIR
    nr benchmarks build-index --output DIR [--benchmarks-dir DIR | --benchmarks-config F]
    nr benchmarks show [--index DIR]
    nr fetch-model [--cache-dir DIR]
    nr submit emr --cluster-id j-XXXX --config conf/emr.yaml [--stages a,b] [--set ...] [--dry-run]
    nr select targeted|traces --config conf/local.yaml [--seeds FILE] [--top-k N] [--target-size N]
    nr stages [--markdown]
"""
from __future__ import annotations

import importlib
import sys
from typing import Optional

USAGE = __doc__

# Sub-commands implemented elsewhere: name -> "module:function(argv) -> int".
COMMANDS = {
    "run": "jobs.pipeline:main",
    "stage": "jobs.cli:stage_command",
    "stages": "jobs.cli:stages_command",
    "status": "jobs.ops.status:status_main",
    "plan": "jobs.ops.plan:plan_main",
    "report": "jobs.ops.report:main",
    "dedup": "jobs.tools.dedup:cli_main",
    "decontaminate": "jobs.tools.decontaminate:cli_main",
    "benchmarks": "jobs.tools.benchmarks:cli_main",
    "fetch-model": "udfs.llm.models:main",
    "submit": "jobs.ops.submit:main",
    "select": "jobs.pipeline:select_main",
}


def _call(target: str, argv: list[str]) -> int:
    module, func = target.split(":")
    return int(getattr(importlib.import_module(module), func)(argv) or 0)


def stage_command(rest: list[str]) -> int:
    from jobs.ops.preflight import unknown_stage_message
    from jobs.pipeline import stage_main
    from jobs.stages import NAMES

    if not rest or rest[0].startswith("-"):
        print(f"usage: nr stage NAME [--config FILE] [--set k=v]; stages: {', '.join(NAMES)}", file=sys.stderr)
        return 2
    if rest[0] not in NAMES:
        print(f"error: {unknown_stage_message([rest[0]])}", file=sys.stderr)
        return 2
    return stage_main(rest[0], rest[1:])


def stages_command(rest: list[str]) -> int:
    """The stages in order, one per line; with ``--markdown`` the README's stage table."""
    from jobs.stages import STAGES, stage_table

    print(stage_table() if "--markdown" in rest else "\n".join(s.name for s in STAGES))
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"error: unknown command {cmd!r}\n{USAGE}", file=sys.stderr)
        return 2
    return _call(COMMANDS[cmd], rest)


if __name__ == "__main__":
    sys.exit(main())
