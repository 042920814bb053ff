"""TransformerLens hook names for metacog's residual-stream states, and a TransformerLens
cross-check of them.

metacog reads the residual stream with its own forward hooks (:mod:`metacog.model.hooks`) and
indexes it by hidden-state index ``h`` in 0..n_layers: ``h = 0`` is the stream entering
decoder block 0 (the embeddings as the model scales them), ``h >= 1`` the stream leaving
block ``h - 1``. TransformerLens (Nanda & Bloom 2022) names the same tensors by hook point
(``HookedTransformer`` / ``TransformerBridge``), so a researcher who thinks in those names
can use them here:

==============================  ===========================
TransformerLens hook            metacog hidden-state index
==============================  ===========================
``blocks.0.hook_resid_pre``     ``h = 0``
``blocks.{l}.hook_resid_pre``   ``h = l``  (the same tensor as ``blocks.{l-1}.hook_resid_post``)
``blocks.{l}.hook_resid_post``  ``h = l + 1``
==============================  ===========================

The mapping is the same for every architecture: the bridge maps each family onto its own
block layout, as :mod:`metacog.model.arch` does for the hooks.

Public entries:

- :func:`hook_name`, :func:`hidden_index`, :func:`hook_names` — the mapping and its inverse;
- :func:`select`, :func:`cached_states` — a workspace's activation cache
  (``activations/<position>.npy``, ``[n_items, n_layers + 1, d_model]``) read by hook name:
  ``cached_states(ws, "blocks.5.hook_resid_post", "confidence")`` is ``[n_items, d_model]``;
- :func:`boot_bridge`, :func:`lens_states` — the same states recomputed through TransformerLens'
  ``TransformerBridge`` (optional dependency ``transformer_lens``), to cross-check the cache or
  to reach TransformerLens' own tooling on the same tensors. The bridge is booted offline from
  the model's local directory as a separate copy (it forces eager attention, which must not
  leak into the main model).

Why a module of its own and not part of :mod:`metacog.model.hooks`: hooks.py runs on the live
model with no optional dependency; this module is a naming layer over the cache plus an
interop path that imports ``transformer_lens`` only when asked to.
"""
from __future__ import annotations

import os
import re

import numpy as np
import torch

from metacog.stages.activations import load_states

_HOOK = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


def hook_name(h: int) -> str:
    """The canonical TransformerLens hook of hidden-state index ``h`` (``h >= 0``):
    ``blocks.0.hook_resid_pre`` for ``h = 0``, else ``blocks.{h-1}.hook_resid_post``.

    Raises:
        ValueError: ``h`` is negative."""
    if int(h) < 0:
        raise ValueError(f"hidden-state index must be >= 0, not {h}")
    return "blocks.0.hook_resid_pre" if h == 0 else f"blocks.{int(h) - 1}.hook_resid_post"


def hook_names(n_layers: int) -> list[str]:
    """The ``n_layers + 1`` canonical hook names, in hidden-state order (index ``h`` is entry ``h``)."""
    return [hook_name(h) for h in range(int(n_layers) + 1)]


def hidden_index(hook: str, n_layers: int | None = None) -> int:
    """The hidden-state index ``h`` of a TransformerLens residual hook name (the inverse of
    :func:`hook_name`; ``blocks.{l}.hook_resid_pre`` with ``l >= 1`` is accepted too, as
    ``h = l``). With ``n_layers`` (decoder blocks), ``h`` must be in 0..n_layers.

    Raises:
        ValueError: ``hook`` is not a residual-stream hook (``blocks.{l}.hook_resid_pre|post``;
            e.g. ``hook_resid_mid``, attention or MLP hooks are not cached), or the block is
            outside the model."""
    m = _HOOK.match(str(hook).strip())
    if not m:
        raise ValueError(f"{hook!r} is not a residual-stream hook; metacog caches blocks.{{l}}.hook_resid_pre "
                         "and blocks.{l}.hook_resid_post only")
    layer, kind = int(m.group(1)), m.group(2)
    h = layer if kind == "pre" else layer + 1
    if n_layers is not None and not (layer < n_layers and 0 <= h <= n_layers):
        raise ValueError(f"{hook!r}: the model has {n_layers} blocks (blocks.0 .. blocks.{n_layers - 1})")
    return h


def select(states, hook: str) -> np.ndarray:
    """The states at ``hook`` from a cached array ``[n_items, n_layers + 1, d_model]``:
    ``states[:, hidden_index(hook), :]``, ``[n_items, d_model]`` (a view; a memmap stays lazy).

    Raises:
        ValueError: as :func:`hidden_index` (the block count is read from ``states``)."""
    return states[:, hidden_index(hook, states.shape[1] - 1), :]


def cached_states(ws, hook: str, position: str | None = None):
    """A workspace's cached residual stream at a TransformerLens hook.

    ``position`` is one of the cached positions (``activations/manifest.json``: ``last_prompt``,
    ``last_answer``, ``confidence``, and ``confidence_2p`` where the study ran with
    ``StudySettings.two_pass``, :func:`metacog.core.settings.study_positions`): returns ``[n_items, d_model]``
    float16 (a read-only memmap view; rows in ``items.parquet`` order). ``None`` returns a dict
    position → ``[n_items, d_model]``. Same numbers as
    :func:`metacog.stages.activations.load_states` sliced at ``hidden_index(hook)``.

    Raises:
        WorkspaceError: the activation cache is missing or incomplete, or ``position`` is not cached.
        ValueError: ``hook`` is not a residual hook of this model (:func:`hidden_index`)."""
    if position is not None:
        return select(load_states(ws, position), hook)
    return {p: select(a, hook) for p, a in load_states(ws).items()}


def boot_bridge(lm):
    """A TransformerLens ``TransformerBridge`` over a fresh copy of ``lm``'s weights, booted
    offline from ``lm.source`` with ``lm``'s dtype and device (the bridge forces eager
    attention on its own copy; ``lm.model`` is untouched).

    Raises:
        ValueError: ``lm`` was not loaded from a local directory (``lm.source`` is empty).
        ImportError: ``transformer_lens`` is not installed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not lm.source:
        raise ValueError("the TransformerLens path needs a model loaded from a local directory (LoadedModel.source)")
    from transformers import AutoTokenizer
    from transformer_lens.model_bridge import TransformerBridge

    tok = AutoTokenizer.from_pretrained(lm.source)
    return TransformerBridge.boot_transformers(lm.source, tokenizer=tok, dtype=lm.dtype, device=str(lm.device))


@torch.no_grad()
def lens_states(bridge, seqs: list[list[int]], positions: list[list[int]], n_hidden: int) -> np.ndarray:
    """Residual stream ``[B, P, n_hidden, d_model]`` float32 through the bridge's
    ``run_with_cache``, at token indices ``positions`` (``B`` lists of ``P`` indices), one
    unpadded sequence at a time (token ids are passed directly: no second BOS). Equal, within
    float tolerance, to what :func:`metacog.readout.values.read_values` captures."""
    names = set(hook_names(n_hidden - 1))
    out = []
    for ids, pos in zip(seqs, positions):
        _, cache = bridge.run_with_cache(torch.tensor([ids]), names_filter=lambda n: n in names)
        st = torch.stack([cache[hook_name(h)][0, pos] for h in range(n_hidden)], dim=1)  # [P, H, d]
        out.append(st.float().cpu().numpy())
    return np.stack(out)
