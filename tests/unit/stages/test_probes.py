import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from metacog.stages.probes import DEFAULT_CS, fit_probes, selection_null, stratified_folds
from metacog.testing import make_synthetic


def fit(*args, **kw):
    """fit_probes on one thread: the test machine's cores are shared, and a contended second
    thread only waits (the threads argument itself is tested below)."""
    kw.setdefault("threads", 1)
    return fit_probes(*args, **kw)


def _splits(n, seed=1, fr=(0.6, 0.2, 0.2)):
    rng = np.random.default_rng(seed)
    k1, k2 = int(fr[0] * n), int((fr[0] + fr[1]) * n)
    s = np.array(["train"] * k1 + ["calibration"] * (k2 - k1) + ["eval"] * (n - k2))
    return s[rng.permutation(n)]


@pytest.fixture(scope="module")
def small():
    X, y = make_synthetic(n=400, n_layers=3, n_positions=2, d=40, seed=3)
    return X, y, _splits(400)


def _sklearn_reference(x, y, split, fold, C):
    """Cross-fitted p(correct) from sklearn (float64, StandardScaler fitted on the fit rows)."""
    x = x.astype(np.float64)
    tr = np.flatnonzero(split == "train")
    ot = np.flatnonzero(split != "train")
    p = np.full(len(y), np.nan)
    for f in np.unique(fold[tr]):
        fit, held = tr[fold[tr] != f], tr[fold[tr] == f]
        sc = StandardScaler().fit(x[fit])
        m = LogisticRegression(C=C, tol=1e-12, max_iter=100000).fit(sc.transform(x[fit]), y[fit])
        p[held] = m.predict_proba(sc.transform(x[held]))[:, 1]
    sc = StandardScaler().fit(x[tr])
    m = LogisticRegression(C=C, tol=1e-12, max_iter=100000).fit(sc.transform(x[tr]), y[tr])
    p[ot] = m.predict_proba(sc.transform(x[ot]))[:, 1]
    return p


@pytest.mark.parametrize("C", DEFAULT_CS)
def test_matches_sklearn_for_each_C(small, C):
    X, y, split = small
    res = fit(X, y, split, Cs=(C,), n_boot=50)
    ev = split == "eval"
    for layer, pos in [(1, 0), (2, 1)]:
        ref = _sklearn_reference(X[:, layer, pos], y, split, res.fold, C)
        p = res.oof[:, layer, pos].astype(np.float64)
        assert np.nanmax(np.abs(p - ref)) < 1e-3, (C, layer, pos)
        assert abs(roc_auc_score(y[ev], p[ev]) - roc_auc_score(y[ev], ref[ev])) < 1e-3
        row = res.metrics[(res.metrics.layer == layer) & (res.metrics.position == pos)].iloc[0]
        assert row["C"] == C
        assert row["auroc"] == pytest.approx(roc_auc_score(y[ev], ref[ev]), abs=1e-3)


def test_cv_selection_matches_sklearn_grid(small):
    X, y, split = small
    res = fit(X, y, split, n_boot=50)
    tr = split == "train"
    fold = res.fold[tr]
    x = X[tr, 2, 1].astype(np.float64)
    yt = y[tr]
    means = []
    for C in DEFAULT_CS:
        aucs = []
        for f in range(5):
            sc = StandardScaler().fit(x[fold != f])
            m = LogisticRegression(C=C, tol=1e-12, max_iter=100000).fit(sc.transform(x[fold != f]), yt[fold != f])
            aucs.append(roc_auc_score(yt[fold == f], m.decision_function(sc.transform(x[fold == f]))))
        means.append(np.mean(aucs))
    cv = res.cv[(res.cv.layer == 2) & (res.cv.position == 1)].sort_values("C")
    np.testing.assert_allclose(cv["cv_auroc"].to_numpy(), means, atol=1e-3)
    chosen = cv[cv.chosen]["C"].item()
    if np.sort(means)[-1] - np.sort(means)[-2] > 1e-3:
        assert chosen == DEFAULT_CS[int(np.argmax(means))]


