"""Patching statistics against independent computations (scipy), and their table logic."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from metacog.patching import stats as S


def test_sign_test_is_scipy_binomtest_without_zeros_and_nans():
    x = np.array([0.5, 0.2, -0.1, 0.0, np.nan, 0.3])
    assert S.sign_test(x) == pytest.approx(stats.binomtest(3, 4, 0.5).pvalue)
    assert S.sign_test([0.0, np.nan]) == 1.0


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


def test_layer_stats_holm_over_the_layers_of_a_group():
    res = _fake()
    st = S.layer_stats(res, n_boot=100, n_perm=999)
    for _, g in st.groupby(["component", "group"]):
        p = g["p_perm"].to_numpy()
        m = len(p)
        order = np.argsort(p)
        ref = np.empty(m)
        ref[order] = np.minimum(1, np.maximum.accumulate((m - np.arange(m)) * p[order]))  # Holm by hand
        np.testing.assert_allclose(g["p_holm"].to_numpy(), ref)
        assert (g["p_holm"] >= g["p_perm"]).all()


def test_gradient_is_the_across_pairs_test():
    """ρ is the mean of the pairs' own Spearman ρ (random draws averaged within a pair first);
    ρ of the layer means is there, labelled descriptive."""
    res = _fake()
    g = S.gradient(res, "resid", "confidence", n_boot=300)
    d = res[(res.position == "confidence") & ~res.small_denominator]
    rhos = [stats.spearmanr(x["layer"], x["normalised"]).statistic for _, x in d.groupby("pair")]
    assert g["rho"] == pytest.approx(np.mean(rhos)) and g["n_pairs"] == 7 and g["unit"] == "pair"
    assert g["rho"] > 0.9 and g["ci"][0] <= g["rho"] <= g["ci"][1] and g["p"] == pytest.approx(2 / 2**7)
    means = d.groupby("layer")["normalised"].mean()
    assert g["rho_of_means"] == pytest.approx(stats.spearmanr(means.index, means.to_numpy()).statistic) and g["descriptive"]
    rnd = res[(res.position_kind == "random") & ~res.small_denominator].groupby(["pair", "layer"], as_index=False)["normalised"].mean()
    gr = S.gradient(res, "resid", "random", n_boot=300)
    assert gr["rho"] == pytest.approx(np.mean([stats.spearmanr(x["layer"], x["normalised"]).statistic for _, x in rnd.groupby("pair")]))
    assert gr["p"] > 0.05 and gr["ci"][0] < gr["ci"][1]
    one = S.gradient(res[res.pair == 3], "resid", "confidence")
    assert one["ci"] == [None, None] and one["n_pairs"] == 1 and one["p"] == 1.0  # one pair: no inference


def test_contrast_slot_vs_random_within_pairs():
    res = _fake()
    c = S.contrast(res, "resid", "confidence", "random", n_boot=300)
    d = res.assign(g=np.where(res.position_kind == "random", "random", "confidence"))[~res.small_denominator]
    m = d.groupby(["pair", "layer", "g"])["normalised"].mean().unstack("g")
    diff = (m["confidence"] - m["random"]).groupby("pair").mean()
    assert c["effect"]["diff"] == pytest.approx(diff.mean()) and c["n_pairs"] == 7 and c["unit"] == "pair"
    assert c["effect"]["p"] == pytest.approx(2 / 2**7) and c["effect"]["ci"][0] > 0 and c["labels"] == ["confidence", "random"]


def test_summary_shape():
    res = _fake()

    class Spec:
        seed = 0
        min_denominator = 1.0
        random_from = "item"

    s = S.summarize(res, Spec(), n_layers=10, n_boot=200, n_perm=999)
    assert set(s["gradients"]) == {"resid/confidence", "resid/random"}
    assert set(s["contrasts"]) == {"resid/confidence-random"}
    g = s["gradients"]["resid/confidence"]["normalised"]
    assert g["unit"] == "pair" and g["n_pairs"] == 7 and len(g["ci"]) == 2 and "rho_of_means" in g
    assert s["tests"]["correction"] == "holm" and s["tests"]["unit"] == "pair"
    assert s["n_small_denominator"] == 1 and s["small_denominator_pairs"][0]["pair"] == 0
    lay = s["layers"]["resid/confidence"]
    assert lay["layer"] == list(range(1, 11)) and len(lay["mean"]) == 10 and lay["n_small"][0] == 1
    assert len(lay["p_holm"]) == 10 and lay["correction"] == "holm"
    assert s["random_positions"]["from"] == "item" and s["random_positions"]["n_draws"] == 8 * 3
    assert S.summarize(res.iloc[:0], Spec())["n_rows"] == 0
