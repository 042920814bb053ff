"""The intervention: hooks that add a steering vector to the residual stream at hidden-state
index h (0 = input of block 0, h ≥ 1 = output of block h−1; TransformerLens's
``blocks.{h-1}.hook_resid_post``) at chosen positions, and the readouts under it — the exact
0–100 distribution, the greedy verbal confidence, the regenerated answer — plus
probe-conditioned steering (read a probe, write in proportion) in the model's own forward."""
from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import torch

from metacog.data import prompts


WHERE = ("slot", "from-answer")


def hook_module(model, h: int):
    """(module, pre?) whose output (input when ``pre``) is hidden-state index ``h``: the input of
    block 0 for ``h = 0``, else the output of block ``h-1``.

    Raises:
        ValueError: ``h`` outside ``0..L``."""
    from metacog.model.loading import decoder_layers

    layers = decoder_layers(model)
    if not 0 <= h <= len(layers):
        raise ValueError(f"hidden-state index {h} is outside 0..{len(layers)}")
    return (layers[0], True) if h == 0 else (layers[h - 1], False)


@contextlib.contextmanager
def steer_hook(model, hidden_index: int, vector: torch.Tensor, prefix_mask: torch.Tensor, continuation: bool):
    """While active, the residual stream at ``hidden_index`` gets ``+ vector`` where a mask says.

    vector: ``[d]`` or ``[B, d]`` (one per row). The **first** forward through the hooked
    module is the prefix: ``prefix_mask`` ``[B, T]`` bool (padded layout) says which positions
    get the vector. Every later forward (the readout's trie, greedy decoding steps) processes
    tokens that come after the prefix: all of them get the vector if ``continuation``, none
    otherwise. Positions outside the mask are returned bit-identical.
    """
    from metacog.model.hooks import edit_hook

    module, pre = hook_module(model, hidden_index)
    calls = [0]

    def fn(h: torch.Tensor) -> torch.Tensor:
        first = calls[0] == 0
        calls[0] += 1
        v = vector.to(device=h.device, dtype=h.dtype)
        v = v.view(1, 1, -1) if v.dim() == 1 else v[: h.shape[0]].unsqueeze(1)
        if first:
            m = prefix_mask.to(h.device)
            return torch.where(m.unsqueeze(-1), h + v, h)
        return h + v if continuation else h

    with edit_hook(module, fn, pre):
        yield


def masks_for(encs: list[prompts.Encoded], where: str, device=None) -> torch.Tensor:
    """``[B, T]`` bool in the left-padded layout of these sequences: the confidence slot
    (``slot``) or every position from the first answer token on (``from-answer``).

    Raises:
        ValueError: ``where`` is not one of ``WHERE``.
    """
    if where not in WHERE:
        raise ValueError(f"where must be one of {', '.join(WHERE)}, not {where!r}")
    T = max(len(e) for e in encs)
    m = torch.zeros((len(encs), T), dtype=torch.bool)
    for b, e in enumerate(encs):
        pad = T - len(e)
        if where == "slot":
            m[b, pad + e.positions["confidence"]] = True
        else:
            m[b, pad + e.spans["answer"][0]:] = True
    return m if device is None else m.to(device)


@torch.no_grad()
def steered_readout(lm, encs: list[prompts.Encoded], hidden_index: int | None, vector, where: str,
                    verbal: bool = True) -> pd.DataFrame:
    """The exact 0–100 readout (and the greedy verbal confidence) of one batch of inline
    sequences with ``vector`` added at ``hidden_index`` (None = no hook: the unsteered model).
    Returns one row per sequence: ``ev, argmax, other, verbal, verbal_text``."""
    from metacog.stages.answers import FORCED_MARK, INLINE_VERBAL_TOKENS, stop_two_pass
    from metacog.readout.values import parse_confidence, read_values
    from metacog.model.generation import greedy_batch

    ids = [e.ids for e in encs]
    vec = None if vector is None else torch.as_tensor(np.asarray(vector), dtype=torch.float32)

    def ctx():
        if hidden_index is None or vec is None:
            return contextlib.nullcontext()
        return steer_hook(lm.model, hidden_index, vec, masks_for(encs, where), continuation=(where == "from-answer"))

    with ctx():  # the hooks index the left-padded batch of the first forward: no shared prefix
        r = read_values(lm, ids, share_prefix=False)
    out = pd.DataFrame({"ev": r.expected, "argmax": r.argmax, "other": r.other})
    if verbal:
        with ctx():
            texts = greedy_batch(lm, ids, INLINE_VERBAL_TOKENS, stop=stop_two_pass, share_prefix=False)
        v = [parse_confidence(FORCED_MARK.strip() + t) for t in texts]
        out["verbal"] = [np.nan if x is None else float(x) for x in v]
        out["verbal_text"] = texts
    else:
        out["verbal"] = np.nan
        out["verbal_text"] = ""
    return out


