"""Batch invariance: does an item's result depend on what else is in the run?

    PYTHONPATH=. .venv/bin/python bench/bench_invariance.py [--limits 40 120] [--dtypes auto float32 bfloat16]
        [--batch-sizes 32 32] [--threads 2] [--dataset world-facts] [--kernels]

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

With several ``--dtypes`` it does this per dtype and ends with a verdict table: each dtype's
seconds, whether it is batch-invariant (no answer differs and max |ΔE[v]| ≤ ``--ev-tol`` points),
what ``auto`` resolves to on this machine, and whether ``auto`` is the fastest batch-invariant
choice (issue 15: "``auto`` is never slower than the best batch-invariant one").
``--kernels`` first prints where bfloat16 loses invariance, kernel by kernel: a linear layer's
rows against the batch's row count, and scaled-dot-product attention against left padding.

This is the measurement behind docs/SCIENCE.md "Batch invariance" and the ``auto`` dtype
(docs/PERFORMANCE.md).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import numpy as np
import pandas as pd
import torch

from bench_study import cpu_name


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
    cols = [c for c in ("answer", "answer_text", "correct", "verbal", "verbal_two_pass") if c in ans.columns]
    df = items[["row", "id"]].merge(ans[["row", *cols]], on="row").merge(ro, on="row")
    states = {p: np.asarray(a, dtype=np.float32) for p, a in load_states(ws).items()}
    shutil.rmtree(d, ignore_errors=True)
    return df, states, sec, s["model"]["dtype"]


def compare(a, b) -> dict:
    """Differences on the items both runs share (by id)."""
    (da, sa), (db, sb) = a, b
    m = da.merge(db, on="id", suffixes=("_a", "_b"))
    out = {"shared": int(len(m)),
           "answers_differ": int((m["answer_text_a"] != m["answer_text_b"]).sum()),  # the whole generated text
           "grades_differ": int((m["correct_a"] != m["correct_b"]).sum())}
    for k in ("verbal", "verbal_two_pass"):  # the verbal text's value (two-pass only when the study ran it)
        v = (m[f"{k}_a"] - m[f"{k}_b"]).abs() if f"{k}_a" in m else pd.Series(dtype=float)
        out[f"max_d_{k}"] = float(v.max()) if v.notna().any() else 0.0
    for k in ("inline", "two_pass"):
        d = (m[f"ev_{k}_a"] - m[f"ev_{k}_b"]).abs() if f"ev_{k}_a" in m else pd.Series(dtype=float)
        out[f"max_d_ev_{k}"] = float(d.max()) if d.notna().any() else float("nan")
    same = m["answer_a"] == m["answer_b"]  # states are comparable only where the answer text is the same
    ra, rb = m.loc[same, "row_a"].to_numpy(), m.loc[same, "row_b"].to_numpy()
    rel = 0.0
    for p in sa:
        x, y = sa[p][ra], sb[p][rb]
        scale = np.abs(x).max(axis=-1, keepdims=True) + 1e-6
        rel = max(rel, float((np.abs(x - y) / scale).max()) if len(ra) else 0.0)
    out["max_rel_d_state"] = rel
    return out


def _diff(y: torch.Tensor, ref: torch.Tensor) -> str:
    """"<mismatching elements>/<elements> (max relative difference)"."""
    d = (y.float() - ref.float()).abs() / ref.float().abs().max()
    return f"{int((y != ref).sum())}/{ref.numel()} ({float(d.max()):.1e})"


def kernels(threads: int) -> dict:
    """Where bfloat16 loses batch invariance, kernel by kernel (random inputs, SmolLM2-135M's
    shapes): mismatching output elements of rows 0..6 of a linear layer when the batch has M
    rows instead of 7, and of a 40-token causal attention when p masked padding keys precede it."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    out = {}
    for dt in (torch.float32, torch.bfloat16):
        W = torch.randn(1536, 576, generator=g).to(dt)
        X = torch.randn(300, 576, generator=g).to(dt)
        ref = F.linear(X[:7], W)
        out[f"linear_{dt}"] = {M: _diff(F.linear(X[:M], W)[:7], ref) for M in (8, 16, 33, 64, 128, 300)}
        q = torch.randn(1, 9, 40, 64, generator=g).to(dt)
        k = torch.randn(1, 9, 40, 64, generator=g).to(dt)
        v = torch.randn(1, 9, 40, 64, generator=g).to(dt)

        def attn(p):
            T = 40 + p
            m = torch.ones(T, T, dtype=torch.bool).tril()
            m[:, :p] = False
            m[torch.arange(T), torch.arange(T)] = True
            pad = lambda x: F.pad(x, (0, 0, p, 0))  # noqa: E731
            return F.scaled_dot_product_attention(pad(q), pad(k), pad(v), attn_mask=m)[:, :, p:]

        r = attn(0)
        out[f"sdpa_{dt}"] = {p: _diff(attn(p), r) for p in (1, 5, 17, 60)}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limits", type=int, nargs=2, default=[40, 120])
    ap.add_argument("--batch-sizes", type=int, nargs=2, default=[32, 32])
    ap.add_argument("--dtypes", nargs="+", default=["auto"], help="auto, float32, bfloat16, float16 (each one pair of runs)")
    ap.add_argument("--dtype", default=None, help=argparse.SUPPRESS)  # the one-dtype spelling of earlier rounds
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dataset", default="world-facts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ev-tol", type=float, default=0.01, help="points of E[v] within which a dtype counts as batch-invariant")
    ap.add_argument("--kernels", action="store_true", help="first print the kernel-level check (seconds)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(f"CPU: {cpu_name()}  threads {a.threads}")
    if a.kernels:
        for k, v in kernels(a.threads).items():
            what = "rows in the batch" if k.startswith("linear") else "padding keys"
            print(f"  {k.replace('torch.', '')}: mismatching elements by {what}: " + ", ".join(f"{n}: {c}" for n, c in v.items()))
    from metacog.model.loading import resolve_dtype

    from transformers import AutoConfig

    from metacog.model.loading import resolve_source

    cfg = AutoConfig.from_pretrained(str(resolve_source("default")[0]))  # auto depends on the family (SDPA or not)
    auto = str(resolve_dtype("auto", torch.device("cpu"), cfg)).replace("torch.", "")
    dtypes = list(dict.fromkeys(auto if d == "auto" else d for d in ([a.dtype] if a.dtype else a.dtypes)))
    rows = {}
    for dt in dtypes:
        runs, secs = [], []
        for lim, bs in zip(a.limits, a.batch_sizes):
            df, st, sec, got = run_one(lim, bs, dt, a.threads, a.dataset, a.seed)
            print(f"limit {lim:4d}  batch {bs:3d}  dtype {got}  threads {a.threads}  {sec:7.1f} s")
            runs.append((df, st))
            secs.append(sec)
        c = compare(runs[0], runs[1])
        print(f"shared items {c['shared']}: answers differ {c['answers_differ']}, grades differ {c['grades_differ']}, "
              f"max |Δ verbal| {c['max_d_verbal']:.1f} (two-pass {c['max_d_verbal_two_pass']:.1f})")
        print(f"max |ΔE[v]| inline {c['max_d_ev_inline']:.4g}  two-pass {c['max_d_ev_two_pass']:.4g} (points of 100)")
        print(f"max relative |Δ state| (same-answer items) {c['max_rel_d_state']:.3g}")
        ev = np.nanmax([c["max_d_ev_inline"], c["max_d_ev_two_pass"], 0.0])
        rows[dt] = {**c, "seconds": sum(secs), "invariant": c["answers_differ"] == 0 and ev <= a.ev_tol}
    print(f"\n{'dtype':10s} {'seconds':>8s} {'answers differ':>15s} {'max |ΔE[v]|':>12s}  batch-invariant")
    for dt, r in rows.items():
        ev = np.nanmax([r["max_d_ev_inline"], r["max_d_ev_two_pass"], 0.0])
        tag = "  <- auto" if dt == auto else ""
        print(f"{dt:10s} {r['seconds']:8.1f} {r['answers_differ']:15d} {ev:12.4g}  {'yes' if r['invariant'] else 'no'}{tag}")
    inv = {dt: r["seconds"] for dt, r in rows.items() if r["invariant"]}
    if inv:
        best = min(inv, key=inv.get)
        verdict = "yes" if auto == best or (auto in inv and inv[auto] <= inv[best] * 1.05) else "NO"
        print(f"auto = {auto}; fastest batch-invariant = {best}; auto is the fastest batch-invariant choice: {verdict}"
              + ("" if auto in rows else " (auto not measured)"))
        if verdict == "NO":
            print(f"  auto ({auto}) is not the fastest batch-invariant choice here: see loading.resolve_dtype and "
                  "bench/bench_invariance_stages.py (every stage must be invariant before auto may pick a dtype)")
    else:
        print(f"auto = {auto}; no measured dtype was batch-invariant within {a.ev_tol} points")
    return rows


if __name__ == "__main__":
    main()
