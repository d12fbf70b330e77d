"""Decontamination: items sharing a 13-gram with MATH, GPQA, MMLU-Pro or MMLU-STEM (DESIGN §8).

Identify, then remove: this stage writes the evidence, the ``contamination`` table (item,
benchmark, benchmark item, matched n-gram, match count); ``respond`` and ``dataset`` drop
those items with an anti-join.

The benchmark side is small (about 0.5M n-grams for the four built-in benchmarks, tens of
millions at most), so it is built on the driver and broadcast as (n-gram hash, int key); the
key's (benchmark, benchmark item id) sits in a second small table joined after aggregation,
so the broadcast carries 12 bytes a row whatever the ids look like. The items' n-grams are
exploded on executors (hash and position only, no text) and joined to the broadcast; the
text of the first matched n-gram is recovered afterwards for the matched items only.
"""
from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import yaml
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import benchmark_index
from jobs.benchmarks import BenchmarkMissing
from jobs.common.config import BenchmarkConfig, ConfigError, DecontaminateConfig, expand_path
from jobs.common.runner import StageContext
from udfs import ngrams

log = logging.getLogger("nr")

NAME = "decontaminate"
INPUTS = ["questions"]
OUTPUTS = ["contamination"]
CONTAMINATION_COLS = ["item_id", "benchmark", "benchmark_item_id", "matched_ngram", "match_count"]


@dataclass
class BenchmarkIndex:
    """The broadcast side: n-gram hashes of every checked benchmark, and what was checked."""

    ngrams: DataFrame  # _ngram_hash long, _bench_key int
    items: DataFrame  # _bench_key int, benchmark string, benchmark_item_id string
    ngram_counts: dict[str, int] = field(default_factory=dict)  # distinct n-grams per checked benchmark
    item_counts: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # optional benchmarks whose files were missing

    @property
    def checked(self) -> list[str]:
        return list(self.ngram_counts)

    def describe(self) -> str:
        s = ", ".join(f"{b} ({self.item_counts[b]} items, {k} n-grams)" for b, k in self.ngram_counts.items())
        return (s or "no benchmark") + (f"; skipped (optional, not found): {', '.join(self.skipped)}"
                                        if self.skipped else "")


def build_benchmark_index(spark: SparkSession, benchmarks: Optional[list], benchmarks_dir: str, n: int = 13,
                          index: Optional[str] = None, options: Optional[dict] = None) -> BenchmarkIndex:
    """The broadcast side: the hashed index's benchmarks (no text read) plus raw ones, hashed here.

    ``index`` None reads every benchmark from its files (normalize, then split: lm-eval's
    rule); ``"builtin"`` or an index folder takes the benchmarks it holds from it
    (``jobs.benchmark_index.assemble``). Both give the same hashes, so the same flags.
    """
    tables, skipped = benchmark_index.assemble(benchmarks, benchmarks_dir, n, index, options)
    for name in skipped:
        log.warning("benchmark %s: not found, skipped (it is optional)", name)
    info = tables.manifest["benchmarks"]
    return BenchmarkIndex(
        ngrams=spark.createDataFrame(tables.ngrams.rename(columns={"ngram_hash": "_ngram_hash", "item": "_bench_key"}),
                                     benchmark_index.NGRAM_SCHEMA),
        items=spark.createDataFrame(tables.items[["item", "benchmark", "benchmark_item_id"]]
                                    .rename(columns={"item": "_bench_key"}), benchmark_index.ITEM_SCHEMA),
        ngram_counts={b: int(v["ngrams"]) for b, v in info.items()},
        item_counts={b: int(v["items"]) for b, v in info.items()},
        skipped=skipped,
    )


