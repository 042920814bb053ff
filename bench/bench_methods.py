"""Speed of the methods table (goal: 500 eval items, k = 5 samples, 2,000 pairwise comparisons,
the whole table within 30 minutes on 2 CPU cores; issue 6 asked for 20).

    .venv/bin/python bench/bench_methods.py --workspace cache/workspaces/methods-demo \\
        [--items 20] [--k 5] [--comparisons 200] [--tune-updates 6] [--threads 1] \\
        [--target-items 500] [--target-comparisons 2000] [--target-updates 24]

Copies the workspace's study artifacts (items, answers, readout, probes; never its runs) to a
scratch directory, runs every method there at a reduced size (``--items`` calibration and
``--items`` eval items: the post-hoc calibrators need calibration scores, so the pool is both
splits), and prints each method's measured seconds, its unit (per item, per comparison, per
training update), the extrapolation to the target size and its share of the total. Training
methods are split into training (per update, independent of the item count) and scoring (per
item). Extrapolation is linear in items / comparisons / updates; the model load is counted once.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch


def main():
    from metacog.methods import MethodSettings, meta, names, run_methods
    from metacog.core.workspace import Workspace

    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--items", type=int, default=20, help="calibration items and eval items measured (each)")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--comparisons", type=int, default=200)
    ap.add_argument("--tune-updates", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--target-items", type=int, default=500)
    ap.add_argument("--target-comparisons", type=int, default=2000)
    ap.add_argument("--target-updates", type=int, default=24)
    ap.add_argument("--target-cores-speedup", type=float, default=None,
                    help="divide the extrapolation by this (measured 1→2 thread speed-up), if known")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    src = Path(a.workspace)
    tmp = Path(tempfile.mkdtemp(prefix="bench-methods-"))
    for f in ("workspace.json", "items.parquet", "answers.parquet", "readout.parquet", "model.json", "stages", "probes"):
        if (src / f).is_dir():
            shutil.copytree(src / f, tmp / f)
        elif (src / f).exists():
            shutil.copy(src / f, tmp / f)
    if (src / "activations").is_dir():  # the probes' lineage names the cache; probe_steering reads its states
        shutil.copytree(src / "activations", tmp / "activations")
    ws = Workspace(tmp)
    s = MethodSettings(eval_limit=a.items, calibration_limit=a.items, k_samples=a.k, n_comparisons=a.comparisons,
                       tune_updates=a.tune_updates)
    from metacog.model.loading import load_model
    from metacog.core.settings import ModelSettings, from_dict, to_dict

    t0 = time.time()
    ms, _ = ws.settings()
    lm = load_model(from_dict(ModelSettings, {**to_dict(ms), "threads": a.threads}))
    load_s = time.time() - t0
    t1 = time.time()
    status = run_methods(ws, "all", s, lm=lm, threads=a.threads, on_error="record")
    wall = time.time() - t1
    pool = 2 * a.items
    tpool = 2 * a.target_items
    rows = []
    for n in names():
        md = meta(ws, n) or {}
        sec = float(md.get("seconds") or 0.0)
        info = md.get("info", {})
        if n.startswith("relative_"):
            unit, mult = "per comparison", a.target_comparisons / a.comparisons
            rows.append((n, sec, unit, sec / a.comparisons, sec * mult))
        elif md.get("trains"):
            tr = float(info.get("train_seconds") or 0.0)
            upd = int(info.get("train_updates") or a.tune_updates)
            rows.append((n + " [train]", tr, "per update", tr / max(upd, 1), tr / max(upd, 1) * a.target_updates))
            sc = max(sec - tr, 0.0)
            rows.append((n + " [score]", sc, "per item", sc / pool, sc / pool * tpool))
        else:
            rows.append((n, sec, "per item", sec / pool, sec / pool * tpool))
    total = sum(r[4] for r in rows) + load_s
    if a.target_cores_speedup:
        total_2 = total / a.target_cores_speedup
    print(f"threads {a.threads}, measured pool {pool} items ({a.items} calibration + {a.items} eval), k={a.k}, "
          f"{a.comparisons} comparisons, {a.tune_updates} tuning updates; model load {load_s:.1f} s; run_methods wall {wall:.0f} s")
    print(f"status: {json.dumps(status)}")
    print(f"{'method':34s} {'measured s':>10s} {'unit':>15s} {'s/unit':>8s} {'extrapolated s':>15s} {'share':>6s}")
    for n, sec, unit, per, ext in rows:
        print(f"{n:34s} {sec:10.1f} {unit:>15s} {per:8.3f} {ext:15.0f} {ext / total:6.1%}")
    print(f"{'model load':34s} {load_s:10.1f} {'once':>15s} {'':8s} {load_s:15.0f} {load_s / total:6.1%}")
    print(f"extrapolated total for {a.target_items} eval + {a.target_items} calibration items, k={a.k}, "
          f"{a.target_comparisons} comparisons, {a.target_updates} updates per training method, {a.threads} thread(s): "
          f"{total:.0f} s = {total / 60:.1f} min; goal 30 min (issue 15; issue 6 asked for 20) -> ratio {total / 1800:.2f}")
    eval_only = sum(r[4] / (2 if r[2] == "per item" else 1) for r in rows) + load_s
    print(f"(scoring eval items only, no post-hoc calibration: {eval_only / 60:.1f} min, ratio {eval_only / 1800:.2f})")
    if a.target_cores_speedup:
        print(f"with a {a.target_cores_speedup:.2f}x speed-up from 2 cores: {total_2 / 60:.1f} min, ratio {total_2 / 1800:.2f}")
    sc = (meta(ws, "self_consistency") or {}).get("info", {})
    if sc.get("token_forwards_unshared"):
        sh, un = int(sc["token_forwards_shared"]), int(sc["token_forwards_unshared"])
        print(f"self-consistency token-forwards (k={a.k}, prompts {sc['prompt_tokens']}, generated {sc['generated_tokens']}): "
              f"shared prefill {sh} vs one prefill per sample {un} -> {sh / un:.2f}x ({1 - sh / un:.0%} fewer)")
    out = {"threads": a.threads, "items": a.items, "k": a.k, "comparisons": a.comparisons, "tune_updates": a.tune_updates,
           "load_s": load_s, "wall_s": wall, "rows": rows, "extrapolated_total_s": total, "eval_only_s": eval_only}
    print(json.dumps(out), file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
