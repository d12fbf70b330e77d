"""Teacher traces for NaturalThoughts selection (pure functions, executor side).

* ``parse_trace``: a response -> ``reasoning`` and ``answer`` with a status.
* ``final_answer`` / ``answer_key``: the final answer of a response and its normalized form,
  compared across teachers by the ``disagreement`` strategy.
* ``parse_strategies`` / ``normalize_tag``: the tagger's output -> a normalized tag list.

Seam: answer extraction and equivalence belong to the self-training work (``udfs/answers.py``,
issue 15). Until it lands, ``answer_key`` is a normalized string match; switch its body to
that module's canonical form when it exists, and disagreement follows.
"""
from __future__ import annotations

import json
import re
from typing import Any, Optional

from udfs.parsers import extract_json_object

# Trace statuses (ARCHITECTURE.md §3): ok, untagged, empty, no_trace, unclosed_think, empty_answer,
# empty_reasoning. Usable: ok (tags or a reasoning field) and, when allowed, untagged.
TRACE_OK = "ok"
TRACE_UNTAGGED = "untagged"  # no <think> tags; split at a marked final answer or the last paragraph

_OPEN, _CLOSE = "<think>", "</think>"
_MARKER = re.compile(r"(?im)(?:^|\n)[ \t*#]*(?:final answer|answer)\s*(?:is)?\s*[:：]|\\boxed\s*\{|final answer\s*:")
_FINAL = re.compile(r"(?i)final answer\s*(?:is)?\s*[:：]?\s*(.+)")
_ANSWER = re.compile(r"(?i)(?:^|\n)[ \t*#]*answer\s*[:：]\s*(.+)")


def parse_trace(text: Optional[str], reasoning_field: Optional[str] = None) -> dict:
    """Split a response into its reasoning and its answer.

    >>> parse_trace("<think>a then b</think> The answer is 4.")["status"]
    'ok'
    >>> parse_trace("Step 1: add. Step 2: check.\\nFinal answer: 4")["reasoning"]
    'Step 1: add. Step 2: check.'
    >>> parse_trace("<think>still going")["status"], parse_trace("Just 4.")["status"]
    ('unclosed_think', 'no_trace')
    """
    text = text if isinstance(text, str) else ""
    field = reasoning_field.strip() if isinstance(reasoning_field, str) else ""
    if field:
        answer = text.replace(_OPEN, "").replace(_CLOSE, "").strip()
        return _result("ok", field, answer)
    if not text.strip():
        return _result("empty", None, None)
    close = text.rfind(_CLOSE)
    if close != -1:
        # Reasoning models often get <think> from the chat template, so only the close tag is
        # in the output; take everything before it.
        start = text.find(_OPEN)
        start = 0 if start == -1 or start > close else start + len(_OPEN)
        return _result("ok", text[start:close].strip(), text[close + len(_CLOSE):].strip())
    if _OPEN in text:
        return _result("unclosed_think", text.split(_OPEN, 1)[1].strip() or None, None)
    m = None
    for m in _MARKER.finditer(text):
        pass  # the last marker: earlier ones may be part of the reasoning
    if m is not None:
        cut = m.start() + (1 if text[m.start()] == "\n" else 0)
        return _result(TRACE_UNTAGGED, text[:cut].strip(), text[cut:].strip())
    # No marker: a worked answer from a non-reasoning model still ends with its conclusion in
    # a paragraph of its own.
    head, sep, tail = text.strip().rpartition("\n\n")
    if sep and head.strip() and tail.strip():
        return _result(TRACE_UNTAGGED, head.strip(), tail.strip())
    return _result("no_trace", None, text.strip())


def _result(status: str, reasoning: Optional[str], answer: Optional[str]) -> dict:
    if status in (TRACE_OK, TRACE_UNTAGGED):
        if not reasoning:
            status = "empty_reasoning"
        elif not answer:
            status = "empty_answer"
    return {"status": status, "reasoning": reasoning or None, "answer": answer or None}


def _boxed(text: str) -> Optional[str]:
    """Content of the last ``\\boxed{...}`` with balanced braces."""
    pos = text.rfind("\\boxed")
    if pos == -1:
        return None
    start = text.find("{", pos)
    if start == -1:
        return None
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1:i]
    return None


