"""Inputs of the probe stage: uniform access to activation arrays (:class:`ActivationSource`)
and the stratified (grouped) cross-validation folds of the train rows (:func:`stratified_folds`)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd


# ----------------------------------------------------------------------------- folds
def stratified_folds(y_train: np.ndarray, folds: int, seed: int, groups=None) -> np.ndarray:
    """Fold id (0..folds-1) of each train row: ``StratifiedKFold(folds, shuffle=True, random_state=seed)``;
    when ``groups`` (one label per train row) has a group of more than one row,
    ``StratifiedGroupKFold`` with the same arguments, so a fact asked two ways never sits on both
    sides of a CV fold (which would inflate the CV AUROC the best probe is chosen by)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y_train = np.asarray(y_train, dtype=bool)
    out = np.empty(y_train.size, dtype=np.int8)
    if groups is not None and len(pd.unique(np.asarray(groups, dtype=object))) < y_train.size:
        sgk = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        parts = sgk.split(np.zeros(y_train.size), y_train, groups=np.asarray(groups, dtype=object).astype(str))
    else:
        parts = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(y_train.size), y_train)
    for f, (_, held) in enumerate(parts):
        out[held] = f
    return out



class ActivationSource:
    """Uniform access to [n, L, P, d] arrays or {position: [n, L, d]} (memmaps welcome)."""

    def __init__(self, X, positions):
        if isinstance(X, Mapping):
            self.dict = {k: X[k] for k in (positions if positions is not None else list(X.keys()))}
            self.positions = list(self.dict.keys())
            shapes = {tuple(np.shape(a)) for a in self.dict.values()}
            if len(shapes) != 1:
                raise ValueError(f"every position must have the same [n_items, n_layers, d] shape, got {shapes}")
            self.n, self.L, self.d = next(iter(shapes))
            self.arr = None
        else:
            if not hasattr(X, "shape") or len(X.shape) != 4:
                raise ValueError("X must be [n_items, n_layers, n_positions, d] or a dict position -> [n_items, n_layers, d]")
            self.arr = X
            self.dict = None
            self.n, self.L, P, self.d = X.shape
            self.positions = list(positions) if positions is not None else list(range(P))
            if len(self.positions) != P:
                raise ValueError(f"{len(self.positions)} position names for {P} positions")

    def block(self, pi: int, layers: Sequence[int], rows: np.ndarray) -> np.ndarray:
        """float32 [len(layers), len(rows), d] for position index pi (layers ascending)."""
        layers = list(layers)
        l0, l1 = min(layers), max(layers) + 1
        if l1 - l0 != len(layers):  # scattered layers: read them one by one (bounded memory)
            return np.concatenate([self.block(pi, [l], rows) for l in layers], axis=0)
        if self.dict is not None:
            blk = np.asarray(self.dict[self.positions[pi]][rows, l0:l1])  # [rows, l, d]
        else:
            blk = np.asarray(self.arr[rows, l0:l1, pi])
        return np.ascontiguousarray(np.transpose(blk, (1, 0, 2)), dtype=np.float32)

