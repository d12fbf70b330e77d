"""The stage spec: everything the pipeline knows about a stage, in one value (ARCHITECTURE.md §4).

Each stage module under ``jobs/stages/<phase>/`` ends with ``STAGE = Stage(...)``, and
``jobs.stages.STAGES`` lists them in the pipeline's order. The runner, ``nr stages``,
``nr status``, ``nr plan``, preflight, the run summary, the report's funnel, the chunk
fingerprint and the README's stage table all read these values; no other module keeps a
list of stage names, tables, keys or config sections.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence

if TYPE_CHECKING:  # annotations only: a spec never needs these at import time
    from pyspark.sql import DataFrame

    from jobs.common.config import PipelineConfig
    from jobs.common.runner import StageContext

PHASES = ("corpus", "questions", "answers", "selftrain", "selection")

# kind -> what a re-run does
KINDS = {
    "source": "writes or reads the corpus; re-runs add what is new",
    "llm": "generates for the keys not yet in its output, chunk by chunk, each chunk one commit",
    "incremental": "adds the rows of its input not yet in its output",
    "whole_table": "rebuilds its output from its inputs; skipped when inputs and config are unchanged",
}


@dataclass(frozen=True)
class Output:
    """A table a stage writes, and the columns that identify one of its rows."""

    table: str
    key: tuple[str, ...] = ()


@dataclass(frozen=True)
class Work:
    """One pass of a chunked stage: the rows still to do, and what makes their output rows.

    ``pending`` is the stage's input minus the keys already in ``output`` (its pending rule);
    ``nr plan`` counts it and the stage runs ``fn`` over it, chunk by chunk.
    """

    pending: "DataFrame"
    chunk_keys: tuple[str, ...]
    fn: Callable[["DataFrame"], "DataFrame"]
    output: str
    label: Optional[str] = None  # counts the committed rows under out_<label> too
    status_col: Optional[str] = "status"
    sum_cols: tuple[str, ...] = ("prompt_tokens", "completion_tokens")


@dataclass(frozen=True)
class Stage:
    """A stage's facts. ``sections`` are the config sections whose change makes it out of date
    (the first is its own section, None when it has none); ``required`` are the inputs it cannot
    run without (it reads the other ``inputs`` when they exist); ``roles`` returns the names
    under ``llm.models`` it generates with; ``work`` returns its chunked passes (LLM and embed
    stages), which both its run and ``nr plan`` use; ``skip`` says why it has nothing to do
    under a config (None: it runs); ``pending_unit`` names a pending row in ``nr plan``;
    ``writes`` returns the tables a config decides (bootstrap's sample tables); ``funnel``
    gives the report's funnel steps after this stage: ``funnel(table, kept)`` with
    ``table(name, why)`` the report's reader (None for a missing or empty table) and ``kept``
    a dict the steps share (the question ids still in), returning (label, rows) pairs;
    ``headline`` lists what the end-of-run summary shows for it: ``("rows", table, label)``
    (rows from the Delta log) or ``("count", key, label)`` (from its latest runs row)."""

    name: str
    phase: str
    kind: str
    run: Callable[["StageContext"], None]
    summary: str
    sections: tuple[Optional[str], ...] = (None,)
    inputs: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    outputs: tuple[Output, ...] = ()
    roles: Optional[Callable[["PipelineConfig"], Sequence[str]]] = None
    work: Optional[Callable[["StageContext"], Sequence[Work]]] = None
    skip: Optional[Callable[["PipelineConfig"], Optional[str]]] = None
    pending_unit: str = "rows"
    writes: Optional[Callable[["PipelineConfig"], Sequence[str]]] = None
    funnel: Optional[Callable[[Callable, dict], list[tuple[str, int]]]] = None
    headline: tuple[tuple[str, str, str], ...] = ()

    def __post_init__(self):
        if self.phase not in PHASES:
            raise ValueError(f"stage {self.name}: phase {self.phase!r} is not one of {PHASES}")
        if self.kind not in KINDS:
            raise ValueError(f"stage {self.name}: kind {self.kind!r} is not one of {tuple(KINDS)}")
        missing = set(self.required) - set(self.inputs)
        if missing:
            raise ValueError(f"stage {self.name}: required inputs {sorted(missing)} are not among its inputs")

    @property
    def section(self) -> Optional[str]:
        """The stage's own config section (``sample`` is configured under ``self_sample``)."""
        return self.sections[0]

    @property
    def output_tables(self) -> list[str]:
        return [o.table for o in self.outputs]

    def key(self, table: Optional[str] = None) -> list[str]:
        """The key columns of ``table`` (default: the stage's first output)."""
        out = self.outputs[0] if table is None else next(o for o in self.outputs if o.table == table)
        return list(out.key)

    def config_hash(self, cfg: "PipelineConfig") -> Optional[str]:
        """One hash of every config section the stage depends on; None when it has none."""
        named = [s for s in self.sections if s]
        if not named:
            return None
        if len(named) == 1:
            return cfg.config_hash(named[0])
        return cfg.config_hash(*named)

    def skip_reason(self, cfg: "PipelineConfig") -> Optional[str]:
        """None when the stage runs under ``cfg``, else why it is skipped (disabled, nothing to do)."""
        section = getattr(cfg, self.section, None) if self.section else None
        if section is not None and getattr(section, "enabled", True) is False:
            return f"{self.section}.enabled is false"
        return self.skip(cfg) if self.skip else None

    def models(self, cfg: "PipelineConfig") -> list[str]:
        return list(self.roles(cfg)) if self.roles else []