def find_contamination(items: DataFrame, id_col: str, text_cols: list[str], bench: BenchmarkIndex, n: int = 13,
                       min_matches: int = 1, tokenize: str = ngrams.NORMALIZE_FIRST) -> DataFrame:
    """One row per (item, benchmark item) sharing at least ``min_matches`` distinct n-grams."""
    src = items.select(F.col(id_col).cast("string").alias("item_id"), *[F.col(c).cast("string") for c in text_cols])
    explode = functools.partial(ngrams.item_ngram_batches, n=n, text_cols=text_cols, tokenize=tokenize)
    grams = src.mapInPandas(explode, "item_id string, _ngram_hash long, _ngram_pos long")
    matched = (grams.join(F.broadcast(bench.ngrams), "_ngram_hash")
               .groupBy("item_id", "_bench_key")
               .agg(F.countDistinct("_ngram_hash").alias("match_count"),
                    F.min(F.struct("_ngram_pos", "_ngram_hash")).alias("_first"))
               .where(F.col("match_count") >= min_matches)
               .select("item_id", "_bench_key", "match_count", "_first._ngram_pos", "_first._ngram_hash"))
    # Matches are few (the paper: 0.026%), so they are broadcast against the items instead of
    # shuffling every item's text to recover the matched n-gram's words.
    recover = functools.partial(ngrams.matched_ngram_batches, n=n, text_cols=text_cols, tokenize=tokenize)
    with_text = src.join(F.broadcast(matched), "item_id").mapInPandas(
        recover, ", ".join([f"item_id string, {', '.join(f'`{c}` string' for c in text_cols)}",
                            "_bench_key int, match_count long, _ngram_pos long, _ngram_hash long",
                            "matched_ngram string"]))
    return (with_text.groupBy("item_id", "_bench_key")
            .agg(F.min("matched_ngram").alias("matched_ngram"), F.max("match_count").alias("match_count"))
            .join(F.broadcast(bench.items), "_bench_key")
            .select(*CONTAMINATION_COLS))


def drop_contaminated(df: DataFrame, contamination: DataFrame, id_col: str) -> DataFrame:
    return df.join(contamination.select(F.col("item_id").alias(id_col)).distinct(), id_col, "left_anti")


def contaminated_per_benchmark(contamination: DataFrame, bench: BenchmarkIndex) -> dict[str, int]:
    """Distinct contaminated items per checked benchmark (0 included)."""
    got = {r["benchmark"]: r["n"] for r in
           contamination.groupBy("benchmark").agg(F.countDistinct("item_id").alias("n")).collect()}
    return {b: int(got.get(b, 0)) for b in bench.checked}


def report_lines(total: int, flagged: int, per: dict[str, int], bench: BenchmarkIndex) -> list[str]:
    pct = (lambda k: 100.0 * k / total if total else 0.0)
    lines = [f"items={total} contaminated={flagged} ({pct(flagged):.3f}%) kept={total - flagged}"]
    lines += [f"  {b}: {bench.item_counts[b]} benchmark items, {bench.ngram_counts[b]} n-grams; "
              f"contaminated={per[b]} ({pct(per[b]):.3f}%)" for b in bench.checked]
    lines += [f"  {b}: not checked (optional, files not found)" for b in bench.skipped]
    return lines


def run(ctx: StageContext) -> None:
    if ctx.up_to_date(INPUTS, OUTPUTS):
        ctx.count("skipped_up_to_date", 1)
        return
    cfg = ctx.cfg.decontaminate
    bench = build_benchmark_index(ctx.spark, cfg.benchmarks, expand_path(cfg.benchmarks_dir, ctx.cfg.storage.root),
                                  cfg.ngram, index_path(cfg.index, ctx.cfg.storage.root),
                                  ctx.cfg.storage.storage_options)
    ctx.count("checked_benchmarks", len(bench.checked))
    for name, k in bench.ngram_counts.items():
        ctx.count(f"benchmark_ngrams_{name}", k)
    for name in bench.skipped:
        ctx.count(f"skipped_benchmark_{name}", 1)
    items = ctx.store.read("questions").where(F.col("status") == "ok")
    total = items.count()
    ctx.count("in", total)
    # persist justification: the table is written, then counted twice for the report.
    cont = find_contamination(items, "question_id", cfg.text_cols, bench, cfg.ngram, cfg.min_matches,
                              cfg.tokenize).persist()
    ctx.store.overwrite("contamination", cont)
    flagged = cont.select("item_id").distinct().count()
    ctx.count("dropped_contaminated", flagged)
    ctx.count("out", total - flagged)
    per = contaminated_per_benchmark(cont, bench)
    for name, k in per.items():
        ctx.count(f"contaminated_{name}", k)
        ctx.metrics[f"contaminated_pct_{name}"] = 100.0 * k / total if total else 0.0
    for line in report_lines(total, flagged, per, bench):
        log.info("[decontaminate] %s", line.strip())
    cont.unpersist()


