"""Seeded, stratified train / calibration / eval splits, and a check that they are disjoint.

``assign_splits`` orders the items of each stratum by a seeded hash of their id (so an
item's place does not depend on the input order), walks the strata in sorted order and gives
each item to the split furthest below its target share. Every split is non-empty when there
are at least 3 items, and each stratum's counts are within about one item of its share.
"""
from __future__ import annotations

import hashlib
from collections import Counter

import pandas as pd

SPLITS = ("train", "calibration", "eval")


def _fractions(fractions) -> tuple[float, float, float]:
    try:
        fr = tuple(float(x) for x in fractions)
    except (TypeError, ValueError):
        raise ValueError(f"fractions must be three numbers, not {fractions!r}") from None
    if len(fr) != 3 or any(not x > 0 for x in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three positive numbers summing to 1 (train, calibration, eval), not {fractions!r}")
    return fr


def assign_splits(ids, seed: int = 0, fractions=(0.6, 0.2, 0.2), strata=None) -> pd.Series:
    """Split labels ("train" / "calibration" / "eval") indexed like ``ids``.

    ids: unique item ids (list, array or Series; a Series keeps its index).
    strata: optional labels (e.g. category) of the same length: each stratum is split in the
    given proportions. Deterministic in (ids, seed, fractions, strata), whatever the input order.
    """
    fr = _fractions(fractions)
    index = ids.index if isinstance(ids, pd.Series) else pd.RangeIndex(len(ids))
    keys = [str(i) for i in (ids.tolist() if hasattr(ids, "tolist") else list(ids))]
    dup = sorted(k for k, n in Counter(keys).items() if n > 1)
    if dup:
        raise ValueError(f"ids must be unique; duplicated: {dup[:10]}{' ...' if len(dup) > 10 else ''}")
    if strata is None:
        groups = [""] * len(keys)
    else:
        groups = ["" if s is None or (isinstance(s, float) and s != s) else str(s) for s in
                  (strata.tolist() if hasattr(strata, "tolist") else list(strata))]
        if len(groups) != len(keys):
            raise ValueError(f"strata has {len(groups)} labels for {len(keys)} ids")
    order = sorted(range(len(keys)),
                   key=lambda i: (groups[i], hashlib.sha256(f"{seed}\x00{keys[i]}".encode()).hexdigest()))
    labels = [""] * len(keys)
    counts = [0, 0, 0]
    for n, i in enumerate(order, start=1):
        s = max(range(3), key=lambda k: (fr[k] * n - counts[k], -k))
        counts[s] += 1
        labels[i] = SPLITS[s]
    # tiny sets: make every split non-empty (move the last-ordered item of the biggest split)
    if len(keys) >= 3:
        for s in range(3):
            if counts[s] == 0:
                big = max(range(3), key=lambda k: (counts[k], -k))
                i = next(i for i in reversed(order) if labels[i] == SPLITS[big])
                labels[i] = SPLITS[s]
                counts[big] -= 1
                counts[s] += 1
    return pd.Series(labels, index=index, name="split", dtype=object)


def check_splits(df: pd.DataFrame) -> dict:
    """Raise ValueError if an id is duplicated or in two splits, or a split label is unknown;
    return ``{"train": n, "calibration": n, "eval": n, "disjoint": True}``."""
    for col in ("id", "split"):
        if col not in df.columns:
            raise ValueError(f"check_splits needs columns 'id' and 'split'; found {list(df.columns)}")
    ids = df["id"].astype(str)
    split = df["split"]
    bad = sorted({str(i) for i, s in zip(ids, split) if not isinstance(s, str) or s not in SPLITS})
    if bad:
        labels = sorted({repr(s) for s in split if not isinstance(s, str) or s not in SPLITS})
        raise ValueError(f"unknown split label(s) {', '.join(labels)} (allowed: {', '.join(SPLITS)}) for ids {bad[:10]}")
    where: dict[str, set] = {}
    for i, s in zip(ids, split):
        where.setdefault(i, set()).add(s)
    overlap = sorted(i for i, ss in where.items() if len(ss) > 1)
    if overlap:
        detail = ", ".join(f"{i} in {sorted(where[i])}" for i in overlap[:10])
        raise ValueError(f"{len(overlap)} id(s) are in more than one split: {detail}")
    dup = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dup:
        raise ValueError(f"{len(dup)} id(s) are duplicated: {dup[:10]}")
    out = {s: int((split == s).sum()) for s in SPLITS}
    out["disjoint"] = True
    return out
