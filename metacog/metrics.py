"""Every metric, defined once (SCIENCE.md bug 6). Pure numpy/pandas functions.

Conventions
-----------
* ``labels`` are correctness (True/1 = correct = the positive class); they are cast to bool
  after checking that they are 0/1 (or bool).
* AUROC is P(score of a correct item > score of an incorrect one) + ½ P(tie), i.e. the
  Mann-Whitney U statistic / (n_pos n_neg), computed from average ranks. NaN when either class
  is empty.
* ``conf01`` is a confidence in [0, 1] (values outside raise, NaN raises); ``conf_0_100`` a
  verbal confidence on the 0-100 scale.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

__all__ = [
    "ECE_BINS_DOC",
    "VALIDITY_DOC",
    "auroc",
    "auroc_ci",
    "bootstrap_counts",
    "auroc_boot_batch",
    "ece",
    "reliability_bins",
    "brier",
    "risk_coverage",
    "aurc",
    "validity_screen",
    "type_prior",
    "within_type_auroc",
    "summarize_scores",
]

ECE_BINS_DOC = (
    "ECE uses n_bins equal-width bins on [0, 1] with edges e_i = i / n_bins (float64): bin i "
    "(0-based) holds confidences c with e_i <= c < e_{i+1}, except the last bin, which is closed, "
    "[e_{n-1}, 1], so 1.0 falls in the last bin and 0.1 (with 10 bins) in bin 1. "
    "ECE = sum over non-empty bins of (n_bin / N) * |accuracy_bin - mean confidence_bin|. "
    "Confidences outside [0, 1] (or NaN) raise ValueError."
)

VALIDITY_DOC = (
    "Validity screen on 0-100 confidences (NaN = unparsed, excluded and counted as n_missing): "
    "L = share of confidences >= 95; TRIN = share in the most common decile, deciles "
    "[0,10), [10,20), ..., [80,90), [90,100] (the last closed, so 100 is in [90,100]); "
    "r = point-biserial (Pearson) correlation of confidence with correctness (NaN when either is "
    "constant, and a NaN r counts as |r| < .05). Verdict: 'invalid' if L >= .70 or TRIN >= .80 or "
    "|r| < .05; else 'indeterminate' if L >= .40 or TRIN >= .60; else 'valid'. "
    "No usable confidence at all (n = 0) is 'invalid'."
)


# --------------------------------------------------------------------------- helpers
def _labels(labels, n: int | None = None) -> np.ndarray:
    y = np.asarray(labels)
    if y.dtype != bool:
        yf = y.astype(float)
        if np.any(np.isnan(yf)) or not np.all((yf == 0) | (yf == 1)):
            raise ValueError("labels must be bool or 0/1")
        y = yf.astype(bool)
    y = y.ravel()
    if n is not None and y.size != n:
        raise ValueError(f"scores and labels differ in length ({n} vs {y.size})")
    return y


def _scores_labels(scores, labels, nan_policy: str):
    s = np.asarray(scores, dtype=float).ravel()
    y = _labels(labels, s.size)
    if nan_policy not in ("raise", "omit"):
        raise ValueError(f"nan_policy must be 'raise' or 'omit', not {nan_policy!r}")
    bad = np.isnan(s)
    if bad.any():
        if nan_policy == "raise":
            raise ValueError(f"{int(bad.sum())} NaN score(s); pass nan_policy='omit' to drop them")
        s, y = s[~bad], y[~bad]
    return s, y


def _conf01(conf01, labels) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(conf01, dtype=float).ravel()
    y = _labels(labels, c.size)
    if np.any(np.isnan(c)):
        raise ValueError("confidences contain NaN; drop unparsed items first")
    if c.size and (c.min() < 0.0 or c.max() > 1.0):
        raise ValueError(f"confidences must lie in [0, 1] (got min {c.min()}, max {c.max()})")
    return c, y


# --------------------------------------------------------------------------- AUROC
def auroc(scores, labels, nan_policy: str = "raise") -> float:
    """AUROC = Mann-Whitney U / (n_pos n_neg) with average ranks for ties; NaN if one class.

    ``nan_policy``: "raise" (default) raises on NaN scores; "omit" drops those items first.
    """
    s, y = _scores_labels(scores, labels, nan_policy)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s, method="average")
    u = r[y].sum() - n1 * (n1 + 1) / 2.0
    return float(u / (n1 * n0))


def bootstrap_counts(n_pos: int, n_neg: int, n_boot: int, seed: int):
    """The stratified bootstrap draws shared by :func:`auroc_ci` and :func:`auroc_boot_batch`.

    Each replicate resamples the positives (n_pos draws with replacement) and, separately,
    the negatives (n_neg draws), using ``numpy.random.default_rng(seed)``: positives first,
    then negatives. Returns multiplicity matrices ``(n_boot, n_pos)`` and ``(n_boot, n_neg)``.
    """
    rng = np.random.default_rng(seed)
    ip = rng.integers(0, n_pos, size=(n_boot, n_pos))
    ineg = rng.integers(0, n_neg, size=(n_boot, n_neg))
    off = np.arange(n_boot)[:, None]
    cp = np.bincount((ip + off * n_pos).ravel(), minlength=n_boot * n_pos).reshape(n_boot, n_pos)
    cn = np.bincount((ineg + off * n_neg).ravel(), minlength=n_boot * n_neg).reshape(n_boot, n_neg)
    return cp, cn


def _boot_aucs_sorted(s_pos, s_neg, cp, cn) -> np.ndarray:
    """AUROC of every bootstrap replicate, O(n_boot (n_pos + n_neg)) via sorted negatives."""
    order = np.argsort(s_neg, kind="stable")
    sn = s_neg[order]
    cum = np.zeros((cn.shape[0], sn.size + 1))
    np.cumsum(cn[:, order], axis=1, out=cum[:, 1:])
    lo = np.searchsorted(sn, s_pos, side="left")  # negatives strictly below
    hi = np.searchsorted(sn, s_pos, side="right")  # ... or equal
    wins = 0.5 * (cum[:, lo] + cum[:, hi])  # below + half of ties, per replicate and positive
    return (wins * cp).sum(axis=1) / (s_pos.size * s_neg.size)


def auroc_ci(scores, labels, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0,
             nan_policy: str = "raise") -> tuple[float, float]:
    """Percentile interval (alpha/2, 1 - alpha/2) of a stratified bootstrap of :func:`auroc`.

    Positives and negatives are resampled separately (so every replicate has both classes);
    draws are :func:`bootstrap_counts` ``(n_pos, n_neg, n_boot, seed)``; quantiles use numpy's
    default linear interpolation. (NaN, NaN) when a class is empty.
    """
    s, y = _scores_labels(scores, labels, nan_policy)
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0 or n_boot < 1:
        return (float("nan"), float("nan"))
    cp, cn = bootstrap_counts(n1, n0, n_boot, seed)
    aucs = _boot_aucs_sorted(s[y], s[~y], cp, cn)
    lo, hi = np.quantile(aucs, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def auroc_boot_batch(scores_2d, labels, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0):
    """:func:`auroc` and :func:`auroc_ci` for many score vectors over the same items at once.

    ``scores_2d`` is ``[n_items, n_scores]`` (no NaN). The replicates are the same draws as
    :func:`auroc_ci` with the same seed, so column j equals ``auroc_ci(scores_2d[:, j], ...)``.
    Returns arrays ``(auroc, lo, hi)`` of length n_scores.
    """
    S = np.asarray(scores_2d, dtype=float)
    if S.ndim != 2:
        raise ValueError("scores_2d must be [n_items, n_scores]")
    y = _labels(labels, S.shape[0])
    k = S.shape[1]
    n1 = int(y.sum())
    n0 = y.size - n1
    nan = np.full(k, np.nan)
    if np.isnan(S).any():
        raise ValueError("scores contain NaN")
    if n1 == 0 or n0 == 0:
        return nan, nan.copy(), nan.copy()
    R = rankdata(S, method="average", axis=0)
    point = (R[y].sum(axis=0) - n1 * (n1 + 1) / 2.0) / (n1 * n0)
    if n_boot < 1:
        return point, nan.copy(), nan.copy()
    cp, cn = bootstrap_counts(n1, n0, n_boot, seed)
    lo = np.empty(k)
    hi = np.empty(k)
    Sp, Sn = S[y], S[~y]
    for j in range(k):
        a = _boot_aucs_sorted(Sp[:, j], Sn[:, j], cp, cn)
        lo[j], hi[j] = np.quantile(a, [alpha / 2, 1 - alpha / 2])
    return point, lo, hi


# --------------------------------------------------------------------------- calibration
def reliability_bins(conf01, labels, n_bins: int = 10) -> pd.DataFrame:
    """Per-bin table ``bin, lo, hi, n, mean_conf, accuracy`` (bins per ECE_BINS_DOC).

    Every bin is a row, empty ones included (n = 0, NaN means).
    """
    c, y = _conf01(conf01, labels)
    n_bins = int(n_bins)
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    edges = np.arange(n_bins + 1, dtype=float) / n_bins
    idx = np.clip(np.searchsorted(edges, c, side="right") - 1, 0, n_bins - 1)
    n = np.bincount(idx, minlength=n_bins)
    sc = np.bincount(idx, weights=c, minlength=n_bins)
    sy = np.bincount(idx, weights=y.astype(float), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mc = np.where(n > 0, sc / np.maximum(n, 1), np.nan)
        acc = np.where(n > 0, sy / np.maximum(n, 1), np.nan)
    return pd.DataFrame(
        {"bin": np.arange(n_bins), "lo": edges[:-1], "hi": edges[1:], "n": n.astype(int),
         "mean_conf": mc, "accuracy": acc}
    )


def ece(conf01, labels, n_bins: int = 10) -> float:
    """Expected calibration error; bins exactly as ECE_BINS_DOC (= Σ n/N |acc − conf| over
    the rows of :func:`reliability_bins`). NaN for no items."""
    t = reliability_bins(conf01, labels, n_bins)
    N = int(t["n"].sum())
    if N == 0:
        return float("nan")
    m = t["n"].to_numpy() > 0
    return float(np.sum(t["n"].to_numpy()[m] / N * np.abs(t["accuracy"].to_numpy()[m] - t["mean_conf"].to_numpy()[m])))


def brier(conf01, labels) -> float:
    """Mean of (conf − y)² with conf in [0, 1]; NaN for no items."""
    c, y = _conf01(conf01, labels)
    if c.size == 0:
        return float("nan")
    return float(np.mean((c - y.astype(float)) ** 2))


# --------------------------------------------------------------------------- selective prediction
def risk_coverage(conf, labels, ties: str = "stable") -> pd.DataFrame:
    """Risk-coverage curve: items sorted by decreasing confidence (stable, so tied items keep
    their input order); row k (1-based) has coverage k/N and risk = errors among the first k / k.

    ``ties="average"`` keeps that order but gives each prefix that ends inside a group of tied
    confidences its *expected* risk over random orders of the tie group (errors before the group
    + (k − before) × the group's error rate, over k), so the curve no longer depends on the input
    order of tied items (important when a model says "100" for almost everything).
    """
    c = np.asarray(conf, dtype=float).ravel()
    y = _labels(labels, c.size)
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
    """Area under the risk-coverage curve = mean of the risk over coverages k/N, k = 1..N.

    Default ``ties="average"`` (order-independent; see :func:`risk_coverage`); ``"stable"``
    uses the input order among tied confidences. NaN for no items.
    """
    rc = risk_coverage(conf, labels, ties=ties)
    return float(rc["risk"].mean()) if len(rc) else float("nan")


# --------------------------------------------------------------------------- validity screen
def validity_screen(conf_0_100, labels) -> dict:
    """The verbal-confidence validity screen; the rule is VALIDITY_DOC, exactly.

    Returns ``dict(L, trin, r, verdict, n, n_missing, reasons)``.
    """
    c = np.asarray(conf_0_100, dtype=float).ravel()
    y = _labels(labels, c.size)
    miss = np.isnan(c)
    c, y = c[~miss], y[~miss]
    n = int(c.size)
    if n and (c.min() < 0 or c.max() > 100):
        raise ValueError("confidences must lie in [0, 100] (NaN for unparsed)")
    if n == 0:
        return dict(L=float("nan"), trin=float("nan"), r=float("nan"), verdict="invalid", n=0,
                    n_missing=int(miss.sum()), reasons=["no usable confidence"])
    L = float(np.mean(c >= 95))
    dec = np.minimum(np.floor(c / 10.0), 9).astype(int)
    trin = float(np.bincount(dec, minlength=10).max() / n)
    yf = y.astype(float)
    if np.all(c == c[0]) or np.all(yf == yf[0]):
        r = float("nan")
    else:
        r = float(np.corrcoef(c, yf)[0, 1])
    reasons = []
    if L >= 0.70:
        reasons.append("L >= .70")
    if trin >= 0.80:
        reasons.append("TRIN >= .80")
    if not (abs(r) >= 0.05):  # NaN r counts as |r| < .05
        reasons.append("|r| < .05")
    if reasons:
        verdict = "invalid"
    else:
        if L >= 0.40:
            reasons.append("L >= .40")
        if trin >= 0.60:
            reasons.append("TRIN >= .60")
        verdict = "indeterminate" if reasons else "valid"
    return dict(L=L, trin=trin, r=r, verdict=verdict, n=n, n_missing=int(miss.sum()), reasons=reasons)


# --------------------------------------------------------------------------- question-type baseline
def type_prior(categories_train: Sequence, labels_train, categories_eval: Sequence) -> np.ndarray:
    """The question-type baseline: for each eval item, its category's train accuracy,
    Laplace-smoothed as (correct + 1) / (n + 2); categories absent from train get the overall
    train accuracy (correct / n; 0.5 if train is empty)."""
    ct = np.asarray(list(categories_train), dtype=object)
    y = _labels(labels_train, ct.size).astype(float)
    ce = np.asarray(list(categories_eval), dtype=object)
    overall = float(y.mean()) if y.size else 0.5
    df = pd.DataFrame({"c": ct, "y": y}).groupby("c")["y"].agg(["sum", "count"])
    rate = ((df["sum"] + 1.0) / (df["count"] + 2.0)).to_dict()
    return np.array([rate.get(c, overall) for c in ce], dtype=float)


def within_type_auroc(scores, labels, categories, nan_policy: str = "raise") -> dict:
    """AUROC within question types: the mean of per-category AUROC over the categories that
    have both classes, weighted by each category's item count. It measures what a score knows
    beyond the question type (a type prior scores exactly 0.5 here).

    Returns ``dict(auroc, n_types_used, n_types, n_items_used, per_type)`` where ``per_type``
    maps category -> (auroc, n). NaN auroc when no category has both classes.
    """
    s = np.asarray(scores, dtype=float).ravel()
    y = _labels(labels, s.size)
    cat = np.asarray(list(categories), dtype=object)
    if cat.size != s.size:
        raise ValueError("categories differ in length from scores")
    if nan_policy not in ("raise", "omit"):
        raise ValueError("nan_policy must be 'raise' or 'omit'")
    bad = np.isnan(s)
    if bad.any():
        if nan_policy == "raise":
            raise ValueError("NaN scores; pass nan_policy='omit' to drop them")
        s, y, cat = s[~bad], y[~bad], cat[~bad]
    per, num, den = {}, 0.0, 0
    for c in pd.unique(cat):
        m = cat == c
        a = auroc(s[m], y[m])
        per[c] = (a, int(m.sum()))
        if not np.isnan(a):
            num += a * m.sum()
            den += int(m.sum())
    used = sum(1 for a, _ in per.values() if not np.isnan(a))
    return dict(auroc=float(num / den) if den else float("nan"), n_types_used=used,
                n_types=len(per), n_items_used=den, per_type=per)


# --------------------------------------------------------------------------- convenience
def summarize_scores(conf01, labels, n_bins: int = 10, n_boot: int = 1000, seed: int = 0,
                     nan_policy: str = "raise") -> dict:
    """``dict(auroc, auroc_ci, ece, brier, aurc, n, n_missing)`` of a [0, 1] confidence.

    ``nan_policy="omit"`` drops NaN confidences first (counted in n_missing)."""
    c = np.asarray(conf01, dtype=float).ravel()
    y = _labels(labels, c.size)
    miss = np.isnan(c)
    if miss.any():
        if nan_policy != "omit":
            raise ValueError("NaN confidences; pass nan_policy='omit' to drop them")
        c, y = c[~miss], y[~miss]
    return dict(
        auroc=auroc(c, y),
        auroc_ci=auroc_ci(c, y, n_boot=n_boot, seed=seed),
        ece=ece(c, y, n_bins),
        brier=brier(c, y),
        aurc=aurc(c, y),
        n=int(c.size),
        n_missing=int(miss.sum()),
    )
