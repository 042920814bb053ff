"""Steering (metacog.steering): directions from the train split (unit norm, matched-norm random,
probe-minus-type orthogonal to the type subspace), the hook edits exactly the intended positions,
α = 0 reproduces the unsteered readout bit for bit, the sweep's artifacts and resume, the
across-items statistics (a planted effect rejects, a null keeps its size), probe-conditioned
steering in the methods table (gain 0 = the ev_inline baseline), the CLI and the page."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from finetune_helpers import tiny_model_and_workspace

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tiny_ws(tmp_path_factory):
    return tiny_model_and_workspace(tmp_path_factory.mktemp("steer"), "st", n=40)


# ------------------------------------------------------------------------------ directions (pure)
def test_direction_rules_on_synthetic_states():
    from metacog import steering as S

    rng = np.random.default_rng(0)
    n, d = 90, 16
    cats = np.array(["a", "b", "c"])[np.arange(n) % 3]
    X = rng.normal(size=(n, d))
    X[cats == "b", 0] += 5.0
    X[cats == "c", 1] += 3.0
    y = np.arange(n) % 2 == 0
    X[y, 2] += 2.0
    md = S.mean_diff_direction(X, y)
    assert np.isclose(np.linalg.norm(md), 1.0)
    assert np.allclose(md, S.unit(X[y].mean(0) - X[~y].mean(0)))
    Q = S.type_subspace(X, cats)
    assert Q.shape == (2, d) and np.allclose(Q @ Q.T, np.eye(2), atol=1e-10)
    # every category mean difference lies in the span: its residual after projection is 0
    for c in "abc":
        diff = X[cats == c].mean(0) - X.mean(0)
        assert np.linalg.norm(S.project_out(diff, Q)) < 1e-9 * max(1.0, np.linalg.norm(diff))
    v = S.unit(rng.normal(size=d) + np.eye(d)[0] * 3)
    r = S.unit(S.project_out(v, Q))
    assert np.max(np.abs(Q @ r)) < 1e-12
    for c in "abc":
        assert abs(r @ (X[cats == c].mean(0) - X.mean(0))) < 1e-9
    a, b = S.random_direction(d, 0, 3), S.random_direction(d, 0, 3)
    assert np.array_equal(a, b) and np.isclose(np.linalg.norm(a), 1.0)
    assert not np.allclose(a, S.random_direction(d, 1, 3)) and not np.allclose(a, S.random_direction(d, 0, 4))
    assert np.isclose(S.sigma_along(X, np.eye(d)[0]), np.std(X[:, 0], ddof=1))
    with pytest.raises(ValueError):
        S.mean_diff_direction(X, np.ones(n, bool))
    with pytest.raises(ValueError):
        S.unit(np.zeros(d))
    assert S.type_subspace(X, np.array(["a"] * n)).shape == (0, d)


def test_compute_directions_on_workspace(tiny_ws):
    from metacog import steering as S
    from metacog.stages.activations import load_states
    from metacog.stages.answers import reparse
    from metacog.stages.study import load_items

    ws, lm = tiny_ws
    items = load_items(ws)
    ans = reparse(items, ws.read_parquet("answers.parquet"))
    dirs = ["probe", "mean-diff", "random", "probe-minus-type"]
    out = S.compute_directions(ws, items, ans, [1, 3], dirs, "confidence", seed=0)
    V = out["vectors"]
    assert V.shape == (4, 2, lm.d_model)
    assert np.allclose(np.linalg.norm(V, axis=-1), 1.0)
    coef, _ = S.load_probe(ws)
    pi = 2  # confidence
    for j, h in enumerate([1, 3]):
        assert np.allclose(V[0, j], coef[h, pi] / np.linalg.norm(coef[h, pi]), atol=1e-6)
        # random: matched norm (the probe's sigma and coefficient norm), not its own sigma
        assert out["sigma"][2, j] == out["sigma"][0, j] and out["norm"][2, j] == out["norm"][0, j]
        assert out["sigma_own"][2, j] != out["sigma"][2, j]
        # probe-minus-type is orthogonal to every train category mean difference
        tr = items[items["split"] == "train"].sort_values("row")
        X = np.asarray(load_states(ws, "confidence")[tr["row"].to_numpy()][:, h], dtype=np.float64)
        for c in tr["category"].unique():
            diff = X[tr["category"].to_numpy() == c].mean(0) - X.mean(0)
            assert abs(V[3, j] @ diff) < 1e-8 * np.linalg.norm(diff)
        assert out["max_type_cos"][3, j] < 1e-10
        # sigma = std of the train states along the direction
        assert np.isclose(out["sigma"][0, j], np.std(X @ V[0, j], ddof=1))
        ytr = ans.set_index("row").loc[tr["row"], "correct"].to_numpy(bool)
        assert np.allclose(V[1, j], S.unit(X[ytr].mean(0) - X[~ytr].mean(0)))


# ------------------------------------------------------------------------------ the hook
def _states(lm, ids, h):
    """Residual stream at hidden index h (all positions) of one left-padded batch."""
    from metacog.readout.values import left_pad
    from metacog.model.hooks import block_output
    from metacog.model.loading import decoder_layers

    out = []
    handle = decoder_layers(lm.model)[h - 1].register_forward_hook(lambda m, a, o: out.append(block_output(o).detach().clone()))
    try:
        i, att, pos = left_pad(ids, lm.tokenizer.pad_token_id, "cpu")
        with torch.no_grad():
            lm.model(input_ids=i, attention_mask=att, position_ids=pos)
    finally:
        handle.remove()
    return out[0]


@pytest.mark.parametrize("where", ["slot", "from-answer"])
def test_hook_touches_only_the_intended_positions(tiny_lm, where):
    from metacog.data import prompts
    from metacog.steering import masks_for, steer_hook

    tok = tiny_lm.tokenizer
    encs = [prompts.encode_inline(tok, True, "What is the capital of Kenya?", "Nairobi"),
            prompts.encode_inline(tok, True, "What is the capital of a long country name here?", "Some answer text")]
    ids = [e.ids for e in encs]
    h = 2
    base = _states(tiny_lm, ids, h)
    v = torch.randn(tiny_lm.d_model, generator=torch.Generator().manual_seed(0))
    m = masks_for(encs, where)
    with steer_hook(tiny_lm.model, h, v, m, continuation=(where == "from-answer")):
        got = _states(tiny_lm, ids, h)
    diff = (got - base).abs().sum(-1)
    assert torch.equal(diff > 0, m)  # changed exactly where the mask says
    assert torch.allclose((got - base)[m], v.expand(int(m.sum()), -1), atol=1e-5)
    T = m.shape[1]
    for b, e in enumerate(encs):
        pad = T - len(e)
        if where == "slot":
            assert m[b].nonzero().flatten().tolist() == [pad + e.positions["confidence"]]
        else:
            assert m[b].nonzero().flatten().tolist() == list(range(pad + e.spans["answer"][0], T))
    # a later layer: every position before the first edited one is bit-identical (causal)
    base3 = _states(tiny_lm, ids, 3)
    with steer_hook(tiny_lm.model, h, v, m, continuation=False):
        got3 = _states(tiny_lm, ids, 3)
    for b in range(len(encs)):
        first = int(m[b].nonzero()[0])
        assert torch.equal(got3[b, :first], base3[b, :first])
        assert not torch.equal(got3[b, first:], base3[b, first:])


def test_alpha_zero_reproduces_the_unsteered_readout_exactly(tiny_lm):
    from metacog.data import prompts
    from metacog.readout.values import read_values
    from metacog.steering import steered_readout

    tok = tiny_lm.tokenizer
    encs = [prompts.encode_inline(tok, True, f"What is the capital of Peru? ({i})", a) for i, a in enumerate(["Lima", "x", "Paris"])]
    ref = read_values(tiny_lm, [e.ids for e in encs], share_prefix=False)  # steering's own layout (no shared prefix)
    none = steered_readout(tiny_lm, encs, None, None, "slot", verbal=True)
    for where in ("slot", "from-answer"):
        z = steered_readout(tiny_lm, encs, 2, np.zeros(tiny_lm.d_model, np.float32), where, verbal=True)
        assert np.array_equal(z["ev"].to_numpy(), ref.expected)
        assert np.array_equal(z["ev"].to_numpy(), none["ev"].to_numpy())
        assert z["verbal_text"].tolist() == none["verbal_text"].tolist()
        big = steered_readout(tiny_lm, encs, 2, np.full(tiny_lm.d_model, 3.0, np.float32), where, verbal=False)
        assert not np.allclose(big["ev"].to_numpy(), ref.expected)  # and a real vector does move it


def test_from_answer_also_steers_the_scored_continuation(tiny_lm):
    """from-answer adds the vector to the trie tokens the readout scores (they come after the
    answer); slot does not — so the two differ even with the same prefix edit."""
    from metacog.data import prompts
    from metacog.steering import steered_readout

    tok = tiny_lm.tokenizer
    encs = [prompts.encode_inline(tok, True, "What is the capital of Peru?", "Lima")]
    v = np.random.default_rng(0).normal(size=tiny_lm.d_model).astype(np.float32) * 2
    a = steered_readout(tiny_lm, encs, 1, v, "slot", verbal=False)["ev"].iloc[0]
    b = steered_readout(tiny_lm, encs, 1, v, "from-answer", verbal=False)["ev"].iloc[0]
    assert a != b


# ------------------------------------------------------------------------------ statistics
def _fake(rng, n, effect, layers=(1, 2), alphas=(-2.0, 0.0, 2.0, 4.0)):
    rows = []
    for k in ("probe", "random"):
        for h in layers:
            for a in alphas:
                noise = rng.normal(0, 1.0, n)
                shift = 0.0 if a == 0 else (effect * a if k == "probe" else 0.0) + noise
                for r in range(n):
                    rows.append(dict(row=r, direction=k, layer=h, alpha=a, correct=bool(r % 2), d_ev=float(np.atleast_1d(shift)[r]
                                                                                                          if a != 0 else 0.0)))
    return pd.DataFrame(rows)


def test_dose_slope_is_scipy_linregress_per_item():
    from scipy import stats as sst

    from metacog.steering import dose_slope

    rng = np.random.default_rng(3)
    A = np.array([-4.0, -2.0, 0.0, 2.0, 8.0])
    Y = rng.normal(size=(7, 5)) + 0.7 * A
    Y[3, 2] = np.nan
    got = dose_slope(A, Y)
    want = [sst.linregress(A, y).slope for y in Y]
    assert np.isnan(got[3]) and np.allclose(np.delete(got, 3), np.delete(want, 3), rtol=1e-12, atol=1e-12)


def test_statistics_reject_a_planted_effect_and_keep_size_on_a_null():
    from metacog.steering import summarize

    spec = {"directions": ["probe", "random"], "layers": [1, 2], "alphas": [-2.0, 0.0, 2.0, 4.0]}
    rng = np.random.default_rng(1)
    s = summarize(_fake(rng, 30, 1.0), spec, n_perm=999, n_boot=200)
    assert len(s["contrasts"]) == 6 and len(s["slopes"]) == 2
    assert all(c["p_holm"] < 0.05 for c in s["contrasts"] if abs(c["alpha"]) >= 2)
    assert all(sl["p_holm"] < 0.05 and sl["ci"][0] > 0.5 for sl in s["slopes"])
    assert all(abs(sl["slope"] - 1.0) < 0.3 and abs(sl["slope_random"]) < 0.3 for sl in s["slopes"])
    assert all(sl["abs_p_holm"] < 0.05 and sl["abs_diff"] > 0.5 for sl in s["slopes"])
    cell = next(c for c in s["cells"] if c["direction"] == "probe" and c["layer"] == 1 and c["alpha"] == 4.0)
    assert cell["correct"]["n"] + cell["incorrect"]["n"] == cell["n"] == 30
    assert cell["ci"][0] < cell["mean"] < cell["ci"][1]
    # the null: probe and random from the same distribution; Holm keeps the family-wise error
    rej = 0
    for i in range(60):
        s0 = summarize(_fake(np.random.default_rng(100 + i), 20, 0.0), spec, n_perm=199, n_boot=10)
        rej += any(c["p_holm"] < 0.05 for c in s0["contrasts"])
    assert rej <= 8  # ≤ 5% expected (60 sweeps: ≤ 8 is within binomial noise at α = 0.05)


# ------------------------------------------------------------------------------ the sweep
def test_sweep_artifacts_resume_and_rows(tiny_ws, monkeypatch):
    from metacog import steering as S

    ws, lm = tiny_ws
    spec = S.SteerSpec(layers=(1, 3), alphas=(-2.0, 4.0), directions=("probe",), where="slot", split="all", limit=10, chunk=4)
    s = S.run_steering(ws, lm, spec)
    res, js = S.load_results(ws, s["id"])
    assert js["unit"] == "item" and js["n_items"] == 10
    assert len(res) == 10 * 2 * 2 * 3  # items × {probe, random} × layers × {-2, 0, 4}
    assert not res.duplicated(["row", "direction", "layer", "alpha"]).any()
    z = res[res["alpha"] == 0.0]
    assert (z["d_ev"] == 0).all() and (z["ev"] == z["ev0"]).all()
    st = res[res["alpha"] != 0.0]
    assert np.allclose(st["d_ev"], st["ev"] - st["ev0"])
    assert (st["ev"] != st["ev0"]).mean() > 0.9
    assert np.allclose(st["shift_norm"], st["alpha"].abs() * st["sigma"])
    pr = st[st["direction"] == "probe"].set_index(["row", "layer", "alpha"])["shift_norm"]
    rd = st[st["direction"] == "random"].set_index(["row", "layer", "alpha"])["shift_norm"]
    assert np.allclose(pr.sort_index(), rd.sort_index())  # matched norm
    assert {c["direction"] for c in js["contrasts"]} == {"probe"} and len(js["slopes"]) == 2
    # resume: every chunk is there, nothing is recomputed
    monkeypatch.setattr("metacog.steering.run.steered_readout", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    s2 = S.run_steering(ws, lm, spec)
    assert s2["id"] == s["id"]
    assert [r["id"] for r in S.list_sweeps(ws)] == [s["id"]]


def test_a_rerun_in_another_dtype_is_a_new_sweep_never_a_resume(tiny_ws, monkeypatch):
    """The sweep id includes the model's dtype and device: the same spec run in bfloat16 after
    float32 computes every chunk again in its own directory (no chunk of the float32 sweep is
    reused), both sweeps stay listed with their runtime, and a plan whose recorded runtime
    differs from the model's is refused in one line rather than mixed."""
    import copy
    import dataclasses

    from metacog import steering as S
    from metacog.core.workspace import WorkspaceError

    ws, lm = tiny_ws
    spec = S.SteerSpec(layers=(2,), alphas=(2.0,), directions=("probe",), split="all", limit=4, chunk=2, verbal=False)
    s32 = S.run_steering(ws, lm, spec)
    assert s32["runtime"] == {"dtype": "float32", "device": "cpu"}
    lm16 = dataclasses.replace(lm, model=copy.deepcopy(lm.model).to(torch.bfloat16), dtype=torch.bfloat16)
    calls = {"n": 0}
    real = S.steered_readout

    def counted(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr("metacog.steering.run.steered_readout", counted)
    s16 = S.run_steering(ws, lm16, spec)
    assert s16["id"] != s32["id"] and s16["runtime"]["dtype"] == "bfloat16"
    assert calls["n"] == 3 * 2  # (baseline, probe, random) x 2 chunks: nothing reused from the float32 sweep
    assert S.plan(ws, spec, {"dtype": "float32", "device": "cpu"})["id"] == s32["id"]
    listed = {r["id"]: r["runtime"] for r in S.list_sweeps(ws)}
    assert listed[s32["id"]]["dtype"] == "float32" and listed[s16["id"]]["dtype"] == "bfloat16"
    # a plan.json recording another runtime under this id (e.g. copied by hand): refused, not mixed
    pj = ws.path("steering", s32["id"], "plan.json")
    j = json.loads(pj.read_text())
    j["runtime"] = {"dtype": "bfloat16", "device": "cpu"}
    pj.write_text(json.dumps(j))
    with pytest.raises(WorkspaceError, match="refusing to mix"):
        S.run_steering(ws, lm, spec)
    with pytest.raises(ValueError, match="dtype and device"):
        S.plan(ws, spec, {"dtype": "float32"})


def test_sweep_stops_and_resumes(tiny_ws):
    from metacog import steering as S
    from metacog.core.runtime import Stopped

    ws, lm = tiny_ws
    spec = S.SteerSpec(layers=(2,), alphas=(3.0,), directions=("mean-diff",), where="from-answer", split="all", limit=6,
                       chunk=3, verbal=False)
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 2

    with pytest.raises(Stopped):
        S.run_steering(ws, lm, spec, should_stop=stop)
    sid = S.plan(ws, spec, lm)["id"]
    assert len(list(ws.path("steering", sid, "chunks").glob("*.parquet"))) == 2
    s = S.run_steering(ws, lm, spec)
    res, _ = S.load_results(ws, s["id"])
    assert len(res) == 6 * 2 * 2
    st = res[res["alpha"] != 0]
    assert st["answer_changed"].notna().all() and "new_answer" in st


# ------------------------------------------------------------------------------ the method
def test_probe_conditioned_steering_reads_the_probe_and_gain_zero_is_ev_inline(tiny_ws):
    from metacog.data import prompts
    from metacog.stages.activations import load_states
    from metacog.readout.values import read_values
    from metacog.methods import MethodSettings, load_scores, methods_table, run_methods
    from metacog.methods.probe_steering import read_probe
    from metacog.steering import probe_conditioned

    ws, lm = tiny_ws
    st = run_methods(ws, "ev_inline,probe_steering", MethodSettings(steer_gain=0.0, batch_size=8), lm=lm, on_error="raise")
    assert st["probe_steering"] == "computed"
    sc = load_scores(ws, "probe_steering").set_index("row")
    ev = load_scores(ws, "ev_inline").set_index("row")
    # the study's readout shares the batch's prompt prefix, steering's does not: float32 rounding apart
    assert np.allclose(sc["score"], ev.loc[sc.index, "score"], atol=1e-6)
    # the p read during the forward is the probe's p on the cached state (float16 cache)
    pr = read_probe(ws)
    S = load_states(ws, pr["position"])
    want = 1 / (1 + np.exp(-(np.asarray(S[sc.index.to_numpy(), pr["layer"]], np.float64) @ pr["coef"] + pr["intercept"])))
    assert np.allclose(sc["probe_p"], want, atol=2e-2)
    # a gain moves E[v] up for p > 0.5 and down for p < 0.5, relative to no steering
    it = ws.read_parquet("items.parquet").set_index("row")
    an = ws.read_parquet("answers.parquet").set_index("row")
    rows = sc.index.to_numpy()[:6]
    encs = [prompts.encode_inline(lm.tokenizer, True, it.loc[r, "question"], str(an.loc[r, "answer"] or "")) for r in rows]
    T = max(len(e) for e in encs)
    ra = torch.tensor([T - len(e) + e.positions[pr["position"]] for e in encs])
    wa = torch.tensor([T - len(e) + e.positions["confidence"] for e in encs])
    v = pr["coef"] / np.linalg.norm(pr["coef"])
    with probe_conditioned(lm.model, pr["layer"], pr["coef"], pr["intercept"], ra, pr["layer"], v * 50, 0.0, wa):
        zero = read_values(lm, [e.ids for e in encs], share_prefix=False).expected  # hooks index the padded batch
    assert np.array_equal(zero, read_values(lm, [e.ids for e in encs], share_prefix=False).expected)
    t = methods_table(ws, n_boot=50)
    row = t[(t["method"] == "probe_steering")].iloc[0]
    assert row["family"] == "steering" and np.isfinite(row["brier"])
    with pytest.raises(ValueError):
        with probe_conditioned(lm.model, 3, pr["coef"], 0.0, ra, 1, v, 1.0, wa):
            pass


# ------------------------------------------------------------------------------ CLI and page
def test_cli_steer(tiny_ws, capsys, monkeypatch):
    from metacog.cli import main

    ws, lm = tiny_ws
    rc = main(["steer", "--workspace", str(ws.root), "--layers", "1,2", "--alphas=-1,2", "--direction", "probe,probe-minus-type",
               "--split", "all", "--limit", "8", "--quiet", "--no-verbal", "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "unit: item" in out and "probe-minus-type" in out and "slope" in out
    import re

    assert "['" not in out  # CIs print as numbers, [lo, hi], not as a list of strings
    assert re.search(r"slope -?[\d.]+ \[(-?[\d.]+|n/a), (-?[\d.]+|n/a)\] \| random", out), out
    rc = main(["steer", "--workspace", str(ws.root), "--list"])
    out = capsys.readouterr().out
    assert rc == 0 and "complete" in out and "stale" not in out
    # the study rerun since (another hidden-state cache): the sweep stays listed, named stale
    man = ws.read_json("activations/manifest.json")
    ws.write_json("activations/manifest.json", {**man, "key": "a-rerun-cache"})
    try:
        assert main(["steer", "--workspace", str(ws.root), "--list"]) == 0
        assert "stale: made on an earlier hidden-state cache" in capsys.readouterr().out
    finally:
        ws.write_json("activations/manifest.json", man)
    assert main(["steer", "--workspace", str(ws.root), "--layers", "1", "--alphas=1e308", "--quiet"]) == 2  # all NaN readouts
    assert "alphas must be within" in capsys.readouterr().err
    assert main(["steer", "--workspace", str(ws.root), "--direction", "nope", "--quiet"]) == 2
    assert "unknown direction" in capsys.readouterr().err
    assert main(["steer", "--workspace", str(ws.root), "--layers", "99", "--quiet"]) == 2


def test_steering_page(tiny_ws, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from metacog import steering as S
    from metacog.app import ui

    ws, lm = tiny_ws
    spec = S.SteerSpec(layers=(1, 2), alphas=(2.0,), directions=("probe",), split="all", limit=6, verbal=False)
    sid = S.run_steering(ws, lm, spec)["id"]
    before = {s["id"] for s in S.list_sweeps(ws) if s["complete"]}
    monkeypatch.setenv("METACOG_CACHE", str(ws.root.parent.parent))
    ui.set_model_loader(lambda settings: lm)
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
        at.query_params["ws"] = ws.root.name
        at.run()
        at.switch_page("pages/11_Steering.py")
        at.run()
        assert not at.exception, at.exception
        assert any(s.key == f"st-sweep-{ws.root.name}" for s in at.selectbox)
        assert any("Dose-response" in s.value for s in at.subheader)
        assert len(at.get("plotly_chart")) >= 2  # dose-response + per-item shifts
        links = [df for df in at.dataframe if "open" in df.value.columns]
        assert links and all("item=" in u for u in links[0].value["open"])
        # launch a sweep from the page (a thread job with the injected model) and see it finish
        next(t for t in at.text_input if t.key == f"st-layers-{ws.root.name}").set_value("3")
        next(t for t in at.text_input if t.key == f"st-alphas-{ws.root.name}").set_value("1")
        next(n for n in at.number_input if n.key == f"st-lim-{ws.root.name}").set_value(4)
        next(c for c in at.checkbox if c.key == f"st-verbal-{ws.root.name}").uncheck()
        at.run()
        next(b for b in at.button if b.key == f"st-run-{ws.root.name}").click()
        at.run()
        assert not at.exception, at.exception
        job = ui.job_kind("steer", "a steering sweep").get(ws.root)
        assert job is not None
        job.thread.join(300)
        assert job.status == "done", (job.status, job.error)
        new = {s["id"] for s in S.list_sweeps(ws) if s["complete"]} - before
        assert len(new) == 1
        res, summ = S.load_results(ws, new.pop())
        assert summ["spec"]["layers"] == [3] and summ["n_items"] == 4 and len(res) == 4 * 2 * 2
    finally:
        ui.set_model_loader(None)


def test_probe_p_of_a_row_does_not_depend_on_its_batch():
    """Probe-conditioned steering's p(correct) for a row is bit-identical alone and in a batch
    (a float32 matrix-vector product over the batch rounds rows by the batch size)."""
    from metacog.steering.intervene import probe_p

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(16, 576, generator=g) * 3).to(torch.bfloat16)
    coef = torch.randn(576, generator=g).numpy() * 0.05
    full = probe_p(x, coef, 0.3)
    for b in range(16):
        assert torch.equal(probe_p(x[b : b + 1], coef, 0.3), full[b : b + 1]), b
    for B in (2, 3, 6):
        assert torch.equal(probe_p(x[:B], coef, 0.3), full[:B])
    want = 1 / (1 + np.exp(-(x.double().numpy() @ coef + 0.3)))
    np.testing.assert_allclose(full.numpy(), want, rtol=1e-6)
