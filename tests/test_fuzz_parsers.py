"""Fuzzed model outputs: every parser and the self-score take anything without raising.

Each parser sees at least 10,000 generated outputs (hypothesis) plus a corpus of nasty cases
(truncated, nested and huge JSON, 100k-digit numbers, NaN/Infinity, unicode escapes and lone
surrogates, markdown fences, several objects, keys of the wrong type). Every result carries a
status from the parser's documented set, every string in it is valid UTF-8 (Arrow and Parquet
cannot store anything else), and the parse UDF's frame converts to Arrow.
"""
from __future__ import annotations

import json
import math

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udfs import parsers
from udfs.llm.selfscore import STATUSES as SELFSCORE_STATUSES
from udfs.llm.selfscore import self_score, yes_no_score
from udfs.parse_udf import PARSE_SPECS, parse_series, selfscore_series

PARSERS = {name: fn for name, (fn, _) in PARSE_SPECS.items()}
EXAMPLES = 10_000
FIELDS = ["completeness", "complexity", "correctness", "reasoning", "domain", "question", "reference_answer",
          "answer", "question_quality_score", "improved_question", "verdict", "judgment", "explanation",
          "Completeness", " Reasoning ", "score"]


def check(name: str, text) -> dict:
    got = PARSERS[name](text)
    assert isinstance(got, dict), (name, text)
    assert got["status"] in parsers.STATUSES[name], (name, got["status"], str(text)[:200])
    for k, v in got.items():
        if isinstance(v, str):
            v.encode("utf-8")  # raises on a lone surrogate
    if got["status"] == "ok" and name == "annotation":
        assert all(0 <= got[a] <= parsers.AXIS_MAX for a in parsers.AXES)
    if got["status"] == "ok" and name == "quality":
        assert 1 <= got["score"] <= 10
    return got


# ---------------------------------------------------------------- generated outputs

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-10, max_value=12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["4", "4/4", "3 out of 4", "Score: 7", "Yes", "no", "YES.", "**No**", "NaN", "1e999",
                     "9" * 60, "-0", "4.0", "4.5"]),
)
json_values = st.one_of(json_scalars, st.lists(json_scalars, max_size=3),
                        st.dictionaries(st.sampled_from(FIELDS), json_scalars, max_size=3))
# mostly-valid values per field, so a good share of outputs parse and the rest differ in one place
plausible = {
    **{a: st.one_of(st.integers(0, 4), st.sampled_from([4, "4", "3/4", "2 out of 4"]), json_values)
       for a in parsers.AXES},
    "domain": st.one_of(st.sampled_from(["math", "physics", ""]), json_values),
    "question": st.one_of(st.text(min_size=20, max_size=80), st.sampled_from(
        ["According to the document, what is the main claim made by the author?",
         "What is the smallest prime number greater than one hundred?"]), json_values),
    "reference_answer": st.one_of(st.text(max_size=20), st.none(), json_values),
    "question_quality_score": st.one_of(st.integers(0, 11), st.sampled_from(["8", "7/10"]), json_values),
    "improved_question": st.one_of(st.text(max_size=40), json_values),
    "verdict": st.one_of(st.sampled_from(["Yes", "No", "yes.", "**No**", "Maybe"]), st.booleans(), json_values),
    "explanation": st.one_of(st.text(max_size=40), json_values),
}
objects = st.one_of(
    st.fixed_dictionaries(plausible),
    st.fixed_dictionaries({}, optional=plausible),
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6),
)


DAMAGES = ("none", "cut", "trailing_comma", "single_quotes", "python", "unquoted", "two_objects", "lines",
           "garbage", "fenced", "fenced_open", "prose")


@st.composite
def model_outputs(draw) -> list[str]:
    """Texts shaped like what a small model writes: one drawn object, serialized and then damaged
    in each of the ``DAMAGES`` ways (JSON cut off, repaired-able slips, prose, fences, ...).
    Drawing is the slow part of hypothesis, so one draw yields one output per damage."""
    obj = draw(objects)
    body = json.dumps(obj, allow_nan=True, ensure_ascii=draw(st.booleans()))
    cut = draw(st.integers(0, max(0, len(body) - 1)))
    second = json.dumps(draw(objects), allow_nan=True)
    garbage = draw(st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=60))
    before = draw(st.sampled_from(["", "Sure! Here it is:\n", "\ud800", "{", "The answer:"]))
    after = draw(st.sampled_from(["", "\nHope this helps.", " }", "\x00", "```"]))
    unquoted = body
    for f in FIELDS:
        unquoted = unquoted.replace(f'"{f}"', f)
    out = {
        "none": body,
        "cut": body[:cut],
        "trailing_comma": body.replace("}", ",}").replace("]", ",]"),
        "single_quotes": body.replace('"', "'"),
        "python": body.replace("null", "None").replace("true", "True").replace("false", "False"),
        "unquoted": unquoted,
        "two_objects": body + "\n" + second,
        "lines": "\n".join(f"{k}: {v}" for k, v in obj.items()),
        "garbage": garbage,
        "fenced": "```json\n" + body + "\n```",
        "fenced_open": "```\n" + body[:cut],
        "prose": before + body + after,
    }
    return [out[d] for d in DAMAGES]


