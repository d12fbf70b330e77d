"""Final-answer extraction and equivalence (udfs/answers.py): hand-written cases, bad input."""
from __future__ import annotations

import threading
import time

import pytest

from udfs.answers import equivalent, extract_answer, group_answers, last_boxed, looks_math, normalize_answer

B = "\\boxed"

# (response, expected answer or None, expected source)
EXTRACTION = [
    # one box
    (f"{B}{{5}}", "5", "boxed"),
    (f"The area is {B}{{12}}.", "12", "boxed"),
    (f"so $x = {B}{{-3}}$", "-3", "boxed"),
    (f"{B}{{ 7 }}", "7", "boxed"),
    (f"{B} {{42}}", "42", "boxed"),
    (f"{B}  {{42}}", "42", "boxed"),
    ("\\fbox{9}", "9", "boxed"),
    ("\\fbox {x+1}", "x+1", "boxed"),
    (f"$${B}{{\\pi}}$$", "\\pi", "boxed"),
    (f"\\[{B}{{2\\sqrt{{3}}}}\\]", "2\\sqrt{3}", "boxed"),
    # nested braces
    (f"{B}{{\\frac{{1}}{{2}}}}", "\\frac{1}{2}", "boxed"),
    (f"{B}{{\\frac{{\\sqrt{{2}}}}{{2}}}}", "\\frac{\\sqrt{2}}{2}", "boxed"),
    (f"{B}{{a^{{2}}+b^{{2}}}}", "a^{2}+b^{2}", "boxed"),
    (f"{B}{{\\left\\{{1,2\\right\\}}}}", "\\left\\{1,2\\right\\}", "boxed"),
    (f"{B}{{\\{{1, 2, 3\\}}}}", "\\{1, 2, 3\\}", "boxed"),
    (f"{B}{{{{{{x}}}}}}", "{{x}}", "boxed"),
    (f"{B}{{\\text{{Paris}}}}", "\\text{Paris}", "boxed"),
    (f"{B}{{\\dfrac{{3}}{{4}}}}", "\\dfrac{3}{4}", "boxed"),
    (f"{B}{{\\begin{{pmatrix}}1\\\\2\\end{{pmatrix}}}}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", "boxed"),
    (f"{B}{{f(x) = x^{{2}}}}", "f(x) = x^{2}", "boxed"),
    # several boxes: the last one wins
    (f"First {B}{{1}} then {B}{{2}}", "2", "boxed"),
    (f"{B}{{1}}, {B}{{2}}, {B}{{3}}", "3", "boxed"),
    (f"\\fbox{{1}} and {B}{{2}}", "2", "boxed"),
    (f"{B}{{1}} and \\fbox{{2}}", "2", "boxed"),
    (f"try {B}{{\\frac{{1}}{{3}}}} no wait {B}{{\\frac{{2}}{{3}}}}", "\\frac{2}{3}", "boxed"),
    # a box that never closes or is empty falls back to an earlier one
    (f"{B}{{4}} and then {B}{{unclosed", "4", "boxed"),
    (f"{B}{{4}} and then {B}{{}}", "4", "boxed"),
    (f"{B}{{4}} and then {B}{{   }}", "4", "boxed"),
    # \boxed inside text and explanations
    (f"We write the result as {B}{{10}} because that is the convention.", "10", "boxed"),
    (f"Step 1: ...\nStep 2: ...\nTherefore {B}{{x=5}} is the solution.", "x=5", "boxed"),
    (f"The final answer is {B}{{17}}. Hope it helps.", "17", "boxed"),
    (f"**Answer**: {B}{{\\textbf{{(B)}}}}", "\\textbf{(B)}", "boxed"),
    # LaTeX fractions, units, percentages
    (f"{B}{{\\frac{{7}}{{8}}\\text{{ m}}}}", "\\frac{7}{8}\\text{ m}", "boxed"),
    (f"{B}{{5\\,\\text{{cm}}}}", "5\\,\\text{cm}", "boxed"),
    (f"{B}{{25\\%}}", "25\\%", "boxed"),
    (f"{B}{{9.8 \\text{{ m/s}}^2}}", "9.8 \\text{ m/s}^2", "boxed"),
    (f"{B}{{\\$ 30}}", "\\$ 30", "boxed"),
    (f"{B}{{30^\\circ}}", "30^\\circ", "boxed"),
    (f"{B}{{1,000}}", "1,000", "boxed"),
    (f"{B}{{(2, 3)}}", "(2, 3)", "boxed"),
    (f"{B}{{[0, 1)}}", "[0, 1)", "boxed"),
    (f"{B}{{x \\in (0, \\infty)}}", "x \\in (0, \\infty)", "boxed"),
    # escaped braces do not close the box
    (f"{B}{{\\}}}}", "\\}", "boxed"),
    (f"{B}{{a\\{{b}}", "a\\{b", "boxed"),
    # no box: the answer phrase
    ("So the answer is 42.", "42", "answer_phrase"),
    ("Thus, the answer is 3.5. Next we check.", "3.5", "answer_phrase"),
    ("The final answer is: 7", "7", "answer_phrase"),
    ("Final answer: option 3.", "option 3", "answer_phrase"),
    ("**Final Answer:** 12", "12", "answer_phrase"),
    ("The correct answer is (C).", "(C)", "answer_phrase"),
    ("The answer is $\\frac{1}{2}$.", "\\frac{1}{2}", "answer_phrase"),
    ("The answer is \\(x^2\\)", "x^2", "answer_phrase"),
    ("the answer is 5\nand more text", "5", "answer_phrase"),
    ("First the answer is 1. But after checking, the answer is 2.", "2", "answer_phrase"),
    ("THE ANSWER IS PARIS.", "PARIS", "answer_phrase"),
    ("Final answer = 8", "8", "answer_phrase"),
    ("The answer is mitochondria, the powerhouse of the cell.", "mitochondria, the powerhouse of the cell", "answer_phrase"),
    # a box beats a later phrase
    (f"{B}{{4}}. The answer is 5.", "4", "boxed"),
    # nothing to extract
    ("I do not know.", None, None),
    ("Let x be the number. Then 2x = 10 so x = 5.", None, None),
    ("\\boxed", None, None),
    ("\\boxed{", None, None),
    ("boxed{5}", None, None),
    ("The answer is", None, None),
    ("The answer is .", None, None),
    ("answers are many", None, None),
]


