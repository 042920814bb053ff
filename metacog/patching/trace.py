"""The clean (unpatched) run of one side — every residual state, the sub-layer outputs, the
keys/values per block, the greedy answer tokens and the exact 0–100 readout (:func:`trace`,
TransformerLens's ``run_with_cache``) — and the tree layout in which the 0–100 trie is read
after a sequence in one pass (:func:`tree_layout`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from metacog.model import arch
from metacog.model.hooks import block_output
from metacog.patching.hook_points import ThreadOwner, decoder_blocks, base_model, sublayer
from metacog.patching.pairs import Side
from metacog.readout import values as conf
from metacog.readout.values import Readout, body_and_head, get_trie, left_pad, score_trie


def _kv_of(cache, i: int):
    if hasattr(cache, "layers"):
        lay = cache.layers[i]
        return lay.keys, lay.values
    return cache.key_cache[i], cache.value_cache[i]  # older transformers


def dot_tol() -> float:
    """The "." look-ahead tolerance of :func:`metacog.readout.values.read_values`."""
    return float(conf.DOT_TOL)


def tree_layout(trie, T: int, p: int, dev) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries = target tokens p..T-1 (the suffix) then every trie node; keys = prefix [0,p)
    (cached) then the queries. Returns (position ids [1,Q], bool mask [1,1,Q,p+Q]): the
    suffix is causal, each node sees the whole sequence and its ancestors."""
    S = T - p
    N = trie.n_nodes
    Q = S + N
    mask = torch.zeros((Q, p + Q), dtype=torch.bool)
    mask[:, :p] = True
    mask[:S, p : p + S] = torch.tril(torch.ones((S, S), dtype=torch.bool))
    mask[S:, p : p + S] = True
    mask[S:, p + S :] = trie.ancestors
    pos = torch.cat([torch.arange(p, T), T - 1 + trie.depth]).unsqueeze(0)
    return pos.to(dev), mask.view(1, 1, Q, p + Q).to(dev)


def tree_attention_mask(model, mask: torch.Tensor, dtype) -> torch.Tensor:
    """The tree mask in the form the model's attention takes: boolean for SDPA (what
    load_model sets), additive float for eager attention."""
    impl = getattr(base_model(model).config, "_attn_implementation", "sdpa")
    if impl == "eager":
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    return mask


@dataclass
class Trace:
    """One unpatched pass over a side: every residual state (sequence and, with ``tree``,
    the trie nodes), the sub-layer outputs at the sequence positions, the sequence's keys and
    values per block, the greedy next tokens over the answer window, and the readout."""

    T: int
    resid: torch.Tensor  # [L+1, T (+N), d] input of block h / output of block h-1
    attn: torch.Tensor | None  # [L, T, d] (None where the blocks expose no such sub-layer)
    mlp: torch.Tensor | None  # [L, T, d]
    kv: list  # per block (K [1,kvh,T,hd], V)
    greedy: dict  # answer-window position -> argmax token
    readout: Readout | None  # from this pass (score_trie), when tree

    def state(self, component: str, h: int, pos: int) -> torch.Tensor:
        """The clean state ``[d_model]`` of (``component``, ``h``) at token ``pos``: the residual stream
        at hidden-state index ``h``, or the ``attn``/``mlp`` output of block ``h-1``."""
        if component == "resid":
            return self.resid[h, pos]
        return (self.attn if component == "attn" else self.mlp)[h - 1, pos]


@torch.no_grad()
def trace(side: Side, tree: bool = True, window: tuple[int, int] | None = None) -> Trace:
    """The clean run of ``side`` with its activations cached (TransformerLens's
    ``run_with_cache``): residual states ``[L+1, T (+N), d]``, sub-layer outputs ``[L, T, d]``,
    per-block keys/values, with ``window`` the greedy next tokens over (first, last) answer
    positions, and with ``tree`` the trie appended (N nodes) and the exact 0–100 readout."""
    lm = side.lm
    model = lm.model
    layers = decoder_blocks(model)
    L = len(layers)
    body, to_logits = body_and_head(model)
    dev = arch.input_device(model)
    owner = ThreadOwner()
    res: list[list[torch.Tensor]] = [[] for _ in range(L + 1)]
    att_o: list[list[torch.Tensor]] = [[] for _ in range(L)]
    mlp_o: list[list[torch.Tensor]] = [[] for _ in range(L)]
    phase = {"seq": True}
    handles = []

    def pre0(module, args, kwargs):
        if owner:
            h = args[0] if args else kwargs["hidden_states"]
            res[0].append(h[0].detach())

    handles.append(layers[0].register_forward_pre_hook(pre0, with_kwargs=True))
    for i, layer in enumerate(layers):

        def post(module, args, output, i=i):
            if owner:
                res[i + 1].append(block_output(output)[0].detach())

        def post_attn(module, args, output, i=i):
            if owner and phase["seq"]:
                att_o[i].append(arch.as_btd(block_output(output), 1)[0].detach())

        def post_mlp(module, args, output, i=i):
            if owner and phase["seq"]:
                mlp_o[i].append(arch.as_btd(block_output(output), 1)[0].detach())

        handles.append(layer.register_forward_hook(post))
        if sublayer(layer, "attn", model) is not None:
            handles.append(sublayer(layer, "attn", model).register_forward_hook(post_attn))
        if sublayer(layer, "mlp", model) is not None:
            handles.append(sublayer(layer, "mlp", model).register_forward_hook(post_mlp))
    try:
        ids, att, pos = left_pad([side.ids], lm.tokenizer.pad_token_id, dev)
        T = ids.shape[1]
        out = body(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=True)
        cache = arch.kv_cache(out)
        kv = []
        for i in range(L):
            k, v = _kv_of(cache, i)
            kv.append((k[:, :, :T, :], v[:, :, :T, :]))
        greedy = {}
        if window is not None:
            a0, a1 = window
            z = to_logits(out.last_hidden_state[0, a0 : a1 + 1])
            greedy = {a0 + j: int(t) for j, t in enumerate(z.argmax(-1).tolist())}
        readout = None
        if tree:
            phase["seq"] = False
            trie = get_trie(lm.tokenizer)
            tpos, mask = tree_layout(trie, T, T, dev)
            tids = trie.token.to(dev).unsqueeze(0)
            mask = tree_attention_mask(model, mask, out.last_hidden_state.dtype)
            tout = body(input_ids=tids, attention_mask=mask, position_ids=tpos, **arch.kv_kwargs(body, cache), use_cache=True)
            hid = torch.cat([out.last_hidden_state[:, -1:], tout.last_hidden_state], dim=1)
            readout = score_trie(hid, to_logits, trie, dot_tol())
    finally:
        for h in handles:
            h.remove()
    resid = torch.stack([torch.cat(r, dim=0) for r in res])
    return Trace(
        T=T,
        resid=resid,
        attn=torch.stack([a[0] for a in att_o]) if all(att_o) else None,
        mlp=torch.stack([m[0] for m in mlp_o]) if all(mlp_o) else None,
        kv=kv,
        greedy=greedy,
        readout=readout,
    )


@dataclass
class CellResult:
    """The readout of one patched run: ``probs`` ``[101]`` (probabilities of 0..100), ``other``
    (mass on no number), ``unresolved`` ("." look-ahead mass), and whether the greedy answer is
    unchanged (``answer_flips``: answer-window positions whose greedy token changed)."""
    probs: np.ndarray  # [101]
    other: float
    unresolved: float
    answer_unchanged: bool
    answer_flips: int