def test_oof_is_out_of_fold():
    # pure noise with d > n_train: in-sample predictions separate perfectly, out-of-fold ones do not
    rng = np.random.default_rng(0)
    n, d = 200, 300
    X = rng.normal(size=(n, 1, 1, d)).astype(np.float32)
    y = rng.random(n) < 0.5
    split = _splits(n, seed=2)
    tr = split == "train"
    for Cs in ((1.0,), DEFAULT_CS):
        res = fit(X, y, split, Cs=Cs, n_boot=50)
        oof_auc = roc_auc_score(y[tr], res.oof[tr, 0, 0])
        ins = res.predict(X[tr, 0, 0], 0, 0)  # the full-train probe on its own training rows
        ins_auc = roc_auc_score(y[tr], ins)
        assert ins_auc > 0.99
        assert abs(oof_auc - 0.5) < 0.15, oof_auc
        assert abs(res.metrics["cv_auroc"].iloc[0] - 0.5) < 0.15


def test_fold_structure(small):
    X, y, split = small
    res = fit(X, y, split, n_boot=50)
    tr = split == "train"
    assert (res.fold[~tr] == -1).all()
    assert set(res.fold[tr]) == set(range(5))
    np.testing.assert_array_equal(res.fold[tr], stratified_folds(y[tr], 5, 0))
    # train rows are predicted by the fold model; others by the full refit = predict()
    ot = ~tr
    np.testing.assert_allclose(res.oof[ot, 1, 1], res.predict(X[ot, 1, 1], 1, 1), atol=1e-5)
    assert not np.allclose(res.oof[tr, 1, 1], res.predict(X[tr, 1, 1], 1, 1), atol=1e-3)


def test_selection_never_uses_eval(small):
    X, y, split = small
    a = fit(X, y, split, n_boot=50)
    y2 = y.copy()
    ev = split == "eval"
    y2[ev] = ~y2[ev]
    X2 = X.copy()
    X2[ev] = X2[ev][::-1]  # eval features changed too
    b = fit(X2, y2, split, n_boot=50)
    np.testing.assert_array_equal(a.metrics["C"], b.metrics["C"])
    np.testing.assert_array_equal(a.metrics["cv_auroc"], b.metrics["cv_auroc"])
    nev = ~ev
    np.testing.assert_array_equal(a.oof[nev], b.oof[nev])  # train OOF and calibration untouched
    assert a.best["layer"] == b.best["layer"] and a.best["position"] == b.best["position"]
    assert not np.allclose(a.metrics["auroc"], b.metrics["auroc"])


def test_deterministic_under_seed(small):
    X, y, split = small
    a = fit(X, y, split, seed=5, n_boot=100)
    b = fit(X, y, split, seed=5, n_boot=100)
    np.testing.assert_array_equal(a.oof, b.oof)
    assert a.metrics.equals(b.metrics)
    c = fit(X, y, split, seed=6, n_boot=100)
    assert not np.array_equal(a.fold, c.fold)


def test_constant_layer_is_nan_free():
    X, y = make_synthetic(n=300, n_layers=2, n_positions=1, d=24, seed=1, constant_layer0=True)
    X[:, 1, 0, 5] = 7.0  # and a constant feature inside a normal layer
    split = _splits(300)
    res = fit(X, y, split, n_boot=50)
    used = np.isin(split, ["train", "calibration", "eval"])
    assert np.isfinite(res.oof[used]).all()
    row = res.metrics.iloc[0]
    assert row["layer"] == 0 and row["auroc"] == 0.5 and row["cv_auroc"] == 0.5
    assert res.metrics[["C", "cv_auroc", "auroc", "auroc_lo", "auroc_hi", "ece", "brier"]].notna().all().all()
    assert np.isfinite(res.coef).all() and res.coef[1, 0, 5] == 0.0
    tr = split == "train"
    np.testing.assert_allclose(res.oof[split == "eval", 0, 0], (y[tr].sum() + 0.0) / tr.sum(), atol=1e-5)


