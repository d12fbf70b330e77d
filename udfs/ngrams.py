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

import functools
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
    spans = token_spans(arr, gaps=False)
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
    one, two, three = _short_tables()
    u16 = np.ndarray((len(pad) - 1,), dtype="<u2", buffer=pad, offset=0, strides=(1,))
    for length in range(32):
        sel = order[bounds[length]:bounds[length + 1]]
        if len(sel) == 0:
            continue
        p = starts[sel]
        if 1 <= length <= 3:  # two fifths of all tokens: a table holds the hash, or the state after 2 bytes
            if length == 1:
                out[sel] = one[pad[p]]
            elif length == 2:
                out[sel] = two[u16[p]]
            else:
                out[sel] = _avalanche(_byte_step(three[u16[p]], pad[p + 2]))
            continue
        h = np.full(len(sel), _P5 + _U(length), dtype=np.uint64)
        for j in range(length >> 3):
            h = _rotl(h ^ _xxh_round(np.zeros(len(sel), dtype=np.uint64), u64[p + 8 * j]), 27) * _P1 + _P4
        off = (length >> 3) << 3
        if length & 4:
            h = _rotl(h ^ (u32[p + off].astype(np.uint64) * _P1), 23) * _P2 + _P3
            off += 4
        for j in range(length & 3):
            h = _byte_step(h, pad[p + off + j])
        out[sel] = _avalanche(h)
    long_ = order[bounds[32]:]
    if len(long_):
        out[long_] = _xxh64_general(pad, u64, u32, starts[long_], lengths[long_])
    return out


def _byte_step(h: np.ndarray, byte: np.ndarray) -> np.ndarray:
    """xxh64's step for one of the last (length % 4) bytes."""
    return _rotl(h ^ (byte.astype(np.uint64) * _P5), 11) * _P1


@functools.lru_cache(maxsize=None)
def _short_tables() -> tuple:
    """xxh64 of every 1-byte and every 2-byte string, and xxh64's state after the first two
    bytes of a 3-byte string (indexed by the little-endian 16-bit value of the two bytes):
    2 KB and 1 MB, made once per process."""
    v = np.arange(1 << 16, dtype=np.uint64)
    lo, hi = v & _U(0xFF), v >> _U(8)
    one = _avalanche(_byte_step(np.full(256, _P5 + _U(1), dtype=np.uint64), v[:256]))
    two = _avalanche(_byte_step(_byte_step(np.full(len(v), _P5 + _U(2), dtype=np.uint64), lo), hi))
    three = _byte_step(_byte_step(np.full(len(v), _P5 + _U(3), dtype=np.uint64), lo), hi)
    return one, two, three


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
    """The tokens of a batch of texts -- ``tokens(text)`` of every text, in order -- as byte
    spans of ``buf``, with the one thing ``split_first`` needs of the raw tokens: ``gap`` marks
    a token that follows a punctuation-only raw token of its text (a "" of ``raw_tokens``)."""

    buf: np.ndarray  # uint8: the texts lower-cased, ASCII punctuation deleted, concatenated
    text: np.ndarray  # int64 per token: the index of its text in the batch
    start: np.ndarray  # int64 byte offsets in buf
    end: np.ndarray
    gap: Optional[np.ndarray]  # bool per token; None when not asked for


