"""Benchmark definitions for decontamination and their loaders (driver side).

Built in, in their public file layouts under one folder (``decontaminate.benchmarks_dir``):

| name | file | text | id |
|---|---|---|---|
| ``math`` | ``math_test.csv`` (MATH test, openai/simple-evals) | ``Question`` | row number |
| ``gpqa`` | ``gpqa_diamond.csv`` (official GPQA CSV) | ``Question`` | ``Record ID`` |
| ``gpqa_main`` / ``gpqa_extended`` | ``gpqa_main.csv`` / ``gpqa_extended.csv`` (extended = all 546) | ``Question`` | ``Record ID`` |
| ``mmlu_pro`` | ``mmlu_pro/test.jsonl`` (TIGER-Lab MMLU-Pro test) | ``question`` | ``question_id`` |
| ``mmlu_stem`` | ``mmlu/<subject>_test.csv`` for the 19 lm-eval ``stem`` subjects | ``question`` | ``<subject>/<row>`` |

``BUILTIN`` (the default set) is math, gpqa (diamond), mmlu_pro and mmlu_stem; a config's
``decontaminate.benchmarks`` may name any of ``BUILTIN_BY_NAME`` or give full definitions.
"""
from __future__ import annotations

import hashlib
import json
from typing import Iterator, Optional

import numpy as np
import pandas as pd

from jobs.common.config import BUILTIN, BUILTIN_BY_NAME, MMLU_STEM, BenchmarkConfig  # noqa: F401 (re-exported)
from udfs import fs as nrfs


class BenchmarkMissing(FileNotFoundError):
    """A benchmark's file (or hub dataset) is not there; fatal unless the benchmark is optional."""


def resolve(benchmarks: Optional[list]) -> list[BenchmarkConfig]:
    """Configured entries (definitions or built-in names) as definitions; None = ``BUILTIN``."""
    if benchmarks is None:
        return list(BUILTIN)
    return [BUILTIN_BY_NAME[b] if isinstance(b, str) else b for b in benchmarks]


# Files are read through the project's filesystem layer (udfs/fs.py): local, s3://, s3a://,
# dbfs:/, with storage.storage_options (region, endpoint) and errors that name the path.


def filesystem(path: str, options: Optional[dict] = None):
    """(pyarrow FileSystem, path within it) for any of our paths."""
    return nrfs.resolve(path, options)


def exists(path: str, options: Optional[dict] = None) -> bool:
    return nrfs.exists(path, options)


def is_dir(path: str, options: Optional[dict] = None) -> bool:
    return nrfs.isdir(path, options)


def list_files(folder: str, pattern: str = "*", options: Optional[dict] = None) -> list[str]:
    """Files directly in ``folder`` whose names match ``pattern``, sorted, as full paths."""
    import fnmatch

    if not nrfs.exists(folder, options):
        return []
    return [p for p, _ in nrfs.list_files(folder, options) if fnmatch.fnmatch(p.rsplit("/", 1)[-1], pattern)]


def read_bytes(path: str, options: Optional[dict] = None) -> bytes:
    """A whole file's bytes; a missing file is ``BenchmarkMissing`` naming it (a missing bucket
    or denied access is the filesystem layer's own error, which names the path too)."""
    try:
        return nrfs.read_bytes(path, options)
    except nrfs.BucketNotFound:
        raise
    except nrfs.PathNotFound:
        raise BenchmarkMissing(f"{path} not found") from None


def _read_file(path: str, fmt: str, options: Optional[dict] = None) -> tuple[pd.DataFrame, bytes]:
    import io

    data = read_bytes(path, options)
    if fmt == "csv":
        return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False), data
    if fmt == "parquet":
        return pd.read_parquet(io.BytesIO(data)), data
    return pd.DataFrame([json.loads(line) for line in data.decode("utf-8").split("\n") if line.strip()]), data


def _read_hf(b: BenchmarkConfig, config: Optional[str]) -> pd.DataFrame:
    try:
        from datasets import load_dataset
    except ImportError as e:
        raise BenchmarkMissing(f"benchmark {b.name}: format hf needs the `datasets` package") from e
    try:
        return load_dataset(b.path, config, split=b.split or "test").to_pandas()
    except Exception as e:  # no network, no such dataset, gated dataset without a token
        raise BenchmarkMissing(f"benchmark {b.name}: Hugging Face dataset {b.path!r} could not be loaded: {e}") from e


