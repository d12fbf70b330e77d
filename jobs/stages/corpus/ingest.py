"""ingest: source tables (DCLM-baseline, FineMath, ...) -> ``documents``.

Every source row either becomes a ``documents`` row or is counted under a drop reason.
Bad text (null, empty, too short, too long, a JSONL line that does not parse) is kept with a
non-ok ``status`` so it never disappears silently; selection (filter, sampling, max_docs) is
counted, not stored. File-level problems (a missing or non-string text column, Parquet files
whose schemas conflict, an unreadable path) stop the stage with a ``SourceError`` that names
the source, the path, and the file and column where they are known.
"""
from __future__ import annotations

import logging
from collections import Counter

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.common.config import IngestConfig, SourceConfig
from jobs.common.runner import StageContext
from jobs.common.stage import Output, Stage
from jobs.common.storage import JSONL_SUFFIXES, read_table
from udfs import fs
from udfs.keys import content_key_col

log = logging.getLogger("nr")

KEY = ["doc_id"]

DOCUMENT_COLUMNS = ["doc_id", "source", "url", "text", "n_chars", "status", "meta"]


def _fraction_hash(id_col: Column, seed: int) -> Column:
    # Deterministic, partition-independent sampling: a hash of the key, not rand().
    return F.pmod(F.xxhash64(id_col, F.lit(seed)), F.lit(1_000_000)) / F.lit(1_000_000.0)


# Spark's name for a JSONL line it could not parse (PERMISSIVE mode): such a line becomes a
# documents row with status corrupt_record instead of failing the read or vanishing.
CORRUPT = "_corrupt_record"


class SourceError(ValueError):
    """A file-level problem with a source: the message names the source, its path and the column."""


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:500]


