"""Selection rules on crafted samples with the picks written by hand (udfs/selftrain.py)."""
from __future__ import annotations

import pandas as pd
import pytest

from udfs.selftrain import RULES, consistency, select, select_frame, self_score_with_status


def sample(t, i, response, answer=None, cls=None, share=None, ss=None, ss_status="ok", ref=None, reward=None,
           reward_status="ok", status="ok", q="q1"):
    return {"question_id": q, "model": "m", "temperature": t, "sample_idx": i, "response": response, "status": status,
            "answer": answer, "answer_class": cls, "class_share": share, "self_score": ss,
            "self_score_status": ss_status if ss is not None or ss_status != "ok" else "no_logprobs",
            "ref_agree": ref, "reward": reward, "reward_status": reward_status if reward is not None else "off"}


A = sample(0.0, 0, "resp A", "1/2", 0, 0.5, 1.5, ref=True, reward=0.2)
B = sample(0.7, 0, "resp B", "0.5", 0, 0.5, 2.5, ref=True, reward=-0.3)
C = sample(0.7, 1, "resp C", "3", 1, 0.25, -1.0, ref=False, reward=0.9)
D = sample(0.7, 2, "resp D", "4", 2, 0.25, 0.4, ref=False, reward=-0.8)
E = sample(1.0, 0, "resp E", None, None, None, None, ss_status="no_verdict", ref=False, reward=0.1)
F = sample(1.0, 1, "", None, None, None, 9.0, ref=True, reward=5.0, status="truncated")
ALL = [A, B, C, D, E, F]


def picks(rows, **kw):
    out = {}
    for r in select(rows, RULES, **kw):
        out[(r["kind"], r["rule"])] = r
    return out


def who(row, side="chosen"):
    return None if row[f"{side}_response"] is None else row[f"{side}_response"].split()[-1]


def test_every_rule_picks_what_was_written_by_hand():
    p = picks(ALL)
    # self-consistency: majority class {A, B}, lowest temperature first -> A; rejected from the minority {C, D}
    assert who(p["sft", "self_consistency"]) == "A" and p["sft", "self_consistency"]["chosen_score"] == 0.5
    dpo = p["dpo", "self_consistency"]
    assert who(dpo) == "A" and who(dpo, "rejected") in {"C", "D"} and dpo["margin"] == pytest.approx(0.25)
    # self-score: B (2.5) best, C (-1.0) worst; E has no verdict, F is truncated and never competes
    assert who(p["sft", "self_score"]) == "B"
    assert (who(p["dpo", "self_score"]), who(p["dpo", "self_score"], "rejected")) == ("B", "C")
    assert p["dpo", "self_score"]["margin"] == pytest.approx(3.5)
    assert who(p["sft", "self_score_filtered"]) == "B" and p["sft", "self_score_filtered"]["status"] == "ok"
    # reward: C (0.9) best, D (-0.8) worst
    assert who(p["sft", "reward"]) == "C"
    assert (who(p["dpo", "reward"]), who(p["dpo", "reward"], "rejected")) == ("C", "D")
    assert p["dpo", "reward"]["margin"] == pytest.approx(1.7)
    # reference: agreeing {A, B}, highest self-score B; rejected from the disagreeing {C, D, E}
    assert who(p["sft", "reference"]) == "B"
    assert who(p["dpo", "reference"], "rejected") in {"C", "D", "E"}
    assert all(r["status"] == "ok" for r in p.values())


def test_seeded_rejections_are_reproducible_and_depend_on_the_seed():
    a = [who(picks(ALL, seed=s)["dpo", "self_consistency"], "rejected") for s in range(20)]
    b = [who(picks(list(reversed(ALL)), seed=s)["dpo", "self_consistency"], "rejected") for s in range(20)]
    assert a == b, "input order does not matter"
    assert set(a) == {"C", "D"}, "both minority samples get drawn over seeds"


def test_self_score_filtered_drops_a_negative_best():
    rows = [sample(0.5, 0, "x", ss=-0.5), sample(0.5, 1, "y", ss=-2.0)]
    p = picks(rows)
    assert p["sft", "self_score"]["status"] == "ok" and who(p["sft", "self_score"]) == "x"
    assert p["sft", "self_score_filtered"]["status"] == "below_min_score"
    assert p["dpo", "self_score_filtered"]["status"] == "below_min_score"
    assert picks(rows, min_score=-1.0)["sft", "self_score_filtered"]["status"] == "ok"


