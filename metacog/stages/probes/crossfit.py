"""Nested cross-fitting of chunks of probes over the C grid: fold and pair models solved together,
C chosen by (nested) CV on the train rows only, out-of-fold predictions and the full-train refit.
See :mod:`metacog.stages.probes` ("What is fitted, exactly") for the rules."""
from __future__ import annotations

import time

import numpy as np
import torch

from metacog.stages.probes.inputs import stratified_folds
from metacog.stages.probes.solver import newton_cg, top_eig
from metacog.stats.metrics import auroc_along

_C_PER_STAGE = 2



def fit_all(src, probes, y, tr, other, k_folds, Cs, order, seed, tol, cv_tol, max_newton, max_cg, rank,
             chunk, workers, oof, coef, intercept, fold_of, info, progress, g_tr=None):
    """Fit every probe of ``probes`` (``(layer, position index)`` pairs) by nested cross-fitting over
    the C grid, filling ``oof`` ``[n_items, n_layers, n_positions]``, ``coef`` ``[n_layers,
    n_positions, d]``, ``intercept`` and ``fold_of`` in place and ``info`` with solver counts.
    Chunks of probes run on ``workers`` threads (results do not depend on it). Returns ``(fit_rows,
    rows_cv)``: ``(layer, position index, chosen C, nested cv_auroc)`` per probe and one dict per
    (probe, C) of the CV grid."""
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
    V, S = top_eig(Xtr, ctx["rank"], gen)
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
        w_all, Z_all = newton_cg(X1, yt, Mw.repeat(m, 1), lam, D1.repeat(1, m, 1), w.repeat(1, m, 1), V1, S1,
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
                    pa[:, f, cnt[f]] = auroc_along(zq[:, heldout[g]], y_tr[heldout[g]])
                    pa[:, g, cnt[g]] = auroc_along(zq[:, heldout[f]], y_tr[heldout[f]])
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
    w, Z = newton_cg(X1, yt, Mw[:G1].contiguous(), lam, D1[:, :G1].contiguous(), w0, V1, S1, lmask, stail,
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
        out[:, f] = auroc_along(Z[:, f, h], y_tr[h])
    return out

