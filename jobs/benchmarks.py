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

import glob
import json
import os
from typing import Iterator, Optional

import pandas as pd

from jobs.common.config import BenchmarkConfig

MMLU_STEM = [
    "abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry", "college_computer_science",
    "college_mathematics", "college_physics", "computer_security", "conceptual_physics", "electrical_engineering",
    "elementary_mathematics", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_mathematics", "high_school_physics", "high_school_statistics", "machine_learning",
]


def _gpqa(name: str, file: str) -> BenchmarkConfig:
    return BenchmarkConfig(name=name, format="csv", path="{benchmarks_dir}/" + file, text_fields=["Question"],
                           id_field="Record ID")


BUILTIN_BY_NAME = {b.name: b for b in [
    BenchmarkConfig(name="math", format="csv", path="{benchmarks_dir}/math_test.csv", text_fields=["Question"]),
    _gpqa("gpqa", "gpqa_diamond.csv"),
    _gpqa("gpqa_main", "gpqa_main.csv"),
    _gpqa("gpqa_extended", "gpqa_extended.csv"),
    BenchmarkConfig(name="mmlu_pro", format="jsonl", path="{benchmarks_dir}/mmlu_pro/test.jsonl",
                    text_fields=["question"], id_field="question_id"),
    BenchmarkConfig(name="mmlu_stem", format="csv", path="{benchmarks_dir}/mmlu/{subject}_test.csv",
                    text_fields=["question"], subset_field="subject", subset_values=MMLU_STEM),
]}
BUILTIN = [BUILTIN_BY_NAME[k] for k in ("math", "gpqa", "mmlu_pro", "mmlu_stem")]


class BenchmarkMissing(FileNotFoundError):
    """A benchmark's file (or hub dataset) is not there; fatal unless the benchmark is optional."""


def resolve(benchmarks: Optional[list]) -> list[BenchmarkConfig]:
    """Configured entries (definitions or built-in names) as definitions; None = ``BUILTIN``."""
    if benchmarks is None:
        return list(BUILTIN)
    return [BUILTIN_BY_NAME[b] if isinstance(b, str) else b for b in benchmarks]


def _read_file(path: str, fmt: str) -> pd.DataFrame:
    if fmt == "csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    if fmt == "parquet":
        return pd.read_parquet(path)
    with open(path, encoding="utf-8") as f:
        return pd.DataFrame([json.loads(line) for line in f if line.strip()])


def _read_hf(b: BenchmarkConfig) -> pd.DataFrame:
    try:
        from datasets import load_dataset
    except ImportError as e:
        raise BenchmarkMissing(f"benchmark {b.name}: format hf needs the `datasets` package") from e
    try:
        return load_dataset(b.path, b.hf_config, split=b.split or "test").to_pandas()
    except Exception as e:  # no network, no such dataset, gated dataset without a token
        raise BenchmarkMissing(f"benchmark {b.name}: Hugging Face dataset {b.path!r} could not be loaded: {e}") from e


def _frames(b: BenchmarkConfig, benchmarks_dir: str) -> list[tuple[str, pd.DataFrame]]:
    """(id prefix, frame) pairs: one per file, or per subject when the path has ``{subject}``."""
    if b.format == "hf":
        return [("", _read_hf(b))]
    template = b.path.replace("{benchmarks_dir}", benchmarks_dir)
    if "{subject}" in template:
        if not b.subset_values:
            raise ValueError(f"benchmark {b.name}: a path with {{subject}} needs subset_values")
        paths = [(s, template.replace("{subject}", s)) for s in b.subset_values]
    elif os.path.isdir(template):
        paths = [("", p) for p in sorted(glob.glob(os.path.join(template, f"*.{b.format}")))]
    elif any(ch in template for ch in "*?["):
        paths = [("", p) for p in sorted(glob.glob(template))]
    else:
        paths = [("", template)]
    absent = [p for _, p in paths if not os.path.exists(p)]
    if not paths or absent:
        raise BenchmarkMissing(f"benchmark {b.name}: {', '.join(absent) or template + ' (no files)'} not found "
                               f"(benchmarks_dir={benchmarks_dir})")
    return [(s, _read_file(p, b.format)) for s, p in paths]


def load_benchmark(b: BenchmarkConfig, benchmarks_dir: str) -> pd.DataFrame:
    """(benchmark, benchmark_item_id, text) with one row per (item, non-empty text field)."""
    by_file = "{subject}" in b.path
    rows = []
    for prefix, df in _frames(b, benchmarks_dir):
        if b.subset_field and b.subset_values and not by_file:
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
                if isinstance(t, list):  # e.g. MMLU-Pro's options
                    t = "\n".join(str(x) for x in t)
                if isinstance(t, str) and t.strip():
                    rows.append((b.name, i, t))
    return pd.DataFrame(rows, columns=["benchmark", "benchmark_item_id", "text"])


def load_benchmarks(benchmarks: list[BenchmarkConfig], benchmarks_dir: str
                    ) -> Iterator[tuple[BenchmarkConfig, Optional[pd.DataFrame]]]:
    """Each configured benchmark's texts; a missing optional benchmark comes back as None."""
    for b in benchmarks:
        try:
            yield b, load_benchmark(b, benchmarks_dir)
        except BenchmarkMissing:
            if not b.optional:
                raise
            yield b, None