@pytest.mark.parametrize("text,answer,source", EXTRACTION)
def test_extraction(text, answer, source):
    got = extract_answer(text)
    assert (got.answer, got.source) == (answer, source)
    assert got.status == ("ok" if answer is not None else "no_answer")


def test_there_are_enough_extraction_cases():
    assert len(EXTRACTION) >= 60


@pytest.mark.parametrize("text", [None, "", "   ", "\n\t"])
def test_empty_responses_get_status_empty(text):
    assert extract_answer(text).status == "empty"


# (a, b): math-verify must call these equal
EQUAL = [
    ("\\frac{1}{2}", "0.5"), ("1/2", "\\frac{1}{2}"), ("\\dfrac{1}{2}", "\\tfrac12"), ("0.25", "\\frac{1}{4}"),
    ("2", "2.0"), ("3", "3.000"), ("-1", "-1.0"), ("\\sqrt{4}", "2"), ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"),
    ("2^{10}", "1024"), ("x=3", "3"), ("\\pi", "\\pi"), ("2\\pi", "\\pi \\cdot 2"), ("10\\%", "0.1"),
    ("1,000", "1000"), ("5\\text{ cm}", "5"), ("a+b", "b+a"), ("(x+1)^2", "x^2+2x+1"), ("\\{1,2\\}", "\\{2,1\\}"),
    ("\\frac{6}{8}", "\\frac{3}{4}"), ("\\frac{\\frac{1}{2}}{3}", "\\frac{1}{6}"), ("e^{0}", "1"), ("\\ln(e)", "1"),
    ("\\sin(0)", "0"), ("2x", "x \\cdot 2"), ("\\infty", "\\infty"), ("0.333333", "\\frac{1}{3}"),
    ("\\frac{22}{7}", "22/7"), ("-\\frac{1}{2}", "-0.5"), ("3\\sqrt{3}", "\\sqrt{27}"),
]
# (a, b): and these unequal
UNEQUAL = [
    ("\\frac{1}{2}", "0.6"), ("2", "3"), ("x=3", "x=4"), ("\\sqrt{2}", "2"), ("\\pi", "3"), ("10\\%", "0.2"),
    ("a+b", "a-b"), ("(x+1)^2", "x^2+1"), ("\\{1,2\\}", "\\{1,3\\}"), ("1024", "2^{11}"), ("-1", "1"),
    ("\\frac{2}{3}", "\\frac{3}{2}"), ("0.5", "0.05"), ("100", "1000"), ("2x", "x^2"),
]
TEXT_EQUAL = [("Paris", "\\text{paris}"), ("(B)", "b"), ("The mitochondria.", "mitochondria"), ("yes", "Yes")]
TEXT_UNEQUAL = [("Paris", "London"), ("option A", "option B"), ("mitosis", "meiosis")]


@pytest.mark.parametrize("a,b", EQUAL)
def test_math_verify_calls_equal(a, b):
    # A generous limit: the test is about equivalence, and sympy is slow on a loaded machine.
    same, method = equivalent(a, b, timeout_s=30)
    assert same, (a, b, method)


@pytest.mark.parametrize("a,b", UNEQUAL)
def test_math_verify_calls_unequal(a, b):
    same, method = equivalent(a, b, timeout_s=30)
    assert not same, (a, b, method)
    assert method in ("math_verify", "string")


