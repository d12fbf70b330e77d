"""The whole pipeline on the bundled sample with the scripted model: every stage, every count.

The scripted model (udfs/llm/scripted_pipeline.py) answers from the content it is given, so
the expected counts below follow from the sample corpus itself. Two extra documents quote the
items of two small benchmarks of our own, which decontamination checks beside the shipped
index of the four built-in ones: it must catch them, and nothing in the sample.
"""
from __future__ import annotations

import json
import os
import shutil

from pyspark.sql import functions as F

from jobs.common.config import validate_config
from jobs.common.storage import TableStore
from jobs.pipeline import run_pipeline
from udfs.llm import scripted_pipeline

SCRIPT = "udfs.llm.scripted_pipeline:respond"
# Each planted page gets its own worked-reasoning filler: with one shared filler the two pages
# are near-duplicates of each other (5-gram Jaccard 0.59) and doc dedup rightly drops one.
FILLERS = {
    "math": (
        "We start from the definitions and derive each step. Since the quantity is positive, we compute it "
        "directly; therefore the bound holds. Substituting the values, we get the same result again, which "
        "means the first step was right. Suppose instead the opposite held; then it follows that the sum is "
        "negative, a contradiction. Hence the claim. Thus the answer is determined because each case was "
        "checked and we solve the remaining equation, consider the edge case, assume nothing more, and derive "
        "the final value step by step. " * 3
    ),
    "mmlu-pro": (
        "Consider each option in turn and assume it is true. If the first option held, then the observed "
        "effect would vanish, so it follows that we reject it; therefore only the later options remain. "
        "Because the measured rate grows with temperature, we derive that the process is activated, and hence "
        "the second option fails as well. Suppose the third option holds: substituting the given values we "
        "solve for the constant and compute a positive number, which means the claim survives the check. "
        "Thus we keep it, since every other case was ruled out step by step. " * 3
    ),
}


def _survives_scripted_model(text: str) -> bool:
    """The scripted model selects this page and writes a JSON question for it."""
    ann = scripted_pipeline.annotate(text.strip())
    if ann.get("finish_reason") == "length":
        return False
    s = json.loads(ann["text"])
    return s["complexity"] >= 4 and s["reasoning"] >= 4 and scripted_pipeline.synthesize(text.strip())["text"].startswith("{")


# Our own benchmark items (no real benchmark text lives in the repository): candidates per
# benchmark, the first that the scripted model selects and turns into a question is planted.
HOUSE = {
    "house_math": [
        "A rectangular garden is 3 metres longer than it is wide and its area is 70 square metres; find its width, "
        "its length, and the length of fencing needed to go around it.",
        "Two pipes fill a tank in 6 and 9 hours; a drain empties it in 12 hours; with all three open, how long "
        "does the empty tank take to fill, and which pipe matters most?",
        "The sum of three consecutive odd numbers is 129; find the numbers, and show that no three consecutive "
        "even numbers can sum to 129 whatever the starting value.",
    ],
    "house_quiz": [
        "Which property of the inner planets best explains why their surfaces show many more impact craters than "
        "the Earth does, even though all of them formed at roughly the same time?",
        "A sealed syringe of air is pushed in slowly and then quickly; which of the following describes how the "
        "temperature of the trapped air changes in each case and why they differ?",
        "Why does a sample of salt water freeze at a lower temperature than pure water, and which of the listed "
        "effects on the vapour pressure of the solvent accounts for the difference?",
    ],
}


def house_benchmarks(folder) -> list[dict]:
    """The house benchmarks as definitions (files written into ``folder``)."""
    defs = []
    for name, items in HOUSE.items():
        path = os.path.join(str(folder), f"{name}.jsonl")
        with open(path, "w") as f:
            f.writelines(json.dumps({"id": f"{name}-{i}", "question": q}) + "\n" for i, q in enumerate(items))
        defs.append({"name": name, "format": "jsonl", "path": path, "text_fields": ["question"], "id_field": "id"})
    return defs


def benchmark_docs() -> list[dict]:
    """One item of each house benchmark, each wrapped in a worked-reasoning page."""
    docs = []
    for (name, items), filler in zip(HOUSE.items(), FILLERS.values()):
        text = next(t for t in (q + "\n\n" + filler for q in items) if _survives_scripted_model(t))
        docs.append({"url": f"https://contaminated.example/{name}", "text": text})
    return docs


