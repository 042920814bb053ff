"""Batch invariance: does an item's result depend on what else is in the run?

    PYTHONPATH=. .venv/bin/python bench/bench_invariance.py [--limits 40 120] [--dtype auto]
        [--batch-sizes 32 32] [--threads 2] [--dataset world-facts]

Runs the answers and activations stages (the model work of ``metacog study``) twice, in two
fresh workspaces: ``--limit A`` with batch size a and ``--limit B`` with batch size b (the
``--limit A`` items are the first A of the same seeded shuffle, so they are shared). Then, on
the shared items, prints

- how many greedy answers differ (the answer text),
- how many grades differ, and the largest |Δ| of the two-pass verbal confidence,
- the largest |ΔE[v]| of the exact 0–100 readout (inline and two-pass), in points,
- the largest |Δ| of the cached hidden states (all positions and layers), relative to the
  state's scale,
- the seconds each run took.

This is the measurement behind docs/SCIENCE.md "Batch invariance" and the ``auto`` dtype
(docs/PERFORMANCE.md); ``--dtype bfloat16`` shows why it is not the default on CPU.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import numpy as np
import pandas as pd


def run_one(limit: int, batch_size: int, dtype: str, threads: int, dataset: str, seed: int):
    from metacog.stages.activations import load_states
    from metacog.core.settings import ModelSettings, StudySettings
    from metacog.stages.study import load_items, run_study
    from metacog.core.workspace import Workspace

    d = tempfile.mkdtemp(prefix=f"metacog-inv-{limit}-")
    t = time.time()
    s = run_study(d, ModelSettings(threads=threads, dtype=dtype),
                  StudySettings(dataset=dataset, limit=limit, batch_size=batch_size, seed=seed),
                  stages=("answers", "activations"))
    sec = time.time() - t
    ws = Workspace(d)
    items = load_items(ws)
    ans = ws.read_parquet("answers.parquet").merge(items[["row"]], on="row")
    ro = ws.read_parquet("readout.parquet")
    df = items[["row", "id"]].merge(ans[["row", "answer", "correct", "verbal_two_pass"]], on="row").merge(ro, on="row")
    states = {p: np.asarray(a, dtype=np.float32) for p, a in load_states(ws).items()}
    shutil.rmtree(d, ignore_errors=True)
    return df, states, sec, s["model"]["dtype"]


def compare(a, b) -> dict:
    """Differences on the items both runs share (by id)."""
    (da, sa), (db, sb) = a, b
    m = da.merge(db, on="id", suffixes=("_a", "_b"))
    out = {"shared": int(len(m)),
           "answers_differ": int((m["answer_a"] != m["answer_b"]).sum()),
           "grades_differ": int((m["correct_a"] != m["correct_b"]).sum())}
    v = (m["verbal_two_pass_a"] - m["verbal_two_pass_b"]).abs()
    out["max_d_verbal_two_pass"] = float(v.max()) if v.notna().any() else 0.0
    for k in ("inline", "two_pass"):
        out[f"max_d_ev_{k}"] = float((m[f"ev_{k}_a"] - m[f"ev_{k}_b"]).abs().max())
    same = m["answer_a"] == m["answer_b"]  # states are comparable only where the answer text is the same
    ra, rb = m.loc[same, "row_a"].to_numpy(), m.loc[same, "row_b"].to_numpy()
    rel = 0.0
    for p in sa:
        x, y = sa[p][ra], sb[p][rb]
        scale = np.abs(x).max(axis=-1, keepdims=True) + 1e-6
        rel = max(rel, float((np.abs(x - y) / scale).max()) if len(ra) else 0.0)
    out["max_rel_d_state"] = rel
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limits", type=int, nargs=2, default=[40, 120])
    ap.add_argument("--batch-sizes", type=int, nargs=2, default=[32, 32])
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dataset", default="world-facts")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    runs = []
    for lim, bs in zip(a.limits, a.batch_sizes):
        df, st, sec, dt = run_one(lim, bs, a.dtype, a.threads, a.dataset, a.seed)
        print(f"limit {lim:4d}  batch {bs:3d}  dtype {dt}  threads {a.threads}  {sec:7.1f} s")
        runs.append((df, st))
    c = compare(runs[0], runs[1])
    print(f"shared items {c['shared']}: answers differ {c['answers_differ']}, grades differ {c['grades_differ']}, "
          f"max |Δ two-pass verbal| {c['max_d_verbal_two_pass']:.1f}")
    print(f"max |ΔE[v]| inline {c['max_d_ev_inline']:.4g}  two-pass {c['max_d_ev_two_pass']:.4g} (points of 100)")
    print(f"max relative |Δ state| (same-answer items) {c['max_rel_d_state']:.3g}")
    return c


if __name__ == "__main__":
    main()
