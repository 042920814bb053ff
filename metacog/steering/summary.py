"""The statistics of a steering sweep, the item as the unit (docs/SCIENCE.md, "Statistics of
steering"): per-cell shifts with bootstrap CIs, the paired contrast direction − random with
sign-flip tests and Holm, and the per-item dose–response slopes."""
from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from metacog import stats

if TYPE_CHECKING:
    from metacog.steering.run import SteerSpec


def dose_slope(alphas: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Per-row ordinary-least-squares slope of ``Y`` ``[n_items, n_alphas]`` (shifts, points
    0–100) on ``alphas`` ``[n_alphas]`` (multiples of σ_d): ``[n_items]`` in points per σ; a row
    with a NaN gives NaN. The closed form Σ(x−x̄)(y−ȳ)/Σ(x−x̄)², vectorised over items; equal
    to :func:`scipy.stats.linregress`'s slope row by row (tested)."""
    x = alphas - alphas.mean()
    with np.errstate(invalid="ignore"):
        return ((Y - Y.mean(1, keepdims=True)) * x).sum(1) / (x * x).sum()


def summarize(res: pd.DataFrame, spec: SteerSpec | dict, value: str = "ev", n_perm: int = 9999, n_boot: int = 2000,
              seed: int = 0) -> dict:
    """The sweep's statistics, the item as the unit (docs/SCIENCE.md, "Statistics of steering").

    res: :func:`run_steering`'s results (``row, direction, layer, alpha, correct, d_<value>``).
    Returns ``{"cells": [...], "contrasts": [...], "slopes": [...], ...}``:

    - cells: per (direction, layer, α) the mean per-item shift ``d_<value>`` with its sign-flip
      p and 95% percentile bootstrap CI over items, and the same for correct and incorrect
      items separately (``correct``/``incorrect``), plus the share of answers changed;
    - contrasts: per (direction ≠ random, layer, α ≠ 0) the per-item difference
      shift(direction) − shift(random) (paired by item), sign-flip test across items
      (:func:`metacog.stats.one_sample`), Holm over the layers × α grid of that direction
      (``p_holm``);
    - slopes: per (direction ≠ random, layer) the per-item OLS slope of the shift on α (points
      per σ) minus random's, same test, Holm over that direction's layers; and, since the random
      direction's sign is arbitrary, the magnitude contrast |slope| − |slope_random| per item
      (``abs_diff``, ``abs_p``, ``abs_ci``, ``abs_p_holm``): does the direction move E[v] *more*?
    """
    sp = asdict(spec) if is_dataclass(spec) else dict(spec)
    col = f"d_{value}"
    cells = []
    for (k, h, a), g in res.groupby(["direction", "layer", "alpha"], sort=True):
        s = stats.one_sample(g[col].to_numpy(float), n_perm, n_boot, seed)
        c = {"direction": k, "layer": int(h), "alpha": float(a), **{x: s[x] for x in ("mean", "p", "ci", "n")}}
        for lab, m in (("correct", g["correct"].to_numpy(bool)), ("incorrect", ~g["correct"].to_numpy(bool))):
            t = stats.one_sample(g[col].to_numpy(float)[m], n_perm, n_boot, seed)
            c[lab] = {x: t[x] for x in ("mean", "ci", "n")}
        if "answer_changed" in g:
            c["answer_changed"] = float(pd.to_numeric(g["answer_changed"], errors="coerce").mean())
        cells.append(c)
    contrasts, slopes = [], []
    rnd = res[res["direction"] == "random"]
    if len(rnd):
        R = rnd.pivot_table(index="row", columns=["layer", "alpha"], values=col, aggfunc="first")
        for k in [x for x in sp["directions"] if x != "random"]:
            D = res[res["direction"] == k].pivot_table(index="row", columns=["layer", "alpha"], values=col, aggfunc="first")
            grid = []
            for h in sp["layers"]:
                for a in sp["alphas"]:
                    if float(a) == 0.0 or (h, a) not in D.columns or (h, a) not in R.columns:
                        continue
                    x = (D[(h, a)] - R[(h, a)].reindex(D.index)).to_numpy(float)
                    s = stats.one_sample(x, n_perm, n_boot, seed)
                    grid.append({"direction": k, "layer": int(h), "alpha": float(a), "diff": s["mean"], "p": s["p"],
                                 "ci": s["ci"], "n": s["n"], "share_pos": s["share_pos"], "min_p": s["min_p"]})
            ph = stats.holm([g["p"] if g["p"] is not None else np.nan for g in grid])
            for g, q in zip(grid, ph):
                g["p_holm"] = None if not np.isfinite(q) else float(q)
            contrasts += grid
            lay = []
            for h in sp["layers"]:
                al = [a for a in sp["alphas"] if (h, a) in D.columns and (h, a) in R.columns]
                if len(al) < 2:
                    continue
                A = np.asarray(al, dtype=float)
                sd = dose_slope(A, D[[(h, a) for a in al]].to_numpy(float))
                sr = dose_slope(A, R[[(h, a) for a in al]].reindex(D.index).to_numpy(float))
                s = stats.one_sample(sd - sr, n_perm, n_boot, seed)
                so = stats.one_sample(sd, n_perm, n_boot, seed)
                sro = stats.one_sample(sr, n_perm, n_boot, seed)
                sa = stats.one_sample(np.abs(sd) - np.abs(sr), n_perm, n_boot, seed)
                lay.append({"direction": k, "layer": int(h), "slope_diff": s["mean"], "p": s["p"], "ci": s["ci"], "n": s["n"],
                            "slope": so["mean"], "slope_ci": so["ci"], "slope_random": sro["mean"],
                            "slope_random_ci": sro["ci"], "min_p": s["min_p"],
                            "abs_diff": sa["mean"], "abs_p": sa["p"], "abs_ci": sa["ci"]})
            for key, out in (("p", "p_holm"), ("abs_p", "abs_p_holm")):
                ph = stats.holm([g[key] if g[key] is not None else np.nan for g in lay])
                for g, q in zip(lay, ph):
                    g[out] = None if not np.isfinite(q) else float(q)
            slopes += lay
    return {"value": value, "unit": "item", "cells": cells, "contrasts": contrasts, "slopes": slopes,
            "test": "sign-flip permutation test of the mean across items (scipy.stats.permutation_test, two-sided)",
            "ci_method": f"percentile bootstrap over items (scipy.stats.bootstrap), {int(n_boot)} resamples, 95%",
            "correction": "holm: over the layers x alpha grid of one direction (contrasts); over its layers (slopes)",
            "null": "each item's difference (direction - random) is symmetric about 0",
            "statistic": f"per item: shift of {value} vs the same item at alpha = 0; contrast = shift(direction) - shift(random) "
                         "paired by item; slope = OLS slope of the shift on alpha (points per sigma)"}