def final_answer(answer: Optional[str]) -> Optional[str]:
    """The final answer inside a response's answer part: ``\\boxed{}``, else the text after the
    last "final answer:" / "answer:", else the last non-empty line.

    >>> final_answer("So we get \\\\boxed{\\\\frac{1}{2}}.")
    '\\\\frac{1}{2}'
    >>> final_answer("Work...\\nFinal answer: option 3.")
    'option 3.'
    """
    if not isinstance(answer, str) or not answer.strip():
        return None
    boxed = _boxed(answer)
    if boxed is not None:
        return boxed.strip()
    for pattern in (_FINAL, _ANSWER):
        found = pattern.findall(answer)
        if found:
            return found[-1].strip()
    lines = [ln.strip() for ln in answer.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else None


_LATEX_WRAP = re.compile(r"\\(?:text|mathrm|mathbf|textbf)\s*\{([^{}]*)\}")


def answer_key(answer: Optional[str]) -> Optional[str]:
    """Normalized form of a final answer; equal keys = the same answer (see the module's seam note).

    >>> answer_key("  **Option 3.** "), answer_key("$x = 4$"), answer_key("\\\\text{4 m/s}")
    ('option 3', 'x=4', '4 m/s')
    """
    if answer is None:
        return None
    s = _LATEX_WRAP.sub(r"\1", answer).lower()
    s = s.replace("$", "").replace("*", "").replace("\\,", "").replace("\\!", "")
    s = re.sub(r"\s*([=+\-/^()])\s*", r"\1", s)
    s = re.sub(r"\s+", " ", s).strip().strip(".;:,").strip()
    return s or None


def reasoning_tokens(reasoning: Optional[str], response: Optional[str], completion_tokens: Optional[int]) -> int:
    """Reasoning length in model tokens: the response's token count scaled by the reasoning's
    share of the characters; without a count, word pieces (words and punctuation marks).

    >>> reasoning_tokens("abcd", "abcdabcd", 10), reasoning_tokens("a b, c", None, None)
    (5, 4)
    """
    if not reasoning:
        return 0
    if completion_tokens and response:
        return int(round(completion_tokens * min(1.0, len(reasoning) / max(1, len(response)))))
    return len(re.findall(r"\w+|[^\w\s]", reasoning))


# --------------------------------------------------------------------------- strategy tags

MAX_TAGS = 8
STRATEGY_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"strategies": {"type": "array", "items": {"type": "string", "maxLength": 40},
                                  "minItems": 1, "maxItems": MAX_TAGS}},
    "required": ["strategies"],
}


def normalize_tag(tag: Any) -> Optional[str]:
    """One spelling per strategy: lower case, words joined by '-', no leading filler.

    >>> [normalize_tag(t) for t in ("Case Analysis", "case_analysis.", "Proof by contradiction", "  ", 3)]
    ['case-analysis', 'case-analysis', 'proof-by-contradiction', None, None]
    """
    if not isinstance(tag, str):
        return None
    words = re.findall(r"[a-z0-9]+", tag.lower())
    while words and words[0] in ("a", "an", "the", "using", "use", "uses", "via"):
        words = words[1:]
    out = "-".join(words)[:40].strip("-")
    return out or None


def parse_strategies(text: Optional[str]) -> dict:
    """The tagger's output -> ``{"status", "strategies"}`` with normalized, de-duplicated tags.

    >>> parse_strategies('{"strategies": ["Case analysis", "case-analysis", "Backtracking"]}')
    {'status': 'ok', 'strategies': ['case-analysis', 'backtracking']}
    >>> parse_strategies('Strategies: ["working backwards"]')["strategies"]
    ['working-backwards']
    >>> parse_strategies("no idea")["status"]
    'no_json'
    """
    obj, status = extract_json_object(text)
    raw = None
    if obj is not None:
        lowered = {str(k).strip().lower(): v for k, v in obj.items()}
        raw = lowered.get("strategies", lowered.get("tags"))
        if raw is None:
            return {"status": "missing_field", "strategies": None}
    else:
        m = re.search(r"\[[^\[\]]*\]", text or "")
        if m:
            try:
                raw = json.loads(m.group(0))
            except ValueError:
                raw = None
        if raw is None:
            return {"status": status, "strategies": None}
    if isinstance(raw, str):
        raw = [p for p in re.split(r"[,;\n]", raw)]
    if not isinstance(raw, list):
        return {"status": "invalid_value", "strategies": None}
    tags: list[str] = []
    for t in raw:
        n = normalize_tag(t)
        if n and n not in tags:
            tags.append(n)
    if not tags:
        return {"status": "invalid_value", "strategies": None}
    return {"status": "ok", "strategies": tags[:MAX_TAGS]}
