"""doc_dedup: word 5-gram shingles for documents, and what removing duplicates before annotation saves."""
from pyspark.sql import functions as F

from jobs.common.config import PipelineConfig
from jobs.stages.corpus.doc_dedup import CHARS_PER_TOKEN
from udfs.llm.prompts import load_prompt

PAGE = ("The rate constant of a first order reaction is 0.03 per second. We compute the half life as ln 2 "
        "divided by the rate constant, which gives about 23 seconds, and after three half lives one eighth "
        "of the reactant remains in the vessel at the end of the experiment. ") * 3


def test_default_shingles_documents_5_grams_questions_unigrams():
    cfg = PipelineConfig()
    assert cfg.doc_dedup.ngram == 5 and cfg.question_dedup.ngram == 1
    assert cfg.doc_dedup.threshold == cfg.question_dedup.threshold == 0.55


def test_doc_dedup_records_annotate_tokens_saved_nulls_and_empties(spark, cfg, store):
    from jobs.pipeline import run_stage

    cfg.doc_dedup.enabled = True
    cfg.annotate.max_doc_chars = 300
    mirror = PAGE.replace("0.03", "0.04")  # a mirror with one edit
    docs = spark.createDataFrame(
        [("d1", PAGE, "ok"), ("d2", mirror, "ok"), ("d3", PAGE[::-1], "ok"), ("d4", "", "ok"), (None, PAGE, "ok"),
         ("d5", PAGE, "too_short")], "doc_id string, text string, status string")
    store.overwrite("documents", docs)
    row = run_stage(cfg, "doc_dedup", spark=spark)
    c = row["counts"]
    assert c["dropped_near_duplicate"] == 1 and c["in"] == 4
    assert c["dropped_null_id"] == 1 and c["empty_texts"] == 1
    frame = sum(len(m["content"]) for m in load_prompt(cfg.annotate.prompt).render({}))
    assert c["annotate_prompt_tokens_saved"] == -(-(frame + min(len(mirror), 300)) // CHARS_PER_TOKEN)
    removed = store.read("dedup_documents_clusters").where(~F.col("keep"))
    assert [r.id for r in removed.collect()] == ["d2"]
