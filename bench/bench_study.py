"""`metacog study` on a built-in set, timed per stage (issue 15 goals on 2 cores: 300 items < 3 min, the full world-facts < 15 min).

    .venv/bin/python bench/bench_study.py [--limit N] [--threads 2] [--dtype auto] [--workspace DIR]

Prints the CPU, thread count, dtype, per-stage seconds (answers, activations = hidden-state
cache + exact 0-100 readout, probes) and the total, from a fresh workspace, then the work per
item in token-forwards (``token-forwards per item: <n>``; issue 15's goal for the default
study: <= 450), with the "." look-aheads actually scored (readout.parquet ``lookaheads_*``).
``--two-pass`` runs the study with the two-pass mode as well.
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
    ap.add_argument("--two-pass", action="store_true", help="also the two-pass mode (StudySettings.two_pass)")
    a = ap.parse_args()
    d = a.workspace or tempfile.mkdtemp(prefix="metacog-bench-")
    print(f"CPU: {cpu_name()}")
    t = time.time()
    s = run_study(d, ModelSettings(threads=a.threads, dtype=a.dtype),
                  StudySettings(limit=a.limit, batch_size=a.batch_size, two_pass=a.two_pass))
    total = time.time() - t
    ws = Workspace(d)
    print(f"model {s['model']['name']} dtype {s['model']['dtype']} threads {torch.get_num_threads()} items {s['n_items']} "
          f"accuracy {s['accuracy']:.3f}")
    for st in ("answers", "activations", "probes"):
        rec = ws.stage_record(st) or {}
        print(f"  {st:12s} {rec.get('seconds', float('nan')):8.1f} s")
    print(f"  total        {total:8.1f} s  ({total / 60:.1f} min; goals: 300 items < 3 min, the full set < 15 min)")
    _accounting(ws, s, total, a.threads, a.batch_size)
    if not a.workspace:
        shutil.rmtree(d, ignore_errors=True)


def cpu_name() -> str:
    """The CPU model name (``lscpu``'s "Model name", else /proc/cpuinfo), and whether it has avx512_bf16."""
    try:
        txt = open("/proc/cpuinfo").read()
    except OSError:
        return "unknown"
    name = next((ln.split(":", 1)[1].strip() for ln in txt.splitlines() if ln.startswith("model name")), "unknown")
    return f"{name} ({'avx512_bf16' if 'avx512_bf16' in txt else 'no avx512_bf16'})"


def _accounting(ws: Workspace, s: dict, total: float, threads: int, batch_size: int = 32) -> None:
    """Where the time goes: token-forwards per item of each pass (the work is proportional to
    them on a CPU), the measured token-forwards per second, and the full set at that rate."""
    import numpy as np
    import pandas as pd

    from metacog.readout.values import get_trie
    from metacog.data import load_dataset
    from metacog.model.loading import load_model

    ti = pd.read_parquet(ws.path("activations", "token_index.parquet"))
    ans = ws.read_parquet("answers.parquet")
    ro = ws.read_parquet("readout.parquet")
    lm = load_model(ws.settings()[0])  # the dtype the run used (model.json): its attention decides the sharing
    tok = lm.tokenizer
    trie = get_trie(tok)
    L_in = ti["len_inline"].mean()
    L_2p = ti["len_two_pass"].mean() if "len_two_pass" in ti else 0.0  # two-pass sequence: only with --two-pass
    nv = trie.n_value_nodes

    def look(k):  # "." look-aheads scored per item (all 101 in caches from before the budget)
        return float(ro[f"lookaheads_{k}"].mean()) if f"lookaheads_{k}" in ro else float(trie.n_nodes - nv)

    # the batch's common prefix (chat template's system turn) runs once per batch, not per row
    from metacog.data import prompts
    from metacog.stages.answers import generation_rows
    from metacog.readout.batching import common_prefix
    from metacog.stages.study import load_items

    items = load_items(ws, verify=False)
    a_by = ans.set_index("row").loc[items["row"]]
    P_in = common_prefix([prompts.encode_inline(tok, lm.is_chat, q, str(x)).ids for q, x in zip(items["question"], a_by["answer"])])
    P_2p = common_prefix([prompts.encode_two_pass(tok, lm.is_chat, q, str(x)).ids for q, x in zip(items["question"], a_by["answer"])])
    n = len(items)
    gen_rows, read_rows = min(generation_rows(batch_size), n), min(batch_size, n)
    from metacog.model.ragged import is_ragged

    runs = 1  # rows of the prefix forward
    if is_ragged(lm.model):  # ragged attention: the chat template's system turn, split by each row alone
        from metacog.readout.batching import template_prefix

        P_in = P_2p = len(template_prefix(lm))
        runs = 2  # no bf16 forward has one row
        print(f"ragged attention: the template prefix ({P_in} tokens) is the shared prefix of every chat prompt")
    save_g, save_r, save_2 = (P_in * (1 - runs / gen_rows), P_in * (1 - runs / read_rows), P_2p * (1 - runs / read_rows))
    if P_in or P_2p:
        print(f"shared prefix: {P_in} tokens (inline/answer prompts), {P_2p} (two-pass), once per batch of "
              f"{gen_rows} (generation) / {read_rows} (readout) rows")
    parts = {
        "answer: prompt + generated answer (≈)": L_in - 3 - save_g,  # the inline prefix less "\\nConfidence:"
        "inline verbal: prefill + greedy (≤ 8)": L_in + 8 - save_g,
    }
    if "text_two_pass" in ans:
        two = np.mean([len(tok(t, add_special_tokens=False)["input_ids"]) for t in ans["text_two_pass"]])
        parts["two-pass verbal: prefill + greedy"] = L_2p + two - P_2p * (1 - runs / gen_rows)
    parts[f"cache + readout inline: prefill + {nv} nodes + look-aheads"] = L_in + nv + look("inline") - save_r
    if "ev_two_pass" in ro:
        parts[f"cache + readout two-pass: prefill + {nv} nodes + look-aheads"] = L_2p + nv + look("two_pass") - save_2
    elif L_2p:  # a cache from before confidence_2p followed --two-pass
        parts["cache confidence_2p: two-pass prefill only"] = L_2p - save_2
    else:
        print("two-pass off: the two-pass sequence is not run (no confidence_2p state, no two-pass readout)")
    per_item = sum(parts.values())
    n = s["n_items"]
    rate = per_item * n / max(total, 1e-9)
    full = len(load_dataset("world-facts"))
    print(f"token-forwards per item (mean, n={n}; trie = {nv} value nodes + up to {trie.n_nodes - nv} look-aheads):")
    for k, v in parts.items():
        print(f"  {k:58s} {v:7.1f}")
    print(f"  {'total':58s} {per_item:7.1f}  -> {rate:.0f} token-forwards/s measured")
    print(f"look-aheads scored per item: inline {look('inline'):.1f} of 101"
          + (f", two-pass {look('two_pass'):.1f}" if "ev_two_pass" in ro else ""))
    print(f"token-forwards per item: {per_item:.0f}")
    print(f"full world-facts ({full} items) at this rate: {per_item * full / rate / 60:.1f} min "
          f"(the 15-min goal needs {per_item * full / 900:.0f} token-forwards/s)")


if __name__ == "__main__":
    main()
