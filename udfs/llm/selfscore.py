"""Self-score: logp("Yes") - logp("No") from the first generated token's top-k logprobs.

``self_score`` gives the score and a status from ``STATUSES``:

* ``ok``: Yes or No (in any tokenizer spelling) is among the top k;
* ``no_logprobs``: the engine returned no usable logprobs (none, empty, or only NaN/+inf);
* ``no_verdict``: logprobs came back but neither Yes nor No is among them. The difference
  would be ``floor - floor = 0.0``, which reads as an undecided judgment; it is no judgment
  at all, so the score is None.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

YES = {"yes"}
NO = {"no"}
STATUSES = frozenset({"ok", "no_logprobs", "no_verdict"})


def _logsumexp(values: list[float]) -> float:
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def _usable(lp: Any) -> Optional[float]:
    """A log-probability as float: None for non-numbers, NaN and +inf; -inf stays (probability
    0); a positive value (float noise around log 1) is read as 0, so every score is finite."""
    if isinstance(lp, bool) or not isinstance(lp, (int, float)):
        return None
    lp = float(lp)
    return None if math.isnan(lp) or lp == math.inf else min(lp, 0.0)


def _word(tok: Any) -> Optional[str]:
    if not isinstance(tok, str):
        return None
    return tok.replace("▁", " ").replace("Ġ", " ").strip().lower()


def _variant_logprob(logprobs: Mapping[Any, Any], words: set[str]) -> Optional[float]:
    # Tokenizers spell the same word several ways ("Yes", " Yes", "yes", "YES", "▁Yes", "ĠYes");
    # each is a separate token, so their probabilities add. A -inf entry has probability 0.
    hits = [lp for tok, v in logprobs.items()
            if _word(tok) in words and (lp := _usable(v)) is not None and lp != -math.inf]
    # min: duplicated entries can sum past probability 1; a log-probability stays <= 0
    return min(_logsumexp(hits), 0.0) if hits else None


def self_score(first_token_logprobs: Optional[Mapping[Any, Any]], floor: float = -30.0) -> tuple[Optional[float], str]:
    """(logp(Yes) - logp(No), status); a word outside the top k counts as ``floor``.

    >>> s, status = self_score({"Yes": -0.1, " yes": -2.0, "No": -2.5}); (round(s, 3), status)
    (2.539, 'ok')
    >>> self_score({"Maybe": -0.1}, floor=-20.0)
    (None, 'no_verdict')
    >>> self_score({}), self_score({"Yes": float("nan")})
    ((None, 'no_logprobs'), (None, 'no_logprobs'))
    """
    if not first_token_logprobs:
        return None, "no_logprobs"
    if not any(_usable(v) is not None for v in first_token_logprobs.values()):
        return None, "no_logprobs"
    y = _variant_logprob(first_token_logprobs, YES)
    n = _variant_logprob(first_token_logprobs, NO)
    if y is None and n is None:
        return None, "no_verdict"
    return (floor if y is None else max(y, floor)) - (floor if n is None else max(n, floor)), "ok"


def yes_no_score(first_token_logprobs: Optional[Mapping[Any, Any]], floor: float = -30.0) -> Optional[float]:
    """The score of ``self_score``, None when there is no verdict.

    >>> round(yes_no_score({"Yes": -0.1, "No": -2.5}), 3)
    2.4
    """
    return self_score(first_token_logprobs, floor)[0]
