"""Multiple-choice scoring (docs/SCIENCE.md "Multiple-choice scoring"): summed, per-token,
per-character and PMI scores of the same stored option log-likelihoods."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from metacog.data import prompts
from metacog.stages.answers import (NEUTRAL_QUESTION, mc_accuracy_by_scoring, mc_option_scores, option_scores,
                             run_answers)
from metacog.core.settings import MC_SCORINGS, StudySettings
from metacog.core.workspace import Workspace

from conftest import tiny_items


def test_each_scoring_on_a_worked_example():
    # option 0 short and likely in total, option 1 long but likelier per character,
    # option 2 likely only because it is likely anyway (high neutral log-likelihood)
    ll = [-2.0, -3.0, -2.5]
    nt = [1, 4, 2]
    nc = [2, 20, 5]
    ln = [-2.5, -6.0, -0.5]
    pick = {sc: int(np.argmax(mc_option_scores(ll, nt, nc, ln, sc))) for sc in MC_SCORINGS}
    assert pick == {"sum": 0, "per_token": 1, "per_char": 1, "pmi": 1}
    np.testing.assert_allclose(mc_option_scores(ll, nt, nc, ln, "per_char"), [-1.0, -0.15, -0.5])
    np.testing.assert_allclose(mc_option_scores(ll, nt, nc, ln, "per_token"), [-2.0, -0.75, -1.25])
    np.testing.assert_allclose(mc_option_scores(ll, nt, nc, ln, "pmi"), [0.5, 3.0, -2.0])


def test_empty_option_never_wins_and_bad_input_is_refused():
    s = mc_option_scores([-5.0, float("-inf")], [2, 0], [3, 0], [-1.0, 0.0], "per_char")
    assert s[1] == -np.inf and np.argmax(s) == 0
    with pytest.raises(ValueError, match="unknown mc_scoring"):
        mc_option_scores([0.0], [1], [1], [0.0], "bytes")
    with pytest.raises(ValueError, match="shape"):
        mc_option_scores([0.0, 1.0], [1], [1], [0.0], "sum")


def test_length_bias_of_the_summed_score():
    """A simulated model that knows nothing (each character costs the same log-probability):
    summing picks the shortest option every time, per-character normalisation is indifferent."""
    rng = np.random.default_rng(0)
    wins_sum = wins_char = 0
    for _ in range(200):
        nc = rng.integers(3, 20, size=4)
        ll = -0.7 * nc + rng.normal(0, 0.01, size=4)
        wins_sum += int(np.argmax(mc_option_scores(ll, nc // 3 + 1, nc, ll * 0, "sum")) == np.argmin(nc))
        wins_char += int(np.argmax(mc_option_scores(ll, nc // 3 + 1, nc, ll * 0, "per_char")) == np.argmin(nc))
    assert wins_sum >= 190 and wins_char <= 100


def test_option_scores_match_direct_forwards(tiny_lm):
    tok = tiny_lm.tokenizer
    q, opts = "What is the capital of Peru?", ["Lima", "Paris"]
    got = option_scores(tiny_lm, [q], [opts], "plain")[0]
    for prompt_q, key in ((q, "option_loglik"), (NEUTRAL_QUESTION, "option_loglik_neutral")):
        p = prompts.encode_answer_prompt(tok, True, prompt_q, opts, "plain").ids
        for j, opt in enumerate(opts):
            o = tok(opt, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                lsm = torch.log_softmax(tiny_lm.model(input_ids=torch.tensor([p + o])).logits[0].float(), -1)
            direct = sum(float(lsm[len(p) - 1 + k, t]) for k, t in enumerate(o))
            assert got[key][j] == pytest.approx(direct, abs=1e-4)
            if key == "option_loglik":
                assert got["option_tokens"][j] == len(o) and got["option_chars"][j] == len(opt)


@pytest.mark.parametrize("scoring", MC_SCORINGS)
def test_answers_stage_uses_the_setting_and_reports_every_scoring(tmp_path, tiny_lm, scoring):
    items = tiny_items(4, mc=6)
    st = StudySettings(max_new_tokens=4, confidence_max_new_tokens=4, batch_size=4, mc_scoring=scoring)
    ws = Workspace(tmp_path)
    ans = run_answers(ws, tiny_lm, items, st)
    mc = ans[items["kind"].eq("mc").to_numpy()]
    truth = items.loc[items["kind"].eq("mc"), "answer_index"].to_numpy()
    for (_, r), t in zip(mc.iterrows(), truth):
        s = mc_option_scores(r["option_loglik"], r["option_tokens"], r["option_chars"], r["option_loglik_neutral"], scoring)
        assert r["chosen_index"] == int(np.argmax(s))
        assert r["answer"] == items.loc[items["row"] == r["row"], "choices"].iloc[0][r["chosen_index"]]
    acc = mc_accuracy_by_scoring(ans, items)
    assert acc["n"] == 6 and set(acc) == {"n", *MC_SCORINGS}
    assert acc[scoring] == pytest.approx(float((mc["chosen_index"].to_numpy() == truth).mean()))
    rec = ws.stage_record("answers")
    assert rec["mc_scoring"] == scoring and rec["mc_accuracy_by_scoring"] == acc
    short = ans[items["kind"].eq("short").to_numpy()]
    assert all(len(x) == 0 for x in short["option_loglik"])


def test_mc_accuracy_by_scoring_by_hand():
    items = pd.DataFrame({"row": [0, 1, 2], "kind": ["mc", "mc", "short"], "answer_index": [1, 0, -1],
                          "split": ["eval", "train", "eval"]})
    ans = pd.DataFrame({"row": [0, 1, 2],
                        "option_loglik": [[-1.0, -4.0], [-6.0, -2.0], []],
                        "option_tokens": [[1, 2], [3, 1], []],
                        "option_chars": [[2, 20], [30, 4], []],
                        "option_loglik_neutral": [[-0.5, -9.0], [-1.0, -1.0], []]})
    acc = mc_accuracy_by_scoring(ans, items)
    # row 0: sum picks 0 (wrong), per_char -0.5 vs -0.2 picks 1, per_token -1 vs -2 picks 0, pmi -0.5 vs 5 picks 1
    # row 1: sum picks 1 (wrong), per_char -0.2 vs -0.5 picks 0, per_token -2 vs -2 tie -> 0, pmi -5 vs -1 picks 1
    assert acc == {"n": 2, "per_char": 1.0, "sum": 0.0, "per_token": 0.5, "pmi": 0.5}
    assert mc_accuracy_by_scoring(ans, items, split="eval") == {"n": 1, "per_char": 1.0, "sum": 0.0,
                                                                "per_token": 0.0, "pmi": 1.0}
    # answers from before the per-option columns: no numbers, not an error
    assert mc_accuracy_by_scoring(ans[["row"]], items)["per_char"] is None
