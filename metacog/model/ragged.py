"""Batch-invariant attention: each row attends over its own keys only ("ragged" attention).

Why (measured by ``bench/bench_invariance.py --kernels``, docs/SCIENCE.md "Batch invariance"):
in bfloat16 on a CPU, a linear layer's output rows do not depend on how many rows the batch has
(M = 1 … 300: 0 of 10,752 elements differ), and scaled-dot-product attention does not depend on
how many queries or same-length rows are batched with a row; it does depend on **masked keys**:
left padding (or trailing masked keys) changes the kernel's blocking over the key axis, and one
bf16 rounding step (7e-4 relative) then propagates until an item's greedy answer or E[v]
changes with its batch companions. Removing every key column a row never attends, before
attention, leaves each row exactly the computation it would have alone.

:func:`ragged_attention` gives every row a **canonical key layout** that depends on the row
alone: the key columns at least one of its queries attends, in order, then masked zero keys up
to a multiple of :data:`BUCKET` (32). A CPU SDPA kernel's result for a row depends only on its
keys, mask and their length (not on how many queries or same-shape rows share the call:
measured), so rows of one bucket run in one call of transformers' SDPA attention and each gets
bit for bit what it gets alone, where it takes the same layout. Query rows that attend nothing
(padding) come out as zeros. Registered with transformers' ``AttentionInterface`` and
``AttentionMaskInterface`` under :data:`NAME`; :func:`metacog.model.loading.load_model` selects
it for bfloat16 on a CPU where the family runs SDPA (``ModelSettings.dtype`` ``auto`` on a CPU
with bf16 arithmetic, or ``bfloat16``). Cost against plain SDPA (same bf16 model, 48 items):
the answers stage 1.9× (a third of it the shared prefix, off here), the readout 1.2×; the
whole study is still 1.4× faster than float32 (docs/PERFORMANCE.md).

What it does not fix: float32 matmuls whose blocking depends on the row count (2 threads: rows
of a 7-row product differ from the same rows in an 8-row one, at 5e-7) and GPU kernels
(cuBLAS picks algorithms by shape). Batch invariance in bfloat16 also needs every layout an
item sees to be its own; the shared-prefix forward (a batch's common prefix computed once,
:func:`metacog.readout.batching.shared_prefix_len`) is therefore off under this attention.

Public entry: :func:`ragged_attention`; :func:`enable`, :func:`is_ragged`.
"""
from __future__ import annotations

import functools

import torch

NAME = "metacog_ragged"
#: Keys per row are padded (masked zeros) to a multiple of this: the layout depends on the row alone,
#: and rows of one bucket share one SDPA call.
BUCKET = 32


def _allowed(mask: torch.Tensor) -> torch.Tensor:
    """Boolean "may attend" from a boolean or additive float mask."""
    if mask.dtype == torch.bool:
        return mask
    return mask > torch.finfo(mask.dtype).min / 2


def ragged_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask,
                     dropout: float = 0.0, scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """transformers' SDPA attention, each row over only the keys it attends.

    Shapes: ``query [B, H, Tq, D]``, ``key``/``value [B, Hkv, Tk, D]``, ``attention_mask``
    None or ``[B|1, 1, Tq, Tk]`` (boolean, or additive float). Returns ``([B, Tq, H, Dv], None)``
    as transformers' attention functions do. A mask with per-head entries is passed through
    unchanged (no family here builds one)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def sdpa(q, k, v, m, causal):
        return sdpa_attention_forward(module, q, k, v, m, dropout=dropout, scaling=scaling, is_causal=causal, **kwargs)[0]

    if attention_mask is not None and (not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 4
                                       or attention_mask.shape[1] != 1):
        return sdpa(query, key, value, attention_mask, is_causal), None
    B, _, Tq, _ = query.shape
    Tk = key.shape[2]
    if attention_mask is None:  # no padding anywhere: causal (bottom-right aligned), or one query over all keys
        allowed = _causal(Tq, Tk, query.device).expand(B, Tq, Tk)
    else:
        allowed = _allowed(attention_mask)[:, 0].expand(B, Tq, Tk)  # [B, Tq, Tk]
    keep = allowed.any(dim=1)  # [B, Tk]: the keys some query of the row attends
    n = keep.sum(dim=1)  # [B]
    span = (n + BUCKET - 1) // BUCKET * BUCKET  # each row's canonical key length: a function of the row alone
    out = query.new_zeros(B, Tq, query.shape[1], value.shape[-1])
    zk = key.new_zeros(1, key.shape[1], 1, key.shape[3])
    zv = value.new_zeros(1, value.shape[1], 1, value.shape[3])
    for L in torch.unique(span).tolist():  # rows with the same canonical length run in one call
        if L == 0:
            continue
        rows = torch.nonzero(span == L).squeeze(1)
        g = rows.numel()
        kr = keep[rows]
        # canonical layout: the kept keys in order, then zero keys (masked) up to L; column Tk of
        # the source is the zero key every unused slot points to
        idx = torch.full((g, L + 1), Tk, dtype=torch.long, device=query.device)
        slot = torch.where(kr, kr.long().cumsum(dim=1) - 1, torch.full_like(kr, L, dtype=torch.long))
        idx.scatter_(1, slot, torch.arange(Tk, device=query.device).expand(g, Tk))
        idx = idx[:, :L]
        k = torch.cat([key[rows], zk.expand(g, -1, -1, -1)], dim=2).gather(2, idx[:, None, :, None].expand(-1, key.shape[1], -1, key.shape[3]))
        v = torch.cat([value[rows], zv.expand(g, -1, -1, -1)], dim=2).gather(2, idx[:, None, :, None].expand(-1, value.shape[1], -1, value.shape[3]))
        m = torch.cat([allowed[rows], allowed.new_zeros(g, Tq, 1)], dim=2).gather(2, idx[:, None, :].expand(-1, Tq, -1))
        o = sdpa(query[rows], k, v, m.unsqueeze(1), False)
        o = o.masked_fill(~m.any(-1)[..., None, None], 0.0)  # queries that attend nothing: padding
        out[rows] = o.to(out.dtype)
    return out, None


@functools.lru_cache(maxsize=64)
def _causal(Tq: int, Tk: int, device: torch.device) -> torch.Tensor:
    """``[Tq, Tk]``: query i (the last Tq of Tk positions) attends keys up to its own position."""
    return torch.ones(Tq, Tk, dtype=torch.bool, device=device).tril(Tk - Tq)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, ragged_attention)
        AttentionMaskInterface.register(NAME, sdpa_mask)  # no mask without padding, as a batch of one gets


def enable(model) -> None:
    """Switch ``model`` (a transformers causal LM running SDPA) to :func:`ragged_attention`.

    Raises:
        ValueError: the model's attention is not SDPA (eager-only families: Gemma 2, Bloom)."""
    from metacog.model.arch import base_model

    m = base_model(model)
    impl = getattr(m.config, "_attn_implementation", None)
    if impl == NAME:
        return
    if impl != "sdpa":
        raise ValueError(f"ragged attention wraps SDPA; this model runs {impl!r} attention")
    _register()
    m.set_attn_implementation(NAME)


def is_ragged(model) -> bool:
    """Whether ``model`` runs :func:`ragged_attention`."""
    from metacog.model.arch import base_model

    return getattr(base_model(model).config, "_attn_implementation", None) == NAME
