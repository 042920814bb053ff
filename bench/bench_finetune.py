"""Fine-tuning speed and memory (goal: 300 training items × 3 epochs < 5 min on 2 CPU cores,
peak < 4 GB; evaluation of 500 eval items < 3 min).

    .venv/bin/python bench/bench_finetune.py --workspace DIR [--items 300] [--epochs 3] [--threads 2]
                                             [--dtype auto] [--amp auto] [--eval-items 500] [--targets probe] [--no-eval]
                                             [--compare-amp]

Needs a workspace where the study (answers, activations, probes) has run. Trains one
probe-targeted run (a real run in ``DIR/runs/``), then evaluates it. Prints threads, dtype,
updates (planned/run), epochs, seconds per update, wall time and peak resident memory of each
phase (``ru_maxrss`` of this process: the peak so far, so the evaluation's figure includes
training's), and writes the figures to ``runs/<run>/bench.json``.

``--compare-amp`` trains the same run twice, in float32 (``amp off``) and under bfloat16 autocast
(``amp bfloat16``), one after the other in this process, evaluates both on the same eval items
unless ``--no-eval``, and prints the training-time ratio and the results side by side.
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from bench_study import cpu_name


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024  # KiB on Linux


def main():
    from metacog.finetune import FinetuneSettings
    from metacog.stages.study import load_items
    from metacog.core.workspace import Workspace

    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--items", type=int, default=300, help="training-split items (seeded subset; all if fewer)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-updates", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--amp", default="auto", help="mixed precision: auto, off or bfloat16 (FinetuneSettings.amp)")
    ap.add_argument("--compare-amp", action="store_true", help="train the run twice, amp off and bfloat16, and compare")
    ap.add_argument("--targets", default="probe")
    ap.add_argument("--target-modules", default=None, help="default: FinetuneSettings' (comma-separated, or all-linear)")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--name", default=None)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--eval-items", type=int, default=500, help="first N eval-split items (all if fewer)")
    ap.add_argument("--no-eval", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ws = Workspace(a.workspace)
    items = load_items(ws)
    n_train = int((items["split"] == "train").sum())
    n_eval = int((items["split"] == "eval").sum())
    limit = a.items if a.items < n_train else None
    kw = {}
    if a.target_modules:
        kw["target_modules"] = a.target_modules
    if a.lr:
        kw["lr"] = a.lr
    print(f"CPU: {cpu_name()}")
    amps = ("off", "bfloat16") if a.compare_amp else (a.amp,)
    outs = []
    for amp in amps:
        s = FinetuneSettings(targets=a.targets, epochs=a.epochs, max_updates=a.max_updates, seed=a.seed, dtype=a.dtype,
                             limit_items=limit, amp=amp, **kw)
        name = a.name or f"bench-{a.targets}" + (f"-amp-{amp}" if a.compare_amp else "")
        outs.append(bench_one(ws, s, a, name, n_train, n_eval))
    if a.compare_amp:
        o32, o16 = outs
        print(f"amp bfloat16 vs off (float32), same run and machine: train {o16['train_seconds']:.0f} s vs "
              f"{o32['train_seconds']:.0f} s = {o16['train_seconds'] / o32['train_seconds']:.2f}x the time; final train loss "
              f"{o16['final_train_loss']:.4f} vs {o32['final_train_loss']:.4f}; final val loss {o16['final_val_loss']} vs {o32['final_val_loss']}")
        if "headline" in o32:
            for k in ("accuracy_ft", "auroc_ft", "ece_ft", "brier_ft"):
                print(f"  {k}: {o16['headline'].get(k)} (bfloat16 autocast) vs {o32['headline'].get(k)} (float32)")


def bench_one(ws, s, a, name, n_train, n_eval) -> dict:
    """Train (and unless ``--no-eval`` evaluate) one run with settings ``s``; print and return its figures."""
    from metacog.finetune import create_run, execute, run_evaluation

    t0 = time.time()
    run = create_run(ws, s, name=name, threads=a.threads)
    st = execute(ws, run.id, threads=a.threads)
    train_wall = time.time() - t0
    train_peak = _peak_gb()
    plan = run.settings()["plan"]
    base = run.settings().get("base", {})
    out = {
        "run": run.id, "threads": torch.get_num_threads(), "dtype": base.get("dtype"), "device": base.get("device"),
        "targets": a.targets, "target_modules": list(s.target_modules), "lr": s.lr, "train_items": plan["n_train"], "val_items": plan["n_val"],
        "train_split_items_available": n_train, "batch": f"{s.batch_size} x accum {s.grad_accum}",
        "updates_planned": plan["updates_planned"], "updates_run": st["updates_run"], "epochs_run": st["epochs_run"],
        "train_seconds": st.get("train_seconds"), "train_wall_seconds": round(train_wall, 1),
        "seconds_per_update": round(st["train_seconds"] / max(1, st["updates_run"]), 2), "train_peak_rss_gb": round(train_peak, 2),
        "amp": s.amp, "autocast": run.settings().get("training_precision", {}).get("autocast"),
        "final_train_loss": st["result"]["final_train_loss"], "final_val_loss": st["result"]["final_val_loss"],
    }
    print(f"threads {out['threads']} dtype {out['dtype']} autocast {out['autocast']} | {out['train_items']} training items (+{out['val_items']} val) x "
          f"{a.epochs} epochs = {out['updates_run']}/{out['updates_planned']} updates ({out['epochs_run']} epochs) | "
          f"train {out['train_seconds']:.0f} s ({out['seconds_per_update']} s/update), wall incl. model load "
          f"{out['train_wall_seconds']:.0f} s | peak RSS {out['train_peak_rss_gb']:.2f} GB")
    if not a.no_eval:
        m = min(a.eval_items, n_eval)
        t1 = time.time()
        ev = run_evaluation(ws, run.id, limit=m if m < n_eval and m >= 10 else None, threads=a.threads)
        out.update(eval_items=ev["headline"]["n_eval"], eval_seconds=round(time.time() - t1, 1), eval_peak_rss_gb=round(_peak_gb(), 2),
                   headline=ev["headline"])
        h = ev["headline"]
        print(f"eval {out['eval_items']} items in {out['eval_seconds']:.0f} s (peak RSS so far {out['eval_peak_rss_gb']:.2f} GB) | "
              f"accuracy {h['accuracy_base']:.3f} -> {h['accuracy_ft']:.3f} | verbal AUROC {h['auroc_base']} -> {h['auroc_ft']}")
    run.file("bench.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "headline"}, indent=2, default=str))
    return out


if __name__ == "__main__":
    main()