def test_generated_outputs_never_raise_and_have_a_documented_status():
    """Every generated output goes through all four parsers: each parser sees EXAMPLES outputs."""
    seen = {name: {} for name in PARSERS}

    @settings(max_examples=EXAMPLES // len(DAMAGES) + 1, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(texts=model_outputs())
    def run(texts):
        for text in texts:
            for name in PARSERS:
                status = check(name, text)["status"]
                seen[name][status] = seen[name].get(status, 0) + 1

    run()
    for name, statuses in seen.items():
        assert sum(statuses.values()) >= EXAMPLES, (name, statuses)
        # the generator reaches both sides: some outputs parse, some fail for a reason
        assert statuses.get("ok", 0) > 0 and len(statuses) >= 3, (name, statuses)


# ---------------------------------------------------------------- the nasty corpus

def _nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


GOOD = {"completeness": 4, "complexity": 4, "correctness": 4, "reasoning": 4, "domain": "math",
        "question": "What is the sum of the first hundred positive integers?", "reference_answer": "5050",
        "question_quality_score": 8, "improved_question": "Sum 1..100?", "verdict": "Yes", "explanation": "same"}
GOOD_JSON = json.dumps(GOOD)
DIGITS = "7" * 100_000

NASTY = [
    None, "", " ", "\x00", "{", "}", "{{{{", "}}}}{", "[", "[]", "null", "true", "0", '"x"', "{}",
    GOOD_JSON[: len(GOOD_JSON) // 2],                       # truncated
    GOOD_JSON[:-1],
    GOOD_JSON.replace("}", ',}'),
    _nested(50), _nested(5_000), "[" * 100_000 + "]" * 100_000, "{" * 50_000,   # nested
    '{"a": "' + "x" * 3_000_000 + '"}',                     # a 3 MB string value
    json.dumps({f"k{i}": i for i in range(20_000)}),        # a huge object
    '{"completeness": ' + DIGITS + ', "complexity": 4, "correctness": 4, "reasoning": 4}',
    '{"completeness": "' + DIGITS + '", "complexity": 4, "correctness": 4, "reasoning": 4}',
    '{"completeness": -' + DIGITS + ', "complexity": 4, "correctness": 4, "reasoning": 4}',
    '{"completeness": 4.' + DIGITS + ', "complexity": 4, "correctness": 4, "reasoning": 4}',
    "completeness: " + DIGITS + "\ncomplexity: 4\ncorrectness: 4\nreasoning: 4",
    "question_quality_score: " + DIGITS,
    '{"question_quality_score": ' + DIGITS + "}",
    '{"question": "' + "What is " + DIGITS + ' plus one, exactly?", "reference_answer": ' + DIGITS + "}",
    '{"question_quality_score": "1e999"}', '{"question_quality_score": 1e999}',
    '{"completeness": NaN, "complexity": Infinity, "correctness": -Infinity, "reasoning": 4}',
    '{"question_quality_score": NaN}', '{"question_quality_score": Infinity}',
    '{"question": NaN, "reference_answer": Infinity}',
    '{"verdict": NaN}', '{"verdict": Infinity, "explanation": NaN}',
    '{"question": "\\ud800 lone high surrogate in a question text", "reference_answer": "\\udfff"}',
    '{"improved_question": "\\udc00\\ud800", "question_quality_score": 5}',
    '{"verdict": "Yes", "explanation": "\\ud83d\\ude00 pair and \\ud83d alone"}',
    '{"domain": "\\ud800", "completeness": 4, "complexity": 4, "correctness": 4, "reasoning": 4}',
    "\ud800{\"verdict\": \"No\"}\udfff",                      # lone surrogates in the raw text
    '{"question": "caf\\u00e9 \\u0000 nul and \\u001f controls in a question?"}',
    "```json\n" + GOOD_JSON + "\n```", "```json\n" + GOOD_JSON, "```\n```", "``````", "```json\n{\n```",
    "```json\n{\"verdict\": \"maybe\"}\n```\n```json\n" + GOOD_JSON + "\n```",
    GOOD_JSON + GOOD_JSON, GOOD_JSON + "\n" + json.dumps({"verdict": "No"}), "{} {} {}",
    '{"a": 1} trailing {"verdict": "No", "explanation": "second"}',
    '{1: 4, 2: 4}', "{'completeness': 4, 'complexity': 4, 'correctness': 4, 'reasoning': 4}",
    '{"completeness": [4], "complexity": {"v": 4}, "correctness": true, "reasoning": null}',
    '{"question": 42, "reference_answer": [1, 2]}', '{"question": ["a", "b"]}', '{"question": {"q": 1}}',
    '{"question_quality_score": [8]}', '{"question_quality_score": {"score": 8}}', '{"question_quality_score": true}',
    '{"verdict": ["Yes"]}', '{"verdict": {"v": "Yes"}}', '{"verdict": true}', '{"verdict": 1}',
    '{"verdict": "Yes", "explanation": 5}', '{"domain": ["x"], "completeness": 4, "complexity": 4, '
    '"correctness": 4, "reasoning": 4}',
    "{\"a\": \"unterminated \\", "{\"a\": '\\'}", "'" * 1000, '"' * 1001, "\\" * 999,
    "Yes" * 10_000, "No.", "yes and no", "\u202eYes", "Ye\u200bs",
]


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_nasty_corpus(name):
    for text in NASTY:
        check(name, text)


def test_long_digit_runs_are_values_out_of_range_not_errors():
    base = {"completeness": 4, "complexity": 4, "correctness": 4, "reasoning": 4}
    got = parsers.parse_annotation(json.dumps({**base, "completeness": DIGITS}))
    assert got["status"] == "invalid_value"
    got = parsers.parse_annotation("completeness: " + DIGITS + "\ncomplexity: 4\ncorrectness: 4\nreasoning: 4")
    assert got["status"] == "no_json"
    assert parsers.parse_quality("question_quality_score: " + DIGITS)["status"] == "no_json"
    assert parsers.parse_quality("question_quality_score: 0007")["score"] == 7.0
    got = parsers.parse_question('{"question": "What is the value of this big number?", "reference_answer": "'
                                 + DIGITS + '"}')
    assert got["status"] == "ok" and got["reference_answer"] == DIGITS


def test_lone_surrogates_become_replacement_characters():
    got = parsers.parse_question('{"question": "\\ud800 is a lone surrogate in this question?"}')
    assert got["status"] == "ok" and got["question"].startswith("\ufffd ")
    got = parsers.parse_verdict('{"verdict": "Yes", "explanation": "\\ud83d\\ude00"}')
    assert got["explanation"] == "\U0001f600"


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_parse_series_output_converts_to_arrow(name):
    frame = parse_series(pd.Series([t for t in NASTY if t is None or len(t) < 200_000] + [1.5, float("nan")]), name)
    pa.Table.from_pandas(frame)  # what the pandas UDF hands to Spark
    assert set(frame["status"]) <= parsers.STATUSES[name]


# ---------------------------------------------------------------- self-score on random logprob maps

tokens = st.one_of(st.sampled_from(["Yes", " Yes", "yes", "YES", "▁Yes", "ĠYes", "No", " no", "NO", "▁No", "ĠNo",
                                    "Maybe", "", " ", "\ud800", "Yesterday", "Non", "\x00", None, 7]),
                   st.text(max_size=4))
logprob_values = st.one_of(st.floats(-50, 0), st.sampled_from(
    [float("nan"), float("-inf"), float("inf"), 0.0, -0.0, 1e-9, 3.0, -1e308, 1e308, None, "x", True, 10**30]))
logprob_maps = st.one_of(st.none(), st.dictionaries(tokens, logprob_values, max_size=8))
MAPS_PER_EXAMPLE = 8


@settings(max_examples=EXAMPLES // MAPS_PER_EXAMPLE, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(maps=st.lists(logprob_maps, min_size=MAPS_PER_EXAMPLE, max_size=MAPS_PER_EXAMPLE),
       floor=st.sampled_from([-30.0, -20.0, -1.0, -1e6]))
def test_selfscore_random_logprob_maps(maps, floor):
    for m in maps:
        score, status = self_score(m, floor)
        assert status in SELFSCORE_STATUSES
        if status == "ok":
            assert score is not None and math.isfinite(score) and abs(score) <= abs(floor)
        else:
            assert score is None
        assert yes_no_score(m, floor) == score


@pytest.mark.parametrize("m,status", [
    (None, "no_logprobs"), ({}, "no_logprobs"), ({"Yes": float("nan"), "No": float("nan")}, "no_logprobs"),
    ({"Maybe": -0.1, "The": -2.0}, "no_verdict"), ({"Maybe": float("-inf")}, "no_verdict"),
    ({"Yes": float("-inf"), "Maybe": -0.1}, "no_verdict"),
    ({"Yes": -0.1, "No": float("-inf")}, "ok"), ({"No": -0.1}, "ok"),
])
def test_selfscore_statuses(m, status):
    assert self_score(m)[1] == status


def test_selfscore_series_as_arrow_hands_it_over():
    # a map column arrives as lists of (key, value) pairs
    s = pd.Series([[("Yes", -0.1), ("No", -2.0)], [("Maybe", -0.1)], [], None, {"No": -0.5}])
    out = selfscore_series(s, -30.0)
    assert list(out["status"]) == ["ok", "no_verdict", "no_logprobs", "no_logprobs", "ok"]
    assert out["score"][0] == pytest.approx(1.9) and out["score"][4] == pytest.approx(-29.5)
    assert out["score"][1:4].isna().all()
    pa.Table.from_pandas(out)
