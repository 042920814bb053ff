"""Multitask fine-tuning (single-question + pairwise) and the transfer table.

Pairwise targets from the probe's out-of-fold p (train split only; the higher p wins; ties
skipped; winner position balanced), the multitask mix ratio, the update plan, pairwise
evaluation (accuracy on correct/incorrect pairs, Bradley-Terry AUROC) and the transfer table.
Tiny random Llama saved to disk, workspace from the real stages (finetune_helpers.py).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from finetune_helpers import build_workspace, tiny_lm_fixture, write_fake_probes

from metacog.finetune import FinetuneSettings, SettingsError, create_run, execute
from metacog.finetune.runner import evaluate as evaluate_run
from metacog.finetune.targets import read_targets
from metacog.finetune.tasks import build_task, encode_pair, pair_items, read_pairs
from metacog.finetune import transfer

FAST = dict(batch_size=4, grad_accum=2, lr=5e-3, checkpoint_every=50, val_fraction=0.1, seed=3)


lm = tiny_lm_fixture("mt")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mt-cache")


@pytest.fixture(scope="module")
def ws(cache, lm):
    w = build_workspace(cache / "workspaces" / "tiny", lm, n=60)
    write_fake_probes(w, seed=5)  # known out-of-fold p (floats: no ties)
    return w


@pytest.fixture(scope="module")
def ood_ws(cache, lm):
    return build_workspace(cache / "workspaces" / "tiny-ood", lm, n=40, seed=1)


def _train_ids(ws):
    from metacog.stages.study import load_items

    it = load_items(ws)
    return set(it.loc[it["split"] == "train", "id"]), set(it.loc[it["split"] != "train", "id"])


# ------------------------------------------------------------------------------ settings and plan
@pytest.mark.parametrize("kw, msg", [
    (dict(task="triple"), "task must be one of"),
    (dict(pairwise_fraction=0.5), "use task multitask"),
    (dict(task="pairwise", pairwise_fraction=0.5), "use task multitask"),
    (dict(task="multitask", pairwise_fraction=1.0), "strictly between 0 and 1"),
    (dict(task="multitask", pairwise_fraction=0.0), "strictly between 0 and 1"),
    (dict(task="pairwise", targets="constant"), "tie every pair"),
    (dict(task="multitask", targets="binary", objective="brier"), "objective ce"),
    (dict(task="pairwise", targets="binary", format="uncertainty-query"), "inline or two-pass"),
])
def test_task_settings_are_checked(kw, msg):
    with pytest.raises(SettingsError, match=msg):
        FinetuneSettings(**kw)


def test_single_task_keys_are_unchanged():
    """Adding the task fields must not change the key of an existing single-task run."""
    from metacog.core.settings import stable_hash, to_dict

    s = FinetuneSettings()
    d = to_dict(s)
    del d["task"], d["pairwise_fraction"]
    assert s.key() == stable_hash("finetune", d)
    assert FinetuneSettings(task="pairwise").key() != s.key()
    assert FinetuneSettings(task="multitask").pair_share == 0.5
    assert FinetuneSettings(task="multitask", pairwise_fraction=0.25).pair_share == 0.25


# ------------------------------------------------------------------------------ pairs
def test_pair_items_winner_ties_balance_and_bounded_appearances():
    rng = np.random.default_rng(0)
    p = rng.random(41)
    p[:6] = 0.5  # a block of ties: never paired with each other
    pairs, info = pair_items(p, 41, seed=7)
    m = len(pairs)
    assert m == info["made"] == 41
    a, b = p[pairs[:, 0]], p[pairs[:, 1]]
    assert np.all(a != b)
    first_wins = a > b
    assert first_wins.sum() == m // 2  # the winner is first in exactly half (floor)
    und = {tuple(sorted(x)) for x in pairs.tolist()}
    assert len(und) == m  # no pair twice
    counts = np.bincount(pairs.ravel(), minlength=p.size)
    assert counts.max() == info["max_appearances"] <= info["rounds"]  # at most one pair per permutation used
    assert info["rounds"] <= 4  # 41 pairs of 41 items: about two permutations (plus ties skipped)
    # all tied: no pair
    none, inf2 = pair_items(np.full(10, 0.3), 5, seed=1)
    assert len(none) == 0 and inf2["ties_skipped"] > 0


@pytest.mark.parametrize("seed", range(12))
def test_target_position_is_balanced_for_any_seed(seed):
    p = np.random.default_rng(seed).random(30 + seed)
    pairs, _ = pair_items(p, 30 + seed, seed=seed)
    w1 = int((p[pairs[:, 0]] > p[pairs[:, 1]]).sum())
    assert abs(w1 - (len(pairs) - w1)) <= 1


def test_pairwise_targets_from_train_oof_p(ws):
    s = FinetuneSettings(task="pairwise", **FAST)
    df, pairs, info = build_task(ws, s)
    tr_ids, other = _train_ids(ws)
    assert set(pairs["id_first"]) | set(pairs["id_second"]) <= tr_ids
    assert not (set(pairs["id_first"]) | set(pairs["id_second"])) & other
    assert (pairs["split_first"] == "train").all() and (pairs["split_second"] == "train").all()
    # the target is the item with the higher out-of-fold p of the chosen probe
    oof = np.load(ws.path("probes", "oof.npy"))
    from metacog.stages.study import probe_positions

    pr = info["probe"]
    pp = oof[:, pr["layer"], probe_positions(ws, oof).index(pr["position"])].astype(float)
    want = np.where(pp[pairs["row_first"]] > pp[pairs["row_second"]], 1, 2)
    assert (pairs["winner"].to_numpy() == want).all()
    assert (pairs["target_label"] == np.where(want == 1, "1", "2")).all()
    # roles: pairs never mix train and val items
    role = df.set_index("id")["role"]
    assert (pairs["id_first"].map(role) == pairs["role"]).all() and (pairs["id_second"].map(role) == pairs["role"]).all()
    # balanced position among the training pairs
    trp = pairs[pairs["role"] == "train"]
    assert abs(int((trp["winner"] == 1).sum()) - int((trp["winner"] == 2).sum())) <= 1
    # one pair per item: matched length; no single-question examples
    n_items = int((df["role"] == "train").sum())
    assert len(trp) == n_items and not df["single"].any()


def test_shuffled_pairwise_compares_shuffled_p(ws):
    base, _, _ = build_task(ws, FinetuneSettings(task="pairwise", **FAST))
    df, pairs, info = build_task(ws, FinetuneSettings(task="pairwise", targets="shuffled", **FAST))
    # the same items, the same multiset of p, but not item by item
    assert sorted(df["pair_p"]) == pytest.approx(sorted(df["probe_p"]))
    assert not np.allclose(df["pair_p"], df["probe_p"])
    # single-question shuffled targets are round(100 * shuffled p), as before tasks existed
    assert (df["target"] == np.clip(np.round(100 * df["pair_p"]), 0, 100).astype(int)).all()
    pp = df.set_index("id")["pair_p"]
    want = np.where(pairs["id_first"].map(pp).to_numpy() > pairs["id_second"].map(pp).to_numpy(), 1, 2)
    assert (pairs["winner"].to_numpy() == want).all()


@pytest.mark.parametrize("f", [0.25, 0.5, 0.8])
def test_multitask_ratio_is_honoured(ws, f):
    s = FinetuneSettings(task="multitask", pairwise_fraction=f, **FAST)
    df, pairs, info = build_task(ws, s)
    n = int((df["role"] == "train").sum())
    n_pair = int((pairs["role"] == "train").sum())
    n_single = int(((df["role"] == "train") & df["single"]).sum())
    assert n_pair == round(f * n) and n_single == n - round(f * n)
    assert n_pair + n_single == n  # one example per training item, whatever the task
    assert info["pairwise"]["fraction_actual"] == pytest.approx(f, abs=1 / n)


def test_plan_counts_updates_and_epochs(ws):
    run = create_run(ws, FinetuneSettings(task="multitask", epochs=2, **FAST))
    pl = run.settings()["plan"]
    df = read_targets(run.file("targets.jsonl"))
    pairs = read_pairs(run.file("pairs.jsonl"))
    n_tr = int(((df["role"] == "train") & df["single"]).sum() + (pairs["role"] == "train").sum())
    n_va = int(((df["role"] == "val") & df["single"]).sum() + (pairs["role"] == "val").sum())
    assert pl["n_train"] == n_tr and pl["n_val"] == n_va
    upe = math.ceil(math.ceil(n_tr / 4) / 2)
    assert pl["updates_per_epoch"] == upe and pl["updates_planned"] == 2 * upe and pl["epochs_planned"] == 2
    assert "multitask" in run.id
    # the same epochs of single training: the same number of updates (matched length)
    single = create_run(ws, FinetuneSettings(epochs=2, **FAST)).settings()["plan"]
    assert single["n_train"] == n_tr and single["updates_planned"] == pl["updates_planned"]


def test_pair_example_trains_only_the_reply(ws, lm):
    from metacog.data import prompts
    from metacog.readout.values import label_ids

    _, pairs, _ = build_task(ws, FinetuneSettings(task="pairwise", **FAST))
    for rec in pairs.head(6).to_dict("records"):
        ex = encode_pair(lm.tokenizer, lm.is_chat, rec, "confidence")
        enc = prompts.encode_pairwise(lm.tokenizer, lm.is_chat, rec["question_first"], rec["answer_first"],
                                      rec["question_second"], rec["answer_second"])
        want = label_ids(lm.tokenizer, prompts.PAIRWISE_LABELS, lm.is_chat)[rec["winner"] - 1]
        assert ex.input_ids == list(enc.ids) + want
        assert [x for x in ex.labels if x != -100] == want
        assert ex.target == (100 if rec["winner"] == 1 else 0)


def test_an_eval_item_in_a_pairs_file_fails(ws):
    from metacog.finetune.targets import TargetError

    run = create_run(ws, FinetuneSettings(task="pairwise", **FAST))
    p = run.file("pairs.jsonl")
    recs = [json.loads(x) for x in p.read_text().splitlines()]
    recs[0]["split_second"] = "eval"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(TargetError, match="not in the training split"):
        read_pairs(p)


# ------------------------------------------------------------------------------ pairwise metrics
def test_correct_incorrect_pairs():
    y = np.array([1] * 7 + [0] * 12, bool)
    pairs = transfer.correct_incorrect_pairs(y, rounds=2, seed=4)
    assert (y[pairs].sum(axis=1) == 1).all()  # one correct, one incorrect
    assert int(y[pairs[:, 0]].sum()) == len(pairs) // 2  # correct first in half
    counts = np.bincount(pairs.ravel(), minlength=y.size)
    assert counts.max() <= 2 and len(pairs) <= 2 * 7
    assert len(transfer.correct_incorrect_pairs(np.ones(5, bool))) == 0


def test_pairwise_accuracy_and_bt_auroc_exact():
    y = np.array([1, 1, 0, 0, 1, 0], bool)
    pairs = np.array([[0, 2], [3, 1], [4, 5], [5, 0]])
    p1 = np.array([0.9, 0.2, 0.4, 0.5])  # right, right, wrong, tie (half)
    r = transfer.pairwise_accuracy(p1, pairs, y, n_boot=200)
    assert r["accuracy"] == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert r["soft_accuracy"] == pytest.approx((0.9 + 0.8 + 0.4 + 0.5) / 4)
    assert r["accuracy_ci"][0] <= r["accuracy"] <= r["accuracy_ci"][1]
    # outcomes that always favour the correct item: BT ranks every correct item first
    from metacog.methods import ranking

    sch = ranking.schedule(6, 60, 0)
    o = np.where(y[sch[:, 0]] == y[sch[:, 1]], 0.5, np.where(y[sch[:, 0]], 0.95, 0.05))
    bt, sc = transfer.bt_auroc(o, sch, y, n_boot=200)
    assert bt["bt_auroc"] == 1.0 and sc[y].min() > sc[~y].max()


def test_ece_ci_brackets_a_miscalibrated_ece():
    """A clearly overconfident predictor: the item bootstrap CI brackets its ECE (~0.25); a
    bigger sample gives a narrower interval. (For a well-calibrated predictor the binned ECE is
    biased upward, so its percentile interval may sit above the point estimate.)"""
    from metacog.stats import metrics

    widths = []
    for n in (80, 640):
        rng = np.random.default_rng(1)
        c = rng.random(n)
        y = rng.random(n) < c / 2
        lo, hi = transfer.ece_ci(c, y, n_boot=300)
        assert lo <= metrics.ece(c, y, 10) <= hi and 0 <= lo < hi <= 1
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 1.8


# ------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def trained(ws, ood_ws, lm):
    """Three tiny runs (pairwise, multitask, shuffled multitask), each evaluated on 10 eval
    items; the multitask run also out-of-domain. Returns {row label: run id}."""
    runs = {}
    for name, kw in (("pairwise", dict(task="pairwise")), ("multitask", dict(task="multitask")),
                     ("shuffled", dict(task="multitask", targets="shuffled"))):
        run = create_run(ws, FinetuneSettings(max_updates=2, epochs=None, **kw, **FAST))
        st = execute(ws, run.id, lm=lm)
        assert st["status"] == "done" and st["updates_run"] == 2
        ev = evaluate_run(ws, run.id, lm=lm, limit=10)
        runs[name] = run.id
        pw = ev["pairwise"]
        assert pw["base"]["n_pairs"] > 0 and pw["ft"]["n"] == 10 and "bt_auroc" in pw["ft"]
        assert pw["ft"]["max_appearances"] <= transfer.PAIR_ROUNDS
    transfer.evaluate_ood(ws, runs["multitask"], ood_ws, lm=lm, limit=10)
    return runs


def test_no_eval_item_in_training(ws, trained):
    from metacog.finetune.runs import get_run

    _, non_train = _train_ids(ws)
    for rid in trained.values():
        r = get_run(ws, rid)
        pairs = read_pairs(r.file("pairs.jsonl"))
        ev_ids = set(pd.read_parquet(r.file("per_item.parquet"))["id"])
        seen = set(pairs["id_first"]) | set(pairs["id_second"]) | set(read_targets(r.file("targets.jsonl"))["id"])
        assert seen and not seen & ev_ids and not seen & non_train


def test_transfer_table_rows_columns_and_cis(ws, trained):
    df = transfer.transfer_table(ws)
    rows = list(dict.fromkeys(df["row"]))
    assert rows[0] == "none" and sorted(rows[1:]) == ["multitask", "pairwise", "shuffled"]
    assert set(df["metric"]) == set(transfer.METRICS)
    assert set(df["domain"]) == {"in-domain", "out-of-domain"}
    ood = df[df["domain"] == "out-of-domain"]
    assert set(ood["row"]) == {"none", "multitask"}  # the base row once per domain
    ind = df[(df["domain"] == "in-domain")]
    assert len(ind) == 4 * len(transfer.METRICS)
    fin = ind[np.isfinite(ind["value"]) & np.isfinite(ind["lo"])]
    assert ((fin["lo"] <= fin["value"] + 1e-9) & (fin["value"] <= fin["hi"] + 1e-9)).all()
    assert set(fin["metric"]) >= {"pairwise_accuracy", "bt_auroc"}
    assert ind.loc[ind["row"] == "multitask", "updates"].iloc[0] == 2
    w = transfer.wide(df)
    assert list(w.index[:1]) == ["none"] and w.shape[0] == 4
    assert any(c.startswith("out-of-domain") and c.endswith("BT AUROC") for c in w.columns)
    md = transfer.to_markdown(df)
    assert md.count("\n") == 4 + 1 and "pairwise accuracy" in md
    transfer.save_table(ws, df)
    assert transfer.load_table(ws).shape == df.shape


def test_cli_task_dry_run(ws, capsys):
    from metacog.cli import main

    rc = main(["finetune", "--workspace", str(ws.root), "--task", "multitask", "--pairwise-fraction", "0.25",
               "--epochs", "1", "--dry-run"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["settings"]["task"] == "multitask" and out["targets"]["pairwise"]["fraction_requested"] == 0.25
    assert out["plan"]["n_train"] == out["targets"]["n_train"]


def test_report_and_results_page_show_the_transfer_table(ws, trained, cache, tmp_path, monkeypatch):
    from metacog.compare.report import write_report

    transfer.save_table(ws, transfer.transfer_table(ws))
    out, rep = write_report(tmp_path / "r.html", ws)
    html = out.read_text()
    assert "Transfer: single-question and pairwise training" in html and "BT AUROC" in html and "multitask" in html

    at = _open_page(cache, "6_Results.py", monkeypatch)
    assert not at.exception, [e.value for e in at.exception]
    assert "Transfer: single-question vs pairwise" in [h.value for h in at.subheader]
    t = [d.value for d in at.dataframe if "training" in d.value.columns]
    assert t and t[0]["training"].iloc[0] == "none"


def _open_page(cache, page: str, monkeypatch):
    """The app on the tiny workspace, switched to ``pages/<page>`` (AppTest)."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("METACOG_CACHE", str(cache))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[3] / "app.py"), default_timeout=120)
    at.query_params["ws"] = "tiny"
    at.run()
    at.switch_page(f"pages/{page}")
    at.run()
    return at


def test_cli_transfer_builds_the_table_without_a_model(ws, trained, capsys):
    from metacog.cli import main

    rc = main(["transfer", "--workspace", str(ws.root), "--runs", *trained.values(), "--no-evaluate"])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.startswith("| training |") and "single AUROC" in out and "out-of-domain" in out
    assert ws.path("transfer", "table.md").exists() and ws.path("transfer", "table.parquet").exists()


def test_finetune_page_offers_the_task(ws, cache, monkeypatch):
    at = _open_page(cache, "5_Fine-tune.py", monkeypatch)
    k = ws.root.name
    at.selectbox(key=f"ft-task-{k}").set_value("pairwise").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.selectbox(key=f"ft-kind-{k}").set_value("constant").run()  # every pair would tie: refused on the page
    assert any("tie every pair" in e.value for e in at.error)
