"""lm-eval-harness 13-gram decontamination primitives (executor side).

Normalization is lm-eval's (``lm_eval/decontamination/janitor.py``, ``Janitor.normalize_string``):
ASCII letters lower-cased, the 32 ASCII punctuation characters of ``string.punctuation``
deleted, every other character kept as it is (``É``, ``’``, ``—``, ``∫`` are neither
lower-cased nor deleted). Tokens are Python's ``str.split()``, i.e. any Unicode whitespace
(the same set as the janitor's ``\\S+`` regex). An n-gram is ``" ".join`` of n consecutive
tokens, hashed to a signed 64-bit integer: the xxh64 of each token's UTF-8 bytes, folded left to
right (``gram_hash``). The fold lets the item side hash whole Arrow batches in numpy
(``batch_grams``: tokens found and normalized over the batch's bytes, token hashes by a
vectorized xxh64, grams by the fold over token arrays) with no Python object per token or gram;
the per-text functions below are the readable definition it is tested against.

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
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import numpy as np
import xxhash

_TABLE = str.maketrans(string.ascii_uppercase, string.ascii_lowercase, string.punctuation)
WHOLE = "\x00whole\x00"  # prefix that keeps whole-text grams apart from real n-grams
NORMALIZE_FIRST = "normalize_first"
SPLIT_FIRST = "split_first"
TOKENIZATIONS = (NORMALIZE_FIRST, SPLIT_FIRST)
_COL_SHIFT = 32  # position = text column index << 32 | index of the gram's first token
_FOLD_INT = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1

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
    """The gram's signed 64-bit hash (Spark's ``long``): its tokens' xxh64 (of UTF-8 bytes) folded
    ``h = h * B + t`` mod 2^64 left to right, then fmix64; a whole gram folds ``WHOLE``'s xxh64
    first. ``fold_windows`` computes the same over token arrays, so the items' grams are hashed
    without a Python object per gram.

    >>> gram_hash("a b c") == gram_hash(" ".join(["a", "b", "c"])) != gram_hash(WHOLE + "a b c")
    True
    """
    if gram.startswith(WHOLE):
        seq = [_h64(WHOLE.encode())] + [_h64(t.encode("utf-8", "surrogatepass")) for t in gram[len(WHOLE):].split(" ")]
    else:
        seq = [_h64(t.encode("utf-8", "surrogatepass")) for t in gram.split(" ")]
    h = seq[0]
    for t in seq[1:]:
        h = (h * _FOLD_INT + t) & _MASK64
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK64
    return _signed(h ^ (h >> 33))


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
    """int64 ``gram_hash`` of many grams, vectorized (``token_spans`` and ``fold_windows`` over
    the grams as texts: a gram's tokens are already normalized, so normalizing again keeps them).

    >>> [int(h) for h in hash_grams(["a b", WHOLE + "c"])] == [gram_hash("a b"), gram_hash(WHOLE + "c")]
    True
    """
    import pyarrow as pa

    grams = list(grams)
    whole = np.array([g.startswith(WHOLE) for g in grams], dtype=bool)
    try:
        arr = pa.array([g[len(WHOLE):] if w else g for g, w in zip(grams, whole)], pa.string())
    except (pa.ArrowException, UnicodeEncodeError):  # a lone surrogate: no UTF-8 for Arrow
        return np.fromiter(map(gram_hash, grams), dtype=np.int64, count=len(grams))
    spans = token_spans(arr)
    th = xxh64_windows(spans.buf, spans.start, spans.end - spans.start)
    count = np.bincount(spans.text, minlength=len(grams))
    first = np.cumsum(count) - count
    out = np.empty(len(grams), dtype=np.int64)
    for k in np.flatnonzero(count == 0):  # no token (not a gram of any text): the definition's value
        out[k] = gram_hash(grams[k])
    for sel, lead in ((np.flatnonzero(~whole & (count > 0)), None), (np.flatnonzero(whole & (count > 0)), _WHOLE_TOKEN)):
        if len(sel):
            out[sel] = fold_windows(th, first[sel], count[sel],
                                    None if lead is None else np.full(len(sel), lead, dtype=np.uint64))
    return out


# --------------------------------------------------------------------------- vectorized kernel (Arrow batches)

_U = np.uint64
_P1, _P2, _P3, _P4, _P5 = (_U(11400714785074694791), _U(14029467366897019727), _U(1609587929392839161),
                           _U(9650029242287828579), _U(2870177450012600261))
_FOLD = _U(0x9E3779B97F4A7C15)  # odd, so the fold h * B + t loses nothing
_XXH_INIT = tuple(_U(x & ((1 << 64) - 1)) for x in (int(_P1) + int(_P2), int(_P2), 0, -int(_P1)))
_WHOLE_TOKEN = _U(_h64(WHOLE.encode()))
_SPACE = 0x20
_WHITESPACE = "".join(c for c in map(chr, range(0x110000)) if c.isspace())  # what str.split() splits on


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << _U(r)) | (x >> _U(64 - r))


def _xxh_round(acc: np.ndarray, lane: np.ndarray) -> np.ndarray:
    return _rotl(acc + lane * _P2, 31) * _P1


def xxh64_windows(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """xxh64 (seed 0) of ``buf[starts[i] : starts[i] + lengths[i]]`` for every i, as uint64,
    equal to ``xxhash.xxh64_intdigest`` of those bytes: the algorithm's stripes, lanes and
    avalanche run over all windows at once (a window of k 32-byte stripes joins k passes).

    >>> b = np.frombuffer(b"the quick brown fox", dtype=np.uint8)
    >>> int(xxh64_windows(b, np.array([4]), np.array([5]))[0]) == _h64(b"quick")
    True
    """
    pad = np.concatenate([np.asarray(buf, dtype=np.uint8), np.zeros(8, dtype=np.uint8)])
    u64 = np.ndarray((len(pad) - 7,), dtype="<u8", buffer=pad, offset=0, strides=(1,))
    u32 = np.ndarray((len(pad) - 3,), dtype="<u4", buffer=pad, offset=0, strides=(1,))
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    out = np.empty(len(starts), dtype=np.uint64)
    # Windows under 32 bytes (nearly every token) by exact length, so each group runs exactly
    # its own lanes with no masks; longer ones through the general path.
    short = lengths < 32
    cls = np.where(short, lengths, 32).astype(np.uint8)
    order = np.argsort(cls, kind="stable")
    bounds = np.searchsorted(cls[order], np.arange(34))
    for length in range(32):
        sel = order[bounds[length]:bounds[length + 1]]
        if len(sel) == 0:
            continue
        p = starts[sel]
        h = np.full(len(sel), _P5 + _U(length), dtype=np.uint64)
        for j in range(length >> 3):
            h = _rotl(h ^ _xxh_round(np.zeros(len(sel), dtype=np.uint64), u64[p + 8 * j]), 27) * _P1 + _P4
        off = (length >> 3) << 3
        if length & 4:
            h = _rotl(h ^ (u32[p + off].astype(np.uint64) * _P1), 23) * _P2 + _P3
            off += 4
        for j in range(length & 3):
            h = _rotl(h ^ (pad[p + off + j].astype(np.uint64) * _P5), 11) * _P1
        out[sel] = _avalanche(h)
    long_ = order[bounds[32]:]
    if len(long_):
        out[long_] = _xxh64_general(pad, u64, u32, starts[long_], lengths[long_])
    return out


def _avalanche(h: np.ndarray) -> np.ndarray:
    h ^= h >> _U(33)
    h *= _P2
    h ^= h >> _U(29)
    h *= _P3
    h ^= h >> _U(32)
    return h


def _xxh64_general(pad: np.ndarray, u64: np.ndarray, u32: np.ndarray, starts: np.ndarray,
                   lengths: np.ndarray) -> np.ndarray:
    """xxh64 of windows of any length (stripes, lanes and bytes under masks)."""
    stripes = lengths >> 5
    h = np.full(len(starts), _P5, dtype=np.uint64)
    big = np.flatnonzero(stripes > 0)
    if len(big):  # 32-byte stripes into four accumulators; longest windows first, so the active ones are a prefix
        order = big[np.argsort(-stripes[big], kind="stable")]
        s_ord, base = stripes[order], starts[order]
        v = [np.full(len(order), x, dtype=np.uint64) for x in _XXH_INIT]
        k = 0
        while (cnt := int(np.count_nonzero(s_ord > k))) > 0:
            off = base[:cnt] + 32 * k
            for j in range(4):
                v[j][:cnt] = _xxh_round(v[j][:cnt], u64[off + 8 * j])
            k += 1
        acc = _rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)
        for j in range(4):
            acc = (acc ^ _xxh_round(np.zeros_like(acc), v[j])) * _P1 + _P4
        h[order] = acc
    h += lengths.astype(np.uint64)
    p = starts + (stripes << 5)
    rem = lengths & 31
    for j in range(3):  # 8-byte lanes
        sel = np.flatnonzero((rem >> 3) > j)
        if len(sel) == 0:
            break
        k1 = _xxh_round(np.zeros(len(sel), dtype=np.uint64), u64[p[sel] + 8 * j])
        h[sel] = _rotl(h[sel] ^ k1, 27) * _P1 + _P4
    p = p + ((rem >> 3) << 3)
    sel = np.flatnonzero(rem & 4)  # a 4-byte lane
    if len(sel):
        h[sel] = _rotl(h[sel] ^ (u32[p[sel]].astype(np.uint64) * _P1), 23) * _P2 + _P3
    p = p + (rem & 4)
    for j in range(3):  # single bytes
        sel = np.flatnonzero((rem & 3) > j)
        if len(sel) == 0:
            break
        h[sel] = _rotl(h[sel] ^ (pad[p[sel] + j].astype(np.uint64) * _P5), 11) * _P1
    return _avalanche(h)


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _U(33))
    h = h * _U(0xFF51AFD7ED558CCD)
    h = h ^ (h >> _U(33))
    h = h * _U(0xC4CEB9FE1A85EC53)
    return h ^ (h >> _U(33))


def fold_windows(token_hash: np.ndarray, first: np.ndarray, width, lead: Optional[np.ndarray] = None) -> np.ndarray:
    """Gram hashes: tokens ``first[i] .. first[i] + width[i] - 1`` of ``token_hash`` folded
    ``h = h * B + t`` (mod 2^64) from ``lead[i]`` (or the first token), then fmix64; int64."""
    width = np.broadcast_to(np.asarray(width, dtype=np.int64), first.shape)
    if lead is None:
        h = token_hash[first].copy()
        k0 = 1
    else:
        h = lead.astype(np.uint64, copy=True)
        k0 = 0
    top = int(width.max()) if len(width) else 0
    for k in range(k0, top):
        sel = slice(None) if k < int(width.min()) else np.flatnonzero(width > k)
        h[sel] = h[sel] * _FOLD + token_hash[first[sel] + k]
    return _fmix64(h).view(np.int64)


@dataclass
class TokenSpans:
    """Every raw (whitespace-separated) token of a batch of texts, normalized, as byte spans of
    ``buf``; a token that was only ASCII punctuation is empty (``start == end``), which is
    what ``raw_tokens`` gives as ""."""

    buf: np.ndarray  # uint8: the normalized texts, concatenated
    text: np.ndarray  # int64 per token: the index of its text in the batch
    start: np.ndarray  # int64 byte offsets in buf
    end: np.ndarray
    raw: np.ndarray  # int64: the token's index among its text's raw tokens


def token_spans(texts) -> TokenSpans:
    """Normalize and split a batch of texts over its UTF-8 bytes: ASCII lower-case (Arrow),
    then in numpy: raw tokens are the runs of bytes that are not whitespace (the ASCII
    whitespace bytes and the bytes of the multi-byte whitespace characters of
    ``str.split``), and ASCII punctuation bytes are deleted (no byte of a multi-byte
    character is ASCII, so this is exactly ``normalize`` per character). A null text has no
    token."""
    import pyarrow as pa
    import pyarrow.compute as pc

    s = pc.ascii_lower(pc.fill_null(pc.cast(texts, pa.string()), "")).cast(pa.large_string())
    if isinstance(s, pa.ChunkedArray):
        s = s.combine_chunks()
    n = len(s)
    offsets = np.frombuffer(s.buffers()[1], dtype=np.int64)[s.offset: s.offset + n + 1]
    lo, hi = (int(offsets[0]), int(offsets[-1])) if n else (0, 0)
    data = s.buffers()[2]
    raw_buf = (np.frombuffer(data, dtype=np.uint8)[lo:hi] if data is not None and hi > lo
               else np.zeros(0, dtype=np.uint8))
    offsets = offsets - lo
    word = _IS_WORD[raw_buf]
    _mark_wide_whitespace(raw_buf, word)
    # a token starts at a word byte that begins its text or follows a non-word byte, and ends likewise
    prev = np.zeros(len(word), dtype=bool)
    prev[1:] = word[:-1]
    prev[offsets[:-1][offsets[:-1] < len(word)]] = False
    nxt = np.zeros(len(word), dtype=bool)
    nxt[:-1] = word[1:]
    nxt[offsets[1:][offsets[1:] > 0] - 1] = False
    start = np.flatnonzero(word & ~prev)
    end = np.flatnonzero(word & ~nxt) + 1
    # (searchsorted with the few needles into the many: texts into tokens, punctuation into tokens)
    counts = np.diff(np.searchsorted(start, offsets))
    text = np.repeat(np.arange(n, dtype=np.int64), counts)
    raw = np.arange(len(text), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    punct = np.flatnonzero(_IS_PUNCT[raw_buf])
    if len(punct) == 0:
        return TokenSpans(raw_buf, text, start, end, raw)
    # byte p of the batch is byte p - (punctuation bytes before p) of the punctuation-free buffer
    before_start = np.cumsum(np.bincount(np.searchsorted(start, punct, side="right"), minlength=len(start) + 1))
    before_end = np.cumsum(np.bincount(np.searchsorted(end, punct, side="right"), minlength=len(end) + 1))
    return TokenSpans(np.delete(raw_buf, punct), text, start - before_start[:len(start)],
                      end - before_end[:len(end)], raw)


def _mark_wide_whitespace(buf: np.ndarray, word: np.ndarray) -> None:
    """Clear ``word`` over every byte of a multi-byte whitespace character (U+0085, U+00A0,
    U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000): as if it were a space."""
    lead = np.flatnonzero((buf == 0xC2) | ((buf >= 0xE1) & (buf <= 0xE3)))
    if len(lead) == 0:
        return
    pad = np.concatenate([buf, np.zeros(2, dtype=np.uint8)])
    b0, b1, b2 = pad[lead], pad[lead + 1], pad[lead + 2]
    two = (b0 == 0xC2) & ((b1 == 0x85) | (b1 == 0xA0))
    three = (((b0 == 0xE1) & (b1 == 0x9A) & (b2 == 0x80))
             | ((b0 == 0xE2) & (b1 == 0x80) & (((b2 >= 0x80) & (b2 <= 0x8A)) | (b2 == 0xA8) | (b2 == 0xA9)
                                              | (b2 == 0xAF)))
             | ((b0 == 0xE2) & (b1 == 0x81) & (b2 == 0x9F))
             | ((b0 == 0xE3) & (b1 == 0x80) & (b2 == 0x80)))
    for k in range(3):
        at = lead[two] + k if k < 2 else np.zeros(0, dtype=np.int64)
        word[at] = False
        word[lead[three] + k] = False


def _byte_table(chars: str) -> np.ndarray:
    t = np.zeros(256, dtype=bool)
    t[[ord(c) for c in chars]] = True
    return t


_IS_WORD = ~_byte_table("".join(c for c in _WHITESPACE if ord(c) < 128))
_IS_PUNCT = _byte_table(string.punctuation)


class _PrefixFold:
    """``fold_windows`` for many windows of one token-hash array in O(1) per window: with
    ``S[j] = sum_{m<j} t[m] * B^-m`` (B is odd, so invertible mod 2^64; numpy's uint64
    arithmetic wraps mod 2^64), ``t[f] * B^(w-1) + ... + t[f+w-1] = B^(f+w-1) * (S[f+w] - S[f])``,
    the same value the fold computes step by step."""

    _INV = _U(pow(int(_FOLD), -1, 1 << 64))

    def __init__(self, token_hash: np.ndarray):
        m = len(token_hash)
        self.pw = np.cumprod(np.concatenate(([_U(1)], np.full(m, _FOLD, dtype=np.uint64))), dtype=np.uint64)
        inv = np.cumprod(np.concatenate(([_U(1)], np.full(max(m - 1, 0), self._INV, dtype=np.uint64))),
                         dtype=np.uint64)
        self.s = np.concatenate(([_U(0)], np.cumsum(token_hash * inv[:m], dtype=np.uint64)))

    def windows(self, first: np.ndarray, width: np.ndarray, lead: Optional[np.ndarray] = None) -> np.ndarray:
        last = first + width
        h = self.pw[last - 1] * (self.s[last] - self.s[first])
        if lead is not None:
            h = h + lead * self.pw[width]  # B^w: powers depend only on the exponent
        return _fmix64(h).view(np.int64)


@dataclass
class GramChunk:
    """Some of a batch's grams: their text, position (index of the first kept token among its
    text's kept tokens), hash, and the kept-token range they cover."""

    text: np.ndarray
    pos: np.ndarray
    hash: np.ndarray  # int64, as gram_hash
    first: np.ndarray  # index into the kept tokens
    width: np.ndarray


def batch_grams(texts, n: int = 13, tokenize: str = NORMALIZE_FIRST, max_grams: int = 1 << 20):
    """``(spans, kept, chunks)``: the grams of every text of an Arrow batch -- what
    ``positioned_ngrams`` gives text by text, hashed as ``gram_hash`` -- in chunks of at most
    ``max_grams``, so a 200,000-character text is hashed a bounded slice at a time.

    Token hashes are xxh64 over byte windows (``xxh64_windows``) and grams fold them
    (``fold_windows``): no Python object per token or per gram.
    """
    if tokenize not in TOKENIZATIONS:
        raise ValueError(f"tokenize must be one of {TOKENIZATIONS}, not {tokenize!r}")
    spans = token_spans(texts)
    kept = np.flatnonzero(spans.end > spans.start)
    k_text = spans.text[kept]
    th = xxh64_windows(spans.buf, spans.start[kept], spans.end[kept] - spans.start[kept])
    n_texts = len(texts)
    count = np.bincount(k_text, minlength=n_texts)
    first_of = np.cumsum(count) - count

    fold = _PrefixFold(th)

    def chunks():
        # short texts (1 .. n-1 kept tokens): one whole-sequence gram each
        short = np.flatnonzero((count > 0) & (count < n))
        for lo in range(0, len(short), max_grams):
            t = short[lo:lo + max_grams]
            first, width = first_of[t], count[t]
            yield GramChunk(t, np.zeros(len(t), dtype=np.int64),
                            fold.windows(first, width, lead=np.full(len(t), _WHOLE_TOKEN, dtype=np.uint64)),
                            first, width)
        # n-grams: a window may start at a kept token with n - 1 kept tokens of its text after it
        total = len(kept)
        for lo in range(0, total, max_grams):
            g = np.arange(lo, min(lo + max_grams, total), dtype=np.int64)
            t = k_text[g]
            g = g[(g - first_of[t]) <= count[t] - n]
            if tokenize == SPLIT_FIRST and len(g):  # no punctuation-only raw token inside the window
                g = g[spans.raw[kept[g + n - 1]] - spans.raw[kept[g]] == n - 1]
            if len(g) == 0:
                continue
            t = k_text[g]
            width = np.full(len(g), n, dtype=np.int64)
            yield GramChunk(t, g - first_of[t], fold.windows(g, width), g, width)

    return spans, kept, chunks()


def gram_text(spans: TokenSpans, kept: np.ndarray, first: int, width: int) -> str:
    """The displayed gram: its kept tokens joined by single spaces."""
    b = spans.buf
    return " ".join(bytes(b[spans.start[k]:spans.end[k]]).decode("utf-8") for k in kept[first:first + width])


def match_batch(columns: list, index_hash: np.ndarray, index_key: np.ndarray, n: int = 13,
                tokenize: str = NORMALIZE_FIRST, max_grams: int = 1 << 20):
    """Every (row, benchmark item) n-gram match of a batch: ``(row, key, hash, pos, gram)``
    arrays, one entry per matched gram and benchmark item holding it. ``index_hash`` is the
    index's gram hashes sorted (int64), ``index_key`` their benchmark item keys. ``pos`` is
    ``column index << 32 | position``; ``gram`` the matched gram's text.
    """
    rows, keys, hashes, pos, grams = [], [], [], [], []
    bits = _bitmap(index_hash)
    for c, texts in enumerate(columns):
        spans, kept, chunks = batch_grams(texts, n, tokenize, max_grams)
        for ch in chunks:
            maybe = np.flatnonzero(_in_bitmap(bits, ch.hash))
            at = np.searchsorted(index_hash, ch.hash[maybe], side="left")
            ok = at < len(index_hash)
            hit, at = maybe[ok], at[ok]
            eq = index_hash[at] == ch.hash[hit]
            hit, lo = hit[eq], at[eq]
            if len(hit) == 0:
                continue
            span = np.searchsorted(index_hash, ch.hash[hit], side="right") - lo
            which = np.repeat(hit, span)
            entry = np.repeat(lo, span) + (np.arange(int(span.sum())) - np.repeat(np.cumsum(span) - span, span))
            rows.append(ch.text[which])
            keys.append(index_key[entry].astype(np.int32))
            hashes.append(ch.hash[which])
            pos.append((np.int64(c) << _COL_SHIFT) | ch.pos[which])
            texts_of = {int(h): gram_text(spans, kept, int(ch.first[h]), int(ch.width[h])) for h in np.unique(which)}
            grams.extend(texts_of[int(h)] for h in which)
    cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dtype=dt))
    return cat(rows, np.int64), cat(keys, np.int32), cat(hashes, np.int64), cat(pos, np.int64), grams


