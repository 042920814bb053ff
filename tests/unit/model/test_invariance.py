"""An item's numbers do not depend on what else is in the run (docs/SCIENCE.md "Batch
invariance"): its answer, verbal confidences, exact 0-100 readout and cached hidden states
are the same, within the stated tolerance, whether it runs alone, among other items, or
with a different batch size. Also: long prompts are refused before model work, batches are
built by length, and the answers stage resumes in small chunks."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metacog.stages import answers as answers_mod
from metacog.stages.activations import load_states, run_activations
from metacog.stages.answers import PromptTooLong, generation_rows, answers_key, check_prompt_lengths, run_answers
from metacog.model.generation import batches_by_length
from metacog.core.runtime import Stopped
from metacog.core.settings import StudySettings
from metacog.core.workspace import Workspace

from conftest import tiny_items

# The stated tolerance (docs/SCIENCE.md "Batch invariance"): answers and verbal replies
# identical; E[v] within 0.01 points of 100; cached (float16) states within 1e-3 of their
# scale, i.e. one float16 rounding step of the stored value.
EV_TOL, STATE_REL_TOL = 0.01, 1e-3


def _run(tmp_path, lm, items, batch_size):
    st = StudySettings(max_new_tokens=5, confidence_max_new_tokens=4, batch_size=batch_size, two_pass=True)
    ws = Workspace(tmp_path)
    ans = run_answers(ws, lm, items, st)
    run_activations(ws, lm, items, ans, answers_key(lm, items, st), batch_size)
    ro = ws.read_parquet("readout.parquet")
    states = {p: np.asarray(a, dtype=np.float32) for p, a in load_states(ws).items()}
    df = items[["row", "id"]].merge(ans, on=["row", "id"]).merge(ro, on="row")
    return df.set_index("id"), states


def _item_view(run, item_id):
    df, states = run
    r = df.loc[item_id]
    return r, {p: s[int(r["row"])] for p, s in states.items()}


TARGET = ["t3", "t17", "m2"]


def _runs_over_batchings(tmp_path, lm, shifted: bool = True) -> tuple:
    """The target items alone, among 12 in batches of 4, among 36 in batches of 16 (and, with
    ``shifted``, in a shifted set with batch 8): ``(reference run, {name: run})``."""
    pool = tiny_items(30, mc=6)
    with_target = lambda d: pd.concat([d, pool[pool["id"].isin(TARGET)]]).drop_duplicates("id")  # noqa: E731
    subsets = {"alone": (pool[pool["id"].isin(TARGET)], 1), "among 12, batch 4": (with_target(pool.iloc[:12]), 4),
               "among 36, batch 16": (pool, 16)}
    if shifted:
        subsets["shifted, batch 8"] = (with_target(pool.iloc[10:]), 8)
    runs = {}
    for name, (items, bs) in subsets.items():
        items = items.reset_index(drop=True).copy()
        items["row"] = np.arange(len(items))
        runs[name] = _run(tmp_path / name.replace(" ", "_").replace(",", ""), lm, items, bs)
    return runs.pop("alone"), runs


def test_item_results_do_not_depend_on_companions_or_batch_size(tmp_path, tiny_lm):
    ref, runs = _runs_over_batchings(tmp_path, tiny_lm)
    target = TARGET
    for name, run in runs.items():
        for item in target:
            a, sa = _item_view(ref, item)
            b, sb = _item_view(run, item)
            for col in ("answer", "answer_text", "text_two_pass", "chosen_index"):
                assert a[col] == b[col], (name, item, col, a[col], b[col])
            for col in ("ev_inline", "ev_two_pass"):
                assert abs(a[col] - b[col]) <= EV_TOL, (name, item, col)
            for p in sa:
                scale = np.abs(sa[p]).max()
                assert np.abs(sa[p] - sb[p]).max() <= STATE_REL_TOL * scale, (name, item, p)
            if item.startswith("m"):
                np.testing.assert_allclose(a["option_loglik"], b["option_loglik"], rtol=0, atol=1e-4)


def test_a_40_item_run_agrees_with_a_120_item_run_on_its_40_items(tmp_path, tiny_lm):
    """The audit's comparison: `--limit 40` vs `--limit 120` (the 40 are the first 40 of the
    120, default batch size): every shared item's answer identical, readout within EV_TOL."""
    pool = tiny_items(110, mc=10)
    small = pool.iloc[:34].pipe(lambda d: pd.concat([d, pool.iloc[-6:]])).reset_index(drop=True).copy()
    small["row"] = np.arange(len(small))
    a = _run(tmp_path / "n40", tiny_lm, small, 32)
    b = _run(tmp_path / "n120", tiny_lm, pool, 32)
    for item in small["id"]:
        ra, sa = _item_view(a, item)
        rb, sb = _item_view(b, item)
        assert (ra["answer_text"], ra["text_two_pass"]) == (rb["answer_text"], rb["text_two_pass"]), item
        assert abs(ra["ev_inline"] - rb["ev_inline"]) <= EV_TOL and abs(ra["ev_two_pass"] - rb["ev_two_pass"]) <= EV_TOL
        for p in sa:
            assert np.abs(sa[p] - sb[p]).max() <= STATE_REL_TOL * np.abs(sa[p]).max(), (item, p)


