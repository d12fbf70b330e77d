"""bootstrap: write the bundled sample corpus as the Delta tables the default config reads.

The sample JSONL files (``data/sample``) carry the real column names of DCLM-baseline and
FineMath, so ``ingest`` reads them exactly as it would read the real datasets.
"""
from __future__ import annotations

import sys
from pathlib import Path

from jobs.common.config import REPO_ROOT
from jobs.common.runner import StageContext

NAME = "bootstrap"
INPUTS: list[str] = []
OUTPUTS: list[str] = []


def sample_dir(configured: str | None) -> Path:
    if configured:
        return Path(configured).expanduser()
    here = REPO_ROOT / "data" / "sample"
    if here.is_dir():
        return here
    # Installed as a wheel: the sample ships inside the package data of `jobs`.
    return Path(__file__).resolve().parent / "sample_data"


def run(ctx: StageContext) -> None:
    folder = sample_dir(ctx.cfg.sample.corpus_dir)
    for fname, target in ctx.cfg.sample.tables.items():
        src = folder / fname
        if not src.exists():
            raise FileNotFoundError(f"sample corpus file {src} not found (sample.corpus_dir={folder})")
        path = ctx.cfg.expand(target)
        if ctx.store.backend.exists(path):
            ctx.count(f"skipped_existing_{src.stem}")
            continue
        df = ctx.spark.read.json(str(src))
        n = df.count()
        ctx.store.backend.overwrite(path, df)
        ctx.count("out", n)
        ctx.count(f"rows_{src.stem}", n)


def main(argv: list[str] | None = None) -> int:
    from jobs.pipeline import stage_main

    return stage_main(NAME, argv)


if __name__ == "__main__":
    sys.exit(main())
