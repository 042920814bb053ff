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


def shared_prefix_len(seqs: list[list[int]], model, extra_keys: int, before: int | None = None) -> int:
    """Tokens at the start of every sequence of a batch that one forward can compute for all
    (the chat template's system turn: 24 tokens for SmolLM2), or 0 where sharing does not pay
    (fewer than 2 rows, under :data:`SHARE_MIN` tokens), would make a row's numbers depend on
    its batch (:mod:`metacog.model.ragged` attention, where the batch's common prefix decides
    the split), or is not exact for ``model`` (ALiBi, or a sliding window the ``P + rest + extra_keys`` keys could overrun:
    :func:`metacog.model.arch.tree_mask_ok`). Every row keeps at least its last token, and the
    prefix ends at or before index ``before`` (the first position whose states are captured)."""
    from metacog.model.arch import tree_mask_ok
    from metacog.model.ragged import is_ragged

    if len(seqs) < 2 or is_ragged(model):  # ragged attention: every row's layout is the one it has alone
        return 0
    P = min(common_prefix(seqs), min(len(s) for s in seqs) - 1)
    if before is not None:
        P = min(P, int(before))
    if P < SHARE_MIN or not tree_mask_ok(model, max(len(s) for s in seqs) + int(extra_keys)):
        return 0
    return P


def shared_inputs(body, seqs: list[list[int]], P: int, pad_id: int, device):
    """The batch after a shared prefix of ``P`` tokens: the prefix runs once (batch 1) and its
    KV cache is repeated for every row; the remainders are left-padded after it ("middle
    padding": masked keys, positions counting real tokens only, so each row computes what it
    would alone). Returns ``input_ids [B, Tr]``, ``attention_mask [B, P + Tr]``,
    ``position_ids [B, Tr]`` and the cache.

    Raises: AttributeError for a cache class without ``batch_repeat_interleave`` (callers fall
    back to the unshared batch)."""
    pre = torch.tensor([seqs[0][:P]], dtype=torch.long, device=device)
    cache = kv_cache(body(input_ids=pre, position_ids=torch.arange(P, device=device).unsqueeze(0), use_cache=True))
    cache.batch_repeat_interleave(len(seqs))
    ids, att_r, pos_r = left_pad([s[P:] for s in seqs], pad_id, device)
    att = torch.cat([torch.ones((len(seqs), P), dtype=att_r.dtype, device=device), att_r], dim=1)
    return ids, att, pos_r + P, cache
