"""``nr decontaminate``: the contamination table of any table, written as Parquet
(ARCHITECTURE.md §8).

    nr decontaminate --input PATH --input-format jsonl|parquet|delta --id-col ID --text-col TEXT --output DIR

Small local inputs run in this process, larger ones on Spark, with the same kernels
(``jobs.common.contamination``).
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Optional

import yaml

from jobs.common import logs
from jobs.common.benchmarks import BenchmarkMissing
from jobs.common.config import ConfigError, DecontaminateConfig, SparkConfig, expand_path, validate_config
from jobs.common.contamination import (BenchmarkIndex, _assemble, build_benchmark_index, contaminated_counts,
                                       find_contamination, find_contamination_in_process, index_path, report_lines)
from jobs.common.lsh import NotInProcess
from jobs.common.spark import get_spark
from jobs.common.storage import read_files, read_table, write_parquet
from jobs.tools.runner import (tool_parser, input_in_process, refuse_in_process,
                               storage_from_args, write_in_process)
from udfs import ngrams

log = logging.getLogger("nr")


def cli_config(path: Optional[str], ngram: int, tokenize: Optional[str]) -> DecontaminateConfig:
    """``--benchmarks-config``: a YAML of decontaminate keys (benchmarks, benchmarks_dir, ...),
    at the top level or under ``decontaminate:`` (so a pipeline config works too)."""
    data: dict = {}
    if path:
        try:
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        data = dict(data.get("decontaminate", data))
    data["ngram"] = ngram
    if tokenize:
        data["tokenize"] = tokenize
    return validate_config({"decontaminate": data}, path or "<command line>").decontaminate


def cli_main(argv: Optional[list[str]] = None) -> int:
    """``nr decontaminate``: the contamination table of any table, written as Parquet."""
    p = tool_parser("nr decontaminate", "13-gram overlap (lm-eval-harness rule) of any table with benchmarks.",
                    "folder: writes OUTPUT/contamination (Parquet)", 200_000,
                    {"action": "append", "help": "text column; repeat for several"})
    p.add_argument("--benchmarks-config", default=None,
                   help="YAML with benchmarks: (definitions or built-in names), benchmarks_dir:, min_matches:")
    p.add_argument("--benchmarks-dir", default=None, help="overrides benchmarks_dir (raw benchmark files)")
    p.add_argument("--index", default=None,
                   help="benchmark index: builtin (default), an index folder, or none (read every benchmark's files)")
    p.add_argument("--ngram", type=int, default=13)
    p.add_argument("--tokenize", choices=list(ngrams.TOKENIZATIONS), default=None,
                   help="item side; split_first reproduces lm-eval's Janitor.clean (default normalize_first)")
    args = p.parse_args(argv)
    logs.setup("INFO")
    try:
        dcfg = cli_config(args.benchmarks_config, args.ngram, args.tokenize)
        storage = storage_from_args(args)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    bdir = expand_path(args.benchmarks_dir or dcfg.benchmarks_dir, ".")
    index = dcfg.index if args.index is None else (None if args.index == "none" else args.index)
    out = args.output.rstrip("/")
    if args.engine != "spark":
        t0 = time.monotonic()
        try:
            table = input_in_process(args, [args.id_col, *args.text_col])
            tables, fields = _assemble(dcfg.benchmarks, bdir, args.ngram, index_path(index, "."),
                                       dict(storage.storage_options))
            bench = BenchmarkIndex(make_ngrams=None, items=None, **fields)  # type: ignore[arg-type]
            cont = find_contamination_in_process(table, args.id_col, args.text_col, bench, tables.items, args.ngram,
                                                 dcfg.min_matches, dcfg.tokenize)
            write_in_process(cont, f"{out}/contamination")
            frame = cont.select(["item_id", "benchmark"]).to_pandas()
            per = frame.groupby("benchmark")["item_id"].nunique().to_dict()
            _print_report(bench, table.num_rows, frame["item_id"].nunique(),
                          {b: int(per.get(b, 0)) for b in bench.checked}, dcfg, args.ngram, out,
                          time.monotonic() - t0, "in process")
            return 0
        except NotInProcess as e:
            if args.engine == "in-process":
                return refuse_in_process(args, e)
            log.info("decontaminate: on Spark: %s", e)
        except (BenchmarkMissing, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    spark = get_spark(SparkConfig(master=args.master))
    df = read_table(spark, args.input, args.input_format, storage)
    missing = [c for c in [args.id_col, *args.text_col] if c not in df.columns]
    if missing:
        print(f"error: columns {missing} not in {args.input}; columns: {sorted(df.columns)}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        bench = build_benchmark_index(spark, dcfg.benchmarks, bdir, args.ngram, index_path(index, "."),
                                      dict(storage.storage_options))
    except (BenchmarkMissing, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cont = find_contamination(df, args.id_col, args.text_col, bench, args.ngram, dcfg.min_matches,
                              dcfg.tokenize)
    write_parquet(spark, cont, f"{out}/contamination", storage)
    written = read_files(spark, f"{out}/contamination", "parquet", storage)
    total = df.count()
    flagged, per = contaminated_counts(written, bench)
    _print_report(bench, total, flagged, per, dcfg, args.ngram, out, time.monotonic() - t0, "Spark")
    return 0


def _print_report(bench: BenchmarkIndex, total: int, flagged: int, per: dict[str, int], dcfg: DecontaminateConfig,
                  ngram: int, out: str, seconds: float, engine: str) -> None:
    print(f"checked: {bench.describe()}")
    print("\n".join(report_lines(total, flagged, per, bench)))
    print(f"tokenize={dcfg.tokenize} ngram={ngram} min_matches={dcfg.min_matches} "
          f"seconds={seconds:.1f} ({engine}) output={out}/contamination")
