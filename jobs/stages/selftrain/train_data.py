"""train_data: SFT/RFT and DPO sets from the scored samples, under every selection rule
(paper §6, Table 3), in the conversational format TRL and OpenRLHF read as is.

* ``train_sft`` / ``<export>/sft/<rule>/``: ``{"messages": [user, assistant]}``, the best
  sample of each (question, model) under the rule. This is rejection-sampling fine-tuning
  (RFT) data: an ``rft/`` folder would hold the same rows, so there is none.
* ``train_dpo`` / ``<export>/dpo/<rule>/``: ``{"prompt": [user], "chosen": [assistant],
  "rejected": [assistant], "margin": float}``.
Both keep ``question_id``, the rule, the scores and the samples' lineage. Rules and tie-breaks:
``udfs/selftrain.py``. The selection is one grouped Spark pass over (question, model); tables
and exports are built whole and skipped when no input changed; every export folder holds
JSONL and Parquet shards, and each export has a dataset card (``README.md``) with the counts.
"""
from __future__ import annotations

import json
import logging
import math

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.common.runner import StageContext
from jobs.common.stage import Output, Stage
from jobs.common.storage import write_export
from udfs import fs

KEY = ["question_id", "model", "temperature", "sample_idx"]
log = logging.getLogger("nr")

RULE_TEXT = {
    "self_consistency": "a sample from the majority answer class (answers grouped by math-verify equivalence, "
                        "else normalized strings); DPO rejected: a seeded random sample of a minority class",
    "self_score": "the highest self-score logp(Yes) - logp(No); DPO: highest vs lowest",
    "self_score_filtered": "as self_score, dropped when the chosen score is below train_data.min_score",
    "reward": "the highest external reward-model score; DPO: highest vs lowest",
    "reference": "only samples that agree with the reference answer (highest self-score first); "
                 "DPO rejected: a seeded random disagreeing sample",
}


def candidate_rows(ctx: StageContext) -> DataFrame:
    """Every sample with what the rules need: its text and status, scores, answer class."""
    store = ctx.store
    samples = store.read("samples").select(*KEY, "response", "status")
    scores = store.read("sample_scores").select(*KEY, "answer", "self_score", "self_score_status", "ref_agree",
                                                "reward", "reward_status")
    classes = store.read("answer_classes").select(*KEY, "answer_class", "class_share")
    return samples.join(scores, KEY, "left").join(classes, KEY, "left")


def select_samples(rows: DataFrame, rules: list[str], seed: int, min_score: float) -> DataFrame:
    """One ``sft`` and one ``dpo`` row per (question, model, rule), with status ``ok`` or the drop reason."""
    from udfs.selftrain import SELECTION_SCHEMA, select_frame

    rules = list(rules)

    def fn(pdf):
        return select_frame(pdf, rules=rules, seed=seed, min_score=min_score)

    return rows.groupBy("question_id", "model").applyInPandas(fn, SELECTION_SCHEMA)


def _assistant(col: str):
    return F.array(F.struct(F.lit("assistant").alias("role"), F.col(col).alias("content")))


