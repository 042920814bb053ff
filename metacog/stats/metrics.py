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

The input checks live in :mod:`metacog.stats.checks`, the risk-coverage curve and AURC in
:mod:`metacog.stats.selective` and the validity screen in :mod:`metacog.stats.validity`; all are
re-exported here, so ``metrics.<name>`` is the one address of every metric.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from metacog.stats.checks import as_conf01, as_labels, scores_and_labels
from metacog.stats.selective import aurc, risk_coverage
from metacog.stats.validity import VALIDITY_DOC, validity_screen

__all__ = [
    "ECE_BINS_DOC",
    "VALIDITY_DOC",
    "auroc",
    "auroc_along",
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
    "BOOTSTRAP_DOC",
    "ECE_NULL_DOC",
    "bootstrap_metrics",
    "bootstrap_metrics_batch",
    "ece_null",
    "sample_warnings",
    "SMALL_EVAL_N",
    "SMALL_CLASS_N",
]

BOOTSTRAP_DOC = (
    "Every AUROC, ECE, Brier and AURC CI is a 95% percentile interval over 1000 seeded bootstrap "
    "replicates of the items, stratified by correctness (correct and incorrect items resampled "
    "separately with replacement, so each replicate keeps both class counts; draws = "
    "bootstrap_counts(n_pos, n_neg, n_boot, seed)), all four metrics computed on the same "
    "replicates (metrics.bootstrap_metrics). With one class only, that class is resampled and the "
    "AUROC CI is undefined (NaN)."
)

ECE_NULL_DOC = (
    "ECE of a perfectly calibrated predictor at the same confidences: y* ~ Bernoulli(conf) "
    "independently per item, n_sim = 1000 seeded simulations, ECE with the same bins; reported as "
    "the mean and the 95th percentile (metrics.ece_null). An observed ECE below that p95 is "
    "indistinguishable from perfect calibration at this n."
)

SMALL_EVAL_N = 50  # below this many eval items, every eval metric is flagged as a small sample
SMALL_CLASS_N = 10  # ... or below this many eval items in either class

ECE_BINS_DOC = (
    "ECE uses n_bins equal-width bins on [0, 1] with edges e_i = i / n_bins (float64): bin i "
    "(0-based) holds confidences c with e_i <= c < e_{i+1}, except the last bin, which is closed, "
    "[e_{n-1}, 1], so 1.0 falls in the last bin and 0.1 (with 10 bins) in bin 1. "
    "ECE = sum over non-empty bins of (n_bin / N) * |accuracy_bin - mean confidence_bin|. "
    "Confidences outside [0, 1] (or NaN) raise ValueError."
)



# --------------------------------------------------------------------------- AUROC
def auroc_along(scores, labels, axis: int = -1) -> np.ndarray:
    """AUROC of every slice of ``scores`` along ``axis``: the one AUROC implementation of metacog
    (:func:`auroc`, :func:`auroc_boot_batch`, the probes' cross-validation and selection null call it).

    ``scores``: float array of any shape (e.g. ``[n_models, n_items]`` with ``axis=-1``, or
    ``[n_items, n_scores]`` with ``axis=0``). ``labels``: correctness (bool or 0/1), broadcastable
    to ``scores`` (``[n_items]`` for shared labels, or one label vector per slice). Returns a float
    array of ``scores``' shape without ``axis``.

    Definition: AUROC = P(score of a correct item > score of an incorrect one) + ½ P(tie)
    = U / (n_pos n_neg), U = R_pos − n_pos (n_pos + 1) / 2 the Mann–Whitney statistic from the
    sum R_pos of the positives' average ranks (Mann & Whitney 1947; Hanley & McNeil 1982); equal
    to ``sklearn.metrics.roc_auc_score`` and to ``scipy.stats.mannwhitneyu(...).statistic / (n_pos n_neg)``
    (tested). Ranks: ``scipy.stats.rankdata(method="average")`` when a slice has ties, else the
    ordinal ranks of one stable argsort (identical then, and cheaper). NaN for a slice with one
    class only or with a NaN score.

    Raises: ValueError when labels are not bool/0/1 or do not broadcast to ``scores``.
    """
    S = np.asarray(scores, dtype=float)
    Y = np.asarray(labels)
    if Y.dtype != bool:
        yf = Y.astype(float)
        if np.any(np.isnan(yf)) or not np.all((yf == 0) | (yf == 1)):
            raise ValueError("labels must be bool or 0/1")
        Y = yf.astype(bool)
    try:
        Y = np.broadcast_to(Y, S.shape)
    except ValueError:
        raise ValueError(f"labels of shape {Y.shape} do not broadcast to scores of shape {S.shape}") from None
    S, Y = np.moveaxis(S, axis, -1), np.moveaxis(Y, axis, -1)
    m = S.shape[-1]
    bad = np.isnan(S).any(axis=-1)
    if bad.any():
        S = np.where(bad[..., None], 0.0, S)
    o = np.argsort(S, axis=-1, kind="stable")
    sv = np.take_along_axis(S, o, axis=-1)
    if m > 1 and np.any(sv[..., 1:] == sv[..., :-1]):
        R = rankdata(S, method="average", axis=-1)
    else:
        R = np.empty(S.shape)
        np.put_along_axis(R, o, np.arange(1, m + 1, dtype=float), axis=-1)
    n1 = Y.sum(axis=-1).astype(float)
    n0 = m - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        out = ((R * Y).sum(axis=-1) - n1 * (n1 + 1) / 2.0) / (n1 * n0)
    return np.where((n1 == 0) | (n0 == 0) | bad, np.nan, out)


