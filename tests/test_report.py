"""`nr report` on the scripted sample run: every number in report.json equals a count made here
independently (delta-rs + pandas, no Spark, none of the report's code), the PNGs are valid, the
HTML parses and every <img> resolves; missing and empty tables become notes."""
from __future__ import annotations

import json
import math
import os
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable

from jobs import cli
from jobs.common.config import validate_config
from jobs.stages import NAMES as STAGE_MODULES
from jobs.common.storage import TableStore
from jobs.ops.report import build_report

# Stages whose every run rebuilds the whole output (the others add only what is pending).
WHOLE_TABLE = ("doc_dedup", "question_dedup", "decontaminate", "semdedup", "dataset", "train_data",
               "select_targeted", "select_traces")


def words(s) -> int:
    return 0 if s is None else len(re.findall(r"\S+", s, re.ASCII))


def read(root: str, name: str) -> pd.DataFrame:
    return DeltaTable(os.path.join(root, name)).to_pandas()


def numbers(x, path="") -> dict:
    """Every number in a JSON value, by its path."""
    if isinstance(x, bool):
        return {}
    if isinstance(x, (int, float)):
        return {path: x}
    if isinstance(x, dict):
        return {k: v for key, val in x.items() for k, v in numbers(val, f"{path}.{key}").items()}
    if isinstance(x, list):
        return {k: v for i, val in enumerate(x) for k, v in numbers(val, f"{path}[{i}]").items()}
    return {}


def hist(values, edges) -> dict:
    counts, _ = np.histogram(np.asarray(values, dtype=float), bins=np.asarray(edges))
    return {"edges": edges, "counts": [int(c) for c in counts], "n": int(counts.sum())}


def assert_range(edges, values) -> None:
    """A histogram spans the values' min..max; all-equal values get one unit of width."""
    lo, hi = float(values.min()), float(values.max())
    assert edges[0] == lo and edges[-1] == pytest.approx(hi if hi > lo else lo + 1.0)


def pct(n, total):
    return round(100.0 * n / total, 4) if total else None


def r(x, nd):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


