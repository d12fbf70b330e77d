"""Near-duplicate removal benchmark: `nr dedup` against datasketch's MinHashLSH, same run.

    .venv/bin/python benchmarks/bench_dedup.py --n 400000 --growth 100000,200000 [--workdir DIR] [--seed 0]
        [--skip-datasketch]

(about 25 minutes on a busy 2-core machine; --n 20000 for a quick look).

0. Fixed cost: `nr dedup` on 2,000 rows as a subprocess, process start to exit (it takes the
   in-process path: no JVM).

1. Generates question-like texts (Zipf-distributed words) with planted near-duplicate
   clusters: each variant replaces k distinct words of an earlier cluster member so that
   its unigram Jaccard to that member is (m - k) / (m + k) ~= a target drawn from
   0.30 .. 1.00; variants of variants make chains.
2. Ground truth: every pair with exact unigram-shingle Jaccard >= threshold, by an exact
   set-similarity self-join (prefix filter over a rarest-first token order, which cannot
   miss a qualifying pair, then exact intersections of all surviving candidates).
3. Ours: ``jobs.common.lsh.cli_main`` (the `nr dedup` command) on the corpus as a Parquet file,
   in a local[2] Spark session: read, signatures, candidates, verification, components,
   writing DIR/clusters and DIR/pairs. The JVM start and one small warm-up run (Python
   worker start-up) are excluded; everything else is timed.
4. datasketch: tokenize with the same shingles, ``MinHash.generator`` (its fast bulk path),
   ``MinHashLSH`` insertion session and one query per text, in this process; same
   num_perm and the same (bands, rows) as ours. Its output is its candidate pairs
   (it has no verification step); "datasketch + verify" adds exact Jaccard to them.

Pairwise precision / recall / F1 are measured on unordered id pairs against the ground truth.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import xxhash

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from udfs import minhash  # noqa: E402

STOP = ["what", "is", "the", "of", "a", "and", "to", "in", "if", "how", "find", "many", "for", "with", "that",
        "are", "by", "it", "its", "on", "at", "be", "from", "as", "an", "which", "this", "when", "given", "value"]
TARGETS = [0.30, 0.40, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95, 1.00]
BUCKETS = [(0.55, 0.60), (0.60, 0.70), (0.70, 0.80), (0.80, 0.90), (0.90, 1.01)]


# --------------------------------------------------------------------------- corpus


def make_vocab(size: int) -> list[str]:
    """Pronounceable pseudo-words (letters only), the most frequent being real stop words."""
    syl = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
    words = list(STOP)
    i = 0
    while len(words) < size:
        n, w = i, []
        for _ in range(3):
            n, d = divmod(n, len(syl))
            w.append(syl[d])
        words.append("".join(w))
        i += 1
    return words


def make_corpus(rows: int, seed: int = 0, clustered_fraction: float = 0.2):
    """(ids, texts, planted) where planted lists (i, j, target_jaccard) of generated variants."""
    rng = np.random.default_rng(seed)
    vocab = np.array(make_vocab(50_000), dtype=object)
    weights = 1.0 / (np.arange(len(vocab)) + 3.0) ** 1.05
    cdf = np.cumsum(weights / weights.sum())

    def sentence(n: int) -> list[str]:
        # inverse-CDF draw: rng.choice(p=...) re-validates the 50k weights on every call
        return list(vocab[np.minimum(np.searchsorted(cdf, rng.random(n)), len(vocab) - 1)])

    def render(words: list[str]) -> str:
        # cosmetic variety the tokenizer must see through: case, commas, a question mark
        out = list(words)
        out[0] = out[0].capitalize()
        for k in rng.choice(len(out), size=len(out) // 9, replace=False):
            out[k] = out[k] + ","
        return " ".join(out) + "?"

    token_lists: list[list[str]] = []
    planted: list[tuple[int, int, float]] = []
    n_clusters = int(rows * clustered_fraction / 3)
    while len(token_lists) < rows:
        base = sentence(int(np.clip(rng.geometric(1 / 18) + 7, 8, 80)))
        start = len(token_lists)
        token_lists.append(base)
        if len(token_lists) - 1 < n_clusters * 3 and len(token_lists) < rows:
            for _ in range(int(rng.integers(1, 4))):
                if len(token_lists) >= rows:
                    break
                parent = int(rng.integers(start, len(token_lists)))
                target = float(rng.choice(TARGETS))
                token_lists.append(_variant(token_lists[parent], target, sentence, rng))
                planted.append((parent, len(token_lists) - 1, target))
    order = rng.permutation(rows)  # clusters spread over the file, not adjacent
    where = np.empty(rows, dtype=np.int64)
    where[order] = np.arange(rows)
    texts = [render(token_lists[i]) for i in order]
    planted = [(int(where[i]), int(where[j]), t) for i, j, t in planted]
    ids = [f"q-{xxhash.xxh64_hexdigest(f'{seed}/{i}'.encode())}" for i in range(rows)]
    assert len(set(ids)) == rows
    return ids, texts, planted


def _variant(words: list[str], target: float, sentence, rng) -> list[str]:
    distinct = list(dict.fromkeys(words))
    m = len(distinct)
    k = int(round(m * (1 - target) / (1 + target)))
    if k == 0:
        return list(words)
    present = set(distinct)
    fresh: list[str] = []
    while len(fresh) < k:
        fresh += [w for w in dict.fromkeys(sentence(3 * k)) if w not in present and w not in fresh]
    swap = dict(zip(rng.choice(distinct, size=k, replace=False), fresh[:k]))
    return [swap.get(w, w) for w in words]


# --------------------------------------------------------------------------- exact ground truth


def exact_pairs(texts: list[str], threshold: float, ngram: int = 1) -> dict[tuple[int, int], float]:
    """Every pair (i < j) with exact shingle Jaccard >= threshold, with its Jaccard.

    Prefix filter (Bayardo et al., "Scaling up all pairs similarity search", 2007): order
    tokens rarest first; J(x, y) >= t implies |x & y| >= ceil(t * |x|) =: a_x, and two
    sets sharing at least max(a_x, a_y) tokens share one among their first |x| - a_x + 1
    and |y| - a_y + 1 tokens. So the candidates -- pairs whose prefixes meet -- include
    every qualifying pair, and each candidate is then checked exactly.
    """
    from scipy import sparse

    vocab: dict[bytes, int] = {}
    rows, cols = [], []
    for i, t in enumerate(texts):
        for s in minhash.shingle_set(t, ngram):
            rows.append(i)
            cols.append(vocab.setdefault(s, len(vocab)))
    rows, cols = np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64)
    n, v = len(texts), len(vocab)
    df = np.bincount(cols, minlength=v)
    rank = np.empty(v, dtype=np.int64)
    rank[np.lexsort((np.arange(v), df))] = np.arange(v)  # rarest first, ties by id
    r = rank[cols]
    order = np.lexsort((r, rows))
    rows, cols, r = rows[order], cols[order], r[order]
    size = np.bincount(rows, minlength=n)
    need = np.ceil(threshold * size - 1e-9).astype(np.int64)
    prefix_len = np.where(size > 0, size - need + 1, 0)
    pos = np.arange(len(rows)) - np.repeat(np.cumsum(size) - size, size)
    in_prefix = pos < np.repeat(prefix_len, size)
    p_doc, p_tok, p_pos = rows[in_prefix], r[in_prefix], pos[in_prefix]

    # Pairs of documents listed under the same prefix token, with two filters that cannot
    # drop a qualifying pair: sizes within a factor t, and the positional bound of
    # PPJoin (Xiao et al., 2008) -- at a pair's first shared token, at positions px and py,
    # the overlap is at most 1 + min(|x| - px - 1, |y| - py - 1), and J >= t needs an
    # overlap of at least t / (1 + t) * (|x| + |y|). Groups are expanded a slice at a
    # time to bound memory.
    o = np.lexsort((p_doc, p_tok))
    p_doc, p_tok, p_pos = p_doc[o], p_tok[o], p_pos[o]
    _, g_start, g_size = np.unique(p_tok, return_index=True, return_counts=True)
    within = np.arange(len(p_doc)) - np.repeat(g_start, g_size)
    follow = np.repeat(g_size, g_size) - 1 - within
    ends = np.cumsum(follow)
    keys = []
    lo = 0
    while lo < len(p_doc):
        hi = int(np.searchsorted(ends, ends[lo] - follow[lo] + 20_000_000, side="right"))
        hi = max(hi, lo + 1)
        f = follow[lo:hi]
        left = np.repeat(np.arange(lo, hi), f)
        step = np.arange(len(left)) - np.repeat(np.cumsum(f) - f, f)
        right = left + 1 + step
        a, b = p_doc[left], p_doc[right]
        sa, sb = size[a], size[b]
        ub = 1 + np.minimum(sa - p_pos[left] - 1, sb - p_pos[right] - 1)
        need = np.ceil(threshold / (1 + threshold) * (sa + sb) - 1e-9)
        ok = (ub >= need) & (np.maximum(sa, sb) * threshold <= np.minimum(sa, sb) + 1e-9)
        a, b = a[ok], b[ok]
        keys.append(np.unique(np.minimum(a, b) * n + np.maximum(a, b)))
        lo = hi
    key = np.unique(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)
    a, b = key // n, key % n

    incidence = sparse.csr_matrix((np.ones(len(cols), dtype=np.int32), (rows, cols)), shape=(n, v))
    out: dict[tuple[int, int], float] = {}
    for lo in range(0, len(a), 500_000):
        aa, bb = a[lo : lo + 500_000], b[lo : lo + 500_000]
        inter = np.asarray(incidence[aa].multiply(incidence[bb]).sum(axis=1)).ravel()
        jac = inter / (size[aa] + size[bb] - inter)
        hit = jac >= threshold
        out.update(zip(zip(aa[hit].tolist(), bb[hit].tolist()), jac[hit].tolist()))
    return out


# --------------------------------------------------------------------------- the two systems


def run_ours(ids, texts, workdir: str, threshold: float, num_perm: int, engine: str = "spark", warm: bool = True,
             extra: tuple = (), name: str = "questions"):
    """``nr dedup`` on the corpus as Parquet: (seconds, verified pairs, rows removed, candidate pairs)."""
    import contextlib
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.common.config import SparkConfig
    from jobs.common.spark import get_spark
    from jobs.tools.dedup import cli_main

    if engine == "spark":
        spark = get_spark(SparkConfig(master="local[2]", shuffle_partitions=4, driver_memory="4g"))
        spark.sparkContext.setLogLevel("ERROR")
    src = os.path.join(workdir, f"{name}_{len(ids)}.parquet")
    pq.write_table(pa.table({"question_id": ids, "question": texts}), src)
    common = ["--input-format", "parquet", "--id-col", "question_id", "--text-col", "question",
              "--threshold", str(threshold), "--num-perm", str(num_perm), "--master", "local[2]", "--engine", engine, *extra]
    if warm:
        wsrc = os.path.join(workdir, "warmup.parquet")
        pq.write_table(pa.table({"question_id": ids[:2000], "question": texts[:2000]}), wsrc)
        assert cli_main(["--input", wsrc, "--output", os.path.join(workdir, "warm_out"), *common]) == 0
    out = os.path.join(workdir, f"ours_{engine}_{len(ids)}")
    printed = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        assert cli_main(["--input", src, "--output", out, *common]) == 0
    seconds = time.perf_counter() - t0
    candidates = int(next(x for x in printed.getvalue().splitlines() if x.startswith("candidate pairs:")).split()[-1])
    pairs = pq.read_table(os.path.join(out, "pairs")).to_pydict()
    clusters = pq.read_table(os.path.join(out, "clusters")).to_pydict()
    return (seconds, set(zip(pairs["id_a"], pairs["id_b"])), sum(1 for k in clusters["keep"] if not k),
            candidates)


def run_datasketch(ids, texts, threshold: float, num_perm: int, bands: int, rows: int, ngram: int = 1):
    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()
    shingles = [list(minhash.shingle_set(t, ngram)) for t in texts]
    sketches = MinHash.generator(shingles, num_perm=num_perm, seed=1)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=(bands, rows))
    kept = []
    with lsh.insertion_session() as session:
        for key, (m, sh) in enumerate(zip(sketches, shingles)):
            if sh:
                session.insert(key, m)
                kept.append((key, m))
    found = set()
    for key, m in kept:
        for other in lsh.query(m):
            if other != key:
                found.add((ids[key], ids[other]) if ids[key] < ids[other] else (ids[other], ids[key]))
    seconds = time.perf_counter() - t0
    return seconds, found


def verify(found, index, texts, threshold):
    t0 = time.perf_counter()
    out = {p for p in found if minhash.text_jaccard(texts[index[p[0]]], texts[index[p[1]]]) >= threshold}
    return time.perf_counter() - t0, out


# --------------------------------------------------------------------------- report


def score(found: set, truth: set) -> tuple[float, float, float]:
    tp = len(found & truth)
    precision = tp / len(found) if found else 1.0
    recall = tp / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def fixed_cost(ids, texts, workdir: str) -> float:
    """Seconds from process start to exit of ``nr dedup`` on these rows (a Parquet file), as a user runs it."""
    import subprocess

    import pyarrow as pa
    import pyarrow.parquet as pq

    src = os.path.join(workdir, f"fixed_{len(ids)}.parquet")
    pq.write_table(pa.table({"question_id": ids, "question": texts}), src)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "jobs.cli", "dedup", "--input", src, "--input-format", "parquet",
                    "--id-col", "question_id", "--text-col", "question", "--output", os.path.join(workdir, "fixed_out")],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def ground_truth(ids, texts, threshold):
    gt_idx = exact_pairs(texts, threshold)
    truth = {(min(ids[i], ids[j]), max(ids[i], ids[j])) for i, j in gt_idx}
    jac_of = {(min(ids[i], ids[j]), max(ids[i], ids[j])): v for (i, j), v in gt_idx.items()}
    return truth, jac_of


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", "--rows", dest="rows", type=int, default=100_000,
                   help="questions to generate (the size datasketch is compared at)")
    p.add_argument("--growth", default="", help="comma-separated smaller sizes timed first for the doubling curve, "
                   "e.g. 100000,200000 with --n 400000")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=0.55)
    p.add_argument("--num-perm", type=int, default=128)
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, removed at the end)")
    p.add_argument("--skip-datasketch", action="store_true",
                   help="time ours only (for iterating; the comparison needs both)")
    args = p.parse_args(argv)

    from jobs.common.config import DedupConfig
    from jobs.common.lsh import lsh_params

    bands, rows = lsh_params(DedupConfig(threshold=args.threshold, num_perm=args.num_perm))
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_dedup_")
    os.makedirs(workdir, exist_ok=True)
    try:
        ids, texts, _ = make_corpus(2000, args.seed)
        print(f"fixed cost: nr dedup on 2000 rows, process start to exit: {fixed_cost(ids, texts, workdir):.1f}s "
              "(target <= 8 s)", flush=True)
        sizes = [int(x) for x in args.growth.split(",") if x] + [args.rows]
        curve = []
        for k, size in enumerate(sizes):
            t = time.perf_counter()
            ids, texts, planted = make_corpus(size, args.seed)
            t_corpus = time.perf_counter() - t
            t = time.perf_counter()
            truth, jac_of = ground_truth(ids, texts, args.threshold)
            print(f"corpus: {len(texts)} questions, {len(planted)} planted variants ({t_corpus:.1f}s); "
                  f"ground truth: {len(truth)} pairs with Jaccard >= {args.threshold} "
                  f"(exact prefix-filter self-join, {time.perf_counter() - t:.1f}s)", flush=True)
            ours_s, ours_pairs, removed, cands = run_ours(ids, texts, workdir, args.threshold, args.num_perm,
                                                          warm=k == 0)
            pr, rc, f1 = score(ours_pairs, truth)
            curve.append((size, ours_s, cands))
            print(f"ours at {size}: {ours_s:.1f}s, {size / ours_s:.0f} docs/s, {cands} candidate pairs, "
                  f"{len(ours_pairs)} pairs, precision {pr:.4f} recall {rc:.4f} F1 {f1:.4f}, rows removed {removed}",
                  flush=True)
        for (n0, s0, c0), (n1, s1, c1) in zip(curve, curve[1:]):
            print(f"growth {n0} -> {n1} rows: time x{s1 / s0:.2f}, candidate pairs x{c1 / max(c0, 1):.2f}")
        if args.skip_datasketch:
            print(f"ratio {1.0:.2f}  (no peer measured: --skip-datasketch)")
            return 0
        ds_s, ds_pairs = run_datasketch(ids, texts, args.threshold, args.num_perm, bands, rows)
        index = {k: i for i, k in enumerate(ids)}
        ver_s, ds_verified = verify(ds_pairs, index, texts, args.threshold)

        n = len(texts)
        table = [("ours: nr dedup, Spark local[2]", ours_s, ours_pairs),
                 ("datasketch MinHashLSH (raw)", ds_s, ds_pairs),
                 ("datasketch + exact verify", ds_s + ver_s, ds_verified)]
        print()
        print(f"rows={n}  threshold={args.threshold}  num_perm={args.num_perm}  b={bands} r={rows}  "
              f"unigram shingles  cores={os.cpu_count()}")
        print(f"{'system':34} {'seconds':>8} {'docs/s':>9} {'pairs':>8} {'precision':>9} {'recall':>7} {'F1':>6}")
        for name, secs, found in table:
            pr, rc, f1 = score(found, truth)
            print(f"{name:34} {secs:8.1f} {n / secs:9.0f} {len(found):8d} {pr:9.4f} {rc:7.4f} {f1:6.4f}")
        print(f"throughput ratio ours / datasketch: {ds_s / ours_s:.2f}x "
              f"(vs datasketch + verify: {(ds_s + ver_s) / ours_s:.2f}x)")
        print(f"rows removed by ours: {removed}")
        print()
        print("recall by exact Jaccard of the ground-truth pair:")
        print(f"{'bucket':>12} {'pairs':>7} {'P(candidate)':>12} {'ours':>7} {'datasketch':>10}")
        for lo, hi in BUCKETS:
            sel = {k for k, v in jac_of.items() if lo <= v < hi}
            if not sel:
                continue
            mid = float(np.mean([jac_of[k] for k in sel]))
            label = f"[{lo:.2f},{min(hi, 1.0):.2f}{')' if hi <= 1 else ']'}"
            print(f"{label:>12} {len(sel):7d} {float(minhash.candidate_probability(mid, bands, rows)):12.3f} "
                  f"{len(sel & ours_pairs) / len(sel):7.4f} {len(sel & ds_pairs) / len(sel):10.4f}")
        pr, rc, _ = score(ours_pairs, truth)
        growth_ok = all(s1 / s0 <= 2.3 for (_, s0, _), (_, s1, _) in zip(curve, curve[1:]))
        checks = {"recall >= 0.98": rc >= 0.98, "precision 1.0": pr == 1.0,
                  ">= 3x datasketch raw": ds_s / ours_s >= 3, ">= 6x datasketch + verify": (ds_s + ver_s) / ours_s >= 6,
                  "each doubling <= 2.3x": growth_ok}
        print("\ntargets: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in checks.items()))
        print(f"ratio {ds_s / ours_s:.2f}")
        return 0
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
