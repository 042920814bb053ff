"""The probe stage's constants and its result record (:class:`ProbeResults`); see
:mod:`metacog.stages.probes` for what is fitted."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

PROBES_VERSION = 2  # 2: nested cross-fitting, selection null, CIs on every eval metric
METRIC_COLUMNS = ["layer", "position", "C", "cv_auroc", "auroc", "auroc_lo", "auroc_hi", "ece", "ece_lo", "ece_hi",
                  "ece_null_mean", "ece_null_p95", "brier", "brier_lo", "brier_hi", "aurc", "aurc_lo", "aurc_hi",
                  "n_train", "n_eval"]
DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0)


@dataclass
class ProbeResults:
    """Plain numpy/pandas results of :func:`fit_probes` (see the module docstring)."""

    metrics: pd.DataFrame
    oof: np.ndarray  # float32 [n_items, n_layers, n_positions]
    best: dict | None  # JSON-able: layer, position, C, cv_auroc, auroc, ... ; None if nothing fitted
    cv: pd.DataFrame  # layer, position, C, cv_auroc, cv_auroc_sd, chosen: the whole C grid
    coef: np.ndarray  # float32 [n_layers, n_positions, d]: full-train probe on *raw* features
    intercept: np.ndarray  # float32 [n_layers, n_positions]: p = sigmoid(x @ coef + intercept)
    fold: np.ndarray  # int8 [n_items]: CV fold of each train row, -1 for other rows
    layers: list[int]
    positions: list
    info: dict = field(default_factory=dict)

    def predict(self, x: np.ndarray, layer: int, position) -> np.ndarray:
        """p(correct) of the full-train probe at (layer, position) for raw features ``x [n, d]``."""
        pi = self.positions.index(position)
        z = np.asarray(x, dtype=np.float64) @ self.coef[layer, pi].astype(np.float64) + float(self.intercept[layer, pi])
        return 1.0 / (1.0 + np.exp(-z))
