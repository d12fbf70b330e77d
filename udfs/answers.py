"""Final answers of sampled responses: extraction, normalization, equivalence (pure functions).

* ``extract_answer``: the last balanced ``\\boxed{...}`` / ``\\boxed {...}`` / ``\\fbox{...}``
  (nested and escaped braces handled in one linear pass, so 10k nested braces or a 100k-char
  response cost O(n)); else the last "the answer is ..." / "final answer: ..." phrase; else
  status ``no_answer``.
* ``equivalent``: math answers go through math-verify (Hugging Face's LaTeX/sympy checker)
  with a per-check time limit, because sympy can hang on adversarial LaTeX; other answers
  compare as normalized strings. Equal normalized strings never reach sympy.
* ``group_answers``: equivalence classes of one question's answers, ranked by size with a
  deterministic tie-break (self-consistency).

The math-verify time limit is its own ``signal.alarm``, which works only in a process's main
thread (where Spark's Python workers run pandas UDFs). In another thread the check is not
attempted and the pair compares as normalized strings (method ``string_no_timer``): a hang
is worse than a missed equivalence.
"""
from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass, field
from typing import Optional, Sequence

# Answers longer than this never go to sympy: no final answer is that long, and the parser's
# time grows faster than linearly with the input.
MAX_MATH_CHARS = 300
# The "answer is" fallback keeps at most this much of the phrase that follows.
MAX_PHRASE_CHARS = 200

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_PHRASE = re.compile(
    r"(?:\bfinal answer\b|\bthe (?:final |correct )?answer\b)(?:\s+is\b\s*[:=]?|\s*[:=])[\s*]*(\S.*?)(?=\n|\.(?:\s|$)|$)",
    re.I | re.S,
)
_LATEX_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textit|operatorname)\s*\{([^{}]*)\}")
_LATEX_CMD = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{3,}")
_MATH_SIGNAL = re.compile(r"[0-9=+\-*/^_<>]|\\(?:frac|dfrac|tfrac|sqrt|pi|infty|cdot|times|le|ge|neq|pm|sum|int|log|ln|sin|cos|tan)\b")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCT = re.compile(r"[^\w\s.%/+\-=^*<>(),\[\]{}|]")


@dataclass(frozen=True)
class Extracted:
    answer: Optional[str]
    status: str  # ok | no_answer | empty
    source: Optional[str]  # boxed | answer_phrase


def _matching_braces(text: str) -> dict[int, int]:
    """Open-brace index -> its closing index, one pass; ``\\{`` and ``\\}`` are literal braces."""
    match: dict[int, int] = {}
    stack: list[int] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "{}\\":
            i += 2
            continue
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            match[stack.pop()] = i
        i += 1
    return match


def last_boxed(text: str) -> Optional[str]:
    r"""Content of the last balanced, non-empty ``\boxed{}``/``\fbox{}``; None when there is none.

    >>> last_boxed(r"so \boxed{\frac{1}{2}} and then \boxed{3}")
    '3'
    >>> last_boxed(r"\boxed{a^{2}} then \boxed{unclosed")
    'a^{2}'
    """
    starts = [m.end() - 1 for m in _BOX.finditer(text)]
    if not starts:
        return None
    match = _matching_braces(text)
    for open_at in reversed(starts):
        close = match.get(open_at)
        if close is None:
            continue
        inner = text[open_at + 1 : close].strip()
        if inner:
            return inner
    return None


def _answer_phrase(text: str) -> Optional[str]:
    found = None
    for m in _PHRASE.finditer(text):
        phrase = m.group(1).strip().strip("*").strip()
        if phrase:
            found = phrase
    if found is None:
        return None
    found = found.strip().rstrip(".").strip()
    return found[:MAX_PHRASE_CHARS] or None


