"""Parsers over real-looking good, truncated and malformed model outputs."""
import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udfs import keys, parsers
from udfs.parsers import (answer_bucket, extract_json_object, parse_annotation, parse_quality, parse_question,
                          parse_verdict)


def test_doctests():
    for mod in (parsers, keys):
        assert doctest.testmod(mod).failed == 0


GOOD_ANNOTATION = '{"completeness": 4, "complexity": 4, "correctness": 3, "reasoning": 4, "domain": "Physics"}'


@pytest.mark.parametrize("text", [
    GOOD_ANNOTATION,
    "Here is my rating:\n" + GOOD_ANNOTATION + "\nI hope this helps.",
    "```json\n" + GOOD_ANNOTATION + "\n```",
    GOOD_ANNOTATION.replace("}", ",}"),
    GOOD_ANNOTATION.replace('"', "'"),
    '{"Completeness": "4/4", "Complexity": "4", "Correctness": 3.0, "Reasoning": "4 out of 4", "domain": "physics"}',
])
def test_annotation_good_variants(text):
    got = parse_annotation(text)
    assert got == {"status": "ok", "completeness": 4, "complexity": 4, "correctness": 3, "reasoning": 4,
                   "domain": "physics"}


@pytest.mark.parametrize("text,status", [
    ("", "empty"),
    (None, "empty"),
    ("The document is about physics and is rather good.", "no_json"),
    ('{"completeness": 4, "complexity": 4, "correct', "truncated"),
    ('{"completeness": 4, "complexity": 4, "correctness": 3}', "missing_field"),
    ('{"completeness": 7, "complexity": 4, "correctness": 3, "reasoning": 4}', "invalid_value"),
    ('{"completeness": "high", "complexity": 4, "correctness": 3, "reasoning": 4}', "invalid_value"),
    ('{"completeness": true, "complexity": 4, "correctness": 3, "reasoning": 4}', "invalid_value"),
    ("{completeness 4 complexity}", "invalid_json"),
])
def test_annotation_failures_have_status(text, status):
    got = parse_annotation(text)
    assert got["status"] == status and got["complexity"] is None


def test_annotation_lenient_lines():
    got = parse_annotation("completeness: 3\ncomplexity: 4\ncorrectness: 4\nreasoning: 4")
    assert got["status"] == "ok" and got["reasoning"] == 4


def test_question_with_and_without_reference():
    q = "A 2 kg block slides down a frictionless 30 degree incline of length 5 m. What is its speed at the bottom?"
    got = parse_question('{"question": "%s", "reference_answer": "7 m/s"}' % q)
    assert got == {"status": "ok", "question": q, "reference_answer": "7 m/s", "answer_bucket": "short"}
    for none in ("null", '"N/A"', '"none"', '""'):
        got = parse_question('{"question": "%s", "reference_answer": %s}' % (q, none))
        assert got["status"] == "ok" and got["reference_answer"] is None and got["answer_bucket"] == "none"
    got = parse_question('{"question": "%s"}' % q)
    assert got["status"] == "ok" and got["reference_answer"] is None
    got = parse_question('{"question": "%s", "reference_answer": 42}' % q)
    assert got["reference_answer"] == "42" and got["answer_bucket"] == "single_word"


@pytest.mark.parametrize("text,status", [
    ('{"question": "What is', "truncated"),
    ('{"reference_answer": "4"}', "missing_field"),
    ('{"question": ["a", "b"]}', "invalid_value"),
    ('{"question": ""}', "empty_question"),
    ('{"question": "Why?"}', "question_too_short"),
    ('{"question": "Based on the document, what is the main reason the bridge failed under load?"}',
     "not_self_contained"),
    ("I cannot write a question for this document.", "no_json"),
])
def test_question_failures(text, status):
    assert parse_question(text)["status"] == status


def test_answer_buckets():
    assert answer_bucket("Yes") == "single_word"
    assert answer_bucket("two words") == "short"
    assert answer_bucket(" ".join(["w"] * 9)) == "short"
    assert answer_bucket(" ".join(["w"] * 10)) == "long"


def test_quality():
    got = parse_quality('Sure.\n{"question_quality_score": "8/10", "improved_question": "Better question?"}')
    assert got == {"status": "ok", "score": 8.0, "improved_question": "Better question?"}
    assert parse_quality('{"question_quality_score": 11}')["status"] == "invalid_value"
    assert parse_quality('{"improved_question": "x"}')["status"] == "missing_field"
    assert parse_quality('"question_quality_score": 7, "improved_question": "cut')["score"] == 7.0


def test_verdict():
    assert parse_verdict('{"verdict": "Yes", "explanation": "Same answer."}')["verdict"] == "Yes"
    assert parse_verdict('{"verdict": "**no**"}')["verdict"] == "No"
    assert parse_verdict("1. **Judgment**: No\n2. The final answer differs.")["verdict"] == "No"
    assert parse_verdict('{"verdict": "maybe"}')["status"] == "invalid_value"
    assert parse_verdict("")["status"] == "empty"
    assert parse_verdict("The response is partially correct")["status"] == "no_json"


def test_nested_braces_and_strings():
    obj, status = extract_json_object('x {"question": "Let f(x) = {x : x > 0} and ...", "reference_answer": "}"} y')
    assert status == "ok" and obj["reference_answer"] == "}"


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parsers_never_raise(text):
    for fn in (parse_annotation, parse_question, parse_quality, parse_verdict):
        out = fn(text)
        assert isinstance(out["status"], str)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["completeness", "complexity", "correctness", "reasoning", "domain", "x"]),
                       st.one_of(st.integers(-5, 10), st.text(max_size=5), st.none())))
def test_annotation_ok_only_when_all_axes_valid(obj):
    import json

    got = parse_annotation(json.dumps(obj))
    valid = all(isinstance(obj.get(a), int) and 0 <= obj[a] <= 4 for a in parsers.AXES)
    if got["status"] == "ok":
        assert all(0 <= got[a] <= 4 for a in parsers.AXES)
    if valid:
        assert got["status"] == "ok"
