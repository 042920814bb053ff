"""Patching statistics against independent computations (scipy), and their table logic."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from metacog import patching_stats as S


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    x = np.arange(30.0)
    y = 0.05 * x + rng.normal(size=30)
    y[3] = y[7]  # a tie
    r, p = S.spearman(x, y)
    ref = stats.spearmanr(x, y)
    assert r == pytest.approx(ref.statistic, abs=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15)
    np.testing.assert_allclose(S.rankdata(y), stats.rankdata(y))


def test_spearman_degenerate_cases():
    assert S.spearman([1, 2, 3, 4], [2, 4, 6, 8])[0] == 1.0
    assert math.isnan(S.spearman([1, 2], [3, 4])[0])
    assert math.isnan(S.spearman([1, 2, 3], [5, 5, 5])[0])  # no variation: undefined, not 0


@pytest.mark.parametrize("k,n", [(0, 1), (3, 10), (7, 10), (10, 10), (12, 30), (25, 31), (50, 100)])
def test_binomial_matches_scipy(k, n):
    assert S.binom_two_sided(k, n) == pytest.approx(stats.binomtest(k, n, 0.5).pvalue, rel=1e-9)


def test_sign_test_drops_zeros_and_nans():
    x = np.array([0.5, 0.2, -0.1, 0.0, np.nan, 0.3])
    assert S.sign_test(x) == pytest.approx(stats.binomtest(3, 4, 0.5).pvalue)


@pytest.mark.parametrize("seed", range(3))
def test_sign_flip_permutation_matches_scipy_exact(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.3, 1.0, size=10)
    ref = stats.permutation_test((x,), np.mean, permutation_type="samples", alternative="two-sided", n_resamples=np.inf)
    assert S.sign_flip_test(x) == pytest.approx(ref.pvalue, abs=1e-12)


def test_sign_flip_monte_carlo_close_to_exact():
    rng = np.random.default_rng(1)
    x = rng.normal(0.4, 1.0, size=20)
    ref = stats.permutation_test((x,), np.mean, permutation_type="samples", alternative="two-sided", n_resamples=np.inf)
    assert S.sign_flip_test(x, n_perm=20000, seed=0) == pytest.approx(ref.pvalue, abs=0.01)


def test_bootstrap_ci_close_to_scipy():
    rng = np.random.default_rng(2)
    x = rng.normal(1.0, 2.0, size=40)
    lo, hi = S.bootstrap_mean_ci(x, n_boot=20000, seed=0)
    ref = stats.bootstrap((x,), np.mean, method="percentile", n_resamples=20000, random_state=0).confidence_interval
    sd = x.std(ddof=1) / math.sqrt(len(x))
    assert abs(lo - ref.low) < 0.05 * sd and abs(hi - ref.high) < 0.05 * sd
    assert lo < x.mean() < hi


def test_fisher_ci():
    r, n = 0.8, 30
    lo, hi = S.fisher_ci(r, n)
    z, se = np.arctanh(r), math.sqrt(1.06 / (n - 3))
    assert lo == pytest.approx(np.tanh(z - stats.norm.ppf(0.975) * se)) and hi == pytest.approx(np.tanh(z + stats.norm.ppf(0.975) * se))
    assert lo < r < hi


def _fake(n_pairs=8, layers=range(1, 11), k=3, seed=0, slope=0.08):
    """A results table: the confidence-slot shift grows with depth, random positions are noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for pr in range(n_pairs):
        denom = 0.4 if pr == 0 else 20.0 + pr  # pair 0 below the threshold
        for h in layers:
            for label, kind in [("confidence", "confidence")] + [(f"random{j}", "random") for j in range(1, k + 1)]:
                norm = (slope * h if kind == "confidence" else 0.0) + rng.normal(0, 0.05)
                small = abs(denom) < 1.0
                rows.append(dict(pair=pr, component="resid", layer=h, position=label, position_kind=kind, shift=norm * denom,
                                 denom=denom, normalised=np.nan if small else norm, small_denominator=small,
                                 answer_unchanged=True, source=f"s{pr}", target=f"t{pr}"))
    return pd.DataFrame(rows)


def test_layer_stats_by_hand():
    res = _fake()
    st = S.layer_stats(res, n_boot=500)
    row = st[(st.group == "confidence") & (st.layer == 5)].iloc[0]
    x = res[(res.position == "confidence") & (res.layer == 5) & ~res.small_denominator]["normalised"].to_numpy()
    assert row["n"] == 7 and row["n_small"] == 1
    assert row["mean"] == pytest.approx(x.mean()) and row["median"] == pytest.approx(np.median(x))
    assert row["share_pos"] == pytest.approx((x > 0).mean())
    assert row["p_binom"] == pytest.approx(stats.binomtest(int((x > 0).sum()), 7).pvalue)
    # random positions: one value per pair (the mean of its K draws)
    r = st[(st.group == "random") & (st.layer == 5)].iloc[0]
    xr = res[(res.position_kind == "random") & (res.layer == 5) & ~res.small_denominator].groupby("pair")["normalised"].mean()
    assert r["n"] == 7 and r["mean"] == pytest.approx(xr.mean())
    assert st[st.value == "normalised"]["n_small"].max() == 1
    raw = S.layer_stats(res, "shift", n_boot=200)
    assert raw["n"].max() == 8  # the raw shift keeps every pair


def test_layer_gradient_confidence_vs_random():
    res = _fake()
    g = S.layer_gradient(res, "resid", "confidence", n_boot=300)
    means = res[(res.position == "confidence") & ~res.small_denominator].groupby("layer")["normalised"].mean()
    assert g["rho"] == pytest.approx(stats.spearmanr(means.index, means.to_numpy()).statistic)
    assert g["rho"] > 0.9 and g["ci"][0] is not None and g["ci"][0] <= g["rho"] <= g["ci"][1]
    assert g["n_layers"] == 10 and g["n_pairs"] == 7
    gr = S.layer_gradient(res, "resid", "random", n_boot=300)
    assert abs(gr["rho"]) < 0.9 and gr["ci"][0] < gr["ci"][1]
    one = S.layer_gradient(res[res.pair == 3], "resid", "confidence")
    assert one["ci"] == [None, None] and one["ci_fisher"][0] is not None  # one pair: no bootstrap over pairs


def test_summary_shape():
    res = _fake()

    class Spec:
        seed = 0
        min_denominator = 1.0

    s = S.summarize(res, Spec(), n_layers=10, n_boot=200)
    assert set(s["gradients"]) == {"resid/confidence", "resid/random"}
    assert s["n_small_denominator"] == 1 and s["small_denominator_pairs"][0]["pair"] == 0
    lay = s["layers"]["resid/confidence"]
    assert lay["layer"] == list(range(1, 11)) and len(lay["mean"]) == 10 and lay["n_small"][0] == 1
    assert S.summarize(res.iloc[:0], Spec())["n_rows"] == 0
