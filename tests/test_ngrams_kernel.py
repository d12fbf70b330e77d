"""The vectorized decontamination kernel (udfs.ngrams.batch_grams / match_batch) against the per-text definition."""
import numpy as np
import pyarrow as pa
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from udfs import ngrams

# whitespace of every kind str.split knows, ASCII punctuation, non-ASCII letters and punctuation
ALPHABET = ["a", "B", "c", "x1", "É", "é", "数", "’", "—", ".", ",", "=", "+", "$", "!?", "--", " ", "  ", "\t", "\n",
            "\x0b", "\x1c", "\x1f", "\x85", "\u00a0", "\u2003", "\u2028", "\u3000"]
texts_st = st.lists(st.one_of(st.none(), st.just(""), st.lists(st.sampled_from(ALPHABET), max_size=60).map("".join)),
                    max_size=25)


def reference(texts, n, tokenize):
    out = set()
    for i, t in enumerate(texts):
        for _, g in ngrams.positioned_ngrams(t, n, tokenize):
            out.add((i, ngrams.gram_hash(g), g[len(ngrams.WHOLE):] if g.startswith(ngrams.WHOLE) else g))
    return out


def kernel(arr, n, tokenize, max_grams=1 << 20):
    spans, chunks = ngrams.batch_grams(arr, n, tokenize, max_grams)
    out, sizes = set(), []
    for ch in chunks:
        sizes.append(len(ch.hash))
        for t, h, f, w in zip(ch.text, ch.hash, ch.first, ch.width):
            out.add((int(t), int(h), ngrams.gram_text(spans, int(f), int(w))))
    return out, sizes


@settings(max_examples=150, deadline=None)
@given(texts_st, st.sampled_from([1, 2, 3, 13]), st.sampled_from(ngrams.TOKENIZATIONS), st.integers(1, 50))
def test_batch_grams_equal_the_per_text_definition(texts, n, tokenize, max_grams):
    got, sizes = kernel(pa.array(texts, pa.string()), n, tokenize, max_grams)
    assert got == reference(texts, n, tokenize)
    assert all(s <= max_grams for s in sizes)


def test_sliced_and_chunked_arrays():
    texts = ["One, two three four five six seven eight nine ten eleven twelve thirteen fourteen.", None, "x = y",
             "Ünïcode\u00a0words — and ‘quotes’ 1 2 3 4 5 6 7 8 9 10 11 12"]
    full = pa.array(["lead text"] + texts)
    want = reference(texts, 13, ngrams.NORMALIZE_FIRST)
    assert kernel(full.slice(1), 13, ngrams.NORMALIZE_FIRST)[0] == want
    assert kernel(pa.chunked_array([texts[:2], texts[2:]]), 13, ngrams.NORMALIZE_FIRST)[0] == want
    assert kernel(pa.array([], pa.string()), 13, ngrams.NORMALIZE_FIRST)[0] == set()


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400), st.data())
def test_xxh64_windows_equal_xxhash(buf, data):
    k = data.draw(st.integers(0, 20))
    starts = [data.draw(st.integers(0, len(buf))) for _ in range(k)]
    lengths = [data.draw(st.integers(0, len(buf) - s)) for s in starts]
    got = ngrams.xxh64_windows(np.frombuffer(buf, dtype=np.uint8), np.array(starts, dtype=np.int64),
                               np.array(lengths, dtype=np.int64))
    assert got.tolist() == [xxhash.xxh64_intdigest(buf[s:s + ln]) for s, ln in zip(starts, lengths)]


def test_long_document_is_hashed_in_bounded_chunks():
    rng = np.random.default_rng(0)
    words = [f"w{int(i)}" for i in rng.integers(0, 5000, 40_000)]
    doc = " ".join(words)
    assert len(doc) > 200_000
    got, sizes = kernel(pa.array([doc, "short one"]), 13, ngrams.NORMALIZE_FIRST, max_grams=4096)
    assert max(sizes) <= 4096 and sum(sizes) == len(words) - 12 + 1
    assert {h for _, h, _ in got} == set(ngrams.hash_grams(ngrams.first_positions(doc, 13))) | {
        ngrams.gram_hash(ngrams.WHOLE + "short one")}


