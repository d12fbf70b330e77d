"""Decontamination benchmark: `nr decontaminate` against lm-eval-harness's janitor, same run.

    .venv/bin/python -m pip install --no-deps lm-eval==0.4.13   # the janitor only, not its dependencies
    .venv/bin/python benchmarks/bench_decontaminate.py --n 1000000 [--docs 100000] [--contaminated 0.04] [--seed 0]
        [--workdir DIR]

   It needs real benchmark text and real web pages, which the repository does not ship: point
   ``NR_SHARED_DATA`` at a folder with ``corpus/dclm_cc_pages.jsonl`` and ``benchmarks/`` in
   their public layouts (there is no default).

1. Items: ``--n`` generated questions. Most are spans of real web text (the DCLM pages in
   ``$NR_SHARED_DATA/corpus``) framed as questions; a fraction (``--contaminated``) is built from
   real benchmark questions of all four built-in benchmarks (``$NR_SHARED_DATA/benchmarks``):
   verbatim, embedded in web text, re-cased and re-punctuated, a 13-word span, and a
   paraphrase of a 13+ word question with one word in every eight replaced (which must not
   be flagged).
2. Ours: ``jobs.common.contamination.cli_main`` (the `nr decontaminate` command) on the items as a
   Parquet file in a local Spark session (``--master``, default local[2]): read the
   benchmark files, broadcast their n-gram hashes, explode and join the items' n-grams,
   write DIR/contamination, count. Run twice: the default ``--tokenize normalize_first`` and
   ``--tokenize split_first``. The JVM start and a small warm-up run are excluded.
3. lm-eval: ``lm_eval/decontamination/janitor.py`` from the installed lm-eval, loaded by file
   path, in this process (one core; its C++ helper is not shipped, so it runs in its Python
   mode as a pip install does). Timed: reading the same benchmark files,
   ``Janitor.register_contaminant_python`` for every benchmark text, then ``clean_python``
   for every item, with ``_split_chunks`` replaced by "any contaminated window?" (the window
   scan is the janitor's own; a clean item, i.e. nearly all, does exactly the work of
   ``clean``). Untimed: lm-eval's other rule, ``word_ngrams(normalize_string(item))`` looked
   up in the same registered n-grams (what its ``decontaminate.py`` does).
4. Agreement, item by item: ours with ``split_first`` against ``Janitor.clean``; ours with
   ``normalize_first`` against the ``word_ngrams(normalize_string(.))`` rule. lm-eval never
   flags texts shorter than 13 tokens; ours flags a short item that equals a short benchmark
   text, so the expected set is lm-eval's flags plus those (counted separately).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
SHARED = os.environ.get("NR_SHARED_DATA", "")

FRAMES = ["{}", "Question: {}", "{} What is the answer?", "Explain: {}", "Can you help with this? {}",
          "{} Show your reasoning.", "In the text below, {}"]


# --------------------------------------------------------------------------- lm-eval's janitor


def load_janitor_module():
    from udfs.ngrams import lm_eval_janitor

    mod = lm_eval_janitor()
    if mod is None:
        sys.exit("lm-eval is not installed: .venv/bin/python -m pip install --no-deps lm-eval==0.4.13")
    return mod


def run_janitor(jan, benchmarks_dir: str, items: list[tuple[str, str]]):
    from jobs.common.benchmarks import BUILTIN, load_benchmark

    class Flagging(jan.Janitor):
        def _split_chunks(self, dirty_string, dirty_parts):
            return next(iter(dirty_parts), None) is not None

    t = time.perf_counter()
    texts = [s for b in BUILTIN for s in load_benchmark(b, benchmarks_dir)["text"]]
    j = Flagging(ngram_n=13)
    for s in texts:
        j.register_contaminant_python(s)
    flags = {i for i, s in items if j.clean_python(s)}
    secs = time.perf_counter() - t
    normalized = {i for i, s in items
                  if any(g in j.dirt_ngrams for g in jan.word_ngrams(j.normalize_string(s), 13))}
    short = {tuple(j.normalize_string(s).split()) for s in texts if len(j.normalize_string(s).split()) < 13}
    short_hits = {i for i, s in items if (k := tuple(j.normalize_string(s).split())) and k in short}
    return secs, flags, normalized, short_hits, len(j.dirt_ngrams)


# --------------------------------------------------------------------------- items


def make_items(n: int, contaminated: float, seed: int, benchmarks_dir: str) -> tuple[list[tuple[str, str]], dict]:
    """(id, text) items and each planted item's kind."""
    from jobs.common.benchmarks import BUILTIN, load_benchmark

    rng = random.Random(seed)
    bench = [t for b in BUILTIN for t in load_benchmark(b, benchmarks_dir)["text"]]
    long_bench = [t for t in bench if len(t.split()) >= 13]  # a paraphrase must change at least one word
    words = []
    with open(os.path.join(SHARED, "corpus", "dclm_cc_pages.jsonl")) as f:
        for line in f:
            words.extend(json.loads(line)["text"].split())

    def web(k: int) -> str:
        s = rng.randrange(len(words) - k)
        return " ".join(words[s:s + k])

    kinds = ["verbatim", "embedded", "recased", "span13", "paraphrase"]
    planted = {}
    items = []
    for i in range(n):
        if rng.random() < contaminated:
            kind = kinds[i % len(kinds)]
            t = rng.choice(long_bench if kind == "paraphrase" else bench)
            planted[f"q{i:07d}"] = kind
            if kind == "verbatim":
                s = t
            elif kind == "embedded":
                s = web(rng.randint(5, 40)) + " " + t + " " + web(rng.randint(0, 20))
            elif kind == "recased":
                s = t.upper().replace(",", " ,").replace("?", "!").replace("$", "")
            elif kind == "span13":
                tw = t.split()
                k = rng.randrange(max(1, len(tw) - 12))
                s = web(rng.randint(3, 15)) + " " + " ".join(tw[k:k + 13]) + " " + web(rng.randint(0, 10))
            else:
                s = " ".join("banana" if j % 8 == 5 else w for j, w in enumerate(t.split()))
        else:
            s = rng.choice(FRAMES).format(web(rng.randint(4, 70)))
        items.append((f"q{i:07d}", s))
    return items, planted


