"""Decontamination: items sharing a 13-gram with MATH, GPQA, MMLU-Pro or MMLU-STEM (ARCHITECTURE.md §8).

Identify, then remove: this stage writes the evidence, the ``contamination`` table (item,
benchmark, benchmark item, matched n-gram, match count); ``respond`` and ``dataset`` drop
those items with an anti-join.

The benchmark side is small (about 0.5M n-grams for the four built-in benchmarks, tens of
millions at most), so it is built on the driver and broadcast as a sorted array of n-gram
hashes with their int keys; the key's (benchmark, benchmark item id) sits in a second small
table joined after aggregation, so the broadcast carries 12 bytes a row whatever the ids look
like. Executors normalize, tokenize and hash the items' n-grams a whole Arrow batch at a time
(``udfs.ngrams.batch_grams``) and search the array; only the matches, with the text of each
item's first matched n-gram, come back to the JVM. Like ``nr dedup``, ``nr decontaminate`` runs small
inputs in its own process, without starting Spark, with the same kernel (``--engine``).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Callable, Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.common import benchmark_index
from jobs.common.config import expand_path
from jobs.common.lsh import NotInProcess
from udfs import ngrams

log = logging.getLogger("nr")

NAME = "decontaminate"
INPUTS = ["questions"]
OUTPUTS = ["contamination"]
CONTAMINATION_COLS = ["item_id", "benchmark", "benchmark_item_id", "matched_ngram", "match_count"]
HITS_SCHEMA = "item_id string, _bench_key int, _ngram_hash long, _ngram_pos long, matched_ngram string"


def _contamination_schema():
    import pyarrow as pa

    return pa.schema([("item_id", pa.string()), ("benchmark", pa.string()), ("benchmark_item_id", pa.string()),
                      ("matched_ngram", pa.string()), ("match_count", pa.int64())])


@dataclass
class BenchmarkIndex:
    """The broadcast side: n-gram hashes of every checked benchmark, and what was checked."""

    make_ngrams: Optional[Callable[[], DataFrame]]  # makes ``ngrams`` when first asked for
    items: DataFrame  # _bench_key int, benchmark string, benchmark_item_id string
    ngram_counts: dict[str, int] = field(default_factory=dict)  # distinct n-grams per checked benchmark
    item_counts: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # optional benchmarks whose files were missing
    lookup: tuple = ()  # (gram hashes sorted, int64; their _bench_key, int32): what the kernel searches

    @functools.cached_property
    def ngrams(self) -> Optional[DataFrame]:
        """_ngram_hash long, _bench_key int: the index as a table. The kernel searches ``lookup``
        instead, so it is made only when asked for: shipping its half a million rows to the JVM
        took about a second of every run."""
        return self.make_ngrams() if self.make_ngrams else None

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
    (``jobs.common.benchmark_index.assemble``). Both give the same hashes, so the same flags.
    """
    tables, fields = _assemble(benchmarks, benchmarks_dir, n, index, options)
    return BenchmarkIndex(
        make_ngrams=lambda: spark.createDataFrame(
            tables.ngrams.rename(columns={"ngram_hash": "_ngram_hash", "item": "_bench_key"}),
            benchmark_index.NGRAM_SCHEMA),
        items=spark.createDataFrame(tables.items[["item", "benchmark", "benchmark_item_id"]]
                                    .rename(columns={"item": "_bench_key"}), benchmark_index.ITEM_SCHEMA),
        **fields,
    )


def _assemble(benchmarks: Optional[list], benchmarks_dir: str, n: int, index: Optional[str],
              options: Optional[dict] = None):
    """The index tables and the ``BenchmarkIndex`` fields that do not need Spark."""
    tables, skipped = benchmark_index.assemble(benchmarks, benchmarks_dir, n, index, options)
    for name in skipped:
        log.warning("benchmark %s: not found, skipped (it is optional)", name)
    info = tables.manifest["benchmarks"]
    return tables, dict(ngram_counts={b: int(v["ngrams"]) for b, v in info.items()},
                        item_counts={b: int(v["items"]) for b, v in info.items()},
                        skipped=skipped, lookup=lookup_arrays(tables))


def lookup_arrays(tables) -> tuple:
    """The index as the kernel searches it: gram hashes sorted (int64) and their item keys (int32)."""
    import numpy as np

    h = tables.ngrams["ngram_hash"].to_numpy(dtype=np.int64)
    k = tables.ngrams["item"].to_numpy(dtype=np.int32)
    order = np.argsort(h, kind="stable")
    return h[order], k[order]


