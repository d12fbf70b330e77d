"""``nr report --config F [--output DIR]``: the dataset's statistics, plots and cost as an offline HTML page.

Writes ``DIR/index.html`` (no JavaScript, no CDN), one PNG per plot (matplotlib, Agg) and
``DIR/report.json`` with every number the page shows. Default ``DIR`` = ``report.output_dir``.

Every statistic is a Spark aggregation and only bounded results reach the driver: histograms
are binned and counted in Spark (a few dozen rows), medians are exact percentiles of integer
word counts (a map of distinct values), the examples are a seeded sample of
``report.examples`` rows and the embedding map a seeded sample of ``report.embedding_points``
points. A table that is missing or empty becomes a note in the page, never an error.
"""
from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Optional

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.common.config import PipelineConfig
from jobs.common.storage import TableStore
from udfs import fs
from jobs.ops.args import parse, parse_common, start_spark
from jobs.ops.status import tables_status
from jobs.stages import NAMES, STAGES

log = logging.getLogger("nr")

AXES = ["completeness", "complexity", "correctness", "reasoning"]
BUCKETS = [("single_word", "single word"), ("short", "2-9 words"), ("long", "10+ words")]
EMBEDDINGS_TABLE = "question_embeddings"


# --------------------------------------------------------------------------- Spark helpers


def words(col: Column) -> Column:
    """Whitespace-separated words of a string column (runs of non-whitespace); 0 for null."""
    return F.coalesce(F.regexp_count(col, F.lit(r"\S+")), F.lit(0))


def value_counts(df: DataFrame, col: str) -> dict:
    """value -> count for a column of few distinct values (scores, buckets, verdicts)."""
    return {r[0]: int(r[1]) for r in df.groupBy(col).count().orderBy(col).collect()}


def histogram(df: DataFrame, col: str, bins: int, lo: Optional[float] = None, hi: Optional[float] = None) -> dict:
    """Equal-width histogram computed in Spark: edges and counts (``bins`` rows reach the driver).

    Without ``lo``/``hi`` the range is the column's min and max (one more aggregation)."""
    x = df.where(F.col(col).isNotNull()).select(F.col(col).cast("double").alias("x"))
    if lo is None or hi is None:
        r = x.agg(F.min("x").alias("lo"), F.max("x").alias("hi"), F.count("*").alias("n")).collect()[0]
        if not r["n"]:
            return {"edges": [], "counts": [], "n": 0}
        lo, hi = float(r["lo"]), float(r["hi"])
    if hi <= lo:
        hi = lo + 1.0
    width = (hi - lo) / bins
    edges = [lo + i * width for i in range(bins)] + [hi]
    # The bin is the number of interior edges at or below x: numpy.histogram's rule exactly (the
    # last bin closed), with no floating-point disagreement at an edge.
    idx = sum((F.col("x") >= F.lit(e)).cast("int") for e in edges[1:-1])
    got = {r[0]: int(r[1]) for r in x.where((F.col("x") >= lo) & (F.col("x") <= hi))
           .groupBy(idx.alias("b")).count().collect()}
    counts = [got.get(i, 0) for i in range(bins)]
    return {"edges": edges, "counts": counts, "n": sum(counts)}


def _r(x: Optional[float], nd: int = 4) -> Optional[float]:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


def _pct(n: int, total: int) -> Optional[float]:
    return round(100.0 * n / total, 4) if total else None


# --------------------------------------------------------------------------- the report


@dataclass
class Report:
    cfg: PipelineConfig
    spark: Any
    out_dir: str
    data: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    images: list = field(default_factory=list)

    def __post_init__(self):
        self.store = TableStore(self.spark, self.cfg.storage)
        self.rcfg = self.cfg.report
        self._cache: dict[str, Optional[DataFrame]] = {}

    def table(self, name: str, why: str) -> Optional[DataFrame]:
        """The table, or None with a note when it is missing or empty (its rows from the Delta log)."""
        if name in self._cache:
            return self._cache[name]
        version = self.store.version(name)
        rows = self.store.num_rows(name) if version is not None else None
        df = None
        if version is None:
            self.notes.append(f"{name}: table not found under {self.cfg.storage.root}; {why} left out")
        elif rows == 0:
            self.notes.append(f"{name}: table is empty; {why} left out")
        else:
            df = self.store.read(name)
        self._cache[name] = df
        return df

    def plot(self, name: str, draw) -> str:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig = draw(plt)
        path = os.path.join(self.out_dir, f"{name}.png")
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        self.images.append(f"{name}.png")
        return f"{name}.png"


