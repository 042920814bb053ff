"""metacog.data.splits: seeded, stratified, disjoint train / calibration / eval splits."""
from __future__ import annotations

import collections

import numpy as np
import pandas as pd
import pytest

from metacog.data import SPLITS, assign_splits, check_eval_split, check_splits, load_dataset


def ids(n):
    return [f"item-{i}" for i in range(n)]


def test_labels_fractions_and_disjoint():
    s = assign_splits(ids(1000), seed=0)
    assert set(s) == set(SPLITS) and len(s) == 1000
    c = collections.Counter(s)
    assert c == {"train": 600, "calibration": 200, "eval": 200}
    out = check_splits(pd.DataFrame({"id": ids(1000), "split": s}))
    assert out == {"train": 600, "calibration": 200, "eval": 200, "disjoint": True, "group_disjoint": True, "n_groups": 1000}


def test_deterministic_and_order_independent():
    a = assign_splits(ids(300), seed=3)
    b = assign_splits(ids(300), seed=3)
    assert a.tolist() == b.tolist()
    rev = assign_splits(list(reversed(ids(300))), seed=3)
    assert dict(zip(ids(300), a)) == dict(zip(reversed(ids(300)), rev))
    assert a.tolist() != assign_splits(ids(300), seed=4).tolist()


def test_index_follows_ids():
    ser = pd.Series(ids(10), index=range(100, 110))
    s = assign_splits(ser, seed=0)
    assert list(s.index) == list(range(100, 110))
    assert list(assign_splits(ids(5), seed=0).index) == list(range(5))


def test_stratified():
    strata = ["a"] * 50 + ["b"] * 30 + ["c"] * 20 + ["d"] * 7
    s = assign_splits(ids(len(strata)), seed=1, strata=strata)
    df = pd.DataFrame({"split": s, "cat": strata})
    for cat, sub in df.groupby("cat"):
        n = len(sub)
        c = collections.Counter(sub["split"])
        for split, f in zip(SPLITS, (0.6, 0.2, 0.2)):
            assert abs(c[split] - f * n) <= 2, (cat, dict(c))
    for cat in "abc":
        assert set(df.loc[df["cat"] == cat, "split"]) == set(SPLITS)


def test_stratified_builtin():
    wf = load_dataset("world-facts")
    s = assign_splits(wf["id"], seed=0, strata=wf["category"], groups=wf["group"])  # as the study does: by fact
    df = wf.assign(split=s)
    check_splits(df)
    for cat, sub in df.groupby("category"):
        share = (sub["split"] == "eval").mean()
        assert abs(share - 0.2) < 0.05, (cat, share)


def test_small_sets_nonempty():
    for n in range(3, 12):
        s = assign_splits(ids(n), seed=0)
        assert set(s) == set(SPLITS), (n, s.tolist())
        s = assign_splits(ids(n), seed=5, fractions=(0.9, 0.05, 0.05), strata=["x"] * n)
        assert set(s) == set(SPLITS), (n, s.tolist())
    assert len(assign_splits(ids(2), seed=0)) == 2
    assert len(assign_splits([], seed=0)) == 0


def test_custom_fractions():
    c = collections.Counter(assign_splits(ids(100), seed=0, fractions=(0.5, 0.25, 0.25)))
    assert c == {"train": 50, "calibration": 25, "eval": 25}


@pytest.mark.parametrize("fr", [(0.5, 0.5), (0.6, 0.3, 0.3), (1.0, 0.0, 0.0), (0.7, -0.1, 0.4), "abc"])
def test_bad_fractions(fr):
    with pytest.raises(ValueError, match="fractions"):
        assign_splits(ids(10), seed=0, fractions=fr)


def test_duplicate_ids_and_bad_strata_rejected():
    with pytest.raises(ValueError, match="item-1"):
        assign_splits(["item-0", "item-1", "item-1"], seed=0)
    with pytest.raises(ValueError, match="strata"):
        assign_splits(ids(4), seed=0, strata=["a", "b"])


def test_check_splits_catches_overlap():
    df = pd.DataFrame({"id": ["a", "b", "c", "a"], "split": ["train", "eval", "calibration", "eval"]})
    with pytest.raises(ValueError, match=r"more than one split.*\ba\b"):
        check_splits(df)


def test_check_splits_catches_duplicates_and_labels():
    with pytest.raises(ValueError, match=r"duplicated.*'b'"):
        check_splits(pd.DataFrame({"id": ["a", "b", "b"], "split": ["train", "eval", "eval"]}))
    with pytest.raises(ValueError, match=r"unknown split.*'test'.*\['c'\]"):
        check_splits(pd.DataFrame({"id": ["a", "b", "c"], "split": ["train", "eval", "test"]}))
    with pytest.raises(ValueError, match="unknown split"):
        check_splits(pd.DataFrame({"id": ["a", "b"], "split": ["train", None]}))
    with pytest.raises(ValueError, match="columns"):
        check_splits(pd.DataFrame({"id": ["a"]}))


