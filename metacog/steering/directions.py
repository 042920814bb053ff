"""Steering directions: one unit vector ``d̂`` per (direction, hidden-state index h) and the
spread σ_d of the train states along it, all from the **train split** only (docs/STEERING.md).

- ``probe``: the probe's weight vector ``coef[h, position]`` (raw residual-stream units), normalised;
- ``mean-diff``: mean(correct) − mean(incorrect) of the train states at (h, position);
- ``random``: a seeded Gaussian direction (the control), applied with the probe's σ (matched norm);
- ``probe-minus-type``: the probe direction with the question-type subspace projected out."""
from __future__ import annotations

import numpy as np
import pandas as pd

from metacog.core.settings import INLINE_POSITIONS
from metacog.core.workspace import Workspace, WorkspaceError
from metacog.core.files import load_array


DIRECTIONS = ("probe", "mean-diff", "random", "probe-minus-type")


def unit(v) -> np.ndarray:
    """``v / ||v||`` (float64); raises ValueError for a zero or non-finite vector."""
    v = np.asarray(v, dtype=np.float64).ravel()
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n == 0.0:
        raise ValueError("cannot normalise a zero or non-finite direction")
    return v / n


def probe_direction(coef) -> np.ndarray:
    """The probe's weight vector (raw residual units, ``[d]``) as a unit vector."""
    return unit(coef)


