"""The `spark` and `slow` markers come from fixture use (tests/conftest.py), not by hand: a test
that reaches ``spark`` through any chain of fixtures, or requests ``spark_subprocess``, is
marked `spark`; one that reaches ``real_model`` is marked `slow`; ``-m`` selects on both.
Collection only: nothing here starts Spark or loads a model."""
from __future__ import annotations

import os
import re

import pytest

from tests.conftest import REPO

pytest_plugins = ["pytester"]

SAMPLE_TESTS = '''
import pytest


@pytest.fixture
def table(store):  # spark through store
    return store


@pytest.fixture
def encoder(real_model):
    return real_model


def test_plain(tmp_path):
    pass


def test_through_store(table):
    pass


def test_sample_run(sample_run):
    pass


def test_child_process(spark_subprocess):
    pass


def test_model(real_model):
    pass


def test_model_through_a_fixture(encoder):
    pass


@pytest.mark.parametrize("n", [1, 2])
def test_spark_and_model(spark, real_model, n):
    pass
'''


@pytest.fixture
def suite(pytester):
    with open(os.path.join(REPO, "tests", "conftest.py")) as f:
        pytester.makeconftest(f.read())
    pytester.makepyfile(test_sample=SAMPLE_TESTS)
    return pytester


def names(items) -> set[str]:
    return {item.name for item in items}


def test_markers_follow_the_fixtures_a_test_reaches(suite):
    items, _ = suite.inline_genitems()
    marked = {m: names(i for i in items if i.get_closest_marker(m)) for m in ("spark", "slow")}
    assert marked["spark"] == {"test_through_store", "test_sample_run", "test_child_process",
                               "test_spark_and_model[1]", "test_spark_and_model[2]"}
    assert marked["slow"] == {"test_model", "test_model_through_a_fixture",
                              "test_spark_and_model[1]", "test_spark_and_model[2]"}


@pytest.mark.parametrize("expr,selected", [
    ("spark", {"test_through_store", "test_sample_run", "test_child_process", "test_spark_and_model[1]",
               "test_spark_and_model[2]"}),
    ("slow and not spark", {"test_model", "test_model_through_a_fixture"}),
    ("not spark and not slow and not gpu", {"test_plain"}),  # what scripts/test.sh --fast runs
])
def test_dash_m_selects_on_the_automatic_markers(suite, expr, selected):
    items, rec = suite.inline_genitems("-m", expr)  # every collected item; -m deselects some
    deselected = names(i for call in rec.getcalls("pytest_deselected") for i in call.items)
    assert names(items) - deselected == selected


def test_no_test_file_sets_spark_or_slow_by_hand():
    folder = os.path.join(REPO, "tests")
    by_hand = re.compile(r"pytest\.mark\.(spark|slow)\b")
    found = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py") and name not in ("conftest.py", os.path.basename(__file__)):
            with open(os.path.join(folder, name)) as f:
                found += [f"{name}:{i}" for i, line in enumerate(f, 1) if by_hand.search(line)]
    assert found == [], "request the spark / real_model fixtures instead"
