"""Content-derived keys, computable with or without Spark (DESIGN §3)."""
from __future__ import annotations

import hashlib

SEP = "\x1f"


def content_key(*parts: object, length: int = 32) -> str:
    """sha256 of the parts joined by the unit separator (None -> ''), first ``length`` hex digits.

    >>> content_key("dclm", "https://a.example/x", "hello")[:8]
    'a89ed9b2'
    """
    joined = SEP.join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:length]


def doc_id(source: str | None, url: str | None, text: str | None) -> str:
    return content_key(source, url, text)


def question_id(doc_id_: str, question: str | None) -> str:
    return content_key(doc_id_, question)
