"""Verification helpers: reference implementations and synthetic data, not part of the study API.

Like ``numpy.testing``, this module holds what the tests and benchmarks check the package
against: slow, independent reference implementations of fast paths and deterministic
synthetic inputs. Nothing in the study pipeline imports it.

* :func:`make_synthetic` -- activation-like probe data ``(X [n, L, P, d], y [n])``
  (for :func:`metacog.stages.probes.fit_probes`, ``bench/bench_probes.py``);
* :func:`read_values_naive` -- the reference implementation of the exact 0-100 readout
  :func:`metacog.readout.values.read_values` (tests/unit/readout/test_confidence.py, tests/unit/model/test_families.py).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from metacog.model.arch import input_device
from metacog.readout.values import get_trie

__all__ = ["make_synthetic", "read_values_naive"]


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


@torch.no_grad()
def read_values_naive(lm, prefix: list[int], values=None) -> np.ndarray:
    """Reference implementation of :func:`metacog.readout.values.read_values` (slow, independent):
    one full forward per value and per look-ahead, no cache, no tree mask.

    ``lm``: a loaded model (``.model``, ``.tokenizer``); ``prefix``: token ids ending where the
    value is read; ``values``: the values 0..100 to compute (default all). Returns float64
    ``[101]`` probabilities, NaN for values not computed."""
    model, tok = lm.model, lm.tokenizer
    trie = get_trie(tok)
    dev = input_device(model)
    digit = trie.digit_mask.to(dev)
    dotdigit = trie.dotdigit_mask.to(dev)

    def dist(seq):
        z = model(input_ids=torch.tensor([seq], device=dev)).logits[0, -1].float()
        return torch.softmax(z, -1)[: digit.shape[0]]

    out = np.full(101, np.nan)
    for v, ids in enumerate(trie.value_ids):
        if values is not None and v not in values:
            continue
        lp = 0.0
        seq = list(prefix)
        for t in ids:
            lp += math.log(max(float(dist(seq)[t]), 1e-300))
            seq.append(t)
        p = dist(seq)
        end = 1.0 - float(p @ digit) - float(p @ dotdigit)
        if trie.dot_id >= 0:
            pd = float(p[trie.dot_id])
            end -= pd * float(dist(seq + [trie.dot_id]) @ digit)
        out[v] = math.exp(lp) * max(end, 0.0)
    return out
