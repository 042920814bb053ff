"""Verbal confidence: parse it from text, and read the exact distribution over 0–100.

Parsing (SCIENCE.md, "Parsing verbal confidence"): :mod:`metacog.readout.verbal` is the one parser;
``parse_confidence``, ``parse_inline``, ``parse_answer`` (and ``parse_verbal`` /
``parse_inline_verbal``, which also return the rule that fired) are re-exported here.

The exact 0–100 readout: for every integer v, the continuation ``" {v}"`` is tokenised on
its own (SmolLM2 writes " 73" as "Ġ","7","3"). Then

    P(v) = Π_i P(t_i | prefix, t_<i) · P(the number ends | prefix, v)

and the number ends unless the next token begins with a digit, or begins with "." followed
by a digit, or is a lone "." followed by a digit (so "0.9999" is not the value 0, "73."
ending a sentence is 73). All 101 token paths (plus their "." look-ahead) form a trie that
is scored in one forward over the shared prefix's KV cache with a tree attention mask.
``other = 1 − Σ_v P(v)`` is the mass on anything that is not an integer 0–100.
Public entry: :func:`read_values` → :class:`Readout`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from metacog.model.arch import input_device, kv_cache, kv_kwargs
from metacog.model.ragged import is_ragged
from metacog.data.prompts import VALUE_FMT
from metacog.readout.batching import (  # noqa: F401  (body_and_head, left_pad, shared_prefix_len: re-exported)
    body_and_head, left_pad, prefix_split, shared_inputs, shared_prefix_len)

VALUES = np.arange(101)

# ----------------------------------------------------------------------------------------
# parsing: the one verbal-confidence parser lives in metacog.readout.verbal (re-exported here)
# ----------------------------------------------------------------------------------------
from metacog.readout.verbal import (  # noqa: E402,F401
    RULES as VERBAL_RULES,
    VerbalParse,
    parse_answer,
    parse_confidence,
    parse_inline,
    parse_inline_verbal,
    parse_verbal,
)


# ----------------------------------------------------------------------------------------
# the value trie for one tokenizer
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ValueTrie:
    """The token paths of " 0" .. " 100" for one tokenizer as a trie of ``N`` nodes (value
    nodes, then each value's "." look-ahead); fields give per-node ``[N]`` / per-value ``[101]`` indices."""
    token: torch.Tensor  # [N] token id of each node
    parent: torch.Tensor  # [N] parent node (-1 = the prefix's last position)
    depth: torch.Tensor  # [N] 1-based depth
    ancestors: torch.Tensor  # [N, N] bool, node j is ancestor-or-self of node i
    terminal: torch.Tensor  # [101] node index of the last token of each value
    dot_node: torch.Tensor  # [101] node index of "<value>." (or -1 if no lone "." token)
    digit_mask: torch.Tensor  # [V] float: tokens that start with a digit
    dotdigit_mask: torch.Tensor  # [V] float: tokens "." + digit...
    dot_id: int  # id of the lone "." token, or -1
    value_ids: tuple  # per value, its token ids
    n_value_nodes: int  # nodes [0, n_value_nodes) spell the values; the rest are "." look-aheads

    @property
    def n_nodes(self) -> int:
        """Number of trie nodes ``N`` (value nodes plus "." look-aheads)."""
        return int(self.token.shape[0])


def _raw_tokens(tok) -> list[str]:
    n = len(tok)
    raw = tok.convert_ids_to_tokens(list(range(n)))
    return [r if isinstance(r, str) else "" for r in raw]


def _starts_digit(raw: str) -> bool:
    if raw[:1].isascii() and raw[:1].isdigit():
        return True
    return bool(re.match(r"^<0x3[0-9]>$", raw))  # sentencepiece byte fallback


@lru_cache(maxsize=8)
def _trie_cached(tok_key: int, tok) -> ValueTrie:
    return build_trie(tok)


def get_trie(tok) -> ValueTrie:
    """:func:`build_trie` for ``tok``, cached per tokenizer object (8 most recent)."""
    return _trie_cached(id(tok), tok)


def build_trie(tok) -> ValueTrie:
    """The :class:`ValueTrie` of ``tok``: each value v tokenised alone as ``VALUE_FMT`` (" {v}")."""
    value_ids = tuple(tuple(tok(VALUE_FMT.format(v=v), add_special_tokens=False)["input_ids"]) for v in VALUES)
    nodes: dict[tuple, int] = {}
    token, parent, depth = [], [], []

    def add(path: tuple) -> int:
        if path in nodes:
            return nodes[path]
        p = add(path[:-1]) if len(path) > 1 else -1
        nodes[path] = len(token)
        token.append(path[-1])
        parent.append(p)
        depth.append(len(path))
        return nodes[path]

    terminal = [add(ids) for ids in value_ids]
    raw = _raw_tokens(tok)
    V = max(len(raw), getattr(tok, "vocab_size", 0) or 0)
    digit = torch.zeros(V)
    dotdigit = torch.zeros(V)
    dot_id = -1
    for i, r in enumerate(raw):
        if _starts_digit(r):
            digit[i] = 1.0
        elif r.startswith(".") and len(r) > 1 and r[1].isascii() and r[1].isdigit():
            dotdigit[i] = 1.0
        elif r == ".":
            dot_id = i
    n_value_nodes = len(token)
    dot_node = [-1] * len(VALUES)
    if dot_id >= 0:
        for v, ids in enumerate(value_ids):
            dot_node[v] = add(ids + (dot_id,))
    n = len(token)
    par = torch.tensor(parent)
    anc = torch.eye(n, dtype=torch.bool)
    order = sorted(range(n), key=lambda i: depth[i])
    for i in order:  # parents come first
        if parent[i] >= 0:
            anc[i] |= anc[parent[i]]
    return ValueTrie(
        token=torch.tensor(token),
        parent=par,
        depth=torch.tensor(depth),
        ancestors=anc,
        terminal=torch.tensor(terminal),
        dot_node=torch.tensor(dot_node),
        digit_mask=digit,
        dotdigit_mask=dotdigit,
        dot_id=dot_id,
        value_ids=value_ids,
        n_value_nodes=n_value_nodes,
    )


@dataclass
class Readout:
    """Result of :func:`read_values`: ``probs`` ``[B, 101]`` P(v), ``other`` ``[B]``, ``states``
    ``[B, P, n_layers+1, d_model]`` or None, ``unresolved`` ``[B]`` (probability mass, see ``dot_tol``)."""
    probs: np.ndarray  # [B, 101] P(value), not renormalised
    other: np.ndarray  # [B] 1 - sum(probs)
    states: torch.Tensor | None  # [B, P, n_layers+1, d] residual stream at requested positions
    unresolved: np.ndarray | None = None  # [B] bound on mass whose "." look-ahead was skipped (≤ dot_tol each)
    lookaheads: np.ndarray | None = None  # [B] int: "." look-aheads scored per prefix (of 101)
    ev_bound: np.ndarray | None = None  # [B] certified bound on |E[v] - E[v] with every look-ahead scored|, points

    @property
    def expected(self) -> np.ndarray:
        """E[v] per row, ``[B]`` points on 0–100 (renormalised over 0–100; NaN without mass)."""
        return expected_value(self.probs)

    @property
    def argmax(self) -> np.ndarray:
        """The most probable value per row, ``[B]`` points on 0–100 (as float)."""
        return self.probs.argmax(axis=1).astype(float)


def expected_value(probs: np.ndarray) -> np.ndarray:
    """E[v] of the distribution renormalised over 0–100 (NaN where it has no mass)."""
    probs = np.asarray(probs, dtype=np.float64)
    tot = probs.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, (probs * VALUES).sum(axis=-1) / tot, np.nan)


