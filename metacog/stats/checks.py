"""The input contract shared by every metric of :mod:`metacog.stats.metrics`: correctness labels
are bool or 0/1 (True = correct = the positive class), scores and labels have one value per
item, confidences in [0, 1] have no NaN. Each check raises ValueError saying what is wrong."""
from __future__ import annotations

import numpy as np

__all__ = ["as_labels", "scores_and_labels", "as_conf01"]


def as_labels(labels, n: int | None = None) -> np.ndarray:
    """Correctness labels as a flat bool array ``[n]`` (True = correct = the positive class).

    Raises: ValueError when a label is not bool/0/1 (NaN included) or, with ``n``, when there are
    not exactly ``n`` labels.
    """
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


def scores_and_labels(scores, labels, nan_policy: str) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``[N]`` (float) and labels ``[N]`` (bool) of a metric, NaN scores dropped
    (``nan_policy="omit"``) or refused (``"raise"``).

    Raises: ValueError on NaN scores with "raise", an unknown ``nan_policy``, or labels as
    :func:`as_labels` refuses.
    """
    s = np.asarray(scores, dtype=float).ravel()
    y = as_labels(labels, s.size)
    if nan_policy not in ("raise", "omit"):
        raise ValueError(f"nan_policy must be 'raise' or 'omit', not {nan_policy!r}")
    bad = np.isnan(s)
    if bad.any():
        if nan_policy == "raise":
            raise ValueError(f"{int(bad.sum())} NaN score(s); pass nan_policy='omit' to drop them")
        s, y = s[~bad], y[~bad]
    return s, y


def as_conf01(conf01, labels) -> tuple[np.ndarray, np.ndarray]:
    """Confidences ``[N]`` as probabilities in [0, 1] (float) and their labels ``[N]`` (bool).

    Raises: ValueError on NaN or values outside [0, 1], or labels as :func:`as_labels` refuses.
    """
    c = np.asarray(conf01, dtype=float).ravel()
    y = as_labels(labels, c.size)
    if np.any(np.isnan(c)):
        raise ValueError("confidences contain NaN; drop unparsed items first")
    if c.size and (c.min() < 0.0 or c.max() > 1.0):
        raise ValueError(f"confidences must lie in [0, 1] (got min {c.min()}, max {c.max()})")
    return c, y
