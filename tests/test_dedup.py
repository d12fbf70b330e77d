"""Word MinHash LSH dedup: exact arithmetic, verified pairs, chains, determinism, odd inputs."""
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from jobs.common.config import DedupConfig
from jobs.tools.dedup import cli_main
from jobs.common.lsh import connected_components, find_duplicate_clusters, remove_duplicates
from udfs import minhash

P = minhash.MERSENNE_PRIME
BASE = ("a block of mass two kilograms slides down a frictionless incline of thirty degrees "
        "starting from rest and we want its speed after it has travelled five metres along the slope")
ODD_TEXTS = [BASE, BASE.replace("two", "three"), "", None, "one", "   ", "?!", "Ünïcode WÖRDS and 数字 42, x_1",
             "word " * 5000, "two words", "ǅemal İstanbul ﬁve"]


# --------------------------------------------------------------------------- signatures (pure)


@pytest.mark.parametrize("ngram", [1, 2, 3])
@pytest.mark.parametrize("block", [1, 7, 256])
def test_signatures_equal_big_integer_reference(ngram, block):
    sig = minhash.minhash_signatures(ODD_TEXTS, num_perm=32, seed=7, ngram=ngram, block=block)
    assert sig.dtype == np.uint64 and sig.shape == (len(ODD_TEXTS), 32)
    for i, t in enumerate(ODD_TEXTS):
        assert [int(v) for v in sig[i]] == minhash.signature_reference(t, 32, 7, ngram), (i, t and t[:30])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("ab Ab.,'_1é\n"), max_size=40), max_size=6),
       st.integers(1, 3), st.integers(0, 2**64 - 1))
def test_signatures_equal_reference_on_arbitrary_texts(texts, ngram, seed):
    sig = minhash.minhash_signatures(texts, num_perm=8, seed=seed, ngram=ngram, block=5)
    for i, t in enumerate(texts):
        assert [int(v) for v in sig[i]] == minhash.signature_reference(t, 8, seed, ngram)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_ascii_fast_path_tokenizes_like_the_regex(text):
    assert minhash.token_bytes(text) == [t.encode("utf-8") for t in minhash.tokenize(text)]


def test_mulmod_exact_on_extremes():
    vals = np.array([0, 1, 2, 7, P - 1, P - 2, 2**32 - 1, 2**32, 2**32 + 1, 2**60 + 12345, 2**61 - 2], dtype=np.uint64)
    got = minhash.mulmod(vals, vals)
    for i, x in enumerate(vals):
        for j, y in enumerate(vals):
            assert int(got[i, j]) == (int(x) * int(y)) % P


@settings(max_examples=300, deadline=None)
@given(st.integers(0, P - 1), st.integers(0, P - 1))
def test_mulmod_matches_python_integers(a, x):
    assert int(minhash.mulmod(np.uint64(x), np.uint64(a))[0, 0]) == (a * x) % P


def test_permutations_fixed_by_seed_and_in_range():
    a, b = minhash.permutations(64, 3)
    a2, b2 = minhash.permutations(64, 3)
    assert (a == a2).all() and (b == b2).all()
    assert (a >= 1).all() and (a < P).all() and (b < P).all()
    assert not (minhash.permutations(64, 4)[0] == a).all()


def test_empty_texts_get_the_empty_signature():
    sig = minhash.minhash_signatures(["", None, "...", "x"], num_perm=16)
    assert (sig[:3] == minhash.EMPTY_HASH).all() and (sig[3] < P).all()


def test_jaccard_estimate_within_theory():
    """Over many pairs of known Jaccard J the estimate's error has mean ~0 and the
    binomial spread sqrt(J(1-J)/k) that k independent permutations give."""
    k = 256
    rng = np.random.default_rng(0)
    z, pairs_a, pairs_b, truth = [], [], [], []
    for i in range(300):
        m = int(rng.integers(20, 80))
        shared = int(rng.integers(1, m))
        common = [f"c{i}_{j}" for j in range(shared)]
        x = common + [f"x{i}_{j}" for j in range(m - shared)]
        y = common + [f"y{i}_{j}" for j in range(int(rng.integers(0, 40)))]
        pairs_a.append(" ".join(x))
        pairs_b.append(" ".join(y))
        truth.append(minhash.text_jaccard(pairs_a[-1], pairs_b[-1]))
    sa = minhash.minhash_signatures(pairs_a, num_perm=k, seed=1)
    sb = minhash.minhash_signatures(pairs_b, num_perm=k, seed=1)
    est = (sa == sb).mean(axis=1)
    for e, j in zip(est, truth):
        sd = np.sqrt(max(j * (1 - j), 1e-3) / k)
        z.append((e - j) / sd)
    z = np.array(z)
    assert np.abs(z).max() < 4.5  # 300 draws: a 4.5-sigma miss has probability ~2e-3
    assert abs(z.mean()) < 4 / np.sqrt(len(z))  # unbiased
    assert 0.6 < z.std() < 1.4  # the spread theory predicts, not more