def test_ties_break_by_temperature_then_sample_index():
    rows = [sample(0.8, 1, "late", "5", 0, 1.0, 1.0), sample(0.8, 0, "early", "5", 0, 1.0, 1.0),
            sample(0.5, 3, "cool", "5", 0, 1.0, 1.0, ref=True), sample(0.5, 2, "first", "5", 0, 1.0, 1.0, ref=True)]
    p = picks(rows)
    assert who(p["sft", "self_consistency"]) == "first"
    assert who(p["sft", "self_score"]) == "first"
    assert who(p["sft", "reference"]) == "first"
    # all scores equal: the lowest is also "first" -> no distinct rejected sample
    assert p["dpo", "self_score"]["status"] in ("no_rejected", "identical_texts")


def test_no_verdict_samples_never_compete_under_self_score():
    rows = [sample(0.5, 0, "a", ss_status="no_verdict"), sample(0.5, 1, "b", ss_status="no_verdict")]
    p = picks(rows)
    assert p["sft", "self_score"]["status"] == "no_self_score"
    assert p["dpo", "self_score_filtered"]["status"] == "no_self_score"


def test_pairs_with_equal_texts_are_dropped():
    rows = [sample(0.5, 0, "same text", ss=2.0), sample(0.5, 1, "same text", ss=-1.0)]
    p = picks(rows)
    assert p["sft", "self_score"]["status"] == "ok"
    assert p["dpo", "self_score"]["status"] == "identical_texts" and p["dpo", "self_score"]["margin"] is None


def test_drop_reasons():
    one = [sample(0.0, 0, "only", None, None, None, None, ss_status="no_logprobs")]
    p = picks(one)
    assert p["sft", "self_consistency"]["status"] == "no_answer"
    assert p["sft", "reward"]["status"] == "no_reward"
    assert p["sft", "reference"]["status"] == "no_reference"
    none_agree = picks([sample(0.0, 0, "x", "1", 0, 1.0, 1.0, ref=False)])
    assert none_agree["sft", "reference"]["status"] == "none_agree"
    single = picks([sample(0.0, 0, "x", "1", 0, 1.0, 1.0, ref=True)])
    assert single["sft", "self_consistency"]["status"] == "ok"
    assert single["dpo", "self_consistency"]["status"] == "no_rejected"
    assert select([F], RULES) == [], "only samples with status ok compete"
    assert select([], RULES) == []
    with pytest.raises(ValueError, match="unknown selection rule"):
        select([A], ["best_guess"])


def test_select_frame_is_the_applyinpandas_adapter():
    out = select_frame(pd.DataFrame(ALL), list(RULES), seed=0, min_score=0.0)
    assert len(out) == 2 * len(RULES)
    assert str(out["chosen_sample_idx"].dtype) == "Int32"
    assert set(out["status"]) == {"ok"}


def test_consistency_majority_and_ties():
    pdf = pd.DataFrame([
        {"question_id": "q", "model": "m", "temperature": t, "sample_idx": i, "answer": a}
        for t, i, a in [(0.7, 0, "7"), (0.7, 1, "5"), (0.0, 0, "7"), (1.0, 0, "5.0"), (1.0, 1, None)]])
    out = consistency(pdf).set_index(["temperature", "sample_idx"])
    # two classes of two: the tie goes to the smaller normalized answer, "5"
    assert out.loc[(0.7, 1), "answer_class"] == 0 and out.loc[(1.0, 0), "answer_class"] == 0
    assert out.loc[(0.7, 0), "answer_class"] == 1
    assert pd.isna(out.loc[(1.0, 1), "answer_class"])
    assert out["majority_share"].iloc[0] == 0.5 and out["n_distinct"].iloc[0] == 2 and out["n_answered"].iloc[0] == 4
    assert out["majority_answer"].iloc[0] == "5.0" or out["majority_answer"].iloc[0] == "5"


def test_self_score_status():
    assert self_score_with_status({"Maybe": -0.1}, -30.0) == (None, "no_verdict")
    assert self_score_with_status({}, -30.0) == (None, "no_logprobs")
    assert self_score_with_status(None, -30.0) == (None, "no_logprobs")
    s, st = self_score_with_status({" yes": -0.5, "Maybe": -1.0}, -30.0)
    assert st == "ok" and s == pytest.approx(29.5)
    s, st = self_score_with_status({"No": -0.1}, -30.0)
    assert st == "ok" and s == pytest.approx(-29.9)
