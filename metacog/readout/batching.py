"""Batching for forwards over many prompts: left padding, and a common prompt prefix that runs once.

Used by the readout (:func:`metacog.readout.values.read_values`), generation and the stages.
Left padding keeps positions counting real tokens only, so a padded row computes what it would
alone; a shared prefix (the chat template's system turn) runs once per batch and its KV cache is
repeated for every row ("middle padding" after it).
"""
from __future__ import annotations

import torch

from metacog.model.arch import kv_cache


def body_and_head(model):
    """(decoder body returning hidden states, function hidden -> logits); see
    :func:`metacog.model.arch.body_and_head` (the family's final-logit soft-capping included)."""
    from metacog.model.arch import body_and_head as _bh

    return _bh(model)


def left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask, position_ids for a left-padded batch (positions count
    real tokens only, so a padded row computes exactly what it would alone)."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, T - len(s) :] = torch.tensor(s, dtype=torch.long)
        att[i, T - len(s) :] = 1
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), att.to(device), pos.to(device)


def common_prefix(seqs: list[list[int]]) -> int:
    """Length of the token prefix every sequence of ``seqs`` shares (0 for none)."""
    n = min(len(x) for x in seqs)
    k = 0
    while k < n and all(x[k] == seqs[0][k] for x in seqs):
        k += 1
    return k


SHARE_MIN = 8  # a common prefix of at least this many tokens runs once per batch (shared_prefix_len)

#: The dummy user turns whose chat-templated prompts' common start is the template prefix
#: (:func:`template_prefix`): unlike each other in their first character and token.
_PROBES = ("A", "7", "?", "Question", "zz")


def template_prefix(lm) -> list[int]:
    """The token ids every chat prompt of ``lm`` starts with whatever its user turn says: the
    chat template's system turn and the user turn's header (for SmolLM2-Instruct its default
    system prompt, 24 + 3 tokens); ``[]`` for a model without a chat template. The common start
    of the template around several unlike user turns, tokenised as the prompts are
    (:func:`metacog.data.prompts.encode_segments`); computed once per tokenizer."""
    tok = lm.tokenizer
    hit = getattr(tok, "_metacog_template_prefix", None)
    if hit is not None:
        return list(hit)
    ids: list[int] = []
    if getattr(lm, "is_chat", False):
        from metacog.data.prompts import encode_segments

        try:
            seqs = [encode_segments(tok, True, [("prompt", tok.apply_chat_template(
                [{"role": "user", "content": u}], add_generation_prompt=True, tokenize=False))]).ids for u in _PROBES]
            ids = seqs[0][: common_prefix(seqs)]
        except Exception:  # a template that refuses these turns: no fixed prefix
            ids = []
    try:
        tok._metacog_template_prefix = tuple(ids)
    except Exception:
        pass
    return ids


def shared_prefix_len(seqs: list[list[int]], model, extra_keys: int, before: int | None = None) -> int:
    """Tokens at the start of every sequence of a batch that one forward can compute for all
    (the chat template's system turn: 24 tokens for SmolLM2), or 0 where sharing does not pay
    (fewer than 2 rows, under :data:`SHARE_MIN` tokens), or is not exact for ``model`` (ALiBi, or
    a sliding window the ``P + rest + extra_keys`` keys could overrun:
    :func:`metacog.model.arch.tree_mask_ok`). Every row keeps at least its last token, and the
    prefix ends at or before index ``before`` (the first position whose states are captured).
    The split depends on the batch (its common prefix): :func:`prefix_split` uses it only where
    that changes numbers by rounding alone (not under :mod:`metacog.model.ragged` attention)."""
    from metacog.model.arch import tree_mask_ok

    if len(seqs) < 2:
        return 0
    P = min(common_prefix(seqs), min(len(s) for s in seqs) - 1)
    if before is not None:
        P = min(P, int(before))
    if P < SHARE_MIN or not tree_mask_ok(model, max(len(s) for s in seqs) + int(extra_keys)):
        return 0
    return P


