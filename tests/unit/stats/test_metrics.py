import itertools

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from metacog.stats import metrics as M


def _brute_auroc(s, y):
    pos = [a for a, t in zip(s, y) if t]
    neg = [a for a, t in zip(s, y) if not t]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


# ----------------------------------------------------------------------------- AUROC
@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_sklearn_and_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 60
    y = rng.random(n) < 0.4
    s = np.round(rng.normal(size=n) + y, 1)  # rounding makes ties
    assert M.auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert M.auroc(s, y) == pytest.approx(_brute_auroc(s, y), abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_auroc_along_is_sklearn_and_mannwhitneyu_on_every_slice(ties):
    """The one AUROC (rows, columns, per-slice labels; with and without ties) against
    sklearn.metrics.roc_auc_score and scipy.stats.mannwhitneyu, slice by slice."""
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(7 + ties)
    S = rng.normal(size=(6, 50))
    if ties:
        S = np.round(S, 1)
    y = rng.random(50) < 0.4
    rows = M.auroc_along(S, y)  # shared labels, axis -1
    assert rows.shape == (6,)
    for i in range(6):
        assert rows[i] == pytest.approx(roc_auc_score(y, S[i]), abs=1e-12)
        u = mannwhitneyu(S[i][y], S[i][~y], method="asymptotic").statistic
        assert rows[i] == pytest.approx(u / (y.sum() * (~y).sum()), abs=1e-12)
    cols = M.auroc_along(S.T, y[:, None], axis=0)  # [n_items, n_scores]
    assert np.array_equal(cols, rows)
    Y = rng.random((50, 3)) < 0.5  # one label vector per column, scores [B, n, P]
    P3 = rng.normal(size=(2, 50, 3))
    got = M.auroc_along(P3, Y[None], axis=1)
    assert got.shape == (2, 3)
    for b in range(2):
        for p in range(3):
            assert got[b, p] == pytest.approx(roc_auc_score(Y[:, p], P3[b, :, p]), abs=1e-12)
    one = M.auroc_along(S[:2], np.ones(50, bool))
    assert np.isnan(one).all()  # one class: undefined
    Sn = S[:2].copy()
    Sn[0, 3] = np.nan
    r = M.auroc_along(Sn, y)
    assert np.isnan(r[0]) and r[1] == pytest.approx(roc_auc_score(y, S[1]), abs=1e-12)
    with pytest.raises(ValueError):
        M.auroc_along(S, y[:10])
    with pytest.raises(ValueError):
        M.auroc_along(S, np.full(50, 2))


def test_auroc_is_written_once():
    """No module but metacog.stats ranks scores into an AUROC by hand (issue 16)."""
    import pathlib
    import re

    import metacog

    root = pathlib.Path(metacog.__file__).parent
    hits = [str(p.relative_to(root)) for p in root.rglob("*.py")
            if re.search(r"\brankdata\(|roc_auc_score\(", p.read_text()) and p.parent.name != "stats"]
    assert not hits, f"AUROC by hand outside metacog.stats: {hits}"
    assert M.auroc_boot_batch(np.c_[np.arange(4.0), -np.arange(4.0)], [0, 0, 1, 1], n_boot=0)[0].tolist() == [1.0, 0.0]


def test_auroc_edge_cases():
    assert np.isnan(M.auroc([0.1, 0.2], [True, True]))
    assert np.isnan(M.auroc([0.1, 0.2], [False, False]))
    assert M.auroc([1, 1, 1, 1], [1, 0, 1, 0]) == 0.5  # all tied
    assert M.auroc([0, 1], [0, 1]) == 1.0
    assert M.auroc([1, 0], [0, 1]) == 0.0
    with pytest.raises(ValueError):
        M.auroc([0.1, np.nan, 0.3], [0, 1, 1])
    assert M.auroc([0.1, np.nan, 0.3, 0.2], [0, 1, 1, 0], nan_policy="omit") == 1.0
    with pytest.raises(ValueError):
        M.auroc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError):
        M.auroc([0.1, 0.2], [0, 1], nan_policy="ignore")