# --------------------------------------------------------------------------- ours


def run_ours(spark, input_path: str, out: str, benchmarks_dir: str, tokenize: str,
             text_col: str = "question") -> tuple[float, set]:
    from jobs.tools.decontaminate import cli_main

    t = time.perf_counter()
    rc = cli_main(["--input", input_path, "--input-format", "parquet", "--id-col", "id", "--text-col", text_col,
                   "--output", out, "--benchmarks-dir", benchmarks_dir, "--tokenize", tokenize, "--engine", "spark"])
    secs = time.perf_counter() - t
    if rc != 0:
        sys.exit(f"nr decontaminate failed with exit code {rc}")
    flags = {r[0] for r in spark.read.parquet(os.path.join(out, "contamination")).select("item_id").distinct().collect()}
    return secs, flags


def fixed_cost(items: list[tuple[str, str]], workdir: str) -> float:
    """Seconds from process start to exit of ``nr decontaminate`` on these items (the built-in index)."""
    import subprocess

    import pandas as pd

    src = os.path.join(workdir, f"fixed_{len(items)}.parquet")
    pd.DataFrame(items, columns=["id", "question"]).to_parquet(src, index=False)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "jobs.cli", "decontaminate", "--input", src, "--input-format", "parquet",
                    "--id-col", "id", "--text-col", "question", "--output", os.path.join(workdir, "fixed_out")],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def make_documents(n: int, contaminated: float, seed: int, benchmarks_dir: str) -> list[tuple[str, str]]:
    """DCLM-length pages (about 3,000 characters of web text), a fraction with a benchmark question inside."""
    from jobs.common.benchmarks import BUILTIN, load_benchmark

    rng = random.Random(seed + 1)
    bench = [t for b in BUILTIN for t in load_benchmark(b, benchmarks_dir)["text"] if len(t.split()) >= 13]
    words = []
    with open(os.path.join(SHARED, "corpus", "dclm_cc_pages.jsonl")) as f:
        for line in f:
            words.extend(json.loads(line)["text"].split())
    docs = []
    for i in range(n):
        k = max(60, int(rng.lognormvariate(6.0, 0.5)))  # about 480 words, 3,000 characters
        s = rng.randrange(len(words) - k)
        page = words[s:s + k]
        if rng.random() < contaminated:
            at = rng.randrange(len(page))
            page = page[:at] + rng.choice(bench).split() + page[at:]
        docs.append((f"d{i:07d}", " ".join(page)))
    return docs


