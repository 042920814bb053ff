"""Relative confidence (after Shrivastava et al. 2025, confidence preferences): the model is
shown two of its answered questions and asked which answer it is more likely to have gotten right ("1" or "2"; :func:`metacog.data.prompts.encode_pairwise`).
A seeded schedule of ``n_comparisons`` matchups among the pool items
(:func:`metacog.methods.ranking.schedule`); the outcome of a matchup is the soft
P("1") from :func:`metacog.readout.values.read_labels`. Scores: Bradley-Terry (Bradley & Terry 1952; σ(θ))
and Elo (Elo 1978; σ(rating)), both from the same comparisons (computed once, cached in
``methods/relative/comparisons.parquet``).

Public entry: the registered methods ``relative_bt`` and ``relative_elo``."""
from __future__ import annotations

import numpy as np
import pandas as pd

from metacog.data import prompts
from metacog.readout.values import read_labels
from metacog.core.settings import stable_hash
from metacog.methods import ranking
from metacog.methods.registry import Method, MethodResult, register
from metacog.core.files import read_table

COMPARISONS = "methods/relative/comparisons.parquet"
COMPARISONS_META = "methods/relative/comparisons.json"  # key, seconds spent computing them (this run or the resumed ones)
SETTINGS = ("n_comparisons", "seed", "batch_size")


def comparisons(ctx) -> pd.DataFrame:
    """The scheduled comparisons and their outcomes (computed once per settings + pool)."""
    pool = ctx.pool
    key = stable_hash("relative", ctx.settings.pick(SETTINGS), pool["row"].tolist(),
                      ctx.ws.stage_key("answers"), n=16)
    p = ctx.ws.path(COMPARISONS)
    if p.exists():
        old = read_table(p)
        if len(old) and old["key"].iloc[0] == key:
            return old
    import time

    t0 = time.time()
    lm = ctx.lm()
    pairs = ranking.schedule(len(pool), ctx.settings.n_comparisons, ctx.settings.seed)
    q, a = pool["question"].tolist(), [str(x or "") for x in pool["answer"]]

    def part(s, e):
        enc = [prompts.encode_pairwise(lm.tokenizer, lm.is_chat, q[i], a[i], q[j], a[j]).ids for i, j in pairs[s:e]]
        pr = read_labels(lm, enc, prompts.PAIRWISE_LABELS, batch_size=ctx.settings.batch_size)
        return pd.DataFrame({"first": pairs[s:e, 0], "second": pairs[s:e, 1], "p_first": pr[:, 0]})

    df = ctx.chunked("relative", key, len(pairs), part, chunk=max(ctx.settings.batch_size * 8, 64), what="relative: comparisons")
    df["row_first"] = pool["row"].to_numpy()[df["first"]]
    df["row_second"] = pool["row"].to_numpy()[df["second"]]
    df["key"] = key
    ctx.ws.write_parquet(COMPARISONS, df)
    ctx.ws.write_json(COMPARISONS_META, {"key": key, "seconds": round(time.time() - t0, 2), "n": int(len(df))})
    from metacog.core.workspace import remove_tree

    for d in ctx.ws.path("methods", "relative").glob("parts-*"):
        remove_tree(d)
    return df


def _compute(kind: str):
    def compute(ctx) -> MethodResult:
        df = comparisons(ctx)
        pairs = df[["first", "second"]].to_numpy()
        o = df["p_first"].to_numpy(dtype=float)
        n = len(ctx.pool)
        beta = None
        if kind == "bt":
            th, beta = ranking.bradley_terry(n, pairs, o, prior=ctx.settings.bt_prior, return_order=True)
        else:
            th = ranking.elo(n, pairs, o, k=ctx.settings.elo_k)
        per_item = np.bincount(pairs.ravel(), minlength=n)
        return MethodResult(pd.DataFrame({"row": ctx.pool["row"].to_numpy(), "score": ranking.to_score(th), "theta": th,
                                          "n_matches": per_item}),
                            {"forward_passes": int(len(df)), "comparisons": int(len(df)),
                             "mean_first_wins": float(o.mean()), "order_effect": beta,
                             # the comparisons' compute time is accounted to Bradley-Terry (Elo reuses them)
                             "extra_seconds": (ctx.ws.read_json(COMPARISONS_META) or {}).get("seconds") if kind == "bt" else None,
                             "matches_per_item": float(per_item.mean())})

    return compute


register(Method(name="relative_bt", version=2, label="relative (Bradley-Terry)", family="relative",
                cost="1 forward per comparison (n_comparisons, shared with Elo)", compute=_compute("bt"),
                settings=SETTINGS + ("bt_prior",), order=60))
register(Method(name="relative_elo", version=2, label="relative (Elo)", family="relative",
                cost="the same comparisons as Bradley-Terry", compute=_compute("elo"),
                settings=SETTINGS + ("elo_k",), order=61))
