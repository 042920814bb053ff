"""Post-hoc calibration of any method's score, fitted on the calibration split only.

- ``platt`` (Platt 1999): p = σ(a · logit(s) + b), (a, b) by maximum likelihood;
- ``temperature`` (Guo et al. 2017): p = σ(logit(s) / T), T > 0 by maximum likelihood (Platt with b = 0);
- ``isotonic`` (Zadrozny & Elkan 2002): the monotone step function minimising squared error (sklearn's
  ``IsotonicRegression``, clipped outside the fitted range).

Scores are clipped to [1e-6, 1 − 1e-6] before the logit. :func:`posthoc` fits on the rows of
the calibration split (never eval: it checks) and applies the fit to every row.

Public entry: :func:`posthoc`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize, minimize_scalar

KINDS = ("platt", "isotonic", "temperature")
FIT_SPLIT = "calibration"
EPS = 1e-6


class CalibrationLeak(AssertionError):
    """An eval item reached a calibrator's fit."""


def _logit(s):
    s = np.clip(np.asarray(s, dtype=float), EPS, 1 - EPS)
    return np.log(s) - np.log1p(-s)


def _nll(z, y):
    # mean negative log-likelihood of labels y under p = σ(z), computed stably
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_calibrator(kind: str, scores, labels):
    """A function [0,1] -> [0,1] fitted on (scores, labels); raises ValueError if it cannot be."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=float)
    m = ~np.isnan(s)
    s, y = s[m], y[m]
    if kind not in KINDS:
        raise ValueError(f"unknown calibration {kind!r}; known: {', '.join(KINDS)}")
    if s.size < 2 or y.min() == y.max():
        raise ValueError("post-hoc calibration needs calibration items of both classes")
    z = _logit(s)
    if kind == "temperature":
        r = minimize_scalar(lambda lt: _nll(z / np.exp(lt), y), bounds=(-5, 5), method="bounded")
        T = float(np.exp(r.x))
        return lambda x: 1.0 / (1.0 + np.exp(-_logit(x) / T))
    if kind == "platt":
        def f(w):
            zz = w[0] * z + w[1]
            p = 1.0 / (1.0 + np.exp(-zz))
            g = p - y
            return _nll(zz, y), np.array([np.mean(g * z), np.mean(g)])

        r = minimize(f, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
        a, b = map(float, r.x)
        return lambda x: 1.0 / (1.0 + np.exp(-(a * _logit(x) + b)))
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s, y)
    return lambda x: np.clip(iso.predict(np.asarray(x, dtype=float)), 0.0, 1.0)


def posthoc(kind: str, frame: pd.DataFrame, fit=fit_calibrator) -> np.ndarray:
    """Calibrated scores for every row of ``frame`` (columns id, split, score, correct),
    fitted on its calibration-split rows only. NaN scores stay NaN.

    Raises:
        ValueError: an unknown ``kind``, or calibration rows of only one class (cannot fit).
        CalibrationLeak: an eval item is among the rows the calibrator is fitted on."""
    cal = frame[(frame["split"] == FIT_SPLIT) & frame["score"].notna()]
    if cal["split"].ne(FIT_SPLIT).any() or cal["id"].isin(frame.loc[frame["split"] == "eval", "id"]).any():
        raise CalibrationLeak("an eval item is among the calibration rows")
    f = fit(kind, cal["score"].to_numpy(dtype=float), cal["correct"].to_numpy(dtype=float))
    s = frame["score"].to_numpy(dtype=float)
    out = np.full(s.shape, np.nan)
    ok = ~np.isnan(s)
    out[ok] = f(s[ok])
    return out