def expected_report(cfg, got: dict) -> dict:
    """The report's numbers recomputed from the Delta tables with pandas. Histogram edges are taken
    from the report (they follow from the min and max, checked here too); the counts are recounted."""
    root = cfg.storage.root
    rc = cfg.report
    exp: dict = {"config": rc.model_dump(mode="json")}
    exp["tables"] = {}
    for folder, dirs, _ in os.walk(root):
        if "_delta_log" in dirs:
            rel = os.path.relpath(folder, root)
            label = "source:" + rel.split("/", 1)[1] if rel.startswith("sources/") else rel
            t = DeltaTable(folder)
            exp["tables"][label] = {"rows": len(t.to_pandas()), "version": t.version()}
            dirs.clear()

    ds = read(root, "dataset")
    ds["source"] = ds["source"].fillna("unknown")
    t1 = {}
    for key, part in [*sorted(ds.groupby("source")), ("overall", ds)]:
        qw = part["question"].map(words)
        resp = [x["response"] for rs in part["responses"] for x in rs]
        rw = pd.Series([words(x) for x in resp], dtype=float)
        n = len(part)
        refs = int(part["reference_answer"].notna().sum())
        buckets = {b: int((part["answer_bucket"] == b).sum()) for b in ("single_word", "short", "long")}
        t1[key] = {"questions": n, "question_words_mean": r(qw.mean(), 2), "question_words_std": r(qw.std(ddof=1), 2),
                   "with_reference": refs, "with_reference_pct": pct(refs, n), "answer_buckets": buckets,
                   "answer_buckets_pct": {b: pct(v, n) for b, v in buckets.items()},
                   "responses": len(resp), "response_words_mean": r(rw.mean(), 2) if len(rw) else None,
                   "response_words_median": r(rw.median(), 2) if len(rw) else None}
    exp["table1"] = t1

    docs, ann, qs = read(root, "documents"), read(root, "annotations"), read(root, "questions")
    ddq, cont = read(root, "dedup_questions_clusters"), read(root, "contamination")
    ok_q = set(qs.loc[qs["status"] == "ok", "question_id"])
    after_dedup = ok_q - set(ddq.loc[~ddq["keep"], "id"])
    after_cont = after_dedup - set(cont["item_id"])
    exp["funnel"] = [{"step": s, "count": n} for s, n in [
        ("documents", len(docs)), ("usable", int((docs["status"] == "ok").sum())), ("selected", int(ann["selected"].sum())),
        ("questions", len(ok_q)), ("after dedup", len(after_dedup)), ("after decontamination", len(after_cont)),
        ("dataset", len(ds))]]

    runs = read(root, "runs")
    runs["counts"] = runs["counts"].map(dict)
    ok_runs = runs[runs["status"] == "ok"]
    drops: dict = {}
    for stage, part in ok_runs.groupby("stage"):
        if stage in WHOLE_TABLE:
            part = part[part["counts"].map(lambda c: "in" in c)].sort_values("finished_at").tail(1)
        for c in part["counts"]:
            for k, v in c.items():
                if k.startswith(("dropped_", "failed_")) and v:
                    drops.setdefault(stage, {}).setdefault(k, 0)
                    drops[stage][k] += int(v)
    exp["drops"] = drops

    dist: dict = {}
    ok_ann = ann[ann["status"] == "ok"]
    dist["annotation_scores"] = {a: {str(int(k)): int(v) for k, v in sorted(ok_ann[a].dropna().value_counts().items())}
                                 for a in ("completeness", "complexity", "correctness", "reasoning")}
    jd = read(root, "judgments")
    jd = jd[jd["status"] == "ok"]
    qual = jd.loc[jd["kind"] == "quality", "score"].dropna().astype(int)
    dist["question_quality"] = {str(k): int(v) for k, v in sorted(qual.value_counts().items())}
    dist["reference_agreement"] = {k: int(v) for k, v in sorted(
        jd.loc[jd["kind"] == "reference_agreement", "verdict"].dropna().value_counts().items())}
    ss = jd.loc[jd["kind"] == "self_score", "score"].dropna()
    g = got["distributions"]["self_score"]
    assert_range(g["edges"], ss)
    dist["self_score"] = hist(ss, g["edges"])
    resp = read(root, "responses")
    rw = resp.loc[resp["status"] == "ok", "response"].map(words)
    g = got["distributions"]["response_words"]
    assert_range(g["edges"], rw)
    dist["response_words"] = hist(rw, g["edges"])
    dom = ds["domain"].fillna("(none)").value_counts()
    dist["domains"] = {k: int(v) for k, v in sorted(dom.items(), key=lambda kv: (-kv[1], kv[0]))[:25]}
    dist["domains_distinct"] = int(ds["domain"].nunique(dropna=False))
    exp["distributions"] = dist

    exp["dedup"] = {}
    for prefix in ("dedup_questions", "dedup_documents"):
        cl, pairs = read(root, f"{prefix}_clusters"), read(root, f"{prefix}_pairs")
        sizes = cl.groupby("cluster_id").size().value_counts().sort_index()
        exp["dedup"][prefix] = {
            "items": len(cl), "removed": int((~cl["keep"]).sum()),
            "cluster_sizes": {str(k): int(v) for k, v in sizes.items()},
            "clusters_with_duplicates": int(sizes[sizes.index > 1].sum()), "verified_pairs": len(pairs),
            "pair_jaccard": hist(pairs["jaccard"], got["dedup"][prefix]["pair_jaccard"]["edges"])
            if len(pairs) else None}
    checked = len(ok_q)
    per = cont.groupby("benchmark")["item_id"].nunique().to_dict()
    last_dc = ok_runs[(ok_runs["stage"] == "decontaminate") & ok_runs["counts"].map(lambda c: "in" in c)] \
        .sort_values("finished_at").iloc[-1]["counts"]
    names = sorted(set(per) | {k[len("benchmark_ngrams_"):] for k in last_dc if k.startswith("benchmark_ngrams_")})
    exp["decontamination"] = {"questions_checked": checked, "contaminated": cont["item_id"].nunique(),
                              "contaminated_pct": pct(cont["item_id"].nunique(), checked),
                              "per_benchmark": {b: {"contaminated": int(per.get(b, 0)), "pct": pct(per.get(b, 0), checked)}
                                                for b in names}}

    emb = read(root, "question_embeddings")
    emb = emb[(emb["status"] == "ok") & (emb["model"] == emb["model"].min())]
    x = np.stack(emb["embedding"].map(lambda v: np.asarray(v, dtype=float)).to_list())
    eig = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]
    exp["embedding_map"] = {"explained_variance": [r(v, 6) for v in (eig / eig.sum())[:2]],
                            "points": min(len(emb), rc.embedding_points)}

    n_docs = len(docs)
    stages = {}
    for stage in [s for s in STAGE_MODULES if s in set(ok_runs["stage"])]:
        part = ok_runs[ok_runs["stage"] == stage]
        wall = float(part["wall_seconds"].sum())
        tot = {k: int(sum(c.get(k, 0) for c in part["counts"])) for k in ("in", "out", "prompt_tokens", "completion_tokens")}
        p, c = tot["prompt_tokens"], tot["completion_tokens"]
        gpu_h = (p / rc.gpu_prompt_tokens_per_s + c / rc.gpu_tokens_per_s) / 3600
        e = {"runs": len(part), "wall_seconds": r(wall, 2), "rows_in": tot["in"], "rows_out": tot["out"],
             "rows_per_s": r(tot["in"] / wall, 3), "prompt_tokens": p, "completion_tokens": c,
             "tokens_per_s": r((p + c) / wall, 3), "gpu_hours": r(gpu_h, 6)}
        if p or c:
            scale = rc.project_to_docs / n_docs
            e.update({"tokens_per_document": r((p + c) / n_docs, 4), "projected_prompt_tokens": r(p * scale, 0),
                      "projected_completion_tokens": r(c * scale, 0), "projected_gpu_hours": r(gpu_h * scale, 2)})
        stages[stage] = e
    proj = [s["projected_gpu_hours"] for s in stages.values() if "projected_gpu_hours" in s]
    exp["cost"] = {"documents": n_docs, "gpu_tokens_per_s": rc.gpu_tokens_per_s,
                   "gpu_prompt_tokens_per_s": rc.gpu_prompt_tokens_per_s, "project_to_docs": rc.project_to_docs,
                   "stages": stages, "gpu_hours": r(sum(s["gpu_hours"] for s in stages.values()), 6),
                   "projected_gpu_hours": r(sum(proj), 2)}

    by_id = ds.set_index("question_id")
    exp["examples"] = []
    for ex in got["examples"]:
        row = by_id.loc[ex["question_id"]]
        exp["examples"].append({k: r(row[k], 4) for k in ("question_quality_score", "reference_agreement", "self_score")})
    return exp


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a.get("src"))


