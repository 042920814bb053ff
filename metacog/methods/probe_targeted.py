"""Probe-targeted fine-tuning — the study's own method, in the same table as the others: a
LoRA run whose text targets are the probe's out-of-fold p(correct) on the train split
(``targets="probe"``, inline format, :mod:`metacog.finetune`). Confidence = the adapter's
verbal confidence: its greedy continuation after the item's question, the base model's answer
and "\\nConfidence:" (the prefix the run was trained on), parsed by the one parser; an
unparsed reply stays NaN (counted as missing).

By default the run is a short one with the training methods' shared budget (``tune_*``
settings, like calibration-tuning and Brier tuning); ``probe_run`` names a run of this
workspace to use instead (e.g. a longer one launched from the Fine-tune page).

Public entry: the registered method ``probe_targeted`` (:data:`METHOD`)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from metacog.data import prompts
from metacog.readout.values import parse_confidence
from metacog.finetune.backends.peft_backend import load_adapter_model, unload_adapter
from metacog.finetune.runs import get_run
from metacog.core.workspace import WorkspaceError
from metacog.methods.registry import Method, MethodResult, register
from metacog.methods.tuning import run_for, run_info, settings_for

SETTINGS = ("tune_updates", "tune_rank", "tune_target_modules", "tune_lr", "tune_batch_size", "seed", "batch_size", "probe_run")


def _given_run(ctx):
    run = get_run(ctx.ws, ctx.settings.probe_run)
    fs = run.finetune_settings()
    if fs.targets != "probe" or fs.format != "inline" or fs.objective != "ce":
        raise WorkspaceError(f"run {run.id} is not a probe-targeted inline run (targets={fs.targets!r}, format={fs.format!r}, "
                             f"objective={fs.objective!r})")
    if not run.has_adapter() or run.live_status() != "done":
        raise WorkspaceError(f"run {run.id} has no finished adapter (status {run.live_status()})")
    return run


def verbal_scores(ctx, lm, name: str, key: str) -> pd.DataFrame:
    """Greedy verbal confidence of ``lm`` after question + answer + "\\nConfidence:" for the pool."""
    from metacog.stages.answers import FORCED_MARK, INLINE_VERBAL_TOKENS, stop_two_pass
    from metacog.model.generation import generate

    pool, tok, style = ctx.pool, lm.tokenizer, ctx.study.prompt_style
    enc = []
    for it in pool.itertuples():
        ch = list(it.choices) if it.kind == "mc" and it.choices is not None else None
        enc.append(prompts.encode_inline(tok, lm.is_chat, it.question, str(it.answer or ""), ch, style).ids)

    def part(s, e):
        texts = generate(lm, enc[s:e], INLINE_VERBAL_TOKENS, ctx.settings.batch_size, stop=stop_two_pass,
                         should_stop=ctx.should_stop)
        v = [parse_confidence(FORCED_MARK.strip() + t) for t in texts]
        v = np.array([np.nan if x is None else float(x) for x in v])
        return pd.DataFrame({"row": pool["row"].to_numpy()[s:e], "score": np.clip(v / 100.0, 0.0, 1.0), "verbal": v,
                             "text": texts})

    return ctx.chunked(name, key, len(enc), part, chunk=max(ctx.settings.batch_size * 4, 32), what=f"{name}: verbal confidence")


def compute(ctx) -> MethodResult:
    """Train a short probe-targeted run (or use ``settings.probe_run``) and score the pool by its
    adapter's parsed verbal confidence / 100 (row, score in [0, 1] or NaN when unparsed, verbal, text).

    Raises:
        WorkspaceError: ``probe_run`` is not a finished probe-targeted inline run.
        RunError: ``probe_run`` does not exist."""
    from metacog.methods.store import method_key

    if ctx.settings.probe_run:
        run, fs = _given_run(ctx), None
    else:
        fs = settings_for(ctx, targets="probe", format="inline", loss_on="assistant")
        run = run_for(ctx, fs, "probe-targeted")
    ft = load_adapter_model(ctx.lm(), run.adapter_dir)
    try:
        df = verbal_scores(ctx, ft, "probe_targeted", method_key(ctx, METHOD))
    finally:
        unload_adapter(ft)
    info = {"forward_passes": f"{len(df)} short generations", **run_info(run)}
    if fs is not None:
        info["finetune"] = fs.to_dict()
    return MethodResult(df, info)


METHOD = register(Method(name="probe_targeted", label="probe-targeted fine-tuning (LoRA, verbal)", family="training",
                         cost="LoRA training (tune_updates, or a given run) + 1 short generation per item", compute=compute,
                         settings=SETTINGS, trains=True, order=65))
