"""Seeded, stratified train / calibration / eval splits by group, and checks that they are disjoint.

``assign_splits`` splits *groups* (an item's underlying fact or entity: a question and its
reverse share one group; without groups every item is its own group), so no fact is seen in
training and tested in eval. It orders the groups of each stratum by a seeded hash of the group
key (so a group's place does not depend on the input order), walks the strata in sorted order
and gives each whole group to the split furthest below its target share of *items* once the
group is added. Every split is non-empty when there are at least 3 groups, and each stratum's
counts are within about one group of its share. With every item its own group this is exactly
the per-item rule of earlier versions (same seed, same splits).

A group's stratum is its most common category (ties: the first in sorted order).
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


def _labels_of(values, n: int, what: str) -> list[str]:
    vals = values.tolist() if hasattr(values, "tolist") else list(values)
    if len(vals) != n:
        raise ValueError(f"{what} has {len(vals)} labels for {n} ids")
    return ["" if s is None or (isinstance(s, float) and s != s) else str(s) for s in vals]


def group_keys(ids, groups=None) -> list[str]:
    """The group of each item: ``groups[i]`` when given and not empty/None/NaN, else the item's id
    (so an item without a group is a group of its own). Keys of the two kinds never collide: an
    item's own-id group is prefixed ``"id:"``, a named group ``"g:"``."""
    keys = [str(i) for i in (ids.tolist() if hasattr(ids, "tolist") else list(ids))]
    if groups is None:
        return ["id:" + k for k in keys]
    g = _labels_of(groups, len(keys), "groups")
    return [("g:" + gi) if gi else ("id:" + k) for gi, k in zip(g, keys)]


def assign_splits(ids, seed: int = 0, fractions=(0.6, 0.2, 0.2), strata=None, groups=None) -> pd.Series:
    """Split labels ("train" / "calibration" / "eval") indexed like ``ids``.

    ids: unique item ids (list, array or Series; a Series keeps its index).
    strata: optional labels (e.g. category) of the same length: each stratum is split in the
    given proportions. groups: optional group labels of the same length (None / "" / NaN = the
    item's own group): all items of a group land in one split. Deterministic in (ids, seed,
    fractions, strata, groups), whatever the input order. Raises ValueError for duplicated ids,
    fractions that are not three positive numbers summing to 1, or labels of the wrong length.
    """
    fr = _fractions(fractions)
    index = ids.index if isinstance(ids, pd.Series) else pd.RangeIndex(len(ids))
    keys = [str(i) for i in (ids.tolist() if hasattr(ids, "tolist") else list(ids))]
    dup = sorted(k for k, n in Counter(keys).items() if n > 1)
    if dup:
        raise ValueError(f"ids must be unique; duplicated: {dup[:10]}{' ...' if len(dup) > 10 else ''}")
    strat = [""] * len(keys) if strata is None else _labels_of(strata, len(keys), "strata")
    gk = group_keys(keys, groups)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(gk):
        members.setdefault(g, []).append(i)
    # a group's stratum: its most common one (ties -> first in sorted order)
    gstrat = {g: min(Counter(strat[i] for i in m).items(), key=lambda kv: (-kv[1], kv[0]))[0] for g, m in members.items()}
    # hash the bare id for own-id groups: identical to the per-item rule when there are no groups
    order = sorted(members, key=lambda g: (gstrat[g], hashlib.sha256(f"{seed}\x00{g.split(':', 1)[1]}".encode()).hexdigest(),
                                           g))
    where: dict[str, int] = {}
    counts = [0, 0, 0]
    n = 0
    for g in order:
        m = len(members[g])
        n += m
        s = max(range(3), key=lambda k: (fr[k] * n - counts[k], -k))
        counts[s] += m
        where[g] = s
    # few groups: make every split non-empty (move the last-ordered group of the biggest split
    # that has more than one group)
    if len(order) >= 3:
        for s in range(3):
            if counts[s] == 0:
                ng = Counter(where.values())
                big = max((k for k in range(3) if ng[k] > 1), key=lambda k: (counts[k], -k))
                g = next(g for g in reversed(order) if where[g] == big)
                where[g] = s
                counts[big] -= len(members[g])
                counts[s] += len(members[g])
    labels = [SPLITS[where[g]] for g in gk]
    return pd.Series(labels, index=index, name="split", dtype=object)


