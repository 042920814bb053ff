"""The TransformerLens path gives the same states as the hook-based cache."""
import numpy as np
import pytest
import torch

pytest.importorskip("transformer_lens")

from metacog.data import prompts
from metacog.readout.values import read_values
from metacog.model.lens import boot_bridge, hook_name, lens_states
from metacog.model.loading import wrap

from conftest import make_tiny_llama


def test_hook_names():
    assert hook_name(0) == "blocks.0.hook_resid_pre" and hook_name(3) == "blocks.2.hook_resid_post"


def test_lens_states_equal_cached_states(tmp_path, tiny_tok):
    model = make_tiny_llama(tiny_tok, n_layers=3)
    model.save_pretrained(tmp_path)
    tiny_tok.save_pretrained(tmp_path)
    lm = wrap(model, tiny_tok, source=str(tmp_path), weights_hash="t")
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
