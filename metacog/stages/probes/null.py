"""The permutation null of the best-probe selection (:func:`selection_null`,
:data:`SELECTION_NULL_DOC`) with its closed-form one-step (ridge) probe."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from metacog.stages.probes.inputs import ActivationSource, stratified_folds
from metacog.stages.probes.results import DEFAULT_CS
from metacog.stats.metrics import auroc_along


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

    Raises: ValueError on non-finite activations (or inputs shaped as :func:`fit_probes` refuses).
    """
    src = X if isinstance(X, ActivationSource) else ActivationSource(X, positions)
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
                    a = auroc_along(pred, yh[f][None], axis=1)
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
            t = _solve_each(M, Uf @ z)
            w = z + dinv[:, :, None] * (Uf.transpose(1, 2) @ t)
            yield f, ci, (XH @ w).numpy()


def _solve_each(M: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """``M[i]^-1 R[i]`` for each batch index i (``M`` ``[B, m, m]``, ``R`` ``[B, m, k]``), one 2-D
    solve at a time. A batched ``torch.linalg.solve`` on CPU runs LAPACK getrf for several
    matrices at once from torch's own worker threads once ``torch.set_num_threads`` is above 1,
    and MKL's row swaps are not safe under that: for m above ~150 the pivots come back as
    garbage (MKL "Parameter 6 was incorrect on entry to SLASWP", then "Pivots given to lu_solve
    must all be greater or equal to 1", or wrong numbers; pytorch/pytorch#142815, fix proposed in
    #181570). It crashed the probe stage of the full default study (1,062 train items, folds of
    213, 2 threads). One matrix per call leaves the threading to MKL inside the factorisation."""
    return torch.stack([torch.linalg.solve(M[i], R[i]) for i in range(M.shape[0])])
