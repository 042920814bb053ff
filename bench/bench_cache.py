"""Hidden-state caching throughput, as ratios measured in one run.

    .venv/bin/python bench/bench_cache.py [--n 64] [--threads 2] [--dtype auto]

Compares, on the same inline prompts of the built-in set (question + answer + "Confidence:"):
  bare      a batched forward of the decoder body, nothing kept (the floor);
  capture   metacog's cache path: the same forward with hooks gathering every layer at the
            named positions (goal: >= 0.9x bare throughput, i.e. capture costs < 10%);
  naive     the loop a user would write: batch 1, float32, output_hidden_states=True,
            keep the needed positions (goal: metacog >= 3x its throughput).
Also prints the cache's bytes per item against the budget 2 x (layers+1) x d_model x positions.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from metacog.data import prompts
from metacog.readout.values import body_and_head, left_pad, read_values
from metacog.data import load_dataset
from metacog.model.generation import batches_by_length
from metacog.model.loading import load_model
from metacog.core.settings import POSITIONS, ModelSettings


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    lm = load_model(ModelSettings(threads=a.threads, dtype=a.dtype))
    tok = lm.tokenizer
    items = load_dataset("world-facts", limit=a.n, seed=0)
    encs = [prompts.encode_inline(tok, lm.is_chat, q, "The answer is " + ans[0] + ".") for q, ans in zip(items.question, items.answers)]
    seqs = [e.ids for e in encs]
    cap = [[e.positions[p] for p in POSITIONS[:3]] for e in encs]
    body, _ = body_and_head(lm.model)
    batches = list(batches_by_length(seqs, a.batch))

    @torch.no_grad()
    def bare():
        for idx in batches:
            ids, att, pos = left_pad([seqs[i] for i in idx], tok.pad_token_id, lm.device)
            body(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=False)

    def capture():
        for idx in batches:
            read_values(lm, [seqs[i] for i in idx], capture=[cap[i] for i in idx], values=False)

    naive_model = load_model(ModelSettings(threads=a.threads, dtype="float32")).model

    @torch.no_grad()
    def naive():
        for s, c in zip(seqs, cap):
            hs = naive_model(input_ids=torch.tensor([s]), output_hidden_states=True).hidden_states
            [h[0, c].float().numpy() for h in hs]

    def best(fn):
        ts = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return min(ts)

    bare()  # warm-up
    tb, tc, tn = best(bare), best(capture), best(naive)
    n = len(seqs)
    print(f"model {lm.name} dtype {str(lm.dtype).replace('torch.', '')} threads {torch.get_num_threads()} items {n} batch {a.batch} "
          f"mean tokens {np.mean([len(s) for s in seqs]):.0f}")
    print(f"bare forward     {n / tb:8.1f} items/s")
    print(f"metacog capture  {n / tc:8.1f} items/s   ratio to bare  {tb / tc:.2f}  (goal >= 0.90)")
    print(f"naive loop       {n / tn:8.1f} items/s   metacog / naive {tn / tc:.2f}  (goal >= 3)")
    per_item = 2 * lm.n_hidden * lm.d_model * len(POSITIONS)
    print(f"cache bytes/item {per_item} = 2 x {lm.n_hidden} x {lm.d_model} x {len(POSITIONS)} (float16, at budget)")


if __name__ == "__main__":
    main()