def find_contamination(items: DataFrame, id_col: str, text_cols: list[str], bench: BenchmarkIndex, n: int = 13,
                       min_matches: int = 1, tokenize: str = ngrams.NORMALIZE_FIRST) -> DataFrame:
    """One row per (item, benchmark item) sharing at least ``min_matches`` distinct n-grams.

    One pass over the items: ``udfs.ngrams.contamination_batches`` normalizes, tokenizes and
    hashes each Arrow batch in numpy and looks its grams up in the index (the sorted hash
    array, a Spark broadcast), so only the matched grams, with their text, leave Python;
    those few rows are grouped into the table. The items are not repartitioned: the kernel
    is cheap enough that a task reading a large split keeps its Python worker busy while the
    JVM reads, and a shuffle of every text would cost more than it spreads.

    The grouping is two aggregations after one shuffle by item: one row per distinct matched
    gram (its first position), then per benchmark item their count and the first of them --
    what ``countDistinct`` and ``min`` give, without the second shuffle and sort-based
    partial aggregation Spark plans for a distinct aggregate.
    """
    src = items.select(F.col(id_col).cast("string").alias("item_id"), *[F.col(c).cast("string") for c in text_cols])
    index = items.sparkSession.sparkContext.broadcast(bench.lookup)
    fn = functools.partial(ngrams.contamination_batches, index=index, n=n, text_cols=text_cols, tokenize=tokenize)
    per_gram = (src.mapInArrow(fn, HITS_SCHEMA).repartition("item_id")
                .groupBy("item_id", "_bench_key", "_ngram_hash")
                .agg(F.min(F.struct("_ngram_pos", "matched_ngram")).alias("_gram")))
    return (per_gram.groupBy("item_id", "_bench_key")
            .agg(F.count(F.lit(1)).alias("match_count"),
                 F.min(F.struct("_gram._ngram_pos", "_ngram_hash", "_gram.matched_ngram")).alias("_first"))
            .where(F.col("match_count") >= min_matches)
            .join(F.broadcast(bench.items), "_bench_key")
            .select("item_id", "benchmark", "benchmark_item_id", F.col("_first.matched_ngram").alias("matched_ngram"),
                    "match_count"))


def find_contamination_in_process(table, id_col: str, text_cols: list[str], bench: BenchmarkIndex,
                                  items: "pandas.DataFrame", n: int = 13, min_matches: int = 1,
                                  tokenize: str = ngrams.NORMALIZE_FIRST, batch_rows: int = 10_000):
    """``find_contamination`` on an Arrow table in this process, for ``nr decontaminate`` on
    small inputs: the same kernel and the same rows out. ``items`` is the index's item table
    (item, benchmark, benchmark_item_id). Raises ``jobs.common.lsh.NotInProcess`` for what it
    cannot cast as Spark does (ids other than string or integer, non-string texts, null ids)."""
    import pyarrow as pa


    ids = table.column(id_col).combine_chunks()
    if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type) or pa.types.is_integer(ids.type)):
        raise NotInProcess(f"id column type {ids.type}")
    if ids.null_count:
        raise NotInProcess("null ids")
    cols = {"item_id": ids.cast(pa.string())}
    for c in text_cols:
        t = table.column(c).combine_chunks()
        if not (pa.types.is_string(t.type) or pa.types.is_large_string(t.type) or pa.types.is_null(t.type)):
            raise NotInProcess(f"text column {c!r} type {t.type}")
        cols[c] = t.cast(pa.string())
    hits = pa.Table.from_batches(
        list(ngrams.contamination_batches(pa.table(cols).to_batches(max_chunksize=batch_rows), index=bench.lookup,
                                          n=n, text_cols=text_cols, tokenize=tokenize)),
        schema=pa.schema([("item_id", pa.string()), ("_bench_key", pa.int32()), ("_ngram_hash", pa.int64()),
                          ("_ngram_pos", pa.int64()), ("matched_ngram", pa.string())])).to_pandas()
    keys = ["item_id", "_bench_key"]
    first = hits.sort_values(keys + ["_ngram_pos", "_ngram_hash", "matched_ngram"]).drop_duplicates(keys)
    count = hits.groupby(keys)["_ngram_hash"].nunique().rename("match_count").reset_index()
    out = first.drop(columns="_ngram_hash").merge(count, on=keys)
    out = out[out["match_count"] >= min_matches].merge(
        items[["item", "benchmark", "benchmark_item_id"]], left_on="_bench_key", right_on="item")
    return pa.Table.from_pandas(out[CONTAMINATION_COLS], preserve_index=False, schema=_contamination_schema())


def contaminated_counts(contamination: DataFrame, bench: BenchmarkIndex) -> tuple[int, dict[str, int]]:
    """Distinct contaminated items in all, and per checked benchmark (0 included), in one Spark
    job: the rollup's grand-total row is the first count."""
    rows = (contamination.rollup("benchmark")
            .agg(F.countDistinct("item_id").alias("n"), F.grouping("benchmark").alias("all")).collect())
    got = {r["benchmark"]: int(r["n"]) for r in rows if not r["all"]}
    return next((int(r["n"]) for r in rows if r["all"]), 0), {b: got.get(b, 0) for b in bench.checked}


def report_lines(total: int, flagged: int, per: dict[str, int], bench: BenchmarkIndex) -> list[str]:
    pct = (lambda k: 100.0 * k / total if total else 0.0)
    lines = [f"items={total} contaminated={flagged} ({pct(flagged):.3f}%) kept={total - flagged}"]
    lines += [f"  {b}: {bench.item_counts[b]} benchmark items, {bench.ngram_counts[b]} n-grams; "
              f"contaminated={per[b]} ({pct(per[b]):.3f}%)" for b in bench.checked]
    lines += [f"  {b}: not checked (optional, files not found)" for b in bench.skipped]
    return lines


def index_path(index: Optional[str], root: str) -> Optional[str]:
    """``builtin`` and null as they are; a folder with ``{root}`` and ``${VAR:-default}`` expanded."""
    return index if index in (None, "builtin") else expand_path(index, root)
