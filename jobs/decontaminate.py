"""Decontamination: items sharing a 13-gram with MATH, GPQA, MMLU-Pro or MMLU-STEM (DESIGN §8).

Benchmark n-gram hashes (with benchmark and item id, no text) are broadcast; the items'
n-grams are exploded and joined to them. The ``contamination`` table is the evidence (item,
benchmark, benchmark item, matched n-gram, match count); removal is an anti-join downstream.
"""
from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
from typing import Optional

import yaml
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.benchmarks import BUILTIN, load_benchmarks
from jobs.common.config import BenchmarkConfig, DecontaminateConfig, expand_path
from jobs.common.runner import StageContext
from udfs import ngrams

log = logging.getLogger("nr")

NAME = "decontaminate"
INPUTS = ["questions"]
OUTPUTS = ["contamination"]
CONTAMINATION_SCHEMA = "item_id string, benchmark string, benchmark_item_id string, matched_ngram string, match_count long"


def benchmark_ngrams(spark: SparkSession, benchmarks: list[BenchmarkConfig], benchmarks_dir: str,
                     n: int) -> tuple[DataFrame, dict[str, int]]:
    """(ngram_hash, benchmark, benchmark_item_id) for every benchmark n-gram, and n-grams per benchmark."""
    import pandas as pd

    parts, per_benchmark = [], {}
    for b, texts in load_benchmarks(benchmarks, benchmarks_dir):
        if texts is None:
            log.warning("benchmark %s: not found, skipped (optional)", b.name)
            continue
        rows = [(h, b.name, i) for i, h, _ in ngrams.ngram_rows(texts["benchmark_item_id"], texts["text"], n)]
        per_benchmark[b.name] = len(rows)
        parts.append(pd.DataFrame(rows, columns=["ngram_hash", "benchmark", "benchmark_item_id"]))
        log.info("benchmark %s: %d items, %d n-grams", b.name, texts["benchmark_item_id"].nunique(), len(rows))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        {"ngram_hash": pd.Series([], dtype="int64"), "benchmark": [], "benchmark_item_id": []})
    frame = frame.drop_duplicates()
    df = spark.createDataFrame(frame, "ngram_hash long, benchmark string, benchmark_item_id string")
    return df, per_benchmark


def find_contamination(items: DataFrame, id_col: str, text_cols: list[str], bench: DataFrame, n: int = 13,
                       min_matches: int = 1) -> DataFrame:
    fn = functools.partial(ngrams.item_ngram_batches, n=n, text_cols=text_cols)
    src = items.select(F.col(id_col).cast("string").alias("item_id"), *[F.col(c).cast("string") for c in text_cols])
    grams = src.mapInPandas(fn, "item_id string, ngram_hash long, ngram string")
    joined = grams.join(F.broadcast(bench), "ngram_hash")
    return (joined.groupBy("item_id", "benchmark", "benchmark_item_id")
            .agg(F.min("ngram").alias("matched_ngram"), F.countDistinct("ngram_hash").alias("match_count"))
            .where(F.col("match_count") >= min_matches)
            .select("item_id", "benchmark", "benchmark_item_id", "matched_ngram", "match_count"))


def drop_contaminated(df: DataFrame, contamination: DataFrame, id_col: str) -> DataFrame:
    return df.join(contamination.select(F.col("item_id").alias(id_col)).distinct(), id_col, "left_anti")


def configured_benchmarks(cfg: DecontaminateConfig) -> list[BenchmarkConfig]:
    return cfg.benchmarks if cfg.benchmarks is not None else BUILTIN


def run(ctx: StageContext) -> None:
    if ctx.up_to_date(INPUTS, OUTPUTS):
        ctx.count("skipped_up_to_date", 1)
        return
    cfg = ctx.cfg.decontaminate
    bdir = expand_path(cfg.benchmarks_dir, ctx.cfg.storage.root)
    bench, per = benchmark_ngrams(ctx.spark, configured_benchmarks(cfg), bdir, cfg.ngram)
    ctx.count("checked_benchmarks", len(per))
    for name, k in per.items():
        ctx.metrics[f"ngrams_{name}"] = float(k)
    items = ctx.store.read("questions").where(F.col("status") == "ok")
    total = items.count()
    ctx.count("in", total)
    cont = find_contamination(items, "question_id", cfg.text_cols, bench, cfg.ngram, cfg.min_matches).persist()
    ctx.store.overwrite("contamination", cont)
    ctx.count("dropped_contaminated", cont.select("item_id").distinct().count())
    for r in cont.groupBy("benchmark").agg(F.countDistinct("item_id").alias("n")).collect():
        ctx.count(f"contaminated_{r['benchmark']}", r["n"])
        ctx.metrics[f"contaminated_pct_{r['benchmark']}"] = 100.0 * r["n"] / total if total else 0.0
    log.info("[decontaminate] checked %s", ", ".join(f"{k} ({v} n-grams)" for k, v in per.items()))
    cont.unpersist()


def cli_main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="nr decontaminate", description="13-gram overlap of any table with benchmarks.")
    p.add_argument("--input", required=True)
    p.add_argument("--input-format", choices=["jsonl", "parquet", "delta"], required=True)
    p.add_argument("--id-col", required=True)
    p.add_argument("--text-col", required=True, action="append", help="repeatable")
    p.add_argument("--output", required=True)
    p.add_argument("--benchmarks-config", default=None, help="YAML with `benchmarks:` (and optional `benchmarks_dir:`)")
    p.add_argument("--benchmarks-dir", default=None)
    p.add_argument("--ngram", type=int, default=13)
    p.add_argument("--master", default=None)
    args = p.parse_args(argv)
    from jobs.common.config import ConfigError, SparkConfig
    from jobs.common.spark import get_spark
    from jobs.dedup import read_any
    from jobs.pipeline import setup_logging

    setup_logging("INFO")
    dcfg = DecontaminateConfig(ngram=args.ngram)
    if args.benchmarks_config:
        try:
            data = yaml.safe_load(open(args.benchmarks_config)) or {}
            dcfg = DecontaminateConfig(ngram=args.ngram, **data)
        except Exception as e:
            raise ConfigError(f"{args.benchmarks_config}: {e}") from None
    bdir = expand_path(args.benchmarks_dir or dcfg.benchmarks_dir, ".")
    spark = get_spark(SparkConfig(master=args.master))
    df = read_any(spark, args.input, args.input_format)
    missing = [c for c in [args.id_col, *args.text_col] if c not in df.columns]
    if missing:
        print(f"error: columns {missing} not in {args.input}; columns: {sorted(df.columns)}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    bench, per = benchmark_ngrams(spark, configured_benchmarks(dcfg), bdir, args.ngram)
    cont = find_contamination(df, args.id_col, args.text_col, bench, args.ngram, dcfg.min_matches).persist()
    cont.write.mode("overwrite").parquet(f"{args.output}/contamination")
    total = df.count()
    counts = {r["benchmark"]: r["n"] for r in cont.groupBy("benchmark").agg(F.countDistinct("item_id").alias("n")).collect()}
    print(f"items={total} contaminated={cont.select('item_id').distinct().count()} seconds={time.monotonic() - t0:.1f}")
    for name, k in per.items():
        c = counts.get(name, 0)
        print(f"  {name}: ngrams={k} contaminated={c} ({100.0 * c / total if total else 0:.3f}%)")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    from jobs.pipeline import stage_main

    return stage_main(NAME, argv)


if __name__ == "__main__":
    sys.exit(main())
