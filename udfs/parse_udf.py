"""pandas UDF adapters over ``udfs.parsers`` (executor side)."""
from __future__ import annotations

from typing import Callable

import pandas as pd

from udfs import parsers

# parser name -> (function of the raw text, Spark DDL of the struct it returns)
PARSE_SPECS: dict[str, tuple[Callable[[str], dict], str]] = {
    "annotation": (
        parsers.parse_annotation,
        "status string, completeness int, complexity int, correctness int, reasoning int, domain string",
    ),
    "question": (parsers.parse_question, "status string, question string, reference_answer string, answer_bucket string"),
    "quality": (parsers.parse_quality, "status string, score double, improved_question string"),
    "verdict": (parsers.parse_verdict, "status string, verdict string, explanation string"),
}


def parse_series(texts: pd.Series, name: str) -> pd.DataFrame:
    fn, ddl = PARSE_SPECS[name]
    cols = [part.strip().split(" ")[0] for part in ddl.split(",")]
    rows = [fn(t if isinstance(t, str) else None) for t in texts]
    return pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols, index=texts.index)


def parse_frame(texts: pd.Series, name: str) -> pd.DataFrame:
    """``parse_series`` with the integer fields as nullable integers (what Arrow needs for
    an int column holding nulls)."""
    out = parse_series(texts, name)
    for c in ("completeness", "complexity", "correctness", "reasoning"):
        if c in out:
            out[c] = out[c].astype("Int64")
    return out


def selfscore_series(logprobs: pd.Series, floor: float) -> pd.DataFrame:
    """``score`` (logp(Yes) - logp(No)) and ``status`` (``udfs.llm.selfscore.STATUSES``) per row.

    Arrow hands a ``map<string,double>`` over as a list of (key, value) pairs, or a dict."""
    from udfs.llm.selfscore import self_score

    def one(m):
        if m is None or (isinstance(m, float) and pd.isna(m)):
            return self_score(None, floor)
        return self_score(m if isinstance(m, dict) else dict(m), floor)

    rows = [one(m) for m in logprobs]
    return pd.DataFrame({"score": pd.Series([s for s, _ in rows], dtype="float64", index=logprobs.index),
                         "status": pd.Series([st for _, st in rows], dtype="object", index=logprobs.index)})


def selfscore_udf(floor: float):
    """A pandas UDF ``map<string,double> -> struct<score double, status string>`` (see ``selfscore_series``)."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("score double, status string")
    def _score(logprobs: pd.Series) -> pd.DataFrame:
        return selfscore_series(logprobs, floor)

    return _score
