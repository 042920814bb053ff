"""Statistics of a patching grid: per layer × position group, the layer gradient, and the
confidence-slot vs random-position contrast — all with the **pair** as the unit.

A pair contributes one value per (component, layer, position group) — for the random
positions, the mean over its K draws (they share the pair's source and target, so they are
not independent). Position groups are the named positions, ``random``, and each picked
``tokenI``. The tests themselves are :mod:`metacog.stats` (docs/SCIENCE.md, "Statistics of
patching"); this module turns a grid's tidy results table into their per-pair inputs.

Per (component, group, layer), on the normalised shift (pairs whose |source − target| is
below the threshold are counted in ``n_small`` and left out of these numbers, never
silently) and on the raw shift (all pairs):

- ``mean``, ``median``, ``share_pos`` (share of pairs > 0), ``n``;
- ``ci_lo``/``ci_hi``: percentile bootstrap CI of the mean over pairs (``n_boot`` resamples);
- ``p_binom``: two-sided sign test (:func:`scipy.stats.binomtest`, pairs equal to 0 dropped);
- ``p_perm``: two-sided sign-flip permutation test of the mean over pairs
  (:func:`metacog.stats.sign_flip_test`);
- ``p_holm``: ``p_perm`` Holm-adjusted over the layers of the (component, group, value)
  family (:func:`metacog.stats.holm`) — the p to read when asking "which layers?".

Layer gradient per (component, group): :func:`metacog.stats.layer_gradient` on the per-pair
table — mean per-pair Spearman ρ(layer, effect), sign-flip p across pairs, bootstrap CI over
pairs; ρ of the per-layer means only as the labelled descriptive ``rho_of_means``.

Contrast per component: each named/picked group vs ``random``, within pair, then across
pairs (:func:`metacog.stats.paired_contrast`): layer-averaged effect difference and ρ
difference, each with its sign-flip p and bootstrap CI.
"""
from __future__ import annotations


import numpy as np
import pandas as pd
from scipy import stats as _st

from metacog import stats as S

VALUES = ("normalised", "shift")
N_PERM = 9999  # Monte Carlo sign flips when a test has more than stats.EXACT_MAX pairs
N_BOOT = 1000  # bootstrap resamples of patching.json and the Patching page (the same numbers on both)


def sign_test(x) -> float:
    """Two-sided exact sign test of share(x > 0) = ½ (:func:`scipy.stats.binomtest`); zeros
    and NaN dropped; 1.0 when nothing is left."""
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x) & (x != 0)]
    if not len(x):
        return 1.0
    return float(_st.binomtest(int((x > 0).sum()), len(x), 0.5).pvalue)


# ----------------------------------------------------------------------------- tables
def position_group(df: pd.DataFrame) -> pd.Series:
    """Per row of a results table: its position group — the named position, ``random`` for every
    random draw, or the picked ``tokenI`` label."""
    return np.where(df["position_kind"] == "token", df["position"], df["position_kind"])


def per_pair(res: pd.DataFrame, value: str = "normalised") -> pd.DataFrame:
    """One value per (pair, component, group, layer): random positions averaged within a pair."""
    if not len(res):
        return pd.DataFrame(columns=["pair", "component", "group", "layer", value])
    d = res.assign(group=position_group(res))
    return d.groupby(["pair", "component", "group", "layer"], as_index=False, sort=True)[value].mean()


def effects(res: pd.DataFrame, component: str, group: str, value: str = "normalised") -> pd.DataFrame:
    """The per-pair table :mod:`metacog.stats` takes: ``pair``, ``layer``, ``effect`` (one row
    per pair × layer; the mean of a pair's random draws; NaN where undefined)."""
    pp = per_pair(res, value)
    pp = pp[(pp["component"] == component) & (pp["group"] == group)]
    return pd.DataFrame({"pair": pp["pair"].to_numpy(), "layer": pp["layer"].to_numpy(),
                         "effect": pp[value].to_numpy(dtype=float)})