def table_counts(r: Report) -> dict:
    return {t["table"]: {"rows": t["rows"], "version": t["version"]} for t in tables_status(r.cfg, r.store)
            if t["version"] is not None}


def dataset_statistics(r: Report) -> Optional[dict]:
    """Paper Table 1, per source and overall, from the final ``dataset``."""
    ds = r.table("dataset", "the dataset statistics (Table 1)")
    if ds is None:
        return None
    q = ds.select(F.coalesce("source", F.lit("unknown")).alias("source"), words(F.col("question")).alias("qw"),
                  F.col("reference_answer").isNotNull().alias("has_ref"), "answer_bucket")
    aggs = [F.count("*").alias("questions"), F.avg("qw").alias("qw_mean"), F.stddev_samp("qw").alias("qw_std"),
            F.sum(F.col("has_ref").cast("int")).alias("with_reference")]
    aggs += [F.sum((F.col("answer_bucket") == b).cast("int")).alias(b) for b, _ in BUCKETS]
    resp = ds.select(F.coalesce("source", F.lit("unknown")).alias("source"),
                     F.explode("responses").alias("r")).select("source", words(F.col("r.response")).alias("rw"))
    raggs = [F.count("*").alias("responses"), F.avg("rw").alias("rw_mean"), F.median("rw").alias("rw_median")]
    out: dict = {}
    for key, qrow, rrow in _by_source_and_overall(q, aggs, resp, raggs):
        n = int(qrow["questions"])
        out[key] = {
            "questions": n,
            "question_words_mean": _r(qrow["qw_mean"], 2), "question_words_std": _r(qrow["qw_std"], 2),
            "with_reference": int(qrow["with_reference"] or 0),
            "with_reference_pct": _pct(int(qrow["with_reference"] or 0), n),
            "answer_buckets": {b: int(qrow[b] or 0) for b, _ in BUCKETS},
            "answer_buckets_pct": {b: _pct(int(qrow[b] or 0), n) for b, _ in BUCKETS},
            "responses": int(rrow["responses"]) if rrow else 0,
            "response_words_mean": _r(rrow["rw_mean"], 2) if rrow else None,
            "response_words_median": _r(rrow["rw_median"], 2) if rrow else None,
        }
    return out


def _by_source_and_overall(q: DataFrame, aggs: list, resp: DataFrame, raggs: list):
    """(key, question aggregates, response aggregates) per source, then "overall"; one rollup each."""
    qrows = q.rollup("source").agg(*aggs, F.grouping("source").alias("_g")).collect()
    rrows = {(x["_g"], x["source"]): x for x in resp.rollup("source").agg(*raggs, F.grouping("source").alias("_g")).collect()}
    for row in sorted(qrows, key=lambda x: (x["_g"], x["source"] or "")):
        key = "overall" if row["_g"] else row["source"]
        yield key, row, rrows.get((row["_g"], row["source"]))


