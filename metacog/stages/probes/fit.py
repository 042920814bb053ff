"""The probe stage's entry point :func:`fit_probes`: input checks, the nested cross-fitting
(:mod:`metacog.stages.probes.crossfit`), one batched bootstrap of the eval metrics, the best
probe and its selection null (:mod:`metacog.stages.probes.null`)."""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from metacog.stages.probes.crossfit import fit_all
from metacog.stages.probes.inputs import ActivationSource
from metacog.stages.probes.null import selection_null
from metacog.stages.probes.results import DEFAULT_CS, METRIC_COLUMNS, ProbeResults
from metacog.stats import metrics as M


def fit_probes(
    X,
    y,
    split,
    *,
    positions: Sequence | None = None,
    layers: Sequence[int] | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    folds: int = 5,
    seed: int = 0,
    n_bins: int = 10,
    n_boot: int = 1000,
    alpha: float = 0.05,
    threads: int | None = None,
    tol: float = 1e-8,
    cv_tol: float = 1e-5,
    max_newton: int = 60,
    max_cg: int = 250,
    rank: int = 32,
    chunk: int | None = None,
    progress: Callable[[int, int, str], Any] | None = None,
    n_perm: int = 100,
    groups: Sequence | None = None,
) -> ProbeResults:
    """Fit a standardised L2 logistic probe per (layer, position); see the module docstring.

    ``X``: ``[n_items, n_layers, n_positions, d]`` or ``{position: [n_items, n_layers, d]}``
    (float16 memmaps are read chunk by chunk). ``y``: correctness (bool) per item. ``split``:
    "train" / "calibration" / "eval" per item; rows with any other value are left out (their
    ``oof`` is NaN). ``layers``: which layers to probe (default all; ``oof`` and ``coef`` keep
    every layer index, NaN where not probed). ``threads``: CPU threads for the call: chunks of
    probes are solved by that many Python worker threads with one torch/BLAS thread each
    (``torch.set_num_threads(1)`` for the call, restored afterwards) -- independent workers never
    wait on each other, whereas BLAS threads spin at every barrier and collapse when a core is
    shared; results do not depend on it. None leaves torch's setting alone and runs one chunk at
    a time. ``rank``: preconditioner rank; ``chunk``: probes solved together (default ≤ 4, from a
    24 MB budget). ``tol``/``cv_tol``: Newton-decrement² stopping thresholds for the chosen C /
    for the C search. ``n_perm``: permutations of :func:`selection_null`, stored in
    ``best["selection_null"]`` (0: none). ``groups``: one label per item (its fact; see
    :func:`metacog.data.assign_splits`): CV folds keep each group whole (:func:`stratified_folds`).

    Raises: ValueError when ``X`` is not 4-D (or a dict of equal ``[n_items, n_layers, d]`` arrays),
    ``y``, ``split`` or ``groups`` is not ``[n_items]``, ``y`` is not bool/0/1, a C is not positive,
    a layer is out of range, or an activation is not finite.
    """
    t_start = time.perf_counter()
    src = ActivationSource(X, positions)
    n, L, d = src.n, src.L, src.d
    P = len(src.positions)
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},), got {y.shape}")
    if y.dtype != bool:
        yf = y.astype(float)
        if np.isnan(yf).any() or not np.all((yf == 0) | (yf == 1)):
            raise ValueError("y must be bool or 0/1 (no NaN)")
        y = yf.astype(bool)
    split = np.asarray(split).astype(str)
    if split.shape != (n,):
        raise ValueError(f"split must have shape ({n},), got {split.shape}")
    Cs = [float(c) for c in Cs]
    if not Cs or any(not (c > 0) for c in Cs):
        raise ValueError("Cs must be positive")
    order = np.argsort(Cs, kind="stable")  # walk from the strongest regularisation
    layers = list(range(L)) if layers is None else sorted({int(l) for l in layers})
    if any(not 0 <= l < L for l in layers):
        raise ValueError(f"layers must lie in 0..{L - 1}")

    tr = np.flatnonzero(split == "train")
    ca = np.flatnonzero(split == "calibration")
    ev = np.flatnonzero(split == "eval")
    other = np.concatenate([ca, ev])
    n_tr = tr.size
    y_tr = y[tr]
    info: dict = {"threads": None, "warnings": []}

    oof = np.full((n, L, P), np.nan, dtype=np.float32)
    coef = np.full((L, P, d), np.nan, dtype=np.float32)
    intercept = np.full((L, P), np.nan, dtype=np.float32)
    fold_of = np.full(n, -1, dtype=np.int8)
    probes = [(l, pi) for pi in range(P) for l in layers]

    g_tr = None
    if groups is not None:
        groups = np.asarray(groups, dtype=object)
        if groups.shape != (n,):
            raise ValueError(f"groups must have shape ({n},), got {groups.shape}")
        g_tr = groups[tr]
    n_min = int(min(y_tr.sum(), n_tr - y_tr.sum())) if n_tr else 0
    if g_tr is not None:
        n_min = min(n_min, len(pd.unique(g_tr)))
    k_folds = min(int(folds), n_min)
    if k_folds < int(folds):
        info["warnings"].append(f"train split has only {n_min} item(s) in its smaller class: "
                                f"{'using ' + str(k_folds) + ' folds' if k_folds >= 2 else 'probes not fitted'}")
    rows_cv = []
    fit_rows = []
    if k_folds >= 2 and probes:
        prev_threads = torch.get_num_threads()
        workers = 1
        if threads is not None:
            workers = max(1, int(threads))
            torch.set_num_threads(1)  # parallel over chunks, one BLAS thread each (see docstring)
        info["threads"] = workers if threads is not None else prev_threads
        try:
            fit_rows, rows_cv = fit_all(src, probes, y, tr, other, k_folds, Cs, order, seed, tol, cv_tol,
                                         max_newton, max_cg, rank, chunk, workers, oof, coef, intercept, fold_of,
                                         info, progress, g_tr)
        finally:
            if threads is not None:
                torch.set_num_threads(prev_threads)

    # ---- eval metrics (one batched bootstrap over all probes: metrics.bootstrap_metrics_batch)
    y_ev = y[ev]
    rows = []
    if fit_rows:
        S = np.stack([oof[ev, l, pi].astype(np.float64) for (l, pi, *_r) in fit_rows], axis=1)
        bm = M.bootstrap_metrics_batch(S, y_ev, n_bins=n_bins, n_boot=n_boot, alpha=alpha, seed=seed)
        for j, (l, pi, C, cv) in enumerate(fit_rows):
            en = M.ece_null(S[:, j], n_bins, seed=seed)
            r = dict(layer=l, position=src.positions[pi], C=C, cv_auroc=cv)
            for k in ("auroc", "ece", "brier", "aurc"):
                r[k], r[f"{k}_lo"], r[f"{k}_hi"] = float(bm[k][j]), float(bm[f"{k}_ci"][j, 0]), float(bm[f"{k}_ci"][j, 1])
            r.update(ece_null_mean=en["mean"], ece_null_p95=en["p95"], n_train=int(n_tr), n_eval=int(ev.size))
            rows.append(r)
    else:
        for (l, pi) in probes:
            rows.append(dict(layer=l, position=src.positions[pi], n_train=int(n_tr), n_eval=int(ev.size)))
    met = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    if len(met):
        met["layer"] = met["layer"].astype(int)
        met["n_train"] = met["n_train"].astype(int)
        met["n_eval"] = met["n_eval"].astype(int)
        pos_rank = {p: i for i, p in enumerate(src.positions)}
        met = met.sort_values(["layer", "position"], key=lambda s: s.map(pos_rank) if s.name == "position" else s,
                              kind="stable").reset_index(drop=True)
    cv = pd.DataFrame(rows_cv, columns=["layer", "position", "C", "cv_auroc", "cv_auroc_sd", "chosen"])
    if len(cv):
        cv = cv.sort_values(["layer", "position", "C"], key=lambda s: s.map(pos_rank) if s.name == "position" else s,
                            kind="stable").reset_index(drop=True)

    best = None
    if len(met) and met["cv_auroc"].notna().any():
        i = int(np.nanargmax(met["cv_auroc"].to_numpy()))  # first maximum in (layer, position) order
        best = {k: _py(met[k].iloc[i]) for k in met.columns}
        best["selected_by"] = "cv_auroc: nested cross-fitted AUROC on the train split (eval never used)"
        best["reported_on"] = "eval"
        if n_perm > 0:
            t_null, prev_threads = time.perf_counter(), torch.get_num_threads()
            if threads is not None:
                torch.set_num_threads(max(1, int(threads)))
            try:
                best["selection_null"] = selection_null(src, y, split, layers=layers, Cs=Cs, folds=k_folds, seed=seed,
                                                        n_perm=n_perm, fold=fold_of, groups=groups)
            finally:
                torch.set_num_threads(prev_threads)
            info["null_seconds"] = round(time.perf_counter() - t_null, 3)
    info["seconds"] = round(time.perf_counter() - t_start, 3)
    info["folds"] = int(k_folds) if k_folds >= 2 else 0
    info["Cs"] = Cs
    return ProbeResults(metrics=met, oof=oof, best=best, cv=cv, coef=coef, intercept=intercept, fold=fold_of,
                        layers=layers, positions=list(src.positions), info=info)


def _py(v):
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        v = float(v)
        return None if math.isnan(v) else v
    return v