def test_ngram_shingles_and_jaccard():
    assert minhash.shingle_set("A rose is a rose.", 2) == {b"a rose", b"rose is", b"is a"}
    assert minhash.shingle_set("too short", 3) == {b"too short"}
    assert minhash.text_jaccard("the cat sat", "The cat, sat!") == 1.0
    assert minhash.text_jaccard("", "") == 0.0 and minhash.text_jaccard(None, "x") == 0.0
    assert minhash.text_jaccard("a b c d", "a b c e") == 3 / 5


def test_band_hashes_depend_on_band_values_and_index():
    sig = minhash.minhash_signatures([BASE, BASE, BASE + " extra words here"], num_perm=20)
    h = minhash.band_hashes(sig, 4, 5)
    assert h.dtype == np.int64 and h.shape == (3, 4)
    assert (h[0] == h[1]).all() and len(set(h[0].tolist())) == 4
    with pytest.raises(ValueError):
        minhash.band_hashes(sig, 5, 5)


def test_s_curve_and_parameters():
    b, r = minhash.optimal_param(0.55, 128)
    assert b * r <= 128
    # recall-leaning default: a pair at the threshold is a candidate with high probability
    assert minhash.candidate_probability(0.55, b, r) > 0.9
    assert minhash.candidate_probability(0.65, b, r) > 0.98
    assert minhash.candidate_probability(0.2, b, r) < 0.1
    # more weight on false positives moves the curve right
    b2, r2 = minhash.optimal_param(0.55, 128, 0.5, 0.5)
    assert minhash.candidate_probability(0.45, b2, r2) < minhash.candidate_probability(0.45, b, r)
    with pytest.raises(ValueError):
        minhash.optimal_param(0.0, 128)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("abcdef ,."), max_size=30), min_size=1, max_size=12),
       st.integers(1, 3))
def test_doc_sets_and_hash_verification_equal_text_jaccard(texts, ngram):
    """The packed shingle-hash sets a document carries give the text Jaccard of every pair."""
    import pyarrow as pa

    ids = [f"d{i:02d}" for i in range(len(texts))]
    out = pa.Table.from_batches(list(minhash.doc_batches(
        [pa.record_batch({"id": ids, "text": texts})], num_perm=16, seed=1, ngram=ngram, bands=4, rows=4)))
    kept = out.column("id").to_pylist()
    assert kept == [i for i, t in zip(ids, texts) if minhash.tokenize(t)]
    counts, values = minhash.binary_int64(out.column("shingles").combine_chunks())
    sets = np.split(values, np.cumsum(counts)[:-1])
    by_id = dict(zip(kept, sets))
    for k, t in zip(ids, texts):
        if k in by_id:
            assert len(by_id[k]) == len(minhash.shingle_set(t, ngram)) and (by_id[k][1:] > by_id[k][:-1]).all()
    pairs = [(a, b) for a in kept for b in kept if a < b]
    if not pairs:
        return
    sh = out.column("shingles").combine_chunks()
    pos = {k: i for i, k in enumerate(kept)}
    batch = pa.record_batch({
        "id_a": [a for a, _ in pairs], "id_b": [b for _, b in pairs],
        "shingles_a": sh.take(pa.array([pos[a] for a, _ in pairs])),
        "shingles_b": sh.take(pa.array([pos[b] for _, b in pairs]))})
    text = dict(zip(ids, texts))
    got = pa.Table.from_batches(list(minhash.jaccard_hash_batches([batch.slice(1)], threshold=0.0, tally=True)))
    rows = got.to_pylist()
    assert rows[-1]["id_a"] is None and rows[-1]["jaccard"] == len(pairs) - 1
    for r in rows[:-1]:
        assert r["jaccard"] == minhash.text_jaccard(text[r["id_a"]], text[r["id_b"]], ngram)


def _bucket_pairs(rows, max_bucket_size=1000, threshold=0.0, chunk=None):
    import pyarrow as pa

    rows = sorted(rows)
    t = pa.table({"key": pa.array([r[0] for r in rows], pa.int64()), "id": [r[1] for r in rows],
                  "n": pa.array([r[2] for r in rows], pa.int32())})
    batches = t.to_batches(max_chunksize=chunk) if chunk else t.to_batches()
    out = list(minhash.bucket_pair_batches(batches, max_bucket_size=max_bucket_size, threshold=threshold))
    return sorted((a, b) for x in out for a, b in zip(x.column("id_a").to_pylist(), x.column("id_b").to_pylist()))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 30), st.integers(1, 20)), max_size=40,
                unique_by=lambda r: (r[0], r[1])),
       st.integers(1, 7), st.integers(2, 6))
