"""The vLLM engine: a thin layer over vLLM's offline API (``LLM``, ``SamplingParams``, ``llm.chat``).

The same code runs on GPU and on vLLM's CPU build. Pure helpers (``to_sampling_kwargs``,
``completion_from_output``) carry the logic and are tested without vLLM.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Optional, Sequence

from udfs.llm.base import Completion, Conversation, FatalEngineError, Sampling
from udfs.llm.truncate import fit_messages

log = logging.getLogger(__name__)


def to_sampling_kwargs(s: Sampling) -> dict:
    kw: dict[str, Any] = {"n": s.n, "temperature": s.temperature, "top_p": s.top_p if s.temperature > 0 else 1.0,
                          "max_tokens": s.max_tokens}
    if s.seed is not None:
        kw["seed"] = s.seed
    if s.logprobs:
        kw["logprobs"] = s.logprobs
    if s.stop:
        kw["stop"] = list(s.stop)
    return kw


def first_token_logprobs(sample_output) -> Optional[dict[str, float]]:
    """{decoded token: logprob} for the first generated position, from vLLM's Logprob objects."""
    lps = getattr(sample_output, "logprobs", None)
    if not lps:
        return None
    first = lps[0]
    out = {}
    for token_id, lp in first.items():
        tok = getattr(lp, "decoded_token", None)
        tok = str(token_id) if tok is None else tok
        val = float(getattr(lp, "logprob", lp))
        out[tok] = max(out.get(tok, float("-inf")), val)
    return out


def completion_from_output(sample_output, prompt_tokens: int, want_logprobs: bool, truncated: bool) -> Completion:
    finish = getattr(sample_output, "finish_reason", None) or "stop"
    return Completion(
        text=sample_output.text,
        prompt_tokens=prompt_tokens,
        completion_tokens=len(getattr(sample_output, "token_ids", None) or []),
        finish_reason="length" if finish == "length" else "stop",
        first_token_logprobs=first_token_logprobs(sample_output) if want_logprobs else None,
        truncated_prompt=truncated,
    )


class VLLMEngine:
    def __init__(self, model_cfg: dict):
        from udfs.llm.models import resolve_model

        self.cfg = model_cfg
        self.name = model_cfg.get("label") or model_cfg["model"]
        self.max_model_len = int(model_cfg.get("max_model_len") or 2048)
        self.too_long = model_cfg.get("too_long", "truncate")
        on_gpu = bool(os.environ.get("CUDA_VISIBLE_DEVICES")) or _cuda_available()
        if not on_gpu:
            # CPU build: keep the engine core in this worker process and the KV cache modest,
            # so several engines (one per Spark Python worker) fit in memory.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        from vllm import LLM

        path = resolve_model(model_cfg["model"], "vllm", model_cfg.get("cache_dir"))
        dtype = model_cfg.get("dtype") or "auto"
        kwargs: dict[str, Any] = dict(model=path, max_model_len=self.max_model_len, seed=0,
                                      dtype=("float32" if dtype == "auto" and not on_gpu else dtype))
        if on_gpu:
            kwargs["tensor_parallel_size"] = int(model_cfg.get("tensor_parallel_size") or 1)
            kwargs["gpu_memory_utilization"] = float(model_cfg.get("gpu_memory_utilization") or 0.9)
        else:
            kwargs["enforce_eager"] = True
        kwargs.update(model_cfg.get("engine_kwargs") or {})
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def count_tokens(self, messages: list[dict]) -> int:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        return len(ids)

    def _params(self, s: Sampling):
        from vllm import SamplingParams

        kw = to_sampling_kwargs(s)
        if s.json_schema:
            try:
                from vllm.sampling_params import StructuredOutputsParams

                kw["structured_outputs"] = StructuredOutputsParams(json=s.json_schema)
            except ImportError:  # older vLLM
                from vllm.sampling_params import GuidedDecodingParams

                kw["guided_decoding"] = GuidedDecodingParams(json=s.json_schema)
        return SamplingParams(**kw)

    def chat(self, conversations: Sequence[Conversation], sampling: Sequence[Sampling]) -> list[list[Completion]]:
        results: list[Optional[list[Completion]]] = [None] * len(conversations)
        todo, convs, params, meta = [], [], [], []
        for i, (conv, s) in enumerate(zip(conversations, sampling)):
            fitted, truncated, too_long = fit_messages(list(conv), self.count_tokens,
                                                       self.max_model_len - s.max_tokens, self.too_long)
            if too_long:
                n = self.count_tokens(list(conv))
                results[i] = [Completion("", n, 0, "too_long") for _ in range(s.n)]
                continue
            todo.append(i)
            convs.append(fitted)
            params.append(self._params(s))
            meta.append((truncated, bool(s.logprobs)))
        if convs:
            try:
                outs = self.llm.chat(convs, sampling_params=params, use_tqdm=False)
            except (RuntimeError, MemoryError) as e:
                if "out of memory" in str(e).lower() or isinstance(e, MemoryError):
                    raise FatalEngineError(str(e)) from e
                raise
            for i, out, (truncated, want_lp) in zip(todo, outs, meta):
                n_prompt = len(out.prompt_token_ids or [])
                results[i] = [completion_from_output(o, n_prompt, want_lp, truncated) for o in out.outputs]
        return results  # type: ignore[return-value]


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False
