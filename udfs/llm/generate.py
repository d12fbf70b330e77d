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

import contextlib
import json
import logging
from typing import Iterator, Optional, Sequence

import numpy as np
import pandas as pd

from udfs.echo import instruction_bigrams, prompt_overlap
from udfs.llm.base import Completion, FatalEngineError, Sampling
from udfs.llm.engines import discard_engine, get_engine
from udfs.llm.gpu import prepare_task_gpus
from udfs.llm.watchdog import deadline, default_timeout_s, task_place

log = logging.getLogger(__name__)

OUTPUT_FIELDS = (
    "sample_idx int, model string, text string, prompt_tokens int, completion_tokens int, "
    "finish_reason string, first_token_logprobs map<string,double>, error string, prompt_overlap double"
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


class EngineSlot:
    """A task's engine: built on first use (a task over an empty partition loads no model),
    every call under a deadline (``udfs.llm.watchdog``), and discarded after a call that broke
    it, so that the next call (or Spark's retry of the task in this worker) gets a fresh one."""

    def __init__(self, model_cfg: dict, call_timeout_s: Optional[float] = None, rows: int = 1):
        self.model_cfg = model_cfg
        self.call_timeout_s = call_timeout_s
        self.label = model_cfg.get("label") or model_cfg.get("model")
        self._prepared: Optional[dict] = None
        self._engine = None
        self.rebuilds = 0
        # Bisecting a call around one bad row breaks the engine once per level: log2(rows) + 1.
        self.max_rebuilds = 3 * max(1, int(np.ceil(np.log2(rows + 1))))

    @property
    def engine(self):
        if self._engine is None:
            if self._prepared is None:
                self._prepared = prepare_task_gpus(self.model_cfg)
            self._engine = get_engine(self._prepared)
        return self._engine

    def discard(self, why: BaseException) -> None:
        """Never use this engine again (``udfs.llm.engines.discard_engine``)."""
        if self._engine is None:
            return
        self._engine = None
        discard_engine(self._prepared, f"{type(why).__name__}: {why}"[:500])

    def timeout_s(self, convs: Sequence[list[dict]], samplings: Sequence[Sampling]) -> float:
        if self.call_timeout_s:
            return float(self.call_timeout_s)
        return default_timeout_s(sum(prompt_chars(c) for c in convs),
                                 sum(int(s.max_tokens) * max(1, int(s.n)) for s in samplings))

    def describe(self, engine, convs: Sequence, seconds: float) -> str:
        stage, chunk = task_place()
        in_flight = len(convs)
        probe = getattr(engine, "in_flight", None)
        if probe is not None:
            with contextlib.suppress(Exception):
                in_flight = int(probe())
        return (f"[{stage}] chunk {chunk}: a {self.label} call of {len(convs)} conversation(s) exceeded its "
                f"{seconds:g} s deadline with {in_flight} request(s) in flight (llm.call_timeout_s sets it); "
                f"the task fails and a re-run resumes after the last committed chunk")

    def chat(self, convs: Sequence[list[dict]], samplings: Sequence[Sampling]) -> list[list[Completion]]:
        engine = self.engine
        seconds = self.timeout_s(convs, samplings)
        with deadline(seconds, lambda: self.describe(engine, convs, seconds)):
            return engine.chat(convs, samplings)

    def broken_by(self, error: BaseException) -> bool:
        """Whether the failed call left the engine unusable. An engine that keeps state across
        calls says so itself (vLLM: requests still queued after a step raised); engines without
        such state (one HTTP request or one ``generate`` per call) are never broken by a row."""
        probe = getattr(self._engine, "broken_by", None)
        return bool(probe(error)) if probe is not None else False


def _chat_rows(slot: EngineSlot, convs, samplings) -> list[list[Completion]]:
    try:
        return slot.chat(convs, samplings)
    except FatalEngineError as e:
        slot.discard(e)
        raise
    except MemoryError as e:
        slot.discard(e)
        raise FatalEngineError(f"out of memory: {e}") from e
    except Exception as batch_error:  # find the row(s) at fault instead of failing them all
        if slot.broken_by(batch_error):
            # Never call a broken engine again: vLLM would spin on the failed call's requests.
            slot.discard(batch_error)
            slot.rebuilds += 1
            if slot.rebuilds > slot.max_rebuilds:
                raise FatalEngineError(
                    f"the {slot.label} engine broke on {slot.rebuilds} calls in this task (more than bisecting "
                    f"around a few bad rows needs); last error: {type(batch_error).__name__}: {batch_error}"
                ) from batch_error
        if len(convs) == 1:
            n = max(1, samplings[0].n)
            msg = f"{type(batch_error).__name__}: {batch_error}"[:2000]
            return [[Completion("", 0, 0, "error", error=msg) for _ in range(n)]]
        half = len(convs) // 2  # bisect: a bad row costs log2(call) retried calls, not one call per row
        return _chat_rows(slot, convs[:half], samplings[:half]) + _chat_rows(slot, convs[half:], samplings[half:])


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
    call_timeout_s: Optional[float] = None,
    echo: bool = False,
) -> Iterator[pd.DataFrame]:
    """With ``prompt`` (a prompt name), the conversations are rendered here from the row's
    fields instead of read from ``messages_col``; with ``parser``, every completion is parsed
    here too, into ``PARSED_PREFIX`` columns. One Python pass per chunk instead of three
    (render, generate, parse UDFs), each of which cost a round trip of the rows through Arrow.

    With ``routes`` (``{route: {"prompt": name, "sampling": dict}}``), each row's prompt and
    sampling are those of its ``route_col`` value: rows of several kinds share one pass and
    one engine call (a second concurrent generation task in the same job would start a second
    worker, and with it a second engine).

    Every engine call runs under a deadline (``call_timeout_s``, else one derived from the
    tokens it asks for), and an engine that a call broke is rebuilt (``EngineSlot``).

    With ``echo``, ``prompt_overlap`` is how much of each completion (of its parsed question,
    for the question parser) only repeats the prompt template's own words (``udfs.echo``);
    null otherwise."""
    from udfs.llm.prompts import load_prompt

    label = model_cfg.get("label") or model_cfg.get("model")
    base = Sampling.from_dict(sampling)
    template = load_prompt(prompt) if prompt else None
    if routes:
        templates = {k: load_prompt(v["prompt"]) for k, v in routes.items()}
        bases = {k: Sampling.from_dict(v["sampling"]) for k, v in routes.items()}
    if echo and not (prompt or routes):
        raise ValueError("echo needs the prompt rendered here (prompt or routes)")
    slot = None
    cols = list(key_cols) + list(passthrough) + [f.strip().split(" ")[0] for f in OUTPUT_FIELDS.split(", ")]
    for pdf in _gathered(batches):
        if slot is None:
            slot = EngineSlot(model_cfg, call_timeout_s, len(pdf))
        records = pdf.to_dict("records")
        if routes:
            convs = [templates[r[route_col]].render(r) for r in records]
            samplings = [bases[r[route_col]] for r in records]
        else:
            convs = [template.render(r) if template else _messages(r[messages_col]) for r in records]
            samplings = [_sampling(base, r.get(overrides_col)) if overrides_col else base for r in records]
        order = length_order(convs)
        per_call = prompts_per_call(slot.engine, model_cfg, len(records))
        rows = []
        for start in range(0, len(order), per_call):
            idx = order[start : start + per_call]
            results = _chat_rows(slot, [convs[i] for i in idx], [samplings[i] for i in idx])
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
        overlap = [None] * len(out)
        if echo:
            names = out[route_col].map(lambda k: routes[k]["prompt"]) if routes else [prompt] * len(out)
            # the text a reader gets: the parsed question for the question parser, else the completion
            content = out[PARSED_PREFIX + "question"] if parser == "question" else out["text"]
            overlap = [prompt_overlap(t, instruction_bigrams(n)) for t, n in zip(content, names)]
        out["prompt_overlap"] = pd.Series(overlap, dtype="object", index=out.index)
        yield out


PARSED_PREFIX = "_p_"


def parsed_columns(texts: pd.Series, parser: str) -> pd.DataFrame:
    """The named parser's fields for each text, as ``PARSED_PREFIX``-named columns."""
    from udfs.parse_udf import parse_frame

    return parse_frame(texts, parser).add_prefix(PARSED_PREFIX)