def test_dict_float16_memmap_input_and_layers(tmp_path, small):
    X, y, split = small
    d = {}
    for pi, name in enumerate(["last_answer", "confidence"]):
        mm = np.lib.format.open_memmap(tmp_path / f"{name}.npy", mode="w+", dtype=np.float16, shape=X[:, :, pi].shape)
        mm[:] = X[:, :, pi]
        mm.flush()
        d[name] = np.load(tmp_path / f"{name}.npy", mmap_mode="r")
    a = fit(X, y, split, positions=["last_answer", "confidence"], n_boot=50)
    b = fit(d, y, split, n_boot=50)
    np.testing.assert_allclose(a.oof, b.oof, atol=1e-6)
    assert list(b.metrics["position"].unique()) == ["last_answer", "confidence"]
    e = fit(d, y, split, layers=[2, 0], n_boot=50)  # scattered layers, any order
    assert e.metrics["layer"].tolist() == [0, 0, 2, 2] and np.isnan(e.oof[:, 1]).all()
    np.testing.assert_allclose(e.oof[:, [0, 2]], b.oof[:, [0, 2]], atol=1e-6)
    c = fit(d, y, split, layers=[2], n_boot=50)
    assert np.isnan(c.oof[:, :2]).all() and np.isfinite(c.oof[split != "", 2]).all()
    assert c.metrics["layer"].tolist() == [2, 2]
    np.testing.assert_allclose(c.oof[:, 2], b.oof[:, 2], atol=1e-6)


def test_outputs_contract(small):
    X, y, split = small
    split = split.copy()
    split[:7] = ""  # rows in no split
    res = fit(X, y, split, n_boot=100)
    n, L, P, d = X.shape
    assert res.oof.shape == (n, L, P) and res.oof.dtype == np.float32
    assert np.isnan(res.oof[:7]).all() and np.isfinite(res.oof[7:]).all()
    assert list(res.metrics.columns) == ["layer", "position", "C", "cv_auroc", "auroc", "auroc_lo", "auroc_hi",
                                         "ece", "ece_lo", "ece_hi", "ece_null_mean", "ece_null_p95", "brier",
                                         "brier_lo", "brier_hi", "aurc", "aurc_lo", "aurc_hi", "n_train", "n_eval"]
    for k in ("auroc", "ece", "brier", "aurc"):
        assert ((res.metrics[f"{k}_lo"] <= res.metrics[k] + 1e-12) | (k == "ece")).all()  # ECE's bootstrap is biased up
        assert (res.metrics[f"{k}_lo"] <= res.metrics[f"{k}_hi"]).all()
    assert res.best["reported_on"] == "eval" and "train" in res.best["selected_by"]
    assert len(res.metrics) == L * P
    assert (res.metrics["n_train"] == (split == "train").sum()).all()
    assert (res.metrics["n_eval"] == (split == "eval").sum()).all()
    assert ((res.metrics.auroc_lo <= res.metrics.auroc) & (res.metrics.auroc <= res.metrics.auroc_hi)).all()
    i = int(np.argmax(res.metrics["cv_auroc"].to_numpy()))
    assert res.best["layer"] == res.metrics["layer"].iloc[i] and res.best["position"] == res.metrics["position"].iloc[i]
    assert isinstance(res.best["layer"], int)
    json.dumps(res.best)  # JSON-able
    assert res.info["not_converged"] == 0
    ev = split == "eval"
    from metacog.stats import metrics as M

    row = res.metrics.iloc[i]
    s = res.oof[ev, int(row["layer"]), int(row["position"])]
    assert row["auroc"] == pytest.approx(M.auroc(s, y[ev]))
    assert row["ece"] == pytest.approx(M.ece(s, y[ev]))
    assert row["brier"] == pytest.approx(M.brier(s, y[ev]))
    assert row["aurc"] == pytest.approx(M.aurc(s, y[ev]))
    b = M.bootstrap_metrics(s.astype(np.float64), y[ev], n_boot=100)
    assert (row["ece_lo"], row["ece_hi"]) == pytest.approx(b["ece_ci"])
    assert (row["auroc_lo"], row["auroc_hi"]) == pytest.approx(M.auroc_ci(s.astype(np.float64), y[ev], n_boot=100))
    assert row["ece_null_p95"] == pytest.approx(M.ece_null(s.astype(np.float64))["p95"])


