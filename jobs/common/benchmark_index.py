"""The hashed benchmark index: decontamination without benchmark text (ARCHITECTURE.md §8).

The built-in benchmarks (MATH test, GPQA diamond, MMLU-Pro test, MMLU-STEM test) ship with
the project as hashes only, in ``jobs/common/builtin_index/``:

``ngrams.parquet``
    ``ngram_hash`` (int64), ``item`` (int32): one row per distinct (n-gram, benchmark item),
    sorted by hash. An n-gram is lm-eval's ``word_ngrams(normalize_string(text), 13)`` hashed
    as in ``udfs.ngrams.gram_hash``; a text under 13 tokens is one whole-sequence gram
    (``udfs.ngrams.WHOLE`` + its tokens), the short-text rule.
``items.parquet``
    ``item`` (int32), ``benchmark``, ``benchmark_item_id``, ``short_texts`` (how many of the
    item's texts were under n tokens).
``manifest.json``
    n-gram size, normalization and hash version, per benchmark its definition, counts and the
    sha256 of every source file it was built from.

No benchmark text is stored: GPQA's authors ask that its items not be published in plain
text, and the join needs only the hashes. ``nr benchmarks build-index`` rebuilds the index
from raw files (a local folder or ``s3://``), or from Hugging Face datasets where the hub is
reachable (``conf/benchmarks-hf.yaml``). The benchmark side is always normalized first
(lm-eval's rule); the item side's tokenization (``normalize_first`` / ``split_first``) is
applied to the items only, so one index serves both rules.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from jobs.common.benchmarks import BUILTIN, BenchmarkMissing, load_benchmarks, read_bytes
from jobs.common.config import BenchmarkConfig
from udfs import ngrams

log = logging.getLogger("nr")

FORMAT_VERSION = 1
# Bumped whenever udfs.ngrams changes what a gram or its hash is; an index of another
# version is refused rather than silently matching nothing.
NORMALIZATION = ("lm-eval normalize_string (ASCII lower-case, ASCII punctuation deleted), str.split, "
                 "n tokens; texts under n tokens: one whole-sequence gram after a marker token; each token's xxh64 "
                 "of UTF-8 folded h = h * 0x9E3779B97F4A7C15 + t mod 2^64, then fmix64, signed int64")
NORMALIZATION_VERSION = 2
BUILTIN_INDEX = str(Path(__file__).resolve().parent / "builtin_index")
NGRAM_SCHEMA = "_ngram_hash long, _bench_key int"
ITEM_SCHEMA = "_bench_key int, benchmark string, benchmark_item_id string"


@dataclass
class IndexTables:
    """The index in memory: what ``build`` makes, ``write`` stores and ``read`` loads."""

    ngrams: pd.DataFrame  # ngram_hash int64, item int32; one row per distinct pair, sorted
    items: pd.DataFrame  # item int32, benchmark, benchmark_item_id, short_texts int32
    manifest: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.manifest["ngram"])

    @property
    def names(self) -> list[str]:
        return list(self.manifest["benchmarks"])

    def pairs(self, benchmark: Optional[str] = None) -> set[tuple[int, str, str]]:
        """{(ngram_hash, benchmark, benchmark_item_id)}: the index as a set, for comparisons."""
        j = self.ngrams.merge(self.items, on="item")
        if benchmark is not None:
            j = j[j["benchmark"] == benchmark]
        return set(zip(j["ngram_hash"].tolist(), j["benchmark"].tolist(), j["benchmark_item_id"].tolist()))

    def select(self, names: list[str]) -> "IndexTables":
        """Only the named benchmarks (item keys unchanged)."""
        items = self.items[self.items["benchmark"].isin(names)]
        grams = self.ngrams[self.ngrams["item"].isin(items["item"])]
        have = self.manifest["benchmarks"]
        manifest = dict(self.manifest, benchmarks={k: have[k] for k in names if k in have})
        return IndexTables(grams.reset_index(drop=True), items.reset_index(drop=True), manifest)


def hash_benchmark(texts: pd.DataFrame, n: int) -> tuple[list[str], list[np.ndarray], list[int]]:
    """Per item of one benchmark (in first-seen order): its id, its distinct gram hashes, and
    how many of its texts were under n tokens. Items with no gram at all are left out."""
    grams_by_item: dict[str, set] = {}
    short: dict[str, int] = {}
    for item_id, text in zip(texts["benchmark_item_id"].tolist(), texts["text"].tolist()):
        grams = ngrams.first_positions(text, n)
        grams_by_item.setdefault(item_id, set()).update(grams)
        short[item_id] = short.get(item_id, 0) + (1 if len(grams) == 1 and next(iter(grams)).startswith(ngrams.WHOLE)
                                                  else 0)
    ids = [i for i, g in grams_by_item.items() if g]
    return ids, [np.unique(ngrams.hash_grams(grams_by_item[i])) for i in ids], [short[i] for i in ids]


def build(benchmarks: list[BenchmarkConfig], benchmarks_dir: str, n: int = 13,
          options: Optional[dict] = None) -> IndexTables:
    """Load and hash every benchmark (a missing optional one is left out, with a warning)."""
    grams, keys, items, info = [], [], [], {}
    for b, texts in load_benchmarks(benchmarks, benchmarks_dir, options):
        if texts is None:
            log.warning("benchmark %s: not found, left out of the index (it is optional)", b.name)
            continue
        ids, hashes, short = hash_benchmark(texts, n)
        for item_id, h, s in zip(ids, hashes, short):
            key = len(items)
            items.append((key, b.name, item_id, s))
            grams.append(h)
            keys.append(np.full(len(h), key, dtype=np.int32))
        distinct = np.unique(np.concatenate(hashes)) if hashes else np.array([], dtype=np.int64)
        info[b.name] = {
            "items": int(texts["benchmark_item_id"].nunique()),
            "indexed_items": len(ids),
            "ngrams": int(len(distinct)),
            "rows": int(sum(len(h) for h in hashes)),
            "short_texts": int(sum(short)),
            "definition": b.model_dump(exclude_none=True, exclude_defaults=True) | {"name": b.name},
            "sources": texts.attrs.get("sources", []),
        }
        log.info("benchmark %s: %d items, %d distinct %d-grams", b.name, info[b.name]["items"], len(distinct), n)
    frame = pd.DataFrame({
        "ngram_hash": np.concatenate(grams) if grams else np.array([], dtype=np.int64),
        "item": np.concatenate(keys) if keys else np.array([], dtype=np.int32),
    }).sort_values(["ngram_hash", "item"], kind="stable").reset_index(drop=True)
    item_frame = pd.DataFrame(items, columns=["item", "benchmark", "benchmark_item_id", "short_texts"]).astype(
        {"item": "int32", "short_texts": "int32"})
    manifest = {"format": FORMAT_VERSION, "ngram": n, "normalization_version": NORMALIZATION_VERSION,
                "normalization": NORMALIZATION, "benchmarks": info}
    return IndexTables(frame, item_frame, manifest)


def write(index: IndexTables, out_dir: str, options: Optional[dict] = None) -> None:
    """Write the index folder (local or s3://). Byte-stable for the same input."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from udfs import fs as nrfs

    nrfs.makedirs(out_dir, options)
    for name, df in (("ngrams", index.ngrams), ("items", index.items)):
        table = pa.Table.from_pandas(df, preserve_index=False)
        with nrfs.open_output(f"{out_dir.rstrip('/')}/{name}.parquet", options) as f:
            pq.write_table(table, f, compression="zstd", row_group_size=1 << 20)
    nrfs.write_text(f"{out_dir.rstrip('/')}/manifest.json", json.dumps(index.manifest, indent=1) + "\n", options)


def read(index_dir: str, options: Optional[dict] = None) -> IndexTables:
    """Load an index folder; a missing folder or another normalization version is an error."""
    import pyarrow.parquet as pq

    from jobs.common.benchmarks import filesystem
    from udfs import fs as nrfs

    where = "the built-in index" if index_dir == BUILTIN_INDEX else index_dir
    try:
        manifest = json.loads(read_bytes(f"{index_dir}/manifest.json", options))
    except BenchmarkMissing:
        raise BenchmarkMissing(
            f"benchmark index {where}: no manifest.json at {index_dir} (build one with "
            "`nr benchmarks build-index --output DIR`, or set decontaminate.index: builtin)") from None
    if manifest.get("format") != FORMAT_VERSION or manifest.get("normalization_version") != NORMALIZATION_VERSION:
        raise ValueError(f"benchmark index {where}: format {manifest.get('format')}, normalization version "
                         f"{manifest.get('normalization_version')}; this code reads format {FORMAT_VERSION}, "
                         f"normalization {NORMALIZATION_VERSION}: rebuild it with `nr benchmarks build-index`")
    fs, base = filesystem(index_dir, options)
    with nrfs.access(index_dir, "read index", options):
        grams = pq.read_table(f"{base}/ngrams.parquet", filesystem=fs).to_pandas()
        items = pq.read_table(f"{base}/items.parquet", filesystem=fs).to_pandas()
    return IndexTables(grams, items, manifest)


def resolve_index(index: Optional[str]) -> Optional[str]:
    """``builtin`` -> the shipped folder; None/"" -> no index; anything else is a folder path."""
    if not index:
        return None
    return BUILTIN_INDEX if index == "builtin" else index


# --------------------------------------------------------------------------- the command


def _env_dir() -> Optional[str]:
    import os

    return os.environ.get("NR_BENCHMARKS_DIR") or None


def assemble(benchmarks: Optional[list], benchmarks_dir: str, n: int = 13,
             index: Optional[str] = "builtin", options: Optional[dict] = None) -> tuple[IndexTables, list[str]]:
    """The benchmark side of one decontamination run: the index's benchmarks plus any raw ones.

    ``benchmarks`` None = every benchmark in the index (the four built-ins for the shipped
    one), or the built-in definitions when there is no index. A name found in the index comes
    from it without reading or tokenizing any text; another built-in name, or a full
    definition, is loaded from its files (a definition wins over an indexed benchmark of the
    same name). An index built for another n-gram size is not used: its names fall back to
    their raw definitions. Returns the merged tables and the optional benchmarks left out.
    """
    from jobs.common.benchmarks import BUILTIN_BY_NAME

    index_dir = resolve_index(index)
    shipped = read(index_dir, options) if index_dir else None
    if shipped is not None and shipped.n != n:
        log.warning("benchmark index %s holds %d-grams, not %d-grams: benchmarks are read from their files",
                    index_dir, shipped.n, n)
        shipped = None
    if benchmarks is None:
        benchmarks = shipped.names if shipped is not None else [b.name for b in BUILTIN]
    from_index, raw = [], []
    for b in benchmarks:
        if isinstance(b, str) and shipped is not None and b in shipped.names:
            from_index.append(b)
        elif isinstance(b, str):
            if b not in BUILTIN_BY_NAME:
                raise ValueError(f"benchmark {b!r} is neither in the index ({index_dir or 'none'}: "
                                 f"{', '.join(shipped.names) if shipped else '-'}) nor a built-in definition "
                                 f"({', '.join(sorted(BUILTIN_BY_NAME))})")
            raw.append(BUILTIN_BY_NAME[b])
        else:
            raw.append(b)
    parts, skipped = ([shipped.select(from_index)] if from_index else []), []
    if raw:
        built = build(raw, benchmarks_dir, n, options)
        parts.append(built)
        skipped = [b.name for b in raw if b.name not in built.manifest["benchmarks"]]
    return merge(parts, n), skipped


def merge(parts: list[IndexTables], n: int) -> IndexTables:
    """One index from several, item keys renumbered so they stay distinct."""
    grams, items, info, offset = [], [], {}, 0
    for p in parts:
        grams.append(p.ngrams.assign(item=(p.ngrams["item"] + offset).astype("int32")))
        items.append(p.items.assign(item=(p.items["item"] + offset).astype("int32")))
        info.update(p.manifest["benchmarks"])
        offset += int(p.items["item"].max()) + 1 if len(p.items) else 0
    empty = IndexTables(pd.DataFrame({"ngram_hash": np.array([], np.int64), "item": np.array([], np.int32)}),
                        pd.DataFrame({"item": np.array([], np.int32), "benchmark": [], "benchmark_item_id": [],
                                      "short_texts": np.array([], np.int32)}))
    return IndexTables(pd.concat(grams, ignore_index=True) if grams else empty.ngrams,
                       pd.concat(items, ignore_index=True) if items else empty.items,
                       {"format": FORMAT_VERSION, "ngram": n, "normalization_version": NORMALIZATION_VERSION,
                        "normalization": NORMALIZATION, "benchmarks": info})