def _parquet_type_conflicts(path: str, options: dict) -> list[str]:
    """Which Parquet files under ``path`` disagree on a column's type (footers only; called
    after Spark failed to merge the schemas, to name the files)."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from jobs.common.storage import _filesystem, delta_uri

    fs, base = _filesystem(delta_uri(path), options)
    info = fs.get_file_info(base)
    files = [base] if info.type == pafs.FileType.File else sorted(
        f.path for f in fs.get_file_info(pafs.FileSelector(base, recursive=True))
        if f.type == pafs.FileType.File and f.path.endswith(".parquet"))
    seen: dict[str, tuple[str, str]] = {}
    conflicts = []
    for f in files:
        with fs.open_input_file(f) as fh:
            for field in pq.read_schema(fh):
                first = seen.setdefault(field.name, (str(field.type), f))
                if first[0] != str(field.type):
                    conflicts.append(f"column {field.name!r} is {field.type} in {f} but {first[0]} in {first[1]}")
    return conflicts


# The corpora's download layouts: DCLM-baseline's nested folders of .jsonl / .jsonl.gz / .jsonl.zst
# shards and FineMath's folders of Parquet shards. A source path that is a folder is read
# recursively, its shard files only (a README or a .gitattributes beside them is left out).
SHARD_GLOBS = {"jsonl": "*.{" + ",".join(s.lstrip(".") for s in JSONL_SUFFIXES) + "}", "parquet": "*.parquet"}


def _extension(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    parts = base.split(".")
    if len(parts) > 2 and parts[-1] in ("gz", "zst", "bz2"):
        return "." + ".".join(parts[-2:])
    return "." + parts[-1] if len(parts) > 1 else "(no extension)"


def _files(path: str, options: dict) -> list[str]:
    """Every file under a folder source, local or remote, relative to it."""
    base = path.rstrip("/") + "/"
    return [p[len(base):] for p, _ in fs.list_files(path, options, recursive=True)]


def folder_options(path: str, fmt: str, options: dict) -> dict:
    """Reader options for a folder source: recursive, shards only. Not for a glob, a single file,
    or a Hive-partitioned Parquet table (``key=value`` folders, whose values Spark reads from the
    folder names)."""
    if fmt not in SHARD_GLOBS or any(c in path for c in "*?[{") or not fs.isdir(path, options):
        return {}
    if fmt == "parquet" and any("=" in seg for f in _files(path, options) for seg in f.split("/")[:-1]):
        return {}
    return {"recursiveFileLookup": "true", "pathGlobFilter": SHARD_GLOBS[fmt]}


def _found(path: str, fmt: str, options: dict) -> str:
    """What a folder holds, by extension: the detail of an unreadable source."""
    try:
        if not fs.isdir(path, options):
            return ""
        files = [f for f in _files(path, options) if not f.rsplit("/", 1)[-1].startswith((".", "_"))]
    except Exception:  # naming the files is a courtesy; the read error stands without it
        return ""
    if not files:
        return "; the folder holds no files"
    counts = Counter(_extension(f) for f in files)
    return (f"; the folder holds {len(files)} file(s): " + ", ".join(f"{n} {ext}" for ext, n in counts.most_common(6))
            + (f" (a {fmt} source folder is read as {SHARD_GLOBS[fmt]}, in any subfolder)" if fmt in SHARD_GLOBS else ""))


def read_source(ctx: StageContext, src: SourceConfig) -> DataFrame:
    """The source as a DataFrame; a file that cannot be read, or schemas that cannot be merged,
    raise ``SourceError`` naming the source, the path and (where known) the file and column."""
    path = ctx.cfg.expand(src.path)
    label = f"source {src.name!r} ({src.format} at {path})"
    try:
        # parquet files written at different times may differ in columns: merge, do not take one
        # file's; a JSONL line that does not parse is kept as a corrupt record and counted
        options = {"mergeSchema": "true"} if src.format == "parquet" else \
            {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT} if src.format == "jsonl" else None
        if options is not None:
            options.update(folder_options(path, src.format, dict(ctx.cfg.storage.storage_options)))
        df = read_table(ctx.spark, path, src.format, ctx.cfg.storage, options) if src.format != "delta" else \
            ctx.store.backend.read(path)
        if not df.columns and src.format == "jsonl":
            # JSONL files with no line at all: no schema to infer, and no rows to lose
            log.warning("%s: no rows (the files are empty)", label)
            df = ctx.spark.createDataFrame([], _empty_jsonl_schema(src))
        df.schema  # noqa: B018  resolve now, so a read error is reported here, with the path
    except Exception as e:
        detail = _first_line(e)
        if src.format == "parquet":
            try:
                conflicts = _parquet_type_conflicts(path, dict(ctx.cfg.storage.storage_options))
            except Exception:  # naming the files is a courtesy; the read error stands without it
                conflicts = []
            if conflicts:
                detail = "; ".join(conflicts[:5]) + f" ({detail})"
        detail += _found(path, src.format, dict(ctx.cfg.storage.storage_options))
        raise SourceError(f"{label}: cannot be read: {detail}") from e
    return df


def _empty_jsonl_schema(src: SourceConfig) -> str:
    return ", ".join(f"`{c}` string" for c in dict.fromkeys([src.text_col, *([src.url_col] if src.url_col else []),
                                                                  *src.keep_cols]))


def normalize_source(df: DataFrame, src: SourceConfig, path: str = "") -> DataFrame:
    """Map a source's columns onto the documents schema (before any filtering)."""
    where = f" ({path})" if path else ""
    missing = [c for c in [src.text_col, *([src.url_col] if src.url_col else []), *src.keep_cols] if c not in df.columns]
    if missing:
        raise SourceError(
            f"source {src.name!r}{where}: columns {missing} not found; available: {sorted(c for c in df.columns if c != CORRUPT)}"
        )
    text_type = df.schema[src.text_col].dataType.simpleString()
    if text_type != "string":
        # a number, struct or array cast to string would be ingested as if it were page text
        raise SourceError(f"source {src.name!r}{where}: text column {src.text_col!r} is {text_type}, expected string")
    meta = F.to_json(F.struct(*[F.col(c) for c in src.keep_cols])) if src.keep_cols else F.lit(None).cast("string")
    url = F.col(src.url_col).cast("string") if src.url_col else F.lit(None).cast("string")
    corrupt = F.col(CORRUPT).isNotNull() if CORRUPT in df.columns else F.lit(False)
    return df.select(
        F.lit(src.name).alias("source"),
        url.alias("url"),
        # an unparseable line keeps its raw content as text: evidence, and a distinct doc_id per line
        F.when(corrupt, F.col(CORRUPT)).otherwise(F.col(src.text_col).cast("string")).alias("text")
        if CORRUPT in df.columns else F.col(src.text_col).cast("string").alias("text"),
        meta.alias("meta"),
        corrupt.alias("_corrupt"),
    )