def _nested_reference(x, y, fold, Cs):
    """sklearn: for each outer fold f, C_f = argmax over Cs of the mean AUROC over inner folds g != f
    of a model fitted without folds f and g (StandardScaler on its fit rows); p on fold f from a
    model fitted without fold f at C_f. Returns (p [n], C_f per fold)."""
    x = x.astype(np.float64)
    k = fold.max() + 1

    def model(rows, C):
        sc = StandardScaler().fit(x[rows])
        return sc, LogisticRegression(C=C, tol=1e-12, max_iter=100000).fit(sc.transform(x[rows]), y[rows])

    p = np.full(len(y), np.nan)
    cf = []
    for f in range(k):
        scores = []
        for C in Cs:
            aucs = []
            for g in range(k):
                if g == f:
                    continue
                sc, m = model((fold != f) & (fold != g), C)
                aucs.append(roc_auc_score(y[fold == g], m.decision_function(sc.transform(x[fold == g]))))
            scores.append(np.mean(aucs))
        C_f = Cs[int(np.argmax(scores))]
        cf.append(C_f)
        sc, m = model(fold != f, C_f)
        p[fold == f] = m.predict_proba(sc.transform(x[fold == f]))[:, 1]
    return p, cf


def test_nested_cross_fitting_matches_sklearn():
    # the train rows' out-of-fold p (fine-tuning targets) come from a C chosen without them
    X, y = make_synthetic(n=160, n_layers=2, n_positions=1, d=12, seed=4)
    split = np.array(["train"] * 160)
    res = fit(X, y, split, n_boot=10, n_perm=0)
    assert res.info["nested"] and res.info["inner_problems"] == 10
    p, cf = _nested_reference(X[:, 1, 0], y, res.fold, DEFAULT_CS)
    np.testing.assert_allclose(res.oof[:, 1, 0], p, atol=2e-3)
    row = res.metrics[res.metrics.layer == 1].iloc[0]
    aucs = [roc_auc_score(y[res.fold == f], p[res.fold == f]) for f in range(5)]
    assert row["cv_auroc"] == pytest.approx(np.mean(aucs), abs=2e-3)


def test_nested_cv_auroc_is_not_optimistic_under_noise():
    # pure noise, many Cs: the plain CV AUROC at the chosen C is the max of 4 noisy numbers (biased
    # up); the nested one is an honest estimate of the whole procedure (mean ~0.5)
    rng = np.random.default_rng(0)
    n, L, d = 120, 12, 30
    X = rng.normal(size=(n, L, 1, d)).astype(np.float32)
    y = rng.random(n) < 0.5
    split = np.array(["train"] * n)
    res = fit(X, y, split, n_boot=10, n_perm=0, Cs=(1e-3, 1e-2, 1e-1, 1.0, 10.0))
    plain = res.cv.groupby("layer")["cv_auroc"].max().to_numpy()
    nested = res.metrics["cv_auroc"].to_numpy()
    assert plain.mean() > nested.mean() + 0.005  # without nesting the noise looks better than it is
    assert abs(nested.mean() - 0.5) < 0.05


def test_selection_null_p_value_is_calibrated_and_has_power():
    # noise labels: p is (super-)uniform; planted signal: p small, observed above the null's p95
    rng = np.random.default_rng(1)
    n, L, P, d = 90, 4, 2, 20
    X = rng.normal(size=(n, L, P, d)).astype(np.float32)
    split = np.array(["train"] * 60 + ["eval"] * 30)
    ps = []
    for s in range(12):
        y = np.random.default_rng(100 + s).random(n) < 0.5
        r = selection_null(X, y, split, n_perm=40, seed=s)
        assert r["n_perm"] == 40 and r["n_cells"] == L * P and len(r["null"]) == 40
        assert r["mean"] > 0.55  # the best of 8 cells x 4 Cs under the null is well above 0.5
        ps.append(r["p"])
    assert np.mean(np.array(ps) <= 0.05) <= 2 / 12 and np.median(ps) > 0.2
    y = X[:, 2, 1, :4].sum(1) + 0.3 * rng.normal(size=n) > 0  # one cell carries the label
    r = selection_null(X, y, split, n_perm=40, seed=0)
    assert r["p"] == pytest.approx(1 / 41) and r["observed"] > r["p95"]


