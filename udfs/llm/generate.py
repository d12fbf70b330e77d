"""The executor side of generation: Arrow batches in, one row per (key, sample) out.

Built for ``mapInPandas``: the engine is built once per Python worker (``get_engine``).
A task's Arrow batches are gathered (up to ``GATHER_ROWS`` rows, in practice the whole
partition of a chunk) and sorted by prompt length, longest first. An engine that schedules
its own batches (vLLM's continuous batching, ``continuous_batching = True``) gets them in one
``chat`` call; any other engine gets calls of ``batch_size`` conversations (similar lengths
together: less padding). A row that fails gets an ``error`` value (a failed call is bisected
to find the rows at fault), and a ``FatalEngineError`` fails the task so Spark retries it.
"""
from __future__ import annotations

import json
import logging
from typing import Iterator, Optional, Sequence

import numpy as np
import pandas as pd

from udfs.llm.base import Completion, FatalEngineError, Sampling

log = logging.getLogger(__name__)

OUTPUT_FIELDS = (
    "sample_idx int, model string, text string, prompt_tokens int, completion_tokens int, "
    "finish_reason string, first_token_logprobs map<string,double>, error string"
)


def _messages(value) -> list[dict]:
    if value is None:
        return []
    if isinstance(value, str):
        return json.loads(value)
    out = []
    for m in list(value):
        m = dict(m) if not isinstance(m, dict) else m
        out.append({"role": m.get("role"), "content": m.get("content") or ""})
    return out


def _sampling(base: Sampling, override) -> Sampling:
    if override is None or (isinstance(override, float) and np.isnan(override)) or override == "":
        return base
    return base.merged(json.loads(override) if isinstance(override, str) else dict(override))


# Rows gathered from a task's Arrow batches before generating: bounds a worker's memory when a
# partition is large (a chunk's partitions are far smaller).
GATHER_ROWS = 8192


def _chat_rows(engine, convs, samplings) -> list[list[Completion]]:
    try:
        return engine.chat(convs, samplings)
    except FatalEngineError:
        raise
    except MemoryError as e:
        raise FatalEngineError(f"out of memory: {e}") from e
    except Exception as batch_error:  # find the row(s) at fault instead of failing them all
        if len(convs) == 1:
            n = max(1, samplings[0].n)
            msg = f"{type(batch_error).__name__}: {batch_error}"[:2000]
            return [[Completion("", 0, 0, "error", error=msg) for _ in range(n)]]
        half = len(convs) // 2  # bisect: a bad row costs log2(call) retried calls, not one call per row
        return _chat_rows(engine, convs[:half], samplings[:half]) + _chat_rows(engine, convs[half:], samplings[half:])


def prompt_chars(conv: list[dict]) -> int:
    return sum(len(m.get("content") or "") for m in conv)


def length_order(convs: Sequence[list[dict]]) -> list[int]:
    """Indices of ``convs``, longest prompt first (ties keep their order).

    >>> length_order([[{"content": "ab"}], [{"content": "abcd"}], [{"content": "cd"}]])
    [1, 0, 2]
    """
    return sorted(range(len(convs)), key=lambda i: -prompt_chars(convs[i]))


def prompts_per_call(engine, model_cfg: dict, rows: int) -> int:
    """How many conversations go into one ``chat`` call."""
    if getattr(engine, "continuous_batching", False):
        return max(1, rows)
    # An engine that sends a call's conversations concurrently (openai) says how many it
    # needs per call to keep its slots busy; a smaller call would wait on its slowest request.
    return max(int(model_cfg.get("batch_size") or 8), int(getattr(engine, "min_batch_size", 1) or 1))


def _gathered(batches: Iterator[pd.DataFrame], limit: int = GATHER_ROWS) -> Iterator[pd.DataFrame]:
    group, rows = [], 0
    for pdf in batches:
        if pdf.empty:
            continue
        group.append(pdf)
        rows += len(pdf)
        if rows >= limit:
            yield pd.concat(group, ignore_index=True) if len(group) > 1 else group[0]
            group, rows = [], 0
    if group:
        yield pd.concat(group, ignore_index=True) if len(group) > 1 else group[0]


