"""Pairwise comparisons -> scores: the seeded schedule of matchups, Bradley-Terry and Elo.

Schedule: seeded random permutations of the items, each cut into consecutive pairs, until
``n`` comparisons; so every item meets about 2n/N others, and which one is shown first is
random. Outcomes may be soft (o = P(first wins) in [0, 1]).

Bradley-Terry with an order effect: P(the first shown, i, beats j) = σ(θ_i − θ_j + β), where β
absorbs a position bias (small models pick "1" most of the time). θ, β maximise
Σ_c [o_c log σ(θ_i − θ_j + β) + (1 − o_c) log σ(θ_j − θ_i − β)] − (λ/2) Σ θ² (a Gaussian prior
keeps items that won or lost every match finite and centres θ at 0; β is not penalised).
Score = σ(θ): the probability of beating an average item in a neutral order.

Elo: ratings start at 0; after each comparison (in schedule order), with expected
e = σ(r_i − r_j + β) on the natural-log scale, β = logit(mean outcome) (the same order effect,
estimated once), r_i += K' (o − e), r_j −= K' (o − e), where K' = K · ln(10) / 400 is the usual K
on the 400-point scale. Score = σ(r).

Public entry: :func:`bradley_terry` (and :func:`elo`, :func:`schedule`).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize


def schedule(n_items: int, n_comparisons: int, seed: int) -> np.ndarray:
    """``[n_comparisons, 2]`` indices into the items (first, second).

    Raises:
        ValueError: fewer than two items."""
    if n_items < 2:
        raise ValueError("pairwise comparisons need at least two items")
    rng = np.random.default_rng(seed)
    out = []
    total = 0
    while total < n_comparisons:
        p = rng.permutation(n_items)
        pairs = p[: (n_items // 2) * 2].reshape(-1, 2)
        out.append(pairs)
        total += len(pairs)
    return np.concatenate(out)[:n_comparisons]


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def bradley_terry(n_items: int, pairs: np.ndarray, outcome: np.ndarray, prior: float = 0.1,
                  order_effect: bool = True, return_order: bool = False):
    """θ ``[n_items]`` (natural-log strength scale) maximising the penalised Bradley–Terry
    likelihood (Bradley & Terry 1952; module docstring) by L-BFGS-B; ``pairs`` ``[m, 2]`` item
    indices (first shown, second), ``outcome`` ``[m]`` P(first wins) in [0, 1]; ``prior`` the L2
    strength λ. With ``return_order`` also the order effect β (0 when ``order_effect`` is off)."""
    pairs = np.asarray(pairs, dtype=int)
    o = np.asarray(outcome, dtype=float)
    i, j = pairs[:, 0], pairs[:, 1]

    def f(w):
        th, b = w[:n_items], (w[n_items] if order_effect else 0.0)
        d = th[i] - th[j] + b
        nll = np.sum(np.logaddexp(0.0, -d) * o + np.logaddexp(0.0, d) * (1 - o)) + 0.5 * prior * np.sum(th ** 2)
        g_d = _sig(d) - o  # d nll / d d
        g = np.bincount(i, weights=g_d, minlength=n_items) - np.bincount(j, weights=g_d, minlength=n_items) + prior * th
        return nll, (np.append(g, g_d.sum()) if order_effect else g)

    r = minimize(f, np.zeros(n_items + int(order_effect)), jac=True, method="L-BFGS-B", options={"maxiter": 5000})
    th = r.x[:n_items]
    th = th - th.mean() if prior == 0 else th
    beta = float(r.x[n_items]) if order_effect else 0.0
    return (th, beta) if return_order else th


def elo(n_items: int, pairs: np.ndarray, outcome: np.ndarray, k: float = 32.0, order_effect: bool = True) -> np.ndarray:
    """Elo ratings ``[n_items]`` (Elo 1978; natural-log scale, start 0) after the comparisons
    ``pairs`` ``[m, 2]`` with outcomes ``outcome`` ``[m]`` in [0, 1], in order; ``k`` is Elo's K on
    the 400-point scale (module docstring)."""
    r = np.zeros(n_items)
    kk = k * math.log(10) / 400.0
    out = np.asarray(outcome, dtype=float)
    m = float(np.clip(out.mean(), 1e-3, 1 - 1e-3)) if order_effect and out.size else 0.5
    beta = math.log(m / (1 - m))
    for (a, b), o in zip(np.asarray(pairs, dtype=int), out):
        e = 1.0 / (1.0 + math.exp(-(r[a] - r[b] + beta)))
        r[a] += kk * (o - e)
        r[b] -= kk * (o - e)
    return r


def to_score(theta) -> np.ndarray:
    """σ(θ) elementwise: a Bradley–Terry strength or an Elo rating (natural-log scale) as the
    probability of beating an average item in a neutral order, in (0, 1)."""
    return _sig(np.asarray(theta, dtype=float))
