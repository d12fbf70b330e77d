"""Self-training with the real local model: SmolLM2-135M (vLLM on CPU where it imports, else
transformers) samples, self-scores and is selected on a few hand-written questions, and the
exported files are consumed by TRL's SFTTrainer and DPOTrainer for 2 optimizer steps each on
CPU, with a finite loss. Content quality is not asserted: a 135M model answers poorly."""
from __future__ import annotations

import glob
import math

import pytest
from pyspark.sql import functions as F

from jobs.common.config import load_config
from jobs.common.storage import TableStore
from jobs.pipeline import run_pipeline
from tests.conftest import REPO

QUESTIONS = [
    ("What is 12 times 7?", "84"),
    ("A train travels 60 km in 1.5 hours. What is its average speed in km/h?", "40"),
    ("What is the sum of the interior angles of a triangle, in degrees?", "180"),
    ("Simplify the fraction 18/24.", "\\frac{3}{4}"),
    ("Which planet is closest to the Sun?", "Mercury"),
    ("If x + 5 = 12, what is x?", "7"),
]
QUESTIONS_SCHEMA = "question_id string, doc_id string, question string, reference_answer string, status string"


@pytest.fixture(scope="module")
def exported(spark, real_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("smol_selftrain")
    cfg = load_config(f"{REPO}/conf/local.yaml", [
        f"storage.root={root}", "pipeline.progress=false",
        "self_sample.temperatures=[0.0, 1.0]", "self_sample.samples_per_temperature=3", "self_sample.max_tokens=96",
    ])
    store = TableStore(spark, cfg.storage)
    rows = [(f"q{i}", f"d{i}", q, a, "ok") for i, (q, a) in enumerate(QUESTIONS)]
    store.overwrite("questions", spark.createDataFrame(rows, QUESTIONS_SCHEMA))
    runs = run_pipeline(cfg, stages=["sample", "score", "train_data"], spark=spark)
    assert [r["status"] for r in runs] == ["ok"] * 3, runs
    return cfg, store, runs


def test_real_samples_scores_and_exports(exported):
    cfg, store, runs = exported
    samples = store.read("samples")
    assert samples.count() == len(QUESTIONS) * 4
    assert samples.agg(F.sum("completion_tokens")).collect()[0][0] > 0
    scores = store.read("sample_scores")
    statuses = {r.self_score_status for r in scores.select("self_score_status").distinct().collect()}
    assert statuses <= {"ok", "no_verdict", "no_logprobs", "sample_truncated", "sample_empty", "sample_llm_error"}
    assert scores.where(F.col("self_score_status") == "ok").count() > 0, "real first-token logprobs"
    assert scores.where((F.col("self_score_status") == "ok") & F.col("self_score").isNull()).count() == 0
    judged = scores.where(F.col("ref_status") == "ok")
    assert judged.count() > 0 and judged.where(~F.col("ref_method").startswith("equivalence:")).count() == 0, \
        "short references are checked by answer equivalence"
    assert store.read("train_sft").count() > 0 and store.read("train_dpo").count() > 0
    score_run = next(r for r in runs if r["stage"] == "score")
    assert "pass_at_1" in score_run["metrics"] and "maj_at_k" in score_run["metrics"]


def _files(cfg, kind: str) -> tuple[str, list[str]]:
    """The rule with the most exported rows and its JSONL shards."""
    root = cfg.expand(cfg.train_data.export_dir)
    best = max(cfg.train_data.rules, key=lambda r: sum(1 for f in glob.glob(f"{root}/{kind}/{r}/jsonl/*.json")
                                                        for _ in open(f)))
    return best, sorted(glob.glob(f"{root}/{kind}/{best}/jsonl/*.json"))


def _model_dir(cfg) -> str:
    from udfs.llm.models import resolve_model

    return resolve_model("smollm2-135m", "vllm", cfg.llm.cache_dir)


def _load(files):
    from datasets import load_dataset

    ds = load_dataset("json", data_files=files, split="train")
    assert len(ds) > 0
    return ds


def _train(cfg, kind: str, out_dir: str):
    """2 optimizer steps of TRL's trainer for ``kind`` on the export as written (lineage columns included)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    config_cls, trainer_cls = (SFTConfig, SFTTrainer) if kind == "sft" else (DPOConfig, DPOTrainer)
    _, files = _files(cfg, kind)
    path = _model_dir(cfg)
    torch.manual_seed(0)
    args = config_cls(output_dir=out_dir, max_steps=2, per_device_train_batch_size=2, learning_rate=1e-6,
                      logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, max_length=512,
                      dataloader_num_workers=0, seed=0)
    trainer = trainer_cls(model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), args=args,
                          train_dataset=_load(files), processing_class=AutoTokenizer.from_pretrained(path))
    return trainer.train()


def test_trl_sft_trains_on_the_sft_export(exported, tmp_path):
    out = _train(exported[0], "sft", str(tmp_path / "sft"))
    assert out.global_step == 2
    assert math.isfinite(out.training_loss) and out.training_loss > 0


def test_trl_dpo_trains_on_the_dpo_export(exported, tmp_path):
    out = _train(exported[0], "dpo", str(tmp_path / "dpo"))
    assert out.global_step == 2
    assert math.isfinite(out.training_loss)
