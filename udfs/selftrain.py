"""Executor side of self-training: per-question self-consistency and the selection rules that
turn scored samples into SFT picks and DPO pairs. Pure functions over one question's samples,
with pandas adapters for ``groupBy(...).applyInPandas`` (the grouping is a Spark aggregation;
one group is one question's samples from one model, a few dozen rows).

Selection rules (``RULES``), over a question's samples whose generation status is ``ok``:

* ``self_consistency``: SFT = a sample of the majority answer class; DPO rejected = a seeded
  random sample of a minority class.
* ``self_score`` / ``reward``: SFT = the highest score; DPO = highest vs lowest.
* ``self_score_filtered``: as ``self_score``, dropped when the chosen score is below ``min_score``.
* ``reference``: only samples that agree with the reference answer; SFT = the agreeing sample
  with the highest self-score; DPO rejected = a seeded random disagreeing sample.

Ties break by (temperature, sample_idx) ascending, so a re-run picks the same samples. A pair
whose chosen and rejected texts are equal is dropped (``identical_texts``).
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Mapping, Optional, Sequence

import pandas as pd

RULES = ("self_consistency", "self_score", "self_score_filtered", "reward", "reference")

SELECTION_SCHEMA = (
    "question_id string, model string, kind string, rule string, status string, "
    "chosen_temperature double, chosen_sample_idx int, chosen_response string, chosen_answer string, chosen_score double, "
    "rejected_temperature double, rejected_sample_idx int, rejected_response string, rejected_answer string, "
    "rejected_score double, margin double"
)
CONSISTENCY_SCHEMA = (
    "question_id string, model string, temperature double, sample_idx int, answer_class int, class_size int, "
    "class_share double, majority_answer string, majority_share double, n_answered int, n_distinct int, "
    "n_samples int, equivalence_checks int, equivalence_timeouts int"
)


# ---------------------------------------------------------------- self-score status


def self_score_with_status(logprobs: Optional[Mapping[str, Any]], floor: float) -> tuple[Optional[float], str]:
    """(logp(Yes) - logp(No), status): ``no_logprobs`` without logprobs, ``no_verdict`` when
    neither Yes nor No is among the top k (a score, not a 0.0), else ``ok``.

    >>> self_score_with_status({"Maybe": -0.1, "Perhaps": -2.0}, -30.0)
    (None, 'no_verdict')
    >>> round(self_score_with_status({"Yes": -0.1, "No": -2.5}, -30.0)[0], 2)
    2.4
    """
    from udfs.llm.selfscore import NO, YES, _variant_logprob, yes_no_score

    if not logprobs:
        return None, "no_logprobs"
    logprobs = dict(logprobs)
    if _variant_logprob(logprobs, YES) is None and _variant_logprob(logprobs, NO) is None:
        return None, "no_verdict"
    score = yes_no_score(logprobs, floor)
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return None, "no_logprobs"
    return float(score), "ok"


# ---------------------------------------------------------------- self-consistency


def consistency(pdf: pd.DataFrame, timeout_s: int = 2, max_checks: int = 2000) -> pd.DataFrame:
    """One question's samples (key columns + ``answer``) -> one row per sample with its answer
    class (0 = majority), the class share among answered samples and the question's figures."""
    from udfs.answers import group_answers

    pdf = pdf.sort_values(["temperature", "sample_idx"], kind="stable").reset_index(drop=True)
    answers = [a if isinstance(a, str) else None for a in pdf["answer"]]
    ranks, stats = group_answers(answers, timeout_s, max_checks)
    sizes: dict[int, int] = {}
    for r in ranks:
        if r is not None:
            sizes[r] = sizes.get(r, 0) + 1
    answered = sum(sizes.values())
    majority_answer = next((a for a, r in zip(answers, ranks) if r == 0), None)
    out = pdf[["question_id", "model", "temperature", "sample_idx"]].copy()
    out["answer_class"] = pd.array(ranks, dtype="Int32")
    out["class_size"] = pd.array([sizes[r] if r is not None else None for r in ranks], dtype="Int32")
    out["class_share"] = [sizes[r] / answered if r is not None else None for r in ranks]
    out["majority_answer"] = majority_answer
    out["majority_share"] = sizes.get(0, 0) / answered if answered else None
    out["n_answered"] = answered
    out["n_distinct"] = len(sizes)
    out["n_samples"] = len(pdf)
    out["equivalence_checks"] = stats["checks"]
    out["equivalence_timeouts"] = stats["timeouts"]
    return out


