"""Self-score: logp("Yes") - logp("No") from the first generated token's top-k logprobs."""
from __future__ import annotations

import math
from typing import Mapping, Optional

YES = {"yes"}
NO = {"no"}


def _logsumexp(values: list[float]) -> float:
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def _variant_logprob(logprobs: Mapping[str, float], words: set[str]) -> Optional[float]:
    # Tokenizers spell the same word several ways ("Yes", " Yes", "yes", "YES", "▁Yes", "ĠYes");
    # each is a separate token, so their probabilities add.
    hits = [lp for tok, lp in logprobs.items()
            if tok is not None and tok.replace("▁", " ").replace("Ġ", " ").strip().lower() in words
            and lp is not None and not math.isnan(lp)]
    return _logsumexp(hits) if hits else None


def yes_no_score(first_token_logprobs: Optional[Mapping[str, float]], floor: float = -30.0) -> Optional[float]:
    """logp(Yes) - logp(No); a word outside the top k counts as ``floor``. None without logprobs.

    >>> round(yes_no_score({"Yes": -0.1, " yes": -2.0, "No": -2.5}), 3)
    2.539
    >>> yes_no_score({"Maybe": -0.1}, floor=-20.0)
    0.0
    """
    if not first_token_logprobs:
        return None
    y = _variant_logprob(first_token_logprobs, YES)
    n = _variant_logprob(first_token_logprobs, NO)
    return (floor if y is None else max(y, floor)) - (floor if n is None else max(n, floor))
