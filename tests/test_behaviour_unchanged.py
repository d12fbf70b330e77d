"""Behaviour is unchanged by the restructuring into stage specs: every table (and export) of the
scripted sample run holds the same rows as the same run before it.

EXPECTED was derived once, from the code before the restructuring (commit 5c1f76a), with this
module's ``table_digests``: per table its row count and a digest of its sorted key and status
columns (the columns that say what a row is and what became of it; texts and floats are left
out). The two selections that rank by embedding similarity keep only their counts: their
vectors come from a real encoder whose last digits differ between CPUs.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os

import pyarrow.parquet as pq
from deltalake import DeltaTable

KEY_COLUMNS = ["doc_id", "question_id", "id", "cluster_id", "keep", "id_a", "id_b", "item_id", "benchmark",
               "benchmark_item_id", "model", "sample_idx", "temperature", "kind", "judge_model", "response_model",
               "strategy", "status", "selected", "stage"]

EXPECTED = {
    "annotations": (94, "c5a7e782a8269b28"),
    "answer_classes": (98, "fba20d8c7ae4fefd"),
    "contamination": (2, "6e17526263e635fe"),
    "dataset": (49, "cb7298d24213e117"),
    "dedup_documents_clusters": (102, "a961d0154b2783c9"),
    "dedup_documents_pairs": (8, "63c79f78ce833856"),
    "dedup_questions_clusters": (51, "248d3ea9ec9524e3"),
    "dedup_questions_pairs": (0, "e3b0c44298fc1c14"),
    "documents": (105, "5afc6354782c54b1"),
    "judgments": (207, "e8842d35017d3df0"),
    "question_embeddings": (49, "fc11f1bba34a827f"),
    "question_scores": (49, "c988e3006d15172d"),
    "questions": (59, "92710aa68d3a9287"),
    "responses": (98, "105a9cb261631e54"),
    "sample_scores": (98, "975fecebed730279"),
    "samples": (98, "a70e0f17245d2cdc"),
    "selected_targeted": (8, None),
    "selected_traces": (48, "9d1172892446feee"),
    "sources/dclm": (67, "3d973c968ea6445e"),
    "sources/finemath": (48, "df908a2bc69e2cee"),
    "targeted_seeds": (22, None),
    "trace_strategies": (98, "29339009bcd5c4be"),
    "traces": (98, "c1a06b00827b2c0b"),
    "train_dpo": (52, "5b6473a759239deb"),
    "train_sft": (134, "f2f8744d6b5699df"),
    "export/jsonl": (49, None),
    "export/parquet": (49, None),
    "export/selection/naturalthoughts/jsonl": (20, None),
    "export/selection/naturalthoughts/parquet": (20, None),
    "export/selection/targeted/jsonl": (8, None),
    "export/selection/targeted/parquet": (8, None),
    "export/train/dpo": (36, None),
    "export/train/dpo/reference/jsonl": (0, None),
    "export/train/dpo/reference/parquet": (0, None),
    "export/train/dpo/reward/jsonl": (0, None),
    "export/train/dpo/reward/parquet": (0, None),
    "export/train/dpo/self_consistency/jsonl": (10, None),
    "export/train/dpo/self_consistency/parquet": (10, None),
    "export/train/dpo/self_score/jsonl": (21, None),
    "export/train/dpo/self_score/parquet": (21, None),
    "export/train/dpo/self_score_filtered/jsonl": (21, None),
    "export/train/dpo/self_score_filtered/parquet": (21, None),
    "export/train/sft": (36, None),
    "export/train/sft/reference/jsonl": (2, None),
    "export/train/sft/reference/parquet": (2, None),
    "export/train/sft/reward/jsonl": (0, None),
    "export/train/sft/reward/parquet": (0, None),
    "export/train/sft/self_consistency/jsonl": (45, None),
    "export/train/sft/self_consistency/parquet": (45, None),
    "export/train/sft/self_score/jsonl": (45, None),
    "export/train/sft/self_score/parquet": (45, None),
    "export/train/sft/self_score_filtered/jsonl": (42, None),
    "export/train/sft/self_score_filtered/parquet": (42, None),
}


def table_digests(root: str) -> dict[str, tuple[int, str]]:
    """(rows, digest) of every Delta table under ``root`` but ``runs``, and rows of every export folder."""
    out = {}
    for log_dir in sorted(glob.glob(os.path.join(root, "**", "_delta_log"), recursive=True)):
        name = os.path.relpath(os.path.dirname(log_dir), root)
        if name.startswith("_") or name == "runs":
            continue
        t = DeltaTable(os.path.dirname(log_dir)).to_pyarrow_table()
        cols = [c for c in KEY_COLUMNS if c in t.column_names]
        rows = sorted(json.dumps([t.column(c)[i].as_py() for c in cols], default=str) for i in range(t.num_rows))
        out[name] = (t.num_rows, hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16])
    exports: dict[str, int] = {}
    for f in sorted(glob.glob(os.path.join(root, "export", "**", "*"), recursive=True)):
        base = os.path.basename(f)
        if os.path.isfile(f) and not base.startswith((".", "_")):
            n = pq.read_metadata(f).num_rows if base.endswith(".parquet") else sum(1 for _ in open(f))
            folder = os.path.relpath(os.path.dirname(f), root)
            exports[folder] = exports.get(folder, 0) + n
    out.update({k: (n, None) for k, n in exports.items()})
    return out


def test_every_table_of_the_sample_run_is_unchanged(sample_run):
    cfg, rows = sample_run
    assert all(r["status"] == "ok" for r in rows), rows
    got = table_digests(cfg.storage.root)
    got = {k: (n, None if EXPECTED.get(k, (0, 1))[1] is None else d) for k, (n, d) in got.items()}
    changed = {k: (EXPECTED.get(k), got.get(k)) for k in set(EXPECTED) | set(got) if EXPECTED.get(k) != got.get(k)}
    assert not changed, f"tables that differ from the run before the restructuring (expected, got): {changed}"