def token_spans(texts, gaps: bool = True) -> TokenSpans:
    """Normalize and split a batch of texts over its UTF-8 bytes: ASCII lower-case (Arrow),
    then in numpy the ASCII punctuation bytes deleted (no byte of a multi-byte character is
    ASCII, so this is exactly ``normalize`` per character) and the tokens found as the runs of
    bytes that are not whitespace (the ASCII whitespace bytes and the bytes of the multi-byte
    whitespace characters of ``str.split``). Punctuation goes first because it never touches
    whitespace: a raw token that keeps a byte is one token of the normalized text, one that
    keeps none leaves only a ``gap`` (found when ``gaps``, for ``split_first``). A null text
    has no token."""
    import pyarrow as pa
    import pyarrow.compute as pc

    s = pc.ascii_lower(pc.fill_null(pc.cast(texts, pa.string()), "")).cast(pa.large_string())
    if isinstance(s, pa.ChunkedArray):
        s = s.combine_chunks()
    n = len(s)
    raw_offsets = np.frombuffer(s.buffers()[1], dtype=np.int64)[s.offset: s.offset + n + 1]
    lo, hi = (int(raw_offsets[0]), int(raw_offsets[-1])) if n else (0, 0)
    data = s.buffers()[2]
    raw_buf = (np.frombuffer(data, dtype=np.uint8)[lo:hi] if data is not None and hi > lo
               else np.zeros(0, dtype=np.uint8))
    raw_offsets = raw_offsets - lo
    punct = np.flatnonzero(_punctuation(raw_buf))
    buf = np.delete(raw_buf, punct) if len(punct) else raw_buf
    punct_before = np.searchsorted(punct, raw_offsets)  # (the few needles into the many)
    offsets = raw_offsets - punct_before
    space = _whitespace(buf)
    # Tokens are the runs of non-whitespace bytes within a text: their edges are where the
    # whitespace flag changes (with whitespace assumed around the batch), a start then an end,
    # plus, where two texts meet inside a run, an end and a start at that offset.
    flag = np.ones(len(buf) + 2, dtype=bool)
    flag[1:-1] = space
    edges = np.flatnonzero(flag[1:] != flag[:-1])
    inner = np.unique(offsets[(offsets > 0) & (offsets < len(buf))])  # (an empty text repeats an offset)
    cut = inner[~space[inner - 1] & ~space[inner]]
    if len(cut):
        edges = np.insert(edges, np.repeat(np.searchsorted(edges, cut), 2), np.repeat(cut, 2))
    start, end = edges[0::2], edges[1::2]
    # (searchsorted with the few needles into the many: texts into tokens)
    text = np.repeat(np.arange(n, dtype=np.int64), np.diff(np.searchsorted(start, offsets)))
    return TokenSpans(buf, text, start, end, _gaps(punct, punct_before, offsets, space, start, text) if gaps else None)


def _gaps(punct: np.ndarray, punct_before: np.ndarray, offsets: np.ndarray, space: np.ndarray, start: np.ndarray,
          text: np.ndarray) -> np.ndarray:
    """``TokenSpans.gap``: a run of punctuation bytes of one text that was a whole raw token
    (whitespace or its text's edge on both sides) marks the next token of that text. Over the
    punctuation bytes only, a few per cent of the batch."""
    gap = np.zeros(len(start), dtype=bool)
    if len(punct) == 0 or len(start) == 0:
        return gap
    p_text = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(punct_before))
    new = np.ones(len(punct), dtype=bool)
    new[1:] = (np.diff(punct) != 1) | (p_text[1:] != p_text[:-1])
    first = np.flatnonzero(new)
    t = p_text[first]
    at = punct[first] - first  # in buf, where the run was: the byte after it, or its text's end
    last = len(space) - 1
    alone = (((at == offsets[t]) | space[np.clip(at - 1, 0, last)])
             & ((at == offsets[t + 1]) | space[np.minimum(at, last)]))
    at, t = at[alone], t[alone]
    k = np.searchsorted(start, at)  # the next token, if it is of the same text
    ok = k < len(start)
    k, t = k[ok], t[ok]
    gap[k[text[k] == t]] = True
    return gap


def _punctuation(buf: np.ndarray) -> np.ndarray:
    """The ASCII punctuation bytes of lower-cased text (``string.punctuation``: 0x21-0x2F,
    0x3A-0x40, 0x5B-0x60, 0x7B-0x7E; with no upper-case letter left the middle two ranges are
    one), by range compares: a 256-entry table lookup costs several times more per byte."""
    u8 = np.uint8
    return (((buf - u8(0x21)) < u8(15)) | ((buf - u8(0x3A)) < u8(0x61 - 0x3A))
            | ((buf - u8(0x7B)) < u8(4)))


