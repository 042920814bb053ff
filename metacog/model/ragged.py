"""Batch-invariant attention: each row attends over its own keys only ("ragged" attention).

Why (measured by ``bench/bench_invariance.py --kernels``, docs/SCIENCE.md "Batch invariance"):
in bfloat16 on a CPU, a linear layer's output rows do not depend on how many rows the batch has
as long as it has two or more (one row takes another kernel: see below), and scaled-dot-product attention does not depend on
how many queries or same-length rows are batched with a row; it does depend on **masked keys**:
left padding (or trailing masked keys) changes the kernel's blocking over the key axis, and one
bf16 rounding step (7e-4 relative) then propagates until an item's greedy answer or E[v]
changes with its batch companions. Removing every key column a row never attends, before
attention, leaves each row exactly the computation it would have alone.

:func:`ragged_attention` gives every row a **canonical layout** that depends on the row alone:
the key columns at least one of its queries attends, in order, then masked padding keys up to a
multiple of :data:`BUCKET` (32); likewise its queries that attend anything, then dummy queries
(a decode step's single query stays single). Rows of one canonical shape run in one call of
transformers' SDPA attention; query rows that attend nothing (padding) come out as zeros.
Registered with transformers' ``AttentionInterface`` and ``AttentionMaskInterface`` under
:data:`NAME`; :func:`metacog.model.loading.load_model` selects it for bfloat16 on a CPU where
the family runs SDPA (``--dtype bfloat16``, and ``auto`` on a CPU with bf16 units).

One more kernel matters: a bf16 matmul with **one** row takes another kernel than with two
or more and can round one output differently (measured on SmolLM2's down projection: 1 of 576
elements), so under this attention generation never runs a single row and the readout's "."
look-ahead forward never has a single slot (:func:`metacog.model.generation.greedy_batch`,
:func:`metacog.readout.values.read_values`). And a float32 piece inside a bf16 forward brings
float32's row-count dependence back: LoRA adapters on a ragged base load in bfloat16
(:func:`metacog.finetune.backends.peft_backend.load_adapter_model`), and probe-conditioned
steering reads its probe with one dot product per row (:func:`metacog.steering.intervene.probe_conditioned`).

Measured (docs/SCIENCE.md "Batch invariance"): on tiny random models of seven SDPA families, and
on the embedded SmolLM2-135M-Instruct through every stage that runs the model (answers, inline
and two-pass readout, cache, multiple choice, patching, steering, the methods, fine-tune
evaluation: ``bench/bench_invariance.py``, ``bench/bench_invariance_stages.py``), an item's
numbers are bit-identical alone and in any batch. Cost against float32: the study 0.66× the time
(docs/PERFORMANCE.md).

What it does not fix: float32 matmuls whose blocking depends on the row count (2 threads: rows
of a 7-row product differ from the same rows in an 8-row one, at 5e-7) and GPU kernels
(cuBLAS picks algorithms by shape). Batch invariance in bfloat16 also needs every layout an
item sees to be its own: the shared-prefix forward (a prefix computed once for the batch) splits
each row where the row alone decides, after the chat template's system turn
(:func:`metacog.readout.batching.prefix_split`, layout version :data:`LAYOUT` 2; version 1
computed every row's whole prompt), never at the batch's common prefix.

Public entry: :func:`ragged_attention`; :func:`enable`, :func:`is_ragged`.
"""
from __future__ import annotations

import functools
import threading

import torch

