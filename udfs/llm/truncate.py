"""Fitting a conversation into the model's context (the documented too-long rule).

Rule: when the rendered prompt has more than ``budget`` tokens (``max_model_len`` minus the
row's ``max_tokens``), the system message and all but the last user message stay as they
are, and the last user message keeps its head (two thirds) and its tail (one third) with
`` [...] `` between them, cut until the prompt fits. With ``mode='mark'`` (or when even an
empty last message does not fit) the row is not generated and gets ``finish_reason='too_long'``.
"""
from __future__ import annotations

from typing import Callable

CUT = "\n[...]\n"


def fit_messages(messages: list[dict], count_tokens: Callable[[list[dict]], int], budget: int,
                 mode: str = "truncate") -> tuple[list[dict], bool, bool]:
    """Returns (messages, truncated, too_long)."""
    n = count_tokens(messages)
    if n <= budget:
        return messages, False, False
    if mode != "truncate" or budget <= 0:
        return messages, False, True
    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last is None:
        return messages, False, True
    content = messages[last]["content"]
    keep = len(content)
    for _ in range(8):
        keep = int(keep * budget / max(n, 1) * 0.95) - len(CUT)
        if keep <= 0:
            break
        head, tail = (2 * keep) // 3, keep - (2 * keep) // 3
        cut = content[:head] + CUT + (content[-tail:] if tail else "")
        trial = [dict(m) for m in messages]
        trial[last]["content"] = cut
        n = count_tokens(trial)
        if n <= budget:
            return trial, True, False
    return messages, False, True
