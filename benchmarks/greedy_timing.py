"""Shared by the generation benchmarks: greedy chat over a prompt set, timed, in fixed-size calls."""
from __future__ import annotations

import time


def time_greedy_chat(engine, conversations: list, batch_size: int, max_tokens: int) -> dict:
    """One untimed warm-up call, then every conversation through ``engine.chat`` in calls of
    ``batch_size``; returns wall seconds, token counts, generated tokens/s and the texts."""
    from udfs.llm.base import Sampling

    engine.chat(conversations[:2], [Sampling(temperature=0.0, max_tokens=4)] * min(2, len(conversations)))
    s = Sampling(temperature=0.0, max_tokens=max_tokens)
    texts, prompt_tokens, new_tokens = [], 0, 0
    t0 = time.perf_counter()
    for start in range(0, len(conversations), batch_size):
        part = conversations[start:start + batch_size]
        for [c] in engine.chat(part, [s] * len(part)):
            texts.append(c.text)
            prompt_tokens += c.prompt_tokens
            new_tokens += c.completion_tokens
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
            "tokens_per_s": new_tokens / wall, "prompt_tokens_per_s": prompt_tokens / wall, "texts": texts}
