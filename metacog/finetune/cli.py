"""CLI: ``metacog finetune``, ``metacog evaluate``, ``metacog runs``, ``metacog cancel``.

    metacog finetune --workspace DIR --targets probe --format inline --epochs 3 --seed 42 [--evaluate]
    metacog finetune --workspace DIR --targets shuffled ... --background      # detached process
    metacog finetune --workspace DIR --resume RUN                              # from its last checkpoint
    metacog evaluate --workspace DIR --run RUN                                 # writes runs/RUN/eval.json
    metacog runs --workspace DIR                                               # the run registry
    metacog cancel --workspace DIR --run RUN

Public entry: :func:`register` (called by :func:`metacog.cli.build_parser`).
"""
from __future__ import annotations

import json
import sys

from metacog.core.settings import POSITIONS
from metacog.finetune.settings import AMP, BACKENDS, DTYPES, FORMATS, LOSS_ON, SCHEDULES, TARGET_KINDS, TASKS, FinetuneSettings, SettingsError


def register(sub) -> None:
    """Add ``finetune``, ``evaluate``, ``transfer``, ``runs`` and ``cancel`` to the ``metacog``
    subparsers ``sub`` (each sets ``func``); called by :func:`metacog.cli.build_parser`."""
    d = FinetuneSettings()
    p = sub.add_parser("finetune", help="LoRA fine-tuning that teaches the model to say its probe's confidence",
                       description="Build targets from the training split, train a LoRA adapter (foreground, or --background), "
                                   "optionally evaluate it on the eval split. Training length is counted in optimizer updates.")
    p.add_argument("--workspace", required=True, help="workspace directory (the study must have run: answers, activations, probes)")
    p.add_argument("--resume", metavar="RUN", default=None, help="continue RUN from its newest checkpoint (other settings are the run's own)")
    g = p.add_argument_group("targets")
    g.add_argument("--targets", choices=TARGET_KINDS, default=d.targets, help="probe (default), or a control: binary, shuffled, constant; or file")
    g.add_argument("--task", choices=TASKS, default=d.task,
                   help="single: one question's confidence (default); pairwise: 'which of these two are you more likely to have "
                        "gotten right?' -> 1/2, the item with the higher target p wins; multitask: both, mixed by --pairwise-fraction")
    g.add_argument("--pairwise-fraction", type=float, default=None,
                   help="multitask: share of the training examples that are pairwise (default 0.5); one example per training item in every task")
    g.add_argument("--targets-file", default=None, help="JSONL/CSV with id,target (integer 0-100) for --targets file")
    g.add_argument("--format", choices=FORMATS, default=d.format, help="inline: own answer then 'Confidence: NN%%'; two-pass: confidence only")
    g.add_argument("--probe-layer", type=int, default=None, help="hidden-state index of the target probe (default: best by train-split CV)")
    g.add_argument("--probe-position", choices=POSITIONS, default=None, help="position of the target probe (default: the best probe's)")
    g.add_argument("--constant", type=int, default=None, help="value for --targets constant (default: round(100 x train accuracy))")
    g.add_argument("--no-balance", action="store_true", help="binary targets: keep the natural class ratio (default: balanced)")
    g.add_argument("--limit-items", type=int, default=None, help="use a seeded subset of N training-split items")
    g.add_argument("--val-fraction", type=float, default=d.val_fraction, help=f"training items held out for validation loss (default {d.val_fraction})")
    g = p.add_argument_group("LoRA")
    g.add_argument("--backend", choices=BACKENDS, default=d.backend, help="peft (torch; default) or mlx (mlx-lm)")
    g.add_argument("--rank", type=int, default=d.rank)
    g.add_argument("--alpha", type=float, default=d.alpha, help=f"LoRA alpha (scale = alpha/rank; default {d.alpha})")
    g.add_argument("--dropout", type=float, default=d.dropout)
    g.add_argument("--target-modules", default=",".join(d.target_modules), help="comma-separated module names, all-linear, or auto (the architecture's default)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--schedule", choices=SCHEDULES, default=d.schedule)
    g.add_argument("--warmup", type=float, default=d.warmup_fraction, help="warm-up as a fraction of the planned updates")
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--grad-accum", type=int, default=d.grad_accum)
    g.add_argument("--epochs", type=int, default=None, help=f"passes over the training items (default {d.epochs} unless --max-updates is given alone)")
    g.add_argument("--max-updates", type=int, default=None, help="cap on optimizer updates (alone: must fit in one epoch)")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--loss-on", choices=LOSS_ON, default=d.loss_on)
    g.add_argument("--objective", choices=("ce", "brier"), default=d.objective,
                   help="ce: cross-entropy on the target text (default); brier: Brier score of the exact 0-100 distribution vs correctness (targets binary)")
    g.add_argument("--max-length", type=int, default=d.max_length)
    g.add_argument("--eval-every", type=int, default=None, help="validation loss every N updates (default: each epoch)")
    g.add_argument("--early-stop", type=int, default=None, metavar="PATIENCE", help="stop after PATIENCE validations without improvement")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    g = p.add_argument_group("run")
    g.add_argument("--dtype", choices=DTYPES, default=d.dtype, help="the base model's dtype (auto: the dtype the workspace's study ran in)")
    g.add_argument("--amp", choices=AMP, default=d.amp,
                   help="mixed-precision training: bfloat16 autocast, LoRA weights and optimizer in float32 "
                        "(auto: where the CPU/GPU has bf16 arithmetic; off: the weights' dtype throughout)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default=d.device)
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the workspace's)")
    g.add_argument("--name", default=None, help="a name for the run id")
    g.add_argument("--background", action="store_true", help="start a detached process and return at once")
    g.add_argument("--evaluate", action="store_true", help="evaluate on the eval split after training")
    g.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N eval items only")
    g.add_argument("--dry-run", action="store_true", help="validate, build the targets and print the plan; do not train")
    g.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="evaluate a fine-tuned run against the base model on the eval split",
                       description="Re-answer the eval split with the run's adapter and write runs/RUN/eval.json (base vs fine-tuned).")
    p.add_argument("--workspace", required=True)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--run", help="run id (see `metacog runs`)")
    g.add_argument("--adapter", help="a PEFT adapter directory that is not a run here (must be trained on this workspace's "
                                     "base model); results go to <workspace>/adapter_evals/<name>/")
    p.add_argument("--format", choices=FORMATS, default="inline", help="with --adapter: the format it was trained on (headline readout)")
    p.add_argument("--limit", type=int, default=None, help="first N eval items only")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--background", action="store_true")
    p.add_argument("--json", action="store_true", help="print eval.json")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("transfer", help="the transfer table: single-question and pairwise ability of each run, in- and out-of-domain",
                       description="Rows = training task (none = base, single, pairwise, multitask, shuffled), columns = single-question "
                                   "AUROC / ECE and pairwise accuracy / Bradley-Terry AUROC with CIs, on the eval split (in-domain) "
                                   "and on the eval split of other workspaces of the same base model (out-of-domain). Evaluates "
                                   "what is missing (runs without an evaluation or without its pairwise part; --ood evaluations), "
                                   "then writes <workspace>/transfer/table.{parquet,md}.")
    p.add_argument("--workspace", required=True)
    p.add_argument("--runs", nargs="*", default=None, help="run ids (default: every finished run, oldest first)")
    p.add_argument("--ood", nargs="*", default=[], metavar="WORKSPACE",
                   help="out-of-domain workspaces (a world-facts-mc study, a study of your own file); same base model")
    p.add_argument("--limit", type=int, default=None, help="first N eval items of each workspace")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-evaluate", action="store_true", help="only build the table from evaluations that exist")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_transfer)

    p = sub.add_parser("runs", help="list the fine-tuning runs of a workspace")
    p.add_argument("--workspace", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("cancel", help="cancel a queued or running fine-tuning run")
    p.add_argument("--workspace", required=True)
    p.add_argument("--run", required=True)
    p.set_defaults(func=cmd_cancel)


def _settings(a) -> FinetuneSettings:
    epochs = a.epochs
    if epochs is None and a.max_updates is None:
        epochs = FinetuneSettings().epochs
    return FinetuneSettings(
        targets=a.targets, task=a.task, pairwise_fraction=a.pairwise_fraction, format=a.format, probe_layer=a.probe_layer, probe_position=a.probe_position,
        targets_file=a.targets_file, constant_value=a.constant, binary_balance=not a.no_balance, limit_items=a.limit_items,
        val_fraction=a.val_fraction, backend=a.backend, rank=a.rank, alpha=a.alpha, dropout=a.dropout,
        target_modules=a.target_modules, lr=a.lr, schedule=a.schedule, warmup_fraction=a.warmup, batch_size=a.batch_size,
        grad_accum=a.grad_accum, epochs=epochs, max_updates=a.max_updates, seed=a.seed, loss_on=a.loss_on, objective=a.objective,
        max_length=a.max_length, eval_every=a.eval_every, early_stop_patience=a.early_stop,
        checkpoint_every=a.checkpoint_every, dtype=a.dtype, device=a.device, amp=a.amp,
    )


class _Bar:
    def __init__(self, quiet):
        self.quiet, self.bar = quiet, None

    def __call__(self, done, total, msg=""):
        if self.quiet:
            return
        from tqdm.auto import tqdm

        if self.bar is None or self.bar.total != total:
            if self.bar is not None:
                self.bar.close()
            self.bar = tqdm(total=total, desc="updates" if msg.startswith("loss") else (msg or "work"), dynamic_ncols=True)
        self.bar.n = done
        if msg:
            self.bar.set_postfix_str(msg)
        self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def cmd_finetune(a) -> int:
    """``metacog finetune``: create (or ``--resume``) a LoRA run and train it in the foreground or
    ``--background`` (prints the run id); ``--dry-run`` prints targets and plan only. Returns the
    exit status (0 done, 1 not done).

    Raises:
        SettingsError, TargetError, RunError, WorkspaceError: bad settings, missing study artifacts
            or an unknown run (``metacog.cli.main`` prints them as one line)."""
    from metacog.core.workspace import Workspace
    from metacog.finetune import runner
    from metacog.finetune.runs import get_run

    from metacog.finetune.evaluate import check_eval_limit, check_evaluable, check_two_pass

    ws = Workspace(a.workspace)
    check_eval_limit(a.eval_limit)  # every setting is checked before any work
    if a.resume:
        run = get_run(ws, a.resume)
        if a.evaluate:
            check_evaluable(ws, run)
        print(f"resuming {run.id} from its newest checkpoint", file=sys.stderr)
        if a.background:
            runner.resume(ws, run.id, background=True, threads=a.threads, evaluate=a.evaluate, eval_limit=a.eval_limit)
            print(run.id)
            return 0
        bar = _Bar(a.quiet)
        try:
            runner.resume(ws, run.id, background=False, threads=a.threads, evaluate=a.evaluate, eval_limit=a.eval_limit,
                          progress=bar)
        finally:
            bar.close()
        return _report(ws, run.id)
    s = _settings(a)
    if a.evaluate:
        check_two_pass(ws, s.format)  # refused before training, not after it
    if a.dry_run:
        from metacog.finetune.runner import example_counts
        from metacog.finetune.settings import make_plan
        from metacog.finetune.tasks import build_task

        df, pairs, info = build_task(ws, s)
        plan = make_plan(s, *example_counts(df, pairs))
        print(json.dumps({"settings": s.to_dict(), "targets": info, "plan": plan.to_dict()}, indent=2, default=str))
        return 0
    run = runner.create_run(ws, s, name=a.name, threads=a.threads)
    pl = run.settings()["plan"]
    print(f"run {run.id}: task {s.task}, {pl['n_train']} train + {pl['n_val']} val examples, {pl['updates_per_epoch']} updates/epoch, "
          f"{pl['updates_planned']} updates planned ({pl['epochs_planned']} epochs)", file=sys.stderr)
    if a.background:
        pid = runner.spawn(run, evaluate=a.evaluate, eval_limit=a.eval_limit, threads=a.threads)
        print(f"started in the background (pid {pid}); log: {run.file('runner.log')}", file=sys.stderr)
        print(run.id)
        return 0
    bar = _Bar(a.quiet)
    try:
        runner.execute(ws, run.id, threads=a.threads, evaluate_after=a.evaluate, eval_limit=a.eval_limit, progress=bar)
    finally:
        bar.close()
    return _report(ws, run.id)


def _report(ws, run_id) -> int:
    from metacog.finetune.runs import get_run

    run = get_run(ws, run_id)
    st = run.status()
    print(f"{run.id}: {st.get('status')} — {st.get('message', '')}")
    print(f"  updates {st.get('updates_run')}/{st.get('updates_planned')}, epochs {st.get('epochs_run')}, "
          f"train time {st.get('train_seconds')} s; adapter: {run.adapter_dir if run.has_adapter() else '(none)'}")
    ev = run.eval_result()
    if ev:
        print_eval(ev)
        from metacog.finetune.evaluate import eval_stale

        if why := eval_stale(ws, ev, run.id):
            print(f"  note: {why}")
    return 0 if st.get("status") == "done" else 1


def _f(x, nd=3):
    return " n/a " if x is None or (isinstance(x, float) and x != x) else f"{x:.{nd}f}"


def print_eval(ev: dict) -> None:
    """Print an ``eval.json`` result (base → fine-tuned on the eval split: accuracy, AUROC, ECE,
    Brier, ceiling rate, validity verdict, probe recovery) in a few lines."""
    h = ev["headline"]
    print(f"eval split, n={h['n_eval']}: accuracy {_f(h['accuracy_base'])} -> {_f(h['accuracy_ft'])} "
          f"({h['accuracy_change']:+.3f}); readout {h['readout']}")
    print(f"  AUROC {_f(h['auroc_base'])} -> {_f(h['auroc_ft'])}   ECE {_f(h['ece_base'])} -> {_f(h['ece_ft'])}   "
          f"Brier {_f(h['brier_base'])} -> {_f(h['brier_ft'])}   ceiling {_f(h['ceiling_base'], 2)} -> {_f(h['ceiling_ft'], 2)}   "
          f"validity {h['verdict_base']} -> {h['verdict_ft']}")
    print(f"  AUROC on unchanged-correctness items {_f(h['auroc_unchanged_base'])} -> {_f(h['auroc_unchanged_ft'])}; "
          f"probe AUROC {_f(h['auroc_probe'])}, recovery {_f(h['recovery'], 2)}; question-type prior {_f(h['type_prior_auroc'])}")
    print(f"  E[v] AUROC {_f(h.get('ev_auroc_base'))} -> {_f(h.get('ev_auroc_ft'))}")
    rp = ev.get("retrained_probes") or {}
    if rp.get("target_probe"):
        t = rp["target_probe"]
        print(f"  re-trained probe L{t['layer']} @ {t['position']} (eval-split CV): {_f(t['auroc_base'])} -> {_f(t['auroc_ft'])}")
    print(f"  ({ev['seconds']['total']:.0f} s)")


def cmd_evaluate(a) -> int:
    """``metacog evaluate``: evaluate run ``--run`` (or an external ``--adapter``) against the base
    model on the eval split, writing ``eval.json``; 0 on success.

    Raises:
        ValueError: ``--background`` with ``--adapter``.
        RunError: an unknown run."""
    from metacog.core.workspace import Workspace
    from metacog.finetune import runner
    from metacog.finetune.runs import get_run

    ws = Workspace(a.workspace)
    if a.adapter:
        if a.background:
            raise ValueError("--background is for runs; evaluate an external adapter in the foreground")
        bar = _Bar(a.quiet)
        try:
            ev, out = runner.evaluate_external(ws, a.adapter, fmt=a.format, limit=a.limit, threads=a.threads, progress=bar)
        finally:
            bar.close()
        print(json.dumps(ev, indent=2, default=str)) if a.json else print_eval(ev)
        print(f"written: {out / 'eval.json'}")
        return 0
    run = get_run(ws, a.run)
    from metacog.finetune.evaluate import check_evaluable

    check_evaluable(ws, run)  # before a model is loaded or a process started
    if a.background:
        pid = runner.spawn(run, evaluate_only=True, eval_limit=a.limit, threads=a.threads)
        print(f"evaluating in the background (pid {pid}); log: {run.file('runner.log')}", file=sys.stderr)
        return 0
    bar = _Bar(a.quiet)
    try:
        ev = runner.evaluate(ws, run.id, limit=a.limit, threads=a.threads, progress=bar)
    finally:
        bar.close()
    if a.json:
        print(json.dumps(ev, indent=2, default=str))
    else:
        print_eval(ev)
        print(f"written: {run.file('eval.json')}")
    return 0


def cmd_transfer(a) -> int:
    """``metacog transfer``: evaluate every finished run (or ``--runs``) in-domain and on each ``--ood``
    workspace where not yet done, then print and write the transfer table; 1 when there are no runs.

    Raises:
        ValueError: an ``--ood`` directory that is not a metacog workspace."""
    from metacog.core.workspace import Workspace
    from metacog.finetune import runner, transfer
    from metacog.finetune.runs import get_run, list_runs

    ws = Workspace(a.workspace)
    oods = [Workspace(o) for o in a.ood]
    for o in oods:
        if not o.exists:
            raise ValueError(f"{o.root} is not a metacog workspace (run `metacog study` on it first)")
    reg = list_runs(ws)
    runs = a.runs if a.runs is not None else [r for r in reg.loc[reg["status"] == "done", "run"]][::-1]
    if not runs:
        print("no finished runs: train some first (metacog finetune --task single|pairwise|multitask)")
        return 1
    if not a.no_evaluate:
        lm = None
        bar = _Bar(a.quiet)
        try:
            for rid in runs:
                run = get_run(ws, rid)
                ev = run.eval_result() or {}
                if not (ev.get("pairwise") or {}).get("ft"):
                    lm = lm or runner._load_lm(run, a.threads)
                    print(f"evaluating {rid} on the eval split of {ws.root.name}", file=sys.stderr)
                    runner.evaluate(ws, rid, lm=lm, limit=a.limit, threads=a.threads, progress=bar)
                for o in oods:
                    if not (transfer.ood_dir(run, o) / "eval.json").exists():
                        lm = lm or runner._load_lm(run, a.threads)
                        print(f"evaluating {rid} on the eval split of {o.root} (out-of-domain)", file=sys.stderr)
                        transfer.evaluate_ood(ws, rid, o, lm=lm, limit=a.limit, threads=a.threads, progress=bar)
        finally:
            bar.close()
    df = transfer.transfer_table(ws, runs)
    path = transfer.save_table(ws, df)
    print(transfer.to_markdown(df))
    print(f"written: {path} (and table.md)")
    return 0


def cmd_runs(a) -> int:
    """``metacog runs``: print the run registry of a workspace (``--json``: as records); returns 0."""
    from metacog.core.workspace import Workspace
    from metacog.finetune.runs import list_runs

    df = list_runs(Workspace(a.workspace))
    if a.json:
        print(df.to_json(orient="records", indent=2))
        return 0
    if df.empty:
        print("no runs")
        return 0
    cols = ["run", "status", "targets", "format", "updates_run", "updates_planned", "epochs_run", "last_loss",
            "train_seconds", "acc_base", "acc_ft", "auroc_base", "auroc_ft", "ece_ft"]
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(df[cols].round(3).to_string(index=False))
    for r in df[df["eval_note"].astype(bool)].itertuples():
        print(f"{r.run}: eval numbers {r.eval_note}")
    return 0


def cmd_cancel(a) -> int:
    """``metacog cancel``: ask run ``--run`` to stop (it checkpoints its last update); prints what was done."""
    from metacog.core.workspace import Workspace
    from metacog.finetune import runner

    print(runner.cancel(Workspace(a.workspace), a.run))
    return 0


__all__ = ["register", "SettingsError"]