def kernel_peak_mb(texts: list[str], tokenize: str) -> tuple[float, float]:
    """(seconds, peak MB of Python allocations) of the kernel over one Arrow batch of these texts,
    in this process, the index already loaded: what one Spark task holds besides its input."""
    import tracemalloc

    import pyarrow as pa

    from jobs.common.benchmark_index import BUILTIN_INDEX, read
    from udfs import ngrams

    tables = read(BUILTIN_INDEX)
    order = tables.ngrams["ngram_hash"].to_numpy().argsort(kind="stable")
    index = (tables.ngrams["ngram_hash"].to_numpy()[order], tables.ngrams["item"].to_numpy()[order])
    batch = pa.record_batch({"item_id": [str(i) for i in range(len(texts))], "text": texts})
    ngrams.match_batch([pa.array(["warm up"])], *index)
    tracemalloc.start()
    t = time.perf_counter()
    list(ngrams.contamination_batches([batch], index=index, n=13, text_cols=["text"], tokenize=tokenize))
    secs = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return secs, peak


def agreement(label: str, ours: set, lm_eval: set, short_hits: set, n: int) -> bool:
    expected = lm_eval | short_hits
    extra, missed = ours - expected, expected - ours
    agree = n - len(extra) - len(missed)
    print(f"{label:54} lm-eval={len(lm_eval):6d} +short={len(short_hits - lm_eval):4d} ours={len(ours):6d} "
          f"agree={agree}/{n} ({100.0 * agree / n:.3f}%) ours-only={len(extra)} lm-eval-only={len(missed)}")
    for i in sorted(extra)[:3] + sorted(missed)[:3]:
        print(f"    disagreement: {i}")
    return not extra and not missed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="generated questions (default 1000000)")
    p.add_argument("--docs", type=int, default=100_000, help="DCLM-length documents checked after the questions "
                   "(items/s, peak memory per task, agreement with the janitor on a sample); 0 skips them")
    p.add_argument("--contaminated", type=float, default=0.04, help="fraction built from benchmark text")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--benchmarks-dir", default=os.path.join(SHARED, "benchmarks"))
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, removed at the end)")
    args = p.parse_args(argv)
    if not SHARED or not os.path.isdir(os.path.join(SHARED, "corpus")):
        p.error("set NR_SHARED_DATA to a folder holding corpus/dclm_cc_pages.jsonl and benchmarks/ "
                f"(got {SHARED!r})")

    import pandas as pd

    from jobs.common.config import SparkConfig
    from jobs.common.spark import get_spark

    jan = load_janitor_module()
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_decont_")
    os.makedirs(workdir, exist_ok=True)
    try:
        t = time.perf_counter()
        items, planted = make_items(args.n, args.contaminated, args.seed, args.benchmarks_dir)
        src = os.path.join(workdir, "items.parquet")
        pd.DataFrame(items, columns=["id", "question"]).to_parquet(src, index=False)
        print(f"items: {len(items)}, {len(planted)} planted from benchmark text, the rest web text "
              f"({time.perf_counter() - t:.1f}s)", flush=True)

        print(f"fixed cost: nr decontaminate on 3000 items, process start to exit: "
              f"{fixed_cost(items[:3000], workdir):.1f}s (target <= 8 s)", flush=True)
        spark = get_spark(SparkConfig(master=args.master))
        warm = os.path.join(workdir, "warm.parquet")
        pd.DataFrame(items[:200], columns=["id", "question"]).to_parquet(warm, index=False)
        with contextlib.redirect_stdout(io.StringIO()):
            run_ours(spark, warm, os.path.join(workdir, "warm_out"), args.benchmarks_dir, "normalize_first")

        runs = {}
        for tok in ("normalize_first", "split_first"):
            print(f"--- nr decontaminate --tokenize {tok}", flush=True)
            runs[tok] = run_ours(spark, src, os.path.join(workdir, f"out_{tok}"), args.benchmarks_dir, tok)
        print("--- lm-eval janitor", flush=True)
        jan_s, jan_flags, norm_flags, short_hits, jan_ngrams = run_janitor(jan, args.benchmarks_dir, items)

        n = len(items)
        print()
        print(f"items={n}  benchmarks=math,gpqa,mmlu_pro,mmlu_stem  registered 13-grams={jan_ngrams}  "
              f"Spark {spark.version} {args.master}  cores={os.cpu_count()}")
        print(f"{'system':54} {'seconds':>8} {'items/s':>9} {'flagged':>8}")
        table = [("ours: nr decontaminate (normalize_first, default)", *runs["normalize_first"]),
                 ("ours: nr decontaminate --tokenize split_first", *runs["split_first"]),
                 ("lm-eval Janitor (python mode, 1 core)", jan_s, jan_flags)]
        for name, secs, flags in table:
            print(f"{name:54} {secs:8.1f} {n / secs:9.0f} {len(flags):8d}")
        for tok, (secs, _) in runs.items():
            print(f"throughput ratio ours/janitor ({tok}): {jan_s / secs:.2f}x")
        print()
        ok = agreement("split_first vs Janitor.clean", runs["split_first"][1], jan_flags, short_hits, n)
        ok &= agreement("normalize_first vs word_ngrams(normalize_string(.))", runs["normalize_first"][1],
                        norm_flags, short_hits, n)
        print()
        cols = [("ours normalize_first", runs["normalize_first"][1]), ("ours split_first", runs["split_first"][1]),
                ("Janitor.clean", jan_flags), ("lm-eval word_ngrams", norm_flags)]
        print(f"{'flagged by kind':16} {'items':>7} " + " ".join(f"{c:>21}" for c, _ in cols))
        by_kind = {}
        for i, _ in items:
            by_kind.setdefault(planted.get(i, "web text"), set()).add(i)
        for kind, ids in by_kind.items():
            print(f"{kind:16} {len(ids):7d} " + " ".join(f"{len(ids & f):21d}" for _, f in cols))
        if args.docs:
            ok &= documents(spark, jan, args, workdir)
        print()
        print("agreement: identical flags" if ok else "agreement: FLAGS DIFFER")
        print(f"ratio {min(jan_s / secs for secs, _ in runs.values()):.2f}")
        return 0 if ok else 1
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def documents(spark, jan, args, workdir: str) -> bool:
    import pandas as pd

    docs = make_documents(args.docs, 0.01, args.seed, args.benchmarks_dir)
    src = os.path.join(workdir, "docs.parquet")
    pd.DataFrame(docs, columns=["id", "text"]).to_parquet(src, index=False)
    chars = sum(len(t) for _, t in docs) / len(docs)
    print(f"\n--- documents: {len(docs)} pages, mean {chars:.0f} characters", flush=True)
    secs, flags = run_ours(spark, src, os.path.join(workdir, "out_docs"), args.benchmarks_dir, "split_first", "text")
    print(f"ours on documents (split_first): {secs:.1f}s, {len(docs) / secs:.0f} documents/s, "
          f"{len(docs) * chars / secs / 1e6:.1f} MB/s, flagged {len(flags)}")
    k_s, peak = kernel_peak_mb([t for _, t in docs[:10_000]], "split_first")
    print(f"kernel on one Arrow batch of 10000 documents: {k_s:.1f}s, peak {peak:.0f} MB of Python allocations "
          "(the task's input batch and index not counted)")
    long_doc = " ".join(t for _, t in docs[:70])[:200_000]
    k_s, peak = kernel_peak_mb([long_doc], "split_first")
    print(f"kernel on one {len(long_doc)}-character document: {k_s:.2f}s, peak {peak:.0f} MB")
    sample = docs[:2000]
    _, jan_flags, _, short_hits, _ = run_janitor(jan, args.benchmarks_dir, sample)
    ids = {i for i, _ in sample}
    return agreement("documents (first 2000): split_first vs Janitor.clean", flags & ids, jan_flags, short_hits,
                     len(sample))


if __name__ == "__main__":
    sys.exit(main())
