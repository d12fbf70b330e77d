"""lm-eval-harness 13-gram decontamination primitives (executor side).

Normalization is lm-eval's (``lm_eval/decontamination/janitor.py``, ``Janitor.normalize_string``):
ASCII letters lower-cased, the 32 ASCII punctuation characters of ``string.punctuation``
deleted, every other character kept as it is (``É``, ``’``, ``—``, ``∫`` are neither
lower-cased nor deleted). Tokens are Python's ``str.split()``, i.e. any Unicode whitespace
(the same set as the janitor's ``\\S+`` regex). An n-gram is ``" ".join`` of n consecutive
tokens, hashed to a signed 64-bit integer (xxh64 of its UTF-8 bytes).

Benchmark texts always go through lm-eval's ``word_ngrams(normalize_string(text), n)``:
normalize, then split. Items (the texts being checked) have two tokenizations, because lm-eval
itself has two:

``normalize_first`` (default)
    the item goes through the same ``word_ngrams(normalize_string(text), n)`` as the
    benchmark: what lm-eval's ``decontaminate.py`` and its training-set 13-gram scripts do on
    both sides. A token made only of punctuation (``=``, ``+``, ``-``, ``$``) disappears before
    the window is taken.
``split_first``
    exactly ``Janitor.clean`` in lm-eval's pure-Python mode (``clean_python``, the mode a pip
    install runs: the C++ ``janitor_util`` is not shipped): the *raw* item text is split on
    whitespace, each 13-token window is normalized afterwards and looked up. A raw token made
    only of ASCII punctuation becomes an empty string, so its window normalizes to a string
    with a doubled, leading or trailing space and can never equal a registered n-gram; every
    window that contains such a token is dead. On the real benchmarks this misses about one
    in five verbatim MATH questions of 13+ tokens (``$x + y = 3$`` has the tokens ``+`` and
    ``=``), so it is offered for parity with the janitor, not as the default. Every
    ``split_first`` match is also a ``normalize_first`` match.

lm-eval's C++ ``janitor_util`` (compiled by hand) differs again: ASCII whitespace only, bytes
rather than characters, and it cuts any word longer than 10 bytes into pieces; it is not
reproduced.

Short texts: a text with fewer than n normalized tokens has no n-gram; it is represented by
one "whole" gram, its entire normalized token sequence. Whole grams match only each other,
so a short item is contaminated when it equals a short benchmark text after normalization.
lm-eval never flags short texts; this rule is the one deliberate addition to it.

Hash collisions: two different n-grams share an xxh64 value with probability ~2^-64 per
pair; over 10^8 item n-grams against 10^7 benchmark n-grams that is below 10^-4 false
matches per run, and the recorded ``matched_ngram`` lets a person check any match.
"""
from __future__ import annotations

import string
from typing import Iterable, Iterator, Optional

import numpy as np
import xxhash

_TABLE = str.maketrans(string.ascii_uppercase, string.ascii_lowercase, string.punctuation)
WHOLE = "\x00whole\x00"  # prefix that keeps whole-text grams apart from real n-grams
NORMALIZE_FIRST = "normalize_first"
SPLIT_FIRST = "split_first"
TOKENIZATIONS = (NORMALIZE_FIRST, SPLIT_FIRST)
_COL_SHIFT = 32  # position = text column index << 32 | index of the gram's first token

_h64 = xxhash.xxh64_intdigest


def normalize(text: Optional[str]) -> str:
    """lm-eval's ``normalize_string``: ASCII lower-case, ASCII punctuation deleted, nothing else.

    >>> normalize("Find f'(x), if f(x) = X^2!")
    'find fx if fx  x2'
    >>> normalize("Ünïcode — “quotes” STAY")
    'Ünïcode — “quotes” stay'
    """
    return text.translate(_TABLE) if text else ""


def tokens(text: Optional[str]) -> list[str]:
    """Normalize, then split on whitespace (the benchmark side, and ``normalize_first`` items).

    >>> tokens("x = 5,\\u00a0y\\t=\\n6")
    ['x', '5', 'y', '6']
    """
    return normalize(text).split()


def raw_tokens(text: Optional[str]) -> list[str]:
    """Split on whitespace, then normalize each token (``split_first``); "" marks a punctuation-only token.

    >>> raw_tokens("x = 5, y")
    ['x', '', '5', 'y']
    """
    return [t.translate(_TABLE) for t in text.split()] if text else []


def positioned_ngrams(text: Optional[str], n: int = 13, tokenize: str = NORMALIZE_FIRST) -> list[tuple[int, str]]:
    """(index of the first token, gram) for every n-gram of the text, in order, repeats included.

    A text with fewer than n normalized tokens gives one whole-sequence gram at position 0.

    >>> positioned_ngrams("One, two; THREE four.", 3)
    [(0, 'one two three'), (1, 'two three four')]
    >>> positioned_ngrams("a b = c d e", 3, "split_first")
    [(3, 'c d e')]
    >>> positioned_ngrams("Too short!", 3) == [(0, WHOLE + "too short")]
    True
    """
    if tokenize == NORMALIZE_FIRST:
        t = tokens(text)
        if len(t) < n:
            return [(0, WHOLE + " ".join(t))] if t else []
        return [(i, " ".join(t[i:i + n])) for i in range(len(t) - n + 1)]
    if tokenize != SPLIT_FIRST:
        raise ValueError(f"tokenize must be one of {TOKENIZATIONS}, not {tokenize!r}")
    raw = raw_tokens(text)
    kept = [t for t in raw if t]  # == tokens(text): deleting punctuation never touches whitespace
    if len(kept) < n:
        return [(0, WHOLE + " ".join(kept))] if kept else []
    out, run_start = [], 0
    for i in range(len(raw) + 1):
        if i == len(raw) or not raw[i]:  # a run of non-empty tokens ends at i
            out.extend((k, " ".join(raw[k:k + n])) for k in range(run_start, i - n + 1))
            run_start = i + 1
    return out


