"""pandas UDF adapters over ``udfs.traces`` (executor side)."""
from __future__ import annotations

import pandas as pd

from udfs.traces import answer_key, final_answer, parse_strategies, parse_trace, reasoning_tokens

TRACE_FIELDS = "status string, reasoning string, answer string, final_answer string, answer_key string, " \
               "reasoning_tokens int"
STRATEGY_FIELDS = "status string, strategies array<string>"


def _str(v):
    return v if isinstance(v, str) else None


def trace_udf():
    """(response, reasoning field or null, completion_tokens) -> struct of ``TRACE_FIELDS``."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(TRACE_FIELDS)
    def _parse(response: pd.Series, field: pd.Series, tokens: pd.Series) -> pd.DataFrame:
        rows = []
        for text, rf, n in zip(response, field, tokens):
            t = parse_trace(_str(text), _str(rf))
            fa = final_answer(t["answer"]) if t["answer"] else None
            n = None if n is None or pd.isna(n) else int(n)
            rows.append({**t, "final_answer": fa, "answer_key": answer_key(fa),
                         "reasoning_tokens": reasoning_tokens(t["reasoning"], _str(text) or t["reasoning"], n)})
        out = pd.DataFrame(rows, columns=[f.split(" ")[0] for f in TRACE_FIELDS.split(", ")], index=response.index)
        out["reasoning_tokens"] = out["reasoning_tokens"].astype("int32")
        return out

    return _parse


def strategies_udf():
    """tagger output text -> struct(status, strategies)."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(STRATEGY_FIELDS)
    def _parse(texts: pd.Series) -> pd.DataFrame:
        return pd.DataFrame([parse_strategies(_str(t)) for t in texts], columns=["status", "strategies"],
                            index=texts.index)

    return _parse