def classify_text(df: DataFrame, cfg: IngestConfig) -> DataFrame:
    """Add n_chars and status: ok | corrupt_record | null_text | empty_text | too_short | too_long."""
    n = F.length(F.col("text"))
    corrupt = F.col("_corrupt") if "_corrupt" in df.columns else F.lit(False)
    status = (
        F.when(corrupt, "corrupt_record")
        .when(F.col("text").isNull(), "null_text")
        .when(F.col("text").rlike(r"^\s*$"), "empty_text")  # trim() strips only spaces, not newlines
        .when(n < cfg.min_chars, "too_short")
        .when(n > cfg.max_chars, "too_long")
        .otherwise("ok")
    )
    return df.withColumn("n_chars", F.coalesce(n, F.lit(0))).withColumn("status", status)


def build_documents(ctx: StageContext) -> DataFrame:
    cfg = ctx.cfg.ingest
    parts = []
    for src in cfg.sources:
        raw = read_source(ctx, src)
        n_raw = raw.count()
        ctx.count(f"in_{src.name}", n_raw)
        ctx.count("in", n_raw)
        selected = raw
        if src.filter:
            selected = selected.where(F.expr(src.filter))
        docs = normalize_source(selected, src, ctx.cfg.expand(src.path))
        docs = docs.withColumn("doc_id", content_key_col(F.col("source"), F.col("url"), F.col("text")))
        if src.sample_fraction is not None:
            docs = docs.where(_fraction_hash(F.col("doc_id"), cfg.seed) < src.sample_fraction)
        if src.max_docs is not None:
            docs = docs.orderBy(F.xxhash64(F.col("doc_id"), F.lit(cfg.seed)), "doc_id").limit(src.max_docs)
        docs = docs.persist()
        n_kept = docs.count()
        ctx.count(f"dropped_not_selected_{src.name}", n_raw - n_kept)
        parts.append(docs)
    if not parts:
        raise ValueError("ingest.sources is empty: nothing to ingest")
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    out = classify_text(out, cfg)
    # A too-long text (or raw corrupt record) stays as evidence, cut to the bound so one page
    # cannot blow up a table; n_chars keeps the real length.
    out = out.withColumn(
        "text", F.when(F.length("text") > cfg.max_chars, F.substring("text", 1, cfg.max_chars)).otherwise(F.col("text"))
    )
    return out.select(*DOCUMENT_COLUMNS)


def run(ctx: StageContext) -> None:
    docs = build_documents(ctx).persist()
    total = docs.count()
    exact_dupes = total - docs.select("doc_id").distinct().count()
    ctx.count("dropped_exact_duplicate_row", exact_dupes)
    for status, n in ctx.count_by(docs.dropDuplicates(KEY), "status", "dropped_").items():
        if status == "ok":
            ctx.count("ok", n)
    added = ctx.store.append_new("documents", docs, KEY)
    ctx.count("out", added)
    ctx.count("already_present", total - exact_dupes - added)
    docs.unpersist()


def funnel(table, kept: dict) -> list[tuple[str, int]]:
    docs = table("documents", "the funnel's documents")
    if docs is None:
        return []
    c = docs.agg(F.count("*").alias("n"), F.sum((F.col("status") == "ok").cast("int")).alias("ok")).collect()[0]
    return [("documents", c["n"]), ("usable", c["ok"] or 0)]


STAGE = Stage(
    "ingest", "corpus", "source", run, "reads the configured sources into documents (content keys, text status)",
    sections=("ingest",), outputs=(Output("documents", tuple(KEY)),), funnel=funnel,
    headline=(("rows", "documents", "documents"),),
)