def has_hooks(model) -> bool:
    """Whether a forward (pre-)hook is registered on ``model`` or any submodule, or globally:
    patching, steering and user hooks index token positions of the forward they see, so the
    batch must then run as one forward per row layout (no shared prefix). metacog's own hooked
    calls also pass ``share_prefix=False``; this guard is for hooks of Python-API users. (A hook
    that another thread put on the same model object counts too: its forwards then skip the
    split, which under ragged attention changes an item's numbers by bfloat16 rounding.)"""
    from torch.nn.modules import module as _m

    if _m._global_forward_hooks or _m._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def prefix_split(lm, seqs: list[list[int]], extra_keys: int, before: list[int] | None = None
                 ) -> tuple[int, list[bool] | None]:
    """Where a batch's shared prefix ends, and which rows use it: ``(P, use)``, ``P = 0`` for no
    split, ``use`` None when every row does (for :func:`shared_inputs`).

    Under :mod:`metacog.model.ragged` attention (batch-invariant bfloat16) the split is decided
    **by each row alone**, so an item's numbers do not depend on its batch: a row splits after the
    :func:`template_prefix` (the chat template's system turn and user header) when it starts with
    it, is longer, captures no state inside it (``before[b]``, the row's first captured index)
    and its keys fit the model's window (:func:`metacog.model.arch.tree_mask_ok`); the prefix
    forward is then the same for every row and every batch (a batch of one included). Other
    rows compute their whole prompt (the prefix's keys are masked for them, which ragged
    attention drops). Elsewhere (float32, where any layout changes numbers by rounding only) the
    batch's common prefix is the split (:func:`shared_prefix_len`). Never while a hook is on the
    model (:func:`has_hooks`): hooks index the token positions of the forward they see."""
    from metacog.model.arch import tree_mask_ok
    from metacog.model.ragged import is_ragged

    model = lm.model
    if has_hooks(model):  # a split changes the forwards' token layout, which position-indexing hooks would misread
        return 0, None
    if not is_ragged(model):
        first = None if before is None else min(before)
        return shared_prefix_len(seqs, model, extra_keys, before=first), None
    pre = template_prefix(lm)
    P = len(pre)
    if P < SHARE_MIN:
        return 0, None
    use = [len(s) > P and s[:P] == pre and (before is None or before[b] >= P)
           and tree_mask_ok(model, len(s) + int(extra_keys)) for b, s in enumerate(seqs)]
    if not any(use):
        return 0, None
    return P, (None if all(use) else use)


def shared_inputs(body, seqs: list[list[int]], P: int, pad_id: int, device, use: list[bool] | None = None):
    """The batch after a shared prefix of ``P`` tokens: the prefix runs once and its KV cache is
    repeated for every row; the remainders are left-padded after it ("middle padding": masked
    keys, positions counting real tokens only, so each row computes what it would alone).
    ``use`` (from :func:`prefix_split`): rows marked False do not use the prefix; their whole
    sequence is the remainder and the prefix's keys are masked for them. Under
    :mod:`metacog.model.ragged` attention the prefix runs as two identical rows (no bfloat16
    forward has one row). Returns ``input_ids [B, Tr]``, ``attention_mask [B, P + Tr]``,
    ``position_ids [B, Tr]`` and the cache.

    Raises: AttributeError for a cache class without ``batch_repeat_interleave`` /
    ``batch_select_indices`` (callers fall back to the unshared batch)."""
    from metacog.model.ragged import is_ragged

    B = len(seqs)
    use = [True] * B if use is None else list(use)
    src = seqs[use.index(True)][:P]
    two = is_ragged(body)
    pre = torch.tensor([src] * (2 if two else 1), dtype=torch.long, device=device)
    pos0 = torch.arange(P, device=device).unsqueeze(0).expand(pre.shape[0], -1)
    cache = kv_cache(body(input_ids=pre, position_ids=pos0, use_cache=True))
    if two:
        cache.batch_select_indices(torch.zeros(B, dtype=torch.long, device=device))
    else:
        cache.batch_repeat_interleave(B)
    ids, att_r, pos_r = left_pad([s[P:] if u else list(s) for s, u in zip(seqs, use)], pad_id, device)
    on = torch.tensor(use, dtype=att_r.dtype, device=device).unsqueeze(1)
    att = torch.cat([on.expand(B, P), att_r], dim=1)
    return ids, att, pos_r + P * on, cache
