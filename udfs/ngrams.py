"""lm-eval-harness 13-gram decontamination primitives (executor side).

Normalization is lm-eval's janitor rule: ASCII letters lower-cased, ASCII punctuation
(``string.punctuation``) deleted, everything else kept; tokens are a whitespace split;
n-grams are ``" ".join`` of n consecutive tokens, hashed to signed 64 bits (xxh64).

Short texts: a text with fewer than n tokens has no n-gram; it is represented by one
"whole" gram, its entire normalized token sequence. Such grams match only each other, so a
short item is contaminated when it equals a short benchmark text after normalization (the
janitor itself, having no n-gram for them, never flags short texts).
"""
from __future__ import annotations

import string
from typing import Iterable, Iterator

import numpy as np
import xxhash

_TABLE = str.maketrans(string.ascii_uppercase, string.ascii_lowercase, string.punctuation)
WHOLE = "\x00whole\x00"  # prefix that keeps whole-text grams apart from real n-grams


def normalize(text: str | None) -> str:
    """
    >>> normalize("Find f'(x), if f(x) = X^2!")
    'find fx if fx  x2'
    """
    return text.translate(_TABLE) if text else ""


def tokens(text: str | None) -> list[str]:
    return normalize(text).split()


def ngrams(text: str | None, n: int = 13) -> list[str]:
    """The text's word n-grams, or its one whole-sequence gram when it has fewer than n tokens.

    >>> ngrams("One, two; THREE four.", 3)
    ['one two three', 'two three four']
    >>> ngrams("Too short!", 3) == [WHOLE + "too short"]
    True
    """
    t = tokens(text)
    if not t:
        return []
    if len(t) < n:
        return [WHOLE + " ".join(t)]
    return [" ".join(t[i : i + n]) for i in range(len(t) - n + 1)]


def gram_hash(gram: str) -> int:
    return int(np.uint64(xxhash.xxh64_intdigest(gram.encode("utf-8"))).view(np.int64))


def display(gram: str) -> str:
    return gram[len(WHOLE):] if gram.startswith(WHOLE) else gram


def ngram_rows(ids: Iterable, texts: Iterable, n: int) -> Iterator[tuple]:
    """(id, hash, gram) for every distinct gram of every text."""
    for i, t in zip(ids, texts):
        for g in set(ngrams(t, n)):
            yield i, gram_hash(g), display(g)


def item_ngram_batches(batches, *, n: int, text_cols: list[str]):
    """mapInPandas body: (item_id, text columns...) -> (item_id, ngram_hash, ngram)."""
    import pandas as pd

    for pdf in batches:
        rows = []
        for col in text_cols:
            rows.extend(ngram_rows(pdf["item_id"], pdf[col], n))
        out = pd.DataFrame(rows, columns=["item_id", "ngram_hash", "ngram"])
        out["ngram_hash"] = out["ngram_hash"].astype("int64")
        yield out