@torch.no_grad()
def steered_answers(lm, prompt_ids: list[list[int]], hidden_index: int, vector, max_new_tokens: int) -> list[str]:
    """Greedy answers with ``vector`` added at every generated position (``from-answer``: the
    prompt itself is untouched; each generated answer token carries the vector)."""
    from metacog.stages.answers import stop_first_line
    from metacog.readout.values import parse_inline
    from metacog.model.generation import greedy_batch

    vec = torch.as_tensor(np.asarray(vector), dtype=torch.float32)
    T = max(len(p) for p in prompt_ids)
    m = torch.zeros((len(prompt_ids), T), dtype=torch.bool)
    with steer_hook(lm.model, hidden_index, vec, m, continuation=True):
        texts = greedy_batch(lm, prompt_ids, max_new_tokens, stop=stop_first_line, share_prefix=False)
    return [parse_inline(t)[0] for t in texts]


def probe_p(x: torch.Tensor, coef, intercept: float) -> torch.Tensor:
    """A linear probe's p(correct) = sigmoid(x·coef + intercept) for states ``x [B, d]``: ``[B]``
    float32. One float64 dot product per row: a matrix-vector product's rows depend on how many
    rows it has (float32 on a CPU: 15 of 16 rows of a 16 × 576 product differ from the row alone),
    which would make an item's p depend on its batch."""
    x = x.double()
    c = torch.as_tensor(np.asarray(coef)).to(x.device, torch.float64)
    z = torch.stack([torch.dot(x[b], c) for b in range(x.shape[0])]) if x.shape[0] else x.new_zeros(0)
    return torch.sigmoid(z + float(intercept)).float()


@contextlib.contextmanager
def probe_conditioned(model, read_index: int, coef, intercept: float, read_at: torch.Tensor, write_index: int,
                      direction, gain: float, write_at: torch.Tensor, record: dict | None = None):
    """Probe-conditioned steering in the model's own forward (training-free rival to
    probe-targeted fine-tuning).

    On the prefix forward (the first call through each hooked module): read the residual
    stream at hidden-state index ``read_index`` at token ``read_at[b]`` (padded layout, ``[B]``
    long), compute the probe's p_b = sigmoid(x_b·coef + intercept) (float32), and at hidden-state
    index ``write_index`` (≥ ``read_index``; on the same index the read comes first) add
    ``gain · 2(p_b − 0.5) · direction`` at token ``write_at[b]``. ``direction`` ``[d]`` carries its
    scale (σ·d̂), so ``gain`` is in σ units: p = 1 adds +gain·σ, p = 0.5 nothing, p = 0 −gain·σ.
    Later forwards (the readout's trie, decoding steps) are untouched. ``record["p"]`` receives
    the p read, ``[B]`` numpy.

    Raises:
        ValueError: ``write_index`` < ``read_index``.
        RuntimeError: the write layer ran before the read layer (a model whose blocks run out of order).
    """
    from metacog.model.hooks import edit_hook

    if write_index < read_index:
        raise ValueError(f"the write layer ({write_index}) must not come before the read layer ({read_index})")
    rec = {} if record is None else record
    c = torch.as_tensor(np.asarray(coef), dtype=torch.float32)
    dvec = torch.as_tensor(np.asarray(direction), dtype=torch.float32)
    state = {"read": 0, "write": 0, "p": None}

    def read(h):
        state["read"] += 1
        if state["read"] == 1:
            rows = torch.arange(h.shape[0], device=h.device)
            p = probe_p(h[rows, read_at.to(h.device)], c, intercept)
            state["p"] = p
            rec["p"] = p.detach().cpu().numpy().astype(np.float64)
        return h

    def write(h):
        state["write"] += 1
        if state["write"] != 1:
            return h
        p = state["p"]
        if p is None:
            raise RuntimeError("probe-conditioned steering: the write layer ran before the read layer")
        rows = torch.arange(h.shape[0], device=h.device)
        shift = (gain * 2.0 * (p - 0.5)).unsqueeze(-1) * dvec.to(h.device)  # [B, d]
        out = h.clone()
        out[rows, write_at.to(h.device)] = (h[rows, write_at.to(h.device)].float() + shift).to(h.dtype)
        return out

    rm, rpre = hook_module(model, read_index)
    wm, wpre = hook_module(model, write_index)
    with edit_hook(rm, read, rpre), edit_hook(wm, write, wpre):
        yield rec
