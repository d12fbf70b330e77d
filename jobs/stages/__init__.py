"""The pipeline's stages, in order: the registry every other module derives from
(ARCHITECTURE.md §1, §4). Each phase is a package; each stage module ends with its ``STAGE``
spec (``jobs.common.stage.Stage``)."""
from __future__ import annotations


from jobs.common.stage import Stage
from jobs.stages.answers import dataset, judge, respond
from jobs.stages.corpus import annotate, bootstrap, doc_dedup, ingest
from jobs.stages.questions import decontaminate, embed, question_dedup, semdedup, synthesize
from jobs.stages.selection import select_targeted, select_traces
from jobs.stages.selftrain import sample, score, train_data

STAGES: tuple[Stage, ...] = tuple(m.STAGE for m in (
    bootstrap, ingest, doc_dedup, annotate,
    synthesize, question_dedup, decontaminate, embed, semdedup,
    respond, judge, dataset,
    sample, score, train_data,
    select_traces, select_targeted,
))
BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
NAMES: tuple[str, ...] = tuple(BY_NAME)
# Stages `nr run` leaves out unless pipeline.stages or --stages names them.
OPT_IN = ("semdedup",)
DEFAULT_STAGES: tuple[str, ...] = tuple(n for n in NAMES if n not in OPT_IN)


def get(name: str) -> Stage:
    if name not in BY_NAME:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(NAMES)}")
    return BY_NAME[name]


def producer_of(table: str) -> str | None:
    """The stage that writes ``table``."""
    return next((s.name for s in STAGES if table in s.output_tables), None)


def stage_table() -> str:
    """The README's stage table (a test keeps the README's copy equal to this)."""
    rows = ["| # | stage | phase | kind | config | reads | writes (key) | what it does |",
            "|---|---|---|---|---|---|---|---|"]
    for i, s in enumerate(STAGES, 1):
        reads = ", ".join(f"**{t}**" if t in s.required else t for t in s.inputs) or "-"
        writes = ", ".join(f"{o.table} ({', '.join(o.key)})" if o.key else o.table for o in s.outputs) or \
            ("the sample source tables" if s.writes else "-")
        config = " + ".join(f"`{c}`" for c in s.sections if c) or "-"
        opt = " (opt-in)" if s.name in OPT_IN else ""
        rows.append(f"| {i} | `{s.name}`{opt} | {s.phase} | {s.kind} | {config} | {reads} | {writes} | {s.summary} |")
    return "\n".join(rows)


def configured(cfg) -> list[str]:
    """The stages `nr run` runs under ``cfg``: ``pipeline.stages``, else the default ones."""
    return list(cfg.pipeline.stages or DEFAULT_STAGES)
