"""Benchmark of metacog.patching: a full-layer sweep at the confidence slot plus K random
positions for one item → item pair on the default model, fast path vs one patched forward
per (layer, position) cell (confidence.read_values under a patch hook), same results.

    .venv/bin/python bench/bench_patching.py [--threads 1] [--random 3] [--layers all] [--ref-layers all]

Prints the thread count and the load average (the machine's 2 cores are shared: timings
are only comparable within one run), the wall time of both paths and their ratio, the
largest differences between them, where the fast path's time goes, the cost model (token ×
block and LM-head rows per cell) that bounds the ratio for the exact 0-100 readout, and the
extrapolated time of 100 pairs × all layers × (1 + K) positions, and the floor: the cells'
multiply-adds at this CPU's measured matmul peak (the model's own shapes, in one run), with
every other cost taken as free — how far any implementation of the exact readout could go.
``--ref-layers every:5`` times the reference on a subset of layers and scales it (quicker).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from metacog import patching as P  # noqa: E402
from metacog.readout.values import expected_value, get_trie  # noqa: E402
from metacog.model.loading import load_model  # noqa: E402
from metacog.core.settings import ModelSettings  # noqa: E402

SOURCE = ("What is the capital of France?", "The capital of France is Paris.")
TARGET = ("What is the atomic number of carbon?", "The atomic number of carbon is 6.")


def side(lm, qa, label):
    return P.make_side(lm, *qa, label)


def matmul_peak(lm, cfg, rows: int = 4096, reps: int = 5) -> tuple[float, float]:
    """G multiply-adds per second of this model's own products on this CPU, in its dtype and
    thread count: a block's linear layers (q, k, v, o, gate, up, down shapes) and the LM head,
    each on ``rows`` rows (best of ``reps``)."""
    dt = next(lm.model.parameters()).dtype
    d, kv, ff = lm.d_model, cfg.num_key_value_heads * (lm.d_model // cfg.num_attention_heads), cfg.intermediate_size
    x = {n: torch.randn(rows, n).to(dt) for n in (d, ff)}

    def rate(shapes):
        ws = [torch.randn(o, i).to(dt) for i, o in shapes]
        best = 0.0
        for _ in range(reps):
            t = time.perf_counter()
            for w in ws:
                torch.nn.functional.linear(x[w.shape[1]], w)
            best = max(best, rows * sum(w.numel() for w in ws) / (time.perf_counter() - t) / 1e9)
        return best

    head = P.base_model(lm.model).get_output_embeddings().weight
    return (rate([(d, d), (d, kv), (d, kv), (d, d), (d, ff), (d, ff), (ff, d)]),
            rate([(d, head.shape[0])]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--random", type=int, default=3)
    ap.add_argument("--layers", default="all")
    ap.add_argument("--ref-layers", default="all", help="layers the reference is timed on (scaled to --layers)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    a = ap.parse_args()

    lm = load_model(ModelSettings(model=a.model, dtype=a.dtype, threads=a.threads))
    torch.set_num_threads(a.threads)
    L = lm.n_layers
    layers = P.parse_layers(a.layers, L) or tuple(range(1, L + 1))
    ref_layers = P.parse_layers(a.ref_layers, L) or tuple(range(1, L + 1))
    ref_layers = tuple(h for h in ref_layers if h in layers)
    spec = P.PatchSpec(layers=layers, positions=("confidence", f"random:{a.random}"), seed=0)
    pair = P.Pair(0, side(lm, SOURCE, "src"), side(lm, TARGET, "tgt"), "item")
    print(f"model {lm.name} ({lm.dtype}), {L} blocks, d={lm.d_model}; target {pair.target.T} tokens; "
          f"trie {get_trie(lm.tokenizer).n_nodes} nodes; dot_tol {P.dot_tol()}")
    print(f"threads: {torch.get_num_threads()} (cpus visible: {len(os.sched_getaffinity(0))}); "
          f"load average before: {os.getloadavg()[0]:.2f}")
    cells = len(layers) * (1 + a.random)
    print(f"sweep: {len(layers)} layers x (confidence + {a.random} random) = {cells} cells, residual stream")

    # ---------------------------------------------------------------- fast path
    t0 = time.perf_counter()
    P.supports_skip(lm)  # once per model (a self-test), not per pair: kept out of the per-pair time
    print(f"once per model: the block-skipping self-test {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    prep = P.prepare_pair(pair, spec, "fast")
    t_prep = time.perf_counter() - t0
    fast, t_pos = [], {}
    for pl in prep.plans:
        t = time.perf_counter()
        fast.append(P.patch_position(prep, pl, spec, "fast", a.batch))
        t_pos[pl.label] = (time.perf_counter() - t, pair.target.T - pl.target)
    t_fast = time.perf_counter() - t0
    import pandas as pd

    fast = pd.concat(fast, ignore_index=True)
    print(f"fast: {t_fast:.1f} s  (prepare: both readouts + traces {t_prep:.1f} s; per position: "
          + ", ".join(f"{k} {v[0]:.1f} s (suffix {v[1]})" for k, v in t_pos.items()) + ")")

    # ---------------------------------------------------------------- reference: one patched forward per cell
    t0 = time.perf_counter()
    ref_prep = P.prepare_pair(pair, spec, "reference")
    greedy = P.reference_greedy(pair.target)
    t_rprep = time.perf_counter() - t0
    diffs_p, diffs_e, same_ans, n_ref = [], [], True, 0
    t0 = time.perf_counter()
    for pl in ref_prep.plans:
        for h in ref_layers:
            v = ref_prep.src_trace.state("resid", h, pl.source)
            c = P.patch_cell_reference(pair.target, "resid", h, pl.target, v, greedy)
            n_ref += 1
            row = fast[(fast.position == pl.label) & (fast.layer == h)].iloc[0]
            diffs_p.append(float(np.abs(np.asarray(row["probs"], dtype=float) - c.probs).max()))
            diffs_e.append(abs(float(row["ev_patched"]) - float(expected_value(c.probs[None])[0])))
            same_ans &= bool(row["answer_unchanged"]) == c.answer_unchanged
    t_cells = time.perf_counter() - t0
    t_ref = t_rprep + t_cells * cells / n_ref
    scaled = "" if n_ref == cells else f" (timed {n_ref} of {cells} cells, scaled)"
    print(f"reference: {t_ref:.1f} s{scaled}: {t_cells / n_ref:.2f} s per cell + {t_rprep:.1f} s both readouts")
    print(f"ratio reference / fast: {t_ref / t_fast:.2f}x   (fast {t_fast / cells:.2f} s per cell incl. prepare)")
    print(f"same results: max |dP(v)| {max(diffs_p):.2e}, max |dE[v]| {max(diffs_e):.2e} points, "
          f"greedy-answer flags equal: {same_ans}")

    # ---------------------------------------------------------------- where the fast path's time goes
    pl0 = prep.plans[0]
    vs = P.variants_for(prep, pl0, spec)
    own = P.ThreadOwner()
    t = time.perf_counter()
    final = P.run_skip(lm, prep.tgt_trace, pl0.target, vs, own)
    t_blocks = time.perf_counter() - t
    t = time.perf_counter()
    P.cells_from_final(lm, final, pair.target.T - pl0.target, pl0.target, P.answer_window(pair.target), prep.tgt_trace.greedy, True)
    t_head = time.perf_counter() - t
    t = time.perf_counter()
    P.patch_position_fast(pair.target, prep.tgt_trace, pl0.target, vs, True, a.batch, skip=False)
    t_noskip = time.perf_counter() - t
    print(f"confidence slot, {len(vs)} variants: blocks above each patch {t_blocks:.1f} s + LM head / trie scoring {t_head:.1f} s; "
          f"the same without starting at the patched block (model's own forward): {t_noskip:.1f} s")
    head_bound = (t_ref / cells) / (t_head / len(vs))
    print(f"LM head alone (the {get_trie(lm.tokenizer).n_nodes + 1} readout rows x the {lm.tokenizer.vocab_size}-token vocabulary, "
          f"needed by every cell for the exact 0-100 distribution): {t_head / len(vs):.2f} s per cell -> even with every block "
          f"forward free, the ratio could not exceed {head_bound:.1f}x")

    # ---------------------------------------------------------------- cost model (FLOP-proportional units)
    T = pair.target.T
    N = get_trie(lm.tokenizer).n_nodes
    head = lm.tokenizer.vocab_size * lm.d_model
    cfg = P.base_model(lm.model).config
    block = 2 * lm.d_model * lm.d_model + 2 * lm.d_model * (cfg.num_key_value_heads * (lm.d_model // cfg.num_attention_heads)) \
        + 3 * lm.d_model * cfg.intermediate_size
    ref_units = sum((T + N) * L * block + (N + 1) * head for _ in range(cells))
    fast_units = 0
    for pl in prep.plans:
        S = T - pl.target
        fast_units += sum((S + N) * (L - h) * block + (N + 1) * head for h in layers)
    print(f"cost model (multiply-adds): reference {ref_units / cells / 1e9:.1f} G per cell, fast {fast_units / cells / 1e9:.1f} G per cell "
          f"-> ratio bound {ref_units / fast_units:.2f}x; without the trie (prefix + patch only) the bound would be "
          f"{sum(T * L for _ in range(cells)) / sum((T - pl.target) * (L - h) for pl in prep.plans for h in layers if L > h):.0f}x")

    # ---------------------------------------------------------------- the floor: these multiply-adds at this CPU's matmul peak
    gm_block, gm_head = matmul_peak(lm, cfg)
    blk_units = sum((T - pl.target + N) * (L - h) * block for pl in prep.plans for h in layers)
    head_units = len(prep.plans) * len(layers) * (N + 1) * head
    floor = (blk_units / (gm_block * 1e9) + head_units / (gm_head * 1e9)) / cells
    print(f"matmul peak here ({lm.dtype}, {torch.get_num_threads()} threads, best of 5 runs of 4096-row products): blocks' linear layers "
          f"{gm_block:.0f} G multiply-adds/s, LM head {gm_head:.0f} G/s -> floor {floor:.3f} s per cell with every "
          f"non-matmul cost (attention, norms, softmax, Python) free; measured {t_fast / cells:.3f} s = {t_fast / cells / floor:.2f}x the floor")
    print(f"100 pairs x {L} layers x {1 + a.random} positions at the floor: {100 * floor * L * (1 + a.random) / 60:.1f} min")
    per_pair = t_fast / cells * len(range(1, L + 1)) * (1 + a.random)
    print(f"100 pairs x {L} layers x {1 + a.random} positions (extrapolated from this pair): {100 * per_pair / 3600:.2f} h "
          f"with {torch.get_num_threads()} thread(s); load average after: {os.getloadavg()[0]:.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(dict(
            threads=torch.get_num_threads(), cells=cells, t_fast=t_fast, t_ref=t_ref, ratio=t_ref / t_fast, ref_cells_timed=n_ref,
            max_dp=max(diffs_p), max_de=max(diffs_e), answers_equal=same_ans, t_blocks=t_blocks, t_head=t_head, t_noskip=t_noskip, head_bound=head_bound,
            bound=ref_units / fast_units, hours_100_pairs=100 * per_pair / 3600, floor_s_per_cell=floor,
            gmacs_block=gm_block, gmacs_head=gm_head, load=os.getloadavg()[0]), indent=1))


if __name__ == "__main__":
    main()
