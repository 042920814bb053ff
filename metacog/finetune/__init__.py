"""Probe-targeted LoRA fine-tuning (LoRA: Hu et al. 2021): targets, training backends, background runs, evaluation.

    from metacog.finetune import FinetuneSettings, create_run, launch, execute, run_evaluation, list_runs
    s = FinetuneSettings(targets="probe", format="inline", epochs=3, seed=42)
    run = launch(Workspace("cache/workspaces/demo"), s, evaluate=True)   # background process
    list_runs(ws)                                                        # the registry

See docs/FINETUNE.md.
"""
from metacog.finetune.runner import cancel, create_run, execute, launch, resume
from metacog.finetune.runner import evaluate as run_evaluation  # (metacog.finetune.evaluate is the module)
from metacog.finetune.runs import Run, RunError, get_run, list_runs
from metacog.finetune.settings import FinetuneSettings, Plan, SettingsError, make_plan, updates_per_epoch
from metacog.finetune.targets import TargetError, build_targets

__all__ = [
    "FinetuneSettings", "Plan", "Run", "RunError", "SettingsError", "TargetError", "build_targets", "cancel",
    "create_run", "execute", "get_run", "launch", "list_runs", "make_plan", "resume", "run_evaluation", "updates_per_epoch",
]