# ---------------------------------------------------------------- selection


def _tiebreak(row: Mapping) -> tuple:
    return (float(row["temperature"]), int(row["sample_idx"]))


def _seeded(row: Mapping, seed: int) -> str:
    key = f"{seed}|{row['question_id']}|{row['model']}|{float(row['temperature'])!r}|{int(row['sample_idx'])}"
    return hashlib.sha256(key.encode()).hexdigest()


def _num(v) -> Optional[float]:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    return float(v)


def _best(rows: list[Mapping], score: str, highest: bool = True) -> Optional[Mapping]:
    scored = [r for r in rows if _num(r.get(score)) is not None]
    if not scored:
        return None
    sign = -1.0 if highest else 1.0
    return min(scored, key=lambda r: (sign * _num(r[score]), _tiebreak(r)))


def _pick(rule: str, rows: list[Mapping], seed: int, min_score: float) -> tuple[str, Optional[Mapping], Optional[Mapping], Optional[float], Optional[float]]:
    """(status, chosen, rejected, chosen_score, rejected_score) for one question under ``rule``."""
    if rule == "self_consistency":
        answered = [r for r in rows if _num(r.get("answer_class")) is not None]
        if not answered:
            return "no_answer", None, None, None, None
        majority = [r for r in answered if int(r["answer_class"]) == 0]
        chosen = min(majority, key=_tiebreak)
        minority = [r for r in answered if int(r["answer_class"]) != 0]
        rejected = min(minority, key=lambda r: _seeded(r, seed)) if minority else None
        return ("ok", chosen, rejected, _num(chosen["class_share"]),
                _num(rejected["class_share"]) if rejected is not None else None)
    if rule in ("self_score", "self_score_filtered", "reward"):
        col = "reward" if rule == "reward" else "self_score"
        status_col = "reward_status" if rule == "reward" else "self_score_status"
        ok = [r for r in rows if r.get(status_col) == "ok" and _num(r.get(col)) is not None]
        if not ok:
            return ("no_reward" if rule == "reward" else "no_self_score"), None, None, None, None
        chosen, rejected = _best(ok, col, True), _best(ok, col, False)
        if rejected is chosen:
            rejected = None
        cs = _num(chosen[col])
        if rule == "self_score_filtered" and cs < min_score:
            return "below_min_score", chosen, rejected, cs, None
        return "ok", chosen, rejected, cs, _num(rejected[col]) if rejected is not None else None
    if rule == "reference":
        judged = [r for r in rows if r.get("ref_agree") is not None and not pd.isna(r.get("ref_agree"))]
        if not judged:
            return "no_reference", None, None, None, None
        agree = [r for r in judged if bool(r["ref_agree"])]
        if not agree:
            return "none_agree", None, None, None, None
        scored = _best(agree, "self_score", True)
        chosen = scored if scored is not None else min(agree, key=_tiebreak)
        disagree = [r for r in judged if not bool(r["ref_agree"])]
        rejected = min(disagree, key=lambda r: _seeded(r, seed)) if disagree else None
        return "ok", chosen, rejected, 1.0, 0.0 if rejected is not None else None
    raise ValueError(f"unknown selection rule {rule!r}; rules: {RULES}")


