"""How many "." look-aheads the exact 0-100 readout scores, and what skipping the rest costs.

    PYTHONPATH=. python bench/bench_lookahead.py [--items 24] [--threads 1] [--tols 1e-9 1e-6 1e-4 1e-3]

On real world-facts items of the embedded model (the inline and the two-pass confidence
prefixes; half the items with their gold answer, half with another item's answer, so both
confident and doubtful prefixes are read), runs ``confidence.read_values`` once with every
look-ahead scored (``dot_tol=0``) and once per tolerance, and prints per tolerance: the mean
number of look-aheads scored per item (of 101), the padded look-ahead rows of the batched
forward, max |p_pruned - p_full| over all values and items, the max per-item bound
``unresolved`` and whether every error is within it, and max |ΔE[v]| in points. Counts and
errors, not times: they do not depend on the machine's load.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch


def main():
    from metacog.data import prompts
    from metacog.readout.values import DOT_TOL, expected_value, read_values
    from metacog.data import load_dataset
    from metacog.model.loading import load_model
    from metacog.core.settings import ModelSettings

    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--tols", type=float, nargs="+", default=[1e-9, 1e-6, 1e-4, 1e-3],
                    help="per-value dot_tol values (with ev_tol=0)")
    ap.add_argument("--ev-tols", type=float, nargs="+", default=[0.001, 0.005, 0.01, 0.1],
                    help="ev_tol values in points (with the default dot_tol)")
    ap.add_argument("--modes", nargs="+", default=["inline", "two-pass"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lm = load_model(ModelSettings(threads=a.threads))
    tok = lm.tokenizer
    items = load_dataset("world-facts", limit=a.items, seed=0).reset_index(drop=True)
    golds = [str(list(x)[0]) for x in items["answers"]]
    answers = [g if i % 2 == 0 else golds[(i + 1) % len(golds)] for i, g in enumerate(golds)]
    modes = {
        "inline": [prompts.encode_inline(tok, lm.is_chat, q, ans).ids for q, ans in zip(items["question"], answers)],
        "two-pass": [prompts.encode_two_pass(tok, lm.is_chat, q, ans).ids for q, ans in zip(items["question"], answers)],
    }
    print(f"model {lm.name} dtype {lm.dtype} threads {a.threads}, {len(items)} items per mode, batch {a.batch}")
    print(f"{'mode':9s} {'rule':>14s} {'scored/item':>11s} {'padded/item':>11s} {'max|dp|':>10s} "
          f"{'max unres':>10s} {'within':>6s} {'max|dEv|':>10s} {'max evbnd':>10s} {'within':>6s}")
    for mode in a.modes:
        seqs = modes[mode]

        def run(tol, ev_tol):
            probs, unres, look, bound, padded = [], [], [], [], 0
            for s in range(0, len(seqs), a.batch):
                r = read_values(lm, seqs[s : s + a.batch], dot_tol=tol, ev_tol=ev_tol)
                probs.append(r.probs)
                unres.append(r.unresolved)
                look.append(r.lookaheads)
                bound.append(r.ev_bound)
                padded += int(r.lookaheads.max()) * len(r.lookaheads)
            return np.concatenate(probs), np.concatenate(unres), np.concatenate(look), np.concatenate(bound), padded

        full, _, look0, _, pad0 = run(0.0, 0.0)
        ev0 = expected_value(full)
        print(f"{mode:9s} {'full':>14s} {look0.mean():11.1f} {pad0 / len(seqs):11.1f}")
        for tol, ev_tol in [(t, 0.0) for t in a.tols] + [(DOT_TOL, e) for e in a.ev_tols]:
            p, unres, look, bound, pad = run(tol, ev_tol)
            err = np.abs(p - full)
            ok = bool((err.sum(1) <= unres + 1e-12).all())
            dev = np.abs(expected_value(p) - ev0)
            ok_ev = bool((dev <= bound + 1e-9).all())
            name = f"dot_tol {tol:.0e}" if ev_tol == 0 else f"ev_tol {ev_tol:g}"
            print(f"{mode:9s} {name:>14s} {look.mean():11.1f} {pad / len(seqs):11.1f} {err.max():10.2e} "
                  f"{unres.max():10.2e} {'yes' if ok else 'NO':>6s} {np.nanmax(dev):10.2e} {np.nanmax(bound):10.2e} "
                  f"{'yes' if ok_ev else 'NO':>6s}")


if __name__ == "__main__":
    main()