def to_formats(ctx: StageContext, picks: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(sft, dpo) rows in TRL's conversational formats plus lineage columns."""
    from jobs.common import llm

    prompt = ctx.cfg.self_sample.prompt
    qs = ctx.store.read("questions").select("question_id", "doc_id", "question", "reference_answer")
    ok = picks.where(F.col("status") == "ok").join(qs, "question_id", "inner")
    with_msgs = llm.with_prompt(ok, prompt, out_col="prompt")
    sft = with_msgs.where(F.col("kind") == "sft").select(
        F.concat(F.col("prompt"), _assistant("chosen_response")).alias("messages"),
        "question_id", "rule", "model", F.col("chosen_temperature").alias("temperature"),
        F.col("chosen_sample_idx").alias("sample_idx"), F.col("chosen_score").alias("score"),
        F.col("chosen_answer").alias("answer"), "reference_answer", "doc_id", "prompt_name", "prompt_hash")
    dpo = with_msgs.where(F.col("kind") == "dpo").select(
        "prompt", _assistant("chosen_response").alias("chosen"), _assistant("rejected_response").alias("rejected"),
        "margin", "question_id", "rule", "model",
        "chosen_temperature", "chosen_sample_idx", "chosen_score", "chosen_answer",
        "rejected_temperature", "rejected_sample_idx", "rejected_score", "rejected_answer",
        "reference_answer", "doc_id", "prompt_name", "prompt_hash")
    return sft, dpo


def export_rule(ctx: StageContext, df: DataFrame, target: str, rows: int) -> None:
    """One rule's rows as JSONL and Parquet shards of at most ``rows_per_shard`` rows, ordered by key."""
    shards = max(1, math.ceil(rows / ctx.cfg.train_data.rows_per_shard))
    write_export(ctx.spark, df, target, ctx.cfg.train_data.formats, ctx.cfg.storage, ["question_id", "model"], shards)


def dataset_card(ctx: StageContext, kind: str, counts: dict, models: list[str]) -> str:
    """The export's README.md: what the rows are, how many each rule kept and dropped, and how they were made."""
    cfg = ctx.cfg
    s = cfg.self_sample
    fmt = ('{"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}], '
           '"question_id": ..., "rule": ..., "score": ..., ...}' if kind == "sft" else
           '{"prompt": [{"role": "user", ...}], "chosen": [{"role": "assistant", ...}], '
           '"rejected": [{"role": "assistant", ...}], "margin": ..., "question_id": ..., "rule": ..., ...}')
    lines = [
        "---", "tags: [natural-reasoning, self-training, " + ("sft" if kind == "sft" else "dpo") + "]", "---", "",
        f"# Self-training {'SFT / RFT' if kind == 'sft' else 'DPO'} data", "",
        "Built by natural-reasoning-spark's `train_data` stage from the `samples`, `sample_scores` and "
        "`answer_classes` tables (NaturalReasoning, arXiv:2502.13124, §6).", "",
        f"- config hash: `{cfg.config_hash()}` (train_data section `{cfg.config_hash('train_data')}`, "
        f"score section `{cfg.config_hash('score')}`, sampling section `{cfg.config_hash('self_sample')}`)",
        f"- policy models: {', '.join(f'`{m}`' for m in models) or 'none'}",
        f"- sampling: temperatures {s.temperatures}, {s.samples_per_temperature} per temperature "
        f"({s.zero_temperature_samples} at temperature 0), top_p {s.top_p}, max_tokens {s.max_tokens}, "
        f"seed {s.seed}, prompt `{s.prompt}`",
        f"- selection seed {cfg.train_data.seed}, min_score {cfg.train_data.min_score}", "",
        "## Format", "", "One folder per rule, each with `jsonl/` and `parquet/` shards holding the same rows:", "",
        "```", fmt, "```", "",
        "```python", "from datasets import load_dataset",
        f"ds = load_dataset(\"json\", data_files=\"{kind}/<rule>/jsonl/*.json\", split=\"train\")",
        f"# trl.{'SFTTrainer' if kind == 'sft' else 'DPOTrainer'}(model=..., train_dataset=ds, ...)", "```", "",
        "## Rules and counts", "", "| rule | rows | dropped (reason=count) | selection |", "|---|---|---|---|",
    ]
    for rule in cfg.train_data.rules:
        c = counts.get(rule, {})
        dropped = ", ".join(f"{k}={v}" for k, v in sorted(c.items()) if k != "ok") or "-"
        lines.append(f"| `{rule}` | {c.get('ok', 0)} | {dropped} | {RULE_TEXT[rule]} |")
    return "\n".join(lines) + "\n"


def run(ctx: StageContext) -> None:
    if ctx.up_to_date():
        ctx.count("skipped_up_to_date", 1)
        return
    cfg = ctx.cfg.train_data
    rows = candidate_rows(ctx)
    picks = select_samples(rows, cfg.rules, cfg.seed, cfg.min_score).persist()
    tally: dict[str, dict[str, dict[str, int]]] = {"sft": {}, "dpo": {}}
    for r in picks.groupBy("kind", "rule", "status").count().collect():
        tally[r["kind"]].setdefault(r["rule"], {})[r["status"]] = r["count"]
        key = f"{r['kind']}_{r['rule']}" if r["status"] == "ok" else f"dropped_{r['kind']}_{r['rule']}_{r['status']}"
        ctx.count(key, r["count"])
    ctx.count("in", picks.select("question_id", "model").distinct().count())
    sft, dpo = to_formats(ctx, picks)
    models = sorted(r[0] for r in picks.select("model").distinct().collect())
    root = ctx.cfg.expand(cfg.export_dir)
    for kind, df, table in (("sft", sft, "train_sft"), ("dpo", dpo, "train_dpo")):
        df = df.persist()
        n = ctx.store.overwrite(table, df)
        ctx.count(f"out_{kind}", df.count() if n is None or n < 0 else n)
        for rule in cfg.rules:
            export_rule(ctx, df.where(F.col("rule") == rule), f"{root}/{kind}/{rule}",
                        tally[kind].get(rule, {}).get("ok", 0))
        fs.write_text(f"{root}/{kind}/README.md", dataset_card(ctx, kind, tally[kind], models),
                   ctx.cfg.storage.storage_options)
        df.unpersist()
    picks.unpersist()
    ctx.metrics["exported"] = 1.0
    log.info("[train_data] exported to %s: %s", root, json.dumps(tally, sort_keys=True))


STAGE = Stage(
    "train_data", "selftrain", "whole_table", run, "builds the SFT/RFT and DPO exports from the scored samples",
    sections=("train_data",), inputs=("samples", "sample_scores", "answer_classes", "questions"),
    outputs=(Output("train_sft", tuple(KEY)), Output("train_dpo", ("question_id", "model"))),
)