def test_auroc_ci_contains_point_and_narrows():
    rng = np.random.default_rng(0)

    def data(n):
        y = rng.random(n) < 0.6
        return rng.normal(size=n) + 0.8 * y, y

    s, y = data(200)
    lo, hi = M.auroc_ci(s, y, n_boot=1000, seed=0)
    a = M.auroc(s, y)
    assert lo < a < hi
    s2, y2 = data(3000)
    lo2, hi2 = M.auroc_ci(s2, y2, n_boot=1000, seed=0)
    assert lo2 < M.auroc(s2, y2) < hi2
    assert (hi2 - lo2) < 0.5 * (hi - lo)
    assert M.auroc_ci(s, y, seed=3) == M.auroc_ci(s, y, seed=3)
    assert all(np.isnan(M.auroc_ci([0.1, 0.2], [1, 1])))


def test_auroc_ci_replicates_are_exact_aurocs():
    # each bootstrap replicate must be the exact AUROC of the resampled data (ties included)
    rng = np.random.default_rng(1)
    s = np.round(rng.normal(size=40), 1)
    y = rng.random(40) < 0.5
    cp, cn = M.bootstrap_counts(int(y.sum()), int((~y).sum()), 20, seed=5)
    aucs = M._boot_aucs_sorted(s[y], s[~y], cp, cn)
    for b in range(20):
        ss = np.concatenate([np.repeat(s[y], cp[b]), np.repeat(s[~y], cn[b])])
        yy = np.concatenate([np.ones(cp[b].sum(), bool), np.zeros(cn[b].sum(), bool)])
        assert aucs[b] == pytest.approx(roc_auc_score(yy, ss), abs=1e-12)


def test_auroc_boot_batch_equals_single():
    rng = np.random.default_rng(2)
    y = rng.random(300) < 0.3
    S = rng.normal(size=(300, 3)) + y[:, None] * np.array([0.0, 0.5, 1.0])
    a, lo, hi = M.auroc_boot_batch(S, y, n_boot=500, seed=7)
    for j in range(3):
        assert a[j] == pytest.approx(M.auroc(S[:, j], y), abs=1e-12)
        assert (lo[j], hi[j]) == pytest.approx(M.auroc_ci(S[:, j], y, n_boot=500, seed=7), abs=1e-12)


# ----------------------------------------------------------------------------- ECE / reliability
def test_ece_hand_computed_with_edges():
    conf = np.array([0.0, 0.05, 0.1, 0.15, 0.95, 1.0, 1.0, 0.5])
    y = np.array([0, 0, 1, 0, 1, 1, 0, 1], bool)
    t = M.reliability_bins(conf, y, n_bins=10)
    assert list(t.columns) == ["bin", "lo", "hi", "n", "mean_conf", "accuracy"]
    assert len(t) == 10
    # bin 0 = [0, .1): 0.0, 0.05 ; bin 1 = [.1, .2): 0.1, 0.15 ; bin 5: 0.5 ; bin 9 = [.9, 1]: .95, 1, 1
    assert t["n"].tolist() == [2, 2, 0, 0, 0, 1, 0, 0, 0, 3]
    assert t.loc[0, "mean_conf"] == pytest.approx(0.025)
    assert t.loc[0, "accuracy"] == 0.0
    assert t.loc[1, "mean_conf"] == pytest.approx(0.125)
    assert t.loc[1, "accuracy"] == 0.5
    assert t.loc[9, "mean_conf"] == pytest.approx(2.95 / 3)
    assert t.loc[9, "accuracy"] == pytest.approx(2 / 3)
    assert np.isnan(t.loc[2, "mean_conf"]) and np.isnan(t.loc[2, "accuracy"])
    expected = (2 / 8) * 0.025 + (2 / 8) * abs(0.5 - 0.125) + (1 / 8) * 0.5 + (3 / 8) * abs(2 / 3 - 2.95 / 3)
    assert M.ece(conf, y, n_bins=10) == pytest.approx(expected, abs=1e-12)
    # ece equals the same bins' weighted gap
    m = t["n"] > 0
    assert M.ece(conf, y) == pytest.approx(float((t["n"][m] / 8 * (t["accuracy"][m] - t["mean_conf"][m]).abs()).sum()))


