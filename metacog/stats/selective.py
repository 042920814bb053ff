"""Selective prediction: the risk-coverage curve and the area under it (AURC; Geifman &
El-Yaniv 2017), with tied confidences handled in input order or by their expected risk."""
from __future__ import annotations

import numpy as np
import pandas as pd

from metacog.stats.checks import as_labels

__all__ = ["risk_coverage", "aurc"]


def risk_coverage(conf, labels, ties: str = "stable") -> pd.DataFrame:
    """Risk-coverage curve: items sorted by decreasing confidence (stable, so tied items keep
    their input order); row k (1-based) has coverage k/N and risk = errors among the first k / k.

    ``ties="average"`` keeps that order but gives each prefix that ends inside a group of tied
    confidences its *expected* risk over random orders of the tie group (errors before the group
    + (k − before) × the group's error rate, over k), so the curve no longer depends on the input
    order of tied items (important when a model says "100" for almost everything).

    Raises: ValueError on NaN confidences or ``ties`` other than "stable"/"average".
    """
    c = np.asarray(conf, dtype=float).ravel()
    y = as_labels(labels, c.size)
    if np.any(np.isnan(c)):
        raise ValueError("confidences contain NaN")
    if ties not in ("stable", "average"):
        raise ValueError("ties must be 'stable' or 'average'")
    N = c.size
    if N == 0:
        return pd.DataFrame({"coverage": np.zeros(0), "risk": np.zeros(0)})
    order = np.argsort(-c, kind="stable")
    err = (~y[order]).astype(float)
    k = np.arange(1, N + 1, dtype=float)
    cum = np.cumsum(err)
    if ties == "average":
        cs = c[order]
        start = np.r_[True, cs[1:] != cs[:-1]]
        gid = np.cumsum(start) - 1
        gstart = np.flatnonzero(start)
        gend = np.r_[gstart[1:], N]
        before = np.r_[0.0, cum][gstart]  # errors before each group
        rate = (np.r_[0.0, cum][gend] - before) / (gend - gstart)
        cum = before[gid] + (k - gstart[gid]) * rate[gid]
    return pd.DataFrame({"coverage": k / N, "risk": cum / k})


def aurc(conf, labels, ties: str = "average") -> float:
    """Area under the risk-coverage curve (AURC; Geifman & El-Yaniv 2017) = mean of the risk
    (error rate, 0–1) over coverages k/N, k = 1..N, of ``conf [N]`` (any monotone confidence scale)
    against correctness ``labels [N]``.

    Default ``ties="average"`` (order-independent; see :func:`risk_coverage`); ``"stable"``
    uses the input order among tied confidences. NaN for no items.
    """
    rc = risk_coverage(conf, labels, ties=ties)
    return float(rc["risk"].mean()) if len(rc) else float("nan")