@pytest.mark.parametrize("tokenize", ngrams.TOKENIZATIONS)
def test_match_batch_finds_exactly_the_indexed_grams(tokenize):
    bench = {7: "The quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat",
             9: "What is 2+2?", 11: "Let x = 3 and y = 4 find the hypotenuse of the right triangle with legs x and y"}
    keys, hashes = [], []
    for k, t in bench.items():
        for g in ngrams.first_positions(t, 13):
            keys.append(k)
            hashes.append(ngrams.gram_hash(g))
    order = np.argsort(hashes, kind="stable")
    index_hash, index_key = np.array(hashes, dtype=np.int64)[order], np.array(keys, dtype=np.int32)[order]
    items = ["Intro: the QUICK brown fox jumps over the lazy dog, while the cat sleeps on the warm mat.",
             "what is 2 + 2", "what is 2+2", None, "Let x = 3 and y = 4 find the hypotenuse of the right triangle"]
    row, key, h, pos, grams = ngrams.match_batch([pa.array(items)], index_hash, index_key, 13, tokenize)
    got = {(int(r), int(k)) for r, k in zip(row, key)}
    want = set()
    for r, t in enumerate(items):
        mine = {ngrams.gram_hash(g) for g in ngrams.ngrams(t, 13, tokenize)}
        want |= {(r, k) for hh, k in zip(hashes, keys) if hh in mine}
    assert got == want and (0, 7) in got and (2, 9) in got
    for r, hh, p, g in zip(row, h, pos, grams.to_pylist()):
        gram = ngrams.gram_at(items[r], int(p), 13) if tokenize == ngrams.NORMALIZE_FIRST else g
        assert g == gram and ngrams.gram_hash(g if len(ngrams.tokens(items[r])) >= 13 else ngrams.WHOLE + g) == hh


def test_contamination_batches_keep_the_text_of_each_first_match_only():
    text = "the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat"
    grams = ngrams.first_positions(text, 13)
    index_hash = np.sort(np.array([ngrams.gram_hash(g) for g in grams], dtype=np.int64))
    index = (index_hash, np.zeros(len(index_hash), dtype=np.int32))
    items = pa.record_batch({"item_id": ["a", "b", "c"], "q": ["nothing here", "x " + text, text + " y"]})
    none = pa.record_batch({"item_id": ["d"], "q": ["no match at all"]})
    out = pa.Table.from_batches(list(ngrams.contamination_batches([none, items], index=index, n=13, text_cols=["q"])))
    got = sorted(zip(*(out.column(c).to_pylist() for c in ("item_id", "_ngram_pos", "matched_ngram"))))
    first = {(i, p): g for i, p, g in got if g}
    assert first == {("b", 1): " ".join(text.split()[:13]), ("c", 0): " ".join(text.split()[:13])}
    assert len(got) == 2 * len(index_hash)


@settings(max_examples=100, deadline=None)
@given(texts_st, st.sampled_from([1, 3, 13]))
def test_hash_grams_equal_gram_hash(texts, n):
    grams = [g for t in texts for g in ngrams.ngrams(t, n)] + ["", ngrams.WHOLE]
    assert ngrams.hash_grams(grams).tolist() == [ngrams.gram_hash(g) for g in grams]


def test_every_whitespace_character_of_str_split_and_no_other():
    spaces = [c for c in map(chr, range(0x110000)) if c.isspace()]
    near = ["\u2010", "\u200b", "\u180e", "\u2060", "\u3001", "\u00ad", "\u0080", "\u00a1", "\u1681", "\u205e"]
    texts = [f"a{c}b" for c in spaces + near]
    spans = ngrams.token_spans(pa.array(texts))
    per_text = np.bincount(spans.text, minlength=len(texts))
    assert per_text.tolist() == [len(t.split()) for t in texts] == [2] * len(spaces) + [1] * len(near)
