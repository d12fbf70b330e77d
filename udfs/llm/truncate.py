"""Fitting a conversation into the model's context: the too-long rule every engine shares.

A prompt fits when its rendered token count (chat template and generation prompt included)
is at most ``budget`` = ``max_model_len`` minus the row's ``max_tokens``, so that the whole
answer has room. When it does not fit:

- ``mode="truncate"`` (default): the system message and every message but the last user
  message stay as they are; the last user message (where the document sits) keeps its head
  (two thirds) and its tail (one third) with ``CUT`` between them, as long as fits. The tail
  is kept because templates put their instructions after the document.
- ``mode="mark"``, or when even the empty last user message does not fit: the conversation
  is returned unchanged with ``too_long=True``; the engine does not generate it and the row
  gets ``finish_reason="too_long"``.

The cut is made on characters and checked with the engine's own token counter, so it works
with any tokenizer; a bisection keeps the number of counter calls small (about ten).
"""
from __future__ import annotations

from typing import Callable, Optional

CUT = "\n[...]\n"
_MAX_PROBES = 16


def cut_middle(text: str, keep: int) -> str:
    """``text`` reduced to ``keep`` characters: two thirds head, one third tail, ``CUT`` between.

    >>> cut_middle("abcdefghij", 6)
    'abcd\\n[...]\\nij'
    >>> cut_middle("abc", 10)
    'abc'
    """
    if keep >= len(text):
        return text
    keep = max(keep, 0)
    head = (2 * keep + 2) // 3
    tail = keep - head
    return text[:head] + CUT + (text[len(text) - tail:] if tail else "")


def _last_user(messages: list[dict]) -> Optional[int]:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user" and isinstance(messages[i].get("content"), str):
            return i
    return None


def fit_messages(messages: list[dict], count_tokens: Callable[[list[dict]], int], budget: int,
                 mode: str = "truncate") -> tuple[list[dict], bool, bool]:
    """Returns ``(messages, truncated, too_long)``; the input list is never modified.

    >>> words = lambda ms: sum(len(m["content"].split()) for m in ms)
    >>> msgs = [{"role": "system", "content": "be brief"},
    ...         {"role": "user", "content": " ".join(f"w{i}" for i in range(100))}]
    >>> fitted, truncated, too_long = fit_messages(msgs, words, 30)
    >>> truncated, too_long, words(fitted) <= 30, fitted[0] == msgs[0]
    (True, False, True, True)
    >>> fitted[1]["content"].startswith("w0 w1"), fitted[1]["content"].endswith("w99")
    (True, True)
    >>> fit_messages(msgs, words, 30, mode="mark")[1:]
    (False, True)
    >>> fit_messages(msgs, words, 1)[1:]
    (False, True)
    """
    if mode not in ("truncate", "mark"):
        raise ValueError(f"too_long mode must be 'truncate' or 'mark', got {mode!r}")
    n = count_tokens(messages)
    if n <= budget:
        return messages, False, False
    last = _last_user(messages)
    if mode == "mark" or budget <= 0 or last is None:
        return messages, False, True
    content = messages[last]["content"]

    def trial(keep: int) -> list[dict]:
        out = [dict(m) for m in messages]
        out[last]["content"] = cut_middle(content, keep)
        return out

    probes = 0

    def fits(keep: int) -> bool:
        nonlocal probes
        probes += 1
        return count_tokens(trial(keep)) <= budget

    if not fits(0):
        return messages, False, True
    # Invariant: fits(lo) and not fits(hi). Start from the proportional guess, then bisect
    # until the kept length is within 0.5% of the best (or the probe budget is spent).
    lo, hi = 0, len(content)
    guess = int(len(content) * budget / max(n, 1))
    if 0 < guess < hi:
        if fits(guess):
            lo = guess
        else:
            hi = guess
    while hi - lo > max(8, len(content) // 200) and probes < _MAX_PROBES:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return trial(lo), True, False