def select(rows: Sequence[Mapping], rules: Sequence[str], seed: int = 0, min_score: float = 0.0) -> list[dict]:
    """One question's samples from one model -> for each rule an SFT row and a DPO row, each
    with ``status`` ``ok`` or the reason it was dropped (rows with status ``ok`` only compete)."""
    rows = [r for r in rows if r.get("status") == "ok" and isinstance(r.get("response"), str) and r["response"].strip()]
    out = []
    if not rows:
        return out
    base = {"question_id": rows[0]["question_id"], "model": rows[0]["model"]}
    for rule in rules:
        status, chosen, rejected, cs, rs = _pick(rule, rows, seed, min_score)
        sft = dict(base, kind="sft", rule=rule, status=status, **_side("chosen", chosen), chosen_score=cs,
                   **_side("rejected", None), rejected_score=None, margin=None)
        out.append(sft)
        if status != "ok":
            pair_status = status
        elif rejected is None:
            pair_status = "no_rejected"
        elif rejected["response"] == chosen["response"]:
            pair_status = "identical_texts"
        else:
            pair_status = "ok"
        margin = cs - rs if pair_status == "ok" and cs is not None and rs is not None else None
        out.append(dict(base, kind="dpo", rule=rule, status=pair_status, **_side("chosen", chosen), chosen_score=cs,
                        **_side("rejected", rejected), rejected_score=rs, margin=margin))
    return out


def _side(prefix: str, row: Optional[Mapping]) -> dict:
    keys = ("temperature", "sample_idx", "response", "answer")
    if row is None:
        return {f"{prefix}_{k}": None for k in keys}
    return {f"{prefix}_{k}": (None if k == "answer" and not isinstance(row.get(k), str) else row.get(k)) for k in keys}


def select_frame(pdf: pd.DataFrame, rules: Sequence[str], seed: int, min_score: float) -> pd.DataFrame:
    """``applyInPandas`` adapter of ``select``."""
    cols = [c.strip().split(" ")[0] for c in SELECTION_SCHEMA.split(", ")]
    records = pdf.astype(object).where(pd.notna(pdf), None).to_dict("records")
    out = pd.DataFrame(select(records, rules, seed, min_score), columns=cols)
    for c in ("chosen_sample_idx", "rejected_sample_idx"):
        out[c] = out[c].astype("Int32")
    for c in ("chosen_temperature", "chosen_score", "rejected_temperature", "rejected_score", "margin"):
        out[c] = out[c].astype("float64")
    return out


# ---------------------------------------------------------------- pandas UDF factories


def extract_udf():
    """``response -> struct(answer, status, source)`` (``udfs.answers.extract_answer``)."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("answer string, status string, source string")
    def _extract(texts: pd.Series) -> pd.DataFrame:
        from udfs.answers import extract_answer

        rows = [extract_answer(t if isinstance(t, str) else None) for t in texts]
        return pd.DataFrame({"answer": [r.answer for r in rows], "status": [r.status for r in rows],
                             "source": [r.source for r in rows]}, index=texts.index)

    return _extract


def equivalence_udf(timeout_s: int):
    """``(answer, reference) -> struct(agree, method)`` (``udfs.answers.equivalent``)."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("agree boolean, method string")
    def _equivalent(answers: pd.Series, refs: pd.Series) -> pd.DataFrame:
        from udfs.answers import equivalent

        rows = []
        for a, r in zip(answers, refs):
            if not isinstance(a, str):
                rows.append((False, "no_answer"))
            else:
                rows.append(equivalent(a, r if isinstance(r, str) else None, timeout_s))
        return pd.DataFrame({"agree": [x for x, _ in rows], "method": [m for _, m in rows]}, index=answers.index)

    return _equivalent


def self_score_udf(floor: float):
    """``first_token_logprobs -> struct(score, status)`` (``self_score_with_status``)."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("score double, status string")
    def _score(logprobs: pd.Series) -> pd.DataFrame:
        rows = []
        for m in logprobs:
            if m is None or (isinstance(m, float) and pd.isna(m)):
                rows.append((None, "no_logprobs"))
            else:
                rows.append(self_score_with_status(m if isinstance(m, dict) else dict(m), floor))
        return pd.DataFrame({"score": pd.Series([s for s, _ in rows], dtype="float64", index=logprobs.index),
                             "status": pd.Series([st for _, st in rows], dtype="object", index=logprobs.index)})

    return _score