def test_batches_by_length_keep_a_long_row_away_from_short_ones():
    seqs = [[0] * 20 for _ in range(10)] + [[0] * 5000] + [[0] * 25 for _ in range(5)]
    batches = list(batches_by_length(seqs, batch_size=8, max_tokens=8192))
    assert batches[0] == [10]  # the long row runs alone, longest first
    assert sorted(i for b in batches for i in b) == list(range(16))
    assert all(len(b) <= 8 for b in batches)
    for b in batches[1:]:
        assert len(b) * max(len(seqs[i]) for i in b) <= 8192
    # without a long row, batches are the plain length order in groups of batch_size
    assert list(batches_by_length([[0] * n for n in (5, 9, 7)], batch_size=2)) == [[1, 2], [0]]


def test_long_prompt_is_refused_before_model_work(tmp_path, tiny_lm, monkeypatch):
    items = tiny_items(6)
    items.loc[4, "question"] = "Why? " * 400
    items.loc[4, "id"] = "the-long-one"
    calls = []
    monkeypatch.setattr(answers_mod, "_answer_chunk", lambda *a, **k: calls.append(1))
    ws = Workspace(tmp_path)
    st = StudySettings(max_new_tokens=5, confidence_max_new_tokens=4, batch_size=4, max_prompt_tokens=64)
    with pytest.raises(PromptTooLong, match=r"'the-long-one' \([\d,]+ tokens\).*--max-prompt-tokens") as e:
        run_answers(ws, tiny_lm, items, st)
    assert "1 item(s)" in str(e.value) and "64-token cap" in str(e.value)
    assert calls == [] and not ws.path("answers_parts").exists()


def test_check_prompt_lengths_names_the_longest_and_counts_the_rest():
    check_prompt_lengths(["a", "b"], [10, 20], 20)  # at the cap: fine
    with pytest.raises(PromptTooLong) as e:
        check_prompt_lengths(list("abcde"), [30, 50, 40, 60, 10], 25)
    msg = str(e.value)
    assert msg.startswith("4 item(s)") and "'d' (60 tokens), 'b' (50 tokens), 'c' (40 tokens) and 1 more" in msg


def test_max_prompt_tokens_setting_is_validated_and_old_settings_load():
    from metacog.core.settings import from_dict

    with pytest.raises(ValueError, match="max_prompt_tokens"):
        StudySettings(max_prompt_tokens=0)
    with pytest.raises(ValueError, match="mc_scoring"):
        StudySettings(mc_scoring="bytes")
    old = from_dict(StudySettings, {"dataset": "world-facts", "batch_size": 8})  # a workspace.json from before
    assert old.mc_scoring == "sum" and old.max_prompt_tokens == 1024
    assert StudySettings().mc_scoring == "per_char"


def test_answers_resume_redoes_at_most_one_chunk(tmp_path, tiny_lm, monkeypatch):
    """A stop after k finished chunks keeps them: the resumed run answers only the rest
    (issue: a kill at 33% of a 60-item study redid all 60), and gives the same table."""
    items = tiny_items(40)
    st = StudySettings(max_new_tokens=5, confidence_max_new_tokens=4, batch_size=16, two_pass=True)  # chunks of 32
    real = answers_mod._answer_chunk
    answered = []

    def counting(lm, chunk, *a, **k):
        answered.append(len(chunk))
        if len(answered) == 2 and k.get("should_stop"):
            raise Stopped("stopped")
        return real(lm, chunk, *a, **k)

    monkeypatch.setattr(answers_mod, "_answer_chunk", counting)
    ws = Workspace(tmp_path / "a")
    with pytest.raises(Stopped):
        run_answers(ws, tiny_lm, items, st, should_stop=lambda: False)
    chunk = generation_rows(st.batch_size)
    assert answered == [chunk, min(chunk, 40 - chunk)]  # the second chunk was stopped
    answered.clear()
    resumed = run_answers(ws, tiny_lm, items, st)
    assert sum(answered) == 40 - chunk  # only the unfinished items
    answered.clear()
    clean = run_answers(Workspace(tmp_path / "b"), tiny_lm, items, st)
    assert sum(answered) == 40
    cols = ["row", "answer_text", "text_two_pass", "verbal_inline", "verbal_two_pass", "correct"]
    pd.testing.assert_frame_equal(resumed[cols], clean[cols])

