"""CLI: ``metacog sweep``, ``metacog sweeps``, ``metacog report``.

    metacog sweep --workspace DIR --seeds 42,123,456 --epochs 3 [--targets probe,shuffled] [--lrs 2e-4,5e-4]
                  [--also-workspace DIR2 ...] [--executor local|ray] [--address HOST:PORT] [--workers N] [--threads 1]
    metacog sweeps --workspace DIR                     # the sweep records and their runs
    metacog report --workspace DIR [--runs R1,R2] [--models DIR2,DIR3] --out report.html
"""
from __future__ import annotations

import json
import sys

from metacog.finetune.settings import FORMATS, LOSS_ON, SCHEDULES, TARGET_KINDS, FinetuneSettings, SettingsError
from metacog.core.settings import POSITIONS


def _ints(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise SettingsError(f"--seeds must be comma-separated integers (e.g. 42,123,456), not {s!r}") from None


def _floats(s: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise SettingsError(f"--lrs must be comma-separated numbers (e.g. 2e-4,5e-4), not {s!r}") from None


def register(sub) -> None:
    """Add ``metacog sweep``, ``sweeps`` and ``report`` to the subparsers ``sub`` (each sets ``func``);
    called by :func:`metacog.cli.build_parser`."""
    d = FinetuneSettings()
    p = sub.add_parser("sweep", help="replicate a fine-tuning run across seeds (and models, targets, learning rates); skips "
                                     "completed runs, resumes interrupted ones, evaluates each",
                       description="Expand one fine-tuning settings object over seeds (x targets x lrs x workspaces), launch the "
                                   "runs on a local process pool or Ray, skip runs already complete (same settings hash), "
                                   "evaluate each on the eval split. The record is <workspace>/sweeps/<id>/sweep.json.")
    p.add_argument("--workspace", required=True, help="the home workspace (its study must have run); the record is written here")
    p.add_argument("--seeds", default="42,123,456", help="comma-separated seeds (default 42,123,456)")
    p.add_argument("--targets", default=d.targets, help=f"one or more target kinds, comma-separated ({', '.join(TARGET_KINDS)})")
    p.add_argument("--lrs", default=None, help="comma-separated learning rates (default: --lr)")
    p.add_argument("--also-workspace", action="append", default=[], metavar="DIR",
                   help="another model's workspace to run the same sweep on (repeatable)")
    g = p.add_argument_group("fine-tuning settings (as `metacog finetune`)")
    g.add_argument("--format", choices=FORMATS, default=d.format)
    g.add_argument("--probe-layer", type=int, default=None)
    g.add_argument("--probe-position", choices=POSITIONS, default=None)
    g.add_argument("--limit-items", type=int, default=None, help="a seeded subset of N training-split items")
    g.add_argument("--val-fraction", type=float, default=d.val_fraction)
    g.add_argument("--rank", type=int, default=d.rank)
    g.add_argument("--alpha", type=float, default=d.alpha)
    g.add_argument("--dropout", type=float, default=d.dropout)
    g.add_argument("--target-modules", default=",".join(d.target_modules))
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--schedule", choices=SCHEDULES, default=d.schedule)
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--grad-accum", type=int, default=d.grad_accum)
    g.add_argument("--epochs", type=int, default=None, help=f"default {d.epochs} unless --max-updates is given alone")
    g.add_argument("--max-updates", type=int, default=None)
    g.add_argument("--loss-on", choices=LOSS_ON, default=d.loss_on)
    g.add_argument("--max-length", type=int, default=d.max_length)
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    g = p.add_argument_group("execution")
    g.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: a pool of worker processes on this machine (default); ray: Ray tasks (local ray.init() or --address)")
    g.add_argument("--address", default=None, help="HOST:PORT of a Ray head node (checked within seconds); omit for a local Ray")
    g.add_argument("--workers", type=int, default=None, help="runs at once (default: cores // threads); workers x threads <= cores")
    g.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    g.add_argument("--no-evaluate", action="store_true", help="train only")
    g.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N eval-split items only")
    g.add_argument("--name", default=None, help="sweep id (default: sweep-<settings hash>)")
    g.add_argument("--dry-run", action="store_true", help="expand and plan (what would be skipped/resumed/trained); run nothing")
    g.add_argument("--quiet", action="store_true")
    g.add_argument("--json", action="store_true", help="print the sweep record as JSON")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("sweeps", help="list the sweeps of a workspace and the status of their runs")
    p.add_argument("--workspace", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sweeps)

    p = sub.add_parser("report", help="write a self-contained HTML report (settings, splits, every plot and table; opens offline)")
    p.add_argument("--workspace", required=True)
    p.add_argument("--runs", default=None, help="comma-separated run ids to compare (default: every evaluated run)")
    p.add_argument("--sweep", default=None, help="compare the runs of this sweep id")
    p.add_argument("--models", default=None, help="comma-separated other workspaces (models) for the cross-model view")
    p.add_argument("--readout", default=None, help="readout to compare (default: the runs' headline readout)")
    p.add_argument("--out", required=True, help="output .html file")
    p.set_defaults(func=cmd_report)


def sweep_settings(a):
    from metacog.sweeps import SweepSettings

    epochs = a.epochs
    if epochs is None and a.max_updates is None:
        epochs = FinetuneSettings().epochs
    targets = tuple(t.strip() for t in a.targets.split(",") if t.strip())
    base = FinetuneSettings(
        targets=targets[0] if targets else "probe", format=a.format, probe_layer=a.probe_layer, probe_position=a.probe_position,
        limit_items=a.limit_items, val_fraction=a.val_fraction, rank=a.rank, alpha=a.alpha, dropout=a.dropout,
        target_modules=a.target_modules, lr=a.lr, schedule=a.schedule, batch_size=a.batch_size, grad_accum=a.grad_accum,
        epochs=epochs, max_updates=a.max_updates, loss_on=a.loss_on, max_length=a.max_length,
        checkpoint_every=a.checkpoint_every)
    return SweepSettings(base=base, seeds=_ints(a.seeds), targets=targets if len(targets) > 1 else (),
                         lrs=_floats(a.lrs) if a.lrs else (), workspaces=tuple(a.also_workspace), evaluate=not a.no_evaluate,
                         eval_limit=a.eval_limit, threads=a.threads)


def cmd_sweep(a) -> int:
    from metacog.sweeps import run_sweep, sweep_table

    s = sweep_settings(a)
    rec = run_sweep(a.workspace, s, executor=a.executor, address=a.address, workers=a.workers, name=a.name,
                    dry_run=a.dry_run, quiet=a.quiet)
    if a.json:
        print(json.dumps(rec, indent=2, default=str))
    else:
        _print_record(rec, sweep_table(rec))
    return 0 if rec["status"] in ("done", "planned") else 1


def _print_record(rec, t) -> None:
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 40):
        cols = ["run", "workspace", "targets", "lr", "seed", "action", "status", "seconds", "auroc_base", "auroc_ft", "ece_base", "ece_ft"]
        print(f"sweep {rec['id']}: {rec['status']}  ({rec.get('executor')}, {rec.get('workers')} worker(s) x {rec.get('threads')} "
              f"thread(s){', ' + str(rec.get('seconds')) + ' s' if rec.get('seconds') is not None else ''})")
        t = t.assign(lr=t["lr"].map(lambda v: f"{v:g}")) if "lr" in t else t
        print(t[[c for c in cols if c in t]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        ft = t[t["status"] == "done"]
        for c in ("auroc_ft", "ece_ft"):
            v = pd.to_numeric(ft[c], errors="coerce").dropna() if c in ft else []
            if len(v) > 1:
                print(f"{c}: mean {v.mean():.3f} ± sd {v.std(ddof=1):.3f} over {len(v)} runs")
        bad = t[t["status"] != "done"]
        if rec.get("status") == "planned":  # a dry run: nothing was created, so the runs have no ids yet
            print(f"dry run: nothing created; {len(bad)} run(s) would be trained or resumed: launch without --dry-run",
                  file=sys.stderr)
            return
        for r in bad.itertuples():
            print(f"  {r.run}: {r.status} — {r.error or ''}", file=sys.stderr)
        if len(bad):
            print(f"{len(bad)} run(s) not finished: launch the same command again to finish only what is missing", file=sys.stderr)


def cmd_sweeps(a) -> int:
    from metacog.sweeps import list_sweeps, sweep_table
    from metacog.core.workspace import Workspace

    recs = list_sweeps(Workspace(a.workspace))
    if a.json:
        print(json.dumps(recs, indent=2, default=str))
        return 0
    if not recs:
        print(f"no sweeps in {a.workspace}")
    for r in recs:
        _print_record(r, sweep_table(r))
    return 0


def cmd_report(a) -> int:
    from metacog.compare.report import write_report
    from metacog.sweeps import load_sweep
    from metacog.core.workspace import Workspace

    runs = [r.strip() for r in a.runs.split(",") if r.strip()] if a.runs else None
    if a.sweep:
        rec = load_sweep(Workspace(a.workspace), a.sweep)
        runs = (runs or []) + [e["run"] for e in rec["runs"] if e.get("run") and e["status"] == "done"
                               and Workspace(e["workspace"]).root == Workspace(a.workspace).root]
    models = [m.strip() for m in a.models.split(",") if m.strip()] if a.models else None
    out, rep = write_report(a.out, a.workspace, runs=runs, models=models, readout=a.readout)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {len(rep.figures)} figures, "
          f"{sum(b[0] == 'table' for b in rep.blocks)} tables); opens offline in any browser")
    return 0
