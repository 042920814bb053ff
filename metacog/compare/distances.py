"""Distances between two samples of confidences (NaN = unparsed, ignored): the two-sample
Kolmogorov–Smirnov statistic ``D = sup_x |F_a(x) − F_b(x)|`` and the Wasserstein-1 (earth
mover's) distance ``W = ∫ |F_a(x) − F_b(x)| dx`` (in the samples' units: confidence points,
0–100), both NaN when either side has no finite value."""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp, wasserstein_distance


def _finite_sorted(x) -> np.ndarray:
    x = np.asarray(x, dtype=float).ravel()
    return np.sort(x[np.isfinite(x)])


def ks_distance(a, b) -> float:
    """Two-sample Kolmogorov–Smirnov statistic ``D = sup |F_a − F_b|`` of two 1-D samples
    (NaN values ignored; NaN when either side has no finite value): ``scipy.stats.ks_2samp``."""
    a, b = _finite_sorted(a), _finite_sorted(b)
    if not len(a) or not len(b):
        return float("nan")
    return float(ks_2samp(a, b, method="asymp").statistic)


def wasserstein(a, b) -> float:
    """1-D Wasserstein-1 (earth mover's) distance ``∫ |F_a − F_b| dx`` between the empirical
    distributions of two samples, in their units (confidence points, 0–100); NaN values ignored,
    NaN when either side has no finite value: ``scipy.stats.wasserstein_distance``."""
    a, b = _finite_sorted(a), _finite_sorted(b)
    if not len(a) or not len(b):
        return float("nan")
    return float(wasserstein_distance(a, b))


def pairwise_distances(values: dict[str, np.ndarray]) -> pd.DataFrame:
    """KS and Wasserstein for every pair of named samples: ``a, b, n_a, n_b, ks, wasserstein``."""
    rows = []
    for x, y in combinations(list(values), 2):
        va, vb = _finite_sorted(values[x]), _finite_sorted(values[y])
        rows.append({"a": x, "b": y, "n_a": len(va), "n_b": len(vb), "ks": ks_distance(va, vb), "wasserstein": wasserstein(va, vb)})
    return pd.DataFrame(rows, columns=["a", "b", "n_a", "n_b", "ks", "wasserstein"])
