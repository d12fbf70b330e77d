"""Targeted-retrieval benchmark: exact top-k per seed with Spark (local[2]) against
single-process numpy brute force, same data, same run.

    .venv/bin/python benchmarks/bench_retrieval.py [--n 200000] [--seeds 250] [--k 1000] [--dim 384]

1. Data: ``n`` random unit vectors of MiniLM's dimension (float32) with ids, and ``seeds``
   query vectors taken near random table rows, written once as a Parquet file.
2. Ours: ``jobs.stages.selection.select_targeted.retrieve_top_k`` in a local[2] session, reading the Parquet
   file: the seed matrix broadcast, a running top-k per seed in every partition, a global
   top-k per seed; the result is collected (``seeds x k`` rows). The JVM start and a small
   warm-up run (Python workers) are excluded; the read is included.
3. Peer: ``udfs.retrieval.brute_force_top_k`` in this process: one seeds x n matrix product
   and a top-k per row, from vectors already in memory (no read).
4. Both results are compared id for id (ties to the lower id); a difference fails the run.

The last line is ``ratio <numpy seconds / ours seconds>`` (above 1: ours is faster).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_data(n: int, n_seeds: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    seeds = vecs[rng.choice(n, n_seeds, replace=False)] + 0.5 * rng.standard_normal((n_seeds, dim), dtype=np.float32)
    seeds /= np.linalg.norm(seeds, axis=1, keepdims=True)
    ids = np.array([f"q{i:09d}" for i in rng.permutation(n)])
    return ids, vecs, seeds.astype(np.float32)


def write_parquet(path: str, ids, vecs) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = pa.array(vecs.reshape(-1), type=pa.float32())
    emb = pa.ListArray.from_arrays(pa.array(np.arange(0, vecs.size + 1, vecs.shape[1], dtype=np.int32)), flat)
    pq.write_table(pa.table({"question_id": pa.array(ids), "embedding": emb}), path, row_group_size=20_000)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--seeds", type=int, default=250)
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--faiss", action="store_true", help="FAISS inside the partitions")
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)

    from jobs.common.config import SparkConfig
    from jobs.common.spark import get_spark
    from jobs.stages.selection.select_targeted import retrieve_top_k
    from udfs.retrieval import brute_force_top_k

    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_retrieval_")
    os.makedirs(workdir, exist_ok=True)
    try:
        t = time.perf_counter()
        ids, vecs, seeds = make_data(args.n, args.seeds, args.dim, args.seed)
        path = os.path.join(workdir, "vectors.parquet")
        write_parquet(path, ids, vecs)
        print(f"data: {args.n} vectors x {args.dim}, {args.seeds} seeds, k={args.k} ({time.perf_counter() - t:.1f}s)",
              flush=True)
        seed_ids = [f"s{i:04d}" for i in range(args.seeds)]

        spark = get_spark(SparkConfig(master="local[2]", shuffle_partitions=4, driver_memory="4g"))
        warm = spark.read.parquet(path).limit(2000)
        retrieve_top_k(warm, seed_ids[:2], seeds[:2], 5).collect()

        t = time.perf_counter()
        got = retrieve_top_k(spark.read.parquet(path), seed_ids, seeds, args.k, faiss=args.faiss).toPandas()
        ours_s = time.perf_counter() - t
        spark.stop()

        t = time.perf_counter()
        ref = brute_force_top_k(vecs, ids, seeds, args.k)
        numpy_s = time.perf_counter() - t

        got = got.sort_values(["seed_id", "rank"])
        by_seed = dict(tuple(got.groupby("seed_id")))
        mismatched = [sid for sid, (rid, _) in zip(seed_ids, ref) if by_seed[sid].question_id.tolist() != rid.tolist()]
        if mismatched:
            print(f"MISMATCH against numpy for {len(mismatched)} seeds, e.g. {mismatched[:3]}")
            return 1
        pairs = args.n * args.seeds
        print(f"results identical to numpy brute force for all {args.seeds} seeds ({len(got)} rows)")
        print(f"{'system':40} {'seconds':>8} {'rows/s':>10} {'row-seed pairs/s':>17}")
        print(f"{'ours: Spark local[2] broadcast + top-k':40} {ours_s:8.1f} {args.n / ours_s:10.0f} {pairs / ours_s:17.3g}")
        print(f"{'numpy brute force, one process':40} {numpy_s:8.1f} {args.n / numpy_s:10.0f} {pairs / numpy_s:17.3g}")
        print(f"ratio {numpy_s / ours_s:.3f}")
        return 0
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