NAME = "metacog_ragged"
#: Version of the layouts an item's forwards see under this attention, part of the answers
#: stage's key (:func:`metacog.stages.answers.numerics_key`): 1 = every row's whole prompt in one
#: forward; 2 = the chat template's system turn as a shared prefix, split by the row alone.
LAYOUT = 2
#: Keys per row are padded (masked slots) to a multiple of this: the layout depends on the row alone,
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
    unchanged (no family here builds one). The layout (which rows share a call, which key and
    query slots each row keeps) depends on the mask alone, so it is computed once per forward
    and reused by every layer (:func:`_layout`)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def sdpa(q, k, v, m, causal):
        return sdpa_attention_forward(module, q, k, v, m, dropout=dropout, scaling=scaling, is_causal=causal, **kwargs)[0]

    if attention_mask is not None and (not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 4
                                       or attention_mask.shape[1] != 1):
        return sdpa(query, key, value, attention_mask, is_causal), None
    B, _, Tq, _ = query.shape
    Tk = key.shape[2]
    plan = _layout(attention_mask, B, Tq, Tk, query.device)
    if len(plan) == 1 and plan[0][0] is None:  # one layout shared by every row, kept slots in order
        _, m, Lk, Lq = plan[0]
        o = sdpa(_pad(query, Lq), _pad(key, Lk), _pad(value, Lk), m, False)  # [B, Lq, H, Dv]
        return o[:, :Tq].to(query.dtype), None
    out = query.new_zeros(B, Tq, query.shape[1], value.shape[-1])
    for rows, kidx, qidx, m, r, real in plan:
        o = sdpa(_take(query[rows], qidx), _take(key[rows], kidx), _take(value[rows], kidx), m, False)  # [g, Lq, H, Dv]
        out[r, qidx[real]] = o[real].to(out.dtype)
    return out, None


_CACHE = threading.local()  # the last forward's layout, per thread (the app runs jobs in threads)


def _layout(attention_mask, B: int, Tq: int, Tk: int, device) -> list:
    """Per canonical shape ``(Lq, Lk)``: ``(rows [g], kidx [g, Lk], qidx [g, Lq], mask [g, 1, Lq, Lk],
    rows of the real query slots, real-slot mask [g, Lq])``. Cached for the mask object (held, so
    its identity cannot be reused) and its in-place version: every layer of a forward gets the same.

    A mask shared by the whole batch (``[1, 1, Tq, Tk]``: patching's tree passes, where every row
    is a variant of one sequence) under which every key and every query is used gives one entry
    ``(None, mask [1, 1, Lq, Lk], Lk, Lq)``: each row's canonical layout is its own slots
    in order then zero padding, the layout it would have alone, so no gather is needed (the
    result is the same as the general path's, bit for bit: same slots, same shapes)."""
    shared = attention_mask is not None and attention_mask.shape[0] == 1
    key = (None if shared else B, Tq, Tk, str(device), None if attention_mask is None else attention_mask._version)
    hit = getattr(_CACHE, "entry", None)
    if hit is not None and hit[0] is attention_mask and hit[1] == key:
        return hit[2]
    if shared:
        allowed = _allowed(attention_mask)[0, 0]  # [Tq, Tk]
        if bool(allowed.any(dim=0).all()) and bool(allowed.any(dim=1).all()):
            Lk, Lq = (int(x) for x in _span(torch.tensor([Tk, Tq])))
            m = torch.nn.functional.pad(allowed, (0, Lk - Tk, 0, Lq - Tq), value=False)
            plan = [(None, m.view(1, 1, Lq, Lk), Lk, Lq)]
            _CACHE.entry = (attention_mask, key, plan)
            return plan
        key = (B,) + key[1:]
        hit = getattr(_CACHE, "entry", None)
        if hit is not None and hit[0] is attention_mask and hit[1] == key:
            return hit[2]
    if attention_mask is None:  # no padding anywhere: causal (bottom-right aligned), or one query over all keys
        allowed = _causal(Tq, Tk, device).expand(B, Tq, Tk)
    else:
        allowed = _allowed(attention_mask)[:, 0].expand(B, Tq, Tk)  # [B, Tq, Tk]
    keep = allowed.any(dim=1)  # [B, Tk]: the keys some query of the row attends
    qkeep = allowed.any(dim=2)  # [B, Tq]: the queries that attend some key (the rest are padding)
    kspan = _span(keep.sum(dim=1))  # each row's canonical key and query counts: functions of the row alone
    qspan = _span(qkeep.sum(dim=1))
    groups = torch.stack([qspan, kspan], dim=1)
    plan = []
    for Lq, Lk in torch.unique(groups, dim=0).tolist():  # rows with the same canonical shape run in one call
        if Lq == 0 or Lk == 0:
            continue
        rows = torch.nonzero((groups == torch.tensor([Lq, Lk], device=groups.device)).all(dim=1)).squeeze(1)
        kidx = _compact(keep[rows], Lk)  # [g, Lk] source column of each slot (Tk: a padding key)
        qidx = _compact(qkeep[rows], Lq)  # [g, Lq] source row of each query slot (Tq: a padding query)
        m = _pad1(_pad1(allowed[rows], 2), 1)  # [g, Tq + 1, Tk + 1]: padding queries and keys attend nothing
        m = m.gather(2, kidx[:, None, :].expand(-1, Tq + 1, -1)).gather(1, qidx[:, :, None].expand(-1, -1, Lk))
        real = qidx < Tq  # slots holding a real query
        r = rows[:, None].expand(-1, Lq)[real]
        plan.append((rows, kidx, qidx, m.unsqueeze(1), r, real))
    _CACHE.entry = (attention_mask, key, plan)
    return plan


