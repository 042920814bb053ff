"""Batch-invariant attention: each row attends over its own keys only ("ragged" attention).

Why (measured by ``bench/bench_invariance.py --kernels``, docs/SCIENCE.md "Batch invariance"):
in bfloat16 on a CPU, a linear layer's output rows do not depend on how many rows the batch has
(M = 1 … 300: 0 of 10,752 elements differ), and scaled-dot-product attention does not depend on
how many queries or same-length rows are batched with a row; it does depend on **masked keys**:
left padding (or trailing masked keys) changes the kernel's blocking over the key axis, and one
bf16 rounding step (7e-4 relative) then propagates until an item's greedy answer or E[v]
changes with its batch companions. Removing every key column a row never attends, before
attention, leaves each row exactly the computation it would have alone.

:func:`ragged_attention` does that per row: it keeps the key columns at least one of the row's
queries attends, groups rows with the same number of kept keys (and the same mask shape) into
one call of transformers' own SDPA attention, and writes zeros for query rows that attend
nothing (padding). A row whose kept-key mask is plain causal (queries = keys) or full (one
query) is passed without a mask, exactly as a batch of one with no padding is, so an item alone
and an item in any batch take the same kernel path. Registered with transformers'
``AttentionInterface`` and ``AttentionMaskInterface`` under :data:`NAME`;
:func:`metacog.model.loading.load_model` selects it for bfloat16 on a CPU where the family
runs SDPA (``ModelSettings.dtype`` ``auto`` on a CPU with bf16 arithmetic, or ``bfloat16``).

What it does not fix: float32 matmuls whose blocking depends on the row count (2 threads: rows
of a 7-row product differ from the same rows in an 8-row one, at 5e-7) and GPU kernels
(cuBLAS picks algorithms by shape). Batch invariance in bfloat16 also needs every layout an
item sees to be its own; the shared-prefix forward (a batch's common prefix computed once,
:func:`metacog.readout.batching.shared_prefix_len`) is therefore off under this attention.

Public entry: :func:`ragged_attention`; :func:`enable`, :func:`is_ragged`.
"""
from __future__ import annotations

import torch

NAME = "metacog_ragged"


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

    if attention_mask is None or not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 4 \
            or attention_mask.shape[1] != 1:
        return sdpa(query, key, value, attention_mask, is_causal), None
    B, _, Tq, _ = query.shape
    allowed = _allowed(attention_mask)[:, 0].expand(B, Tq, -1)  # [B, Tq, Tk]
    keep = allowed.any(dim=1)  # [B, Tk]: the keys some query of the row attends
    out = query.new_zeros(B, Tq, query.shape[1], value.shape[-1])
    groups: dict[tuple, list[int]] = {}
    masks: dict[int, torch.Tensor] = {}
    for b in range(B):
        n = int(keep[b].sum())
        if n == 0:
            continue
        m = allowed[b][:, keep[b]]  # [Tq, n]
        if Tq == 1 and bool(m.all()):
            kind = "full"
        elif Tq == n and torch.equal(m, torch.ones(Tq, n, dtype=torch.bool, device=m.device).tril()):
            kind = "causal"
        else:
            kind = "masked"
            masks[b] = m
        groups.setdefault((n, kind), []).append(b)
    for (n, kind), rows in groups.items():
        idx = torch.tensor(rows, device=query.device)
        k = torch.stack([key[b][:, keep[b]] for b in rows])
        v = torch.stack([value[b][:, keep[b]] for b in rows])
        if kind == "masked":
            m = torch.stack([masks[b] for b in rows]).unsqueeze(1)  # [g, 1, Tq, n]
            o = sdpa(query[idx], k, v, m, False)
            o = o.masked_fill(~m[:, 0].any(-1)[..., None, None], 0.0)  # queries that attend nothing: padding
        else:
            o = sdpa(query[idx], k, v, None, kind == "causal")
        out[idx] = o.to(out.dtype)
    return out, None


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
