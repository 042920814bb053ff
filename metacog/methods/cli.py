"""`metacog methods`: every confidence method side by side on one workspace (registered by cli._extend).

Public entry: :func:`register`."""
from __future__ import annotations

import sys
from pathlib import Path


def register(sub) -> None:
    """Add ``metacog methods`` to the subparsers ``sub`` (sets ``func`` to :func:`cmd_methods`);
    called by :func:`metacog.cli.build_parser`."""
    from metacog.methods.settings import MethodSettings

    d = MethodSettings()
    p = sub.add_parser("methods", help="compute confidence methods (P(True), self-consistency, relative, tuning, ...) and print one table",
                       description="Scores every calibration and eval item with each method (fresh results are reused, long ones "
                                   "resume), fits post-hoc calibrators on the calibration split, and prints AUROC/ECE/Brier/AURC/"
                                   "ceiling rate and cost per method on the eval split. Writes methods/table.csv.")
    p.add_argument("--workspace", required=True, help="workspace directory (the study must have run)")
    p.add_argument("--methods", default="all", help="'all' or a comma-separated list; `--list` shows them")
    p.add_argument("--list", action="store_true", help="list the registered methods and their cost, then exit")
    p.add_argument("--eval-limit", type=int, default=None, help="first N eval items by row (default: all)")
    p.add_argument("--calibration-limit", type=int, default=None, help="first N calibration items by row (default: all)")
    p.add_argument("--k", type=int, default=d.k_samples, help=f"self-consistency samples per item (default {d.k_samples})")
    p.add_argument("--temperature", type=float, default=d.temperature, help=f"sampling temperature (default {d.temperature})")
    p.add_argument("--comparisons", type=int, default=d.n_comparisons, help=f"pairwise comparisons (default {d.n_comparisons})")
    p.add_argument("--tune-updates", type=int, default=d.tune_updates, help=f"LoRA updates of the training methods (default {d.tune_updates})")
    p.add_argument("--tune-lr", type=float, default=d.tune_lr, help=f"their learning rate (default {d.tune_lr})")
    p.add_argument("--tune-rank", type=int, default=d.tune_rank, help=f"their LoRA rank (default {d.tune_rank})")
    p.add_argument("--target-modules", default=d.tune_target_modules,
                   help="LoRA target modules of the training methods: auto (the architecture's default), all-linear, or a,b")
    p.add_argument("--probe-run", default=None, help="probe-targeted method: a finished probe-targeted run of this workspace "
                   "to score (default: train a short one with the --tune-* budget)")
    p.add_argument("--steer-gain", type=float, default=d.steer_gain, help=f"probe_steering: shift = gain * 2(p - 0.5) sigma (default {d.steer_gain})")
    p.add_argument("--steer-layer", type=int, default=None, help="probe_steering: hidden-state index written (default probe layer + ceil(L/6))")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"rows per forward (default {d.batch_size})")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of samples, matchups and training (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--force", action="store_true", help="recompute even fresh methods")
    p.add_argument("--no-posthoc", action="store_true", help="leave the post-hoc calibrated variants out of the printed table")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_methods)


def cmd_methods(a) -> int:
    """``metacog methods``: compute the chosen methods on the calibration and eval splits (fresh
    ones reused), print the table and write ``methods/table.csv`` / ``.parquet``. Returns 0, or 1 when
    a method failed or nothing was computed.

    Raises:
        ValueError: ``--threads`` outside 1..256, an unknown method name, or an invalid setting
            (:class:`~metacog.methods.settings.MethodSettingsError`).
        WorkspaceError: the study has not run on the workspace."""
    import torch

    from metacog.methods import all_methods, methods_table, run_methods
    from metacog.methods.settings import MethodSettings
    from metacog.core.runtime import TqdmProgress
    from metacog.core.workspace import Workspace

    if a.list:
        for m in all_methods():
            print(f"{m.name:20s} {m.family:10s} {m.cost}" + (" (needs metacog study --two-pass)" if m.two_pass else ""))
        return 0
    s = MethodSettings(eval_limit=a.eval_limit, calibration_limit=a.calibration_limit, k_samples=a.k, temperature=a.temperature,
                       n_comparisons=a.comparisons, tune_updates=a.tune_updates, tune_lr=a.tune_lr, tune_rank=a.tune_rank,
                       tune_target_modules=a.target_modules, probe_run=a.probe_run, batch_size=a.batch_size, seed=a.seed,
                       steer_gain=a.steer_gain, steer_layer=a.steer_layer)
    if not 1 <= a.threads <= 256:
        raise ValueError("--threads must be 1..256")
    torch.set_num_threads(a.threads)
    ws = Workspace(a.workspace)
    status = run_methods(ws, a.methods, s, progress=TqdmProgress(disable=a.quiet), threads=a.threads, force=a.force)
    failed = {k: v for k, v in status.items() if v.startswith("failed")}
    for k, v in status.items():
        print(f"{k:20s} {v}", file=sys.stderr)
    t = methods_table(ws, n_bins=s.ece_bins, n_boot=s.n_boot)
    if t.empty:
        print("no method results", file=sys.stderr)
        return 1
    ws.write_parquet("methods/table.parquet", t)
    from metacog.core.workspace import atomic_write_text

    atomic_write_text(ws.path("methods", "table.csv"), t.to_csv(index=False))
    show = t if not a.no_posthoc else t[t["calibration"] == "none"]
    print(format_table(show))
    n_eval = t["n_eval"].max()  # NaN when every stored method is stale
    print(f"eval split, n={int(n_eval) if n_eval == n_eval else 0}; written: {Path(ws.root) / 'methods' / 'table.csv'}")
    return 1 if failed else 0


def format_table(t) -> str:
    """The methods table as fixed-width text: AUROC with its 95% bootstrap CI, ECE, Brier, AURC,
    ceiling rate, missing scores, seconds and cost per method (and per post-hoc variant)."""
    def f(x, nd=3):
        return "  n/a" if x is None or x != x else f"{x:.{nd}f}"

    lines = [f"{'method':32s} {'AUROC':>6s} {'95% CI':>15s} {'ECE':>6s} {'Brier':>6s} {'AURC':>6s} {'ceil':>5s} {'miss':>4s} {'sec':>7s}  cost"]
    for r in t.itertuples():
        if getattr(r, "note", ""):
            lines.append(f"{r.method:32s} {r.note}")
            continue
        ci = f"[{f(r.auroc_lo)}, {f(r.auroc_hi)}]"
        sec = "" if r.seconds is None or r.seconds != r.seconds else f"{r.seconds:.0f}"
        cost = r.cost if r.calibration == "none" else f"+ {r.calibration} fit on calibration split"
        lines.append(f"{r.method:32s} {f(r.auroc):>6s} {ci:>15s} {f(r.ece):>6s} {f(r.brier):>6s} {f(r.aurc):>6s} "
                     f"{f(r.ceiling_rate, 2):>5s} {int(r.n_missing):>4d} {sec:>7s}  {cost}")
    return "\n".join(lines)
