"""Statistics of a patching sweep: per layer × position group, and the layer gradient.

The unit of every test is the **pair**: a pair contributes one value per (component, layer,
position group) — for the random positions, the mean over its K draws (they share the pair's
source and target, so they are not independent). Position groups are the named positions,
``random``, and each picked ``tokenI``.

Per (component, group, layer), on the normalised shift (pairs whose |source − target| is
below the threshold are counted in ``n_small`` and left out of these numbers, never
silently) and on the raw shift (all pairs):

- ``mean``, ``median``, ``share_pos`` (share of pairs > 0), ``n``;
- ``ci_lo``/``ci_hi``: percentile bootstrap CI of the mean over pairs (``n_boot`` resamples);
- ``p_binom``: two-sided sign test (exact binomial, pairs equal to 0 dropped), H0 share = ½;
- ``p_perm``: two-sided sign-flip permutation test of the mean (exact for n ≤ 16, else
  Monte Carlo with ``n_perm`` flips, p = (k + 1)/(n_perm + 1)).

Layer gradient per (component, group): Spearman ρ between layer index and the per-layer
mean, its two-sided p (t approximation, as scipy), a bootstrap CI over pairs (resample the
pairs, recompute the per-layer means and ρ) and a Fisher-z CI (SE = √(1.06/(n−3)), n = layers).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

VALUES = ("normalised", "shift")


# ----------------------------------------------------------------------------- primitives
def rankdata(x) -> np.ndarray:
    """Ranks 1..n, ties get their average rank."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    xs = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def pearson(x, y) -> float:
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    xm, ym = x - x.mean(), y - y.mean()
    den = math.sqrt(float((xm * xm).sum()) * float((ym * ym).sum()))
    return float((xm * ym).sum() / den) if den > 0 else float("nan")


def spearman(x, y) -> tuple[float, float]:
    """(ρ, two-sided p) with p from t = ρ√((n−2)/(1−ρ²)) on n−2 df (scipy's default)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 3:
        return float("nan"), float("nan")
    r = pearson(rankdata(x), rankdata(y))
    if np.isnan(r):
        return r, float("nan")
    if abs(r) >= 1.0:
        return float(np.sign(r)), 0.0
    from scipy.stats import t as tdist

    t = r * math.sqrt((n - 2) / (1.0 - r * r))
    return r, float(2.0 * tdist.sf(abs(t), n - 2))


def fisher_ci(r: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """CI of a Spearman ρ from Fisher's z with SE = √(1.06/(n−3)) (Fieller, Hartley, Pearson)."""
    if n < 4 or np.isnan(r):
        return float("nan"), float("nan")
    from scipy.stats import norm

    z = math.atanh(max(min(r, 1 - 1e-12), -1 + 1e-12))
    se = math.sqrt(1.06 / (n - 3))
    q = norm.ppf(0.5 + level / 2)
    return math.tanh(z - q * se), math.tanh(z + q * se)