def test_ece_every_edge_goes_up_a_bin():
    edges = np.arange(11) / 10
    t = M.reliability_bins(edges, np.ones(11, bool), n_bins=10)
    assert t["n"].tolist() == [1] * 9 + [2]  # i/10 opens bin i; 1.0 joins the last bin
    t = M.reliability_bins([0.3, 0.7, 0.6], [1, 1, 1], n_bins=10)  # 3/10 etc. computed as floats
    assert t.loc[3, "n"] == 1 and t.loc[7, "n"] == 1 and t.loc[6, "n"] == 1


def test_ece_other_bin_counts_and_errors():
    rng = np.random.default_rng(0)
    c = rng.random(500)
    y = rng.random(500) < c
    for nb in (5, 15):
        idx = np.minimum((c * nb).astype(int), nb - 1)
        e = sum((idx == i).sum() / 500 * abs(y[idx == i].mean() - c[idx == i].mean()) for i in range(nb) if (idx == i).any())
        assert M.ece(c, y, n_bins=nb) == pytest.approx(e, abs=1e-12)
    with pytest.raises(ValueError):
        M.ece([0.5, 1.2], [0, 1])
    with pytest.raises(ValueError):
        M.ece([-0.1, 0.5], [0, 1])
    with pytest.raises(ValueError):
        M.ece([np.nan, 0.5], [0, 1])
    assert "last" in M.ECE_BINS_DOC and "[e_{n-1}, 1]" in M.ECE_BINS_DOC


def test_brier_matches_loop():
    rng = np.random.default_rng(3)
    c = rng.random(50)
    y = rng.random(50) < 0.5
    tot = 0.0
    for ci, yi in zip(c, y):
        tot += (ci - (1.0 if yi else 0.0)) ** 2
    assert M.brier(c, y) == pytest.approx(tot / 50, abs=1e-12)
    with pytest.raises(ValueError):
        M.brier([1.5], [1])


# ----------------------------------------------------------------------------- risk-coverage / AURC
def _direct_aurc_stable(c, y):
    order = sorted(range(len(c)), key=lambda i: -c[i])  # python sort is stable
    risks, errs = [], 0
    for k, i in enumerate(order, 1):
        errs += 0 if y[i] else 1
        risks.append(errs / k)
    return sum(risks) / len(risks)


def test_risk_coverage_and_aurc_direct():
    rng = np.random.default_rng(4)
    c = np.round(rng.random(30), 1)
    y = rng.random(30) < 0.6
    rc = M.risk_coverage(c, y)
    assert list(rc.columns) == ["coverage", "risk"]
    assert rc["coverage"].iloc[-1] == 1.0 and rc["coverage"].iloc[0] == pytest.approx(1 / 30)
    assert rc["risk"].iloc[-1] == pytest.approx(1 - y.mean())
    assert M.aurc(c, y, ties="stable") == pytest.approx(_direct_aurc_stable(list(c), list(y)), abs=1e-12)
    assert M.aurc(c, y, ties="stable") == pytest.approx(rc["risk"].mean())


def test_aurc_average_ties_is_mean_over_tie_orders():
    c = [0.9, 0.9, 0.9, 0.5, 0.5]
    y = [1, 0, 1, 0, 1]
    vals = []
    for perm in itertools.permutations(range(5)):
        cc = [c[i] for i in perm]
        yy = [y[i] for i in perm]
        vals.append(_direct_aurc_stable(cc, yy))
    assert M.aurc(c, y) == pytest.approx(np.mean(vals), abs=1e-12)
    # input order of tied items does not matter
    assert M.aurc([0.9, 0.9, 0.9, 0.5, 0.5], [0, 1, 1, 1, 0]) == pytest.approx(M.aurc(c, y))
    # without ties both rules agree
    c2 = [0.1, 0.4, 0.3, 0.9]
    assert M.aurc(c2, [1, 0, 1, 1]) == pytest.approx(M.aurc(c2, [1, 0, 1, 1], ties="stable"))


