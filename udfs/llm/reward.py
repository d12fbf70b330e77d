"""Executor side of reward-model scoring: Arrow batches of (keys, messages) in, one scalar
reward per row out. The engine comes from the same registry as generation
(``udfs.llm.engines.get_engine``) and must have a ``reward(conversations) -> list[float]``
method: vLLM's pooling runner (``engine_kwargs: {runner: pooling}``, ``LLM.reward``) and the
scripted engine have one. A row whose reward fails gets ``reward_status = reward_error``."""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import pandas as pd

from udfs.llm.base import FatalEngineError
from udfs.llm.generate import _messages

REWARD_FIELDS = "reward double, reward_status string, reward_error string"


def _rewards(engine, convs: list) -> list[tuple]:
    try:
        values = engine.reward(convs)
    except FatalEngineError:
        raise
    except Exception as e:
        if len(convs) == 1:
            return [(None, "reward_error", f"{type(e).__name__}: {e}"[:2000])]
        return [r for c in convs for r in _rewards(engine, [c])]
    out = []
    for v in values:
        v = None if v is None else float(v)
        out.append((v, "ok", None) if v is not None and math.isfinite(v) else (None, "reward_error", f"reward {v!r}"))
    return out


def reward_batches(batches: Iterator[pd.DataFrame], *, model_cfg: dict, key_cols: Sequence[str],
                   messages_col: str = "messages") -> Iterator[pd.DataFrame]:
    from udfs.llm.engines import get_engine
    from udfs.llm.gpu import prepare_task_gpus

    engine = None
    for pdf in batches:
        if pdf.empty:
            continue
        if engine is None:
            engine = get_engine(prepare_task_gpus(model_cfg))
            if not hasattr(engine, "reward"):
                raise TypeError(f"engine {type(engine).__name__} cannot score rewards; use vllm with "
                                "engine_kwargs.runner=pooling, or scripted")
        size = int(model_cfg.get("batch_size") or 8)
        records = pdf.to_dict("records")
        rows = []
        for start in range(0, len(records), size):
            part = records[start : start + size]
            for r, (v, status, err) in zip(part, _rewards(engine, [_messages(x[messages_col]) for x in part])):
                rows.append({**{k: r[k] for k in key_cols}, "reward": v, "reward_status": status, "reward_error": err})
        yield pd.DataFrame(rows, columns=list(key_cols) + ["reward", "reward_status", "reward_error"])