DOT_TOL = 1e-9  # a value's "." look-ahead is scored when P(path) · P("." | value) exceeds this
EV_TOL = 0.005  # and the smallest of those are skipped while E[v] provably moves by at most this (points of 100)


@torch.no_grad()
def read_values(
    lm,
    prefixes: list[list[int]],
    capture: list[list[int]] | None = None,
    chunk: int = 128,
    values: bool = True,
    dot_tol: float = DOT_TOL,
    ev_tol: float = EV_TOL,
    share_prefix: bool = True,
) -> Readout:
    """Exact P(value) for 0..100 after each prefix (one batch), and optionally the residual
    stream at the token indices ``capture[b]`` of each prefix, from the same forward.
    With ``values=False`` only the states are read (no trie forward; probs are NaN).

    The "." look-ahead of value v is scored only where P(path to v) · P("." | v) > dot_tol
    (a second, small tree forward); elsewhere "." counts as the end of the number, an error
    of at most that product, summed into ``Readout.unresolved``. Beyond that, the look-aheads of
    smallest product are skipped while the certified bound on E[v]'s error stays within
    ``ev_tol`` points (:func:`score_trie`; docs/SCIENCE.md "The exact 0–100 distribution").
    ``dot_tol=0`` scores all. ``share_prefix``: the batch's common prefix runs once
    (:func:`metacog.readout.batching.prefix_split`, :func:`~metacog.readout.batching.shared_inputs`)."""
    from metacog.model.hooks import capture_residual

    model, tok = lm.model, lm.tokenizer
    trie = get_trie(tok)
    dev = input_device(model)
    body, to_logits = body_and_head(model)
    first = [min(c) for c in capture] if capture is not None and capture and all(capture) else None
    P, use = prefix_split(lm, prefixes, trie.n_nodes + 101, before=first) if share_prefix else (0, None)
    past = None
    if P:
        try:
            ids, att, pos, past = shared_inputs(body, prefixes, P, tok.pad_token_id, dev, use)
        except AttributeError:
            P, past = 0, None
    if not P:
        ids, att, pos = left_pad(prefixes, tok.pad_token_id, dev)
    B, T = att.shape  # T: every key of the batch (shared prefix + padded remainders)
    lens = att.sum(-1)
    states = None
    grabbed: list[torch.Tensor] = []
    ctx = None
    if capture is not None:
        pad = (T - lens).cpu()
        idx = torch.tensor(capture, dtype=torch.long) + pad.unsqueeze(-1) - P  # index in this forward's tokens
        ctx = capture_residual(model, idx, grabbed)
        ctx.__enter__()
    try:
        out = body(input_ids=ids, attention_mask=att, position_ids=pos, **kv_kwargs(body, past),
                   use_cache=values or past is not None)
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)
    if capture is not None:
        states = grabbed[0]
    if not values:
        nanp = np.full((B, 101), np.nan)
        return Readout(probs=nanp, other=np.full(B, np.nan), states=states)
    if tree_ok(model, T, trie):
        hid, tout, anc = value_tree(body, trie, out, att, lens, use_cache=True)
        tcache = kv_cache(tout)

        def dot_hidden(rows: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
            return _dot_hidden(body, trie, tcache, att, lens, anc, rows, vals, dev)
    else:  # ALiBi, or a sliding window the tree would overrun: plain 2D-masked continuations
        pcache = kv_cache(out)
        N = trie.n_value_nodes
        allr = torch.arange(B, device=dev).repeat_interleave(N)
        nodes = list(range(N)) * B
        tail = _plain_hidden(body, pcache, att, lens, allr, [node_path(trie, j) for j in nodes]).view(B, N, -1)
        hid = torch.cat([out.last_hidden_state[:, -1:, :], tail], dim=1)

        def dot_hidden(rows: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
            term = trie.terminal[vals.cpu()].tolist()
            return _plain_hidden(body, pcache, att, lens, rows, [node_path(trie, j) + [trie.dot_id] for j in term])

    r = score_trie(hid, to_logits, trie, dot_tol, dot_hidden=dot_hidden, chunk_rows=chunk, ev_tol=ev_tol)
    r.states = states
    return r


def _row_stats(rows: torch.Tensor, to_logits, trie: ValueTrie, utok: torch.Tensor, chunk_rows: int = 128):
    """For final hidden rows ``[R, d]``: (digit mass, ".digit" mass, P("."), log P(utok)) per
    row, from one logsumexp over the vocabulary per row (no softmax tensor is kept)."""
    dev = rows.device
    R = rows.shape[0]
    digit_idx = trie.digit_mask.nonzero().squeeze(-1).to(dev)
    dotdig_idx = trie.dotdigit_mask.nonzero().squeeze(-1).to(dev)
    digit = torch.zeros(R, device=dev)
    dotdig = torch.zeros(R, device=dev)
    dotp = torch.zeros(R, device=dev)
    sel = torch.empty(R, len(utok), device=dev)
    for s in range(0, R, chunk_rows):
        z = to_logits(rows[s : s + chunk_rows])  # [c, V] float
        lse = torch.logsumexp(z, dim=-1, keepdim=True)
        V, n = z.shape[-1], len(z)
        di = digit_idx[digit_idx < V]
        if di.numel():
            digit[s : s + n] = torch.exp(z[:, di] - lse).sum(-1)
        dd = dotdig_idx[dotdig_idx < V]
        if dd.numel():
            dotdig[s : s + n] = torch.exp(z[:, dd] - lse).sum(-1)
        if 0 <= trie.dot_id < V:
            dotp[s : s + n] = torch.exp(z[:, trie.dot_id] - lse[:, 0])
        if len(utok):
            sel[s : s + n] = z[:, utok] - lse
    return digit, dotdig, dotp, sel


@torch.no_grad()
def score_trie(hid: torch.Tensor, to_logits, trie: ValueTrie, dot_tol: float = DOT_TOL, dot_hidden=None,
               chunk_rows: int = 128, ev_tol: float = EV_TOL) -> Readout:
    """The readout rule, from final (normed) hidden states — the one implementation that
    :func:`read_values` and :mod:`metacog.patching` (its batched patched forwards) share.

    ``hid`` is ``[B, 1 + R, d]``: row 0 the position the number follows (the confidence
    slot), row ``1 + j`` trie node ``j``. Either every node is there (``R = trie.n_nodes``:
    values, then the "." look-aheads, from one tree forward), or only the value nodes
    (``R = trie.n_value_nodes``) and ``dot_hidden(rows, vals)`` returns the final states
    ``[K, d]`` of the look-aheads that are needed, for the (row, value) pairs given in
    ``need.nonzero()`` order.

    Which look-aheads are scored (docs/SCIENCE.md, the one rule): with w_v = P(path to v) ·
    P("." | v), a skipped look-ahead counts "v." as the end of the number, which overstates P(v)
    by at most w_v. Skipped are every v with w_v <= ``dot_tol`` and, where ``dot_tol > 0`` and
    ``ev_tol > 0``, the values of smallest w_v while U = Σ_skipped w_v <= ``ev_tol``/100 · S_low,
    S_low = Σ_v P(path to v) · (1 − P(digit) − P(".digit") − P(".")) (a lower bound on Σ_v P(v):
    every look-ahead continued by a digit). Certified, per prefix: Σ_v |P(v) − P_full(v)| <= U
    (``unresolved``) and |E[v] − E_full[v]| <= 100 · U / S_low points (``ev_bound``; ≤ ``ev_tol``
    unless the ``dot_tol`` skips alone exceed it). ``dot_tol=0`` scores every look-ahead."""
    B, R, d = hid.shape
    dev = hid.device
    Nv = trie.n_value_nodes
    full = R == trie.n_nodes + 1
    if R not in (trie.n_nodes + 1, Nv + 1):
        raise ValueError(f"score_trie needs 1 + {Nv} or 1 + {trie.n_nodes} rows per prefix, got {R}")
    utok = torch.unique(trie.token[:Nv]).to(dev)
    col = torch.zeros(int(trie.token.max()) + 1, dtype=torch.long)
    col[utok.cpu()] = torch.arange(len(utok))
    digit, dotdig, dotp, sel = _row_stats(hid[:, : Nv + 1].reshape(B * (Nv + 1), d), to_logits, trie, utok, chunk_rows)
    digit, dotdig, dotp = (x.view(B, Nv + 1) for x in (digit, dotdig, dotp))
    sel = sel.view(B, Nv + 1, len(utok))
    parent_row = (trie.parent[:Nv] + 1).to(dev)  # row of each node's parent: root 0, node k -> k+1
    edge = sel[:, parent_row, col[trie.token[:Nv]].to(dev)]  # [B, Nv] log P(node token | parent path)
    anc = trie.ancestors[:Nv, :Nv].to(dev)
    path = edge.double() @ anc.double().T  # [B, Nv] log P(path to node)
    term_row = trie.terminal.to(dev) + 1
    digit_t = digit[:, term_row].double()
    dotdig_t = dotdig[:, term_row].double()
    pdot_t = dotp[:, term_row].double()
    path_p = path[:, trie.terminal.to(dev)].exp()  # [B,101] P(value's tokens)
    after = torch.zeros_like(pdot_t)
    unresolved = torch.zeros(B, dtype=torch.float64, device=dev)
    n_look = torch.zeros(B, dtype=torch.long, device=dev)
    if trie.dot_id >= 0:
        weight = path_p * pdot_t
        need = weight > dot_tol
        if dot_tol > 0 and ev_tol > 0:
            s_low = (path_p * (1.0 - digit_t - dotdig_t - pdot_t).clamp(min=0.0)).sum(1)  # [B]
            order = weight.argsort(dim=1)  # smallest first; those under dot_tol are counted in the budget too
            fits = weight.gather(1, order).cumsum(1) <= (ev_tol / 100.0) * s_low.unsqueeze(1)
            need = need & ~torch.zeros_like(need).scatter(1, order, fits)
        unresolved = torch.where(need, torch.zeros_like(weight), weight).sum(1)
        n_look = need.sum(1)
        if bool(need.any()):
            bs, vs = need.nonzero(as_tuple=True)
            if full:
                rows = hid[bs, trie.dot_node.to(dev)[vs] + 1]  # [K, d]
            elif dot_hidden is not None:
                rows = dot_hidden(bs, vs)
            else:
                raise ValueError("score_trie: the look-ahead rows are neither in hid nor given by dot_hidden")
            after[bs, vs] = _row_stats(rows, to_logits, trie, utok[:0], chunk_rows)[0].double()
    s_low = (path_p * (1.0 - digit_t - dotdig_t - pdot_t).clamp(min=0.0)).sum(1)
    ev_bound = torch.where(unresolved > 0, 100.0 * unresolved / s_low.clamp(min=1e-300), torch.zeros_like(unresolved))
    ev_bound = torch.where((unresolved > 0) & (s_low <= 0), torch.full_like(ev_bound, math.inf), ev_bound)
    p_end = (1.0 - digit_t - dotdig_t - pdot_t * after).clamp(min=0.0, max=1.0)
    probs = np.clip((path_p * p_end).cpu().numpy(), 0.0, 1.0).astype(np.float64)
    other = np.clip(1.0 - probs.sum(axis=1), 0.0, 1.0)
    return Readout(probs=probs, other=other, states=None, unresolved=unresolved.cpu().numpy(),
                   lookaheads=n_look.cpu().numpy(), ev_bound=np.minimum(ev_bound.cpu().numpy(), 100.0))


def value_tree(body, trie: ValueTrie, out, att: torch.Tensor, lens: torch.Tensor, use_cache: bool):
    """One forward of the trie's value nodes over a prefix forward ``out`` (its KV cache and
    last hidden state): every node attends to the prefix's real tokens and to its own ancestors
    (tree attention), at the positions it would have in the sequence. Returns the final hidden
    states ``[B, 1 + N, d]`` (row 0 = the prefix's last position, row ``1 + j`` = node ``j``),
    the tree forward's output, and the ancestor matrix ``[N, N]``."""
    dev = att.device
    B, T = att.shape
    N = trie.n_value_nodes
    anc = trie.ancestors[:N, :N].to(dev)
    tids = trie.token[:N].to(dev).unsqueeze(0).expand(B, N)
    tpos = lens.unsqueeze(-1) - 1 + trie.depth[:N].to(dev).unsqueeze(0)
    mask = torch.zeros((B, 1, N, T + N), dtype=torch.bool, device=dev)
    mask[:, 0, :, :T] = att.bool().unsqueeze(1)
    mask[:, 0, :, T:] = anc.unsqueeze(0)
    tout = body(input_ids=tids, attention_mask=_additive(mask, hid_dtype(body)), position_ids=tpos,
                **kv_kwargs(body, kv_cache(out)), use_cache=use_cache)
    hid = torch.cat([out.last_hidden_state[:, -1:, :], tout.last_hidden_state], dim=1)
    return hid, tout, anc


def tree_ok(model, T: int, trie: ValueTrie) -> bool:
    """Whether the tree-masked forwards over a ``T``-token prefix are exact for ``model``
    (:func:`metacog.model.arch.tree_mask_ok` with the keys they span: prefix, every trie node, and
    up to 101 "." look-aheads). Where they are not, :func:`read_values` scores the same
    values with plain 2D-masked continuations of the prefix's cache."""
    from metacog.model.arch import tree_mask_ok

    return tree_mask_ok(model, T + trie.n_nodes + 101)


def node_path(trie: ValueTrie, j: int) -> list[int]:
    """Token ids from the root to trie node ``j`` (its ancestors by depth, then itself)."""
    anc = trie.ancestors[j].nonzero().flatten().tolist()
    return [int(trie.token[i]) for i in sorted(anc, key=lambda i: int(trie.depth[i]))]


PLAIN_CACHE_BYTES = 1 << 30  # budget of the prefix-cache copies one plain continuation batch holds


def _plain_hidden(body, cache, att: torch.Tensor, lens: torch.Tensor, rows: torch.Tensor, paths: list[list[int]],
                  chunk: int | None = None) -> torch.Tensor:
    """Final hidden states ``[K, d]`` at the last token of prefix ``rows[k]`` continued by
    ``paths[k]``, each continuation an ordinary forward over (a copy of) the prefix's KV cache
    with a 2D padding mask — what generation does, so it is exact for every attention
    variant (ALiBi, sliding windows). Continuations are grouped by length, ``chunk`` at a time
    (default: as many as fit :data:`PLAIN_CACHE_BYTES` of copied cache)."""
    import copy

    dev = att.device
    K = len(paths)
    out = None
    rows = rows.to(dev)
    if chunk is None:
        per_row = sum(t[:1].numel() * t.element_size() for lay in getattr(cache, "layers", []) for t in (lay.keys, lay.values)
                      if isinstance(t, torch.Tensor))
        chunk = max(1, min(512, PLAIN_CACHE_BYTES // max(per_row, 1)))
    by_len: dict[int, list[int]] = {}
    for k, pth in enumerate(paths):
        by_len.setdefault(len(pth), []).append(k)
    for n, ks_all in by_len.items():
        for s in range(0, len(ks_all), chunk):
            ks = ks_all[s : s + chunk]
            r = rows[ks]
            c = copy.deepcopy(cache)
            c.batch_select_indices(r)
            ids = torch.tensor([paths[k] for k in ks], dtype=torch.long, device=dev)
            a = torch.cat([att[r], torch.ones((len(ks), n), dtype=att.dtype, device=dev)], dim=1)
            pos = lens[r].unsqueeze(-1) + torch.arange(n, device=dev).unsqueeze(0)
            h = body(input_ids=ids, attention_mask=a, position_ids=pos, **kv_kwargs(body, c), use_cache=True).last_hidden_state[:, -1]
            if out is None:
                out = torch.empty((K, h.shape[-1]), dtype=h.dtype, device=dev)
            out[torch.tensor(ks, device=dev)] = h
            del c
    return out


def hid_dtype(model) -> torch.dtype:
    """The dtype of ``model``'s parameters (that of its hidden states)."""
    return next(model.parameters()).dtype


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean 4D mask (True = may attend) as the additive float mask that every attention
    implementation accepts (eager adds it to the scores; SDPA takes it as-is)."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def _dot_hidden(body, trie, cache, att, lens, anc, rows, vals, dev) -> torch.Tensor:
    """Final hidden states ``[K, d]`` of "." after value ``vals[k]`` in prefix ``rows[k]``
    (one small tree forward of "." tokens over the value-trie cache), for :func:`score_trie`."""
    B, T = att.shape
    N = anc.shape[0]
    counts = torch.bincount(rows, minlength=B)
    K = int(counts.max())
    if is_ragged(body) and B * K < 2:  # one row would take bf16's one-row matmul kernel: add a padding slot
        K = 2
    slot = torch.zeros_like(rows)
    for b in range(B):  # slot index of each pair within its row
        m = rows == b
        slot[m] = torch.arange(int(m.sum()), device=dev)
    term = trie.terminal.to(dev)[vals]  # the value node each "." follows
    ids = torch.full((B, K), trie.dot_id, dtype=torch.long, device=dev)
    pos = torch.zeros((B, K), dtype=torch.long, device=dev)
    pos[rows, slot] = lens[rows] - 1 + trie.depth.to(dev)[term] + 1
    mask = torch.zeros((B, 1, K, T + N + K), dtype=torch.bool, device=dev)
    if is_ragged(body):  # padding slots attend nothing, so a row's keys are those it would have alone
        mask[rows, 0, slot, :T] = att.bool()[rows]
        mask[rows, 0, slot, T + N + slot] = True
    else:  # SDPA/eager: a query that attends nothing would give NaN keys and values for the real ones
        mask[:, 0, :, :T] = att.bool().unsqueeze(1)
        mask[:, 0, torch.arange(K), T + N + torch.arange(K)] = True  # each "." sees itself (padding slots too)
    mask[rows, 0, slot, T : T + N] = anc[term]
    out = body(input_ids=ids, attention_mask=_additive(mask, hid_dtype(body)), position_ids=pos, **kv_kwargs(body, cache), use_cache=False)
    return out.last_hidden_state[rows, slot]


# ----------------------------------------------------------------------------------------
# reply labels (P(True), calibration-tuning, pairwise comparisons)
# ----------------------------------------------------------------------------------------
def label_ids(tok, labels, is_chat: bool) -> list[list[int]]:
    """Token ids of each reply label as it follows its prompt (``prompts.label_text``).

    Raises:
        ValueError: a label tokenises to no token."""
    from metacog.data.prompts import label_text

    out = [list(tok(label_text(l, is_chat), add_special_tokens=False)["input_ids"]) for l in labels]
    if any(not ids for ids in out):
        raise ValueError(f"a reply label tokenises to nothing: {labels!r}")
    return out


@torch.no_grad()
def read_labels(lm, prefixes: list[list[int]], labels, batch_size: int = 16, share_prefix: bool = True) -> np.ndarray:
    """P(each label's full token sequence | prefix), normalised over the label set: [B, L].

    The rule (exact for multi-token labels): for label l with tokens t_1..t_m,
    P(l) = Π_i P(t_i | prefix, t_<i), and the reported probability is P(l) / Σ_l' P(l').
    Labels that are all single tokens need one forward per prefix; otherwise every
    (prefix, label) sequence is scored by one forward. No end-of-word term is applied
    (the labels are whole replies; "Yes" and "Yesterday" are not both in any label set).
    ``share_prefix``: the tokens every prompt of a batch starts with (the chat template's system
    turn, the query's opening words) are run once and their KV cache is shared by the batch."""
    model, tok = lm.model, lm.tokenizer
    dev = input_device(model)
    body, to_logits = body_and_head(model)
    lids = label_ids(tok, labels, lm.is_chat)
    L = len(lids)
    logp = np.zeros((len(prefixes), L))
    if all(len(x) == 1 for x in lids):
        first = torch.tensor([x[0] for x in lids], device=dev)
        for s in range(0, len(prefixes), batch_size):
            h = _last_hidden(lm, prefixes[s : s + batch_size], dev, share_prefix)
            lsm = torch.log_softmax(to_logits(h), -1)
            logp[s : s + len(h)] = lsm[:, first].double().cpu().numpy()
    else:
        seqs = [(b, j, list(p) + lids[j]) for b, p in enumerate(prefixes) for j in range(L)]
        for s in range(0, len(seqs), batch_size):
            chunk = seqs[s : s + batch_size]
            ids, att, pos = left_pad([c[2] for c in chunk], tok.pad_token_id, dev)
            h = body(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=False).last_hidden_state
            for k, (b, j, _) in enumerate(chunk):
                m = len(lids[j])
                z = torch.log_softmax(to_logits(h[k, -m - 1 : -1]), -1)  # predictions of the label's tokens
                logp[b, j] = float(z.gather(-1, torch.tensor(lids[j], device=dev).view(-1, 1)).sum())
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


def _last_hidden(lm, seqs: list[list[int]], dev, share_prefix: bool = True) -> torch.Tensor:
    """Final hidden state at the last token of each sequence ([B, d]). With ``share_prefix`` a
    shared prefix (:func:`metacog.readout.batching.prefix_split`: the batch's common prefix of at
    least 8 tokens, or under ragged attention the chat template's system turn decided row by row)
    runs once and its cache serves the batch; the remainders are left-padded after it."""
    body = body_and_head(lm.model)[0]
    pad_id = lm.tokenizer.pad_token_id
    P, use = prefix_split(lm, seqs, 0) if share_prefix else (0, None)
    cache = None
    if P:
        try:
            ids, att, pos, cache = shared_inputs(body, seqs, P, pad_id, dev, use)
        except AttributeError:
            cache = None
    if cache is None:
        ids, att, pos = left_pad(seqs, pad_id, dev)
    return body(input_ids=ids, attention_mask=att, position_ids=pos, **kv_kwargs(body, cache),
                use_cache=cache is not None).last_hidden_state[:, -1]


def value_logprobs(model, tok, prefixes: list[list[int]]) -> torch.Tensor:
    """Differentiable log P(v) for v = 0..100 after each prefix: ``[B, 101]`` (float32, with
    gradients), for training objectives on the 0–100 distribution (Brier-loss tuning).

    The same trie and rule as :func:`read_values`, except that a "." after a value counts as
    the end of the number (no look-ahead; ``read_values(dot_tol=1.0)`` computes exactly this,
    and the difference from the exact readout is at most Σ_v P(v) · P("." | v))."""
    trie = get_trie(tok)
    dev = input_device(model)
    body, to_logits = body_and_head(model)
    ids, att, pos = left_pad(prefixes, tok.pad_token_id, dev)
    B = ids.shape[0]
    lens = att.sum(-1)
    N = trie.n_value_nodes
    if tree_ok(model, ids.shape[1], trie):
        out = body(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=True)
        hid, _, anc = value_tree(body, trie, out, att, lens, use_cache=False)
    else:  # ALiBi / short sliding window: every node as a plain sequence (differentiable, no cache copies)
        anc = trie.ancestors[:N, :N].to(dev)
        seqs = [list(p) for p in prefixes] + [list(p) + node_path(trie, j) for p in prefixes for j in range(N)]
        last = torch.cat([body(input_ids=i, attention_mask=a, position_ids=q, use_cache=False).last_hidden_state[:, -1]
                          for i, a, q in (left_pad(seqs[s : s + 64], tok.pad_token_id, dev) for s in range(0, len(seqs), 64))])
        hid = torch.cat([last[:B].unsqueeze(1), last[B:].view(B, N, -1)], dim=1)
    lsm = torch.log_softmax(to_logits(hid), dim=-1)  # [B, N+1, V]
    parent_row = (trie.parent[:N] + 1).to(dev)
    edge = lsm[:, parent_row, :].gather(-1, trie.token[:N].to(dev).view(1, -1, 1).expand(B, -1, 1)).squeeze(-1)  # [B,N]
    path = edge @ anc.float().T  # log P(path to node)
    term = trie.terminal.to(dev)
    p_term = lsm[:, term + 1, :].exp()  # next-token distribution after each value
    V = min(p_term.shape[-1], trie.digit_mask.shape[0])
    cont = p_term[..., :V] @ (trie.digit_mask[:V] + trie.dotdigit_mask[:V]).to(dev)  # the number goes on
    p_end = (1.0 - cont).clamp(min=1e-12)
    return path[:, term] + torch.log(p_end)