def generate_batches(
    batches: Iterator[pd.DataFrame],
    *,
    model_cfg: dict,
    sampling: dict,
    key_cols: Sequence[str],
    messages_col: str = "messages",
    overrides_col: Optional[str] = None,
    passthrough: Sequence[str] = (),
    prompt: Optional[str] = None,
    parser: Optional[str] = None,
    route_col: Optional[str] = None,
    routes: Optional[dict] = None,
) -> Iterator[pd.DataFrame]:
    """With ``prompt`` (a prompt name), the conversations are rendered here from the row's
    fields instead of read from ``messages_col``; with ``parser``, every completion is parsed
    here too, into ``PARSED_PREFIX`` columns. One Python pass per chunk instead of three
    (render, generate, parse UDFs), each of which cost a round trip of the rows through Arrow.

    With ``routes`` (``{route: {"prompt": name, "sampling": dict}}``), each row's prompt and
    sampling are those of its ``route_col`` value: rows of several kinds share one pass and
    one engine call (a second concurrent generation task in the same job would start a second
    worker, and with it a second engine)."""
    from udfs.llm.engines import get_engine
    from udfs.llm.gpu import prepare_task_gpus
    from udfs.llm.prompts import load_prompt

    label = model_cfg.get("label") or model_cfg.get("model")
    base = Sampling.from_dict(sampling)
    template = load_prompt(prompt) if prompt else None
    if routes:
        templates = {k: load_prompt(v["prompt"]) for k, v in routes.items()}
        bases = {k: Sampling.from_dict(v["sampling"]) for k, v in routes.items()}
    engine = None
    cols = list(key_cols) + list(passthrough) + [f.strip().split(" ")[0] for f in OUTPUT_FIELDS.split(", ")]
    for pdf in _gathered(batches):
        if engine is None:
            # Built on the first row, not at task start: a task over an empty partition
            # (a selection that kept nothing) must not load a model.
            engine = get_engine(prepare_task_gpus(model_cfg))
        records = pdf.to_dict("records")
        if routes:
            convs = [templates[r[route_col]].render(r) for r in records]
            samplings = [bases[r[route_col]] for r in records]
        else:
            convs = [template.render(r) if template else _messages(r[messages_col]) for r in records]
            samplings = [_sampling(base, r.get(overrides_col)) if overrides_col else base for r in records]
        order = length_order(convs)
        per_call = prompts_per_call(engine, model_cfg, len(records))
        rows = []
        for start in range(0, len(order), per_call):
            idx = order[start : start + per_call]
            results = _chat_rows(engine, [convs[i] for i in idx], [samplings[i] for i in idx])
            for i, samples in zip(idx, results):
                r = records[i]
                for sample_idx, c in enumerate(samples):
                    row = {k: r[k] for k in key_cols}
                    row.update({p: r[p] for p in passthrough})
                    row.update(
                        sample_idx=sample_idx, model=label, text=c.text, prompt_tokens=int(c.prompt_tokens or 0),
                        completion_tokens=int(c.completion_tokens or 0), finish_reason=c.finish_reason,
                        first_token_logprobs=c.first_token_logprobs, error=c.error,
                    )
                    rows.append(row)
        out = pd.DataFrame(rows, columns=cols)
        out["sample_idx"] = out["sample_idx"].astype("int32")
        out["prompt_tokens"] = out["prompt_tokens"].astype("int32")
        out["completion_tokens"] = out["completion_tokens"].astype("int32")
        if parser:
            out = pd.concat([out, parsed_columns(out["text"], parser)], axis=1)
        yield out


PARSED_PREFIX = "_p_"


def parsed_columns(texts: pd.Series, parser: str) -> pd.DataFrame:
    """The named parser's fields for each text, as ``PARSED_PREFIX``-named columns."""
    from udfs.parse_udf import parse_frame

    return parse_frame(texts, parser).add_prefix(PARSED_PREFIX)
