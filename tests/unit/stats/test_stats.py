"""metacog.stats: the across-pairs layer-gradient test holds its size under a null of random
per-pair slopes and has power against a planted gradient; its pieces equal independent
computations (scipy.stats.spearmanr per pair, brute-force sign enumeration, Holm by hand);
and the statistic it replaced (ρ of the per-layer means) fails that null."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from metacog import stats as S

ALPHA = 0.05
PLANTED_SLOPE = 1.0  # mean per-pair slope across the whole depth = 1 between-pair SD of the slopes (slope_sd = 1)


def _rate(n_sweeps, n_pairs, slope, seed, n_perm=999):
    rng = np.random.default_rng(seed)
    ps = [S.layer_gradient(S.simulate_sweep(rng, n_pairs, 30, slope=slope, nan_share=0.05), n_perm=n_perm, n_boot=20,
                           seed=i)["p"] for i in range(n_sweeps)]
    return float(np.mean(np.asarray(ps) < ALPHA))


# ----------------------------------------------------------------------------- size and power
@pytest.mark.parametrize("n_pairs,n_sweeps", [(5, 500), (8, 500), (20, 1000)])
def test_layer_gradient_holds_its_size_under_random_per_pair_slopes(n_pairs, n_sweeps):
    """Null: each pair has its own random layer slope (mean 0) plus noise, 30 layers.
    The across-pairs test rejects at most 6% of sweeps at α = 0.05 (5 pairs: never — the
    smallest attainable two-sided p is 2/2⁵ = 0.0625; 8 pairs: exact enumeration; 20 pairs:
    Monte Carlo flips)."""
    rate = _rate(n_sweeps, n_pairs, 0.0, seed=100 + n_pairs)
    assert rate <= 0.06, rate
    if n_pairs == 5:
        assert rate == 0.0 and S.min_p(5) == pytest.approx(0.0625)


def test_layer_gradient_detects_a_planted_slope_with_20_pairs():
    """Planted: per-pair slopes ~ N(1, 1) across the depth (noise SD 0.5 per cell): rejects in
    ≥ 80% of 500 sweeps with 20 pairs (measured: about 97%); and not with slope 0 (above)."""
    rate = _rate(500, 20, PLANTED_SLOPE, seed=7)
    assert rate >= 0.80, rate


def test_rho_of_the_layer_means_fails_the_same_null():
    """Why ρ on the per-layer means was replaced: its p-value (n = layers) rejects the null
    of random per-pair slopes in far more than 5% of sweeps (the audit measured 96-97%)."""
    rng = np.random.default_rng(3)
    rej = {}
    for n_pairs in (5, 20):
        hits = 0
        for _ in range(300):
            d = S.simulate_sweep(rng, n_pairs, 30, slope=0.0, noise=0.2)
            m = d.groupby("layer")["effect"].mean()
            hits += st.spearmanr(m.index, m.to_numpy()).pvalue < ALPHA
        rej[n_pairs] = hits / 300
    assert min(rej.values()) > 0.3, rej  # vs ≤ 0.06 for layer_gradient on the same null


# ----------------------------------------------------------------------------- pieces
def test_per_pair_rho_equals_scipy_spearman_pair_by_pair():
    rng = np.random.default_rng(1)
    d = S.simulate_sweep(rng, 12, 30, slope=0.5, nan_share=0.15)
    d.loc[d.index[:4], "effect"] = 1.0  # ties within pair 0
    d.loc[d["pair"] == 3, "effect"] = np.nan  # no finite layer
    d.loc[(d["pair"] == 4) & (d["layer"] > 2), "effect"] = np.nan  # two finite layers
    d.loc[d["pair"] == 5, "effect"] = 2.0  # constant
    d = d.sample(frac=1.0, random_state=0)  # row order does not matter
    got = S.per_pair_rho(d).set_index("pair")
    for pr, g in d.groupby("pair"):
        g = g.dropna()
        ref = st.spearmanr(g["layer"], g["effect"]).statistic if len(g) >= 3 and g["effect"].nunique() > 1 else np.nan
        r = got.loc[pr, "rho"]
        assert (np.isnan(ref) and np.isnan(r)) or r == pytest.approx(ref, abs=1e-12), (pr, r, ref)
        assert got.loc[pr, "n_layers"] == len(g)


def _brute_sign_flip(x):
    x = np.asarray(x, float)
    means = np.array([np.mean(np.array(s) * x) for s in itertools.product([-1, 1], repeat=len(x))])
    obs = x.mean()
    eps = 1e-12
    return min(1.0, 2 * min((means >= obs - eps).mean(), (means <= obs + eps).mean()))


@pytest.mark.parametrize("seed", range(4))
def test_sign_flip_exact_equals_brute_force_enumeration(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.4, 1.0, size=9)
    assert S.sign_flip_test(x) == pytest.approx(_brute_sign_flip(x), abs=1e-12)
    assert S.sign_flip_test(np.r_[x, np.nan]) == pytest.approx(_brute_sign_flip(x), abs=1e-12)  # NaN dropped


def test_sign_flip_monte_carlo_close_to_exact_and_never_zero():
    rng = np.random.default_rng(5)
    x = rng.normal(0.3, 1.0, size=16)
    exact = _brute_sign_flip(x)
    assert S.sign_flip_test(x, n_perm=20000) == pytest.approx(exact, abs=0.012)  # n = 16 > EXACT_MAX: Monte Carlo
    assert S.sign_flip_test(np.full(30, 1.0), n_perm=999) == pytest.approx(2 / 1000)  # (k + 1)/(n + 1), two-sided


def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    # m = 4: sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → running max 0.06
    np.testing.assert_allclose(S.holm(p), [0.03, 0.06, 0.06, 0.02, np.nan])
    assert S.holm([0.9, 0.8])[0] == 1.0 and np.isnan(S.holm([np.nan])).all()


def test_bootstrap_ci_close_to_numpy_percentile_bootstrap():
    rng = np.random.default_rng(2)
    x = rng.normal(1.0, 2.0, size=40)
    lo, hi = S.bootstrap_ci(x, n_boot=20000, seed=0)
    idx = np.random.default_rng(1).integers(0, 40, size=(20000, 40))
    ref = np.quantile(x[idx].mean(axis=1), [0.025, 0.975])
    se = x.std(ddof=1) / np.sqrt(40)
    assert abs(lo - ref[0]) < 0.05 * se and abs(hi - ref[1]) < 0.05 * se
    assert S.bootstrap_ci([1.0]) != S.bootstrap_ci([1.0])  # (nan, nan): one unit has no CI


# ----------------------------------------------------------------------------- the dict
def test_layer_gradient_fields_by_hand():
    rng = np.random.default_rng(4)
    d = S.simulate_sweep(rng, 10, 12, slope=2.0, nan_share=0.1)
    g = S.layer_gradient(d, n_boot=500)
    rhos = [st.spearmanr(x["layer"], x["effect"]).statistic for _, x in d.dropna().groupby("pair")]
    assert g["rho"] == pytest.approx(np.mean(rhos)) and g["n_pairs"] == 10 and g["unit"] == "pair"
    assert g["p"] == pytest.approx(S.sign_flip_test(rhos)) and g["exact"] and g["min_p"] == pytest.approx(2 / 2**10)
    assert g["ci"][0] <= g["rho"] <= g["ci"][1] and "sign-flip" in g["test"] and "symmetric about 0" in g["null"]
    means = d.groupby("layer")["effect"].mean()
    assert g["descriptive"] is True and g["rho_of_means"] == pytest.approx(st.spearmanr(means.index, means.to_numpy()).statistic)
    assert g["layers"] == list(range(1, 13)) and g["means"] == pytest.approx(list(means.to_numpy()))
    assert g["share_pos"] == pytest.approx(np.mean(np.asarray(rhos) > 0))


def test_layer_gradient_edge_cases_and_bad_input():
    one = S.layer_gradient(pd.DataFrame({"pair": 0, "layer": range(5), "effect": np.arange(5.0)}))
    assert one["rho"] == 1.0 and one["n_pairs"] == 1 and one["ci"] == [None, None] and one["p"] == 1.0
    empty = S.layer_gradient(pd.DataFrame({"pair": [], "layer": [], "effect": []}))
    assert empty["rho"] is None and empty["p"] is None and empty["n_pairs"] == 0
    flat = S.layer_gradient(pd.DataFrame({"pair": np.repeat([0, 1], 4), "layer": np.tile(range(4), 2), "effect": 0.0}))
    assert flat["n_pairs"] == 0 and flat["n_pairs_undefined"] == 2  # no variation: no ρ, not ρ = 0
    with pytest.raises(ValueError, match="missing: effect"):
        S.layer_gradient(pd.DataFrame({"pair": [0], "layer": [1], "normalised": [0.1]}))
    with pytest.raises(ValueError, match="more than one row"):
        S.layer_gradient(pd.DataFrame({"pair": [0, 0], "layer": [1, 1], "effect": [0.1, 0.2]}))
    with pytest.raises(TypeError):
        S.layer_gradient({"pair": [0]})


def test_paired_contrast_detects_a_planted_difference_and_not_a_null():
    rng = np.random.default_rng(6)
    a = S.simulate_sweep(rng, 20, 10, slope=1.0)
    b = a.assign(effect=a["effect"] - 0.5 + rng.normal(0, 0.3, len(a)))  # a is 0.5 above b in every pair
    c = S.paired_contrast(a, b, labels=("confidence", "random"))
    diff = (a["effect"] - b["effect"]).groupby(a["pair"]).mean()
    assert c["effect"]["diff"] == pytest.approx(diff.mean()) and c["effect"]["p"] < 0.001 and c["n_pairs"] == 20
    assert c["effect"]["ci"][0] > 0 and c["unit"] == "pair" and c["labels"] == ["confidence", "random"]
    ra, rb = S.per_pair_rho(a)["rho"], S.per_pair_rho(b)["rho"]
    assert c["gradient"]["diff"] == pytest.approx((ra - rb).mean())
    rej = 0
    for i in range(100):  # a null contrast: two independent noise copies of the same pairs
        a0 = S.simulate_sweep(rng, 12, 10)
        b0 = a0.assign(effect=a0["effect"] + rng.normal(0, 0.5, len(a0)))
        a0 = a0.assign(effect=a0["effect"] + rng.normal(0, 0.5, len(a0)))
        rej += S.paired_contrast(a0, b0, n_boot=10)["effect"]["p"] < ALPHA
    assert rej / 100 <= 0.1
