"""The reference patched run: one patched forward per cell through
:func:`metacog.readout.values.read_values` (the plain way; the fast path must equal it)."""
from __future__ import annotations

import torch

from metacog.model import arch
from metacog.model.hooks import block_output
from metacog.patching.hook_points import ThreadOwner, patch_hook
from metacog.patching.pairs import Side, answer_window
from metacog.patching.trace import CellResult, dot_tol
from metacog.readout.values import body_and_head, left_pad, read_values


@torch.no_grad()
def reference_greedy(target: Side) -> dict:
    """Unpatched greedy next token at every answer-window position (full-model forward)."""
    lm = target.lm
    a0, a1 = answer_window(target)
    dev = arch.input_device(lm.model)
    body, to_logits = body_and_head(lm.model)
    ids, att, pos = left_pad([target.ids], lm.tokenizer.pad_token_id, dev)
    hs = body(input_ids=ids, attention_mask=att, position_ids=pos).last_hidden_state[0, a0 : a1 + 1]
    return {a0 + j: int(t) for j, t in enumerate(to_logits(hs).argmax(-1).tolist())}


@torch.no_grad()
def patch_cell_reference(target: Side, component: str, h: int, p: int, vec: torch.Tensor, greedy: dict | None = None,
                         check_answer: bool = True) -> CellResult:
    """One cell the plain way: :func:`metacog.readout.values.read_values` on the target with the
    patch in its prefix forward (one patched forward + the trie). The greedy check reads the
    same forward's final-norm output over the answer window."""
    lm = target.lm
    body, to_logits = body_and_head(lm.model)
    a0, a1 = answer_window(target)
    want = check_answer and p <= a1
    grabbed: list[torch.Tensor] = []
    handle = None
    norm = arch.final_norm(lm.model, body) if want else None
    if norm is not None:
        owner = ThreadOwner()

        def grab(m, args, output):
            if owner and not grabbed:
                grabbed.append(block_output(output)[0, a0 : a1 + 1].detach())

        handle = norm.register_forward_hook(grab)
    try:
        with patch_hook(lm.model, component, h, p, vec):
            r = read_values(lm, [target.ids], dot_tol=dot_tol(), share_prefix=False)  # the hooks index this forward
    finally:
        if handle is not None:
            handle.remove()
    unres = float(r.unresolved[0])
    unchanged, flips = True, 0
    if want:
        if greedy is None:
            greedy = reference_greedy(target)
        if grabbed:
            am = to_logits(grabbed[0]).argmax(-1).tolist()
        else:  # no final norm to hook: one more patched forward of the full model
            dev = arch.input_device(lm.model)
            with patch_hook(lm.model, component, h, p, vec):
                am = lm.model(input_ids=torch.tensor([target.ids], device=dev)).logits[0, a0 : a1 + 1].argmax(-1).tolist()
        flips = sum(am[q - a0] != greedy[q] for q in range(max(a0, p), a1 + 1))
        unchanged = flips == 0
    return CellResult(r.probs[0], float(r.other[0]), unres, unchanged, int(flips))
