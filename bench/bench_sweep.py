"""Benchmark: a seed sweep costs no more than the single runs it replaces (goal: ≤ 1.1 × their sum),
and the local and Ray executors give the same metrics.

    .venv/bin/python bench/bench_sweep.py [--source cache/workspaces/default-world-facts-n200-s0]
        [--seeds 42,123,456] [--limit-items 40] [--epochs 1] [--eval-limit 20] [--threads 1] [--ray]

Copies the source workspace (answers, hidden states, probes; its runs are left behind) three
times under cache/workspaces/: ``<name>-singles`` gets one ``metacog finetune --evaluate``
process per seed, one after the other (what a shell loop does); ``<name>`` gets
``metacog sweep`` with the same settings (local executor, 1 worker, so the comparison is
like for like); with ``--ray`` ``<name>-ray`` gets the same sweep through a local Ray. Prints
the wall time of each, the ratio sweep / Σ singles, and whether every run's metrics agree
across the three. The base model's answers, hidden states and probes are never recomputed
(they are the workspace's); each run loads the model once, trains and evaluates.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def copy_ws(src: Path, dst: Path, fresh: bool) -> None:
    if dst.exists() and fresh:
        shutil.rmtree(dst)
    if not dst.exists():
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("runs", "sweeps", ".lock-*", "adapter_evals", "patching"))


def headline(ws_root: Path, run: str) -> dict:
    ev = json.loads((ws_root / "runs" / run / "eval.json").read_text())
    return {k: ev["headline"].get(k) for k in ("accuracy_ft", "auroc_ft", "ece_ft", "ev_auroc_ft", "brier_ft")}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--source", default=str(ROOT / "cache" / "workspaces" / "default-world-facts-n200-s0"))
    p.add_argument("--name", default="sweep-demo")
    p.add_argument("--seeds", default="42,123,456")
    p.add_argument("--limit-items", type=int, default=40)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--eval-limit", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ray", action="store_true", help="also run the sweep through a local Ray")
    p.add_argument("--fresh", action="store_true", help="re-copy the workspaces (drops earlier runs)")
    p.add_argument("--skip-singles", action="store_true")
    a = p.parse_args()
    src = Path(a.source)
    base = src.parent
    seeds = [int(s) for s in a.seeds.split(",")]
    py = str(ROOT / ".venv" / "bin" / "python")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    common = ["--limit-items", str(a.limit_items), "--epochs", str(a.epochs), "--eval-limit", str(a.eval_limit),
              "--threads", str(a.threads)]
    print(f"bench_sweep: {len(seeds)} seeds {seeds}, {a.limit_items} training items (incl. 10% validation), {a.epochs} epoch(s), "
          f"eval on the first {a.eval_limit} eval items, threads {a.threads}, {os.cpu_count()} CPUs (shared machine)", flush=True)
    out = {"settings": vars(a), "seeds": seeds}

    singles_ws = base / f"{a.name}-singles"
    if not a.skip_singles:
        copy_ws(src, singles_ws, a.fresh)
        t_single = []
        for s in seeds:
            t0 = time.time()
            r = subprocess.run([py, "-m", "metacog.cli", "finetune", "--workspace", str(singles_ws), "--seed", str(s),
                                "--evaluate", "--quiet", *common], env=env, capture_output=True, text=True)
            t_single.append(time.time() - t0)
            if r.returncode != 0:
                print(r.stdout[-2000:], r.stderr[-3000:])
                return 1
            print(f"  single run seed {s}: {t_single[-1]:.1f} s", flush=True)
        out["singles_seconds"] = t_single
        print(f"singles: sum {sum(t_single):.1f} s", flush=True)

    sweep_ws = base / a.name
    copy_ws(src, sweep_ws, a.fresh)
    def sweep(ws, *extra):
        """One `metacog sweep` (1 worker) in a subprocess: (seconds, sweep record) or None on failure."""
        t0 = time.time()
        r = subprocess.run([py, "-m", "metacog.cli", "sweep", "--workspace", str(ws), "--seeds", a.seeds, "--workers", "1",
                            *extra, "--json", "--quiet", *common], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout[-2000:], r.stderr[-3000:])
            return None
        return time.time() - t0, json.loads(r.stdout)

    got = sweep(sweep_ws)
    if got is None:
        return 1
    t_sweep, rec = got
    out["sweep_seconds"] = t_sweep
    out["sweep_actions"] = [e["action"] for e in rec["runs"]]
    print(f"sweep (local, 1 worker): {t_sweep:.1f} s; actions {out['sweep_actions']}", flush=True)
    if "singles_seconds" in out:
        out["ratio_sweep_over_singles"] = t_sweep / sum(out["singles_seconds"])
        print(f"RATIO sweep / sum(singles) = {out['ratio_sweep_over_singles']:.3f}  (goal <= 1.1)", flush=True)

    metrics = {"sweep": {e["seed"]: headline(sweep_ws, e["run"]) for e in rec["runs"]}}
    if "singles_seconds" in out:
        from metacog.finetune.runs import list_runs
        from metacog.core.workspace import Workspace

        reg = list_runs(Workspace(singles_ws))
        reg = reg[reg["evaluated"]].sort_values("created")
        metrics["singles"] = {int(x.seed): headline(singles_ws, x.run) for x in reg.itertuples()}

    if a.ray:
        ray_ws = base / f"{a.name}-ray"
        copy_ws(src, ray_ws, a.fresh)
        got = sweep(ray_ws, "--executor", "ray")
        if got is None:
            return 1
        t_ray, rr = got
        out["ray_seconds"] = t_ray
        metrics["ray"] = {e["seed"]: headline(ray_ws, e["run"]) for e in rr["runs"]}
        print(f"sweep (ray, local, 1 worker): {t_ray:.1f} s; ratio ray / local sweep = {t_ray / t_sweep:.3f}", flush=True)

    out["metrics"] = metrics
    print("per seed (fine-tuned, eval split): accuracy, verbal AUROC, verbal ECE, E[v] AUROC, Brier")
    for s in seeds:
        for k, m in metrics.items():
            h = m.get(s, {})
            print(f"  seed {s:4d} {k:8s} " + "  ".join(f"{n}={'n/a' if v is None else f'{v:.4f}'}" for n, v in h.items()))
    ref = metrics["sweep"]
    same = {k: all(m.get(s) == ref.get(s) for s in seeds) for k, m in metrics.items() if k != "sweep"}
    out["identical_to_sweep"] = same
    print(f"identical metrics to the local sweep: {same}")
    (ROOT / "cache").mkdir(exist_ok=True)
    (ROOT / "cache" / "bench_sweep.json").write_text(json.dumps(out, indent=2, default=str))
    print(f"written: {ROOT / 'cache' / 'bench_sweep.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