def layer_stats(res: pd.DataFrame, value: str = "normalised", n_boot: int = 2000, n_perm: int = N_PERM,
                seed: int = 0) -> pd.DataFrame:
    """Per (component, group, layer): n, n_small, mean, median, share_pos, ci_lo, ci_hi, p_binom,
    p_perm, p_holm (p_perm Holm-adjusted over the layers of its component × group), answer_unchanged."""
    cols = ["component", "group", "layer", "value", "n", "n_small", "mean", "median", "share_pos", "ci_lo", "ci_hi",
            "p_binom", "p_perm", "p_holm", "answer_unchanged"]
    if not len(res):
        return pd.DataFrame(columns=cols)
    pp = per_pair(res, value)
    d = res.assign(group=position_group(res))
    small = d[d["small_denominator"].astype(bool)].groupby(["component", "group", "layer"])["pair"].nunique()
    keep = d.groupby(["component", "group", "layer"])["answer_unchanged"].mean()
    rows = []
    for (comp, grp, layer), g in pp.groupby(["component", "group", "layer"], sort=True):
        x = g[value].to_numpy(dtype=float)
        x = x[~np.isnan(x)]
        lo, hi = S.bootstrap_ci(x, n_boot, seed)
        rows.append({
            "component": comp, "group": grp, "layer": int(layer), "value": value, "n": int(len(x)),
            "n_small": int(small.get((comp, grp, layer), 0)) if value == "normalised" else 0,
            "mean": float(x.mean()) if len(x) else np.nan, "median": float(np.median(x)) if len(x) else np.nan,
            "share_pos": float((x > 0).mean()) if len(x) else np.nan, "ci_lo": lo, "ci_hi": hi,
            "p_binom": sign_test(x) if len(x) else np.nan, "p_perm": S.sign_flip_test(x, n_perm, seed) if len(x) else np.nan,
            "answer_unchanged": float(keep.get((comp, grp, layer), np.nan)),
        })
    out = pd.DataFrame(rows, columns=cols)
    for _, idx in out.groupby(["component", "group"]).groups.items():
        out.loc[idx, "p_holm"] = S.holm(out.loc[idx, "p_perm"].to_numpy(dtype=float))
    return out