def _whitespace(buf: np.ndarray) -> np.ndarray:
    """The bytes ``str.split`` splits on: ASCII 0x09-0x0D and 0x1C-0x20, and every byte of a
    multi-byte whitespace character (U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029,
    U+202F, U+205F, U+3000)."""
    u8 = np.uint8
    space = ((buf - u8(0x09)) < u8(5)) | ((buf - u8(0x1C)) < u8(5))
    lead = np.flatnonzero(buf >= u8(0xC2))  # the lead bytes of non-ASCII characters, then the few candidates
    b0 = buf[lead]
    lead = lead[(b0 == 0xC2) | ((b0 >= 0xE1) & (b0 <= 0xE3))]
    if len(lead) == 0:
        return space
    last = len(buf) - 1  # (valid UTF-8: a three-byte lead has its two bytes, a two-byte one reads b2 unused)
    b0, b1, b2 = buf[lead], buf[np.minimum(lead + 1, last)], buf[np.minimum(lead + 2, last)]
    two = (b0 == 0xC2) & ((b1 == 0x85) | (b1 == 0xA0))
    three = (((b0 == 0xE1) & (b1 == 0x9A) & (b2 == 0x80))
             | ((b0 == 0xE2) & (b1 == 0x80) & (((b2 >= 0x80) & (b2 <= 0x8A)) | (b2 == 0xA8) | (b2 == 0xA9)
                                              | (b2 == 0xAF)))
             | ((b0 == 0xE2) & (b1 == 0x81) & (b2 == 0x9F))
             | ((b0 == 0xE3) & (b1 == 0x80) & (b2 == 0x80)))
    for k in range(3):
        if k < 2:
            space[lead[two] + k] = True
        space[lead[three] + k] = True
    return space


class _PrefixFold:
    """``fold_windows`` for many windows of one token-hash array in O(1) per window: with
    ``S[j] = sum_{m<j} t[m] * B^-m`` (B is odd, so invertible mod 2^64; numpy's uint64
    arithmetic wraps mod 2^64), ``t[f] * B^(w-1) + ... + t[f+w-1] = B^(f+w-1) * (S[f+w] - S[f])``,
    the same value the fold computes step by step."""

    _INV = _U(pow(int(_FOLD), -1, 1 << 64))
    _CACHED = 1 << 20  # powers kept per process (16 MB): every batch of questions needs the same ones
    _powers = (np.ones(1, dtype=np.uint64), np.ones(1, dtype=np.uint64))  # B^k, B^-k

    def __init__(self, token_hash: np.ndarray):
        m = len(token_hash)
        self.pw, inv = self._powers
        if len(self.pw) <= m:
            k = np.arange(max(m + 1, min(2 * len(self.pw), self._CACHED)), dtype=np.uint64)
            self.pw = np.cumprod(np.where(k > 0, _FOLD, _U(1)), dtype=np.uint64)
            inv = np.cumprod(np.where(k > 0, self._INV, _U(1)), dtype=np.uint64)
            if len(k) <= self._CACHED:
                type(self)._powers = (self.pw, inv)
        self.s = np.zeros(m + 1, dtype=np.uint64)
        np.multiply(token_hash, inv[:m], out=self.s[1:])
        np.cumsum(self.s[1:], out=self.s[1:])

    def windows(self, first: np.ndarray, width, lead: Optional[np.ndarray] = None) -> np.ndarray:
        last = first + width
        h = self.pw[last - 1]
        h *= self.s[last] - self.s[first]
        if lead is not None:
            h += lead * self.pw[width]  # B^w: powers depend only on the exponent
        return _fmix64(h).view(np.int64)


@dataclass
class GramChunk:
    """Some of a batch's grams: their text, position (index of the first token among its
    text's tokens), hash, and the token range they cover."""

    text: np.ndarray
    pos: np.ndarray
    hash: np.ndarray  # int64, as gram_hash
    first: np.ndarray  # index into the batch's tokens (TokenSpans)
    width: np.ndarray


