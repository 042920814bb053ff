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

from metacog.core.settings import ModelSettings, StudySettings
from metacog.stages.study import run_study
from metacog.core.workspace import Workspace


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
    _accounting(ws, s, total, a.threads)
    if not a.workspace:
        shutil.rmtree(d, ignore_errors=True)


def _accounting(ws: Workspace, s: dict, total: float, threads: int) -> None:
    """Where the time goes: token-forwards per item of each pass (the work is proportional to
    them on a CPU), the measured token-forwards per second, and the full set at that rate."""
    import numpy as np
    import pandas as pd

    from metacog.readout.values import get_trie
    from metacog.data import load_dataset
    from metacog.model.loading import load_model

    ti = pd.read_parquet(ws.path("activations", "token_index.parquet"))
    ans = ws.read_parquet("answers.parquet")
    lm = load_model(ModelSettings(threads=threads))
    tok = lm.tokenizer
    trie = get_trie(tok)
    two = np.mean([len(tok(t, add_special_tokens=False)["input_ids"]) for t in ans["text_two_pass"]])
    L_in, L_2p = ti["len_inline"].mean(), ti["len_two_pass"].mean()
    tree = trie.n_nodes  # value nodes + one "." look-ahead per value (all needed on this model)
    parts = {
        "answer: prompt + generated answer (≈)": L_in - 3,  # the inline prefix less "\\nConfidence:"
        "inline verbal: prefill + greedy (≤ 8)": L_in + 8,
        "two-pass verbal: prefill + greedy": L_2p + two,
        "cache + readout inline: prefill + trie": L_in + tree,
        "cache + readout two-pass: prefill + trie": L_2p + tree,
    }
    per_item = sum(parts.values())
    n = s["n_items"]
    rate = per_item * n / max(total, 1e-9)
    full = len(load_dataset("world-facts"))
    print(f"token-forwards per item (mean, n={n}; trie = {trie.n_value_nodes} value nodes + {trie.n_nodes - trie.n_value_nodes} look-aheads):")
    for k, v in parts.items():
        print(f"  {k:44s} {v:7.1f}")
    print(f"  {'total':44s} {per_item:7.1f}  -> {rate:.0f} token-forwards/s measured")
    print(f"full world-facts ({full} items) at this rate: {per_item * full / rate / 60:.1f} min "
          f"(the 10-min goal needs {per_item * full / 600:.0f} token-forwards/s)")


if __name__ == "__main__":
    main()
