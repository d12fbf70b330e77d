"""``nr benchmarks``: build the hashed benchmark index decontamination reads, or show one
(ARCHITECTURE.md §8).

    nr benchmarks build-index --output DIR [--benchmarks-dir DIR | --benchmarks-config F]
    nr benchmarks show [--index DIR]
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from jobs.common import logs
from jobs.common.benchmark_index import _env_dir, build, read, resolve_index, write
from jobs.common.benchmarks import BUILTIN, BenchmarkMissing, resolve
from jobs.common.config import BenchmarkConfig, ConfigError, expand_path
from jobs.tools.decontaminate import cli_config


def _definitions(config_path: Optional[str]) -> tuple[list[BenchmarkConfig], Optional[str]]:
    if not config_path:
        return list(BUILTIN), None
    dcfg = cli_config(config_path, 13, None)
    return resolve(dcfg.benchmarks), dcfg.benchmarks_dir


def cli_main(argv: Optional[list[str]] = None) -> int:
    """``nr benchmarks build-index``: hash benchmark files into an index folder."""
    p = argparse.ArgumentParser(prog="nr benchmarks", description="Benchmark index for decontamination.")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-index", help="hash benchmarks (raw files, an s3:// folder, or HF datasets) into an index")
    b.add_argument("--output", required=True, help="index folder to write (local or s3://)")
    b.add_argument("--benchmarks-dir", default=None,
                   help="folder of the raw files in their public layouts (local or s3://); default $NR_BENCHMARKS_DIR")
    b.add_argument("--benchmarks-config", default=None,
                   help="YAML of benchmark definitions (conf/benchmarks.yaml, conf/benchmarks-hf.yaml); "
                        "default the four built-ins from --benchmarks-dir")
    b.add_argument("--ngram", type=int, default=13)
    s = sub.add_parser("show", help="print an index's manifest counts")
    s.add_argument("--index", default="builtin", help="index folder, or builtin")
    args = p.parse_args(argv)
    logs.setup("INFO")
    if args.cmd == "show":
        idx = read(resolve_index(args.index))
        for name, info in idx.manifest["benchmarks"].items():
            print(f"{name}: {info['items']} items, {info['ngrams']} distinct {idx.n}-grams, "
                  f"{info['short_texts']} short texts, {len(info['sources'])} source files")
        return 0
    try:
        defs, cfg_dir = _definitions(args.benchmarks_config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    bdir = expand_path(args.benchmarks_dir or cfg_dir or "${NR_BENCHMARKS_DIR:-}", ".")
    needs_dir = [d.name for d in defs if d.format != "hf" and "{benchmarks_dir}" in d.path]
    if needs_dir and not (args.benchmarks_dir or cfg_dir or _env_dir()):
        print(f"error: benchmarks {needs_dir} read from a folder: give --benchmarks-dir (local or s3://) "
              "or set NR_BENCHMARKS_DIR", file=sys.stderr)
        return 2
    try:
        index = build(defs, bdir, args.ngram)
    except (BenchmarkMissing, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write(index, args.output)
    for name, info in index.manifest["benchmarks"].items():
        print(f"{name}: {info['items']} items, {info['ngrams']} distinct {args.ngram}-grams, "
              f"{info['short_texts']} short texts")
    print(f"index written to {args.output}")
    return 0
