"""Parsers for the pipeline prompts' outputs (pure functions, executor side).

Every parser returns a dict with a ``status``: ``ok`` or the reason the output could not be
used (``empty``, ``no_json``, ``truncated``, ``invalid_json``, ``missing_field``,
``invalid_value``, ...). They never raise on any input string; the raw output is kept by
the caller next to the status.
"""
from __future__ import annotations

import json
import re
from typing import Any, Optional

AXES = ("completeness", "complexity", "correctness", "reasoning")
AXIS_MAX = 4

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.S)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_PY_LITERALS = {"None": "null", "True": "true", "False": "false"}
_DOC_REFERENCE = re.compile(
    r"\b(according to|based on|in|from|described in|mentioned in) the (document|text|passage|article|page|post)\b",
    re.I,
)
NULL_ANSWERS = {"", "null", "none", "n/a", "na", "not available", "no reference", "unknown", "-"}


def _balanced_object(text: str, start: int) -> Optional[str]:
    """The ``{...}`` starting at ``start`` with braces balanced outside strings, or None if it never closes."""
    depth = 0
    in_str = False
    esc = False
    quote = ""
    for i in range(start, len(text)):
        ch = text[i]
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == quote:
                in_str = False
        elif ch in "\"'":
            in_str, quote = True, ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def _repairs(candidate: str):
    yield candidate
    fixed = _TRAILING_COMMA.sub(r"\1", candidate)
    yield fixed
    py = re.sub(r"\b(None|True|False)\b", lambda m: _PY_LITERALS[m.group(1)], fixed)
    yield py
    if "'" in py and '"' not in py:
        yield py.replace("'", '"')
    # unquoted keys: {question: "..."}
    yield re.sub(r"([{,]\s*)([A-Za-z_][A-Za-z0-9_]*)\s*:", r'\1"\2":', py)


def extract_json_object(text: Optional[str]) -> tuple[Optional[dict], str]:
    """Find the first JSON object in model output: prose around it, code fences, trailing
    commas, Python literals and single quotes are tolerated.

    >>> extract_json_object('Sure! ```json\\n{"a": 1,}\\n```')
    ({'a': 1}, 'ok')
    >>> extract_json_object('{"a": "unfinished')
    (None, 'truncated')
    """
    if text is None or not text.strip():
        return None, "empty"
    sources = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    saw_open = False
    for src in sources:
        pos = src.find("{")
        while pos != -1:
            saw_open = True
            candidate = _balanced_object(src, pos)
            if candidate is None:
                break
            for attempt in _repairs(candidate):
                try:
                    obj = json.loads(attempt)
                except (json.JSONDecodeError, ValueError):
                    continue
                if isinstance(obj, dict):
                    return obj, "ok"
            pos = src.find("{", pos + 1)
    if not saw_open:
        return None, "no_json"
    # an object was opened: if no candidate ever closed, the output was cut off
    for src in sources:
        pos = src.find("{")
        if pos != -1 and _balanced_object(src, pos) is None:
            return None, "truncated"
    return None, "invalid_json"


