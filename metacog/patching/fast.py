"""The fast patched runs: every (component, layer) variant at one target position in batches.

A patch at position ``p`` leaves every earlier position unchanged, so the target's keys/values
before ``p`` are computed once and shared; a patch at layer ``h`` leaves every state below ``h``
unchanged, so (where :func:`supports_skip`'s self-test passes) each variant starts at its own
block from the target's cached inputs (:func:`run_skip`), sorted by layer and batched as they
join; elsewhere the model's own forward runs over every block with the patches as hooks
(:func:`run_full`). Same cells as :mod:`metacog.patching.reference` (docs/PATCHING.md)."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from metacog.model import arch
from metacog.model.hooks import block_output
from metacog.patching.hook_points import ThreadOwner, Variant, decoder_blocks, hook_point, row_patch, sublayer
from metacog.patching.pairs import Side, answer_window
from metacog.patching.trace import CellResult, Trace, dot_tol, trace, tree_attention_mask, tree_layout
from metacog.readout import values as conf
from metacog.readout.values import body_and_head, get_trie, score_trie


_SKIP_OK: dict[int, tuple] = {}  # id(model) -> (model weakref, verdict)


def supports_skip(lm) -> bool:
    """Whether the fast path may start a variant at its own block, decided once per model by a
    self-test (:func:`skip_selftest`): run the blocks by hand from a traced pass's inputs and
    keep block skipping only where that reproduces the model's own forward. Elsewhere the
    fast path runs the model's own forward over every block (same results, less saving)."""
    import weakref

    model = lm.model
    hit = _SKIP_OK.get(id(model))
    if hit is not None and hit[0]() is model:
        return hit[1]
    ok = skip_selftest(lm)
    _SKIP_OK[id(model)] = (weakref.ref(model), ok)
    return ok


@torch.no_grad()
def skip_selftest(lm, text: str = "Question: what is 6 times 7? Answer: 42. Confidence:") -> bool:
    """True when :func:`run_skip` (blocks run by hand from the traced inputs, rotary
    embeddings from the body, the final norm) gives the same final states as
    :func:`run_full` (the model's own forward) for a no-op patch at every block of a short
    sequence: relative max difference ≤ 1e-4 (float32) or 3e-2 (half precision). Any error
    (a block that takes other arguments, per-layer rotary tables, ...) means False."""
    ids = [int(i) for i in lm.tokenizer.encode(text)][:24]
    if len(ids) < 4 or not conf.tree_ok(lm.model, len(ids), get_trie(lm.tokenizer)):
        return False
    body = body_and_head(lm.model)[0]
    if arch.final_norm(lm.model, body) is None:
        return False
    try:
        side = Side(lm=lm, ids=ids, positions={}, label="selftest")
        tr = trace(side, tree=True)
        p = len(ids) // 2
        vs = [Variant("resid", h, tr.resid[h, p]) for h in range(lm.n_layers)]
        owner = ThreadOwner()
        a = run_skip(lm, tr, p, vs, owner).float()
        b = run_full(lm, tr, ids, p, vs, owner).float()
    except Exception:
        return False
    tol = 1e-4 if next(lm.model.parameters()).dtype == torch.float32 else 3e-2
    scale = float(b.abs().max()) or 1.0
    return bool(a.shape == b.shape and torch.isfinite(a).all() and float((a - b).abs().max()) <= tol * scale)


class _PrefixKV:
    """Minimal cache for one hand-run pass: the target's keys/values of positions [0, p)
    per block, shared by every row, with this pass's own keys/values appended."""

    def __init__(self, kv: list, p: int):
        self.kv = kv
        self.p = p

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        k0, v0 = self.kv[layer_idx]
        B = key_states.shape[0]
        k = torch.cat([k0[:, :, : self.p, :].expand(B, -1, -1, -1), key_states], dim=2)
        v = torch.cat([v0[:, :, : self.p, :].expand(B, -1, -1, -1), value_states], dim=2)
        return k, v


@torch.no_grad()
def run_skip(lm, tr: Trace, p: int, variants: list[Variant], owner) -> torch.Tensor:
    """Final hidden states [B, Q, d] (queries: suffix p..T-1, then the trie) of the variants,
    each starting at its own block from the target's cached inputs (rows sorted by block)."""
    body, _ = body_and_head(lm.model)
    layers = decoder_blocks(lm.model)
    L = len(layers)
    trie = get_trie(lm.tokenizer)
    dev = tr.resid.device
    T = tr.T
    pos, mask = tree_layout(trie, T, p, dev)
    mask = tree_attention_mask(lm.model, mask, tr.resid.dtype)
    qidx = torch.cat([torch.arange(p, T), torch.arange(T, T + trie.n_nodes)]).to(dev)
    kv = _PrefixKV(tr.kv, p)
    hidden = None
    pe = None
    by_block: dict[int, list[int]] = {}
    for j, v in enumerate(variants):
        by_block.setdefault(v.block, []).append(j)
    start = min(by_block)
    for blk in range(start, L + 1):
        new = by_block.get(blk, [])
        patches = []
        if new:
            inp = tr.resid[blk].index_select(0, qidx).unsqueeze(0).repeat(len(new), 1, 1)
            off = 0 if hidden is None else hidden.shape[0]
            for r, j in enumerate(new):
                if variants[j].component == "resid":
                    inp[r, 0] = variants[j].vec.to(inp.dtype)
                else:
                    patches.append((off + r, j))
            hidden = inp if hidden is None else torch.cat([hidden, inp], dim=0)
        if blk == L:
            break
        if pe is None and hasattr(body, "rotary_emb"):
            pe = body.rotary_emb(hidden, position_ids=pos)
        stack = contextlib.ExitStack()
        with stack:
            for comp in ("attn", "mlp"):
                rows = [r for r, j in patches if variants[j].component == comp]
                if rows:
                    vecs = torch.stack([variants[j].vec for r, j in patches if variants[j].component == comp])
                    mod = sublayer(layers[blk], comp, lm.model)
                    stack.enter_context(row_patch(mod, rows, vecs, 0, owner, batch=hidden.shape[0]))
            extra = {} if pe is None else {"position_embeddings": pe}
            hidden = block_output(layers[blk](hidden, attention_mask=mask, position_ids=pos, **arch.kv_kwargs(layers[blk], kv),
                                              use_cache=True, **extra))
    return arch.final_norm(lm.model, body)(hidden)


