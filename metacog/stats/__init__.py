"""Inference across the sampled units: the statistics metacog reports, on scipy.

The rule everywhere in this module: **test across the units that were sampled**. In a
patching sweep the sampled unit is the *pair* (a source and a target item); its layers and
positions are repeated measures of that pair, never independent samples. A statistic is
therefore first reduced to one number per pair, and the test and the confidence interval
are then taken across pairs (docs/SCIENCE.md, "Statistics of patching").

- :func:`layer_gradient` — the layer gradient of a sweep: Spearman ρ of effect vs layer
  *within each pair*, then a sign-flip permutation test of the mean per-pair ρ and a
  percentile bootstrap CI over pairs. ρ computed on the per-layer means is kept only as a
  labelled descriptive number (``rho_of_means``): its p-value would treat L correlated
  layer means as L independent draws (a null of random per-pair slopes rejects in >90% of
  sweeps, tests/unit/stats/test_stats.py).
- :func:`paired_contrast` — condition A vs B within each pair (e.g. the confidence slot vs
  the random positions): the per-pair difference, tested and bootstrapped across pairs, for
  the layer-averaged effect and for the per-pair ρ.
- :func:`one_sample` — the across-units test both use: sign-flip permutation test
  (:func:`scipy.stats.permutation_test`, exact enumeration for n ≤ ``EXACT_MAX``) and a
  percentile bootstrap CI of the mean (:func:`scipy.stats.bootstrap`).
- :func:`holm` — Holm's step-down adjustment of a family of p-values (family-wise error),
  used for the per-layer tests of a sweep.

The null of the sign-flip test is that each unit's value is symmetric about 0 (exchangeable
signs): no consistent direction across pairs. It is exact for any n under that null; with n
units the smallest attainable two-sided p is 2/2ⁿ, so **fewer than 6 pairs can never reach
p < 0.05** (n = 5: 0.0625) — the output says so (``min_p``).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats as _st

EXACT_MAX = 12  # sign-flip tests enumerate all 2ⁿ sign patterns up to this many units
UNIT = "pair"
SIGN_FLIP = "sign-flip permutation test of the mean across pairs (scipy.stats.permutation_test, two-sided)"
BOOT = "percentile bootstrap over pairs (scipy.stats.bootstrap)"
CORRECTION = "holm"
CORRECTION_DOC = "Holm step-down over the layers of one component × position group × value (family-wise error)"

__all__ = ["layer_gradient", "paired_contrast", "one_sample", "sign_flip_test", "bootstrap_ci", "holm", "per_pair_rho",
           "simulate_sweep", "min_p",
           "UNIT", "CORRECTION", "EXACT_MAX"]


def json_float(x) -> float | None:
    """A JSON-friendly float: None for NaN/None or a non-number (summary.json, patching.json)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


# ----------------------------------------------------------------------------- one sample
def _clean(x) -> np.ndarray:
    x = np.asarray(x, dtype=float).ravel()
    return x[np.isfinite(x)]


def sign_flip_test(x, n_perm: int = 9999, seed: int = 0, alternative: str = "two-sided") -> float:
    """p-value of mean(x) ≠ 0 by flipping signs (:func:`scipy.stats.permutation_test`,
    ``permutation_type="samples"`` on one sample).

    x: one value per unit (NaN dropped). Exact (all 2ⁿ sign patterns) for n ≤ ``EXACT_MAX``,
    else ``n_perm`` random patterns with p = (k + 1)/(n_perm + 1). Two-sided p is scipy's:
    twice the smaller one-sided p, capped at 1. Returns NaN for n = 0.
    """
    x = _clean(x)
    n = len(x)
    if n == 0:
        return float("nan")
    if n == 1 or not np.any(x):
        return 1.0  # one unit: its two sign patterns are equally extreme
    res = _st.permutation_test(
        (x,), lambda v, axis=-1: np.mean(v, axis=axis), permutation_type="samples", vectorized=True,
        n_resamples=np.inf if n <= EXACT_MAX else int(n_perm), alternative=alternative, rng=np.random.default_rng(seed),
    )
    return float(res.pvalue)


