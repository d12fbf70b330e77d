"""bootstrap only for the sample; `nr status` and `nr plan` on the scripted sample run."""
from __future__ import annotations

import json
import logging
import os

import yaml
from deltalake import DeltaTable
from pyspark.sql import functions as F

from jobs import cli
from jobs.common.config import validate_config
from jobs.common.storage import TableStore
from jobs.pipeline import run_pipeline
from jobs.ops.plan import make_plan
from jobs.common.runs import out_of_date_reasons
from jobs.ops.status import collect_status
from jobs.stages import BY_NAME


def write_config(cfg, path) -> str:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return str(path)


def tree(root: str) -> dict:
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[p] = os.stat(p).st_mtime_ns
    return out


# --------------------------------------------------------------------------- bootstrap


def own_sources_config(tmp_path, **extra):
    src = tmp_path / "pages.jsonl"
    src.write_text(json.dumps({"url": "https://example.org/a", "text": "A page. " * 10}) + "\n")
    raw = {"storage": {"root": str(tmp_path / "root")}, "pipeline": {"progress": False},
           "ingest": {"sources": [{"name": "crawl", "path": str(src), "format": "jsonl"}]}, **extra}
    return validate_config(raw, "test")


def test_bootstrap_skips_when_sources_are_not_the_sample(spark, tmp_path, caplog):
    cfg = own_sources_config(tmp_path)
    with caplog.at_level(logging.INFO, logger="nr"):
        rows = run_pipeline(cfg, stages=["bootstrap", "ingest"], spark=spark)
    assert [(r["stage"], r["status"]) for r in rows] == [("bootstrap", "skipped"), ("ingest", "ok")]
    assert rows[0]["error"] == "sources are not the bundled sample"
    assert "[bootstrap] skipped: sources are not the bundled sample" in caplog.text
    assert not os.path.exists(tmp_path / "root" / "sources"), "no sample tables in the user's root"
    assert DeltaTable(str(tmp_path / "root" / "documents")).to_pyarrow_table().num_rows == 1


def test_bootstrap_as_a_single_stage_writes_nothing_either(spark, tmp_path):
    cfg = own_sources_config(tmp_path)
    assert cli.main(["stage", "bootstrap", "--config", write_config(cfg, tmp_path / "c.yaml")]) == 0
    assert not os.path.exists(tmp_path / "root" / "sources")
    runs = DeltaTable(str(tmp_path / "root" / "runs")).to_pyarrow_table().to_pylist()
    assert dict(runs[0]["counts"]) == {"skipped_not_sample": 1}


def test_bootstrap_writes_only_the_sample_tables_a_source_reads(spark, tmp_path):
    raw = {"storage": {"root": str(tmp_path / "root")}, "pipeline": {"progress": False},
           "ingest": {"sources": [{"name": "finemath", "path": "{root}/sources/finemath", "keep_cols": ["score"]}]}}
    rows = run_pipeline(validate_config(raw, "test"), stages=["bootstrap"], spark=spark)
    assert rows[0]["status"] == "ok" and rows[0]["counts"]["out"] > 0
    assert sorted(os.listdir(tmp_path / "root" / "sources")) == ["finemath"]


# --------------------------------------------------------------------------- status


def test_status_tables_and_stages_on_the_sample_run(sample_run, spark):
    cfg, rows = sample_run
    store = TableStore(spark, cfg.storage)
    st = collect_status(cfg, spark)
    by_table = {t["table"]: t for t in st["tables"]}
    for name in ("documents", "annotations", "questions", "responses", "judgments", "dataset", "contamination",
                 "dedup_questions_clusters", "dedup_documents_pairs", "runs"):
        t = by_table[name]
        assert t["rows"] == store.read(name).count(), name
        assert t["version"] == store.version(name), name
    assert by_table["source:dclm"]["rows"] == store.backend.read(cfg.expand("{root}/sources/dclm")).count()
    assert by_table["semdedup_questions_clusters"]["exists"] is False
    assert by_table["semdedup_questions_clusters"]["rows"] is None

    stages = {s["stage"]: s for s in st["stages"]}
    assert set(stages) >= {r["stage"] for r in rows}
    for r in rows:
        assert r["status"] == "ok"
        s = stages[r["stage"]]
        assert s["last_status"] == "ok" and s["out_of_date"] == [], (r["stage"], s)
    runs = store.read("runs")
    last_annotate = runs.where(F.col("stage") == "annotate").orderBy(F.col("finished_at").desc()).first()
    assert stages["annotate"]["counts"] == dict(last_annotate["counts"])
    assert stages["annotate"]["drop_reasons"] == {"failed_truncated": 3}
    assert stages["annotate"]["last_wall_seconds"] == round(last_annotate["wall_seconds"], 2)


def test_status_names_a_changed_config_section(sample_run, spark):
    cfg, _ = sample_run
    changed = cfg.model_copy(update={"question_dedup": cfg.question_dedup.model_copy(update={"threshold": 0.7})})
    stages = {s["stage"]: s for s in collect_status(changed, spark)["stages"]}
    assert stages["question_dedup"]["out_of_date"] == ["config section 'question_dedup' changed"]
    assert stages["annotate"]["out_of_date"] == []