def scripted_config(root: str, extra_jsonl: str) -> dict:
    bench_dir = os.path.join(os.path.dirname(extra_jsonl), "house-benchmarks")
    os.makedirs(bench_dir, exist_ok=True)
    return {
        "decontaminate": {"benchmarks": ["math", "gpqa", "mmlu_pro", "mmlu_stem", *house_benchmarks(bench_dir)]},
        "storage": {"root": root},
        "spark": {"master": "local[2]", "shuffle_partitions": 2},
        "pipeline": {"chunk_rows": 40, "progress": False},
        "ingest": {"sources": [
            {"name": "dclm", "path": "{root}/sources/dclm",
             "keep_cols": ["fasttext_openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train_prob"]},
            {"name": "finemath", "path": "{root}/sources/finemath", "keep_cols": ["score", "int_score"],
             "filter": "int_score >= 3"},
            {"name": "planted", "path": extra_jsonl, "format": "jsonl"},
        ]},
        "llm": {"models": {"default": {"engine": "scripted", "label": "scripted",
                                       "engine_kwargs": {"script": SCRIPT}}}},
        "doc_dedup": {"enabled": True},
        "select_targeted": {"top_k": 10, "target_size": 8},
        "select_traces": {"size": 12},
        "respond": {"sampling": {"n": 2, "temperature": 0.7, "top_p": 0.9, "max_tokens": 64}},
        # self-training is pinned in tests/test_selftrain_e2e.py; here it only has to run
        "self_sample": {"temperatures": [0.0, 0.7], "samples_per_temperature": 1, "max_tokens": 64},
    }


def counts_of(rows, stage):
    return next(r for r in rows if r["stage"] == stage)["counts"]


# The run itself is conftest's session fixture ``sample_run`` (scripted_config above, on the
# sample plus benchmark_docs), shared read-only with the status, report and notebook tests.


def test_every_stage_ran_ok(sample_run):
    _, rows = sample_run
    assert [(r["stage"], r["status"]) for r in rows] == [
        ("bootstrap", "ok"), ("ingest", "ok"), ("doc_dedup", "ok"), ("annotate", "ok"), ("synthesize", "ok"),
        ("question_dedup", "ok"), ("decontaminate", "ok"), ("embed", "ok"), ("respond", "ok"), ("judge", "ok"),
        ("dataset", "ok"), ("sample", "ok"), ("score", "ok"), ("train_data", "ok"), ("select_traces", "ok"),
        ("select_targeted", "ok")]


def test_counts_follow_from_the_corpus_and_the_model(sample_run, spark):
    cfg, rows = sample_run
    store = TableStore(spark, cfg.storage)
    docs = store.read("documents")
    ok_docs = docs.where(F.col("status") == "ok")
    dupes = store.read("dedup_documents_clusters").where(~F.col("keep")).select(F.col("id").alias("doc_id"))
    to_annotate = ok_docs.join(dupes, "doc_id", "left_anti").collect()
    assert counts_of(rows, "annotate")["in"] == len(to_annotate)

    # What the scripted model must have said about each document, computed without Spark.
    expected_selected, expected_failed = set(), 0
    for d in to_annotate:
        out = scripted_pipeline.annotate(d.text[: cfg.annotate.max_doc_chars].strip())
        if out.get("finish_reason") == "length":
            expected_failed += 1
            continue
        s = json.loads(out["text"])
        if s["complexity"] >= 4 and s["reasoning"] >= 4:
            expected_selected.add(d.doc_id)
    ann = store.read("annotations")
    assert ann.count() == len(to_annotate)
    assert {r.doc_id for r in ann.where(F.col("selected")).collect()} == expected_selected
    assert ann.where(F.col("status") == "truncated").count() == expected_failed
    assert all(r.raw_output for r in ann.where(F.col("status") != "ok").collect()), "raw output kept"

    qs = store.read("questions")
    assert qs.count() == len(expected_selected)
    assert qs.select("question_id").distinct().count() == qs.count()
    no_json = sum(1 for d in to_annotate if d.doc_id in expected_selected and not scripted_pipeline.synthesize(
        d.text[: cfg.synthesize.max_doc_chars].strip())["text"].startswith("{"))
    assert qs.where(F.col("status") == "no_json").count() == no_json

    cont = store.read("contamination")
    planted = ok_docs.where(F.col("source") == "planted").select("doc_id")
    planted_q = qs.join(planted, "doc_id", "left_semi").where(F.col("status") == "ok").select("question_id")
    assert planted_q.count() == 2
    assert {r.item_id for r in cont.collect()} >= {r.question_id for r in planted_q.collect()}
    assert {r.benchmark for r in cont.collect()} == {"house_math", "house_quiz"}
    counts = counts_of(rows, "decontaminate")
    assert counts["checked_benchmarks"] == 6 and counts["dropped_contaminated"] == 2
    assert {b: counts[f"contaminated_{b}"] for b in ("math", "gpqa", "mmlu_pro", "mmlu_stem")} == dict.fromkeys(
        ("math", "gpqa", "mmlu_pro", "mmlu_stem"), 0)
    assert all(counts[f"benchmark_ngrams_{b}"] > 10000 for b in ("math", "gpqa", "mmlu_pro", "mmlu_stem"))

    ds = store.read("dataset")
    usable = qs.where(F.col("status") == "ok")
    removed = store.read("dedup_questions_clusters").where(~F.col("keep")).select(F.col("id").alias("question_id")) \
        .unionByName(cont.select(F.col("item_id").alias("question_id"))).distinct()
    assert ds.count() == usable.join(removed, "question_id", "left_anti").count()
    assert ds.join(removed, "question_id", "left_semi").count() == 0

    resp = store.read("responses")
    assert resp.count() == 2 * ds.count(), "n=2 samples for every usable question"
    judg = store.read("judgments")
    with_ref = ds.where(F.col("reference_answer").isNotNull()).count()
    by_kind = {r["kind"]: r["count"] for r in judg.groupBy("kind").count().collect()}
    assert by_kind == {"quality": ds.count(), "reference_agreement": 2 * with_ref, "self_score": 2 * ds.count()}
    assert judg.where((F.col("kind") == "self_score") & F.col("score").isNull()).count() == 0