def auroc(scores, labels, nan_policy: str = "raise") -> float:
    """AUROC of one score vector ``[n_items]`` against correctness labels ``[n_items]``
    (:func:`auroc_along`: Mann-Whitney U / (n_pos n_neg), average ranks for ties); NaN if one class.

    ``nan_policy``: "raise" (default) raises on NaN scores; "omit" drops those items first.
    Raises: ValueError on NaN scores (``nan_policy="raise"``), labels that are not bool/0/1, or
    scores and labels of different lengths.
    """
    s, y = scores_and_labels(scores, labels, nan_policy)
    return float(auroc_along(s, y))


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

    Raises: ValueError when ``alpha`` is not in (0, 1), on NaN scores (``nan_policy="raise"``) or
    labels that are not bool/0/1.
    """
    s, y = scores_and_labels(scores, labels, nan_policy)
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

    Raises: ValueError when ``scores_2d`` is not 2-D, contains NaN, or labels are not bool/0/1 of
    length n_items.
    """
    S = np.asarray(scores_2d, dtype=float)
    if S.ndim != 2:
        raise ValueError("scores_2d must be [n_items, n_scores]")
    y = as_labels(labels, S.shape[0])
    k = S.shape[1]
    n1 = int(y.sum())
    n0 = y.size - n1
    nan = np.full(k, np.nan)
    if np.isnan(S).any():
        raise ValueError("scores contain NaN")
    if n1 == 0 or n0 == 0:
        return nan, nan.copy(), nan.copy()
    point = auroc_along(S, y[:, None], axis=0)
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

    Raises: ValueError when ``n_bins`` < 1, or on confidences outside [0, 1] or NaN.
    """
    c, y = as_conf01(conf01, labels)
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
    """Expected calibration error of ``conf01 [N]`` (probabilities in [0, 1]) against correctness
    ``labels [N]``; bins exactly as ECE_BINS_DOC (= Σ n/N |acc − conf| over the rows of
    :func:`reliability_bins`; Naeini et al. 2015, Guo et al. 2017). NaN for no items.

    Raises: ValueError on confidences outside [0, 1] or NaN, or ``n_bins`` < 1.
    """
    t = reliability_bins(conf01, labels, n_bins)
    N = int(t["n"].sum())
    if N == 0:
        return float("nan")
    m = t["n"].to_numpy() > 0
    return float(np.sum(t["n"].to_numpy()[m] / N * np.abs(t["accuracy"].to_numpy()[m] - t["mean_conf"].to_numpy()[m])))


def reliability(conf01, labels, n_bins: int = 10) -> tuple[pd.DataFrame, float, int]:
    """``(bins, ece, n)`` of a [0, 1] confidence whose NaN entries (unparsed, not predicted) are
    dropped first: :func:`reliability_bins` and :func:`ece` on the ``n`` items left (NaN ECE when
    none). ``conf01``: [n_items] probabilities; ``labels``: [n_items] correctness."""
    c = np.asarray(conf01, dtype=float).ravel()
    y = as_labels(labels, c.size)
    ok = ~np.isnan(c)
    return reliability_bins(c[ok], y[ok], n_bins), ece(c[ok], y[ok], n_bins), int(ok.sum())


def brier(conf01, labels) -> float:
    """Brier score (Brier 1950): mean of (conf − y)² over ``conf01 [N]`` in [0, 1] and correctness
    ``labels [N]``; NaN for no items.

    Raises: ValueError on confidences outside [0, 1] or NaN.
    """
    c, y = as_conf01(conf01, labels)
    if c.size == 0:
        return float("nan")
    return float(np.mean((c - y.astype(float)) ** 2))


# --------------------------------------------------------------------------- question-type baseline
def type_prior(categories_train: Sequence, labels_train, categories_eval: Sequence) -> np.ndarray:
    """The question-type baseline: for each eval item, its category's train accuracy,
    Laplace-smoothed as (correct + 1) / (n + 2); categories absent from train get the overall
    train accuracy (correct / n; 0.5 if train is empty)."""
    ct = np.asarray(list(categories_train), dtype=object)
    y = as_labels(labels_train, ct.size).astype(float)
    ce = np.asarray(list(categories_eval), dtype=object)
    overall = float(y.mean()) if y.size else 0.5
    df = pd.DataFrame({"c": ct, "y": y}).groupby("c")["y"].agg(["sum", "count"])
    rate = ((df["sum"] + 1.0) / (df["count"] + 2.0)).to_dict()
    return np.array([rate.get(c, overall) for c in ce], dtype=float)


def within_type_auroc(scores, labels, categories, nan_policy: str = "raise", n_boot: int = 0, alpha: float = 0.05,
                      seed: int = 0) -> dict:
    """AUROC within question types: the mean of per-category AUROC over the categories that
    have both classes, weighted by each category's item count. It measures what a score knows
    beyond the question type (a type prior scores exactly 0.5 here).

    Returns ``dict(auroc, n_types_used, n_types, n_items_used, per_type)`` where ``per_type``
    maps category -> (auroc, n). NaN auroc when no category has both classes. With ``n_boot``
    > 0 also ``auroc_ci``: percentile interval of a bootstrap stratified by category × class
    (each used category's positives and negatives resampled separately with
    :func:`bootstrap_counts` ``(n_pos, n_neg, n_boot, seed + j)`` for the j-th used category in
    order of appearance; the weights stay the category counts).

    Raises: ValueError when ``categories`` and scores differ in length, on NaN scores
    (``nan_policy="raise"``) or an unknown ``nan_policy``.
    """
    s = np.asarray(scores, dtype=float).ravel()
    y = as_labels(labels, s.size)
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
    out = dict(auroc=float(num / den) if den else float("nan"), n_types_used=used,
               n_types=len(per), n_items_used=den, per_type=per)
    if n_boot > 0:
        out["auroc_ci"] = (float("nan"), float("nan"))
        if den:
            acc = np.zeros(n_boot)
            j = 0
            for c in pd.unique(cat):
                m = cat == c
                if np.isnan(per[c][0]):
                    continue
                sc, yc = s[m], y[m]
                cp, cn = bootstrap_counts(int(yc.sum()), int((~yc).sum()), n_boot, seed + j)
                acc += _boot_aucs_sorted(sc[yc], sc[~yc], cp, cn) * m.sum()
                j += 1
            out["auroc_ci"] = _quantiles(acc / den, alpha)
    return out


# --------------------------------------------------------------------------- uncertainty
def _bin_onehot(c: np.ndarray, n_bins: int) -> np.ndarray:
    """[N, n_bins] 0/1 membership of each confidence in its ECE bin (ECE_BINS_DOC)."""
    edges = np.arange(n_bins + 1, dtype=float) / n_bins
    idx = np.clip(np.searchsorted(edges, c, side="right") - 1, 0, n_bins - 1)
    oh = np.zeros((c.size, n_bins))
    oh[np.arange(c.size), idx] = 1.0
    return oh


def _weighted_aurc(c: np.ndarray, err: np.ndarray, W: np.ndarray) -> np.ndarray:
    """AURC (ties="average") of every row of item multiplicities ``W [R, N]`` (a bootstrap
    replicate repeats item i W[r, i] times; copies of an item are tied). Closed form per tie group
    g of m items (e errors, r = e/m) after B items with E errors: the group's prefixes add
    Σ_{j=1..m} (E + j r)/(B + j) = e + (E − r B)(H(B + m) − H(B)), H the harmonic number.
    Multiplicities must be whole numbers."""
    order = np.argsort(-c, kind="stable")
    cs = c[order]
    start = np.flatnonzero(np.r_[True, cs[1:] != cs[:-1]])
    Wo = W[:, order]
    if start.size == c.size:  # no ties among distinct items (the usual case)
        m, e = Wo, Wo * err[order][None]
    else:
        m = np.add.reduceat(Wo, start, axis=1)
        e = np.add.reduceat(Wo * err[order][None], start, axis=1)
    mi = np.rint(m).astype(np.int64)
    Bi = np.cumsum(mi, axis=1) - mi
    Ec = np.cumsum(e, axis=1) - e
    r = e / np.maximum(m, 1.0)  # m = 0 -> e = 0 -> r = 0
    H = np.r_[0.0, np.cumsum(1.0 / np.arange(1, int(mi.sum(axis=1).max()) + 1))]  # harmonic numbers
    dH = H[Bi + mi] - H[Bi]
    return (e + (Ec - r * Bi) * dH).sum(axis=1) / mi.sum(axis=1)


def bootstrap_metrics(conf01, labels, n_bins: int = 10, n_boot: int = 1000, alpha: float = 0.05,
                      seed: int = 0) -> dict:
    """Point values and percentile bootstrap CIs of AUROC, ECE, Brier and AURC (BOOTSTRAP_DOC).

    ``conf01`` [N] in [0, 1] (no NaN), ``labels`` [N] correctness. Returns ``dict(auroc,
    auroc_ci, ece, ece_ci, brier, brier_ci, aurc, aurc_ci)``; CIs are ``(lo, hi)`` tuples, NaN when
    undefined (no items; AUROC with one class). ``auroc_ci`` equals :func:`auroc_ci` with the same
    seed. This is :func:`bootstrap_metrics_batch` for one score.
    """
    c = np.asarray(conf01, dtype=float).ravel()
    b = bootstrap_metrics_batch(c[:, None], labels, n_bins=n_bins, n_boot=n_boot, alpha=alpha, seed=seed)
    out = {}
    for k in ("auroc", "ece", "brier", "aurc"):
        out[k] = float(b[k][0])
        out[f"{k}_ci"] = (float(b[f"{k}_ci"][0, 0]), float(b[f"{k}_ci"][0, 1]))
    return out


def bootstrap_metrics_batch(conf01_2d, labels, n_bins: int = 10, n_boot: int = 1000, alpha: float = 0.05,
                            seed: int = 0) -> dict:
    """:func:`bootstrap_metrics` for many scores of the same items at once: ``conf01_2d`` is
    ``[N, k]`` in [0, 1] (no NaN). The replicates (:func:`bootstrap_counts` ``(n_pos, n_neg,
    n_boot, seed)``; one class only: that class resampled alone) are shared by every column and
    metric; each metric is evaluated on every replicate in closed form, vectorised over
    replicates. Returns arrays: ``auroc, ece, brier, aurc`` [k] and ``*_ci`` [k, 2].

    Raises: ValueError when ``conf01_2d`` is not 2-D, contains NaN or values outside [0, 1], or
    ``alpha`` is not in (0, 1).
    """
    S = np.asarray(conf01_2d, dtype=float)
    if S.ndim != 2:
        raise ValueError("conf01_2d must be [n_items, n_scores]")
    N, K = S.shape
    y = as_labels(labels, N)
    if np.isnan(S).any():
        raise ValueError("confidences contain NaN; drop unparsed items first")
    if S.size and (S.min() < 0.0 or S.max() > 1.0):
        raise ValueError(f"confidences must lie in [0, 1] (got min {S.min()}, max {S.max()})")
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    out = {k: np.array([f(S[:, j], y) for j in range(K)], dtype=float) for k, f in
           (("auroc", auroc), ("ece", lambda c, y: ece(c, y, n_bins)), ("brier", brier), ("aurc", aurc))}
    for k in ("auroc", "ece", "brier", "aurc"):
        out[f"{k}_ci"] = np.full((K, 2), np.nan)
    if N == 0 or n_boot < 1:
        return out
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    W = np.zeros((n_boot, N))
    if pos.size and neg.size:
        cp, cn = bootstrap_counts(pos.size, neg.size, n_boot, seed)
        W[:, pos], W[:, neg] = cp, cn
    else:  # one class: resample it alone
        cp = cn = None
        idx = pos if pos.size else neg
        draws = np.random.default_rng(seed).integers(0, idx.size, size=(n_boot, idx.size))
        W[:, idx] = np.stack([np.bincount(d, minlength=idx.size) for d in draws])
    yf = y.astype(float)
    for j in range(K):
        c = S[:, j]
        if cp is not None:
            out["auroc_ci"][j] = _quantiles(_boot_aucs_sorted(c[y], c[~y], cp, cn), alpha)
        oh = _bin_onehot(c, int(n_bins))
        ece_b = np.abs(W @ (oh * (yf - c)[:, None])).sum(axis=1) / N  # Σ_bins |Σ correct − Σ conf| / N
        out["ece_ci"][j] = _quantiles(ece_b, alpha)
        out["brier_ci"][j] = _quantiles(W @ ((c - yf) ** 2) / N, alpha)
        out["aurc_ci"][j] = _quantiles(_weighted_aurc(c, 1.0 - yf, W), alpha)
    return out


def _quantiles(a: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(a, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def ece_null(conf01, n_bins: int = 10, n_sim: int = 1000, seed: int = 0) -> dict:
    """ECE of a perfectly calibrated predictor with these confidences (ECE_NULL_DOC).

    Simulates ``y* ~ Bernoulli(conf)`` ``n_sim`` times (``default_rng(seed)``) and returns
    ``dict(mean, p95, n_sim, n)``; NaNs for no items. Source of the idea: the ECE of a calibrated
    model is biased upward at small n (e.g. Kumar et al. 2019, "Verified uncertainty calibration").
    """
    c = np.asarray(conf01, dtype=float).ravel()
    as_conf01(c, np.zeros(c.size, bool))
    if c.size == 0 or n_sim < 1:
        return dict(mean=float("nan"), p95=float("nan"), n_sim=int(n_sim), n=int(c.size))
    rng = np.random.default_rng(seed)
    ys = (rng.random((n_sim, c.size)) < c[None]).astype(float)
    oh = _bin_onehot(c, int(n_bins))
    e = np.abs(ys @ oh - (oh * c[:, None]).sum(0)[None]).sum(axis=1) / c.size
    return dict(mean=float(e.mean()), p95=float(np.quantile(e, 0.95)), n_sim=int(n_sim), n=int(c.size))


def sample_warnings(labels, what: str = "the eval split") -> list[str]:
    """Plain-language warnings when ``labels`` (correctness of the items a metric is computed on)
    are too few to trust: fewer than SMALL_EVAL_N items, fewer than SMALL_CLASS_N of either class,
    or one class only (AUROC undefined). Empty list when the sample is adequate."""
    y = as_labels(labels)
    n, n1 = int(y.size), int(y.sum())
    n0 = n - n1
    out = []
    if n == 0:
        return [f"{what} has no items: no metric can be computed."]
    if n1 == 0 or n0 == 0:
        out.append(f"{what} has only {'incorrect' if n1 == 0 else 'correct'} answers ({n} items): AUROC is "
                   "undefined and calibration numbers say little; use more items or another split.")
    elif min(n1, n0) < SMALL_CLASS_N:
        out.append(f"{what} has only {min(n1, n0)} {'correct' if n1 < n0 else 'incorrect'} answer(s) "
                   f"(fewer than {SMALL_CLASS_N}): AUROC and its CI rest on very few items; read them as rough.")
    if n < SMALL_EVAL_N:
        out.append(f"{what} has only {n} items (fewer than {SMALL_EVAL_N}): every metric is a small-sample "
                   "estimate with wide CIs; compare ECE with its perfectly-calibrated null (ece_null).")
    return out


# --------------------------------------------------------------------------- convenience
def summarize_scores(conf01, labels, n_bins: int = 10, n_boot: int = 1000, seed: int = 0,
                     nan_policy: str = "raise", n_sim: int = 1000) -> dict:
    """``dict(auroc, auroc_ci, ece, ece_ci, ece_null, brier, brier_ci, aurc, aurc_ci, n,
    n_missing)`` of a [0, 1] confidence: :func:`bootstrap_metrics` (the CIs) and :func:`ece_null`
    (``n_sim`` simulations, seed ``seed``).

    ``nan_policy="omit"`` drops NaN confidences first (counted in n_missing).

    Raises: ValueError on NaN confidences unless ``nan_policy="omit"``, and as
    :func:`bootstrap_metrics`.
    """
    c = np.asarray(conf01, dtype=float).ravel()
    y = as_labels(labels, c.size)
    miss = np.isnan(c)
    if miss.any():
        if nan_policy != "omit":
            raise ValueError("NaN confidences; pass nan_policy='omit' to drop them")
        c, y = c[~miss], y[~miss]
    b = bootstrap_metrics(c, y, n_bins=n_bins, n_boot=n_boot, seed=seed)
    return dict(
        auroc=b["auroc"], auroc_ci=b["auroc_ci"],
        ece=b["ece"], ece_ci=b["ece_ci"], ece_null=ece_null(c, n_bins, n_sim=n_sim, seed=seed),
        brier=b["brier"], brier_ci=b["brier_ci"],
        aurc=b["aurc"], aurc_ci=b["aurc_ci"],
        n=int(c.size),
        n_missing=int(miss.sum()),
    )