def test_bucket_pairs_any_batching_and_giant_runs(rows, chunk, max_bucket):
    rows = [(k, f"i{i:02d}", n) for k, i, n in rows]
    runs = {}
    for k, i, n in sorted(rows):
        runs.setdefault(k, []).append(i)
    want = set()
    for ids in runs.values():
        if len(ids) <= max_bucket:
            want |= {(a, b) for x, a in enumerate(ids) for b in ids[x + 1:]}
        else:  # giant: first-member and predecessor links only
            want |= {(ids[0], b) for b in ids[1:]} | {(ids[x - 1], ids[x]) for x in range(1, len(ids))}
    got = _bucket_pairs(rows, max_bucket, chunk=chunk)
    assert set(got) == want
    assert _bucket_pairs(rows, max_bucket) == got  # one batch or many: the same pairs


def test_size_filter_keeps_every_pair_that_can_reach_the_threshold():
    """Counts n_a <= n_b: J <= n_a / n_b, so a pair is dropped only when n_a < t * n_b; pairs at
    exactly the bound (J = t possible) and every pair of real texts with J >= t are kept."""
    t = 0.55
    rows = [(1, "a", 11), (1, "b", 20), (1, "c", 10), (1, "d", 19)]
    got = _bucket_pairs(rows, threshold=t)
    assert ("a", "b") in got  # 11 / 20 = 0.55 exactly: a J of 0.55 is possible
    assert ("b", "c") not in got and ("c", "d") not in got  # 10 / 20, 10 / 19 < 0.55
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(14)]
    texts = [" ".join(rng.choice(vocab, int(rng.integers(3, 40)))) for _ in range(120)]
    sizes = [len(minhash.shingle_set(x)) for x in texts]
    kept = set(_bucket_pairs([(7, f"t{i:03d}", sizes[i]) for i in range(len(texts))], threshold=t))
    qualifying = {(f"t{i:03d}", f"t{j:03d}") for i in range(len(texts)) for j in range(i + 1, len(texts))
                  if minhash.text_jaccard(texts[i], texts[j]) >= t}
    assert qualifying and qualifying <= kept


# --------------------------------------------------------------------------- Spark transforms


def frame(spark, rows, parts=2):
    return spark.createDataFrame(rows, "id string, text string").repartition(parts)


def groups_of(clusters):
    out = {}
    for r in clusters.collect():
        out.setdefault(r.cluster_id, set()).add(r.id)
    return sorted(sorted(v) for v in out.values() if len(v) > 1)


def test_known_groups_chains_and_keep(spark):
    w = BASE.split()
    a = " ".join(w)
    b = " ".join(w[:-4] + ["x1", "x2", "x3", "x4"])
    c = " ".join(w[:-8] + ["x1", "x2", "x3", "x4", "y1", "y2", "y3", "y4"])
    d = "How many moles of water form when 4 g of hydrogen burns completely in oxygen gas?"
    e = "how many MOLES of water form, when 4 g of hydrogen burns completely in oxygen?"
    far = "completely different text about cooking rice with water and salt in a pot"
    ja, jb, jc = minhash.text_jaccard(a, b), minhash.text_jaccard(b, c), minhash.text_jaccard(a, c)
    assert ja >= 0.7 and jb >= 0.7 and jc < 0.7, (ja, jb, jc)
    rows = [("id-b", b), ("id-a", a), ("id-c", c), ("q2", e), ("q1", d), ("z", far), ("empty", ""), ("none", None),
            ("one", "word"), ("one-again", "Word!")]
    clusters, pairs, stats = find_duplicate_clusters(frame(spark, rows), "id", "text", DedupConfig(threshold=0.7))
    # A~B, B~C, A!~C: the chain ends in one cluster; one-word texts are duplicates of each other
    assert groups_of(clusters) == [["id-a", "id-b", "id-c"], ["one", "one-again"], ["q1", "q2"]]
    assert {r.id for r in clusters.where("keep").collect()} == {"id-a", "q1", "z", "empty", "none", "one"}
    assert clusters.count() == len(rows) and stats.rows == len(rows) and stats.removed == 4
    assert stats.clusters == 3 and stats.verified_pairs == pairs.count()
    got = {(r.id_a, r.id_b): r.jaccard for r in pairs.collect()}
    assert set(got) == {("id-a", "id-b"), ("id-b", "id-c"), ("q1", "q2"), ("one", "one-again")}
    assert got[("id-a", "id-b")] == pytest.approx(ja)
    assert stats.candidate_pairs >= stats.verified_pairs


