"""``nr dedup``: near-duplicate clusters and verified pairs of any table, written as Parquet
(ARCHITECTURE.md §7).

    nr dedup --input PATH --input-format jsonl|parquet|delta --id-col ID --text-col TEXT --output DIR

writes DIR/clusters and DIR/pairs. Small local inputs run in this process, larger ones on
Spark, with the same kernels (``jobs.common.lsh``).
"""
from __future__ import annotations

import logging
import sys
import time

from pydantic import ValidationError

from jobs.common import logs
from jobs.common.config import DedupConfig, SparkConfig
from jobs.common.lsh import DedupStats, NotInProcess, find_duplicate_clusters, find_duplicate_clusters_in_process
from jobs.common.spark import get_spark
from jobs.common.storage import read_table, write_parquet
from jobs.tools.runner import (tool_parser, input_in_process, local_checkpoints,
                               refuse_in_process, storage_from_args, write_in_process)

log = logging.getLogger("nr")


def cli_main(argv: list[str]) -> int:
    """``nr dedup``: clusters and verified pairs of any table, written as Parquet."""
    p = tool_parser("nr dedup", "Near-duplicate clusters of any table (word MinHash LSH, verified pairs).",
                    "folder: writes OUTPUT/clusters and OUTPUT/pairs", 50_000, {})
    p.add_argument("--threshold", type=float, default=0.55, help="word-shingle Jaccard threshold (default 0.55)")
    p.add_argument("--ngram", type=int, default=1, help="word n-gram shingle size (default 1)")
    p.add_argument("--num-perm", type=int, default=DedupConfig.model_fields["num_perm"].default)
    p.add_argument("--bands", type=int, default=None, help="override the bands chosen from the threshold")
    p.add_argument("--rows", type=int, default=None, help="rows per band, with --bands")
    p.add_argument("--seed", type=int, default=DedupConfig.model_fields["seed"].default)
    p.add_argument("--score-col", default=None, help="keep the highest-scoring row of a cluster, not the lowest id")
    p.add_argument("--max-bucket-size", type=int, default=DedupConfig.model_fields["max_bucket_size"].default)
    args = p.parse_args(argv)

    logs.setup("INFO")
    try:
        cfg = DedupConfig(threshold=args.threshold, ngram=args.ngram, num_perm=args.num_perm, bands=args.bands,
                          rows=args.rows, seed=args.seed, max_bucket_size=args.max_bucket_size,
                          keep="highest_score" if args.score_col else "lowest_id", score_col=args.score_col)
    except ValidationError as e:
        problems = "; ".join(f"--{'-'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg']}"
                             if err["loc"] else err["msg"] for err in e.errors())
        print(f"error: {problems}", file=sys.stderr)
        return 2
    try:
        storage = storage_from_args(args)
    except (ValidationError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.output.rstrip("/")
    if args.engine != "spark":
        t0 = time.monotonic()
        try:
            table = input_in_process(args, [args.id_col, args.text_col, args.score_col])
            clusters, pairs, stats = find_duplicate_clusters_in_process(table, args.id_col, args.text_col, cfg)
            write_in_process(clusters, f"{out}/clusters")
            write_in_process(pairs, f"{out}/pairs")
            _print_summary(stats, out, time.monotonic() - t0, "in process")
            return 0
        except NotInProcess as e:
            if args.engine == "in-process":
                return refuse_in_process(args, e)
            log.info("dedup: on Spark: %s", e)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    spark = get_spark(SparkConfig(master=args.master), checkpoint_dir=local_checkpoints())
    df = read_table(spark, args.input, args.input_format, storage)
    missing = [c for c in (args.id_col, args.text_col, args.score_col) if c and c not in df.columns]
    if missing:
        print(f"error: {args.input} has no column {', '.join(missing)}; columns: {', '.join(sorted(df.columns))}",
              file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        clusters, pairs, stats = find_duplicate_clusters(df, args.id_col, args.text_col, cfg)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_parquet(spark, clusters, f"{out}/clusters", storage)
    write_parquet(spark, pairs, f"{out}/pairs", storage)
    clusters.unpersist()
    pairs.unpersist()
    _print_summary(stats, out, time.monotonic() - t0, "Spark")
    return 0


def _print_summary(stats: DedupStats, out: str, wall: float, engine: str) -> None:
    print(f"rows:             {stats.rows}")
    if stats.null_ids:
        print(f"null ids:         {stats.null_ids} (left out of the clusters)")
    print(f"empty texts:      {stats.empty_texts}")
    print(f"lsh:              b={stats.bands} r={stats.rows_per_band}; P(candidate | J) "
          + ", ".join(f"{s}: {p:.3f}" for s, p in stats.s_curve.items()))
    print(f"candidate pairs:  {stats.candidate_pairs}")
    print(f"verified pairs:   {stats.verified_pairs}")
    print(f"clusters:         {stats.clusters} (of two or more rows)")
    print(f"removed:          {stats.removed}")
    print(f"output:           {out}/clusters, {out}/pairs ({engine}, {wall:.1f}s, "
          f"{stats.rows / max(wall, 1e-9):.0f} rows/s)")