def extract_answer(text: Optional[str]) -> Extracted:
    r"""The final answer of a response.

    >>> extract_answer(r"... so the area is \boxed{12}.")
    Extracted(answer='12', status='ok', source='boxed')
    >>> extract_answer("Adding them, the answer is 42.")
    Extracted(answer='42', status='ok', source='answer_phrase')
    >>> extract_answer("I am not sure.").status
    'no_answer'
    """
    if text is None or not str(text).strip():
        return Extracted(None, "empty", None)
    text = str(text)
    boxed = last_boxed(text)
    if boxed is not None:
        return Extracted(boxed, "ok", "boxed")
    phrase = _answer_phrase(text)
    if phrase is not None:
        inner = last_boxed(phrase)
        return Extracted(inner or _strip_math_delims(phrase), "ok", "answer_phrase")
    return Extracted(None, "no_answer", None)


def _strip_math_delims(s: str) -> str:
    s = s.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) > len(left) + len(right):
            return s[len(left) : -len(right)].strip()
    return s


def _unwrap(s: str) -> str:
    prev = None
    while prev != s:
        prev, s = s, _LATEX_WRAP.sub(r"\1", s)
    return s


def normalize_answer(answer: Optional[str]) -> str:
    r"""The string form two non-math answers are compared in: NFKC, LaTeX text wrappers and
    ``$`` removed, lower case, articles and stray punctuation dropped, whitespace collapsed.

    >>> normalize_answer(r"\text{The Mitochondria.}")
    'mitochondria'
    >>> normalize_answer("(B)") == normalize_answer("b")
    True
    """
    if answer is None:
        return ""
    s = unicodedata.normalize("NFKC", str(answer))
    s = _unwrap(_strip_math_delims(s)).replace("$", "")
    s = s.replace("\\,", " ").replace("\\!", "").replace("\\ ", " ").replace("~", " ")
    s = s.lower()
    s = _ARTICLES.sub(" ", s)
    s = _PUNCT.sub(" ", s)
    s = " ".join(s.split())
    s = s.strip(" .,;:")
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and "," not in s:
        s = s[1:-1].strip()
    return s


def looks_math(answer: Optional[str]) -> bool:
    r"""Whether an answer should be checked by math-verify rather than as a string: it has
    digits, operators or math commands and at most two words of prose.

    >>> looks_math(r"\frac{3}{4}"), looks_math("x = 2"), looks_math("Paris"), looks_math("option B")
    (True, True, False, False)
    """
    if not answer or len(answer) > MAX_MATH_CHARS:
        return False
    text = _unwrap(answer)
    if not _MATH_SIGNAL.search(text):
        return False
    words = _WORD.findall(_LATEX_CMD.sub(" ", text))
    return len(words) <= 2


def _timer_available() -> bool:
    return threading.current_thread() is threading.main_thread()


@dataclass
class Answer:
    """One answer with its math-verify parse computed at most once (parsing is the slow step)."""

    text: str
    timeout_s: int = 2
    norm: str = field(init=False)
    is_math: bool = field(init=False)
    _parsed: Optional[list] = field(init=False, default=None)
    parse_status: str = field(init=False, default="unparsed")

    def __post_init__(self):
        self.norm = normalize_answer(self.text)
        self.is_math = looks_math(self.text)

    def parsed(self) -> Optional[list]:
        if self.parse_status != "unparsed":
            return self._parsed
        if not _timer_available():
            self.parse_status = "no_timer"
            return None
        from math_verify import parse
        from math_verify.errors import TimeoutException

        try:
            got = parse(f"${_strip_math_delims(self.text)}$", parsing_timeout=self.timeout_s, raise_on_error=True)
        except TimeoutException:
            self.parse_status = "timeout"
            return None
        except Exception:  # sympy/antlr errors on malformed LaTeX: the answer is not math-checkable
            self.parse_status = "parse_error"
            return None
        self._parsed = got or None
        self.parse_status = "ok" if got else "parse_error"
        return self._parsed


