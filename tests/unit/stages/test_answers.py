"""The answers stage: MC log-likelihood scoring, re-parsing, resume."""
import numpy as np
import pytest
import torch

from metacog.data import prompts
from metacog.stages.answers import option_logliks, reparse, run_answers
from metacog.core.runtime import Stopped
from metacog.core.settings import StudySettings
from metacog.core.workspace import Workspace

from conftest import tiny_items

ST = StudySettings(max_new_tokens=5, confidence_max_new_tokens=4, batch_size=4, two_pass=True)


def test_option_loglik_equals_direct_sum(tiny_lm):
    tok = tiny_lm.tokenizer
    p = prompts.encode_answer_prompt(tok, True, "What is the capital of Peru?", ["Lima", "Paris"]).ids
    got = option_logliks(tiny_lm, [p], [["Lima", "Paris"]])[0]
    for opt, g in zip(["Lima", "Paris"], got):
        o = tok(opt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lsm = torch.log_softmax(tiny_lm.model(input_ids=torch.tensor([p + o])).logits[0].float(), -1)
        direct = sum(float(lsm[len(p) - 1 + k, t]) for k, t in enumerate(o))
        assert g == pytest.approx(direct, abs=1e-4)


def test_answers_short_and_mc(tmp_path, tiny_lm):
    items = tiny_items(8, mc=4)
    ans = run_answers(Workspace(tmp_path), tiny_lm, items, ST)
    assert len(ans) == 12 and list(ans["row"]) == list(range(12))
    mc = ans[items["kind"].eq("mc").to_numpy()]
    assert (mc["chosen_index"] >= 0).all()
    assert (mc["correct"] == (mc["chosen_index"].to_numpy() == items.loc[items.kind == "mc", "answer_index"].to_numpy())).all()
    assert set(ans["split"]) <= {"train", "calibration", "eval"}


def test_reparse_applies_current_parser_without_regenerating(tmp_path, tiny_lm):
    items = tiny_items(6)
    ws = Workspace(tmp_path)
    ans = run_answers(ws, tiny_lm, items, ST)
    doctored = ans.copy()
    doctored.loc[0, "answer_text"] = "Paris\nConfidence: 0.42"
    doctored.loc[0, "verbal_inline_source"] = "forced"
    doctored.loc[0, "text_two_pass"] = "I am 87% sure"
    doctored.loc[0, "answer"] = "It is " + items.loc[0, "answers"][0]
    ws.write_parquet("answers.parquet", doctored, lineage=ws.lineage("answers.parquet"))  # same inputs, other texts
    again = run_answers(ws, tiny_lm, items, ST)  # fresh key: no generation, only re-parse
    assert again.loc[0, "verbal_inline"] == pytest.approx(42.0)
    assert again.loc[0, "verbal_two_pass"] == pytest.approx(87.0)
    assert bool(again.loc[0, "correct"]) is True
    pd_direct = reparse(items, doctored)
    assert pd_direct.loc[0, "verbal_inline"] == pytest.approx(42.0)


def test_stopped_answers_resume(tmp_path, tiny_lm):
    items = tiny_items(10)
    ws = Workspace(tmp_path)
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 1

    with pytest.raises(Stopped):
        run_answers(ws, tiny_lm, items, ST, should_stop=stop, chunk_size=4)
    assert not ws.path("answers.parquet").exists()
    ans = run_answers(ws, tiny_lm, items, ST, chunk_size=3)  # a different chunk size must not duplicate rows
    assert list(ans["row"]) == list(range(10))
    fresh = run_answers(Workspace(tmp_path / "b"), tiny_lm, items, ST, chunk_size=4)
    assert ans[["answer_text", "text_two_pass"]].equals(fresh[["answer_text", "text_two_pass"]])


def test_two_pass_off_by_default_skips_its_generation_and_keeps_the_inline_answers(tmp_path, tiny_lm, monkeypatch):
    """The default study (two_pass False) generates no two-pass reply: one generation pass
    fewer, no two-pass columns (never NaN stand-ins), other answers key; the inline columns
    equal those of the two-pass run, item by item."""
    import dataclasses

    from metacog.stages import answers as A

    items = tiny_items(8)
    calls = []
    real = A.generate

    def counting(lm, prompts_, n_tokens, *a, **k):
        calls.append(n_tokens)
        return real(lm, prompts_, n_tokens, *a, **k)

    monkeypatch.setattr(A, "generate", counting)
    off = dataclasses.replace(ST, two_pass=False)
    a_off = run_answers(Workspace(tmp_path / "off"), tiny_lm, items, off)
    n_off = len(calls)
    calls.clear()
    a_on = run_answers(Workspace(tmp_path / "on"), tiny_lm, items, ST)
    chunks = -(-len(items) // A.generation_rows(ST.batch_size))
    assert chunks >= 1 and calls.count(ST.confidence_max_new_tokens) == chunks  # the two-pass pass, once per chunk
    assert n_off == len(calls) - chunks  # one two-pass generation per chunk is skipped
    assert not {"text_two_pass", "verbal_two_pass", "verbal_two_pass_rule"} & set(a_off.columns)
    assert {"text_two_pass", "verbal_two_pass", "verbal_two_pass_rule"} <= set(a_on.columns)
    cols = ["row", "answer_text", "answer", "correct", "verbal_inline", "verbal_inline_rule"]
    assert a_off[cols].equals(a_on[cols])
    assert A.answers_key(tiny_lm, items, off) != A.answers_key(tiny_lm, items, ST)
    # a rerun of the inline-only stage is fresh (its re-parse does not ask for two-pass columns)
    again = run_answers(Workspace(tmp_path / "off"), tiny_lm, items, off)
    assert again[cols].equals(a_off[cols]) and "text_two_pass" not in again


def test_old_workspaces_keep_the_two_pass_mode_and_their_keys():
    """workspace.json written before the setting meant both modes: it reads as two_pass True,
    and two_pass True adds nothing to the answers key (old caches stay fresh)."""
    from metacog.core.settings import LEGACY_DEFAULTS, from_dict

    assert StudySettings().two_pass is False
    assert from_dict(StudySettings, {"dataset": "world-facts"}).two_pass is True
    assert from_dict(StudySettings, {"two_pass": False}).two_pass is False
    assert LEGACY_DEFAULTS["StudySettings"]["two_pass"] is True
    with pytest.raises(ValueError, match="two_pass"):
        StudySettings(two_pass="yes")
