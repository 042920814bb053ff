"""Probe-conditioned steering — a training-free rival to probe-targeted fine-tuning.

During the forward over question + the model's answer + "\\nConfidence:", the probe (the best
probe by train CV among the inline positions: last_prompt, last_answer, confidence) reads its
p(correct) at its own layer and position; at a later hidden-state index (``steer_layer``, by
default the read layer + ⌈L/6⌉, capped at the last index) a shift ``steer_gain · 2(p − 0.5) ·
σ · d̂`` is added at the confidence slot, where d̂ is the probe direction at (write layer,
confidence) and σ the train states' spread along it (:func:`metacog.steering.probe_conditioned`;
directions from the train split only). Score = E[v]/100 of the exact 0–100 readout of that
steered forward, so ``steer_gain = 0`` is exactly the ``ev_inline`` baseline.

Public entry: the registered method ``probe_steering`` (:data:`METHOD`).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from metacog.data import prompts
from metacog.core.workspace import WorkspaceError
from metacog.methods.registry import Method, MethodResult, register

SETTINGS = ("steer_gain", "steer_layer", "batch_size")


def read_probe(ws) -> dict:
    """The probe steering reads: the best probe by train CV (``probes/metrics.parquet``
    ``cv_auroc``) among the inline positions, with its coefficient and intercept.

    Raises:
        WorkspaceError: no probes in the workspace, or none fitted at an inline position."""
    from metacog.stages.study import position_index
    from metacog.steering import INLINE_POSITIONS, load_probe

    try:
        met = ws.read_parquet("probes/metrics.parquet")
    except WorkspaceError:
        raise WorkspaceError(f"no probes in {ws.root}: run `metacog probes --workspace {ws.root}` first") from None
    met = met[met["position"].isin(INLINE_POSITIONS) & np.isfinite(met["cv_auroc"].to_numpy(float))]
    if not len(met):
        raise WorkspaceError("no probe fitted at an inline position (last_prompt, last_answer, confidence)")
    best = met.sort_values(["cv_auroc", "layer"], ascending=[False, True]).iloc[0]
    coef, icpt = load_probe(ws)
    h, pos = int(best["layer"]), str(best["position"])
    pi = position_index(ws, pos, coef[:, :, 0])
    return {"layer": h, "position": pos, "cv_auroc": float(best["cv_auroc"]), "coef": coef[h, pi].astype(np.float64),
            "intercept": float(icpt[h, pi]), "n_hidden": int(coef.shape[0])}


def write_layer(read_layer: int, n_hidden: int, given: int | None) -> int:
    """The write index: ``given``, else read + ⌈(n_hidden − 1)/6⌉ capped at n_hidden − 1.

    Raises:
        WorkspaceError: ``given`` is before ``read_layer`` or past the last index ``n_hidden - 1``."""
    if given is not None:
        if not read_layer <= given < n_hidden:
            raise WorkspaceError(f"steer_layer {given} must be in {read_layer}..{n_hidden - 1} (not before the probe's layer)")
        return int(given)
    return int(min(n_hidden - 1, read_layer + math.ceil((n_hidden - 1) / 6)))


def compute(ctx) -> MethodResult:
    """Score the pool by E[v]/100 of the probe-conditioned steered readout (module docstring):
    row, score in [0, 1], probe_p (the probe's p(correct)), ev (points 0–100).

    Raises:
        WorkspaceError: no probes, no probe at an inline position, or ``steer_layer`` before
            the probe's layer or past the last hidden-state index."""
    from metacog.readout.values import read_values
    from metacog.steering import compute_directions, probe_conditioned
    from metacog.methods.store import method_key

    pr = read_probe(ctx.ws)
    hw = write_layer(pr["layer"], pr["n_hidden"], ctx.settings.steer_layer)
    dirs = compute_directions(ctx.ws, ctx.items, ctx.answers, [hw], ["probe"], "confidence")
    vec = dirs["vectors"][0, 0] * dirs["sigma"][0, 0]
    gain = float(ctx.settings.steer_gain)
    lm = ctx.lm()
    pool, tok, style = ctx.pool, lm.tokenizer, ctx.study.prompt_style
    encs = []
    for it in pool.itertuples():
        ch = list(it.choices) if it.kind == "mc" and it.choices is not None else None
        encs.append(prompts.encode_inline(tok, lm.is_chat, it.question, str(it.answer or ""), ch, style))

    def part(s, e):
        es = encs[s:e]
        T = max(len(x) for x in es)
        read_at = torch.tensor([T - len(x) + x.positions[pr["position"]] for x in es])
        write_at = torch.tensor([T - len(x) + x.positions["confidence"] for x in es])
        with probe_conditioned(lm.model, pr["layer"], pr["coef"], pr["intercept"], read_at, hw, vec, gain, write_at) as rec:
            r = read_values(lm, [x.ids for x in es], share_prefix=False)  # the hooks index the padded batch
        return pd.DataFrame({"row": pool["row"].to_numpy()[s:e], "score": np.clip(r.expected / 100.0, 0.0, 1.0),
                             "probe_p": rec["p"], "ev": r.expected})

    df = ctx.chunked("probe_steering", method_key(ctx, METHOD), len(encs), part, chunk=max(ctx.settings.batch_size, 8),
                     what="probe_steering: steered 0-100 readout")
    info = {"forward_passes": f"{len(df)} steered prefix + trie forwards",
            "steering": {"read_layer": pr["layer"], "read_position": pr["position"], "cv_auroc": pr["cv_auroc"],
                         "write_layer": hw, "write_position": "confidence", "gain": gain,
                         "sigma": float(dirs["sigma"][0, 0]), "rule": "shift = gain * 2(p - 0.5) * sigma * unit(probe dir at write layer)"}}
    return MethodResult(df, info)


METHOD = register(Method(name="probe_steering", label="probe-conditioned steering (E[v])", family="steering",
                         cost="1 steered forward + 0-100 trie per item, no training", compute=compute, settings=SETTINGS,
                         order=60))
