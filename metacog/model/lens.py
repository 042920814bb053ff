"""TransformerLens path: the same residual-stream states through ``TransformerBridge``.

Hook names map onto metacog's hidden-state index ``h`` (see hooks.py):
``h = 0`` → ``blocks.0.hook_resid_pre``; ``h ≥ 1`` → ``blocks.{h-1}.hook_resid_post``.
The bridge is booted offline from the model's local directory as a separate copy (it forces
eager attention, which must not leak into the main model). Use it to cross-check the cache,
or to reach TransformerLens' own tooling on the same tensors.
"""
from __future__ import annotations

import numpy as np
import torch


def hook_name(h: int) -> str:
    """TransformerLens' residual hook of hidden-state index ``h`` (:func:`metacog.model.arch.lens_hook_name`)."""
    from metacog.model.arch import lens_hook_name

    return lens_hook_name(h)


def boot_bridge(lm):
    """A TransformerBridge over a fresh copy of ``lm``'s weights (needs a local source dir)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer
    from transformer_lens.model_bridge import TransformerBridge

    if not lm.source:
        raise ValueError("the TransformerLens path needs a model loaded from a local directory (LoadedModel.source)")
    tok = AutoTokenizer.from_pretrained(lm.source)
    return TransformerBridge.boot_transformers(lm.source, tokenizer=tok, dtype=lm.dtype, device=str(lm.device))


@torch.no_grad()
def lens_states(bridge, seqs: list[list[int]], positions: list[list[int]], n_hidden: int) -> np.ndarray:
    """Residual stream ``[B, P, n_hidden, d]`` at the given token indices, one unpadded
    sequence at a time (token ids are passed directly: no second BOS)."""
    names = {hook_name(h) for h in range(n_hidden)}
    out = []
    for ids, pos in zip(seqs, positions):
        _, cache = bridge.run_with_cache(torch.tensor([ids]), names_filter=lambda n: n in names)
        st = torch.stack([cache[hook_name(h)][0, pos] for h in range(n_hidden)], dim=1)  # [P, H, d]
        out.append(st.float().cpu().numpy())
    return np.stack(out)
