"""Calibration-tuning (Kapoor et al. 2024, arXiv 2406.08391): a LoRA run trained on the
train split to answer the uncertainty query "Is the proposed answer correct?" about its own
answer with "Yes" (correct) or "No" (incorrect) — fine-tuning format ``uncertainty-query``,
targets ``binary`` (unbalanced: the train split's own base rate). Confidence = p("Yes") of the
adapter on the same query, normalised over Yes/No (:func:`metacog.readout.values.read_labels`).

Public entry: the registered method ``calibration_tuning`` (:data:`METHOD`)."""
from __future__ import annotations

from metacog.finetune.backends.peft_backend import load_adapter_model, unload_adapter
from metacog.finetune.settings import UQ_LABELS
from metacog.methods.p_true import score_query
from metacog.methods.registry import Method, MethodResult, register
from metacog.methods.tuning import run_for, run_info, settings_for

SETTINGS = ("tune_updates", "tune_rank", "tune_target_modules", "tune_lr", "tune_batch_size", "seed", "batch_size")


def compute(ctx) -> MethodResult:
    """Train (or reuse) the calibration-tuning LoRA run (Kapoor et al. 2024) and score the pool by
    p("Yes") of its adapter on the uncertainty query (row, score in [0, 1])."""
    from metacog.methods.store import method_key

    fs = settings_for(ctx, format="uncertainty-query", loss_on="assistant")
    run = run_for(ctx, fs, "calibration-tuning")
    ft = load_adapter_model(ctx.lm(), run.adapter_dir)
    try:
        df = score_query(ctx, ft, UQ_LABELS, "calibration_tuning", method_key(ctx, METHOD))
    finally:
        unload_adapter(ft)
    return MethodResult(df, {"forward_passes": int(len(df)), **run_info(run), "finetune": fs.to_dict()})


METHOD = register(Method(name="calibration_tuning", label="calibration-tuning (LoRA, p(Yes))", family="training",
                         cost="LoRA training (tune_updates) + 1 forward per item", compute=compute, settings=SETTINGS,
                         trains=True, order=70))