def batch_grams(texts, n: int = 13, tokenize: str = NORMALIZE_FIRST, max_grams: int = 1 << 20):
    """``(spans, chunks)``: the grams of every text of an Arrow batch -- what
    ``positioned_ngrams`` gives text by text, hashed as ``gram_hash`` -- in chunks of at most
    ``max_grams``, so a 200,000-character text is hashed a bounded slice at a time.

    Token hashes are xxh64 over byte windows (``xxh64_windows``) and grams fold them
    (``_PrefixFold``): no Python object per token or per gram.
    """
    if tokenize not in TOKENIZATIONS:
        raise ValueError(f"tokenize must be one of {TOKENIZATIONS}, not {tokenize!r}")
    spans = token_spans(texts, gaps=tokenize == SPLIT_FIRST)
    th = xxh64_windows(spans.buf, spans.start, spans.end - spans.start)
    count = np.bincount(spans.text, minlength=len(texts))
    first_of = np.cumsum(count) - count
    fold = _PrefixFold(th)

    def chunks():
        # short texts (1 .. n-1 tokens): one whole-sequence gram each
        short = np.flatnonzero((count > 0) & (count < n))
        for lo in range(0, len(short), max_grams):
            t = short[lo:lo + max_grams]
            first, width = first_of[t], count[t]
            yield GramChunk(t, np.zeros(len(t), dtype=np.int64),
                            fold.windows(first, width, lead=np.full(len(t), _WHOLE_TOKEN, dtype=np.uint64)),
                            first, width)
        # n-grams: a window may start at a token with n - 1 tokens of its text after it
        long_ = np.flatnonzero(count >= n)
        starts = _ragged_arange(first_of[long_], count[long_] - (n - 1))
        if tokenize == SPLIT_FIRST and len(starts):  # no punctuation-only raw token inside the window
            gaps = np.concatenate(([0], np.cumsum(spans.gap)))
            starts = starts[gaps[starts + n] == gaps[starts + 1]]
        for lo in range(0, len(starts), max_grams):
            g = starts[lo:lo + max_grams]
            t = spans.text[g]
            width = np.broadcast_to(np.int64(n), g.shape)
            yield GramChunk(t, g - first_of[t], fold.windows(g, n), g, width)

    return spans, chunks()


def gram_text(spans: TokenSpans, first: int, width: int) -> str:
    """The displayed gram: its tokens joined by single spaces (``gram_texts`` for many)."""
    b = spans.buf
    return " ".join(bytes(b[spans.start[k]:spans.end[k]]).decode("utf-8") for k in range(first, first + width))