@torch.no_grad()
def run_full(lm, tr: Trace, ids: list[int], p: int, variants: list[Variant], owner) -> torch.Tensor:
    """Same as :func:`run_skip` through the model's own forward over every block (patches by
    hooks), for architectures the hand-started path does not cover."""
    from transformers import DynamicCache

    body, _ = body_and_head(lm.model)
    layers = decoder_blocks(lm.model)
    trie = get_trie(lm.tokenizer)
    dev = tr.resid.device
    T = tr.T
    B = len(variants)
    pos, mask = tree_layout(trie, T, p, dev)
    mask = tree_attention_mask(lm.model, mask, tr.resid.dtype)
    q = torch.cat([torch.tensor(ids[p:T], dtype=torch.long), trie.token]).to(dev).unsqueeze(0).expand(B, -1)
    cache = DynamicCache(ddp_cache_data=[(k[:, :, :p].expand(B, -1, -1, -1).contiguous(), v[:, :, :p].expand(B, -1, -1, -1).contiguous()) for k, v in tr.kv])
    groups: dict[tuple, list[int]] = {}
    for j, v in enumerate(variants):
        groups.setdefault((v.component, v.h), []).append(j)
    with contextlib.ExitStack() as stack:
        for (comp, h), rows in groups.items():
            mod, pre = hook_point(layers, comp, h, lm.model)
            stack.enter_context(row_patch(mod, rows, torch.stack([variants[j].vec for j in rows]), 0, owner, pre=pre, batch=B))
        out = body(input_ids=q, attention_mask=mask, position_ids=pos.expand(B, -1), **arch.kv_kwargs(body, cache), use_cache=True)
    return out.last_hidden_state


@torch.no_grad()
def cells_from_final(lm, final: torch.Tensor, S: int, p: int, window, greedy: dict, check_answer: bool) -> list[CellResult]:
    """Readouts of a batch of patched runs from their final hidden states ``final`` ``[B, Q, d]``
    (queries: target positions ``p..T-1`` then every trie node; ``S = T - p``): the exact 0–100
    distribution by :func:`~metacog.readout.values.score_trie`, and — with ``check_answer`` —
    the number of answer-window positions ≥ ``p`` whose greedy token differs from ``greedy``."""
    trie = get_trie(lm.tokenizer)
    _, to_logits = body_and_head(lm.model)
    hid = final[:, S - 1 :]  # root then every node
    rd = score_trie(hid, to_logits, trie, dot_tol())
    flips = np.zeros(final.shape[0], dtype=int)
    if check_answer and window is not None:
        qs = [q for q in range(window[0], window[1] + 1) if q >= p]
        if qs:
            z = to_logits(final[:, [q - p for q in qs]])  # [B, |qs|, V]
            am = z.argmax(-1).cpu().numpy()
            ref = np.array([greedy[q] for q in qs])
            flips = (am != ref[None, :]).sum(1)
    return [CellResult(rd.probs[b], float(rd.other[b]), float(rd.unresolved[b]), bool(flips[b] == 0), int(flips[b]))
            for b in range(final.shape[0])]


@torch.no_grad()
def patch_position_fast(target: Side, tr: Trace, p: int, variants: list[Variant], check_answer: bool = True,
                        max_batch: int = 32, skip: bool | None = None) -> list[CellResult]:
    """Readouts of every variant at target position ``p`` (the fast path)."""
    lm = target.lm
    owner = ThreadOwner()
    skip = supports_skip(lm) if skip is None else skip
    order = sorted(range(len(variants)), key=lambda j: variants[j].block)
    out: list[CellResult | None] = [None] * len(variants)
    window = answer_window(target)
    S = tr.T - p
    for s in range(0, len(order), max_batch):
        chunk = order[s : s + max_batch]
        vs = [variants[j] for j in chunk]
        if skip:
            final = run_skip(lm, tr, p, vs, owner)
            rank = sorted(range(len(vs)), key=lambda j: vs[j].block)  # rows come out in block order (stable)
        else:
            final = run_full(lm, tr, target.ids, p, vs, owner)
            rank = list(range(len(vs)))
        cells = cells_from_final(lm, final, S, p, window, tr.greedy, check_answer)
        for r, j in enumerate(rank):
            out[chunk[j]] = cells[r]
    return out  # type: ignore[return-value]