@pytest.fixture(scope="module")
def report(sample_run, spark, tmp_path_factory):
    cfg, _ = sample_run
    out = tmp_path_factory.mktemp("report")
    build_report(cfg, spark, str(out))
    with open(out / "report.json") as f:
        return cfg, out, json.load(f)


def test_every_number_equals_an_independent_count(report):
    cfg, _, got = report
    exp = expected_report(cfg, got)
    got_numbers = numbers({k: got[k] for k in exp if k != "examples"})
    exp_numbers = numbers({k: exp[k] for k in exp if k != "examples"})
    assert set(got_numbers) == set(exp_numbers), set(got_numbers) ^ set(exp_numbers)
    for path, v in exp_numbers.items():
        # PCA's explained variance comes from a different eigen-solver: equal to 4 decimals.
        tol = 1e-4 if path.startswith(".embedding_map.explained_variance") else 1e-9
        assert got_numbers[path] == pytest.approx(v, rel=tol, abs=tol), path
    # Every number the report holds is one of these or an example's score (checked below).
    top = numbers(got)
    assert {p for p in top if not p.startswith(".examples")} == set(got_numbers)
    assert [{k: ex[k] for k in ("question_quality_score", "reference_agreement", "self_score")}
            for ex in got["examples"]] == exp["examples"]
    dataset = len(read(cfg.storage.root, "dataset"))
    assert dataset > 0 and got["table1"]["overall"]["questions"] == dataset
    assert got["funnel"][-1] == {"step": "dataset", "count": dataset}