_BITMAP_BITS = 27  # 16 MB: under 1% of lookups pass it for 1M distinct index grams


def _bitmap(index_hash: np.ndarray) -> np.ndarray:
    """A bit per value of the top ``_BITMAP_BITS`` bits of the hash, set when an index gram has
    it: one cache-friendly probe rules out nearly every item gram before the binary search.
    Cached per index array (one per worker process)."""
    key = (id(index_hash), len(index_hash))
    got = _BITMAPS.get(key)
    if got is None:
        bits = np.zeros(1 << (_BITMAP_BITS - 3), dtype=np.uint8)
        top = index_hash.view(np.uint64) >> np.uint64(64 - _BITMAP_BITS)
        np.bitwise_or.at(bits, (top >> np.uint64(3)).astype(np.int64), (1 << (top & np.uint64(7))).astype(np.uint8))
        _BITMAPS.clear()
        _BITMAPS[key] = got = (index_hash, bits)  # holding the array keeps its id from being reused
    return got[1]


_BITMAPS: dict = {}


def _in_bitmap(bits: np.ndarray, h: np.ndarray) -> np.ndarray:
    top = h.view(np.uint64) >> np.uint64(64 - _BITMAP_BITS)
    return (bits[(top >> np.uint64(3)).astype(np.int64)] >> (top & np.uint64(7)).astype(np.uint8)) & 1 == 1


def contamination_batches(batches: Iterable, *, index, n: int, text_cols: list[str],
                          tokenize: str = NORMALIZE_FIRST, id_col: str = "item_id") -> Iterator:
    """``mapInArrow`` body: (item_id, text columns...) -> (item_id, _bench_key, _ngram_hash,
    _ngram_pos, matched_ngram), one row per matched gram and benchmark item. ``index`` is
    ``(sorted hashes, keys)`` or a Spark broadcast of it."""
    import pyarrow as pa

    index_hash, index_key = getattr(index, "value", index)
    for batch in batches:
        row, key, h, pos, grams = match_batch([batch.column(c) for c in text_cols], index_hash, index_key, n,
                                              tokenize)
        yield pa.RecordBatch.from_arrays(
            [batch.column(id_col).take(pa.array(row, pa.int64())), pa.array(key, pa.int32()),
             pa.array(h, pa.int64()), pa.array(pos, pa.int64()), pa.array(grams, pa.string())],
            names=["item_id", "_bench_key", "_ngram_hash", "_ngram_pos", "matched_ngram"])


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