def gradient(res: pd.DataFrame, component: str = "resid", group: str = "confidence", value: str = "normalised",
             n_perm: int = N_PERM, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """:func:`metacog.stats.layer_gradient` of one component × position group of a grid
    (``value``: ``normalised`` or raw ``shift``), labelled with them."""
    g = S.layer_gradient(effects(res, component, group, value), n_perm=n_perm, n_boot=n_boot, seed=seed, level=level)
    return {"component": component, "group": group, "value": value, **g}


def contrast(res: pd.DataFrame, component: str = "resid", group: str = "confidence", control: str = "random",
             value: str = "normalised", n_perm: int = N_PERM, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """``group`` vs ``control`` (default the confidence slot vs the random positions) within
    each pair, then across pairs: :func:`metacog.stats.paired_contrast`."""
    c = S.paired_contrast(effects(res, component, group, value), effects(res, component, control, value),
                          n_perm=n_perm, n_boot=n_boot, seed=seed, level=level, labels=(group, control))
    return {"component": component, "value": value, **c}


_f = S.json_float  # one JSON-friendly float (None for NaN/None), defined in metacog.stats


def groups_of(res: pd.DataFrame) -> list[str]:
    """The position groups present in ``res``, in display order: confidence, random, last_prompt,
    last_answer, then picked tokens."""
    order = {"confidence": 0, "random": 1, "last_prompt": 2, "last_answer": 3}
    gs = pd.unique(position_group(res)) if len(res) else []
    return sorted(gs, key=lambda g: (order.get(g, 9), g))


TESTS_DOC = {
    "unit": S.UNIT,
    "gradient": "rho = mean over pairs of Spearman rho(layer, effect) within each pair; p: " + S.SIGN_FLIP
                + "; ci: " + S.BOOT + "; rho_of_means is descriptive only (no p-value)",
    "null": "each pair's statistic is symmetric about 0 (no consistent direction across pairs)",
    "contrast": "per pair: mean over shared layers of (group - random) and rho_group - rho_random; same test and CI",
    "per_layer": "p_perm: sign-flip test over pairs at each layer; p_binom: exact sign test (scipy.stats.binomtest)",
    "correction": S.CORRECTION, "correction_doc": S.CORRECTION_DOC,
    "definition": "docs/SCIENCE.md, Statistics of patching",
}


def summarize(res: pd.DataFrame, spec, n_layers: int | None = None, n_boot: int = N_BOOT, seed: int | None = None,
              n_perm: int = N_PERM) -> dict:
    """The ``patching.json`` numbers: the across-pairs layer gradient and per-layer means (with
    CIs, tests and the Holm correction) for every component × position group, each group's
    contrast with the random positions, the classes the random positions were drawn from,
    and the pairs below the denominator threshold."""
    seed = getattr(spec, "seed", 0) if seed is None else seed
    out: dict = {"n_rows": int(len(res)), "n_pairs": int(res["pair"].nunique()) if len(res) else 0,
                 "min_denominator": float(getattr(spec, "min_denominator", 1.0)), "n_layers_model": n_layers,
                 "unit": "pair (random positions averaged within a pair)", "tests": TESTS_DOC,
                 "gradients": {}, "contrasts": {}, "layers": {}}
    if not len(res):
        return out
    small = res[res["small_denominator"]].drop_duplicates("pair")
    out["small_denominator_pairs"] = [
        {"pair": int(r.pair), "source": r.source, "target": r.target, "denom": _f(r.denom)} for r in small.itertuples()
    ]
    out["n_small_denominator"] = int(len(small))
    out["answer_unchanged_share"] = _f(res["answer_unchanged"].mean())
    rnd = res[res["position_kind"] == "random"].drop_duplicates(["pair", "position"])
    if len(rnd):
        out["random_positions"] = {
            "from": getattr(spec, "random_from", None), "n_draws": int(len(rnd)),
            "classes": {str(k): int(v) for k, v in rnd["position_class"].value_counts().items()} if "position_class" in rnd else {},
        }
    st = layer_stats(res, "normalised", n_boot=n_boot, n_perm=n_perm, seed=seed)
    st_raw = layer_stats(res, "shift", n_boot=n_boot, n_perm=n_perm, seed=seed)
    kw = dict(n_perm=n_perm, n_boot=n_boot, seed=seed)
    for comp in pd.unique(res["component"]):
        groups = groups_of(res[res["component"] == comp])
        for grp in groups:
            key = f"{comp}/{grp}"
            out["gradients"][key] = {v: gradient(res, comp, grp, v, **kw) for v in VALUES}
            if grp != "random" and "random" in groups:
                out["contrasts"][f"{key}-random"] = {v: contrast(res, comp, grp, "random", v, **kw) for v in VALUES}
            a = st[(st["component"] == comp) & (st["group"] == grp)]
            b = st_raw[(st_raw["component"] == comp) & (st_raw["group"] == grp)]
            out["layers"][key] = {
                "layer": a["layer"].astype(int).tolist(),
                "mean": [_f(x) for x in a["mean"]], "median": [_f(x) for x in a["median"]],
                "share_pos": [_f(x) for x in a["share_pos"]], "ci_lo": [_f(x) for x in a["ci_lo"]],
                "ci_hi": [_f(x) for x in a["ci_hi"]], "p_binom": [_f(x) for x in a["p_binom"]],
                "p_perm": [_f(x) for x in a["p_perm"]], "p_holm": [_f(x) for x in a["p_holm"]], "correction": S.CORRECTION,
                "n": a["n"].astype(int).tolist(), "n_small": a["n_small"].astype(int).tolist(),
                "shift_mean": [_f(x) for x in b["mean"]], "answer_unchanged": [_f(x) for x in a["answer_unchanged"]],
            }
    return out
