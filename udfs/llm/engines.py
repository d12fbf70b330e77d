"""One engine per Python worker process, cached by the hash of its config (ARCHITECTURE.md §6)."""
from __future__ import annotations

import gc
import logging
import os
import sys
from collections import Counter

from udfs.keys import stable_hash
from udfs.llm.base import Engine

log = logging.getLogger(__name__)

# Set by the driver on the generation UDF only (jobs.common.llm): Spark keeps one pool of Python
# workers per distinct environment, so generation tasks of one model config reuse the worker
# that already holds its engine, and other UDFs (render, parse) never take that worker.
POOL_ENV = "NR_ENGINE_POOL"

_ENGINES: dict[str, Engine] = {}
_CONSTRUCTIONS: Counter = Counter()


def config_hash(model_cfg: dict) -> str:
    return stable_hash(model_cfg)


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:
        return False
    return True


def resolve_engine(model_cfg: dict) -> str:
    engine = model_cfg.get("engine", "auto")
    if engine != "auto":
        return engine
    if vllm_available():
        return "vllm"
    log.warning("vllm cannot be imported here; using the transformers engine")
    return "transformers"


def build_engine(model_cfg: dict) -> Engine:
    engine = resolve_engine(model_cfg)
    if engine == "scripted":
        from udfs.llm.scripted import ScriptedEngine

        return ScriptedEngine(model_cfg)
    if engine == "transformers":
        from udfs.llm.hf_engine import TransformersEngine

        return TransformersEngine(model_cfg)
    if engine == "vllm":
        from udfs.llm.vllm_engine import VLLMEngine

        return VLLMEngine(model_cfg)
    if engine == "openai":
        from udfs.llm.openai_engine import OpenAIEngine

        return OpenAIEngine(model_cfg)
    raise ValueError(f"unknown engine {engine!r}")


def get_engine(model_cfg: dict) -> Engine:
    key = config_hash(model_cfg)
    eng = _ENGINES.get(key)
    if eng is None:
        eng = build_engine(model_cfg)
        _ENGINES[key] = eng
        _CONSTRUCTIONS[key] += 1
        # Spark's daemon runs a full gc.collect() after every task; the engine's objects (a
        # model's, many) live as long as the worker, so later collections skip them.
        gc.collect()
        gc.freeze()
        # stderr: a Spark Python worker has no logging handler, and its stderr reaches the
        # executor's log (the console in local mode), so a second build shows up.
        msg = (f"nr: built {resolve_engine(model_cfg)} engine {key} ({model_cfg.get('label') or model_cfg.get('model')})"
               f" in pid {os.getpid()}, pool {os.environ.get(POOL_ENV, '-')}")
        log.info(msg)
        print(msg, file=sys.stderr, flush=True)
    return eng


def discard_engine(model_cfg: dict, why: str = "") -> None:
    """Forget the engine built for ``model_cfg`` and shut it down: a call broke it (or outlived
    its deadline), so the next ``get_engine`` builds a fresh one, in this task or in Spark's
    retry of it in this worker."""
    key = config_hash(model_cfg)
    eng = _ENGINES.pop(key, None)
    if eng is None:
        return
    msg = f"nr: discarding engine {key} ({model_cfg.get('label') or model_cfg.get('model')}) in pid {os.getpid()}: {why}"
    log.warning(msg)
    print(msg, file=sys.stderr, flush=True)
    close = getattr(eng, "close", None)
    if close is not None:
        try:
            close()
        except Exception as e:  # a broken engine may not shut down cleanly; it is dropped either way
            log.warning("closing the discarded engine: %s", e)


def engine_constructions() -> dict[str, int]:
    """Engines built in this process, per config hash (tests use it to prove one per worker)."""
    return dict(_CONSTRUCTIONS)