def test_fit_probes_reports_the_selection_null(small):
    X, y, split = small
    res = fit(X, y, split, n_boot=20, n_perm=30)
    sn = res.best["selection_null"]
    assert set(sn) >= {"mean", "p95", "p", "n_perm", "observed"}
    assert sn["n_perm"] == 30 and 0 < sn["p"] <= 1
    ref = selection_null(X, y, split, n_perm=30, fold=res.fold)
    assert sn == ref
    json.dumps(res.best)


def test_threads_argument_is_restored(small):
    X, y, split = small
    before = torch.get_num_threads()
    res = fit_probes(X[:, :1, :1], y, split, threads=1, n_boot=10)
    assert res.info["threads"] == 1
    assert torch.get_num_threads() == before
    res = fit_probes(X[:, :1, :1], y, split, n_boot=10)  # None: leave as is
    assert res.info["threads"] == before
    assert torch.get_num_threads() == before


def test_worker_threads_do_not_change_results(small):
    X, y, split = small
    a = fit(X, y, split, n_boot=50, threads=1, chunk=1)
    calls = []
    b = fit(X, y, split, n_boot=50, threads=2, chunk=1, progress=lambda i, n, msg: calls.append((i, n)))
    np.testing.assert_array_equal(a.oof, b.oof)
    assert a.metrics.equals(b.metrics) and a.cv.equals(b.cv)
    assert b.info["workers"] == 2 and calls[-1] == (6, 6)


def test_too_few_of_a_class_does_not_crash():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 2, 1, 8)).astype(np.float32)
    split = _splits(50)
    y = np.zeros(50, bool)
    y[np.flatnonzero(split == "train")[0]] = True  # one positive in train
    res = fit(X, y, split, n_boot=10)
    assert res.best is None and res.metrics["auroc"].isna().all() and res.info["warnings"]
    y[np.flatnonzero(split == "train")[:3]] = True  # three positives: 3 folds instead of 5
    res = fit(X, y, split, n_boot=10)
    assert res.info["folds"] == 3 and res.best is not None


def test_bad_inputs():
    X = np.zeros((10, 2, 1, 4), np.float32)
    y = np.ones(10, bool)
    with pytest.raises(ValueError):
        fit(X[0], y, ["train"] * 10)
    with pytest.raises(ValueError):
        fit(X, y[:5], ["train"] * 10)
    with pytest.raises(ValueError):
        fit(X, y, ["train"] * 10, Cs=(0.0,))
    X[3, 0, 0, 1] = np.inf
    yy = np.arange(10) % 2 == 0
    with pytest.raises(ValueError, match="non-finite"):
        fit(X, yy, ["train"] * 10, folds=2)


def test_cv_folds_keep_a_fact_whole(small):
    # two phrasings of one fact must not sit on both sides of a CV fold (it would inflate cv_auroc)
    X, y, split = small
    groups = np.array([f"fact-{i // 2}" for i in range(len(y))], dtype=object)
    res = fit(X[:, :1, :1], y, split, n_boot=10, n_perm=0, groups=groups)
    tr = split == "train"
    folds = {}
    for g, f in zip(groups[tr], res.fold[tr]):
        folds.setdefault(g, set()).add(int(f))
    assert all(len(v) == 1 for v in folds.values()) and set(res.fold[tr]) == set(range(5))
    a = fit(X[:, :1, :1], y, split, n_boot=10, n_perm=0)  # without groups: plain stratified folds
    np.testing.assert_array_equal(a.fold[tr], stratified_folds(y[tr], 5, 0))


def test_selection_null_statistic_is_the_one_step_probe():
    # T_obs = max over cells and C of the 5-fold CV AUROC of ridge (penalty 1/(C p(1-p))) on the
    # train-standardised features; the dual and the primal (Woodbury) paths give the same numbers
    from sklearn.linear_model import Ridge

    X, y = make_synthetic(n=200, n_layers=3, n_positions=2, d=30, seed=2)
    split = np.array(["train"] * 150 + ["eval"] * 50)
    a = selection_null(X, y, split, n_perm=20, path="dual")
    b = selection_null(X, y, split, n_perm=20, path="primal")
    assert a["observed"] == pytest.approx(b["observed"], abs=1e-3)  # the primal path runs in float32
    np.testing.assert_allclose(a["null"], b["null"], atol=1e-3)
    yt = y[:150]
    fid = stratified_folds(yt, 5, 0)
    p = yt.mean()
    best = -1.0
    for layer in range(3):
        for pos in range(2):
            x = X[:150, layer, pos].astype(np.float64)
            sd = x.std(0)
            x = (x - x.mean(0)) / np.where(sd > 0, sd, 1.0)
            for C in DEFAULT_CS:
                aucs = [roc_auc_score(yt[fid == f], Ridge(alpha=1 / (C * p * (1 - p))).fit(x[fid != f], yt[fid != f])
                                      .predict(x[fid == f])) for f in range(5)]
                best = max(best, float(np.mean(aucs)))
    assert a["observed"] == pytest.approx(best, abs=1e-9)