def check_splits(df: pd.DataFrame) -> dict:
    """Raise ValueError if an id is duplicated or in two splits, a split label is unknown, or a
    group (column ``group``, when present; empty = the item's own group) has items in more than one
    split; return ``{"train": n, "calibration": n, "eval": n, "disjoint": True,
    "group_disjoint": True, "n_groups": g}``."""
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
    gk = group_keys(ids, df["group"] if "group" in df.columns else None)
    gwhere: dict[str, set] = {}
    for g, s in zip(gk, split):
        gwhere.setdefault(g, set()).add(s)
    straddle = sorted(g for g, ss in gwhere.items() if len(ss) > 1)
    if straddle:
        detail = ", ".join(f"{g.split(':', 1)[1]!r} in {sorted(gwhere[g])}" for g in straddle[:10])
        raise ValueError(f"{len(straddle)} group(s) have items in more than one split (the same fact would be "
                         f"trained on and tested): {detail}")
    out = {s: int((split == s).sum()) for s in SPLITS}
    out["disjoint"] = True
    out["group_disjoint"] = True
    out["n_groups"] = len(gwhere)
    return out


def split_fraction_warnings(counts: dict, fractions) -> list[str]:
    """Plain-language warnings when a split got a very different size from the one asked for:
    a fraction whose expected count (fraction × items) is below one item, so the split only has
    items because every split gets at least one group. ``counts``: items per split (as returned
    by :func:`check_splits`)."""
    fr = _fractions(fractions)
    n = sum(int(counts.get(s, 0)) for s in SPLITS)
    out = []
    for s, f in zip(SPLITS, fr):
        want = f * n
        if n and want < 1:
            out.append(f"the {s} fraction {f:g} of {n} items asks for {want:.2f} item(s); the {s} split got "
                       f"{int(counts.get(s, 0))} because every split gets at least one. Use larger fractions or more items.")
    return out


def check_eval_split(items: pd.DataFrame, fractions=None) -> list[str]:
    """The launch check of the eval split, on items alone (before any model work).

    ``items`` needs a ``split`` column (and ``correct`` if already graded). Raises ValueError
    with a plain message when the eval split has no item, or -- if ``correct`` is present -- only
    one class (AUROC undefined). Returns warnings (plain strings): fewer than
    ``metrics.SMALL_EVAL_N`` eval items; with ``correct``, fewer than ``metrics.SMALL_CLASS_N`` of
    a class; ``fractions`` that asked for under one item in a split.
    """
    from metacog.stats.metrics import SMALL_EVAL_N, sample_warnings

    if "split" not in items.columns:
        raise ValueError("check_eval_split needs a 'split' column (assign_splits first)")
    ev = items[items["split"] == "eval"]
    n = len(items)
    if len(ev) == 0:
        raise ValueError(f"the eval split is empty (0 of {n} items): every metric is computed on the eval split. "
                         "Use more items (--limit) or a larger eval fraction (--splits, e.g. 0.6,0.2,0.2).")
    out: list[str] = []
    if fractions is not None:
        out += split_fraction_warnings({s: int((items["split"] == s).sum()) for s in SPLITS}, fractions)
    if "correct" in ev.columns and ev["correct"].notna().all():
        y = ev["correct"].astype(bool)
        if y.all() or not y.any():
            raise ValueError(f"the eval split has only {'correct' if y.all() else 'incorrect'} answers ({len(ev)} items): "
                             "AUROC is undefined. Use more items or another seed.")
        out += sample_warnings(y.to_numpy(), "the eval split")
    elif len(ev) < SMALL_EVAL_N:
        out.append(f"the eval split has only {len(ev)} items (fewer than {SMALL_EVAL_N}): every metric is a "
                   "small-sample estimate with wide CIs.")
    return out