def run_drops(r: Report) -> dict:
    """Per stage, the drop and failure reasons recorded in ``runs``: summed over the runs of stages
    that process only what is pending; for stages that rebuild their whole output, from the last
    run that did the work (a run skipped as up to date has no ``in`` count)."""
    runs = r.table("runs", "the drop reasons and the cost view")
    if runs is None:
        return {}
    from pyspark.sql import Window

    reason = F.explode(F.col("counts")).alias("k", "v")
    ok = runs.where(F.col("status") == "ok")
    whole = F.col("stage").isin(*[st.name for st in STAGES if st.kind == "whole_table"])
    w = Window.partitionBy("stage").orderBy(F.col("finished_at").desc(), F.col("run_id"))
    last_work = (ok.where(whole & F.col("counts").getItem("in").isNotNull())
                 .withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") == 1).drop("_rn"))
    counted = ok.where(~whole).unionByName(last_work).select("stage", reason)
    got = (counted.where(F.col("k").startswith("dropped_") | F.col("k").startswith("failed_"))
           .groupBy("stage", "k").agg(F.sum("v").alias("v")).collect())
    out: dict = {}
    for row in got:
        if row["v"]:
            out.setdefault(row["stage"], {})[row["k"]] = int(row["v"])
    return {s: dict(sorted(v.items())) for s, v in sorted(out.items())}


def funnel(r: Report) -> list[dict]:
    """The stages' funnel steps in pipeline order (``Stage.funnel``): documents -> usable ->
    selected -> questions -> after dedup -> after decontamination -> dataset."""
    kept: dict = {}
    return [{"step": label, "count": int(n)} for stage in STAGES if stage.funnel
            for label, n in stage.funnel(r.table, kept) if n is not None]


def distributions(r: Report) -> dict:
    bins = r.rcfg.histogram_bins
    out: dict = {}
    ann = r.table("annotations", "the annotation score distributions")
    if ann is not None:
        okay = ann.where(F.col("status") == "ok")
        exploded = okay.select(F.explode(F.array(*[F.struct(F.lit(a).alias("axis"), F.col(a).cast("int").alias("score"))
                                                   for a in AXES])).alias("e")).select("e.axis", "e.score")
        per: dict = {a: {} for a in AXES}
        for row in exploded.where(F.col("score").isNotNull()).groupBy("axis", "score").count().collect():
            per[row["axis"]][str(row["score"])] = int(row["count"])
        out["annotation_scores"] = {a: dict(sorted(v.items(), key=lambda kv: int(kv[0]))) for a, v in per.items()}
    jd = r.table("judgments", "the judge score distributions")
    if jd is not None:
        okj = jd.where(F.col("status") == "ok")
        quality = okj.where(F.col("kind") == "quality").select(F.col("score").cast("int").alias("s"))
        out["question_quality"] = {str(k): v for k, v in value_counts(quality.where(F.col("s").isNotNull()), "s").items()}
        ref = okj.where(F.col("kind") == "reference_agreement").select("verdict")
        out["reference_agreement"] = value_counts(ref.where(F.col("verdict").isNotNull()), "verdict")
        out["self_score"] = histogram(okj.where(F.col("kind") == "self_score"), "score", bins)
    resp = r.table("responses", "the response length distribution")
    if resp is not None:
        lengths = resp.where(F.col("status") == "ok").select(words(F.col("response")).alias("w"))
        out["response_words"] = histogram(lengths, "w", bins)
    ds = r.table("dataset", "the domain counts")
    if ds is not None:
        top = (ds.groupBy(F.coalesce("domain", F.lit("(none)")).alias("domain")).count()
               .orderBy(F.col("count").desc(), "domain").limit(25).collect())
        out["domains"] = {row["domain"]: int(row["count"]) for row in top}
        out["domains_distinct"] = ds.select("domain").distinct().count()
    return out


# PCA to two components needs a covariance of at least 2 rows; 3 points make a map worth drawing.
MIN_MAP_POINTS = 3


def embedding_map(r: Report) -> Optional[dict]:
    """A 2-D PCA of the embeddings table (Spark ML, distributed), drawn from a seeded sample."""
    if not r.store.exists(EMBEDDINGS_TABLE):
        r.notes.append(f"{EMBEDDINGS_TABLE}: table not found; the embedding map is left out "
                       "(it appears once an embeddings table exists)")
        return None
    emb = r.table(EMBEDDINGS_TABLE, "the embedding map")
    if emb is None:
        return None
    arrays = [f.name for f in emb.schema.fields if f.dataType.typeName() == "array"]
    key = next((c for c in ("question_id", "doc_id", "id") if c in emb.columns), None)
    if not arrays or key is None:
        r.notes.append(f"{EMBEDDINGS_TABLE}: no array column and id column found (columns {emb.columns}); "
                       "the embedding map is left out")
        return None
    from pyspark.ml.feature import PCA
    from pyspark.ml.functions import array_to_vector

    if "status" in emb.columns:
        emb = emb.where(F.col("status") == "ok")
    if "model" in emb.columns:  # one embedding space: the first model by name
        first = emb.agg(F.min("model").alias("m")).collect()[0]["m"]
        emb = emb.where(F.col("model") == first)
    vec = emb.select(key, array_to_vector(F.col(arrays[0]).cast("array<double>")).alias("v"))
    have = vec.limit(MIN_MAP_POINTS).count()
    if have < MIN_MAP_POINTS:
        r.notes.append(f"{EMBEDDINGS_TABLE}: {have} usable embedding(s); the embedding map (a 2-D PCA) needs at "
                       f"least {MIN_MAP_POINTS} and is left out")
        return None
    model = PCA(k=2, inputCol="v", outputCol="pc").fit(vec)
    sample = (vec.orderBy(F.xxhash64(F.col(key), F.lit(r.rcfg.seed)), key).limit(r.rcfg.embedding_points))
    ds = r.store.read("dataset").select("question_id", "domain") if key == "question_id" and \
        r.store.exists("dataset") else None
    if ds is not None:
        sample = sample.join(ds, "question_id", "left")
    from pyspark.ml.functions import vector_to_array

    pts = model.transform(sample).select(key, vector_to_array("pc").alias("pc"),
                                         *(["domain"] if ds is not None else [])).collect()
    return {"method": "pca", "explained_variance": [_r(x, 6) for x in model.explainedVariance.toArray()],
            "points": len(pts), "column": arrays[0],
            "_xy": [(p["pc"][0], p["pc"][1], (p["domain"] if ds is not None else None) or "(none)") for p in pts]}


def dedup_view(r: Report, prefix: str, label: str) -> Optional[dict]:
    clusters = r.table(f"{prefix}_clusters", f"the {label} dedup view")
    if clusters is None:
        return None
    sizes = clusters.groupBy("cluster_id").count().groupBy(F.col("count").alias("size")).count()
    size_hist = {str(row["size"]): int(row["count"]) for row in sizes.orderBy("size").collect()}
    removed = clusters.where(~F.col("keep")).count()
    out = {"items": clusters.count(), "removed": removed, "cluster_sizes": size_hist,
           "clusters_with_duplicates": sum(v for k, v in size_hist.items() if int(k) > 1)}
    pairs = r.table(f"{prefix}_pairs", f"the {label} Jaccard view")
    out["verified_pairs"] = pairs.count() if pairs is not None else 0
    out["pair_jaccard"] = histogram(pairs, "jaccard", r.rcfg.histogram_bins, 0.0, 1.0) if pairs is not None else None
    return out


def decontamination_view(r: Report) -> Optional[dict]:
    cont = r.table("contamination", "the decontamination view")
    qs = r.store.read("questions") if r.store.exists("questions") else None
    checked = qs.where(F.col("status") == "ok").count() if qs is not None else None
    per = {} if cont is None else {row["benchmark"]: int(row["n"]) for row in
                                   cont.groupBy("benchmark").agg(F.countDistinct("item_id").alias("n")).collect()}
    if cont is None and not r.store.exists("contamination"):
        return None
    total = cont.select("item_id").distinct().count() if cont is not None else 0
    benchmarks = sorted(set(per) | set(_checked_benchmarks(r)))
    return {"questions_checked": checked, "contaminated": total, "contaminated_pct": _pct(total, checked or 0),
            "per_benchmark": {b: {"contaminated": per.get(b, 0), "pct": _pct(per.get(b, 0), checked or 0)}
                              for b in benchmarks}}


def _checked_benchmarks(r: Report) -> list[str]:
    """Benchmarks the last decontamination run checked (its counts name them), zero hits included."""
    if not r.store.exists("runs"):
        return []
    row = (r.store.read("runs").where((F.col("stage") == "decontaminate") & (F.col("status") == "ok")
                                      & F.col("counts").getItem("in").isNotNull())
           .orderBy(F.col("finished_at").desc()).select(F.map_keys("counts").alias("k")).limit(1).collect())
    return [k[len("benchmark_ngrams_"):] for k in (row[0]["k"] if row else []) if k.startswith("benchmark_ngrams_")]


def cost(r: Report, documents: Optional[int]) -> Optional[dict]:
    """Per stage over every successful run: wall time, rows, tokens, rates, GPU-hours, projection."""
    runs = r.table("runs", "the cost view")
    if runs is None:
        return None
    c = F.col("counts")
    per = (runs.where(F.col("status") == "ok").groupBy("stage").agg(
        F.count("*").alias("runs"), F.sum("wall_seconds").alias("wall"),
        F.sum(F.coalesce(c["in"], F.lit(0))).alias("rows_in"), F.sum(F.coalesce(c["out"], F.lit(0))).alias("rows_out"),
        F.sum(F.coalesce(c["prompt_tokens"], F.lit(0))).alias("prompt"),
        F.sum(F.coalesce(c["completion_tokens"], F.lit(0))).alias("completion")).collect())
    rc = r.rcfg
    order = {s: i for i, s in enumerate(NAMES)}
    stages = {}
    for row in sorted(per, key=lambda x: order.get(x["stage"], 99)):
        wall, p, cpl = float(row["wall"] or 0), int(row["prompt"]), int(row["completion"])
        gpu_h = (p / rc.gpu_prompt_tokens_per_s + cpl / rc.gpu_tokens_per_s) / 3600.0
        entry = {
            "runs": int(row["runs"]), "wall_seconds": _r(wall, 2), "rows_in": int(row["rows_in"]),
            "rows_out": int(row["rows_out"]), "rows_per_s": _r(row["rows_in"] / wall, 3) if wall else None,
            "prompt_tokens": p, "completion_tokens": cpl,
            "tokens_per_s": _r((p + cpl) / wall, 3) if wall else None, "gpu_hours": _r(gpu_h, 6),
        }
        if documents and (p or cpl):
            scale = rc.project_to_docs / documents
            entry["tokens_per_document"] = _r((p + cpl) / documents, 4)
            entry["projected_prompt_tokens"] = _r(p * scale, 0)
            entry["projected_completion_tokens"] = _r(cpl * scale, 0)
            entry["projected_gpu_hours"] = _r(gpu_h * scale, 2)
        stages[row["stage"]] = entry
    total_gpu = sum(s["gpu_hours"] for s in stages.values())
    proj = [s["projected_gpu_hours"] for s in stages.values() if "projected_gpu_hours" in s]
    return {"documents": documents, "gpu_tokens_per_s": rc.gpu_tokens_per_s,
            "gpu_prompt_tokens_per_s": rc.gpu_prompt_tokens_per_s, "project_to_docs": rc.project_to_docs,
            "stages": stages, "gpu_hours": _r(total_gpu, 6), "projected_gpu_hours": _r(sum(proj), 2) if proj else None}


def examples(r: Report) -> list[dict]:
    ds = r.table("dataset", "the examples")
    if ds is None or r.rcfg.examples == 0:
        return []
    rows = (ds.orderBy(F.xxhash64("question_id", F.lit(r.rcfg.seed)), "question_id").limit(r.rcfg.examples)
            .select("question_id", "doc_id", "source", "url", "domain", "question", "reference_answer",
                    F.get("responses", 0)["response"].alias("response"),
                    F.get("responses", 0)["response_model"].alias("response_model"),
                    "question_quality_score", "reference_agreement", "self_score").collect())
    return [{k: (_r(v, 4) if isinstance(v, float) else v) for k, v in row.asDict().items()} for row in rows]


# --------------------------------------------------------------------------- plots


def draw_plots(r: Report) -> dict[str, str]:
    d = r.data
    made: dict[str, str] = {}

    if d.get("funnel"):
        steps = d["funnel"]

        def f(plt):
            fig, ax = plt.subplots(figsize=(8, 0.5 * len(steps) + 1))
            ax.barh([s["step"] for s in steps][::-1], [s["count"] for s in steps][::-1], color="#4878a8")
            for i, s in enumerate(steps[::-1]):
                ax.text(s["count"], i, f" {s['count']:,}", va="center")
            ax.set_xlabel("rows")
            ax.set_title("funnel")
            return fig
        made["funnel"] = r.plot("funnel", f)
    dist = d.get("distributions") or {}
    if dist.get("annotation_scores"):
        def f(plt):
            fig, axes = plt.subplots(1, 4, figsize=(12, 2.8), sharey=True)
            for ax, a in zip(axes, AXES):
                v = dist["annotation_scores"][a]
                ax.bar(list(v), list(v.values()), color="#6a9f58")
                ax.set_title(a)
                ax.set_xlabel("score (0-4)")
            axes[0].set_ylabel("documents")
            return fig
        made["annotation_scores"] = r.plot("annotation_scores", f)
    for key, title, xlabel in (("question_quality", "question quality (1-10)", "score"),
                               ("reference_agreement", "reference-answer agreement", "verdict")):
        if dist.get(key):
            def f(plt, key=key, title=title, xlabel=xlabel):
                fig, ax = plt.subplots(figsize=(6, 2.8))
                ax.bar(list(dist[key]), list(dist[key].values()), color="#d1885c")
                ax.set_title(title)
                ax.set_xlabel(xlabel)
                return fig
            made[key] = r.plot(key, f)
    for key, title in (("self_score", "self-score logp(Yes) - logp(No)"), ("response_words", "response length (words)")):
        h = dist.get(key)
        if h and h["n"]:
            def f(plt, h=h, title=title):
                fig, ax = plt.subplots(figsize=(6, 2.8))
                e = h["edges"]
                ax.bar(e[:-1], h["counts"], width=[b - a for a, b in zip(e[:-1], e[1:])], align="edge",
                       color="#8c6bb1", edgecolor="white")
                ax.set_title(title)
                return fig
            made[key] = r.plot(key, f)
    if dist.get("domains"):
        def f(plt):
            items = list(dist["domains"].items())
            fig, ax = plt.subplots(figsize=(7, 0.3 * len(items) + 1))
            ax.barh([k for k, _ in items][::-1], [v for _, v in items][::-1], color="#4878a8")
            ax.set_title("domains (dataset)")
            return fig
        made["domains"] = r.plot("domains", f)
    em = d.get("embedding_map")
    if em and em.get("_xy"):
        def f(plt):
            fig, ax = plt.subplots(figsize=(6, 5))
            doms = sorted({p[2] for p in em["_xy"]})
            cmap = plt.get_cmap("tab20")
            for i, dom in enumerate(doms):
                pts = [p for p in em["_xy"] if p[2] == dom]
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=8, color=cmap(i % 20), label=dom)
            if len(doms) <= 20:
                ax.legend(fontsize=7, markerscale=2, loc="best")
            ax.set_title("embeddings, PCA (2 components)")
            return fig
        made["embedding_map"] = r.plot("embedding_map", f)
    for key in ("dedup_questions", "dedup_documents"):
        v = (d.get("dedup") or {}).get(key)
        if v and v["cluster_sizes"]:
            def f(plt, v=v, key=key):
                fig, axes = plt.subplots(1, 2, figsize=(10, 2.8))
                axes[0].bar(list(v["cluster_sizes"]), list(v["cluster_sizes"].values()), color="#4878a8")
                axes[0].set_yscale("log")
                axes[0].set_title(f"{key}: cluster sizes")
                h = v.get("pair_jaccard")
                if h and h["n"]:
                    e = h["edges"]
                    axes[1].bar(e[:-1], h["counts"], width=e[1] - e[0], align="edge", color="#d1885c")
                axes[1].set_title("Jaccard of verified pairs")
                return fig
            made[key] = r.plot(key, f)
    dc = d.get("decontamination")
    if dc and dc["per_benchmark"]:
        def f(plt):
            fig, ax = plt.subplots(figsize=(6, 2.8))
            names = list(dc["per_benchmark"])
            ax.bar(names, [dc["per_benchmark"][b]["contaminated"] for b in names], color="#c44e52")
            ax.set_title("contaminated questions per benchmark")
            return fig
        made["decontamination"] = r.plot("decontamination", f)
    co = d.get("cost")
    if co and co["stages"]:
        def f(plt):
            names = list(co["stages"])
            fig, axes = plt.subplots(1, 2, figsize=(11, 3))
            axes[0].bar(names, [co["stages"][s]["wall_seconds"] for s in names], color="#4878a8")
            axes[0].set_title("wall time (s)")
            axes[1].bar(names, [co["stages"][s]["prompt_tokens"] + co["stages"][s]["completion_tokens"] for s in names],
                        color="#6a9f58")
            axes[1].set_title("tokens (prompt + completion)")
            for ax in axes:
                ax.tick_params(axis="x", rotation=45)
            return fig
        made["cost"] = r.plot("cost", f)
    return made