# ----------------------------------------------------------------------------- validity screen
def test_validity_branches():
    y = np.array([1, 0] * 50, bool)
    # invalid by L: 80% at >= 95
    c = np.where(np.arange(100) < 80, 100.0, 50.0)
    c[80:] = np.linspace(10, 80, 20)
    r = M.validity_screen(c, y)
    assert r["L"] == 0.8 and r["verdict"] == "invalid" and "L >= .70" in r["reasons"]
    # invalid by TRIN (all in the 70s decile, L = 0) but correlated
    c = np.where(y, 79.0, 70.0)
    r = M.validity_screen(c, y)
    assert r["L"] == 0 and r["trin"] == 1.0 and r["verdict"] == "invalid"
    # invalid by |r| < .05: spread-out confidence unrelated to correctness
    c = np.tile([5.0, 15, 25, 35, 45, 55, 65, 75, 85, 92], 10)
    yy = np.array([True, True, False, False] * 25)
    yy = np.array([bool((i // 10) % 2) for i in range(100)])
    r = M.validity_screen(c, yy)
    assert abs(r["r"]) < 0.05 and r["verdict"] == "invalid" and r["reasons"] == ["|r| < .05"]
    # constant confidence: r is NaN and counts as |r| < .05
    r = M.validity_screen(np.full(100, 50.0), y)
    assert np.isnan(r["r"]) and r["verdict"] == "invalid"
    # indeterminate: L = .5 (>= .40 but < .70), TRIN = .5, r large
    c = np.where(y, 99.0, 20.0)
    c[~y] = np.linspace(0, 89, 50)
    r = M.validity_screen(c, y)
    assert r["L"] == 0.5 and r["trin"] == 0.5 and abs(r["r"]) > 0.05 and r["verdict"] == "indeterminate"
    # indeterminate by TRIN alone: 65% in [60,70), L = 0
    c = np.concatenate([np.full(65, 65.0), np.linspace(0, 50, 35)])
    yy = c > 60
    r = M.validity_screen(c, yy)
    assert r["trin"] == 0.65 and r["L"] == 0 and r["verdict"] == "indeterminate"
    # valid: spread over deciles, correlated
    c = np.linspace(0, 100, 100)
    yy = c > 50
    r = M.validity_screen(c, yy)
    assert r["verdict"] == "valid" and r["reasons"] == [] and r["n"] == 100 and r["n_missing"] == 0


def test_validity_deciles_missing_and_pointbiserial():
    # 100 belongs to [90, 100]; 90 too; 89.9 to [80, 90)
    r = M.validity_screen([100, 90, 95, 89.9], [1, 0, 1, 0])
    assert r["trin"] == 0.75
    c = np.array([10, np.nan, 60, 80, np.nan, 30.0])
    y = np.array([0, 1, 1, 1, 0, 0], bool)
    r = M.validity_screen(c, y)
    assert r["n"] == 4 and r["n_missing"] == 2
    cc, yy = c[~np.isnan(c)], y[~np.isnan(c)].astype(float)
    # point-biserial formula (M1 - M0) / s * sqrt(p q), s the population SD
    p = yy.mean()
    pb = (cc[yy == 1].mean() - cc[yy == 0].mean()) / cc.std() * np.sqrt(p * (1 - p))
    assert r["r"] == pytest.approx(pb, abs=1e-12)
    r = M.validity_screen([np.nan, np.nan], [1, 0])
    assert r["n"] == 0 and r["verdict"] == "invalid"
    with pytest.raises(ValueError):
        M.validity_screen([101.0], [1])


def test_validity_thresholds_are_inclusive():
    y = np.array([1, 0] * 50, bool)
    c = np.where(np.arange(100) < 70, 97.0, 0.0)  # L exactly .70
    c[70:] = np.linspace(0, 80, 30)
    assert M.validity_screen(c, y)["L"] == 0.7
    assert M.validity_screen(c, y)["verdict"] == "invalid"


# ----------------------------------------------------------------------------- type prior / within-type
def test_type_prior():
    cats = ["a", "a", "a", "b", "b"]
    y = [1, 1, 0, 0, 0]
    p = M.type_prior(cats, y, ["a", "b", "c"])
    assert p[0] == pytest.approx(3 / 5)  # (2+1)/(3+2)
    assert p[1] == pytest.approx(1 / 4)  # (0+1)/(2+2)
    assert p[2] == pytest.approx(2 / 5)  # unseen -> overall train rate


def test_within_type_auroc():
    rng = np.random.default_rng(0)
    cats = np.array(["a"] * 40 + ["b"] * 60 + ["c"] * 10)
    y = np.concatenate([rng.random(40) < 0.9, rng.random(60) < 0.2, np.ones(10, bool)])
    # a score that is only the type prior: within-type AUROC exactly 0.5 although overall AUROC is high
    prior = M.type_prior(cats, y, cats)
    assert M.auroc(prior, y) > 0.7
    r = M.within_type_auroc(prior, y, cats)
    assert r["auroc"] == pytest.approx(0.5) and r["n_types_used"] == 2 and r["n_items_used"] == 100
    s = rng.normal(size=110) + y
    r = M.within_type_auroc(s, y, cats)
    a, b = M.auroc(s[:40], y[:40]), M.auroc(s[40:100], y[40:100])
    assert r["auroc"] == pytest.approx((40 * a + 60 * b) / 100)
    assert np.isnan(r["per_type"]["c"][0])


def test_summarize_scores():
    rng = np.random.default_rng(0)
    c = rng.random(200)
    y = rng.random(200) < c
    s = M.summarize_scores(c, y, n_boot=200)
    assert set(s) >= {"auroc", "auroc_ci", "ece", "brier", "aurc", "n"}
    assert s["auroc"] == M.auroc(c, y) and s["ece"] == M.ece(c, y) and s["brier"] == M.brier(c, y)
    assert s["aurc"] == M.aurc(c, y) and s["n"] == 200
    c2 = c.copy()
    c2[:5] = np.nan
    with pytest.raises(ValueError):
        M.summarize_scores(c2, y)
    s2 = M.summarize_scores(c2, y, nan_policy="omit", n_boot=50)
    assert s2["n"] == 195 and s2["n_missing"] == 5


def _brute_boot(c, y, n_boot, seed, n_bins=10):
    """Every metric recomputed by the public functions on explicitly resampled arrays (same draws)."""
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    cp, cn = M.bootstrap_counts(pos.size, neg.size, n_boot, seed)
    out = {k: [] for k in ("auroc", "ece", "brier", "aurc")}
    for r in range(n_boot):
        idx = np.r_[np.repeat(pos, cp[r]), np.repeat(neg, cn[r])]
        cc, yy = c[idx], y[idx]
        out["auroc"].append(M.auroc(cc, yy))
        out["ece"].append(M.ece(cc, yy, n_bins))
        out["brier"].append(M.brier(cc, yy))
        out["aurc"].append(M.aurc(cc, yy))
    return {k: tuple(np.quantile(v, [0.025, 0.975])) for k, v in out.items()}


@pytest.mark.parametrize("rounded", [False, True])
def test_bootstrap_metrics_equal_brute_force_replicates(rounded):
    rng = np.random.default_rng(3)
    c = rng.random(40)
    if rounded:  # many ties: AURC's tie rule and ECE bin edges matter
        c = np.round(c, 1)
    y = rng.random(40) < c
    b = M.bootstrap_metrics(c, y, n_boot=150, seed=4)
    ref = _brute_boot(c, y, 150, 4)
    for k in ("auroc", "ece", "brier", "aurc"):
        assert b[k] == pytest.approx(getattr(M, k)(c, y))
        assert b[f"{k}_ci"] == pytest.approx(ref[k], abs=1e-12), k
    assert b["auroc_ci"] == pytest.approx(M.auroc_ci(c, y, n_boot=150, seed=4))
    batch = M.bootstrap_metrics_batch(np.stack([c, c[::-1]], 1), y, n_boot=150, seed=4)
    assert tuple(batch["ece_ci"][0]) == pytest.approx(b["ece_ci"])
    assert tuple(batch["aurc_ci"][1]) == pytest.approx(_brute_boot(c[::-1], y, 150, 4)["aurc"], abs=1e-12)


def test_bootstrap_metrics_one_class_and_empty():
    c = np.array([0.2, 0.9, 0.6, 0.7])
    b = M.bootstrap_metrics(c, np.ones(4, bool), n_boot=50)
    assert np.isnan(b["auroc"]) and all(np.isnan(b["auroc_ci"]))
    assert b["brier_ci"][0] <= b["brier"] <= b["brier_ci"][1] and np.isfinite(b["ece_ci"]).all()
    e = M.bootstrap_metrics(np.zeros(0), np.zeros(0, bool))
    assert np.isnan(e["ece"]) and all(np.isnan(e["ece_ci"]))


def test_ece_null_is_a_calibrated_simulation():
    rng = np.random.default_rng(0)
    c = rng.random(24)
    r = M.ece_null(c, n_sim=300, seed=5)
    sims = np.random.default_rng(5).random((300, 24)) < c
    ref = [M.ece(c, s) for s in sims]
    assert r["mean"] == pytest.approx(np.mean(ref)) and r["p95"] == pytest.approx(np.quantile(ref, 0.95))
    # the example: at n = 24 a perfectly calibrated score has ECE ~0.19 on average
    assert 0.14 < r["mean"] < 0.25 and r["p95"] > r["mean"]
    big = M.ece_null(rng.random(2000), n_sim=200)
    assert big["mean"] < 0.05  # shrinks with n


def test_sample_warnings():
    assert M.sample_warnings(np.r_[np.ones(40), np.zeros(40)].astype(bool)) == []
    w = M.sample_warnings(np.r_[np.ones(30), np.zeros(5)].astype(bool))
    assert len(w) == 2 and "only 5 incorrect" in w[0] and "only 35 items" in w[1]
    w = M.sample_warnings(np.ones(60, bool))
    assert len(w) == 1 and "only correct answers" in w[0] and "AUROC is undefined" in w[0]
    assert "no items" in M.sample_warnings(np.zeros(0, bool))[0]


def test_summarize_scores_has_every_ci_and_the_ece_null():
    rng = np.random.default_rng(2)
    c = rng.random(80)
    y = rng.random(80) < c
    s = M.summarize_scores(c, y, n_boot=100)
    for k in ("auroc", "ece", "brier", "aurc"):
        lo, hi = s[f"{k}_ci"]
        assert lo <= hi and (lo <= s[k] <= hi or k == "ece")
    assert set(s["ece_null"]) >= {"mean", "p95"}


def test_within_type_auroc_ci_is_the_stratified_bootstrap():
    rng = np.random.default_rng(7)
    cats = np.array(list("aabbbcc") * 10)
    s = rng.random(cats.size)
    y = rng.random(cats.size) < 0.5
    y[cats == "c"] = True  # one category with one class: not used
    r = M.within_type_auroc(s, y, cats, n_boot=200, seed=3)
    reps = []
    cps = {c: M.bootstrap_counts(int(y[cats == c].sum()), int((~y[cats == c]).sum()), 200, 3 + j)
           for j, c in enumerate(["a", "b"])}
    for b in range(200):
        num = 0.0
        for c in ("a", "b"):
            m = cats == c
            pos, neg = s[m][y[m]], s[m][~y[m]]
            cp, cn = cps[c]
            num += _brute_auroc(np.r_[np.repeat(pos, cp[b]), np.repeat(neg, cn[b])],
                                np.r_[np.ones(cp[b].sum(), bool), np.zeros(cn[b].sum(), bool)]) * m.sum()
        reps.append(num / r["n_items_used"])
    assert r["auroc_ci"] == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])))
    assert r["auroc_ci"][0] <= r["auroc"] <= r["auroc_ci"][1]