def test_a_self_sample_change_puts_sample_and_what_follows_out_of_date(sample_run, tmp_path, capsys):
    cfg, _ = sample_run
    path = write_config(cfg, tmp_path / "c.yaml")
    assert cli.main(["status", "--config", path, "--set", "self_sample.max_tokens=99", "--json"]) == 0
    stages = {s["stage"]: s for s in json.loads(capsys.readouterr().out)["stages"]}
    assert stages["sample"]["out_of_date"] == ["config section 'self_sample' changed"]
    assert "upstream stage sample is out of date" in stages["score"]["out_of_date"]
    assert "upstream stage score is out of date" in stages["train_data"]["out_of_date"]
    assert stages["dataset"]["out_of_date"] == [] and stages["annotate"]["out_of_date"] == []


def test_out_of_date_when_an_input_changed(sample_run):
    cfg, _ = sample_run
    annotate = BY_NAME["annotate"]
    last_ok = {"stage_config_hash": annotate.config_hash(cfg), "input_versions": {"documents": 1}}
    assert out_of_date_reasons(annotate, cfg, last_ok, {"documents": 1}) == []
    assert out_of_date_reasons(annotate, cfg, last_ok, {"documents": 3}) == ["input documents changed (v1 -> v3)"]
    assert out_of_date_reasons(annotate, cfg, last_ok, {"documents": 1, "dedup_documents_clusters": 0}) == [
        "input dedup_documents_clusters appeared (v0)"]
    assert out_of_date_reasons(BY_NAME["synthesize"], cfg, None, {}) == ["never ran successfully"]


def test_status_json_cli(sample_run, tmp_path, capsys):
    cfg, _ = sample_run
    assert cli.main(["status", "--config", write_config(cfg, tmp_path / "c.yaml"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    docs = next(t for t in got["tables"] if t["table"] == "documents")
    written = DeltaTable(os.path.join(cfg.storage.root, "documents")).to_pyarrow_table().num_rows
    assert docs["rows"] == written > 0 and got["storage_root"] == cfg.storage.root
    assert {s["stage"]: s["last_status"] for s in got["stages"]}["dataset"] == "ok"


# --------------------------------------------------------------------------- plan


def test_plan_after_a_complete_run_has_nothing_to_do_and_writes_nothing(sample_run, spark, tmp_path, capsys):
    cfg, _ = sample_run
    before = tree(cfg.storage.root)
    plan = make_plan(cfg, spark)
    steps = {s["stage"]: s for s in plan["steps"]}
    assert steps["annotate"]["pending"] == 0 and steps["annotate"]["action"] == "skip"
    for name in ("doc_dedup", "question_dedup", "decontaminate", "dataset"):
        assert steps[name]["action"] == "skip", steps[name]
    # nothing before them runs, so the later LLM stages are counted too
    for name in ("synthesize", "respond", "judge"):
        assert steps[name]["pending"] == 0 and steps[name]["action"] == "skip", steps[name]
    assert plan["problems"] == []
    assert cli.main(["plan", "--config", write_config(cfg, tmp_path / "c.yaml")]) == 0
    assert "dry run, nothing is written" in capsys.readouterr().out
    assert tree(cfg.storage.root) == before


def test_plan_counts_pending_rows_with_one_anti_join_and_estimates_tokens(sample_run, spark, tmp_path, capsys):
    cfg, _ = sample_run
    # With doc dedup off, the near-duplicate documents it removed become pending for annotation.
    no_dedup = cfg.model_copy(update={"doc_dedup": cfg.doc_dedup.model_copy(update={"enabled": False})})
    store = TableStore(spark, cfg.storage)
    ok_docs = store.read("documents").where(F.col("status") == "ok").select("doc_id")
    expected = ok_docs.join(store.read("annotations").select("doc_id"), "doc_id", "left_anti").count()
    # exactly the documents doc dedup removed, and some were: else nothing would be pending
    assert expected == store.read("dedup_documents_clusters").where(~F.col("keep")).count() > 0
    runs = store.read("runs").where((F.col("stage") == "annotate") & (F.col("status") == "ok")
                                    & (F.col("counts")["out"] > 0)).collect()
    per_row = sum(r["counts"]["prompt_tokens"] for r in runs) / sum(r["counts"]["out"] for r in runs)

    before = tree(cfg.storage.root)
    plan = make_plan(no_dedup, spark, ["annotate", "synthesize", "respond"])
    steps = {s["stage"]: s for s in plan["steps"]}
    assert steps["annotate"]["pending"] == expected and steps["annotate"]["action"] == "run"
    assert steps["annotate"]["prompt_tokens_estimate"] == round(expected * per_row)
    assert steps["synthesize"]["detail"] == steps["respond"]["detail"] == "depends on the stages before"
    assert steps["respond"]["prompt_tokens_per_row"] is not None
    assert cli.main(["plan", "--config", write_config(no_dedup, tmp_path / "c.yaml"), "--stages", "annotate",
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"][0]["pending"] == expected
    assert tree(cfg.storage.root) == before


def test_plan_reports_what_would_stop_the_run(spark, tmp_path, capsys):
    raw = {"storage": {"root": str(tmp_path / "empty")}, "pipeline": {"progress": False}}
    cfg = validate_config(raw, "test")
    plan = make_plan(cfg, spark, ["ingest", "annotate"])
    assert [s["stage"] for s in plan["steps"]] == ["ingest", "annotate"]
    assert plan["steps"][1]["detail"] == "depends on the stages before"
    assert any("source table is missing" in p for p in plan["problems"])
    assert not os.path.exists(tmp_path / "empty")