def index_path(index: Optional[str], root: str) -> Optional[str]:
    """``builtin`` and null as they are; a folder with ``{root}`` and ``${VAR:-default}`` expanded."""
    return index if index in (None, "builtin") else expand_path(index, root)


def _cli_config(path: Optional[str], ngram: int, tokenize: Optional[str]) -> DecontaminateConfig:
    """``--benchmarks-config``: a YAML of decontaminate keys (benchmarks, benchmarks_dir, ...),
    at the top level or under ``decontaminate:`` (so a pipeline config works too)."""
    from jobs.common.config import validate_config

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
    p = argparse.ArgumentParser(prog="nr decontaminate",
                                description="13-gram overlap (lm-eval-harness rule) of any table with benchmarks.")
    p.add_argument("--input", required=True, help="file or folder")
    p.add_argument("--input-format", choices=["jsonl", "parquet", "delta"], required=True)
    p.add_argument("--id-col", required=True, help="a key column (cast to string)")
    p.add_argument("--text-col", required=True, action="append", help="text column; repeat for several")
    p.add_argument("--output", required=True, help="folder: writes OUTPUT/contamination (Parquet)")
    p.add_argument("--benchmarks-config", default=None,
                   help="YAML with benchmarks: (definitions or built-in names), benchmarks_dir:, min_matches:")
    p.add_argument("--benchmarks-dir", default=None, help="overrides benchmarks_dir (raw benchmark files)")
    p.add_argument("--index", default=None,
                   help="benchmark index: builtin (default), an index folder, or none (read every benchmark's files)")
    p.add_argument("--ngram", type=int, default=13)
    p.add_argument("--tokenize", choices=list(ngrams.TOKENIZATIONS), default=None,
                   help="item side; split_first reproduces lm-eval's Janitor.clean (default normalize_first)")
    p.add_argument("--master", default=None, help="local Spark master (default local[<cores>])")
    from jobs.dedup import add_storage_args, read_any, storage_from_args

    add_storage_args(p)
    args = p.parse_args(argv)
    from jobs.common.config import SparkConfig
    from jobs.common.spark import get_spark
    from jobs.common.storage import read_files, write_parquet
    from jobs.pipeline import setup_logging

    setup_logging("INFO")
    try:
        dcfg = _cli_config(args.benchmarks_config, args.ngram, args.tokenize)
        storage = storage_from_args(args)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    bdir = expand_path(args.benchmarks_dir or dcfg.benchmarks_dir, ".")
    spark = get_spark(SparkConfig(master=args.master))
    df = read_any(spark, args.input, args.input_format, storage)
    missing = [c for c in [args.id_col, *args.text_col] if c not in df.columns]
    if missing:
        print(f"error: columns {missing} not in {args.input}; columns: {sorted(df.columns)}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    index = dcfg.index if args.index is None else (None if args.index == "none" else args.index)
    try:
        bench = build_benchmark_index(spark, dcfg.benchmarks, bdir, args.ngram, index_path(index, "."),
                                      dict(storage.storage_options))
    except (BenchmarkMissing, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cont = find_contamination(df, args.id_col, args.text_col, bench, args.ngram, dcfg.min_matches,
                              dcfg.tokenize)
    write_parquet(spark, cont, f"{args.output}/contamination", storage)
    written = read_files(spark, f"{args.output}/contamination", "parquet", storage)
    total = df.count()
    flagged = written.select("item_id").distinct().count()
    per = contaminated_per_benchmark(written, bench)
    print(f"checked: {bench.describe()}")
    print("\n".join(report_lines(total, flagged, per, bench)))
    print(f"tokenize={dcfg.tokenize} ngram={args.ngram} min_matches={dcfg.min_matches} "
          f"seconds={time.monotonic() - t0:.1f} output={args.output}/contamination")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    from jobs.pipeline import stage_main

    return stage_main(NAME, argv)


if __name__ == "__main__":
    sys.exit(main())
