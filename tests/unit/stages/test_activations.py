"""Hidden-state capture and the activation cache: causal mask, padding, resume, layout."""
import numpy as np
import pandas as pd
import pytest
import torch

from metacog.data import prompts
from metacog.stages.activations import load_states, run_activations
from metacog.stages.answers import answers_key, run_answers
from metacog.readout.values import read_values
from metacog.model.hooks import capture_residual
from metacog.core.runtime import Stopped
from metacog.core.settings import INLINE_POSITIONS, StudySettings
from metacog.core.workspace import Workspace

from conftest import tiny_items


def _enc(tok):
    return prompts.encode_inline(tok, True, "What is the capital of Japan?", "Tokyo is the capital.")


def test_captured_state_equals_forward_over_prefix_alone(tiny_lm):
    """Bug 1 of the reference study: states taken without the causal mask saw later text.
    The state cached at `last_answer` must equal the state of a forward over the prefix
    that ends there, i.e. it cannot depend on "Confidence:" that follows."""
    enc = _enc(tiny_lm.tokenizer)
    full = read_values(tiny_lm, [enc.ids], capture=[[enc.positions["last_answer"], enc.positions["confidence"]]], values=False)
    cut = enc.positions["last_answer"] + 1
    alone = read_values(tiny_lm, [enc.ids[:cut]], capture=[[cut - 1, cut - 1]], values=False)
    torch.testing.assert_close(full.states[0, 0], alone.states[0, 0], rtol=1e-5, atol=1e-5)
    # and the later position does see more context (so the test can fail)
    assert not torch.allclose(full.states[0, 1], alone.states[0, 1])


def test_changing_later_text_leaves_earlier_states_unchanged(tiny_lm):
    tok = tiny_lm.tokenizer
    a = prompts.encode_inline(tok, True, "Q?", "Paris")
    b = list(a.ids)
    b[-1] = (b[-1] + 5) % len(tok)  # change only the last token
    pos = [a.positions["last_prompt"], a.positions["last_answer"]]
    sa = read_values(tiny_lm, [a.ids], capture=[pos], values=False).states
    sb = read_values(tiny_lm, [b], capture=[pos], values=False).states
    torch.testing.assert_close(sa, sb, rtol=0, atol=0)


def test_states_match_output_hidden_states(tiny_lm):
    """Index h of the cache is HF's hidden_states[h] for h < n_layers (the last HF entry is
    post-final-norm in transformers 5; ours is the raw residual stream)."""
    enc = _enc(tiny_lm.tokenizer)
    p = enc.positions["confidence"]
    st = read_values(tiny_lm, [enc.ids], capture=[[p]], values=False).states[0, 0]
    with torch.no_grad():
        hs = tiny_lm.model(input_ids=torch.tensor([enc.ids]), output_hidden_states=True).hidden_states
    for h in range(tiny_lm.n_layers):
        torch.testing.assert_close(st[h], hs[h][0, p], rtol=1e-5, atol=1e-5)
    normed = tiny_lm.model.model.norm(st[-1])
    torch.testing.assert_close(normed, hs[-1][0, p], rtol=1e-4, atol=1e-4)


def test_left_padding_does_not_change_states(tiny_lm):
    tok = tiny_lm.tokenizer
    encs = [_enc(tok), prompts.encode_inline(tok, True, "A much longer question about the capital of Kenya?", "Nairobi")]
    cap = [[e.positions["last_answer"], e.positions["confidence"]] for e in encs]
    both = read_values(tiny_lm, [e.ids for e in encs], capture=cap, values=False).states
    for i, e in enumerate(encs):
        alone = read_values(tiny_lm, [e.ids], capture=[cap[i]], values=False).states[0]
        torch.testing.assert_close(both[i], alone, rtol=1e-4, atol=1e-4)


def test_capture_hooks_are_removed(tiny_lm):
    out = []
    idx = torch.zeros((1, 1), dtype=torch.long)
    with capture_residual(tiny_lm.model, idx, out):
        tiny_lm.model(input_ids=torch.tensor([[1, 2, 3]]))
    tiny_lm.model(input_ids=torch.tensor([[1, 2, 3]]))
    assert len(out) == 1


def _stage(tmp_path, tiny_lm, n=10):
    ws = Workspace(tmp_path)
    items = tiny_items(n)
    st = StudySettings(limit=None, max_new_tokens=4, confidence_max_new_tokens=3, batch_size=4)
    ans = run_answers(ws, tiny_lm, items, st)
    return ws, items, ans, answers_key(tiny_lm, items, st)


def test_cache_layout_size_and_resume(tmp_path, tiny_lm):
    ws, items, ans, akey = _stage(tmp_path, tiny_lm)
    calls = {"n": 0}

    def stop_after_first():
        calls["n"] += 1
        return calls["n"] > 1

    with pytest.raises(Stopped):
        run_activations(ws, tiny_lm, items, ans, akey, batch_size=4, should_stop=stop_after_first)
    done = np.load(ws.path("activations", "done.npy"))
    assert 0 < done.sum() < len(items)
    # two-pass off (the default): the inline sequence alone, its three positions
    positions = ws.read_json("activations/manifest.json")["positions"]
    assert positions == list(INLINE_POSITIONS) and not ws.path("activations", "confidence_2p.npy").exists()
    partial = {p: np.array(load_states_raw(ws, p)) for p in positions}
    man = run_activations(ws, tiny_lm, items, ans, akey, batch_size=4)
    assert man["complete"] and np.load(ws.path("activations", "done.npy")).all()
    states = load_states(ws)
    assert list(states) == positions
    n, H, D = len(items), tiny_lm.n_hidden, tiny_lm.d_model
    for p in positions:
        assert states[p].shape == (n, H, D) and states[p].dtype == np.float16
        # rows finished before the stop were kept, not recomputed differently
        np.testing.assert_array_equal(np.asarray(states[p])[done], partial[p][done])
    # budget: <= 2 bytes x (layers+1) x d_model x positions per item
    nbytes = sum(ws.path("activations", f"{p}.npy").stat().st_size for p in positions)
    assert nbytes <= n * 2 * H * D * len(positions) + 4096 * len(positions)
    # a fresh full run gives the same states as the resumed one
    ws2, items2, ans2, akey2 = _stage(tmp_path / "again", tiny_lm)
    run_activations(ws2, tiny_lm, items2, ans2, akey2, batch_size=4)
    for p in positions:
        np.testing.assert_allclose(np.asarray(load_states(ws2, p), dtype=np.float32), np.asarray(states[p], dtype=np.float32), atol=2e-3)
    ro = ws.read_parquet("readout.parquet")
    assert len(ro) == n and ro["ev_inline"].between(0, 100).all()


def load_states_raw(ws, p):
    return np.load(ws.path("activations", f"{p}.npy"), mmap_mode="r")


def test_token_index_names_the_right_tokens(tmp_path, tiny_lm):
    ws, items, ans, akey = _stage(tmp_path, tiny_lm, n=4)
    run_activations(ws, tiny_lm, items, ans, akey, batch_size=4)
    ti = ws.read_parquet("activations/token_index.parquet")
    tok = tiny_lm.tokenizer
    for r in ti.itertuples():
        it = items.iloc[r.row]
        a = ans.set_index("row").loc[r.row, "answer"]
        enc = prompts.encode_inline(tok, True, it["question"], a)
        assert tok.decode([enc.ids[r.confidence]]).endswith(":")
        assert r.confidence == len(enc.ids) - 1
        assert r.last_answer < r.confidence and r.last_prompt < r.last_answer