def test_check_splits_counts_missing_split_as_zero():
    assert check_splits(pd.DataFrame({"id": ["a", "b"], "split": ["train", "train"]})) == {
        "train": 2, "calibration": 0, "eval": 0, "disjoint": True, "group_disjoint": True, "n_groups": 2}


# ----------------------------------------------------------------------------- groups (facts)
def grouped(n_groups, seed=0):
    """Synthetic items: groups of 1-4 items (a fact asked several ways), two categories."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        for j in range(int(rng.integers(1, 5))):
            rows.append({"id": f"q{g}-{j}", "group": f"fact-{g}", "category": "ab"[g % 2]})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", range(4))
def test_groups_land_whole_in_one_split(seed):
    df = grouped(60, seed)
    df["split"] = assign_splits(df["id"], seed=seed, strata=df["category"], groups=df["group"]).to_numpy()
    assert (df.groupby("group")["split"].nunique() == 1).all()
    rep = check_splits(df)
    assert rep["group_disjoint"] is True and rep["n_groups"] == 60
    share = df["split"].value_counts(normalize=True)
    assert abs(share["train"] - 0.6) < 0.08 and abs(share["eval"] - 0.2) < 0.08
    for cat, sub in df.groupby("category"):  # stratified at the group level
        assert abs((sub["split"] == "eval").mean() - 0.2) < 0.12, cat
    # order-independent
    sh = df.sample(frac=1.0, random_state=1)
    s2 = assign_splits(sh["id"], seed=seed, strata=sh["category"], groups=sh["group"])
    assert (s2.sort_index() == df["split"]).all()


def test_reverse_question_pair_shares_a_split():
    # "chemical symbol for neptunium?" and "which element has the symbol Np?" are one fact
    for seed in range(20):
        ids_ = ["np-forward", "np-reverse"] + [f"other-{i}" for i in range(8)]
        groups = ["neptunium", "neptunium"] + [None] * 8
        s = assign_splits(ids_, seed=seed, groups=groups)
        assert s[0] == s[1], seed
        assert set(s) == set(SPLITS)
    df = pd.DataFrame({"id": ["np-forward", "np-reverse", "x"], "group": ["neptunium", "neptunium", ""],
                       "split": ["train", "eval", "calibration"]})
    with pytest.raises(ValueError, match="group.*neptunium.*eval.*train"):
        check_splits(df)


def test_without_groups_each_item_is_its_own_group():
    df = grouped(30)
    a = assign_splits(df["id"], seed=2, strata=df["category"])
    b = assign_splits(df["id"], seed=2, strata=df["category"], groups=[None] * len(df))
    c = assign_splits(df["id"], seed=2, strata=df["category"], groups=df["id"])  # group = id: same rule
    assert (a == b).all() and (a == c).all()
    assert check_splits(df.assign(split=a.to_numpy()).drop(columns="group"))["n_groups"] == len(df)
    with pytest.raises(ValueError, match="groups"):
        assign_splits(df["id"], seed=0, groups=["g"])


def test_few_groups_still_fill_every_split():
    df = grouped(3, seed=5)
    s = assign_splits(df["id"], seed=0, groups=df["group"])
    assert set(s) == set(SPLITS)
    assert (df.assign(split=s.to_numpy()).groupby("group")["split"].nunique() == 1).all()


def test_check_eval_split():
    items = pd.DataFrame({"id": ids(40), "split": assign_splits(ids(40), seed=0, fractions=(0.98, 0.01, 0.01)).to_numpy()})
    w = check_eval_split(items, fractions=(0.98, 0.01, 0.01))
    assert any("eval fraction 0.01 of 40 items asks for 0.40" in x for x in w)
    assert any("only 1 items" in x for x in w)
    with pytest.raises(ValueError, match="eval split is empty"):
        check_eval_split(pd.DataFrame({"id": ids(3), "split": ["train", "train", "calibration"]}))
    graded = pd.DataFrame({"id": ids(4), "split": ["train", "eval", "eval", "eval"], "correct": [True, True, True, True]})
    with pytest.raises(ValueError, match="only correct answers"):
        check_eval_split(graded)
    big = pd.DataFrame({"id": ids(200), "split": ["eval"] * 100 + ["train"] * 100, "correct": [True, False] * 100})
    assert check_eval_split(big, fractions=(0.5, 0.25, 0.25)) == []
