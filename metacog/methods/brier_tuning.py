"""Brier-loss tuning (ConfTuner, Li et al. 2025; the score: Brier 1950): a LoRA run whose
objective is the Brier score of the model's exact 0–100 distribution at the confidence slot against correctness,
Σ_v q(v) (v/100 − y)² (fine-tuning ``objective="brier"``, targets ``binary`` unbalanced; no
target text). Confidence = E[v]/100 of the adapter's exact readout (:func:`metacog.readout.values.read_values`)
at the same slot (inline by default: question, own answer, "\\nConfidence:").

Public entry: the registered method ``brier_tuning`` (:data:`METHOD`)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from metacog.data import prompts
from metacog.readout.values import read_values
from metacog.finetune.backends.peft_backend import load_adapter_model, unload_adapter
from metacog.methods.registry import Method, MethodResult, register
from metacog.methods.tuning import run_for, run_info, settings_for

SETTINGS = ("tune_updates", "tune_rank", "tune_target_modules", "tune_lr", "tune_batch_size", "seed", "brier_format", "batch_size")


def readout_ev(ctx, lm, fmt: str, name: str, key: str) -> pd.DataFrame:
    """Confidence = E[v]/100 of ``lm``'s exact 0–100 readout (:func:`metacog.readout.values.read_values`)
    for every pool item, after the ``fmt`` prompt (``inline``: question + own answer + "\nConfidence:";
    ``two-pass``: the two-pass prompt). Columns row, score (probability in [0, 1]), ev (points
    0–100), other (mass off 0–100); computed in resumable chunks under ``methods/<name>/``."""
    pool = ctx.pool
    tok = lm.tokenizer
    style = ctx.study.prompt_style
    enc = []
    for it in pool.itertuples():
        ch = list(it.choices) if it.kind == "mc" and it.choices is not None else None
        if fmt == "inline":
            enc.append(prompts.encode_inline(tok, lm.is_chat, it.question, str(it.answer or ""), ch, style).ids)
        else:
            enc.append(prompts.encode_two_pass(tok, lm.is_chat, it.question, str(it.answer or "")).ids)

    def part(s, e):
        rows = pool["row"].to_numpy()[s:e]
        out = []
        for b in range(0, e - s, ctx.settings.batch_size):
            r = read_values(lm, enc[s + b : s + b + ctx.settings.batch_size])
            out.append(pd.DataFrame({"ev": r.expected, "other": r.other}))
        d = pd.concat(out, ignore_index=True)
        d.insert(0, "row", rows)
        d.insert(1, "score", np.clip(d["ev"].to_numpy() / 100.0, 0.0, 1.0))
        return d

    return ctx.chunked(name, key, len(enc), part, chunk=max(ctx.settings.batch_size * 4, 32), what=f"{name}: readout")


def compute(ctx) -> MethodResult:
    """Train (or reuse) the Brier-objective LoRA run and score the pool by its E[v]/100
    (``MethodResult.scores``: row, score in [0, 1]).

    Raises:
        SettingsError, TargetError: the tuning run cannot be set up (e.g. too few train items)."""
    from metacog.methods.store import method_key

    fs = settings_for(ctx, format=ctx.settings.brier_format, objective="brier", loss_on="confidence")
    run = run_for(ctx, fs, "brier-tuning")
    ft = load_adapter_model(ctx.lm(), run.adapter_dir)
    try:
        df = readout_ev(ctx, ft, ctx.settings.brier_format, "brier_tuning", method_key(ctx, METHOD))
    finally:
        unload_adapter(ft)
    return MethodResult(df, {"forward_passes": int(len(df)), **run_info(run), "finetune": fs.to_dict()})


METHOD = register(Method(name="brier_tuning", label="Brier-loss tuning (LoRA, E[v])", family="training",
                         cost="LoRA training (tune_updates; one prefix + trie forward per example) + 1 tree forward per item",
                         compute=compute, settings=SETTINGS, trains=True, order=80))