def ngrams(text: Optional[str], n: int = 13, tokenize: str = NORMALIZE_FIRST) -> list[str]:
    """The text's word n-grams, or its one whole-sequence gram when it has fewer than n tokens.

    >>> ngrams("One, two; THREE four.", 3)
    ['one two three', 'two three four']
    >>> ngrams("Too short!", 3) == [WHOLE + "too short"]
    True
    """
    return [g for _, g in positioned_ngrams(text, n, tokenize)]


def gram_hash(gram: str) -> int:
    """Signed 64-bit xxh64 of the gram's UTF-8 bytes (Spark's ``long``)."""
    return _signed(_h64(gram.encode("utf-8", "surrogatepass")))


def _signed(h: int) -> int:
    return h - (1 << 64) if h >= (1 << 63) else h


def gram_at(text: Optional[str], pos: int, n: int = 13, tokenize: str = NORMALIZE_FIRST) -> Optional[str]:
    """The displayed gram that starts at token ``pos`` (as numbered by ``positioned_ngrams``)."""
    t = tokens(text)
    if len(t) < n:
        return " ".join(t) if pos == 0 and t else None
    seq = t if tokenize == NORMALIZE_FIRST else raw_tokens(text)
    window = seq[pos:pos + n]
    return " ".join(window) if len(window) == n and all(window) else None


def first_positions(text: Optional[str], n: int = 13, tokenize: str = NORMALIZE_FIRST) -> dict[str, int]:
    """Each distinct gram of the text with the position of its first occurrence.

    >>> first_positions("a b a b a", 2) == {"a b": 0, "b a": 1}
    True
    """
    if tokenize == NORMALIZE_FIRST:  # the hot path: no (position, gram) tuples
        t = tokens(text)
        k = len(t) - n + 1
        if k <= 0:
            return {WHOLE + " ".join(t): 0} if t else {}
        grams = [" ".join(t[i:i + n]) for i in range(k)]
        # built from the end, so a repeated gram keeps its first position
        return dict(zip(reversed(grams), range(k - 1, -1, -1)))
    return {g: p for p, g in reversed(positioned_ngrams(text, n, tokenize))}


def hash_grams(grams: Iterable[str]) -> np.ndarray:
    """int64 hashes of many grams (``gram_hash`` without a Python int per gram)."""
    return np.fromiter((_h64(g.encode("utf-8", "surrogatepass")) for g in grams), dtype=np.uint64).view(np.int64)


def item_ngram_batches(batches: Iterable, *, n: int, text_cols: list[str], tokenize: str = NORMALIZE_FIRST
                       ) -> Iterator:
    """mapInPandas body: (item_id, text columns...) -> (item_id, _ngram_hash, _ngram_pos).

    One row per distinct gram of each text, at the gram's first position; the gram's text is
    not shipped (it is recovered for the few matches by ``matched_ngram_batches``).
    """
    import pandas as pd

    for pdf in batches:
        ids, grams, positions = [], [], []
        for c, col in enumerate(text_cols):
            base = c << _COL_SHIFT
            for item_id, text in zip(pdf["item_id"].tolist(), pdf[col].tolist()):
                first = first_positions(text, n, tokenize)
                ids.extend([item_id] * len(first))
                grams.extend(first)
                positions.extend(first.values() if not base else (base + p for p in first.values()))
        yield pd.DataFrame({
            "item_id": pd.Series(ids, dtype=object),
            "_ngram_hash": hash_grams(grams),
            "_ngram_pos": np.array(positions, dtype=np.int64),
        })


def matched_ngram_batches(batches: Iterable, *, n: int, text_cols: list[str], tokenize: str = NORMALIZE_FIRST
                          ) -> Iterator:
    """mapInPandas body: adds ``matched_ngram``, the gram at ``_ngram_pos``, when it hashes to ``_ngram_hash``.

    The hash check makes the recovered text trustworthy even when an id is not unique.
    """
    for pdf in batches:
        texts = [pdf[c].tolist() for c in text_cols]
        out = []
        for r, (pos, h) in enumerate(zip(pdf["_ngram_pos"].tolist(), pdf["_ngram_hash"].tolist())):
            text = texts[pos >> _COL_SHIFT][r]
            g = gram_at(text, pos & ((1 << _COL_SHIFT) - 1), n, tokenize)
            hashed = (WHOLE + g) if g is not None and len(tokens(text)) < n else g
            out.append(g if g is not None and gram_hash(hashed) == h else None)
        yield pdf.assign(matched_ngram=out)


def lm_eval_janitor():
    """lm-eval-harness's ``decontamination/janitor.py`` module, the reference our rules are
    checked against, or None when lm-eval is not installed (``pip install --no-deps lm-eval``).

    Loaded by file path so ``lm_eval/__init__`` and its heavy imports are not pulled in; the
    module's own warning about its missing C++ helper is silenced.
    """
    import contextlib
    import importlib.util
    import io
    import os

    spec = importlib.util.find_spec("lm_eval")
    if spec is None:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "decontamination", "janitor.py")
    mod_spec = importlib.util.spec_from_file_location("lm_eval_janitor", path)
    mod = importlib.util.module_from_spec(mod_spec)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        mod_spec.loader.exec_module(mod)
    return mod
