"""The validity screen of verbal confidences (0-100 points): L (share >= 95), TRIN (share in the
most common decile) and the point-biserial r with correctness, and the verdict rule
:data:`VALIDITY_DOC`."""
from __future__ import annotations

import numpy as np

from metacog.stats.checks import as_labels

__all__ = ["VALIDITY_DOC", "validity_screen"]

VALIDITY_DOC = (
    "Validity screen on 0-100 confidences (NaN = unparsed, excluded and counted as n_missing): "
    "L = share of confidences >= 95; TRIN = share in the most common decile, deciles "
    "[0,10), [10,20), ..., [80,90), [90,100] (the last closed, so 100 is in [90,100]); "
    "r = point-biserial (Pearson) correlation of confidence with correctness (NaN when either is "
    "constant, and a NaN r counts as |r| < .05). Verdict: 'invalid' if L >= .70 or TRIN >= .80 or "
    "|r| < .05; else 'indeterminate' if L >= .40 or TRIN >= .60; else 'valid'. "
    "No usable confidence at all (n = 0) is 'invalid'."
)


def validity_screen(conf_0_100, labels) -> dict:
    """The verbal-confidence validity screen; the rule is VALIDITY_DOC, exactly.

    Returns ``dict(L, trin, r, verdict, n, n_missing, reasons)``.

    Raises: ValueError on confidences outside [0, 100] (NaN is allowed: unparsed).
    """
    c = np.asarray(conf_0_100, dtype=float).ravel()
    y = as_labels(labels, c.size)
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
