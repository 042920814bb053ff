"""Per-(layer, position) logistic probes of correctness with cross-fitted predictions.

What is fitted, exactly
-----------------------
For every probed (layer, position), on the rows whose split is ``"train"``:

* features are standardised with the mean and population standard deviation (ddof=0) of the
  rows the model is fitted on (inside each fold when cross-fitting; a feature that is constant on
  those rows gets scale 1, as sklearn's ``StandardScaler`` does);
* an L2 logistic regression with an unpenalised intercept minimises
  ``½‖w‖² + C · Σ logloss`` (sklearn's C convention, identical to
  ``LogisticRegression(C=C)`` on the standardised features);
* C of the full-train probe is chosen from ``Cs`` by stratified K-fold cross-validation on the
  train split only (``StratifiedKFold(folds, shuffle=True, random_state=seed)``; the score is the
  mean over folds of the held-out AUROC, as sklearn's ``LogisticRegressionCV(scoring="roc_auc")``
  does; ties go to the smaller C). Eval and calibration rows (and their labels) are never
  looked at before every choice is made.
* Nested cross-fitting (K >= 3 and more than one C): the model that predicts outer fold f is
  fitted at its own C_f, chosen by an inner CV on fold f's training rows only -- the inner folds
  are the other K − 1 outer folds, so the inner model for (f, g) is fitted without folds f and g
  (one model per pair of folds, shared by (f, g) and (g, f)). The train rows' out-of-fold
  predictions (``oof``, the fine-tuning targets) and ``cv_auroc`` therefore carry no
  optimism from choosing C. With K = 2 or one C there is nothing to nest (C_f = the chosen C).

Outputs (``ProbeResults``)
--------------------------
* ``oof[row, layer, position]`` (float32) = p(correct): for train rows the prediction of the
  fold model that did *not* see the row (at its nested C_f; never in-sample, SCIENCE.md bug 3);
  for calibration and eval rows the prediction of the probe refitted on all train rows at the
  chosen C; NaN for rows in no split and for layers that were not probed.
* ``metrics``: one row per (layer, position) (:data:`METRIC_COLUMNS`): ``layer, position, C``
  (of the full-train probe), ``cv_auroc`` (nested cross-fitted train AUROC: mean over outer folds
  of fold f's model at C_f on fold f) and, on the eval split, ``auroc, ece, brier, aurc`` each
  with ``_lo``/``_hi`` (one stratified bootstrap, :func:`metacog.stats.metrics.bootstrap_metrics_batch`;
  ECE bins :data:`metacog.stats.metrics.ECE_BINS_DOC`), ``ece_null_mean, ece_null_p95``
  (:func:`metacog.stats.metrics.ece_null`), ``n_train, n_eval``.
* ``best``: the (layer, position) with the highest ``cv_auroc`` (train only, never eval), its
  eval metrics, and ``selection_null`` (:func:`selection_null`: is the best of all cells better
  than the best of the same selection under shuffled labels?).

How it is fast
--------------
All problems of a chunk of probes (≤ 4 probes × (K folds + the full refit) × 2 values of C) are
solved at once in float32 torch by a batched truncated-Newton method (preconditioned conjugate
gradients on Hessian-vector products: two batched matrix products each), walking the C grid
from the strongest regularisation, two Cs per stage, each stage warm-started from the previous
one. The preconditioner is each probe's top-``rank`` eigenvectors of the train covariance
(randomised subspace iteration) plus a scalar for the rest, scaled by the current mean Hessian
weight. Fold-wise standardisation is exact and costs nothing extra: on features standardised with
the train statistics, fold f's model is the same one with the penalty ``½ Σ_j s_fj² v_j²``
(s_fj = the fold's standard deviation of feature j) and a shifted intercept.

Stopping rule: a problem stops when its Newton decrement² (≈ 2 × the gap to the optimum of the
objective divided by C·n) is below ``cv_tol`` (1e-5) while choosing C (on the benchmark problem the same C is chosen for all 124 probes as at 1e-6, CV AUROCs within 6e-5); the chosen C is then
polished to ``tol`` (1e-8). At that point predicted probabilities agree with a converged float64
sklearn fit to ~2e-4 in the worst case seen (C = 1, d = 576, 720 rows), ~1e-5 typically.
Problems still above the threshold after ``max_newton`` iterations are counted in
``info["not_converged"]``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata

from metacog.stats import metrics as M

__all__ = ["PROBES_VERSION", "DEFAULT_CS", "METRIC_COLUMNS", "SELECTION_NULL_DOC", "ProbeResults", "fit_probes",
           "selection_null", "stratified_folds", "make_synthetic"]

PROBES_VERSION = 2  # 2: nested cross-fitting, selection null, CIs on every eval metric
METRIC_COLUMNS = ["layer", "position", "C", "cv_auroc", "auroc", "auroc_lo", "auroc_hi", "ece", "ece_lo", "ece_hi",
                  "ece_null_mean", "ece_null_p95", "brier", "brier_lo", "brier_hi", "aurc", "aurc_lo", "aurc_hi",
                  "n_train", "n_eval"]
DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0)
_C_PER_STAGE = 2


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


# ----------------------------------------------------------------------------- solver
def _newton_cg(X, y, Mw, lam, D, w, V, S, lmask, stail, dec_tol, max_newton, max_cg, stats):
    """Batched truncated Newton (Newton-CG) for L2 logistic regression.

    The intercept is the last coordinate: ``X [B, n, d1]`` ends with a column of ones and
    ``D [B, K, d1]`` ends with 0 (unpenalised). ``Mw [K, n]`` are row weights (fit mask / n_fit),
    ``lam [B, K]``, ``w [B, K, d1]`` the start. Problem (b, k) minimises
    ``Σ_i Mw[k, i] · logloss(y_i, x_i·w) + ½ lam[b, k] Σ_j D[b, k, j] w_j²``.
    Preconditioner: ``V [B, d1, r1]`` orthonormal directions (top eigenvectors of X'X/n and the
    intercept axis) with curvatures ``S [B, r1]`` (× the current mean Hessian weight, + lam where
    ``lmask`` is 1), the rest of the space at the mean remaining eigenvalue ``stail [B]``.
    Stops each problem when its Newton decrement² falls below ``dec_tol``.
    Returns w and Z = w X' ([B, K, n]).
    """
    B, n, d1 = X.shape
    K = Mw.shape[0]
    Xt = X.transpose(1, 2)
    Wrow = Mw[None]  # [1, K, n]
    yk = y[None, None, :]
    sgn = 1.0 - 2.0 * yk
    lamD = lam[:, :, None] * D
    w = w.clone()
    Z = torch.bmm(w, Xt)
    Vt = V.transpose(1, 2)

    def objective(Zt, wt):
        loss = (torch.nn.functional.softplus(sgn * Zt) * Wrow).double().sum(2)
        return loss + 0.5 * (lamD * wt * wt).double().sum(2)

    active = torch.ones(B, K, dtype=torch.bool)
    f = None
    zero = torch.zeros(B, K)
    for _ in range(max_newton):
        stats["newton"] += 1
        p = torch.sigmoid(Z)
        g = torch.baddbmm(lamD * w, Wrow * (p - yk), X)
        Wt = Wrow * p * (1.0 - p)
        cbar = Wt.sum(2).clamp_min(1e-12)  # mean Hessian weight
        inv_tau = (1.0 / (cbar * stail[:, None] + lam).clamp_min(1e-12))[:, :, None]
        dtop = 1.0 / (cbar[:, :, None] * S[:, None, :] + lam[:, :, None] * lmask) - inv_tau

        def precond(r):
            return torch.baddbmm(r * inv_tau, torch.bmm(r, V).mul_(dtop), Vt)

        af = active.float()
        r = g.mul_(-af[:, :, None])  # r = -g (inactive problems: 0)
        neg_g = r.clone()
        z = precond(r)
        rz = torch.linalg.vecdot(r, z)
        delta = rz.clamp_min(0).sqrt()
        eta = torch.clamp(torch.maximum(delta.sqrt(), 0.3 * math.sqrt(dec_tol) / delta.clamp_min(1e-30)), max=0.5)
        stop2 = eta * eta * rz
        s = torch.zeros_like(w)
        Xs = torch.zeros_like(Z)
        pdir = z
        on = active & (rz > 0)
        for _j in range(max_cg):
            Xp = torch.bmm(pdir, Xt)
            Hp = torch.baddbmm(lamD * pdir, Wt * Xp, X)
            pHp = torch.linalg.vecdot(pdir, Hp)
            on = on & (pHp > 0)
            alpha = torch.where(on, rz / pHp.clamp_min(1e-30), zero)[:, :, None]
            s.addcmul_(alpha, pdir)
            Xs.addcmul_(alpha, Xp)
            r.addcmul_(alpha, Hp, value=-1.0)
            stats["cg"] += 1
            z = precond(r)
            rz_new = torch.linalg.vecdot(r, z)
            on = on & (rz_new > stop2)
            if not bool(on.any()):
                break
            beta = torch.where(on, rz_new / rz.clamp_min(1e-30), zero)[:, :, None]
            rz = rz_new
            pdir = torch.addcmul(z, beta, pdir)
        dec = torch.linalg.vecdot(neg_g, s).clamp_min(0)  # Newton decrement² -g·s (= s'Hs for CG iterates)
        t = af
        need = active & (dec > 0.01)
        if bool(need.any()):  # damped steps far from the optimum (Armijo backtracking, float64 loss)
            if f is None:
                f = objective(Z, w)
            td = torch.ones(B, K, dtype=torch.float64)
            decd = dec.double()
            for _ls in range(30):
                tf = td.float()[:, :, None]
                fn = objective(Z + tf * Xs, w + tf * s)
                good = (fn <= f - 1e-4 * td * decd) | ~need
                if bool(good.all()):
                    break
                td = torch.where(good, td, td * 0.5)
            t = td.float() * af
        t3 = t[:, :, None]
        w.addcmul_(t3, s)
        Z.addcmul_(t3, Xs)
        if f is not None:
            f = objective(Z, w)
        active = active & (dec > dec_tol)
        if not bool(active.any()):
            break
    stats["not_converged"] += int(active.sum())
    return w, Z


def _top_eig(X, r, gen, oversample=16, power=1):
    """Approximate top-r eigenpairs of X'X/n per batch (randomised subspace iteration)."""
    B, n, d = X.shape
    m = min(d, r + oversample)
    r = min(r, m)
    if r == 0:
        return torch.zeros(B, d, 0), torch.zeros(B, 0)
    Om = torch.randn(B, d, m, generator=gen)
    Xt = X.transpose(1, 2)
    Q = torch.linalg.qr(Xt @ (X @ Om)).Q
    for _ in range(power):
        Q = torch.linalg.qr(Xt @ (X @ Q)).Q
    XQ = X @ Q
    T = XQ.transpose(1, 2) @ XQ / n
    T = 0.5 * (T + T.transpose(1, 2))
    e, U = torch.linalg.eigh(T.double())
    e = e.float().flip(-1)[:, :r].clamp_min(0)
    Vr = (Q @ U.float().flip(-1))[:, :, :r]
    Vr = torch.nan_to_num(Vr)
    return Vr.contiguous(), torch.nan_to_num(e)


