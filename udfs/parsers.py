"""Parsers for the pipeline prompts' outputs (pure functions, executor side).

Every parser returns a dict with a ``status``: ``ok`` or the reason the output could not be
used (the per-parser sets are in ``STATUSES``). They never raise on any input string (numbers
of any length, NaN/Infinity literals, lone surrogates, deep nesting); the raw output is kept by
the caller next to the status.
"""
from __future__ import annotations

import functools
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
# Digits kept from a number: Python's int() refuses strings over 4,300 digits, and no
# score has more than a few. A longer run is read as a bigger number than any valid score.
_MAX_DIGITS = 32
_COMMON_FAILURES = ("empty", "no_json", "truncated", "invalid_json", "missing_field", "invalid_value")
# The documented status values of each parser (``ok`` plus its failure reasons).
STATUSES: dict[str, frozenset] = {
    "annotation": frozenset(("ok", *_COMMON_FAILURES)),
    "question": frozenset(("ok", "not_self_contained", "empty_question", "question_too_short", *_COMMON_FAILURES)),
    "quality": frozenset(("ok", *_COMMON_FAILURES)),
    "verdict": frozenset(("ok", *_COMMON_FAILURES)),
}
NULL_ANSWERS = {"", "null", "none", "n/a", "na", "not available", "no reference", "unknown", "-"}


_BRACE_SCAN = re.compile(r"[{}\"'\\]")
# Opening braces tried as the start of an object. Each try scans to its closing brace, so
# without a cap a deeply nested or brace-heavy output costs quadratic time on one row.
_MAX_STARTS = 32


def _balanced_object(text: str, start: int) -> Optional[str]:
    """The ``{...}`` starting at ``start`` with braces balanced outside strings, or None if it never closes."""
    depth = 0
    quote = ""
    esc_at = -1
    # only braces, quotes and backslashes change the state: jump between them at regex speed
    for m in _BRACE_SCAN.finditer(text, start):
        ch, i = m.group(), m.start()
        if quote:
            if i == esc_at:
                continue
            if ch == "\\":
                esc_at = i + 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
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
        starts = 0
        while pos != -1 and starts < _MAX_STARTS:
            saw_open = True
            starts += 1
            candidate = _balanced_object(src, pos)
            if candidate is None:
                break
            for attempt in _repairs(candidate):
                try:
                    obj = json.loads(attempt)
                except (ValueError, RecursionError):
                    # ValueError covers JSONDecodeError and ints beyond Python's digit limit;
                    # RecursionError a nesting deeper than the interpreter's stack.
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


def _digits_int(digits: str) -> int:
    """int() of a digit run of any length: runs longer than ``_MAX_DIGITS`` are capped (still
    far out of every score range) instead of raising Python's int-size ValueError.

    >>> _digits_int("7" * 100_000) > 10**30
    True
    """
    sign = -1 if digits.startswith("-") else 1
    digits = digits.lstrip("-").lstrip("0") or "0"
    return sign * int(digits[:_MAX_DIGITS])


def _to_int(value: Any) -> Optional[int]:
    """4, 4.0, "4", "4/4", "4 out of 4", "Score: 4" -> 4; anything else -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None  # NaN and +-inf are not integers
    if isinstance(value, str):
        m = re.search(r"(-?\d+)(?:\.(\d+))?", value)
        if m:
            whole, frac = m.group(1), m.group(2)
            return _digits_int(whole) if not frac or not frac.strip("0") else None
    return None


def _fail(status: str, **fields) -> dict:
    return {"status": status, **fields}


def valid_utf8(text: str) -> str:
    """``text`` with lone surrogates (a JSON ``"\\ud800"`` escape decodes to one) replaced by
    U+FFFD: Arrow and Parquet store UTF-8, which cannot encode them, so one such row would
    fail the whole task. Surrogate pairs become the character they encode.

    >>> valid_utf8("a\\ud800b") == "a\\ufffdb", valid_utf8("\\ud83d\\ude00") == "\\U0001f600"
    (True, True)
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _text_fields_valid(parse):
    """Every string a parser returns is valid UTF-8 (see ``valid_utf8``)."""
    @functools.wraps(parse)
    def wrapper(*args, **kwargs) -> dict:
        return {k: valid_utf8(v) if isinstance(v, str) else v for k, v in parse(*args, **kwargs).items()}

    return wrapper


@_text_fields_valid
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
                found[axis] = _digits_int(m.group(1))
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


@_text_fields_valid
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


@_text_fields_valid
def parse_quality(text: Optional[str]) -> dict:
    empty = {"score": None, "improved_question": None}
    obj, status = extract_json_object(text)
    if obj is None:
        m = re.search(r"question_quality_score\"?\s*[:=]\s*(\d+)", text or "")
        if m and 1 <= (score := _digits_int(m.group(1))) <= 10:
            return {"status": "ok", "score": float(score), "improved_question": None}
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


@_text_fields_valid
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