def binom_two_sided(k: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided binomial p: the probability of outcomes no likelier than k (the
    rule of scipy.stats.binomtest, with its 1e-7 relative tolerance)."""
    if n == 0:
        return 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)
            for i in range(n + 1)]
    pk = logs[k]
    tot = sum(math.exp(lp) for lp in logs if lp <= pk + math.log1p(1e-7))
    return float(min(1.0, tot))


def sign_test(x) -> float:
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x) & (x != 0)]
    return binom_two_sided(int((x > 0).sum()), len(x))


def sign_flip_test(x, n_perm: int = 10000, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p for mean(x) ≠ 0 (exact enumeration for n ≤ 16)."""
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return float("nan")
    obs = abs(x.mean())
    tol = 1e-12 * max(1.0, obs)
    if n <= 16:
        signs = ((np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1) * 2 - 1
        stats = np.abs((signs * x[None, :]).mean(axis=1))
        return float((stats >= obs - tol).mean())
    rng = np.random.default_rng(seed)
    k = 0
    for s in range(0, n_perm, 2000):
        m = min(2000, n_perm - s)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(m, n))
        k += int((np.abs((signs * x[None, :]).mean(axis=1)) >= obs - tol).sum())
    return (k + 1) / (n_perm + 1)


def bootstrap_mean_ci(x, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    means = x[idx].mean(axis=1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


# ----------------------------------------------------------------------------- tables
def position_group(df: pd.DataFrame) -> pd.Series:
    return np.where(df["position_kind"] == "token", df["position"], df["position_kind"])


def per_pair(res: pd.DataFrame, value: str = "normalised") -> pd.DataFrame:
    """One value per (pair, component, group, layer): random positions averaged within a pair."""
    if not len(res):
        return pd.DataFrame(columns=["pair", "component", "group", "layer", value])
    d = res.assign(group=position_group(res))
    return d.groupby(["pair", "component", "group", "layer"], as_index=False, sort=True)[value].mean()


def layer_stats(res: pd.DataFrame, value: str = "normalised", n_boot: int = 2000, n_perm: int = 10000,
                seed: int = 0) -> pd.DataFrame:
    """Per (component, group, layer): n, n_small, mean, median, share_pos, ci_lo, ci_hi, p_binom, p_perm."""
    cols = ["component", "group", "layer", "value", "n", "n_small", "mean", "median", "share_pos", "ci_lo", "ci_hi",
            "p_binom", "p_perm", "answer_unchanged"]
    if not len(res):
        return pd.DataFrame(columns=cols)
    pp = per_pair(res, value)
    d = res.assign(group=position_group(res))
    small = d.groupby(["component", "group", "layer"])["small_denominator"].apply(
        lambda s: int(d.loc[s.index][s.to_numpy(bool)]["pair"].nunique()))
    keep = d.groupby(["component", "group", "layer"])["answer_unchanged"].mean()
    rows = []
    for (comp, grp, layer), g in pp.groupby(["component", "group", "layer"], sort=True):
        x = g[value].to_numpy(dtype=float)
        x = x[~np.isnan(x)]
        lo, hi = bootstrap_mean_ci(x, n_boot, seed)
        rows.append({
            "component": comp, "group": grp, "layer": int(layer), "value": value, "n": int(len(x)),
            "n_small": int(small.get((comp, grp, layer), 0)) if value == "normalised" else 0,
            "mean": float(x.mean()) if len(x) else np.nan, "median": float(np.median(x)) if len(x) else np.nan,
            "share_pos": float((x > 0).mean()) if len(x) else np.nan, "ci_lo": lo, "ci_hi": hi,
            "p_binom": sign_test(x) if len(x) else np.nan, "p_perm": sign_flip_test(x, n_perm, seed) if len(x) else np.nan,
            "answer_unchanged": float(keep.get((comp, grp, layer), np.nan)),
        })
    return pd.DataFrame(rows, columns=cols)


def layer_gradient(res: pd.DataFrame, component: str = "resid", group: str = "confidence", value: str = "normalised",
                   n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Spearman ρ of layer vs mean value over pairs, with a bootstrap-over-pairs CI and a Fisher CI."""
    pp = per_pair(res, value)
    pp = pp[(pp["component"] == component) & (pp["group"] == group)]
    out = {"component": component, "group": group, "value": value, "rho": None, "p": None, "ci": [None, None],
           "ci_fisher": [None, None], "n_layers": 0, "n_pairs": 0, "layers": [], "means": []}
    if not len(pp):
        return out
    wide = pp.pivot_table(index="pair", columns="layer", values=value, aggfunc="mean")  # pairs × layers
    layers = np.array(wide.columns, dtype=float)
    M = wide.to_numpy(dtype=float)
    means = np.nanmean(M, axis=0) if M.size else np.array([])
    ok = ~np.isnan(means)
    rho, p = spearman(layers[ok], means[ok])
    n = int(ok.sum())
    out.update(rho=_f(rho), p=_f(p), n_layers=n, n_pairs=int(np.isfinite(M).any(axis=1).sum()),
               layers=[int(x) for x in layers], means=[_f(x) for x in means])
    out["ci_fisher"] = [_f(x) for x in fisher_ci(rho, n, level)]
    P = M.shape[0]
    if P >= 2 and n >= 3:
        rng = np.random.default_rng(seed)
        rs = []
        for _ in range(n_boot):
            sub = M[rng.integers(0, P, size=P)]
            with np.errstate(all="ignore"):
                m = np.nanmean(sub, axis=0) if np.isfinite(sub).any() else np.full(M.shape[1], np.nan)
            k = ~np.isnan(m)
            if k.sum() >= 3:
                r, _ = spearman(layers[k], m[k])
                if not np.isnan(r):
                    rs.append(r)
        if rs:
            a = (1 - level) / 2
            out["ci"] = [float(np.quantile(rs, a)), float(np.quantile(rs, 1 - a))]
    return out


def _f(x):
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def groups_of(res: pd.DataFrame) -> list[str]:
    order = {"confidence": 0, "random": 1, "last_prompt": 2, "last_answer": 3}
    gs = pd.unique(position_group(res)) if len(res) else []
    return sorted(gs, key=lambda g: (order.get(g, 9), g))


def summarize(res: pd.DataFrame, spec, n_layers: int | None = None, n_boot: int = 1000, seed: int | None = None) -> dict:
    """The ``patching.json`` numbers: ρ and per-layer means (with CIs and tests) for every
    component × position group, plus the pairs below the denominator threshold."""
    seed = getattr(spec, "seed", 0) if seed is None else seed
    out: dict = {"n_rows": int(len(res)), "n_pairs": int(res["pair"].nunique()) if len(res) else 0,
                 "min_denominator": float(getattr(spec, "min_denominator", 1.0)), "n_layers_model": n_layers,
                 "unit": "pair (random positions averaged within a pair)", "gradients": {}, "layers": {}}
    if not len(res):
        return out
    small = res[res["small_denominator"]].drop_duplicates("pair")
    out["small_denominator_pairs"] = [
        {"pair": int(r.pair), "source": r.source, "target": r.target, "denom": _f(r.denom)} for r in small.itertuples()
    ]
    out["n_small_denominator"] = int(len(small))
    out["answer_unchanged_share"] = _f(res["answer_unchanged"].mean())
    st = layer_stats(res, "normalised", n_boot=n_boot, seed=seed)
    st_raw = layer_stats(res, "shift", n_boot=n_boot, seed=seed)
    for comp in pd.unique(res["component"]):
        for grp in groups_of(res[res["component"] == comp]):
            key = f"{comp}/{grp}"
            out["gradients"][key] = {
                "normalised": layer_gradient(res, comp, grp, "normalised", n_boot=n_boot, seed=seed),
                "shift": layer_gradient(res, comp, grp, "shift", n_boot=n_boot, seed=seed),
            }
            a = st[(st["component"] == comp) & (st["group"] == grp)]
            b = st_raw[(st_raw["component"] == comp) & (st_raw["group"] == grp)]
            out["layers"][key] = {
                "layer": a["layer"].astype(int).tolist(),
                "mean": [_f(x) for x in a["mean"]], "median": [_f(x) for x in a["median"]],
                "share_pos": [_f(x) for x in a["share_pos"]], "ci_lo": [_f(x) for x in a["ci_lo"]],
                "ci_hi": [_f(x) for x in a["ci_hi"]], "p_binom": [_f(x) for x in a["p_binom"]],
                "p_perm": [_f(x) for x in a["p_perm"]], "n": a["n"].astype(int).tolist(),
                "n_small": a["n_small"].astype(int).tolist(),
                "shift_mean": [_f(x) for x in b["mean"]], "answer_unchanged": [_f(x) for x in a["answer_unchanged"]],
            }
    return out
