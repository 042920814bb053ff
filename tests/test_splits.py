"""metacog.data.splits: seeded, stratified, disjoint train / calibration / eval splits."""
from __future__ import annotations

import collections

import pandas as pd
import pytest

from metacog.data import SPLITS, assign_splits, check_splits, load_dataset


def ids(n):
    return [f"item-{i}" for i in range(n)]


def test_labels_fractions_and_disjoint():
    s = assign_splits(ids(1000), seed=0)
    assert set(s) == set(SPLITS) and len(s) == 1000
    c = collections.Counter(s)
    assert c == {"train": 600, "calibration": 200, "eval": 200}
    out = check_splits(pd.DataFrame({"id": ids(1000), "split": s}))
    assert out == {"train": 600, "calibration": 200, "eval": 200, "disjoint": True}


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
    s = assign_splits(wf["id"], seed=0, strata=wf["category"])
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
        "train": 2, "calibration": 0, "eval": 0, "disjoint": True}