def bootstrap_ci(x, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(x) over units (:func:`scipy.stats.bootstrap`); NaN
    dropped; (nan, nan) with fewer than 2 units or ``n_boot`` < 1."""
    x = _clean(x)
    if len(x) < 2 or n_boot < 1:
        return float("nan"), float("nan")
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    res = _st.bootstrap((x,), lambda v, axis=-1: np.mean(v, axis=axis), vectorized=True, n_resamples=int(n_boot),
                        confidence_level=level, method="percentile", rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return float(ci.low), float(ci.high)


def min_p(n: int) -> float:
    """The smallest two-sided sign-flip p attainable with n units (2/2ⁿ; 1 for n = 0)."""
    return 1.0 if n <= 0 else min(1.0, 2.0 / 2.0**n)


def one_sample(x, n_perm: int = 9999, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean of one value per unit, its sign-flip p and bootstrap CI across units.

    Returns ``{mean, p, ci: [lo, hi], n, exact, min_p, share_pos}`` (None where undefined).
    """
    x = _clean(x)
    n = len(x)
    lo, hi = bootstrap_ci(x, n_boot, seed, level)
    return {
        "mean": json_float(x.mean()) if n else None, "p": json_float(sign_flip_test(x, n_perm, seed)) if n else None,
        "ci": [json_float(lo), json_float(hi)], "n": int(n), "exact": bool(n <= EXACT_MAX), "min_p": min_p(n),
        "share_pos": json_float((x > 0).mean()) if n else None,
    }


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values (same order as ``p``; NaN stay NaN and are not
    counted in the family): sort the m finite p ascending, pᵢ' = max_{j≤i} min(1, (m−j+1)·p_(j))."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return out
    v = p[ok]
    order = np.argsort(v, kind="mergesort")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * v[order]))
    res = np.empty(m)
    res[order] = adj
    out[ok] = res
    return out


