"""Content-derived keys and config hashes: the one place a key or a hash is computed, with or
without Spark (ARCHITECTURE.md §3)."""
from __future__ import annotations

import hashlib
import json

SEP = "\x1f"


def content_key(*parts: object, length: int = 32) -> str:
    """sha256 of the parts joined by the unit separator (None -> ''), first ``length`` hex digits.

    >>> content_key("dclm", "https://a.example/x", "hello")[:8]
    'a89ed9b2'
    """
    joined = SEP.join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:length]


def content_key_col(*cols):
    """Spark twin of ``content_key`` (same digits for the same values), for key columns."""
    from pyspark.sql import functions as F

    parts = []
    for i, c in enumerate(cols):
        if i:
            parts.append(F.lit(SEP))
        parts.append(F.coalesce(c.cast("string"), F.lit("")))
    return F.substring(F.sha2(F.concat(*parts), 256), 1, 32)


def stable_hash(obj: object, length: int = 16) -> str:
    """sha256 of ``obj`` as canonical JSON (sorted keys; ``str`` for what JSON lacks): config
    hashes, engine pool ids and chunk fingerprints."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


def doc_id(source: str | None, url: str | None, text: str | None) -> str:
    return content_key(source, url, text)


def question_id(doc_id_: str, question: str | None) -> str:
    return content_key(doc_id_, question)