# --------------------------------------------------------------------------- HTML


CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td.l,th.l{text-align:left}.note{color:#8a5a00}.ex{border:1px solid #ddd;padding:0.5em;margin:0.5em 0}
.ex p{margin:0.3em 0;white-space:pre-wrap}img{max-width:100%}"""


def _e(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.2f}"
    if isinstance(x, int):
        return f"{x:,}"
    return html.escape(str(x))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    h = "".join(f'<th class="{"l" if i == 0 else ""}">{html.escape(c)}</th>' for i, c in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i == 0 else ""}">{_e(v)}</td>' for i, v in enumerate(row))
                   + "</tr>" for row in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _img(made: dict, key: str, alt: str) -> str:
    return f'<p><img src="{html.escape(made[key])}" alt="{html.escape(alt)}"></p>' if key in made else ""


def render_html(d: dict, made: dict) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>natural-reasoning-spark report</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>natural-reasoning-spark report</h1>",
             f"<p>storage.root = <code>{html.escape(d['storage_root'])}</code>, generated {html.escape(d['generated_at'])}."
             " Every number here is in report.json.</p>"]
    if d["notes"]:
        parts.append("<h2>Notes</h2><ul>" + "".join(f'<li class="note">{html.escape(n)}</li>' for n in d["notes"])
                     + "</ul>")
    parts.append("<h2>Tables</h2>" + _table(["table", "rows", "Delta version"],
                                          [[t, v["rows"], v["version"]] for t, v in d["tables"].items()]))
    t1 = d.get("table1")
    if t1:
        rows = [[src, s["questions"], f"{_e(s['question_words_mean'])} ± {_e(s['question_words_std'])}",
                 s["with_reference_pct"], *[s["answer_buckets_pct"][b] for b, _ in BUCKETS],
                 s["response_words_mean"], s["response_words_median"]] for src, s in t1.items()]
        parts.append("<h2>Dataset statistics (paper Table 1)</h2>" + _table(
            ["source", "questions", "question words (mean ± std)", "with reference %",
             *[f"{label} %" for _, label in BUCKETS], "response words mean", "response words median"], rows)
            + "<p>Paper: 55 ± 21 words per question, 81.68% with a reference answer, answers single word / 2-9 / "
              "10+ words 10.7 / 20.0 / 50.9% of questions.</p>")
    if d.get("funnel"):
        parts.append("<h2>Funnel</h2>" + _img(made, "funnel", "funnel")
                     + _table(["step", "rows"], [[s["step"], s["count"]] for s in d["funnel"]]))
    if d.get("drops"):
        parts.append("<h3>Drops and failures per reason (runs)</h3>" + _table(
            ["stage", "reason", "rows"], [[s, k, v] for s, reasons in d["drops"].items() for k, v in reasons.items()]))
    dist = d.get("distributions") or {}
    if dist:
        parts.append("<h2>Distributions</h2>")
        for key, alt in (("annotation_scores", "annotation scores per axis"), ("question_quality", "question quality"),
                         ("reference_agreement", "reference agreement"), ("self_score", "self-score"),
                         ("response_words", "response lengths"), ("domains", "domains")):
            parts.append(_img(made, key, alt))
        if dist.get("question_quality"):
            parts.append(_table(["question quality score", "questions"], list(map(list, dist["question_quality"].items()))))
    if d.get("embedding_map"):
        em = d["embedding_map"]
        parts.append(f"<h2>Embedding map</h2><p>PCA of {em['points']} sampled embeddings ({html.escape(em['column'])}), "
                     f"explained variance {em['explained_variance']}.</p>" + _img(made, "embedding_map", "embedding map"))
    if d.get("dedup"):
        parts.append("<h2>Near-duplicates</h2>" + _table(
            ["table", "items", "removed", "clusters with duplicates", "verified pairs"],
            [[k, v["items"], v["removed"], v["clusters_with_duplicates"], v["verified_pairs"]]
             for k, v in d["dedup"].items()]))
        for k in d["dedup"]:
            parts.append(_img(made, k, k))
    dc = d.get("decontamination")
    if dc:
        parts.append("<h2>Decontamination</h2>" + _table(
            ["benchmark", "contaminated questions", "% of questions checked"],
            [[b, v["contaminated"], v["pct"]] for b, v in dc["per_benchmark"].items()]
            + [["all", dc["contaminated"], dc["contaminated_pct"]]]) + _img(made, "decontamination", "decontamination"))
    co = d.get("cost")
    if co:
        parts.append(
            f"<h2>Cost</h2><p>GPU-hours at {co['gpu_tokens_per_s']:,.0f} generated and {co['gpu_prompt_tokens_per_s']:,.0f}"
            f" prompt tokens/s per GPU (report.gpu_tokens_per_s, report.gpu_prompt_tokens_per_s); projection to "
            f"{co['project_to_docs']:,.0f} documents (report.project_to_docs) from the tokens per document measured "
            f"over {_e(co['documents'])} documents.</p>" + _table(
                ["stage", "runs", "wall s", "rows in", "rows/s", "prompt tokens", "completion tokens", "tokens/s",
                 "GPU-hours", "projected GPU-hours"],
                [[s, v["runs"], v["wall_seconds"], v["rows_in"], v["rows_per_s"], v["prompt_tokens"],
                  v["completion_tokens"], v["tokens_per_s"], v["gpu_hours"], v.get("projected_gpu_hours")]
                 for s, v in co["stages"].items()]) + _img(made, "cost", "cost"))
    if d.get("examples"):
        parts.append(f"<h2>Examples</h2><p>{len(d['examples'])} dataset rows drawn with seed {d['config']['seed']}.</p>")
        for ex in d["examples"]:
            parts.append(
                "<div class='ex'>"
                f"<p><b>document</b>: {_e(ex['url'])} ({_e(ex['source'])}, domain {_e(ex['domain'])}, "
                f"question_id {_e(ex['question_id'])})</p>"
                f"<p><b>question</b>: {_e(ex['question'])}</p><p><b>reference answer</b>: {_e(ex['reference_answer'])}</p>"
                f"<p><b>response</b> ({_e(ex['response_model'])}): {_e((ex['response'] or '')[:1500])}</p>"
                f"<p><b>judge</b>: quality {_e(ex['question_quality_score'])}, reference agreement "
                f"{_e(ex['reference_agreement'])}, self-score {_e(ex['self_score'])}</p></div>")
    parts.append("</body></html>")
    return "\n".join(parts)


# --------------------------------------------------------------------------- entry points


def build_report(cfg: PipelineConfig, spark, out_dir: Optional[str] = None) -> dict:
    """Write index.html, the PNGs and report.json into ``out_dir``; return the report's data."""
    out_dir = out_dir or cfg.expand(cfg.report.output_dir)
    if fs.is_remote(out_dir):
        raise ValueError(f"report output {out_dir}: give a local folder with --output (the page is for a browser)")
    os.makedirs(out_dir, exist_ok=True)
    r = Report(cfg, spark, out_dir)
    d = r.data
    d["storage_root"] = cfg.storage.root
    d["generated_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    d["config"] = cfg.report.model_dump(mode="json")
    d["tables"] = table_counts(r)
    d["table1"] = dataset_statistics(r)
    d["funnel"] = funnel(r)
    d["drops"] = run_drops(r)
    d["distributions"] = distributions(r)
    d["embedding_map"] = embedding_map(r)
    d["dedup"] = {k: v for k, v in (("dedup_questions", dedup_view(r, "dedup_questions", "question")),
                                    ("dedup_documents", dedup_view(r, "dedup_documents", "document"))) if v}
    d["decontamination"] = decontamination_view(r)
    docs = d["tables"].get("documents", {}).get("rows")
    d["cost"] = cost(r, docs)
    d["examples"] = examples(r)
    made = draw_plots(r)
    if d.get("embedding_map"):
        d["embedding_map"].pop("_xy", None)
    d["notes"] = r.notes
    d["images"] = sorted(made.values())
    with open(os.path.join(out_dir, "index.html"), "w", encoding="utf-8") as f:
        f.write(render_html(d, made))
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(d, f, indent=2, default=str)
    return d


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="nr report", description="Statistics, plots and cost of a run as HTML.")
    parse_common(p)
    p.add_argument("--output", default=None, help="folder (default: report.output_dir = {root}/report)")
    args, cfg = parse(p, argv)
    if cfg is None:
        return 2
    return write_report(cfg, start_spark(cfg, read_only=True), args.output)


def write_report(cfg: PipelineConfig, spark, output: Optional[str] = None) -> int:
    """Build the report and print its path (``nr report``, ``nr run --report``); 2 on bad input."""
    try:
        build_report(cfg, spark, output)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = output or cfg.expand(cfg.report.output_dir)
    print(f"report: {os.path.join(os.path.abspath(out), 'index.html')}")
    return 0