def mean_diff_direction(X, y) -> np.ndarray:
    """unit(mean(X[y]) − mean(X[~y])); X ``[n, d]``, y bool ``[n]``; needs both classes.

    Raises:
        ValueError: ``y`` has one class only.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        raise ValueError("mean-diff needs correct and incorrect train items (one class only)")
    return unit(X[y].mean(0) - X[~y].mean(0))


def random_direction(d: int, seed: int, layer: int) -> np.ndarray:
    """A seeded standard-Gaussian direction in R^d, normalised (one per (seed, layer))."""
    rng = np.random.default_rng([int(seed), int(layer), 17])
    return unit(rng.standard_normal(int(d)))


def type_subspace(X, categories, tol: float = 1e-8) -> np.ndarray:
    """Orthonormal basis ``[k, d]`` of the span of the category mean differences
    mean(X[category c]) − mean(X) over the categories present (k ≤ n_categories − 1; empty
    ``[0, d]`` with fewer than two categories). Basis by SVD, singular values below
    ``tol`` × the largest dropped."""
    X = np.asarray(X, dtype=np.float64)
    cats = np.asarray(categories, dtype=object)
    u = pd.unique(cats)
    if len(u) < 2:
        return np.zeros((0, X.shape[1]))
    mu = X.mean(0)
    M = np.stack([X[cats == c].mean(0) - mu for c in u])
    _, s, vt = np.linalg.svd(M, full_matrices=False)
    keep = s > tol * max(float(s[0]), 1e-300)
    return vt[keep]


def project_out(v, Q) -> np.ndarray:
    """v − Qᵀ(Q v) for an orthonormal basis Q ``[k, d]`` (v unchanged when k = 0)."""
    v = np.asarray(v, dtype=np.float64)
    Q = np.asarray(Q, dtype=np.float64)
    return v - Q.T @ (Q @ v) if len(Q) else v.copy()


def sigma_along(X, d) -> float:
    """Standard deviation (ddof = 1) of the rows of X projected on the unit vector d."""
    z = np.asarray(X, dtype=np.float64) @ np.asarray(d, dtype=np.float64)
    return float(np.std(z, ddof=1)) if len(z) > 1 else float("nan")


def train_states(ws: Workspace, items: pd.DataFrame, answers: pd.DataFrame, position: str):
    """The train split's items (sorted by row), their hidden states at ``position`` float64
    ``[n_train, n_hidden, d_model]`` and correctness ``[n_train]`` bool.

    Raises:
        WorkspaceError: fewer than 4 train items."""
    from metacog.stages.activations import load_states

    tr = items[items["split"] == "train"].sort_values("row")
    if len(tr) < 4:
        raise WorkspaceError(f"steering directions need at least 4 train items; this workspace has {len(tr)}")
    y = answers.set_index("row").loc[tr["row"], "correct"].to_numpy(dtype=bool)
    S = load_states(ws, position)
    return tr, np.asarray(S[tr["row"].to_numpy()], dtype=np.float64), y  # [n_train, H, d]


def load_probe(ws: Workspace) -> tuple[np.ndarray, np.ndarray]:
    """(coef ``[H, P, d]``, intercept ``[H, P]``) float32 from ``probes/``; raises if absent."""
    c, b = ws.path("probes", "coef.npy"), ws.path("probes", "intercept.npy")
    if not c.exists() or not b.exists():
        raise WorkspaceError(f"no probe weights in {ws.root} (probes/coef.npy): run `metacog probes --workspace {ws.root}`")
    return load_array(c), load_array(b)


def compute_directions(ws: Workspace, items: pd.DataFrame, answers: pd.DataFrame, layers, directions,
                       position: str = "confidence", seed: int = 0) -> dict:
    """Unit directions and σ for every (direction, layer), from the train split only.

    Returns ``{"vectors": float64 [n_dir, n_layers, d], "sigma": [n_dir, n_layers] (σ used in
    the intervention), "sigma_own": σ along the direction itself, "norm": ‖raw vector‖ before
    normalising, "cos_probe": cosine with the probe direction, "type_rank": k per layer,
    "max_type_cos": max |cos(d̂, type basis)| per direction × layer}``. ``random`` uses the
    probe direction's σ (matched norm) and has the probe coefficient's norm recorded.

    Raises:
        WorkspaceError: fewer than 4 train items; no probe weights; no probe fitted at a (layer,
            position).
        ValueError: a layer outside ``0..n_hidden-1``; an unknown direction; a zero direction.
    """
    tr, X, y = train_states(ws, items, answers, position)
    coef, _ = load_probe(ws)
    from metacog.stages.study import position_index

    pi = position_index(ws, position, coef[:, :, 0])
    H, d = X.shape[1], X.shape[2]
    nd, nl = len(directions), len(layers)
    V = np.zeros((nd, nl, d))
    sig, sig_own, norm, cosp, tcos = (np.full((nd, nl), np.nan) for _ in range(5))
    trank = []
    for j, h in enumerate(layers):
        if not 0 <= h < H:
            raise ValueError(f"hidden-state index {h} is outside 0..{H - 1}")
        Xh = X[:, h, :]
        c = coef[h, pi].astype(np.float64)
        if not np.all(np.isfinite(c)) or not np.any(c):
            raise WorkspaceError(f"no probe fitted at layer {h}, position {position}")
        pdir = probe_direction(c)
        Q = type_subspace(Xh, tr["category"].to_numpy())
        trank.append(int(len(Q)))
        sp = sigma_along(Xh, pdir)
        for i, k in enumerate(directions):
            if k == "probe":
                v, raw = pdir, float(np.linalg.norm(c))
            elif k == "mean-diff":
                m = Xh[y].mean(0) - Xh[~y].mean(0) if (y.any() and not y.all()) else np.zeros(d)
                v, raw = mean_diff_direction(Xh, y), float(np.linalg.norm(m))
            elif k == "random":
                v, raw = random_direction(d, seed, h), float(np.linalg.norm(c))
            elif k == "probe-minus-type":
                r = project_out(pdir, Q)
                v, raw = unit(r), float(np.linalg.norm(r))
            else:
                raise ValueError(f"unknown direction {k!r}; choose from {', '.join(DIRECTIONS)}")
            V[i, j] = v
            so = sigma_along(Xh, v)
            sig_own[i, j] = so
            sig[i, j] = sp if k == "random" else so
            norm[i, j] = raw
            cosp[i, j] = float(v @ pdir)
            tcos[i, j] = float(np.max(np.abs(Q @ v))) if len(Q) else 0.0
    return {"vectors": V, "sigma": sig, "sigma_own": sig_own, "norm": norm, "cos_probe": cosp, "type_rank": trank,
            "max_type_cos": tcos, "n_train": int(len(tr)), "n_train_correct": int(y.sum())}
