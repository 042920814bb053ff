"""TransformerLens hook names map onto metacog's hidden-state indices, and read a workspace's
activation cache: the cached states at a hook name are the states TransformerLens itself
computes at that hook."""
import numpy as np
import pytest
import torch

from metacog.core.settings import INLINE_POSITIONS, StudySettings
from metacog.core.workspace import Workspace, WorkspaceError
from metacog.data import prompts
from metacog.model.lens import cached_states, hidden_index, hook_name, hook_names, select
from metacog.model.loading import wrap
from metacog.readout.values import read_values
from metacog.stages.activations import encode_item, load_states, run_activations
from metacog.stages.answers import answers_key, run_answers

from conftest import make_tiny_llama, tiny_items


def test_hook_names():
    assert hook_name(0) == "blocks.0.hook_resid_pre" and hook_name(3) == "blocks.2.hook_resid_post"
    assert hook_names(2) == ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    with pytest.raises(ValueError):
        hook_name(-1)


@pytest.mark.parametrize("n_layers", [1, 3, 30])
def test_hidden_index_inverts_hook_name(n_layers):
    assert [hidden_index(n, n_layers) for n in hook_names(n_layers)] == list(range(n_layers + 1))
    # resid_pre of block l is the stream leaving block l-1: the same index
    for layer in range(1, n_layers):
        assert hidden_index(f"blocks.{layer}.hook_resid_pre", n_layers) == hidden_index(f"blocks.{layer - 1}.hook_resid_post")


@pytest.mark.parametrize("bad", ["blocks.0.hook_resid_mid", "blocks.0.attn.hook_z", "hook_embed", "blocks.x.hook_resid_post",
                                 "blocks.3.hook_resid_post", "blocks.3.hook_resid_pre", ""])
def test_hidden_index_refuses_what_is_not_cached(bad):
    with pytest.raises(ValueError):
        hidden_index(bad, n_layers=3)


def test_select_slices_the_hidden_axis():
    states = np.arange(2 * 4 * 5).reshape(2, 4, 5)  # [n_items, n_layers + 1, d_model], 3 blocks
    for h, name in enumerate(hook_names(3)):
        np.testing.assert_array_equal(select(states, name), states[:, h, :])
    with pytest.raises(ValueError):
        select(states, "blocks.3.hook_resid_post")


def _saved_tiny(tmp_path, tiny_tok, n_layers=3):
    model = make_tiny_llama(tiny_tok, n_layers=n_layers)
    model.save_pretrained(tmp_path)
    tiny_tok.save_pretrained(tmp_path)
    return wrap(model, tiny_tok, source=str(tmp_path), weights_hash="t")


def test_cached_states_by_hook_name(tmp_path, tiny_tok):
    lm = _saved_tiny(tmp_path / "model", tiny_tok)
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(WorkspaceError):
        cached_states(ws, "blocks.0.hook_resid_post", "confidence")  # no cache yet
    items = tiny_items(6)
    st = StudySettings(limit=None, max_new_tokens=4, confidence_max_new_tokens=3, batch_size=4)
    ans = run_answers(ws, lm, items, st)
    run_activations(ws, lm, items, ans, answers_key(lm, items, st), batch_size=4)

    full = load_states(ws, "confidence")
    for h, name in enumerate(hook_names(lm.n_layers)):
        got = cached_states(ws, name, "confidence")
        assert got.shape == (len(items), lm.d_model) and got.dtype == np.float16
        np.testing.assert_array_equal(got, full[:, h, :])
    every = cached_states(ws, "blocks.1.hook_resid_post")
    assert set(every) == set(INLINE_POSITIONS)  # two-pass off: the inline positions
    with pytest.raises(WorkspaceError, match="not cached.*two-pass not computed"):
        cached_states(ws, "blocks.0.hook_resid_post", "confidence_2p")
    np.testing.assert_array_equal(every["last_answer"], load_states(ws, "last_answer")[:, 2, :])
    with pytest.raises(ValueError):
        cached_states(ws, f"blocks.{lm.n_layers}.hook_resid_post", "confidence")

    # the cached states at a hook name are the states TransformerLens computes at that hook
    pytest.importorskip("transformer_lens")
    from metacog.model.lens import boot_bridge

    bridge = boot_bridge(lm)
    a = ans.set_index("row").loc[items["row"]]
    for i in range(len(items)):
        enc, _ = encode_item(lm, items["question"].iloc[i], a["answer"].iloc[i])
        _, cache = bridge.run_with_cache(torch.tensor([enc.ids]), names_filter=lambda n: n in set(hook_names(lm.n_layers)))
        for name in hook_names(lm.n_layers):
            theirs = cache[name][0, enc.positions["confidence"]].float().numpy()
            ours = cached_states(ws, name, "confidence")[i].astype(np.float32)
            np.testing.assert_allclose(ours, theirs, rtol=2e-3, atol=2e-3)  # float16 storage


def test_lens_states_equal_cached_states(tmp_path, tiny_tok):
    pytest.importorskip("transformer_lens")
    from metacog.model.lens import boot_bridge, lens_states

    lm = _saved_tiny(tmp_path, tiny_tok)
    encs = [
        prompts.encode_inline(tiny_tok, True, "What is the capital of Peru?", "Lima"),
        prompts.encode_inline(tiny_tok, True, "A longer question about the capital of Japan?", "It is Tokyo."),
    ]
    pos = [[e.positions[p] for p in ("last_prompt", "last_answer", "confidence")] for e in encs]
    ours = read_values(lm, [e.ids for e in encs], capture=pos, values=False).states.numpy()  # batched, left-padded
    br = boot_bridge(lm)
    theirs = lens_states(br, [e.ids for e in encs], pos, lm.n_hidden)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    # the main model kept its own attention implementation
    assert lm.model.config._attn_implementation == "sdpa"


def test_boot_bridge_needs_a_local_source(tiny_lm):
    from metacog.model.lens import boot_bridge

    with pytest.raises(ValueError, match="local directory"):
        boot_bridge(tiny_lm)