def test_deterministic_across_partitions_and_runs(spark):
    rng = np.random.default_rng(3)
    vocab = [f"v{i}" for i in range(300)]
    rows = []
    for g in range(40):
        base = list(rng.choice(vocab, 30))
        for k in range(3):
            t = list(base)
            for _ in range(int(rng.integers(0, 8))):
                t[int(rng.integers(30))] = f"edit{g}_{k}_{int(rng.integers(99))}"
            rows.append((f"{g:03d}-{k}", " ".join(t)))
    rows += [(f"lone{i}", " ".join(rng.choice(vocab, 25))) for i in range(40)]
    results = []
    for parts in (1, 3, 7, 3):
        c, p, _ = find_duplicate_clusters(frame(spark, rows, parts), "id", "text", DedupConfig())
        results.append((sorted(map(tuple, c.collect())), sorted(map(tuple, p.collect()))))
        c.unpersist()
        p.unpersist()
    assert all(r == results[0] for r in results)
    assert len(groups_of(spark.createDataFrame(results[0][0], "id string, cluster_id string, keep boolean"))) >= 30


def test_ids_of_any_string_form(spark):
    ids = ["", " ", "Ω-1", "10", "9", "a\tb", "x" * 300, "NULL", "-1"]
    rows = [(i, BASE + (" extra" if k % 2 else "")) for k, i in enumerate(ids)]
    clusters, pairs, stats = find_duplicate_clusters(frame(spark, rows, 3), "id", "text", DedupConfig())
    assert groups_of(clusters) == [sorted(ids)]
    assert [r.id for r in clusters.where("keep").collect()] == [min(ids)]
    assert stats.verified_pairs == len(ids) * (len(ids) - 1) // 2
    assert all(r.id_a < r.id_b for r in pairs.collect())


def test_numeric_ids_are_cast_to_string(spark):
    df = spark.createDataFrame([(1, BASE), (2, BASE), (3, "something else entirely")], "k long, body string")
    clusters, _, _ = find_duplicate_clusters(df, "k", "body", DedupConfig())
    assert sorted(map(tuple, clusters.collect())) == [("1", "1", True), ("2", "1", False), ("3", "3", True)]


def test_repeated_id_is_refused(spark):
    with pytest.raises(ValueError, match="not a key"):
        find_duplicate_clusters(frame(spark, [("a", "x y"), ("a", "x z")]), "id", "text", DedupConfig())


def test_empty_input(spark):
    clusters, pairs, stats = find_duplicate_clusters(frame(spark, []), "id", "text", DedupConfig())
    assert clusters.count() == 0 and pairs.count() == 0 and stats.rows == 0 and stats.removed == 0