def _to_int(value: Any) -> Optional[int]:
    """4, 4.0, "4", "4/4", "4 out of 4", "Score: 4" -> 4; anything else -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        m = re.search(r"-?\d+(?:\.\d+)?", value)
        if m:
            f = float(m.group(0))
            return int(f) if f.is_integer() else None
    return None


def _fail(status: str, **fields) -> dict:
    return {"status": status, **fields}


def parse_annotation(text: Optional[str]) -> dict:
    """Scores 0-4 on the four axes plus a domain label.

    >>> parse_annotation('{"completeness": 4, "complexity": "3/4", "correctness": 4, "reasoning": 2, "domain": "physics"}')["complexity"]
    3
    """
    empty = {a: None for a in AXES} | {"domain": None}
    obj, status = extract_json_object(text)
    if obj is None:
        # Lenient fallback for outputs like `complexity: 4` lines.
        found = {}
        for axis in AXES:
            m = re.search(rf"\b{axis}\b\"?\s*[:=]\s*\"?(\d+)", text or "", re.I)
            if m:
                found[axis] = int(m.group(1))
        if len(found) == len(AXES) and all(0 <= v <= AXIS_MAX for v in found.values()):
            return {"status": "ok", **found, "domain": None}
        return _fail(status, **empty)
    lowered = {str(k).strip().lower().replace(" ", "_"): v for k, v in obj.items()}
    out = dict(empty)
    for axis in AXES:
        if axis not in lowered:
            return _fail("missing_field", **empty)
        v = _to_int(lowered[axis])
        if v is None or not 0 <= v <= AXIS_MAX:
            return _fail("invalid_value", **empty)
        out[axis] = v
    dom = lowered.get("domain")
    out["domain"] = str(dom).strip().lower()[:64] if isinstance(dom, (str, int, float)) and str(dom).strip() else None
    return {"status": "ok", **out}


def select_document(scores: dict, rule: dict[str, int]) -> bool:
    """A document goes on to synthesis when every configured axis reaches its minimum."""
    if scores.get("status") != "ok":
        return False
    return all((scores.get(axis) or 0) >= minimum for axis, minimum in rule.items())


def normalize_reference(value: Any) -> Optional[str]:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, dict)):
        value = json.dumps(value, ensure_ascii=False)
    s = str(value).strip()
    return None if s.lower().strip(".") in NULL_ANSWERS else s


def answer_bucket(reference: Optional[str]) -> str:
    """The paper's answer-length groups.

    >>> [answer_bucket(x) for x in (None, "42", "x = 3 or x = -3", "a b c d e f g h i j")]
    ['none', 'single_word', 'short', 'long']
    """
    if reference is None or not reference.strip():
        return "none"
    n = len(reference.split())
    return "single_word" if n == 1 else ("short" if n < 10 else "long")


def parse_question(text: Optional[str], min_chars: int = 20) -> dict:
    empty = {"question": None, "reference_answer": None, "answer_bucket": "none"}
    obj, status = extract_json_object(text)
    if obj is None:
        return _fail(status, **empty)
    lowered = {str(k).strip().lower(): v for k, v in obj.items()}
    q = lowered.get("question")
    if q is None:
        return _fail("missing_field", **empty)
    if not isinstance(q, str):
        return _fail("invalid_value", **empty)
    q = q.strip()
    if len(q) < min_chars:
        return _fail("empty_question" if not q else "question_too_short", **empty)
    ref = normalize_reference(lowered.get("reference_answer", lowered.get("answer")))
    result = {"question": q, "reference_answer": ref, "answer_bucket": answer_bucket(ref)}
    if _DOC_REFERENCE.search(q):
        return {"status": "not_self_contained", **result}
    return {"status": "ok", **result}


def parse_quality(text: Optional[str]) -> dict:
    empty = {"score": None, "improved_question": None}
    obj, status = extract_json_object(text)
    if obj is None:
        m = re.search(r"question_quality_score\"?\s*[:=]\s*(\d+)", text or "")
        if m and 1 <= int(m.group(1)) <= 10:
            return {"status": "ok", "score": float(m.group(1)), "improved_question": None}
        return _fail(status, **empty)
    lowered = {str(k).strip().lower(): v for k, v in obj.items()}
    if "question_quality_score" not in lowered:
        return _fail("missing_field", **empty)
    score = _to_int(lowered["question_quality_score"])
    if score is None or not 1 <= score <= 10:
        return _fail("invalid_value", **empty)
    improved = lowered.get("improved_question")
    improved = improved.strip() if isinstance(improved, str) and improved.strip() else None
    return {"status": "ok", "score": float(score), "improved_question": improved}


_YES_NO = re.compile(r"\b(yes|no)\b", re.I)


def parse_verdict(text: Optional[str]) -> dict:
    """Yes/No with an explanation; falls back to the first standalone Yes or No."""
    obj, status = extract_json_object(text)
    if obj is not None:
        lowered = {str(k).strip().lower(): v for k, v in obj.items()}
        v = lowered.get("verdict", lowered.get("judgment"))
        if isinstance(v, bool):
            v = "Yes" if v else "No"
        if isinstance(v, str) and v.strip().strip('*."').lower() in ("yes", "no"):
            expl = lowered.get("explanation")
            return {"status": "ok", "verdict": v.strip().strip('*."').capitalize(),
                    "explanation": expl if isinstance(expl, str) else None}
        if v is None:
            return {"status": "missing_field", "verdict": None, "explanation": None}
        return {"status": "invalid_value", "verdict": None, "explanation": None}
    m = _YES_NO.search(text or "")
    if m:
        return {"status": "ok", "verdict": m.group(1).capitalize(), "explanation": (text or "").strip()[:2000]}
    return {"status": status, "verdict": None, "explanation": None}


# JSON schemas for structured decoding, where the engine supports it (vLLM). The parsers
# above stay the source of truth: a schema only makes a parseable answer more likely.
# additionalProperties false: without it a constrained small model may keep inventing keys
# until max_tokens cuts the object off.
SCHEMAS: dict[str, dict] = {
    "annotation": {
        "type": "object",
        "additionalProperties": False,
        "properties": {**{a: {"type": "integer", "minimum": 0, "maximum": AXIS_MAX} for a in AXES},
                       "domain": {"type": "string", "maxLength": 40}},
        "required": [*AXES, "domain"],
    },
    "question": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"question": {"type": "string", "minLength": 20, "maxLength": 1500},
                       "reference_answer": {"type": ["string", "null"], "maxLength": 400}},
        "required": ["question", "reference_answer"],
    },
    "quality": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"question_quality_score": {"type": "integer", "minimum": 1, "maximum": 10},
                       "improved_question": {"type": "string", "maxLength": 1500}},
        "required": ["question_quality_score", "improved_question"],
    },
    "verdict": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"verdict": {"type": "string", "enum": ["Yes", "No"]},
                       "explanation": {"type": "string", "maxLength": 600}},
        "required": ["verdict", "explanation"],
    },
}