def _span(n: torch.Tensor) -> torch.Tensor:
    """Canonical length for ``n`` kept keys or queries: 1 stays 1 (a decode step), else ``n``
    rounded up to a multiple of :data:`BUCKET`."""
    return torch.where(n <= 1, n, (n + BUCKET - 1) // BUCKET * BUCKET)


def _compact(kept: torch.Tensor, L: int) -> torch.Tensor:
    """``[g, L]`` indices: row b's kept positions in order, then ``T`` (the padding slot, just
    after the T real ones) up to ``L``."""
    g, T = kept.shape
    idx = torch.full((g, L + 1), T, dtype=torch.long, device=kept.device)
    slot = torch.where(kept, kept.long().cumsum(dim=1) - 1, torch.full_like(kept, L, dtype=torch.long))
    idx.scatter_(1, slot, torch.arange(T, device=kept.device).expand(g, T))
    return idx[:, :L]


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x [g, h, T, d]`` gathered along T by ``idx [g, L]``; a slot with index T (a padding key
    or query, masked in every row) gets a copy of row T - 1 instead of zeros. One copy, not two
    (no zero row is appended first), and the same attention bit for bit: a masked key's score
    is replaced by -inf and its value weighted by an exact 0, so any finite content gives the
    zeros' result (``tests/unit/model/test_ragged.py``); a padding query's output is discarded."""
    T = x.shape[2]
    return x.gather(2, idx.clamp(max=T - 1)[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[3]))


def _pad(x: torch.Tensor, L: int) -> torch.Tensor:
    """``x [B, h, T, d]`` with ``L - T`` zero rows appended along T (``x`` itself when ``L == T``)."""
    T = x.shape[2]
    return x if L == T else torch.nn.functional.pad(x, (0, 0, 0, L - T))


def _pad1(m: torch.Tensor, dim: int) -> torch.Tensor:
    """A boolean mask with one False slice appended along ``dim``."""
    shape = list(m.shape)
    shape[dim] = 1
    return torch.cat([m, m.new_zeros(shape)], dim=dim)


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
    from metacog.model.arch import attention_implementation, base_model

    m = base_model(model)
    impl = attention_implementation(m)
    if impl == NAME:
        return
    if impl != "sdpa":
        raise ValueError(f"ragged attention wraps SDPA; this model runs {impl!r} attention")
    _register()
    m.set_attn_implementation(NAME)


def is_ragged(model) -> bool:
    """Whether ``model`` runs :func:`ragged_attention`."""
    from metacog.model.arch import attention_implementation

    return attention_implementation(model) == NAME
