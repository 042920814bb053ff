"""Confidence methods side by side (metacog.methods): each method on a tiny random Llama gives a
score in [0, 1] per pool item; the rules checked against direct computations (sampling, the
multi-token label readout, the differentiable 0-100 readout, self-consistency agreement);
Bradley-Terry/Elo recover a planted ranking; post-hoc calibration never sees eval items."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from finetune_helpers import tiny_model_and_workspace


# ------------------------------------------------------------------------------ generation
def test_sampling_is_seeded_and_batch_independent(tiny_lm):
    from metacog.model.generation import generate

    tok = tiny_lm.tokenizer
    prompts = [tok("What is the capital of France?")["input_ids"], tok("Kenya")["input_ids"], tok("The atomic number")["input_ids"]]
    a = generate(tiny_lm, prompts, 6, batch_size=3, temperature=1.0, seeds=[1, 2, 3])
    b = generate(tiny_lm, prompts, 6, batch_size=1, temperature=1.0, seeds=[1, 2, 3])
    assert a == b  # a row's sample does not depend on its batch
    c = generate(tiny_lm, prompts, 6, batch_size=3, temperature=1.0, seeds=[7, 8, 9])
    assert c != a  # other seeds, other samples (random model: near-uniform over 400 tokens)
    g = generate(tiny_lm, prompts, 6, batch_size=3)
    assert generate(tiny_lm, prompts, 6, batch_size=3, temperature=1e-4, seeds=[1, 2, 3]) == g  # T -> 0 is greedy
    with pytest.raises(ValueError):
        generate(tiny_lm, prompts, 6, temperature=1.0)


def test_first_sampled_token_is_the_inverse_cdf_draw(tiny_lm):
    from metacog.model.generation import greedy_batch

    tok = tiny_lm.tokenizer
    ids = tok("What is the capital of Peru?")["input_ids"]
    with torch.no_grad():
        p = torch.softmax(tiny_lm.model(input_ids=torch.tensor([ids])).logits[0, -1].float() / 0.7, -1)
    u = float(torch.rand((), generator=torch.Generator().manual_seed(5)))
    want = int(torch.searchsorted(p.cumsum(-1), torch.tensor([u * float(p.sum())]))[0])
    eos = tok.eos_token_id
    got = tok(greedy_batch(tiny_lm, [ids], 1, temperature=0.7, seeds=[5])[0], add_special_tokens=False)["input_ids"]
    assert (got[:1] == [want]) or (want == eos and got == [])


# ------------------------------------------------------------------------------ label readout
def test_label_readout_matches_brute_force_multi_token(tiny_lm):
    from metacog.data import prompts
    from metacog.readout.values import label_ids, read_labels

    tok = tiny_lm.tokenizer
    labels = ("True", "False")
    lids = label_ids(tok, labels, True)
    assert max(len(x) for x in lids) > 1  # the tiny tokenizer splits them: the multi-token path is exercised
    prefixes = [prompts.encode_uncertainty_query(tok, True, f"What is the capital of Kenya? ({i})", ans, labels).ids
                for i, ans in enumerate(["Nairobi", "Paris is the answer", ""])]
    got = read_labels(tiny_lm, prefixes, labels, batch_size=2)
    for b, pre in enumerate(prefixes):
        raw = []
        for ids in lids:  # one full forward per token, no batching, no cache
            lp, seq = 0.0, list(pre)
            for t in ids:
                with torch.no_grad():
                    z = torch.log_softmax(tiny_lm.model(input_ids=torch.tensor([seq])).logits[0, -1].double(), -1)
                lp += float(z[t])
                seq.append(t)
            raw.append(math.exp(lp))
        want = np.array(raw) / sum(raw)
        np.testing.assert_allclose(got[b], want, rtol=1e-4, atol=1e-7)
    assert np.allclose(got.sum(1), 1.0)


def test_single_token_labels_use_one_forward(tiny_lm):
    from metacog.readout.values import read_labels

    tok = tiny_lm.tokenizer
    pre = [tok("Which answer? Reply with 1 or 2.")["input_ids"]]
    p = read_labels(tiny_lm, pre, ("1", "2"))
    with torch.no_grad():
        z = torch.softmax(tiny_lm.model(input_ids=torch.tensor(pre)).logits[0, -1].double(), -1)
    i1, i2 = tok("1", add_special_tokens=False)["input_ids"][0], tok("2", add_special_tokens=False)["input_ids"][0]
    assert p[0, 0] == pytest.approx(float(z[i1] / (z[i1] + z[i2])), rel=1e-4)


def test_shared_prefix_cache_gives_the_same_label_probabilities(tiny_lm):
    from metacog.data import prompts
    from metacog.readout.values import read_labels

    tok = tiny_lm.tokenizer
    qs = [("What is the capital of France?", "Paris"), ("Which country is Lima in?", "Peru"), ("What is the chemical symbol for gold?", "Au"),
          ("The atomic number of carbon", "6 oxygen helium")]
    enc = [prompts.encode_pairwise(tok, True, q1, a1, q2, a2).ids for (q1, a1) in qs for (q2, a2) in qs if q1 != q2]
    a = read_labels(tiny_lm, enc, prompts.PAIRWISE_LABELS, batch_size=5, share_prefix=True)
    b = read_labels(tiny_lm, enc, prompts.PAIRWISE_LABELS, batch_size=1, share_prefix=False)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert a[:, 0].std() > 0  # the items differ, so do the answers


# ------------------------------------------------------------------------------ differentiable 0-100
def test_value_logprobs_equals_readout_without_lookahead_and_has_gradients(tiny_lm):
    from metacog.data import prompts
    from metacog.readout.values import read_values, value_logprobs

    tok = tiny_lm.tokenizer
    pre = [prompts.encode_inline(tok, True, "What is the capital of Japan?", a).ids for a in ("Tokyo", "Kyoto city")]
    ref = read_values(tiny_lm, pre, dot_tol=1.0).probs  # "." counts as the end, as in value_logprobs
    lp = value_logprobs(tiny_lm.model, tok, pre)
    np.testing.assert_allclose(lp.exp().detach().double().numpy(), ref, rtol=2e-4, atol=1e-9)
    w = next(p for p in tiny_lm.model.parameters() if p.dim() == 2)
    w.grad = None
    lp.exp().sum().backward()
    assert w.grad is not None and float(w.grad.abs().sum()) > 0
    w.grad = None


# ------------------------------------------------------------------------------ self-consistency
def test_agreement_by_hand():
    from metacog.methods.self_consistency import agrees

    assert agrees("Paris", "The capital of France is Paris.")
    assert agrees("The capital is paris", "Paris")
    assert not agrees("Lyon", "Paris")
    assert not agrees("", "Paris")
    samples = ["Paris.", "It is Paris", "Lyon", "Marseille", "paris"]
    assert np.mean([agrees(s, "Paris") for s in samples]) == pytest.approx(3 / 5)


# ------------------------------------------------------------------------------ ranking
def test_bradley_terry_and_elo_recover_a_planted_ranking():
    from scipy.stats import spearmanr

    from metacog.methods import ranking

    rng = np.random.default_rng(0)
    n = 60
    theta = np.linspace(-2.5, 2.5, n)[rng.permutation(n)]
    pairs = ranking.schedule(n, 3000, seed=1)
    assert len(pairs) == 3000 and (pairs[:, 0] != pairs[:, 1]).all()
    counts = np.bincount(pairs.ravel(), minlength=n)
    assert counts.max() - counts.min() <= 2  # balanced schedule
    assert np.array_equal(pairs, ranking.schedule(n, 3000, seed=1))
    p = 1 / (1 + np.exp(-(theta[pairs[:, 0]] - theta[pairs[:, 1]])))
    hard = (rng.random(len(p)) < p).astype(float)
    bt = ranking.bradley_terry(n, pairs, hard, prior=0.01)
    assert spearmanr(bt, theta).correlation > 0.93
    assert np.corrcoef(bt, theta)[0, 1] > 0.93
    assert spearmanr(ranking.bradley_terry(n, pairs, p, prior=0.01), theta).correlation > 0.98  # soft outcomes
    el = ranking.elo(n, pairs, hard, k=32)
    assert spearmanr(el, theta).correlation > 0.85
    # a position bias (the first shown wins more often) is absorbed by the order effect
    pb = 1 / (1 + np.exp(-(theta[pairs[:, 0]] - theta[pairs[:, 1]] + 1.5)))
    biased = (rng.random(len(pb)) < pb).astype(float)
    th_b, beta = ranking.bradley_terry(n, pairs, biased, prior=0.01, return_order=True)
    assert beta == pytest.approx(1.5, abs=0.25) and spearmanr(th_b, theta).correlation > 0.9
    assert spearmanr(ranking.elo(n, pairs, biased, k=32), theta).correlation > 0.8
    shuffled = ranking.bradley_terry(n, pairs, rng.permutation(hard), prior=0.01)
    assert abs(spearmanr(shuffled, theta).correlation) < 0.4  # a test that can fail: no signal, no ranking
    s = ranking.to_score(bt)
    assert ((s > 0) & (s < 1)).all()


# ------------------------------------------------------------------------------ post-hoc calibration
def _frame(seed=0, n=80):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.4
    s = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, n), 0.01, 0.99)
    split = np.where(np.arange(n) % 2 == 0, "calibration", "eval")
    return pd.DataFrame({"id": [f"i{i}" for i in range(n)], "split": split, "score": s, "correct": y})


@pytest.mark.parametrize("kind", ["platt", "isotonic", "temperature"])
def test_posthoc_never_sees_eval_items(kind):
    from metacog.methods.calibrate import fit_calibrator, posthoc

    df = _frame()
    seen = []

    def spy(k, s, y):
        seen.append((np.asarray(s).copy(), np.asarray(y).copy()))
        return fit_calibrator(k, s, y)

    out = posthoc(kind, df, fit=spy)
    cal = df[df["split"] == "calibration"]
    assert np.array_equal(seen[0][0], cal["score"].to_numpy()) and np.array_equal(seen[0][1], cal["correct"].to_numpy(float))
    assert ((out >= 0) & (out <= 1)).all()
    # changing every eval label and eval score changes nothing in how the calibrator maps scores
    df2 = df.copy()
    ev = df2["split"] == "eval"
    df2.loc[ev, "correct"] = ~df2.loc[ev, "correct"]
    out2 = posthoc(kind, df2)
    np.testing.assert_array_equal(out, out2)
    # ...whereas changing calibration labels does (the test can fail)
    df3 = df.copy()
    c = df3["split"] == "calibration"
    df3.loc[c, "correct"] = np.random.default_rng(1).permutation(df3.loc[c, "correct"].to_numpy())
    assert not np.allclose(posthoc(kind, df3), out)


def test_posthoc_refuses_a_leaked_eval_item():
    from metacog.methods.calibrate import CalibrationLeak, posthoc

    df = _frame()
    df.loc[0, "id"] = df.loc[1, "id"]  # the same item on both sides
    with pytest.raises(CalibrationLeak):
        posthoc("platt", df)


def test_temperature_scaling_fits_a_known_temperature():
    from metacog.methods.calibrate import fit_calibrator

    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20000)
    y = rng.random(z.size) < 1 / (1 + np.exp(-z))  # calibrated at T=1 on logit z
    s = 1 / (1 + np.exp(-2.0 * z))  # overconfident by T = 2
    f = fit_calibrator("temperature", s, y)
    np.testing.assert_allclose(f(np.array([1 / (1 + np.exp(-2.0))])), [1 / (1 + np.exp(-1.0))], atol=0.02)


# ------------------------------------------------------------------------------ settings and fine-tuning kinds
def test_absurd_method_settings_are_refused():
    from metacog.methods import MethodSettings, MethodSettingsError, resolve

    for kw in (dict(k_samples=0), dict(temperature=0), dict(n_comparisons=0), dict(eval_limit=1), dict(tune_lr=2.0),
               dict(brier_format="x"), dict(probe_run="")):
        with pytest.raises(MethodSettingsError):
            MethodSettings(**kw)
    with pytest.raises(ValueError, match="unknown method"):
        resolve("p_true,nope")
    assert resolve("all")[0] == "verbal_inline" and "brier_tuning" in resolve("all")


def test_finetune_kinds_for_the_training_methods(tiny_tok):
    from metacog.readout.values import label_ids
    from metacog.finetune import FinetuneSettings
    from metacog.finetune.settings import SettingsError
    from metacog.finetune.targets import encode_example

    with pytest.raises(SettingsError):
        FinetuneSettings(format="uncertainty-query", targets="probe")
    with pytest.raises(SettingsError):
        FinetuneSettings(objective="brier", targets="probe")
    with pytest.raises(SettingsError):
        FinetuneSettings(objective="brier", targets="binary", backend="mlx")
    rec = dict(id="a", question="What is the capital of Peru?", answer="Lima", target=100, kind="short", choices=None)
    ex = encode_example(tiny_tok, True, rec, "uncertainty-query", "confidence")
    yes = label_ids(tiny_tok, ("Yes", "No"), True)[0]
    assert [t for t in ex.labels if t != -100] == yes == ex.input_ids[-len(yes):]  # trained on the tokens read_labels scores
    ex0 = encode_example(tiny_tok, True, {**rec, "target": 0}, "uncertainty-query", "confidence")
    assert [t for t in ex0.labels if t != -100] == label_ids(tiny_tok, ("Yes", "No"), True)[1]
    eb = encode_example(tiny_tok, True, rec, "inline", "confidence", objective="brier")
    assert set(eb.labels) == {-100} and eb.target == 100
    assert tiny_tok.decode(eb.input_ids).endswith("Confidence:")


# ------------------------------------------------------------------------------ every method on a tiny workspace
@pytest.fixture(scope="module")
def tiny_ws(tmp_path_factory):
    return tiny_model_and_workspace(tmp_path_factory.mktemp("methods"), "m")


SMALL = dict(k_samples=2, n_comparisons=40, tune_updates=2, tune_batch_size=2, batch_size=8, n_boot=50)


def test_every_method_scores_every_pool_item_in_unit_interval(tiny_ws):
    from metacog.methods import MethodSettings, load_scores, meta, methods_table, names, run_methods, stored_methods

    ws, lm = tiny_ws
    s = MethodSettings(**SMALL)
    status = run_methods(ws, "all", s, lm=lm, on_error="raise")
    assert set(status) == set(names()) and set(status.values()) == {"computed"}
    items = pd.read_parquet(ws.path("items.parquet"))
    pool = items[items["split"].isin(["calibration", "eval"])].sort_values("row")
    assert not items.loc[items["split"] == "train", "row"].isin(pool["row"]).any()
    for n in names():
        sc = load_scores(ws, n)
        assert sc["row"].tolist() == pool["row"].tolist(), n
        v = sc["score"].to_numpy(float)
        if not n.startswith("verbal") and n != "probe_targeted":  # parsed text may be missing
            assert not np.isnan(v).any(), n
        v = v[~np.isnan(v)]
        assert ((v >= 0) & (v <= 1)).all(), n
        assert meta(ws, n)["cost"]
    assert set(stored_methods(ws)) == set(names())
    sc = load_scores(ws, "self_consistency")
    assert set(sc["n_agree"]) <= {0, 1, 2} and np.allclose(sc["score"], sc["n_agree"] / 2)
    info = meta(ws, "self_consistency")["info"]  # one shared prefill per item: k-1 prompt copies saved
    assert info["prompt_tokens"] > 0 and info["generated_tokens"] >= 0
    assert info["token_forwards_unshared"] - info["token_forwards_shared"] == (SMALL["k_samples"] - 1) * info["prompt_tokens"]
    t = methods_table(ws, n_boot=50)
    assert set(t["base"]) == set(names())
    fitted = t[t["note"] == ""]
    assert (fitted["n_eval"] == int((pool["split"] == "eval").sum())).all()
    assert set(fitted.loc[fitted["calibration"] == "none", "base"]) == set(names())
    assert t.loc[t["note"] != "", "note"].str.contains("both classes").all()  # a one-class calibration split says so
    # the training methods went through the fine-tuning runs registry, on train items only
    from metacog.finetune.runs import list_runs
    from metacog.finetune.targets import read_targets

    reg = list_runs(ws)
    assert len(reg) == 3  # calibration-tuning, probe-targeted, Brier tuning
    for r in reg["run"]:
        tg = read_targets(ws.path("runs", r, "targets.jsonl"))
        assert set(tg["split"]) == {"train"} and not tg["id"].isin(pool["id"]).any()
    # a second call recomputes nothing
    again = run_methods(ws, "all", s, lm=lm, on_error="raise")
    assert set(again.values()) == {"fresh"}
    # a changed setting makes only the methods that depend on it stale
    again = run_methods(ws, "all", MethodSettings(**{**SMALL, "k_samples": 3}), lm=lm, on_error="raise")
    assert again["self_consistency"] == "computed" and again["p_true"] == "fresh"


def test_a_stopped_method_resumes_from_finished_chunks(tiny_ws):
    from metacog.methods import MethodSettings, make_context
    from metacog.core.runtime import Stopped

    ws, lm = tiny_ws
    ctx = make_context(ws, MethodSettings(**SMALL), lm=lm)
    calls = []

    def fn(a, b):
        calls.append(a)
        return pd.DataFrame({"row": list(range(a, b)), "score": [0.5] * (b - a)})

    stop = {"after": 2}
    ctx.should_stop = lambda: len(calls) >= stop["after"]
    with pytest.raises(Stopped):
        ctx.chunked("probe-test", "k1", 10, fn, chunk=3)
    assert calls == [0, 3]
    ctx.should_stop = None
    df = ctx.chunked("probe-test", "k1", 10, fn, chunk=3)
    assert calls == [0, 3, 6, 9] and df["row"].tolist() == list(range(10))


def test_methods_cli(tiny_ws, capsys):
    from metacog.cli import main

    ws, lm = tiny_ws
    assert main(["methods", "--workspace", str(ws.root), "--list"]) == 0
    assert "relative_bt" in capsys.readouterr().out
    assert main(["methods", "--workspace", str(ws.root), "--methods", "nope"]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main(["methods", "--workspace", str(ws.root), "--k", "0"]) == 2
    assert main(["methods", "--workspace", str(ws.root / "missing"), "--methods", "probe"]) == 2
    # fresh results: the table is printed without a model
    rc = main(["methods", "--workspace", str(ws.root), "--methods", "verbal_inline,probe", "--quiet", "--no-posthoc"])
    out = capsys.readouterr().out
    assert rc == 0 and "probe" in out and "AUROC" in out
    assert ws.path("methods", "table.csv").exists()


@pytest.mark.e2e
def test_methods_on_the_default_model(real_lm, real_study, tmp_path):
    """The embedded model on a copy of the shared real study (up to 6 calibration + 6 eval items)."""
    from conftest import copy_workspace

    from metacog.methods import MethodSettings, load_scores, run_methods

    ws = copy_workspace(real_study, tmp_path / "w")
    s = MethodSettings(eval_limit=6, calibration_limit=6, k_samples=2, n_comparisons=12, batch_size=8)
    st = run_methods(ws, "verbal_inline,probe,p_true,self_consistency,relative_bt", s, lm=real_lm, on_error="raise")
    assert set(st.values()) == {"computed"}
    for n in st:
        v = load_scores(ws, n)["score"].to_numpy(float)
        assert len(v) == 12 and ((v[~np.isnan(v)] >= 0) & (v[~np.isnan(v)] <= 1)).all()


def test_probe_targeted_uses_a_given_run_and_refuses_other_kinds(tiny_ws):
    from metacog.finetune.runs import list_runs
    from metacog.methods import MethodSettings, load_scores, meta, run_methods

    ws, lm = tiny_ws
    reg = list_runs(ws)
    if not len(reg):  # this test alone: make the short runs first
        run_methods(ws, "probe_targeted,calibration_tuning", MethodSettings(**SMALL), lm=lm, on_error="raise")
        reg = list_runs(ws)
    by_name = {r: ws.path("runs", r) for r in reg["run"]}
    probe = next(r for r in by_name if "probe-targeted" in r)
    other = next(r for r in by_name if "calibration-tuning" in r)
    n_before = len(reg)
    st = run_methods(ws, "probe_targeted", MethodSettings(**SMALL, probe_run=probe), lm=lm, on_error="raise")
    assert st["probe_targeted"] in ("computed", "fresh")
    assert meta(ws, "probe_targeted")["info"]["run"] == probe and len(list_runs(ws)) == n_before  # no new run
    sc = load_scores(ws, "probe_targeted")
    assert {"verbal", "text"} <= set(sc.columns)
    with pytest.raises(Exception, match="not a probe-targeted inline run"):
        run_methods(ws, "probe_targeted", MethodSettings(**SMALL, probe_run=other), lm=lm, on_error="raise")