@pytest.mark.parametrize("a,b", TEXT_EQUAL)
def test_text_answers_compare_as_normalized_strings(a, b):
    assert equivalent(a, b) == (True, "string")


@pytest.mark.parametrize("a,b", TEXT_UNEQUAL)
def test_text_answers_that_differ(a, b):
    assert equivalent(a, b) == (False, "string")


def test_there_are_enough_equivalence_pairs():
    assert len(EQUAL) + len(UNEQUAL) >= 40


def test_math_pairs_really_go_through_math_verify():
    assert equivalent("\\frac{1}{2}", "0.5")[1] == "math_verify"
    assert equivalent("2^{10}", "1024")[1] == "math_verify"
    assert equivalent("2", "3")[1] == "math_verify"


def test_missing_answer_is_never_equal():
    assert equivalent(None, "1") == (False, "missing")
    assert equivalent(None, None) == (False, "missing")


@pytest.mark.parametrize("text,expected", [
    ("\\frac{3}{4}", True), ("x = 2", True), ("12", True), ("Paris", False), ("option B", False),
    ("the cell membrane", False), ("", False), ("1" * 400, False), ("5 meters per second", False),
])
def test_looks_math(text, expected):
    assert looks_math(text) is expected


def test_normalize():
    assert normalize_answer("  The   Answer ") == "answer"
    assert normalize_answer("$x$") == "x"
    assert normalize_answer(None) == ""


# ---------------------------------------------------------------- self-consistency classes


def test_group_answers_merges_equivalent_forms():
    ranks, stats = group_answers(["\\frac{1}{2}", "0.5", "3", "1/2", "3.0", None, "Paris"])
    assert ranks == [0, 0, 1, 0, 1, None, 2]
    assert stats["classes"] == 3


def test_group_answers_ties_break_by_smallest_normalized_answer_whatever_the_order():
    answers = ["7", "5", "7", "5"]
    assert group_answers(answers)[0] == [1, 0, 1, 0]
    assert group_answers(list(reversed(answers)))[0] == [0, 1, 0, 1]


def test_group_answers_text_and_math_never_merge():
    assert group_answers(["seven", "7", "Seven"])[0] == [0, 1, 0]


def test_group_answers_empty():
    assert group_answers([]) == ([], {"checks": 0, "checks_skipped": 0, "timeouts": 0, "parse_errors": 0, "classes": 0})
    assert group_answers([None, None])[0] == [None, None]


def test_group_answers_bounds_the_math_checks():
    ranks, stats = group_answers([str(i) for i in range(30)], max_checks=10)
    assert stats["checks"] == 10 and stats["checks_skipped"] > 0
    assert sorted(ranks) == list(range(30)), "unchecked answers stay apart"


# ---------------------------------------------------------------- bad input: statuses, no crash, no hang


def test_a_100k_character_response():
    text = ("word " * 20_000) + f"{B}{{7}}"
    t0 = time.monotonic()
    assert extract_answer(text).answer == "7"
    assert extract_answer("x" * 100_000).status == "no_answer"
    assert time.monotonic() - t0 < 5


def test_ten_thousand_nested_braces():
    deep = f"{B}" + "{" * 10_000 + "1" + "}" * 10_000
    got = extract_answer(deep)
    assert got.status == "ok" and got.answer == "{" * 9_999 + "1" + "}" * 9_999
    assert equivalent(got.answer, "1")[0] is False  # too long for sympy: compared as strings
    unclosed = f"{B}" + "{" * 10_000 + "1"
    assert extract_answer(unclosed).status == "no_answer"


def test_latex_that_sympy_chokes_on_gets_a_status_within_the_time_limit():
    nested = "\\frac{" * 20 + "1" + "}{2}" * 20  # 201 chars: under MAX_MATH_CHARS, so sympy sees it
    t0 = time.monotonic()
    same, method = equivalent(nested, "0.5", timeout_s=1)
    assert (same, method) == (False, "timeout")
    assert time.monotonic() - t0 < 10
    for junk in ("\\frac{", "\\sqrt[", "^^^^", "\\begin{matrix}", "1/0", "\\frac{1}{0}", "}{"):
        same, method = equivalent(junk, "1", timeout_s=1)
        assert same is False and method in ("math_verify", "parse_error", "string", "timeout"), (junk, method)


def test_outside_the_main_thread_math_is_not_attempted():
    out = {}
    t = threading.Thread(target=lambda: out.update(r=equivalent("\\frac{1}{2}", "0.5")))
    t.start()
    t.join()
    assert out["r"] == (False, "no_timer")
    assert last_boxed("no box here") is None


def test_docstring_examples():
    import doctest

    import udfs.answers
    import udfs.selftrain

    assert doctest.testmod(udfs.answers).failed == 0
    assert doctest.testmod(udfs.selftrain).failed == 0
