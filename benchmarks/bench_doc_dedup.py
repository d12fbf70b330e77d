"""Document-level dedup benchmark: `nr dedup --ngram 5` on sample-like web pages against datasketch, same run.

    .venv/bin/python benchmarks/bench_doc_dedup.py --n 100000 [--workdir DIR] [--seed 0] [--skip-datasketch]

1. Generates documents from the bundled sample corpus (``data/sample``, written for this
   project): each page is about 3,000 characters (log-normal, 300 .. 20,000) of lines drawn
   from the sample's pool, with some words swapped for words of the pool's vocabulary so
   pages are distinct, plus a site header and footer. 20% of pages sit in planted clusters:
   mirrors that change the header/footer, rewrite a share of the lines and edit words, at
   5-gram Jaccard targets from 0.3 to 1.0; mirrors of mirrors make chains.
2. Ground truth: every pair inside a planted cluster whose exact word 5-gram Jaccard reaches
   the threshold. Pages of different clusters are built from independent draws; the run
   checks that claim on random cross-cluster pairs and prints the largest Jaccard seen.
3. Ours: ``jobs.common.lsh.cli_main`` (`nr dedup`, Spark local[2], ``--ngram 5``: the
   ``doc_dedup`` default) on the pages as Parquet; JVM start and a small warm-up excluded.
4. datasketch: the same 5-gram shingle sets, ``MinHash.generator`` and ``MinHashLSH`` with our
   (bands, rows), one query per page; "+ verify" adds exact Jaccard to its candidates.
5. What removal before annotation saves: the removed pages' annotate prompt tokens
   (``jobs.common.lsh.annotate_tokens_saved``, 4 characters a token, pages cut at ``max_doc_chars``).

The last line is ``ratio <datasketch seconds / ours seconds>``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import xxhash

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_dedup import run_datasketch, run_ours, score  # noqa: E402
from udfs import minhash  # noqa: E402

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "sample")
TARGETS = [0.30, 0.40, 0.50, 0.55, 0.60, 0.70, 0.80, 0.90, 0.95, 1.00]


def sample_pool() -> tuple[list[str], list[str]]:
    """(lines, vocabulary) of the bundled sample pages."""
    lines, vocab = [], set()
    for name in ("dclm_baseline.jsonl", "finemath.jsonl"):
        with open(os.path.join(SAMPLE, name), encoding="utf-8") as f:
            for row in map(json.loads, f):
                for line in row["text"].splitlines():
                    if len(line.split()) >= 4:
                        lines.append(line)
                        vocab.update(w for w in line.split() if w.isalpha())
    return lines, sorted(vocab)


def make_pages(n: int, seed: int = 0, clustered_fraction: float = 0.2):
    """(ids, texts, clusters): ``clusters`` lists the page indices of each planted cluster."""
    rng = np.random.default_rng(seed)
    lines, vocab = sample_pool()
    line_words = [np.array(x.split(), dtype=object) for x in lines]
    line_chars = np.array([len(x) + 1 for x in lines])
    vocab_arr = np.array(vocab, dtype=object)

    def edited(idx: np.ndarray) -> list[str]:
        """The pool's lines ``idx`` with a quarter of their words swapped for vocabulary words."""
        words = np.concatenate([line_words[k] for k in idx])
        hit = np.flatnonzero(rng.random(len(words)) < 0.25)
        words[hit] = vocab_arr[rng.integers(len(vocab_arr), size=len(hit))]
        cuts = np.cumsum([len(line_words[k]) for k in idx])[:-1]
        return [" ".join(w) for w in np.split(words, cuts)]

    def page_body() -> list[str]:
        target = float(np.clip(rng.lognormal(np.log(3000) - 0.18, 0.6), 300, 20_000))
        idx = rng.integers(len(lines), size=int(target // 40) + 8)
        keep = int(np.searchsorted(np.cumsum(line_chars[idx]), target)) + 1
        return edited(idx[:keep])

    def site() -> tuple[str, str]:
        tag = xxhash.xxh64_hexdigest(rng.bytes(8))[:8]
        return (f"Site {tag} | Home | Forum | Contact", f"Copyright {tag} site. Terms. Privacy. Back to top.")

    def mirror(body: list[str], target: float) -> list[str]:
        out = list(body)
        share = (1 - target) / (1 + target)  # about the share of 5-grams to replace for the target
        swap = np.flatnonzero(rng.random(len(out)) < share)
        for k, line in zip(swap, edited(rng.integers(len(lines), size=len(swap))) if len(swap) else []):
            out[k] = line
        return out

    bodies, heads, clusters = [], [], []
    n_clustered = int(n * clustered_fraction)
    while len(bodies) < n:
        start = len(bodies)
        bodies.append(page_body())
        heads.append(site())
        if start < n_clustered:
            for _ in range(int(rng.integers(1, 4))):
                if len(bodies) >= n:
                    break
                parent = int(rng.integers(start, len(bodies)))
                bodies.append(mirror(bodies[parent], float(rng.choice(TARGETS))))
                heads.append(site())
            clusters.append(list(range(start, len(bodies))))
    order = rng.permutation(n)
    where = np.empty(n, dtype=np.int64)
    where[order] = np.arange(n)
    texts = ["\n".join([heads[i][0], *bodies[i], heads[i][1]]) for i in order]
    clusters = [[int(where[i]) for i in c] for c in clusters if len(c) > 1]
    ids = [f"d-{xxhash.xxh64_hexdigest(f'{seed}/{i}'.encode())}" for i in range(n)]
    return ids, texts, clusters


def cluster_truth(ids, texts, clusters, threshold: float, ngram: int = 5):
    sets = {}
    truth = set()
    for c in clusters:
        for i in c:
            sets[i] = minhash.shingle_set(texts[i], ngram)
        for x, i in enumerate(c):
            for j in c[x + 1:]:
                jac = minhash.jaccard(sets[i], sets[j])
                if jac >= threshold:
                    truth.add((min(ids[i], ids[j]), max(ids[i], ids[j])))
    return truth


def cross_cluster_max(texts, clusters, n_pairs: int = 2000, seed: int = 1, ngram: int = 5) -> float:
    rng = np.random.default_rng(seed)
    member = {i: k for k, c in enumerate(clusters) for i in c}
    best = 0.0
    for _ in range(n_pairs):
        i, j = (int(x) for x in rng.integers(len(texts), size=2))
        if i == j or (i in member and member.get(j) == member[i]):
            continue
        best = max(best, minhash.text_jaccard(texts[i], texts[j], ngram))
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="pages to generate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=0.55)
    p.add_argument("--num-perm", type=int, default=128)
    p.add_argument("--workdir", default=None)
    p.add_argument("--skip-datasketch", action="store_true")
    args = p.parse_args(argv)

    from jobs.common.config import PipelineConfig
    from jobs.common.lsh import DedupStats, lsh_params
    from jobs.stages.corpus.doc_dedup import annotate_tokens_saved

    pipeline = PipelineConfig()
    dcfg = pipeline.doc_dedup.model_copy(update={"threshold": args.threshold, "num_perm": args.num_perm})
    ngram, bands, rows = dcfg.ngram, *lsh_params(dcfg)
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_doc_dedup_")
    os.makedirs(workdir, exist_ok=True)
    try:
        t = time.perf_counter()
        ids, texts, clusters = make_pages(args.n, args.seed)
        chars = np.array([len(x) for x in texts])
        print(f"corpus: {len(texts)} pages, mean {chars.mean():.0f} chars (median {np.median(chars):.0f}), "
              f"{sum(map(len, clusters))} pages in {len(clusters)} planted clusters ({time.perf_counter() - t:.1f}s)",
              flush=True)
        t = time.perf_counter()
        truth = cluster_truth(ids, texts, clusters, args.threshold, ngram)
        print(f"ground truth: {len(truth)} pairs with word {ngram}-gram Jaccard >= {args.threshold}; "
              f"largest Jaccard of 2000 random cross-cluster pairs: {cross_cluster_max(texts, clusters):.3f} "
              f"({time.perf_counter() - t:.1f}s)", flush=True)
        ours_s, ours_pairs, removed, cands = run_ours(ids, texts, workdir, args.threshold, args.num_perm,
                                                      extra=["--ngram", str(ngram)], name="pages")
        pr, rc, f1 = score(ours_pairs, truth)
        print(f"ours: {ours_s:.1f}s, {len(texts) / ours_s:.0f} pages/s, {cands} candidate pairs, {len(ours_pairs)} "
              f"pairs, precision {pr:.4f} recall {rc:.4f} F1 {f1:.4f}, pages removed {removed}", flush=True)
        index = {k: i for i, k in enumerate(ids)}
        removed_ids = removed_pages(workdir)
        stats = DedupStats(removed=len(removed_ids), removed_chars=int(sum(
            min(len(texts[index[k]]), pipeline.annotate.max_doc_chars) for k in removed_ids)))
        saved = annotate_tokens_saved(pipeline.annotate.prompt, stats)
        every = DedupStats(removed=len(texts), removed_chars=int(np.minimum(chars, pipeline.annotate.max_doc_chars).sum()))
        total = annotate_tokens_saved(pipeline.annotate.prompt, every)
        print(f"annotate prompt tokens saved by removing {len(removed_ids)} pages first: {saved} of {total} "
              f"({100.0 * saved / total:.1f}%, estimated at 4 characters a token)")
        if args.skip_datasketch:
            print(f"ratio {1.0:.2f}  (no peer measured: --skip-datasketch)")
            return 0
        ds_s, ds_pairs = run_datasketch(ids, texts, args.threshold, args.num_perm, bands, rows, ngram)
        t = time.perf_counter()
        ds_verified = {q for q in ds_pairs if minhash.text_jaccard(texts[index[q[0]]], texts[index[q[1]]], ngram)
                       >= args.threshold}
        ver_s = time.perf_counter() - t
        print(f"\npages={len(texts)}  threshold={args.threshold}  num_perm={args.num_perm}  b={bands} r={rows}  "
              f"word {ngram}-gram shingles  cores={os.cpu_count()}")
        print(f"{'system':34} {'seconds':>8} {'pages/s':>9} {'pairs':>8} {'precision':>9} {'recall':>7}")
        for name, secs, found in [("ours: nr dedup, Spark local[2]", ours_s, ours_pairs),
                                  ("datasketch MinHashLSH (raw)", ds_s, ds_pairs),
                                  ("datasketch + exact verify", ds_s + ver_s, ds_verified)]:
            pr, rc, _ = score(found, truth)
            print(f"{name:34} {secs:8.1f} {len(texts) / secs:9.0f} {len(found):8d} {pr:9.4f} {rc:7.4f}")
        print(f"ratio {ds_s / ours_s:.2f}")
        return 0
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def removed_pages(workdir: str) -> list[str]:
    import glob

    import pyarrow.parquet as pq

    (folder,) = glob.glob(os.path.join(workdir, "ours_spark_*", "clusters"))
    t = pq.read_table(folder).to_pydict()
    return [k for k, keep in zip(t["id"], t["keep"]) if not keep]


if __name__ == "__main__":
    sys.exit(main())