def test_very_long_texts(spark):
    rng = np.random.default_rng(5)
    words = [f"w{int(i)}" for i in rng.integers(0, 50_000, 20_000)]
    long_a = " ".join(words)
    long_b = " ".join(words[:-500] + ["tail"] * 500)
    rows = [("la", long_a), ("lb", long_b), ("lc", " ".join(reversed(words[: len(words) // 3])))]
    clusters, pairs, _ = find_duplicate_clusters(frame(spark, rows), "id", "text", DedupConfig(ngram=3))
    assert groups_of(clusters) == [["la", "lb"]]
    assert [r.jaccard for r in pairs.collect()] == [pytest.approx(minhash.text_jaccard(long_a, long_b, 3))]


def test_highest_score_keep(spark):
    rows = [("a", BASE, 1.0), ("b", BASE + " again", 9.0), ("c", BASE + " once more", None)]
    df = spark.createDataFrame(rows, "id string, text string, q double")
    c, _, _ = find_duplicate_clusters(df, "id", "text", DedupConfig(keep="highest_score", score_col="q"))
    assert {r.id for r in c.where("keep").collect()} == {"b"}
    assert {r.cluster_id for r in c.collect()} == {"a"}


def test_giant_bucket_is_linear(spark):
    rows = [(f"n{i:04d}", BASE) for i in range(80)]
    c, p, stats = find_duplicate_clusters(frame(spark, rows), "id", "text", DedupConfig(max_bucket_size=10))
    # every band's bucket is giant here: each yields at most 2 * 79 links (not 80*79/2), and
    # a link that is a link in several giant buckets is checked in each of them
    assert stats.candidate_pairs <= stats.bands * 2 * 80
    got = [(r.id_a, r.id_b) for r in p.collect()]
    assert len(got) == len(set(got)) == stats.verified_pairs <= 2 * 80
    assert groups_of(c) == [sorted(r[0] for r in rows)]


def test_connected_components_long_chain_and_shapes(spark):
    chain = [(f"n{i:03d}", f"n{i + 1:03d}") for i in range(60)]
    # the chain's ids shuffled so that neighbours are far apart in id order
    perm = np.random.default_rng(1).permutation(61)
    shuffled = [(f"m{perm[i]:03d}", f"m{perm[i + 1]:03d}") for i in range(60)]
    star = [("s5", f"s{i}") for i in range(5)] + [("s9", "s5")]
    edges = spark.createDataFrame(chain + shuffled + star + [("x", "x")], "id_a string, id_b string")
    labels, rounds = connected_components(edges)
    got = {r.id: r.cluster_id for r in labels.collect()}
    assert {got[f"n{i:03d}"] for i in range(61)} == {"n000"}
    assert {got[f"m{i:03d}"] for i in range(61)} == {"m000"}
    assert {got[f"s{i}"] for i in (0, 1, 2, 3, 4, 5, 9)} == {"s0"}
    assert len(got) == 61 + 61 + 7 and "x" not in got
    assert rounds < 20
    labels.unpersist()


def test_remove_duplicates_is_an_anti_join(spark):
    df = spark.createDataFrame([(1, BASE), (2, BASE + " too"), (3, "other")], "qid int, question string")
    clusters, _, _ = find_duplicate_clusters(df, "qid", "question", DedupConfig())
    assert sorted(r.qid for r in remove_duplicates(df, clusters, "qid").collect()) == [1, 3]


# --------------------------------------------------------------------------- stage and CLI


def test_question_dedup_stage_and_skip(spark, cfg, store):
    from jobs.pipeline import run_stage

    qs = spark.createDataFrame(
        [("q1", "d1", BASE, "ok"), ("q2", "d2", BASE + " please", "ok"), ("q3", "d3", "other question text here", "ok"),
         ("q4", "d4", None, "no_json")], "question_id string, doc_id string, question string, status string")
    store.overwrite("questions", qs)
    row = run_stage(cfg, "question_dedup", spark=spark)
    assert row["counts"]["dropped_near_duplicate"] == 1 and row["counts"]["in"] == 3
    cl = store.read("dedup_questions_clusters")
    assert {r.id for r in cl.where(~F.col("keep")).collect()} == {"q2"}
    assert [(r.id_a, r.id_b) for r in store.read("dedup_questions_pairs").collect()] == [("q1", "q2")]
    v = store.version("dedup_questions_clusters")
    row2 = run_stage(cfg, "question_dedup", spark=spark)
    assert row2["counts"]["skipped_up_to_date"] == 1 and store.version("dedup_questions_clusters") == v


def test_cli_writes_clusters_and_pairs(spark, tmp_path):
    src = tmp_path / "in.jsonl"
    rows = [{"uid": "u1", "body": BASE}, {"uid": "u2", "body": BASE.upper()}, {"uid": "u3", "body": "unrelated words"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert cli_main(["--input", str(src), "--input-format", "jsonl", "--id-col", "uid", "--text-col", "body",
                     "--output", str(out), "--threshold", "0.6", "--num-perm", "64"]) == 0
    clusters = pq.read_table(os.path.join(out, "clusters")).to_pylist()
    pairs = pq.read_table(os.path.join(out, "pairs")).to_pylist()
    assert sorted((r["id"], r["cluster_id"], r["keep"]) for r in clusters) == [
        ("u1", "u1", True), ("u2", "u1", False), ("u3", "u3", True)]
    assert pairs == [{"id_a": "u1", "id_b": "u2", "jaccard": 1.0}]
    # on Spark too, the output folder gets the two tables and no scratch (checkpoints go to a temp folder)
    assert cli_main(["--input", str(src), "--input-format", "jsonl", "--id-col", "uid", "--text-col", "body",
                     "--output", str(tmp_path / "spark"), "--threshold", "0.6", "--num-perm", "64",
                     "--engine", "spark"]) == 0
    assert sorted(os.listdir(tmp_path / "spark")) == ["clusters", "pairs"]
    assert cli_main(["--input", str(src), "--input-format", "jsonl", "--id-col", "nope", "--text-col", "body",
                     "--output", str(out)]) == 2
    assert cli_main(["--input", str(src), "--input-format", "jsonl", "--id-col", "uid", "--text-col", "body",
                     "--output", str(out), "--threshold", "1.5"]) == 2