def test_pinned_counts(sample_run, spark):
    """Exact figures for the bundled sample; a change here means the corpus, a parser or a stage changed."""
    cfg, _ = sample_run
    store = TableStore(spark, cfg.storage)
    got = {
        "documents": store.read("documents").count(),
        "annotations": store.read("annotations").count(),
        "selected": store.read("annotations").where(F.col("selected")).count(),
        "questions": store.read("questions").count(),
        "dataset": store.read("dataset").count(),
        "doc_near_duplicates": store.read("dedup_documents_clusters").where(~F.col("keep")).count(),
        "question_near_duplicates": store.read("dedup_questions_clusters").where(~F.col("keep")).count(),
        "contaminated": store.read("contamination").select("item_id").distinct().count(),
        "responses": store.read("responses").count(),
        "judgments": store.read("judgments").count(),
        "parse_failures": {r["status"]: r["count"] for r in
                           store.read("annotations").where(F.col("status") != "ok").groupBy("status").count().collect()},
    }
    assert got == PINNED, got


PINNED = {"documents": 105, "annotations": 94, "selected": 59, "questions": 59, "dataset": 49,
          "doc_near_duplicates": 8, "question_near_duplicates": 0, "contaminated": 2, "responses": 98,
          "judgments": 207, "parse_failures": {"truncated": 3}}


def test_dataset_schema_and_export(sample_run, spark):
    cfg, _ = sample_run
    store = TableStore(spark, cfg.storage)
    ds = store.read("dataset")
    assert ds.columns[:3] == ["question", "reference_answer", "responses"]
    r = ds.where(F.size("responses") > 0).first()
    assert set(r.responses[0].asDict()) == {"response_model", "response"}
    export = cfg.expand(cfg.dataset.export_dir)
    lines = []
    for name in sorted(os.listdir(os.path.join(export, "jsonl"))):
        if name.endswith(".json"):
            with open(os.path.join(export, "jsonl", name)) as f:
                lines += [json.loads(x) for x in f]
    assert len(lines) == ds.count()
    assert {"question", "reference_answer", "responses", "question_id", "self_score"} <= set(lines[0])


def test_rerun_changes_nothing(sample_run, spark, tmp_path):
    """A second run over a finished one writes no table (on a copy: the sample run is shared read-only)."""
    shared, _ = sample_run
    raw = shared.model_dump(mode="json")
    raw["storage"]["root"] = str(tmp_path / "root")
    shutil.copytree(shared.storage.root, raw["storage"]["root"])
    cfg = validate_config(raw, "test")
    store = TableStore(spark, cfg.storage)
    tables = ["documents", "annotations", "questions", "responses", "judgments", "dataset", "contamination",
              "dedup_questions_clusters"]
    before = {t: store.version(t) for t in tables}
    rows = run_pipeline(cfg, spark=spark)
    assert all(r["status"] == "ok" for r in rows)
    assert {t: store.version(t) for t in tables} == before


def test_a_selection_that_keeps_nothing_still_completes(spark, tmp_path):
    """No document passes annotation: every later stage runs on zero rows, writes its table
    empty with its schema, and the pipeline ends ok with an empty dataset."""
    extra = tmp_path / "planted.jsonl"
    extra.write_text(json.dumps({"url": "https://example.org/one", "text": "A page with a few words. " * 20}) + "\n")
    raw = scripted_config(str(tmp_path / "root"), str(extra))
    for src in raw["ingest"]["sources"]:
        src["max_docs"] = 3
    raw["annotate"] = {"select": {"reasoning": 5}}  # above the 0-4 scale: nothing is selected
    raw["doc_dedup"] = {"enabled": False}
    cfg = validate_config(raw, "test")
    rows = run_pipeline(cfg, spark=spark)
    statuses = {r["stage"]: r["status"] for r in rows}
    assert statuses.pop("doc_dedup").startswith("skipped") and set(statuses.values()) == {"ok"}, statuses
    store = TableStore(spark, cfg.storage)
    assert store.read("annotations").count() > 0 and store.read("annotations").where("selected").count() == 0
    for table in ("questions", "responses", "judgments", "dataset"):
        assert store.exists(table) and store.read(table).count() == 0, table
    assert "question_id" in store.read("dataset").columns