def test_manifest_records_the_ev_noise_floor(tmp_path, tiny_lm):
    from metacog.stages.activations import ev_noise_floor

    items = tiny_items(4)
    st = StudySettings(max_new_tokens=4, confidence_max_new_tokens=4, batch_size=4, two_pass=True)
    ws = Workspace(tmp_path)
    ans = run_answers(ws, tiny_lm, items, st)
    man = run_activations(ws, tiny_lm, items, ans, answers_key(tiny_lm, items, st), 4)
    assert man["model_dtype"] == "float32" and man["ev_noise_floor"] == ev_noise_floor("float32") == 0.001
    assert ev_noise_floor("torch.bfloat16") > 1 and ev_noise_floor("float16") is None
    assert ev_noise_floor("bfloat16", "metacog_ragged") == 0.0 and ev_noise_floor("bfloat16", "sdpa") > 1


def test_a_ragged_bfloat16_study_records_no_noise_floor(tmp_path, tiny_bf16_ragged):
    items = tiny_items(4)
    st = StudySettings(max_new_tokens=4, confidence_max_new_tokens=4, batch_size=4)
    ws = Workspace(tmp_path)
    ans = run_answers(ws, tiny_bf16_ragged, items, st)
    man = run_activations(ws, tiny_bf16_ragged, items, ans, answers_key(tiny_bf16_ragged, items, st), 4)
    assert (man["model_dtype"], man["model_attention"], man["ev_noise_floor"]) == ("bfloat16", "metacog_ragged", 0.0)


def test_cli_flags_reach_the_settings(tmp_path):
    import argparse

    from metacog import cli

    p = argparse.ArgumentParser()
    cli._add_model_args(p)
    cli._add_study_args(p)
    args = p.parse_args(["--max-prompt-tokens", "2048", "--mc-scoring", "pmi"])
    _, study = cli._settings_from(args, Workspace(tmp_path / "new"))
    assert study.max_prompt_tokens == 2048 and study.mc_scoring == "pmi"
    _, default = cli._settings_from(p.parse_args([]), Workspace(tmp_path / "new2"))
    assert default.max_prompt_tokens == 1024 and default.mc_scoring == "per_char"


@pytest.fixture(scope="module")
def tiny_bf16_ragged(tiny_tok):
    import torch

    from conftest import make_tiny_llama
    from metacog.model import ragged
    from metacog.model.loading import wrap

    m = make_tiny_llama(tiny_tok).to(torch.bfloat16)
    ragged.enable(m)
    return wrap(m, tiny_tok, spec="tiny", name="tiny-llama-bf16", weights_hash="tiny0")


def test_bfloat16_with_ragged_attention_is_bit_identical_alone_and_in_any_batch(tmp_path, tiny_bf16_ragged):
    """bfloat16 on a CPU, each row attending over its own keys (metacog.model.ragged): an
    item's answers, every readout value, its multiple-choice log-likelihoods and its cached
    states are bit for bit those it has alone, among 12 in batches of 4, or among 36 in
    batches of 16 (no tolerance)."""
    ref, runs = _runs_over_batchings(tmp_path, tiny_bf16_ragged, shifted=False)
    for name, run in runs.items():
        for item in TARGET:
            a, sa = _item_view(ref, item)
            b, sb = _item_view(run, item)
            for col in ("answer", "answer_text", "text_two_pass", "chosen_index", "ev_inline", "ev_two_pass"):
                assert a[col] == b[col], (name, item, col, a[col], b[col])
            for col in ("probs_inline", "probs_two_pass"):
                if col in a.index:
                    np.testing.assert_array_equal(np.asarray(a[col]), np.asarray(b[col]), err_msg=f"{name} {item} {col}")
            for p in sa:
                np.testing.assert_array_equal(sa[p], sb[p], err_msg=f"{name} {item} {p}")
            if item.startswith("m"):
                np.testing.assert_array_equal(np.asarray(a["option_loglik"]), np.asarray(b["option_loglik"]))