def _ragged_arange(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``starts[i], ..., starts[i] + lengths[i] - 1`` for every i, concatenated."""
    ends = np.cumsum(lengths)
    return np.repeat(starts - (ends - lengths), lengths) + np.arange(int(ends[-1]) if len(ends) else 0)


def gram_texts(spans: TokenSpans, first: np.ndarray, width: np.ndarray):
    """``gram_text`` of many grams as one Arrow string array, built over the bytes: every
    gram's token bytes gathered from ``buf`` with a space after each token but its last. A
    matched item holds tens of matched grams of 13 tokens, so a Python string per token
    (``gram_text``) cost more than finding the matches."""
    import pyarrow as pa

    tok = _ragged_arange(np.asarray(first, dtype=np.int64), np.asarray(width, dtype=np.int64))
    length = spans.end[tok] - spans.start[tok]
    gram_end = np.cumsum(width) - 1  # the last token of each gram, in tok
    piece = length + 1  # the token and its separator ...
    piece[gram_end] -= 1  # ... which the gram's last token has not
    src = _ragged_arange(spans.start[tok], piece)
    ends = np.cumsum(piece)
    sep = np.ones(len(tok), dtype=bool)
    sep[gram_end] = False
    src[ends[sep] - 1] = len(spans.buf)  # a separator reads the space appended to buf
    data = np.append(spans.buf, np.uint8(_SPACE))[src]
    offsets = np.concatenate(([0], ends[gram_end])).astype(np.int64)
    return pa.LargeStringArray.from_buffers(len(gram_end), pa.py_buffer(offsets), pa.py_buffer(data)).cast(pa.string())


def match_batch(columns: list, index_hash: np.ndarray, index_key: np.ndarray, n: int = 13,
                tokenize: str = NORMALIZE_FIRST, max_grams: int = 1 << 20, all_texts: bool = True):
    """Every (row, benchmark item) n-gram match of a batch: ``(row, key, hash, pos, gram)``
    arrays, one entry per matched gram and benchmark item holding it. ``index_hash`` is the
    index's gram hashes sorted (int64), ``index_key`` their benchmark item keys. ``pos`` is
    ``column index << 32 | position``; ``gram`` the matched grams' texts, an Arrow string array.

    Without ``all_texts`` only the first match of each (row, benchmark item) -- least
    ``(pos, hash)`` -- carries its text, the others "": the contamination table keeps just
    that one, and a matched item holds tens of matched grams, whose texts would be most of
    what leaves Python. The first match of the item over any rows sharing its id is the first
    of its own row, so it always has its text.
    """
    hits = {k: [] for k in ("row", "key", "hash", "pos", "col", "first", "width")}
    bits = _bitmap(index_hash)
    spans_of = []
    for c, texts in enumerate(columns):
        spans, chunks = batch_grams(texts, n, tokenize, max_grams)
        spans_of.append(spans)
        for ch in chunks:
            maybe = np.flatnonzero(_in_bitmap(bits, ch.hash))
            # searched in hash order, so the probes walk the index forwards (several times faster
            # than probing it at random), then put back in gram order
            by_hash = maybe[np.argsort(ch.hash[maybe], kind="stable")]
            lo = np.searchsorted(index_hash, ch.hash[by_hash], side="left")
            span = np.searchsorted(index_hash, ch.hash[by_hash], side="right") - lo
            found = np.flatnonzero(span)
            if len(found) == 0:
                continue
            back = found[np.argsort(by_hash[found], kind="stable")]
            hit, lo, span = by_hash[back], lo[back], span[back]
            which = np.repeat(hit, span)  # a gram held by several benchmark items: one entry each
            entry = np.repeat(lo, span) + (np.arange(int(span.sum())) - np.repeat(np.cumsum(span) - span, span))
            for k, v in (("row", ch.text[which]), ("key", index_key[entry].astype(np.int32)),
                         ("hash", ch.hash[which]), ("pos", (np.int64(c) << _COL_SHIFT) | ch.pos[which]),
                         ("col", np.full(len(which), c, dtype=np.int64)), ("first", ch.first[which]),
                         ("width", ch.width[which])):
                hits[k].append(v)
    m = {k: np.concatenate(v) if v else np.zeros(0, dtype=np.int32 if k == "key" else np.int64)
         for k, v in hits.items()}
    if all_texts:
        need = np.arange(len(m["row"]))
    else:
        order = np.lexsort((m["hash"], m["pos"], m["key"], m["row"]))
        row, key = m["row"][order], m["key"][order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = (row[1:] != row[:-1]) | (key[1:] != key[:-1])
        need = order[first]
    return m["row"], m["key"], m["hash"], m["pos"], _hit_texts(spans_of, m["col"], m["first"], m["width"], need)


def _hit_texts(spans_of: list, col: np.ndarray, first: np.ndarray, width: np.ndarray, need: np.ndarray):
    """The texts of the hits ``need`` (indices), "" for the others: ``gram_texts`` once per
    column, over each distinct gram (column, first token) once."""
    import pyarrow as pa

    gram, at, inverse = np.unique((col[need] << 40) | first[need], return_index=True, return_inverse=True)
    one = need[at]  # a hit of each distinct gram, in (column, first token) order
    texts = [gram_texts(spans, first[sel], width[sel])
             for c, spans in enumerate(spans_of) if len(sel := one[col[one] == c])]
    take = np.full(len(col), len(gram), dtype=np.int64)
    take[need] = inverse
    return pa.concat_arrays(texts + [pa.array([""], pa.string())]).take(pa.array(take))


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
    _ngram_pos, matched_ngram), one row per matched gram and benchmark item; ``matched_ngram``
    is "" but on the first match of each (row, benchmark item) (``match_batch``). ``index`` is
    ``(sorted hashes, keys)`` or a Spark broadcast of it."""
    import pyarrow as pa

    index_hash, index_key = getattr(index, "value", index)
    for batch in batches:
        row, key, h, pos, grams = match_batch([batch.column(c) for c in text_cols], index_hash, index_key, n,
                                              tokenize, all_texts=False)
        yield pa.RecordBatch.from_arrays(
            [batch.column(id_col).take(pa.array(row, pa.int64())), pa.array(key, pa.int32()),
             pa.array(h, pa.int64()), pa.array(pos, pa.int64()), grams],
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