def _auroc_rows(S: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AUROC (average ranks) of each row of S [m, n] against labels y [n]; NaN if one class."""
    y = np.asarray(y, dtype=bool)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return np.full(S.shape[0], np.nan)
    R = rankdata(S, method="average", axis=1)
    return (R[:, y].sum(1) - n1 * (n1 + 1) / 2.0) / (n1 * n0)


# ----------------------------------------------------------------------------- input handling
class _Source:
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


# ----------------------------------------------------------------------------- main
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
    """
    t_start = time.perf_counter()
    src = _Source(X, positions)
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
    used = np.concatenate([tr, other])
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
            fit_rows, rows_cv = _fit_all(src, probes, y, tr, other, k_folds, Cs, order, seed, tol, cv_tol,
                                         max_newton, max_cg, rank, chunk, workers, oof, coef, intercept, fold_of,
                                         info, progress, g_tr)
        finally:
            if threads is not None:
                torch.set_num_threads(prev_threads)

    # ---- eval metrics (one batched bootstrap over all probes: metrics.bootstrap_metrics_batch)
    y_ev = y[ev]
    rows = []
    nan = float("nan")
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


def _fit_all(src, probes, y, tr, other, k_folds, Cs, order, seed, tol, cv_tol, max_newton, max_cg, rank,
             chunk, workers, oof, coef, intercept, fold_of, info, progress, g_tr=None):
    n_tr = tr.size
    d = src.d
    y_tr = y[tr]
    fid = stratified_folds(y_tr, k_folds, seed, groups=g_tr)
    fold_of[tr] = fid
    # problems: the k fold models, the full refit (index k), then -- for nested cross-fitting --
    # one model per pair of folds {f, g}, fitted without both: it is the inner-CV model of outer
    # fold f scored on inner fold g (and of outer fold g scored on f)
    nested = k_folds >= 3 and len(Cs) > 1
    pairs = [(f, g) for f in range(k_folds) for g in range(f + 1, k_folds)] if nested else []
    G = k_folds + 1 + len(pairs)
    masks = np.ones((G, n_tr), dtype=np.float32)
    for f in range(k_folds):
        masks[f, fid == f] = 0.0
    for j, (f, g) in enumerate(pairs):
        masks[k_folds + 1 + j, (fid == f) | (fid == g)] = 0.0
    n_fit = masks.sum(1)  # rows each problem is fitted on
    base = (masks @ y_tr.astype(np.float64)) / n_fit
    used = np.concatenate([tr, other])
    if chunk is None:  # small chunks: each probe's matrix stays in cache across CG iterations
        chunk = int(max(1, min(4, (24 << 20) // max(1, used.size * d * 4))))
    ctx = dict(
        src=src, n_tr=n_tr, d=d, y_tr=y_tr, G=G, k=k_folds, n_fit=n_fit, used=used, pairs=pairs,
        held_rows=[np.flatnonzero(masks[g] == 0) for g in range(G)],
        Mw=torch.from_numpy(masks / n_fit[:, None]), heldout=[np.flatnonzero(fid == f) for f in range(k_folds)],
        yt=torch.from_numpy(y_tr.astype(np.float32)),
        b0=torch.from_numpy(np.log(base / (1 - base)).astype(np.float32)),
        Cs=Cs, order=order, seed=int(seed), tol=tol, cv_tol=cv_tol, max_newton=max_newton, max_cg=max_cg,
        rank=rank,
    )
    # group by position so each chunk reads one position's contiguous layer range
    by_pos: dict[int, list[int]] = {}
    for l, pi in probes:
        by_pos.setdefault(pi, []).append(l)
    jobs = [(j, pi, ls[i:i + chunk]) for j, (pi, ls, i) in
            enumerate((pi, ls, i) for pi, ls in by_pos.items() for i in range(0, len(ls), chunk))]
    t_fit = time.perf_counter()
    results = []
    done = 0

    def finish(res):
        nonlocal done
        pi, ls = res["pi"], res["ls"]
        for bi, l in enumerate(ls):
            oof[tr, l, pi] = res["p_tr"][bi]
            oof[other, l, pi] = res["p_other"][bi]
            coef[l, pi] = res["coef"][bi]
            intercept[l, pi] = res["intercept"][bi]
        results.append(res)
        done += len(ls)
        if progress:
            progress(done, len(probes), "fitting probes")

    if workers <= 1 or len(jobs) == 1:
        for job in jobs:
            finish(_fit_chunk(ctx, *job))
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as ex:
            for res in ex.map(lambda job: _fit_chunk(ctx, *job), jobs):
                finish(res)
    results.sort(key=lambda r: r["job"])
    fit_rows, rows_cv = [], []
    stats = dict(newton=0, cg=0, not_converged=0, cg_polish=0)
    cg_by_c = np.zeros(len(Cs), dtype=int)
    for res in results:
        fit_rows += res["fit_rows"]
        rows_cv += res["rows_cv"]
        for k in stats:
            stats[k] += res["stats"][k]
        cg_by_c += res["cg_by_c"]
    info.update(newton_iterations=stats["newton"], cg_iterations=stats["cg"], not_converged=stats["not_converged"],
                cg_by_stage={"+".join(str(Cs[i]) for i in order[j:j + _C_PER_STAGE]): int(cg_by_c[order[j]])
                             for j in range(0, len(order), _C_PER_STAGE)}, cg_polish=stats["cg_polish"],
                fit_seconds=round(time.perf_counter() - t_fit, 3), chunk=chunk, workers=workers, rank=rank,
                nested=bool(nested), inner_problems=len(pairs))
    return fit_rows, rows_cv


def _fit_chunk(ctx, job, pi, ls):
    """Fit every probe of one chunk (one position, a few layers); pure function of its inputs."""
    src, n_tr, d, G, k_folds = ctx["src"], ctx["n_tr"], ctx["d"], ctx["G"], ctx["k"]
    y_tr, yt, Mw, heldout, n_fit = ctx["y_tr"], ctx["yt"], ctx["Mw"], ctx["heldout"], ctx["n_fit"]
    Cs, order, max_newton, max_cg = ctx["Cs"], ctx["order"], ctx["max_newton"], ctx["max_cg"]
    used = ctx["used"]
    stats = dict(newton=0, cg=0, not_converged=0, cg_polish=0)
    cg_by_c = np.zeros(len(Cs), dtype=int)
    raw = src.block(pi, ls, used)  # [B, n_used, d] float32, train rows first
    if not np.isfinite(raw).all():
        bad = sorted({int(used[r]) for r in np.argwhere(~np.isfinite(raw))[:, 1][:5]})
        raise ValueError(f"non-finite activations at position {src.positions[pi]!r} (rows {bad} ...); "
                         "exclude those rows via split")
    Xu = torch.from_numpy(raw)
    B = Xu.shape[0]
    Xtr = Xu[:, :n_tr]
    mu = Xtr.mean(1, keepdim=True)
    var = (Xtr - mu).square_().mean(1, keepdim=True)
    # constant on the train rows (to rounding) -> scale 1, as StandardScaler does
    const = var <= 1e-12 * torch.clamp(mu * mu, min=1.0)
    sd = torch.where(const, torch.ones_like(var), var.sqrt())
    # train rows standardised with the train statistics, plus the intercept's all-ones column
    X1 = torch.empty(B, n_tr, d + 1)
    Xtr = X1[:, :, :d]
    torch.sub(Xu[:, :n_tr], mu, out=Xtr).div_(sd)
    Xtr.masked_fill_(const.expand(B, n_tr, d), 0.0)  # exactly 0 on the train rows
    X1[:, :, d] = 1.0
    Xot = Xu[:, n_tr:].sub_(mu).div_(sd)  # calibration + eval rows, same statistics
    # fold penalties D = variance, on each fold's fit rows, of the train-standardised features
    # (the whole train split has mean 0 and variance 1, so only held-out sums are needed)
    Dl = []
    for g in range(G):
        if g != k_folds:
            h = Xtr[:, ctx["held_rows"][g]]
            nf = float(n_fit[g])
            m1 = -h.sum(1) / nf
            vf = (n_tr - h.square().sum(1)) / nf - m1 * m1
            vf = torch.where(const[:, 0], torch.zeros_like(vf), vf)
        else:
            vf = (~const[:, 0]).float()
        Dl.append(torch.where(vf <= 1e-6, torch.ones_like(vf), vf))
    D1 = torch.cat([torch.stack(Dl, 1), torch.zeros(B, G, 1)], 2)  # intercept: unpenalised
    gen = torch.Generator().manual_seed(ctx["seed"] * 1_000_003 + job)  # per chunk: thread-order free
    V, S = _top_eig(Xtr, ctx["rank"], gen)
    V.masked_fill_(const[:, 0, :, None].expand_as(V), 0.0)  # constant features stay exactly 0
    rr = V.shape[2]
    trace = (~const[:, 0]).float().sum(1)  # = trace of X'X / n for standardised features
    stail = ((trace - S.sum(1)) / max(d - rr, 1)).clamp_min(0) if rr < d else torch.zeros(B)
    # preconditioner directions: the top eigenvectors and the intercept axis
    V1 = torch.zeros(B, d + 1, rr + 1)
    V1[:, :d, :rr] = V
    V1[:, d, rr] = 1.0
    S1 = torch.cat([S, torch.ones(B, 1)], 1)
    lmask = torch.ones(rr + 1)
    lmask[rr] = 0.0
    # ---- C path, strongest regularisation first, each C warm-started from the previous one
    # (the full refit rides along: its warm start along the path is what makes it cheap)
    w = torch.zeros(B, G, d + 1)
    w[:, :, d] = ctx["b0"][None]
    nfit_t = torch.from_numpy(n_fit.astype(np.float32))
    cvs = np.full((B, len(Cs)), np.nan)
    cvsd = np.full((B, len(Cs)), np.nan)
    pairs = ctx["pairs"]
    inner = np.full((B, k_folds, len(Cs)), np.nan)  # inner-CV AUROC of outer fold f at each C
    sols = {}
    # The C grid is walked in stages of _C_PER_STAGE values (ascending), all warm-started from the
    # last solution of the previous stage: wider batched products cost little more than narrow ones.
    stages = [list(order[i:i + _C_PER_STAGE]) for i in range(0, len(order), _C_PER_STAGE)]
    for st in stages:
        m = len(st)
        lam = torch.cat([(1.0 / (Cs[ci] * nfit_t))[None].expand(B, G) for ci in st], 1).contiguous()
        cg0 = stats["cg"]
        w_all, Z_all = _newton_cg(X1, yt, Mw.repeat(m, 1), lam, D1.repeat(1, m, 1), w.repeat(1, m, 1), V1, S1,
                                  lmask, stail, ctx["cv_tol"], max_newton, max_cg, stats)
        for ci in st:
            cg_by_c[ci] += stats["cg"] - cg0  # shared by the stage's Cs
        for j, ci in enumerate(st):
            w = w_all[:, j * G:(j + 1) * G].contiguous()
            sols[ci] = w
            Zc = Z_all[:, j * G:(j + 1) * G].numpy()
            fa = _fold_aurocs(Zc, heldout, y_tr)  # [B, k]
            cvs[:, ci] = fa.mean(1)
            cvsd[:, ci] = fa.std(1)
            if pairs:  # inner CV of outer fold f: pair models {f, g} scored on fold g, g != f
                pa = np.empty((B, k_folds, k_folds - 1))
                cnt = np.zeros(k_folds, dtype=int)
                for q, (f, g) in enumerate(pairs):
                    zq = Zc[:, k_folds + 1 + q]
                    pa[:, f, cnt[f]] = _auroc_rows(zq[:, heldout[g]], y_tr[heldout[g]])
                    pa[:, g, cnt[g]] = _auroc_rows(zq[:, heldout[f]], y_tr[heldout[f]])
                    cnt[f] += 1
                    cnt[g] += 1
                inner[:, :, ci] = pa.mean(2)
    # choose C for the full refit: highest mean outer-fold AUROC (train rows only; ties -> smaller C);
    # for each outer fold f (nested): highest inner-CV AUROC on fold f's training rows only
    chosen = np.array([_choose_c(cvs[bi], order) for bi in range(B)], dtype=int)
    chosen_f = np.empty((B, k_folds), dtype=int)
    for bi in range(B):
        for f in range(k_folds):
            chosen_f[bi, f] = _choose_c(inner[bi, f], order) if pairs else chosen[bi]
    # ---- polish the chosen Cs (fold f at its own C, the full refit at the outer-CV C)
    G1 = k_folds + 1
    ch = np.concatenate([chosen_f, chosen[:, None]], 1)  # [B, k + 1]
    w0 = torch.stack([torch.stack([sols[ch[bi, g]][bi, g] for g in range(G1)]) for bi in range(B)])
    Cb = torch.tensor([[Cs[c] for c in row] for row in ch], dtype=torch.float32)
    lam = 1.0 / (Cb * nfit_t[None, :G1])
    cg0 = stats["cg"]
    w, Z = _newton_cg(X1, yt, Mw[:G1].contiguous(), lam, D1[:, :G1].contiguous(), w0, V1, S1, lmask, stail,
                      ctx["tol"], max_newton, max_cg, stats)
    stats["cg_polish"] += stats["cg"] - cg0
    Zn = Z.numpy().astype(np.float64)
    fa = _fold_aurocs(Zn, heldout, y_tr)  # each outer fold's model at its own (nested) C
    wf = w[:, k_folds]  # full refit [B, d + 1]
    pz = torch.baddbmm(wf[:, None, d:], Xot, wf[:, :d, None])[:, :, 0]
    p_other = torch.sigmoid(pz).numpy()
    sdn = sd[:, 0].double().numpy()
    mun = mu[:, 0].double().numpy()
    p_tr = np.empty((B, n_tr))
    for f in range(k_folds):
        h = heldout[f]
        p_tr[:, h] = 1.0 / (1.0 + np.exp(-Zn[:, f, h]))
    coefs = wf[:, :d].double().numpy() / sdn
    icpt = wf[:, d].double().numpy() - np.einsum("bd,bd->b", coefs, mun)
    fit_rows, rows_cv = [], []
    for bi, l in enumerate(ls):
        # cv_auroc: the nested cross-fitted AUROC (every train row predicted by a model whose C was
        # chosen without it), the number the best-probe selection uses
        fit_rows.append((l, pi, Cs[chosen[bi]], float(fa[bi].mean())))
        for ci in range(len(Cs)):
            rows_cv.append(dict(layer=l, position=src.positions[pi], C=Cs[ci], cv_auroc=float(cvs[bi, ci]),
                                cv_auroc_sd=float(cvsd[bi, ci]), chosen=bool(ci == chosen[bi])))
    return dict(job=job, pi=pi, ls=ls, p_tr=p_tr, p_other=p_other, coef=coefs, intercept=icpt,
                fit_rows=fit_rows, rows_cv=rows_cv, stats=stats, cg_by_c=cg_by_c)


def _choose_c(vals: np.ndarray, order) -> int:
    """Index of the C with the highest finite score, walking ``order`` (ascending C): ties -> smaller C."""
    best_ci, best_val = None, -np.inf
    for ci in order:
        val = vals[ci]
        if np.isfinite(val) and val > best_val + 1e-12:
            best_ci, best_val = ci, val
    return int(order[0] if best_ci is None else best_ci)


def _fold_aurocs(Z: np.ndarray, heldout, y_tr) -> np.ndarray:
    """[B, k]: held-out AUROC of fold f's model (Z[:, f]) on fold f's rows."""
    out = np.empty((Z.shape[0], len(heldout)))
    for f, h in enumerate(heldout):
        out[:, f] = _auroc_rows(Z[:, f, h], y_tr[h])
    return out


# ----------------------------------------------------------------------------- selection null
SELECTION_NULL_DOC = (
    "Permutation null of the best-probe selection: the train labels are shuffled n_perm times "
    "(numpy default_rng(seed + 7919), the same permutations for every cell; with grouped facts whole "
    "groups are permuted among groups of the same size) and for the observed "
    "and each shuffled label vector the statistic T = max over all probed (layer, position) cells "
    "and every C of the grid of the K-fold CV AUROC (train split, the probes' own folds) of the "
    "one-step logistic probe -- the first Newton step from w = 0 of the L2 logistic probe at C, i.e. "
    "ridge regression with an unpenalised intercept on the train-standardised features with penalty "
    "1/(C p(1-p)), p = train accuracy -- is computed exactly (closed form, linear in the labels, so all permutations cost "
    "one matrix product). p = (1 + #{T_perm >= T_obs}) / (1 + n_perm). The one-step probe stands in "
    "for the fitted logistic probe so the whole selection can be redone for every permutation; "
    "the observed T uses the same surrogate, so p is an exact permutation p-value for it."
)


def selection_null(X, y, split, *, positions: Sequence | None = None, layers: Sequence[int] | None = None,
                   Cs: Sequence[float] = DEFAULT_CS, folds: int = 5, seed: int = 0, n_perm: int = 100,
                   fold: np.ndarray | None = None, path: str = "auto", groups: Sequence | None = None) -> dict | None:
    """Permutation null of the maximum CV AUROC over all probes (see :data:`SELECTION_NULL_DOC`).

    ``X``, ``y``, ``split``, ``positions``, ``layers``, ``Cs``, ``folds``, ``seed`` as in
    :func:`fit_probes` (``fold``: the train rows' fold ids, default :func:`stratified_folds`;
    ``path``: "dual" / "primal" / "auto" = whichever is cheaper; both compute the same numbers;
    ``groups``: one label per item (or per train row): when a group has several train rows, whole
    groups' label vectors are permuted among groups of the same size, which keeps the correlation
    of a fact's items under the null).
    Only train rows are read. A fold whose held-out rows have one class (under a permutation) is
    left out of that label vector's mean over folds. Returns ``dict(statistic, observed, null
    (n_perm floats), mean, p95, p, n_perm, n_cells, seed)`` (``n_perm``: permutations with a
    defined statistic), or None when the train split cannot be cross-validated (fewer than 2 items
    in a class), ``n_perm < 1``, or no statistic is defined.
    """
    src = X if isinstance(X, _Source) else _Source(X, positions)
    y = np.asarray(y).astype(bool)
    split = np.asarray(split).astype(str)
    tr = np.flatnonzero(split == "train")
    y_tr = y[tr]
    n_min = int(min(y_tr.sum(), tr.size - y_tr.sum())) if tr.size else 0
    k = min(int(folds), n_min)
    if k < 2 or n_perm < 1:
        return None
    fid = stratified_folds(y_tr, k, seed) if fold is None else np.asarray(fold)[tr] if len(fold) == y.size else np.asarray(fold)
    layers = list(range(src.L)) if layers is None else sorted({int(l) for l in layers})
    rng = np.random.default_rng(seed + 7919)
    Y = np.empty((tr.size, n_perm + 1))
    Y[:, 0] = y_tr
    blocks = None
    if groups is not None:  # facts asked several ways: permute whole groups among groups of the same size
        g_tr = np.asarray(groups, dtype=object)[tr] if len(groups) == y.size else np.asarray(groups, dtype=object)
        codes, _ = pd.factorize(pd.Series(g_tr).astype(str))
        members = [np.flatnonzero(codes == c) for c in range(codes.max() + 1)] if codes.size else []
        if any(len(m) > 1 for m in members):
            blocks = {}
            for m in members:
                blocks.setdefault(len(m), []).append(m)
    for j in range(n_perm):
        if blocks is None:
            Y[:, j + 1] = y_tr[rng.permutation(tr.size)]
        else:
            for size, ms in blocks.items():
                src_rows = np.stack(ms)  # [n_groups of this size, size]
                Y[src_rows, j + 1] = y_tr[src_rows[rng.permutation(len(ms))]]
    pbar = float(y_tr.mean())
    lams = [1.0 / (float(C) * pbar * (1.0 - pbar)) for C in Cs]
    held = [np.flatnonzero(fid == f) for f in range(k)]
    fit = [np.flatnonzero(fid != f) for f in range(k)]
    Yt = torch.from_numpy(Y)
    best = np.full(n_perm + 1, -np.inf)
    n_cells = 0
    yh = [Y[h] for h in held]
    n1 = [v.sum(0) for v in yh]
    ok = [(a > 0) & (a < v.shape[0]) for a, v in zip(n1, yh)]  # a fold with one class has no AUROC
    cnt = np.sum(ok, axis=0)
    for pi in range(len(src.positions)):
        for i0 in range(0, len(layers), 4):
            ls = layers[i0:i0 + 4]
            raw = torch.from_numpy(src.block(pi, ls, tr)).double()  # [B, n_tr, d]
            if not torch.isfinite(raw).all():
                raise ValueError(f"non-finite activations at position {src.positions[pi]!r}")
            B = raw.shape[0]
            n_cells += B
            auc = np.zeros((B, len(Cs), n_perm + 1))
            for f, ci, pred in _one_step_preds(raw, fit, held, Yt, lams, path):
                with np.errstate(invalid="ignore", divide="ignore"):
                    a = _auroc_cols(pred, yh[f], n1[f])
                auc[:, ci] += np.where(ok[f], a, 0.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                best = np.fmax(best, (auc / np.where(cnt > 0, cnt, np.nan)).max(axis=(0, 1)))
    best[~np.isfinite(best)] = np.nan
    obs, null = float(best[0]), best[1:]
    null = null[np.isfinite(null)]
    if not np.isfinite(obs) or null.size == 0:
        return None
    return dict(
        statistic="max over (layer, position, C) of the train-split CV AUROC of the one-step logistic probe",
        observed=obs, null=[round(float(v), 6) for v in null], mean=float(np.mean(null)),
        p95=float(np.quantile(null, 0.95)), p=float((1 + np.sum(null >= obs - 1e-12)) / (1 + null.size)),
        n_perm=int(null.size), n_cells=int(n_cells), folds=int(k), seed=int(seed),
    )


def _one_step_preds(raw, fit, held, Yt, lams, path="auto"):
    """Held-out predictions of the one-step (ridge) probe for every fold f and penalty lams[ci]:
    yields ``(f, ci, pred [B, n_held_f, P1] numpy)`` for all label columns of ``Yt [n, P1]`` at once.

    Features are standardised with the train rows' mean and sd (constant -> 0); fold f's model is
    ridge with an unpenalised intercept on its fit rows: w = (Xc'Xc + lam I)^-1 Xc' y, Xc the fit
    rows centred on their own mean (predictions are ranked, so the intercept is irrelevant).
    Dual (n_fit <= d; float64): K = Xc Xc' per fold, one eigh each. Primal (float32): one eigh of
    the train Gram X'X per cell, and each fold's (X'X - U'U + lam I)^-1 (U = the held rows and the
    fit mean, a rank n_held + 1 downdate) by the Woodbury identity.
    """
    B, n, d = raw.shape
    mu = raw.mean(1, keepdim=True)
    var = (raw - mu).square().mean(1, keepdim=True)
    const = var <= 1e-12 * torch.clamp(mu * mu, min=1.0)
    X = ((raw - mu) / torch.where(const, torch.ones_like(var), var.sqrt())).masked_fill(const, 0.0)
    nf_max = max(len(fr) for fr in fit)
    if path == "dual" or (path == "auto" and nf_max <= d):
        for f, (fr, hr) in enumerate(zip(fit, held)):
            XF, XH = X[:, fr], X[:, hr]
            m = XF.mean(1, keepdim=True)
            XF = XF - m
            e, U = torch.linalg.eigh(XF @ XF.transpose(1, 2))
            e = e.clamp_min(0)
            A = ((XH - m) @ XF.transpose(1, 2)) @ U  # [B, nH, nF]
            BY = U.transpose(1, 2) @ Yt[fr]  # [B, nF, P1]
            for ci, lam in enumerate(lams):
                yield f, ci, ((A / (e + lam)[:, None, :]) @ BY).numpy()
        return
    # primal in float32 (standardised in float64 first): twice as fast as float64, and on the
    # benchmark problem (900 train rows, d = 576) every null AUROC within 1.2e-4 of float64
    X = X.float()
    Yt = Yt.float()
    e, V = torch.linalg.eigh(X.transpose(1, 2) @ X)  # the train Gram (train means are 0)
    e = e.clamp_min(0)
    XV = X @ V  # [B, n, d]: every row in the eigenbasis
    b_all = XV.transpose(1, 2) @ Yt  # [B, d, P1]
    ysum = Yt.sum(0)
    for f, (fr, hr) in enumerate(zip(fit, held)):
        nF = len(fr)
        XH = XV[:, hr]  # [B, nH, d]
        muF = -XH.sum(1) / nF  # fit-row mean (all train rows have mean 0)
        Uf = torch.cat([XH, math.sqrt(nF) * muF[:, None, :]], 1)  # Xc'Xc = X'X - Uf'Uf
        yF = ysum - Yt[hr].sum(0)
        bF = b_all - XH.transpose(1, 2) @ Yt[hr] - muF[:, :, None] * yF[None, None, :]  # Xc' y (eigenbasis)
        eye = torch.eye(Uf.shape[1], dtype=Uf.dtype)
        for ci, lam in enumerate(lams):
            dinv = 1.0 / (e + lam)  # [B, d]
            z = bF * dinv[:, :, None]
            M = eye - (Uf * dinv[:, None, :]) @ Uf.transpose(1, 2)
            t = torch.linalg.solve(M, Uf @ z)
            w = z + dinv[:, :, None] * (Uf.transpose(1, 2) @ t)
            yield f, ci, (XH @ w).numpy()


def _auroc_cols(pred: np.ndarray, yh: np.ndarray, n1: np.ndarray) -> np.ndarray:
    """AUROC of ``pred [B, m, P]`` along axis 1 against labels ``yh [m, P]`` (column p's labels
    for pred[:, :, p]); average ranks for ties (exact; fast ordinal ranks when a slab has none)."""
    m = pred.shape[1]
    o = np.argsort(pred, axis=1, kind="stable")
    sv = np.take_along_axis(pred, o, axis=1)
    if m > 1 and np.any(sv[:, 1:] == sv[:, :-1]):
        R = rankdata(pred, method="average", axis=1)
    else:
        R = np.empty_like(pred)
        np.put_along_axis(R, o, np.arange(1, m + 1, dtype=float)[None, :, None], axis=1)
    n0 = m - n1
    return ((R * yh[None]).sum(1) - n1 * (n1 + 1) / 2.0) / (n1 * n0)


# ----------------------------------------------------------------------------- synthetic data
def make_synthetic(n: int = 1500, n_layers: int = 31, n_positions: int = 4, d: int = 576, seed: int = 0,
                   dtype=np.float16, constant_layer0: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Activation-like test data ``(X [n, L, P, d], y [n])``: a power-law covariance spectrum
    (eigenvalues ~ 1/i) in a random basis, factors shared across layers and positions, a few
    massive dimensions, a correctness signal whose strength grows with depth and position, and
    (optionally) layer 0 of position 0 constant across items, like the embedding of a fixed
    prompt token. Deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=n)
    y = rng.random(n) < 1.0 / (1.0 + np.exp(-(0.9 + 1.6 * u)))
    k = min(64, d)
    shared = rng.normal(size=(n, k))
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0].astype(np.float32)
    scales = (np.arange(1, d + 1) ** -0.5).astype(np.float32) * 3.0
    X = np.empty((n, n_layers, n_positions, d), dtype=dtype)
    for l in range(n_layers):
        for p in range(n_positions):
            r = np.random.default_rng([seed, l, p])
            lat = r.standard_normal(size=(n, d), dtype=np.float32)
            lat[:, :k] = shared * 0.7 + lat[:, :k] * 0.3
            perm = r.permutation(d)
            f = ((lat * scales) @ Q)[:, perm] * r.choice(np.array([-1.0, 1.0], np.float32), size=d)
            sdir = r.normal(size=d)
            sdir /= np.linalg.norm(sdir)
            f += (0.6 * (l / max(n_layers, 1)) * (1 + p) / 2 * u[:, None] * sdir).astype(np.float32)
            f[:, : min(3, d)] *= 30.0
            f += r.normal(size=d).astype(np.float32) * 2.0
            if constant_layer0 and l == 0 and p == 0:
                f[:] = f[0]
            X[:, l, p] = f
    return X, y
