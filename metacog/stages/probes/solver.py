"""Batched float32 torch solver of the probe stage: truncated Newton (Newton-CG) for many L2
logistic regressions at once (:func:`newton_cg`) and its low-rank preconditioner (:func:`top_eig`).
See :mod:`metacog.stages.probes` ("How it is fast") for the method."""
from __future__ import annotations

import math

import torch


def newton_cg(X, y, Mw, lam, D, w, V, S, lmask, stail, dec_tol, max_newton, max_cg, stats):
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


def top_eig(X, r, gen, oversample=16, power=1):
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
