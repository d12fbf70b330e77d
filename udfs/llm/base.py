"""The engine protocol every LLM backend implements (ARCHITECTURE.md §6).

Executor side: nothing here imports ``jobs``. Configs arrive as plain dicts (the driver's
``ModelConfig.model_dump()`` / ``SamplingConfig.model_dump()``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Optional, Protocol, Sequence

Conversation = list  # list of {"role": "system" | "user" | "assistant", "content": str}


def merge_token_logprobs(pairs: Iterable[tuple[str, Optional[float]]]) -> dict[str, float]:
    """``{token text: logprob}`` from (text, logprob) pairs: a pair without a number (None,
    NaN) is skipped, and a text listed twice (two token ids that decode alike, such as byte
    fallbacks) gets the sum of their probabilities.

    >>> merge_token_logprobs([("Yes", -0.1), ("No", float("nan")), ("No", None), ("Yes", float("-inf"))])
    {'Yes': -0.1}
    >>> round(merge_token_logprobs([("a", math.log(0.25)), ("a", math.log(0.25))])["a"], 6) == round(math.log(0.5), 6)
    True
    """
    out: dict[str, float] = {}
    for text, lp in pairs:
        if lp is None or math.isnan(lp := float(lp)):
            continue
        if text in out:
            hi, lo = max(out[text], lp), min(out[text], lp)
            lp = hi if lo == float("-inf") else hi + math.log1p(math.exp(lo - hi))
        out[text] = lp
    return out


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    n: int = 1
    seed: Optional[int] = 0
    logprobs: Optional[int] = None  # top-k logprobs of the first generated token
    stop: tuple = ()
    json_schema: Optional[dict] = None

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "Sampling":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown sampling keys {sorted(unknown)}; known: {sorted(known)}")
        if "stop" in d and d["stop"] is not None:
            d["stop"] = tuple(d["stop"])
        return cls(**{k: v for k, v in d.items() if v is not None or k in ("seed", "logprobs", "json_schema")})

    def __hash__(self) -> int:
        # Engines group rows by their sampling; the generated hash would fail on the json_schema dict.
        return hash(tuple(json.dumps(v, sort_keys=True) if isinstance(v, dict) else v
                          for v in (getattr(self, f.name) for f in fields(self))))

    def merged(self, overrides: Optional[dict]) -> "Sampling":
        if not overrides:
            return self
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update({k: v for k, v in overrides.items() if v is not None})
        return Sampling.from_dict(d)


@dataclass
class Completion:
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # stop | length | too_long | error
    first_token_logprobs: Optional[dict[str, float]] = None  # token text -> logprob, top-k of the first token
    error: Optional[str] = None
    truncated_prompt: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    """``chat`` returns, per conversation, ``sampling.n`` completions (index = sample_idx)."""

    name: str
    max_model_len: int

    def chat(self, conversations: Sequence[Conversation], sampling: Sequence[Sampling]) -> list[list[Completion]]:
        ...


class FatalEngineError(RuntimeError):
    """The engine itself is broken (out of memory, dead server): fail the task so Spark retries it."""
