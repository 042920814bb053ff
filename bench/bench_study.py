"""`metacog study` on a built-in set, timed per stage (goal: full world-facts < 10 min on 2 cores).

    .venv/bin/python bench/bench_study.py [--limit N] [--threads 2] [--dtype auto] [--workspace DIR]

Prints the thread count, dtype, per-stage seconds (answers, activations = hidden-state
cache + exact 0-100 readout, probes) and the total, from a fresh workspace.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import torch

from metacog.settings import ModelSettings, StudySettings
from metacog.study import run_study
from metacog.workspace import Workspace


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workspace", default=None)
    a = ap.parse_args()
    d = a.workspace or tempfile.mkdtemp(prefix="metacog-bench-")
    t = time.time()
    s = run_study(d, ModelSettings(threads=a.threads, dtype=a.dtype), StudySettings(limit=a.limit, batch_size=a.batch_size))
    total = time.time() - t
    ws = Workspace(d)
    print(f"model {s['model']['name']} dtype {s['model']['dtype']} threads {torch.get_num_threads()} items {s['n_items']} "
          f"accuracy {s['accuracy']:.3f}")
    for st in ("answers", "activations", "probes"):
        rec = ws.stage_record(st) or {}
        print(f"  {st:12s} {rec.get('seconds', float('nan')):8.1f} s")
    print(f"  total        {total:8.1f} s  ({total / 60:.1f} min; goal < 10 min for the full set)")
    if not a.workspace:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