def _source(path: str, benchmarks_dir: str, data: bytes) -> dict:
    """A manifest entry for one file read: its path (relative to benchmarks_dir), size, sha256."""
    base = benchmarks_dir.rstrip("/") + "/"
    rel = path[len(base):] if benchmarks_dir and path.startswith(base) else path
    return {"path": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _frames(b: BenchmarkConfig, benchmarks_dir: str, options: Optional[dict] = None
            ) -> list[tuple[str, pd.DataFrame, dict]]:
    """(id prefix, frame, source) triples: one per file, or per subject when the path (or, for
    ``hf``, the configuration name) has ``{subject}``."""
    if b.format == "hf":
        configs = ([(s, b.hf_config.replace("{subject}", s)) for s in b.subset_values or []]
                   if b.hf_config and "{subject}" in b.hf_config else [("", b.hf_config)])
        out = []
        for prefix, config in configs:
            df = _read_hf(b, config)
            digest = pd.util.hash_pandas_object(df[b.text_fields].astype(str), index=False).values.tobytes()
            out.append((prefix, df, {"dataset": b.path, "config": config, "split": b.split or "test",
                                     "sha256": hashlib.sha256(digest).hexdigest()}))
        return out
    template = b.path.replace("{benchmarks_dir}", benchmarks_dir)
    if "{subject}" in template:
        if not b.subset_values:
            raise ValueError(f"benchmark {b.name}: a path with {{subject}} needs subset_values")
        paths = [(s, template.replace("{subject}", s)) for s in b.subset_values]
    elif is_dir(template, options):
        paths = [("", p) for p in list_files(template, f"*.{b.format}", options)]
    elif any(ch in template for ch in "*?["):
        folder, _, pattern = template.rpartition("/")
        paths = [("", p) for p in list_files(folder or ".", pattern, options)]
    else:
        paths = [("", template)]
    absent = [p for _, p in paths if not exists(p, options)]
    if not paths or absent:
        hint = "" if benchmarks_dir else " (decontaminate.benchmarks_dir / NR_BENCHMARKS_DIR is not set)"
        raise BenchmarkMissing(f"benchmark {b.name}: {', '.join(absent) or template + ' (no files)'} not found "
                               f"(benchmarks_dir={benchmarks_dir!r}){hint}")
    out = []
    for s, p in paths:
        df, data = _read_file(p, b.format, options)
        out.append((s, df, _source(p, benchmarks_dir, data)))
    return out


def load_benchmark(b: BenchmarkConfig, benchmarks_dir: str, options: Optional[dict] = None) -> pd.DataFrame:
    """(benchmark, benchmark_item_id, text) with one row per (item, non-empty text field).

    ``attrs["sources"]`` lists every file read, with its size and sha256 (the index manifest).
    """
    by_subject = "{subject}" in b.path or "{subject}" in (b.hf_config or "")
    rows, sources = [], []
    for prefix, df, source in _frames(b, benchmarks_dir, options):
        sources.append(source)
        if b.subset_field and b.subset_values and not by_subject:
            if b.subset_field not in df.columns:
                raise ValueError(f"benchmark {b.name}: subset_field {b.subset_field!r} not in {sorted(df.columns)}")
            df = df[df[b.subset_field].astype(str).isin(b.subset_values)]
        missing = [f for f in b.text_fields + ([b.id_field] if b.id_field else []) if f not in df.columns]
        if missing:
            raise ValueError(f"benchmark {b.name}: fields {missing} not in {sorted(df.columns)}")
        ids = df[b.id_field].astype(str) if b.id_field else pd.Series(range(len(df)), index=df.index).astype(str)
        if prefix:
            ids = prefix + "/" + ids
        for f in b.text_fields:
            for i, t in zip(ids, df[f]):
                if isinstance(t, (list, tuple, np.ndarray)):  # e.g. MMLU-Pro's options
                    t = "\n".join(str(x) for x in t)
                if isinstance(t, str) and t.strip():
                    rows.append((b.name, i, t))
    out = pd.DataFrame(rows, columns=["benchmark", "benchmark_item_id", "text"])
    out.attrs["sources"] = sources
    return out


def load_benchmarks(benchmarks: list[BenchmarkConfig], benchmarks_dir: str, options: Optional[dict] = None
                    ) -> Iterator[tuple[BenchmarkConfig, Optional[pd.DataFrame]]]:
    """Each configured benchmark's texts; a missing optional benchmark comes back as None."""
    for b in benchmarks:
        try:
            yield b, load_benchmark(b, benchmarks_dir, options)
        except BenchmarkMissing:
            if not b.optional:
                raise
            yield b, None
