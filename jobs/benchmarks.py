"""Benchmark definitions for decontamination and their loaders (driver side).

Built in: MATH (test), GPQA (diamond), MMLU-Pro (test) and MMLU-STEM (the 19 subjects
lm-eval-harness tags ``stem``), in their public file layouts under one folder
(``decontaminate.benchmarks_dir``, default ``$NR_BENCHMARKS_DIR`` or ``../shared/data/benchmarks``).
"""
from __future__ import annotations

import glob
import json
import os
from typing import Iterator

import pandas as pd

from jobs.common.config import BenchmarkConfig

MMLU_STEM = [
    "abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry", "college_computer_science",
    "college_mathematics", "college_physics", "computer_security", "conceptual_physics", "electrical_engineering",
    "elementary_mathematics", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_mathematics", "high_school_physics", "high_school_statistics", "machine_learning",
]

BUILTIN = [
    BenchmarkConfig(name="math", format="csv", path="{benchmarks_dir}/math_test.csv", text_fields=["Question"]),
    BenchmarkConfig(name="gpqa", format="csv", path="{benchmarks_dir}/gpqa_diamond.csv", text_fields=["Question"],
                    id_field="Record ID"),
    BenchmarkConfig(name="mmlu_pro", format="jsonl", path="{benchmarks_dir}/mmlu_pro/test.jsonl",
                    text_fields=["question"], id_field="question_id"),
    BenchmarkConfig(name="mmlu_stem", format="csv", path="{benchmarks_dir}/mmlu/{subject}_test.csv",
                    text_fields=["question"], subset_field="subject", subset_values=MMLU_STEM),
]


class BenchmarkMissing(FileNotFoundError):
    pass


def _read_file(path: str, fmt: str) -> pd.DataFrame:
    if fmt == "csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    if fmt == "parquet":
        return pd.read_parquet(path)
    with open(path, encoding="utf-8") as f:
        return pd.DataFrame([json.loads(line) for line in f if line.strip()])


def load_benchmark(b: BenchmarkConfig, benchmarks_dir: str) -> pd.DataFrame:
    """(benchmark, benchmark_item_id, text) with one row per (item, text field)."""
    if b.format == "hf":
        try:
            from datasets import load_dataset
        except ImportError as e:
            raise BenchmarkMissing(f"benchmark {b.name}: format hf needs the `datasets` package") from e
        frame = load_dataset(b.path, split=b.split or "test").to_pandas()
        frames = [("", frame)]
    else:
        template = b.path.replace("{benchmarks_dir}", benchmarks_dir)
        frames = []
        if "{subject}" in template:
            subjects = b.subset_values or []
            for s in subjects:
                p = template.replace("{subject}", s)
                if not os.path.exists(p):
                    raise BenchmarkMissing(f"benchmark {b.name}: {p} not found")
                frames.append((s, _read_file(p, b.format)))
        else:
            paths = sorted(glob.glob(template)) if any(ch in template for ch in "*?[") else [template]
            if not paths or not all(os.path.exists(p) for p in paths):
                raise BenchmarkMissing(f"benchmark {b.name}: {template} not found")
            frames = [("", _read_file(p, b.format)) for p in paths]
    rows = []
    for prefix, df in frames:
        if b.subset_field and b.subset_field in df.columns and b.subset_values:
            df = df[df[b.subset_field].astype(str).isin(b.subset_values)]
        missing = [f for f in b.text_fields if f not in df.columns]
        if missing:
            raise ValueError(f"benchmark {b.name}: fields {missing} not in {sorted(df.columns)}")
        ids = df[b.id_field].astype(str) if b.id_field else pd.Series(range(len(df)), index=df.index).astype(str)
        if prefix:
            ids = prefix + "/" + ids
        for f in b.text_fields:
            for i, t in zip(ids, df[f]):
                if isinstance(t, str) and t.strip():
                    rows.append((b.name, i, t))
    return pd.DataFrame(rows, columns=["benchmark", "benchmark_item_id", "text"])


def load_benchmarks(benchmarks: list[BenchmarkConfig], benchmarks_dir: str) -> Iterator[tuple[BenchmarkConfig, pd.DataFrame]]:
    """Each configured benchmark's texts; a missing optional benchmark is skipped (with None)."""
    for b in benchmarks:
        try:
            yield b, load_benchmark(b, benchmarks_dir)
        except BenchmarkMissing:
            if not b.optional:
                raise
            yield b, None
