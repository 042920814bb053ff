"""Shared by the training methods: a short LoRA run through the fine-tuning machinery
(:mod:`metacog.finetune`: targets from the train split only, the peft backend, the runs
registry). A finished run with the same settings is reused, so the method resumes.

Public entry: :func:`run_for`."""
from __future__ import annotations

from metacog.finetune import FinetuneSettings, create_run, execute
from metacog.finetune.runs import Run, list_runs


def settings_for(ctx, **kw) -> FinetuneSettings:
    """The :class:`~metacog.finetune.FinetuneSettings` of a training method's short LoRA run: binary
    unbalanced targets, the ``tune_*`` budget of ``ctx.settings`` (updates, rank, alpha = 2·rank,
    lr, batch size), seed 42 + seed, float32; ``kw`` overrides (format, objective, loss_on, ...).

    Raises:
        SettingsError: an invalid combination."""
    s = ctx.settings
    base = dict(targets="binary", binary_balance=False, target_modules=s.tune_target_modules, rank=s.tune_rank, alpha=2.0 * s.tune_rank, lr=s.tune_lr,
                batch_size=s.tune_batch_size, grad_accum=1, epochs=None, max_updates=s.tune_updates, seed=42 + s.seed,
                val_fraction=0.1, checkpoint_every=10, schedule="cosine", dtype="float32")
    base.update(kw)
    return FinetuneSettings(**base)


def run_for(ctx, fs: FinetuneSettings, name: str) -> Run:
    """The done run with these settings, or a new one trained here (with ctx's model)."""
    reg = list_runs(ctx.ws)
    key = fs.key()
    for r in reg.itertuples() if len(reg) else []:
        run = Run(ctx.ws, r.run)
        try:
            st = run.settings()
        except Exception:
            continue
        if st.get("settings_key") == key:
            if run.has_adapter() and run.live_status() == "done":
                return run
            if run.live_status() in ("interrupted", "failed", "cancelled"):
                from metacog.finetune.runner import resume

                resume(ctx.ws, run.id, background=False, lm=ctx.lm(), threads=ctx.threads,
                       progress=lambda u, t, m: ctx.tick(u, t, f"{name}: training (LoRA updates)"))
                return run
    run = create_run(ctx.ws, fs, name=name, threads=ctx.threads)
    execute(ctx.ws, run.id, lm=ctx.lm(), threads=ctx.threads, should_stop=ctx.should_stop,
            progress=lambda u, t, m: ctx.tick(u, t, f"{name}: training (LoRA updates)"))
    return run


def run_info(run: Run) -> dict:
    """The training facts of a run for a method's ``info``: run id, train_updates (optimizer
    updates run), train_seconds, final_train_loss and val_loss."""
    st = run.status()
    return {"run": run.id, "train_updates": st.get("updates_run"), "train_seconds": st.get("train_seconds"),
            "final_train_loss": (st.get("result") or {}).get("final_train_loss"), "val_loss": st.get("val_loss")}