# ----------------------------------------------------------------------------- per pair
def _check(per_pair: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(per_pair, pd.DataFrame):
        raise TypeError(f"per_pair must be a pandas DataFrame with columns pair, layer, effect, not {type(per_pair).__name__}")
    miss = [c for c in ("pair", "layer", "effect") if c not in per_pair.columns]
    if miss:
        raise ValueError(f"per_pair needs the columns pair, layer, effect (one row per pair × layer); missing: {', '.join(miss)}")
    return per_pair[["pair", "layer", "effect"]]


def per_pair_rho(per_pair: pd.DataFrame) -> pd.DataFrame:
    """Spearman ρ of effect vs layer within each pair (:func:`scipy.stats.spearmanr`).

    per_pair: columns ``pair``, ``layer``, ``effect``; NaN effects are dropped pair by pair.
    Returns one row per pair: ``pair``, ``rho`` (NaN when the pair has fewer than 3 layers
    or a constant effect), ``n_layers``.
    """
    d = _check(per_pair)
    pairs, layers, Y = _wide(d)
    r, n = _rho_rows(layers, Y)
    return pd.DataFrame({"pair": pairs, "rho": r, "n_layers": n})


def _wide(d: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pair labels, layers, effect matrix pairs × layers with NaN where missing), sorted."""
    if not len(d):
        return np.array([]), np.array([], dtype=float), np.zeros((0, 0))
    ip, pairs = pd.factorize(d["pair"], sort=True)
    il, layers = pd.factorize(d["layer"], sort=True)
    if len(np.unique(ip * len(layers) + il)) < len(d):
        raise ValueError("per_pair has more than one row for some (pair, layer): average repeated draws within a pair first")
    Y = np.full((len(pairs), len(layers)), np.nan)
    Y[ip, il] = d["effect"].to_numpy(dtype=float)
    return np.asarray(pairs), np.asarray(layers, dtype=float), Y


def _rho_rows(layers: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman ρ(layer, effect) of every row of Y over its finite entries, and their count.

    Spearman ρ is the Pearson r of the average ranks, here ranked within each row by
    scipy.stats.rankdata (equal to scipy.stats.spearmanr row by row; tested). NaN where a row
    has fewer than 3 finite entries or no variation."""
    if Y.size == 0:
        return np.full(len(Y), np.nan), np.zeros(len(Y), dtype=int)
    fin = np.isfinite(Y)
    n = fin.sum(axis=1)
    rx = _st.rankdata(np.where(fin, layers[None, :], np.nan), axis=1, nan_policy="omit")
    ry = _st.rankdata(np.where(fin, Y, np.nan), axis=1, nan_policy="omit")
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a row without finite entries: its mean is NaN
        cx = np.where(fin, rx - np.nanmean(rx, axis=1, keepdims=True), 0.0)
        cy = np.where(fin, ry - np.nanmean(ry, axis=1, keepdims=True), 0.0)
        sx, sy = (cx * cx).sum(axis=1), (cy * cy).sum(axis=1)
        r = np.clip((cx * cy).sum(axis=1) / np.sqrt(sx * sy), -1.0, 1.0)
    r[(n < 3) | ~(sx > 1e-9) | ~(sy > 1e-9)] = np.nan  # ranks differ by ≥ 0.5 when not all tied
    return r, n.astype(int)


def layer_gradient(per_pair: pd.DataFrame, n_perm: int = 9999, n_boot: int = 2000, seed: int = 0,
                   level: float = 0.95) -> dict:
    """Does the effect grow (or shrink) with depth, consistently across pairs?

    per_pair: a DataFrame with columns ``pair``, ``layer``, ``effect``, one row per
    pair × layer (NaN effects allowed; repeated draws within a pair averaged beforehand).

    Statistic: ρ̄ = mean over pairs of Spearman ρ(layer, effect) computed within each pair
    (pairs with fewer than 3 finite layers or a constant effect have no ρ and are counted in
    ``n_pairs_undefined``). Test: sign-flip permutation test of ρ̄ across pairs (null: every
    pair's ρ is symmetric about 0 — no consistent layer trend); exact for ≤ ``EXACT_MAX``
    pairs, else ``n_perm`` Monte Carlo flips. CI: percentile bootstrap of ρ̄ over pairs
    (``n_boot`` resamples, ``level``).

    Returns a dict: ``rho``, ``p``, ``ci`` ([lo, hi]), ``n_pairs``, ``unit`` ("pair"),
    ``statistic``, ``test``, ``null``, ``ci_method``, ``level``, ``exact``, ``min_p`` (smallest
    attainable p with this many pairs), ``share_pos`` (share of pairs with ρ > 0),
    ``n_pairs_undefined``, ``n_layers``, ``per_pair`` ({pair: ρ}), and the descriptive
    ``rho_of_means`` (Spearman ρ of the per-layer means; no p-value, ``descriptive: true``),
    ``layers``, ``means``. Numbers are None where undefined (no pairs).

    Raises TypeError/ValueError on a table without those columns or with duplicate
    (pair, layer) rows.
    """
    d = _check(per_pair)
    pairs, layers, Y = _wide(d)
    rhos, _ = _rho_rows(layers, Y)
    s = one_sample(rhos, n_perm=n_perm, n_boot=n_boot, seed=seed, level=level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a layer without finite effects
        mv = np.nanmean(Y, axis=0) if Y.size else np.array([])
    ok = np.isfinite(mv)
    rom = None
    if ok.sum() >= 3 and np.ptp(mv[ok]) > 0:
        rom = json_float(_st.spearmanr(layers[ok], mv[ok]).statistic)
    return {
        "rho": s["mean"], "p": s["p"], "ci": s["ci"], "n_pairs": s["n"], "unit": UNIT,
        "statistic": "mean over pairs of Spearman rho(layer, effect) within each pair",
        "test": SIGN_FLIP + (" exact (all sign patterns)" if s["exact"] else f", Monte Carlo with {int(n_perm)} flips"),
        "null": "each pair's rho is symmetric about 0 (no consistent layer trend across pairs)",
        "ci_method": f"{BOOT}, {int(n_boot)} resamples", "level": level, "exact": s["exact"], "min_p": s["min_p"],
        "share_pos": s["share_pos"], "n_pairs_undefined": int(np.isnan(rhos).sum()),
        "n_layers": int(ok.sum()), "per_pair": {str(k): json_float(v) for k, v in zip(pairs, rhos)},
        "rho_of_means": rom, "descriptive": True,
        "rho_of_means_note": "Spearman rho of the per-layer means: descriptive only, no p-value (layers are not independent samples)",
        "layers": [int(x) for x in layers], "means": [json_float(x) for x in mv],
    }


def paired_contrast(a: pd.DataFrame, b: pd.DataFrame, n_perm: int = 9999, n_boot: int = 2000, seed: int = 0,
                    level: float = 0.95, labels: tuple[str, str] = ("a", "b")) -> dict:
    """Condition ``a`` vs ``b`` within each pair, then across pairs.

    a, b: per-pair tables (``pair``, ``layer``, ``effect``) of the two conditions of the same
    pairs, e.g. the confidence slot and the random positions (mean of a pair's draws).
    Two per-pair differences, each tested with :func:`one_sample` (sign-flip test, bootstrap
    CI over pairs):

    - ``effect``: mean over the layers both conditions have (finite in both) of a − b;
    - ``gradient``: ρ_a − ρ_b, the difference of the pairs' own layer gradients.

    Only pairs present in both tables count. Returns ``{effect: {...}, gradient: {...},
    n_pairs, unit, test, null, labels}`` where each sub-dict has ``diff``, ``p``, ``ci``,
    ``n``, ``exact``, ``min_p``, ``share_pos``.
    """
    da, db = _check(a), _check(b)
    m = da.merge(db, on=["pair", "layer"], suffixes=("_a", "_b"))
    m = m[np.isfinite(m["effect_a"].to_numpy(dtype=float)) & np.isfinite(m["effect_b"].to_numpy(dtype=float))]
    eff = (m["effect_a"] - m["effect_b"]).groupby(m["pair"]).mean()
    ra = per_pair_rho(da).set_index("pair")["rho"]
    rb = per_pair_rho(db).set_index("pair")["rho"]
    both = ra.index.intersection(rb.index)
    grad = (ra.loc[both] - rb.loc[both]).to_numpy(dtype=float)
    e = one_sample(eff.to_numpy(dtype=float), n_perm, n_boot, seed, level)
    g = one_sample(grad, n_perm, n_boot, seed, level)
    for s in (e, g):
        s["diff"] = s.pop("mean")
    return {
        "labels": list(labels), "effect": e, "gradient": g, "n_pairs": int(len(eff)), "unit": UNIT,
        "statistic": f"per pair: mean over shared layers of ({labels[0]} - {labels[1]}) effect; and rho_{labels[0]} - rho_{labels[1]}",
        "test": SIGN_FLIP, "ci_method": f"{BOOT}, {int(n_boot)} resamples", "level": level,
        "null": "each pair's difference is symmetric about 0 (no consistent difference across pairs)",
    }


# ----------------------------------------------------------------------------- simulation
def simulate_sweep(rng: np.random.Generator, n_pairs: int, n_layers: int = 30, slope: float = 0.0, slope_sd: float = 1.0,
                   noise: float = 0.5, nan_share: float = 0.0) -> pd.DataFrame:
    """A synthetic per-pair sweep table (``pair``, ``layer``, ``effect``) for checking a test's
    size and power (tests/unit/stats/test_stats.py) or planning a sweep's number of pairs.

    effect[p, h] = a_p + b_p · (h − h̄)/L + ε, with a random intercept a_p ~ N(0, 1), a random
    per-pair slope b_p ~ N(``slope``, ``slope_sd``²) (the change across the whole depth, in
    effect units) and ε ~ N(0, ``noise``²) per cell; layers h = 1..L; a share ``nan_share``
    of cells set to NaN. ``slope = 0`` is the null of no consistent gradient: every pair has
    its own trend, symmetric about 0 — the case in which ρ of the per-layer means misleads.
    """
    h = np.arange(1, n_layers + 1, dtype=float)
    x = (h - h.mean()) / n_layers
    a = rng.normal(0.0, 1.0, size=n_pairs)
    b = rng.normal(slope, slope_sd, size=n_pairs)
    E = a[:, None] + b[:, None] * x[None, :] + rng.normal(0.0, noise, size=(n_pairs, n_layers))
    if nan_share > 0:
        E[rng.random(E.shape) < nan_share] = np.nan
    return pd.DataFrame({"pair": np.repeat(np.arange(n_pairs), n_layers), "layer": np.tile(h.astype(int), n_pairs),
                         "effect": E.ravel()})