def test_selection_null_primal_path_survives_torch_threads_on_large_folds():
    """The full default study (1,062 train items, 5 folds of ~213, d_model 576) takes the primal
    path, whose Woodbury systems are (held rows + 1)-square. A batched torch.linalg.solve of those
    with torch.set_num_threads(2) returns garbage LU pivots for sizes above ~150
    (pytorch/pytorch#142815) and crashed the probe stage; a layer whose features are constant
    (the embedding at a position where every prompt has the same token) makes the system the
    identity, the reported trigger. The null must run and equal the dual path's and one thread's."""
    import torch

    rng = np.random.default_rng(0)
    n, d = 800, 8
    y = rng.random(n) < 0.5
    X = rng.normal(size=(n, 2, 1, d)).astype(np.float32)
    X[:, 0] = 0.0  # a constant layer: M = I exactly
    X[:, 1, 0, 0] += 0.8 * y  # a signal
    split = np.array(["train"] * n)
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = selection_null(X, y, split, n_perm=6, path="primal")
        torch.set_num_threads(1)
        one = selection_null(X, y, split, n_perm=6, path="primal")
    finally:
        torch.set_num_threads(prev)
    dual = selection_null(X, y, split, n_perm=6, path="dual")
    assert two["observed"] > 0.6
    np.testing.assert_allclose(two["null"], one["null"], atol=1e-6)
    assert two["observed"] == pytest.approx(one["observed"], abs=1e-6)
    np.testing.assert_allclose(two["null"], dual["null"], atol=1e-3)  # the primal path runs in float32


def test_selection_null_permutes_whole_facts():
    # with groups, each shuffle moves a fact's labels as a block to another fact of the same size
    rng = np.random.default_rng(3)
    n = 120
    X = rng.normal(size=(n, 2, 1, 8)).astype(np.float32)
    groups = np.array([f"g{i // 2}" for i in range(n)], dtype=object)  # pairs: a question and its reverse
    y = np.repeat(rng.random(n // 2) < 0.5, 2)  # both phrasings right or both wrong
    split = np.array(["train"] * n)
    r = selection_null(X, y, split, n_perm=30, groups=groups)
    assert r["n_perm"] == 30 and 0 < r["p"] <= 1
    import metacog.stages.probes.null as P

    seen = []
    orig = P._one_step_preds

    def spy(raw, fit, held, Yt, lams, path="auto"):
        seen.append(Yt.numpy().copy())
        return orig(raw, fit, held, Yt, lams, path)

    P._one_step_preds = spy
    try:
        selection_null(X, y, split, n_perm=30, groups=groups)
    finally:
        P._one_step_preds = orig
    Y = seen[0]
    assert (Y[0::2] == Y[1::2]).all()  # every shuffled label vector keeps each pair together
    assert (Y.sum(0) == y.sum()).all() and not (Y[:, 1:] == Y[:, :1]).all()


def test_verification_helpers_are_not_study_api():
    """make_synthetic lives in metacog.testing (like numpy.testing), not in the probes API, and
    nothing in the package imports metacog.testing."""
    import pathlib

    import metacog
    import metacog.stages.probes as P

    assert not hasattr(P, "make_synthetic") and "make_synthetic" not in P.__all__
    root = pathlib.Path(metacog.__file__).parent
    users = [str(p.relative_to(root)) for p in root.rglob("*.py")
             if p.name != "testing.py" and "metacog.testing" in p.read_text()]
    assert not users, f"the package imports its verification helpers: {users}"