def equivalent_answers(a: Answer, b: Answer) -> tuple[bool, str]:
    """(equal, method): method is ``string`` (normalized match or a non-math side), ``math_verify``,
    ``timeout``, ``parse_error`` or ``no_timer`` (the last three fall back to the string result)."""
    if a.norm == b.norm:
        return bool(a.norm), "string"
    if not (a.is_math and b.is_math):
        return False, "string"
    pa, pb = a.parsed(), b.parsed()
    if pa is None or pb is None:
        failed = a.parse_status if pa is None else b.parse_status
        return False, failed
    if not _timer_available():
        return False, "no_timer"
    from math_verify import verify
    from math_verify.errors import TimeoutException

    try:
        return bool(verify(pa, pb, timeout_seconds=a.timeout_s, raise_on_error=True)), "math_verify"
    except TimeoutException:
        return False, "timeout"
    except Exception:
        return False, "parse_error"


def equivalent(a: Optional[str], b: Optional[str], timeout_s: int = 2) -> tuple[bool, str]:
    r"""Whether two final answers are the same, and how that was decided.

    >>> equivalent(r"\frac{1}{2}", "0.5")
    (True, 'math_verify')
    >>> equivalent("Paris", r"\text{paris}")
    (True, 'string')
    """
    if a is None or b is None:
        return False, "missing"
    return equivalent_answers(Answer(a, timeout_s), Answer(b, timeout_s))


def group_answers(answers: Sequence[Optional[str]], timeout_s: int = 2, max_checks: int = 2000) -> tuple[list[Optional[int]], dict]:
    """Equivalence classes of one question's answers: ``(class_rank per answer, stats)``.

    Rank 0 is the majority class; classes are ordered by size, then by their smallest
    normalized answer, so ties break the same way whatever the input order. A missing answer
    gets None. Each answer is compared with the first member of every class so far (greedy
    clustering); answers with the same normalized string share one comparison. ``max_checks``
    bounds the math comparisons of one question; past it answers compare as strings
    (counted in ``stats['checks_skipped']``).

    >>> group_answers(["1/2", r"\\frac{1}{2}", "3", None, "0.5"])[0]
    [0, 0, 1, None, 0]
    """
    stats = {"checks": 0, "checks_skipped": 0, "timeouts": 0, "parse_errors": 0}
    by_norm: dict[str, list[int]] = {}
    objs: dict[str, Answer] = {}
    for i, a in enumerate(answers):
        if a is None:
            continue
        obj = Answer(a, timeout_s)
        if not obj.norm:
            continue
        by_norm.setdefault(obj.norm, []).append(i)
        objs.setdefault(obj.norm, obj)
    # Visit distinct answers most frequent first (then by string) so the class representative
    # is deterministic and the popular forms are compared first.
    order = sorted(by_norm, key=lambda k: (-len(by_norm[k]), k))
    classes: list[list[str]] = []
    for norm in order:
        placed = False
        for members in classes:
            rep = objs[members[0]]
            cand = objs[norm]
            if not (rep.is_math and cand.is_math):
                continue
            if stats["checks"] >= max_checks:
                stats["checks_skipped"] += 1
                continue
            stats["checks"] += 1
            same, method = equivalent_answers(rep, cand)
            if method == "timeout":
                stats["timeouts"] += 1
            elif method == "parse_error":
                stats["parse_errors"] += 1
            if same:
                members.append(norm)
                placed = True
                break
        if not placed:
            classes.append([norm])
    sized = sorted(classes, key=lambda ms: (-sum(len(by_norm[m]) for m in ms), min(ms)))
    rank_of = {m: r for r, ms in enumerate(sized) for m in ms}
    out: list[Optional[int]] = [None] * len(answers)
    for norm, idxs in by_norm.items():
        for i in idxs:
            out[i] = rank_of[norm]
    stats["classes"] = len(sized)
    return out, stats
