"""bootstrap: write the bundled sample corpus as the Delta tables the default config reads.

The sample JSONL files (``data/sample``) carry the real column names of DCLM-baseline and
FineMath, so ``ingest`` reads them exactly as it would read the real datasets.

It writes only the sample tables an ingest source reads: with the user's own sources
configured it writes nothing (a production ``s3://`` root gets no sample litter).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from jobs.common.config import REPO_ROOT, PipelineConfig
from jobs.common.runner import StageContext
from jobs.common.stage import Stage
from jobs.common.storage import read_table

NOT_SAMPLE = "sources are not the bundled sample"

log = logging.getLogger("nr")


def sample_dir(configured: str | None) -> Path:
    if configured:
        return Path(configured).expanduser()
    here = REPO_ROOT / "data" / "sample"
    if here.is_dir():
        return here
    # Installed as a wheel: the sample ships inside the package data of `jobs`.
    return Path(__file__).resolve().parents[2] / "sample_data"


def sample_targets(cfg: PipelineConfig) -> dict[str, str]:
    """Sample file name -> table path, for the sample tables some ingest source reads."""
    read = {cfg.expand(s.path).rstrip("/") for s in cfg.ingest.sources if s.format == "delta"}
    return {fname: path for fname, t in cfg.sample.tables.items() if (path := cfg.expand(t)).rstrip("/") in read}


def skip_reason(cfg: PipelineConfig) -> Optional[str]:
    """Why the stage has nothing to do under ``cfg`` (None: it runs)."""
    return None if sample_targets(cfg) else NOT_SAMPLE


def run(ctx: StageContext) -> None:
    reason = skip_reason(ctx.cfg)
    if reason:
        log.info("[bootstrap] skipped: %s", reason)
        ctx.count("skipped_not_sample", 1)
        return
    folder = sample_dir(ctx.cfg.sample.corpus_dir)
    for fname, path in sample_targets(ctx.cfg).items():
        src = folder / fname
        if not src.exists():
            raise FileNotFoundError(f"sample corpus file {src} not found (sample.corpus_dir={folder})")
        if ctx.store.backend.exists(path):
            ctx.count(f"skipped_existing_{src.stem}")
            continue
        df = read_table(ctx.spark, str(src), "jsonl", ctx.cfg.storage)
        n = df.count()
        ctx.store.backend.overwrite(path, df)
        ctx.count("out", n)
        ctx.count(f"rows_{src.stem}", n)


STAGE = Stage(
    "bootstrap", "corpus", "source", run, "writes the bundled sample corpus as the Delta tables ingest reads",
    sections=("sample",), skip=skip_reason, writes=lambda cfg: list(sample_targets(cfg).values()),
)