def test_examples_are_seeded_rows_with_their_lineage(report, spark):
    cfg, out, got = report
    assert len(got["examples"]) == 20
    ds = read(cfg.storage.root, "dataset").set_index("question_id")
    for ex in got["examples"]:
        row = ds.loc[ex["question_id"]]
        assert (ex["question"], ex["url"], ex["doc_id"]) == (row["question"], row["url"], row["doc_id"])
        assert ex["response"] == (row["responses"][0]["response"] if len(row["responses"]) else None)
    again = build_report(cfg, spark, str(out / "again"))
    assert [e["question_id"] for e in again["examples"]] == [e["question_id"] for e in got["examples"]]


def test_images_are_valid_and_the_html_resolves_them(report):
    from PIL import Image

    _, out, got = report
    assert {"funnel.png", "annotation_scores.png", "question_quality.png", "self_score.png", "response_words.png",
            "dedup_documents.png", "decontamination.png", "cost.png", "embedding_map.png"} <= set(got["images"])
    for name in got["images"]:
        path = out / name
        assert path.stat().st_size > 2000, name
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
        with Image.open(path) as im:
            im.verify()
    page = (out / "index.html").read_text()
    parser = Images()
    parser.feed(page)
    parser.close()
    assert sorted(parser.srcs) == sorted(got["images"])
    assert all((out / s).is_file() for s in parser.srcs)
    assert "script" not in parser.tags and "http://" not in page.split("<body>")[0] and "https://" not in \
        page.split("<body>")[0], "no scripts, nothing fetched"


def test_missing_and_empty_tables_become_notes(spark, tmp_path, capsys):
    root = tmp_path / "root"
    cfg = validate_config({"storage": {"root": str(root)}, "pipeline": {"progress": False}}, "test")
    store = TableStore(spark, cfg.storage)
    store.overwrite("questions", spark.createDataFrame([], "question_id string, status string, question string"))
    store.overwrite("question_embeddings", spark.createDataFrame(
        [(f"q{i}", [float(i % 3), float(i), float(i * i % 7), 1.0]) for i in range(40)],
        "question_id string, embedding array<float>"))
    conf = tmp_path / "c.yaml"
    conf.write_text(f"storage: {{root: {root}}}\n")
    assert cli.main(["report", "--config", str(conf)]) == 0
    out = root / "report"
    assert f"report: {out / 'index.html'}" in capsys.readouterr().out
    got = json.loads((out / "report.json").read_text())
    notes = "\n".join(got["notes"])
    assert "questions: table is empty" in notes and "dataset: table not found" in notes
    assert "runs: table not found" in notes
    assert got["table1"] is None and got["cost"] is None and got["examples"] == []
    assert got["embedding_map"]["points"] == 40 and "embedding_map.png" in got["images"]
    page = (out / "index.html").read_text()
    assert "questions: table is empty" in page and 'src="embedding_map.png"' in page


def test_nr_run_with_report_writes_it_in_the_same_session(spark, tmp_path, capsys):
    """``nr run --report DIR`` (what run-sample.sh calls): the report after a run without
    failures, its path as the last line; no report when a stage fails."""
    root = tmp_path / "root"
    conf = tmp_path / "c.yaml"
    conf.write_text(f"storage: {{root: {root}}}\npipeline: {{progress: false}}\n")
    out = tmp_path / "rep"
    assert cli.main(["run", "--config", str(conf), "--stages", "bootstrap", "--report", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"report: {out / 'index.html'}"
    got = json.loads((out / "report.json").read_text())
    assert "runs: table not found" not in "\n".join(got["notes"])  # the run's own runs row is in it
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"storage: {{root: {root}}}\npipeline: {{progress: false}}\n"
                   f"ingest: {{sources: [{{name: x, path: {tmp_path / 'missing'}}}]}}\n")
    assert cli.main(["run", "--config", str(bad), "--stages", "ingest", "--report", str(tmp_path / "no")]) != 0
    assert not (tmp_path / "no").exists()
