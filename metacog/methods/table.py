"""The one table: every stored method (and its post-hoc calibrated variants) on the eval
split, with the metrics of :mod:`metacog.stats.metrics` and each method's cost.

Columns (:data:`COLUMNS`): method, base, label, calibration (none | platt | isotonic |
temperature), family, n_eval, n_missing, accuracy, auroc, auroc_lo, auroc_hi, ece, brier, aurc,
ceiling_rate (share of scores ≥ 0.95), cost, seconds, forward_passes, train_updates, note (why a
row has no metrics: a variant not fitted, or scores computed on earlier answers, "stale: …").
Post-hoc variants are fitted on the calibration split
(:func:`metacog.methods.calibrate.posthoc`) and scored on eval.

Public entry: :func:`methods_table`."""
from __future__ import annotations

import numpy as np
import pandas as pd

from metacog.stats import metrics
from metacog.core.workspace import Workspace
from metacog.methods import registry, store
from metacog.methods.calibrate import KINDS, posthoc

EVAL = "eval"
COLUMNS = ["method", "base", "label", "calibration", "family", "n_eval", "n_missing", "accuracy", "auroc", "auroc_lo",
           "auroc_hi", "ece", "brier", "aurc", "ceiling_rate", "cost", "seconds", "forward_passes", "train_updates", "note"]


def scored_frame(ws: Workspace, name: str) -> pd.DataFrame | None:
    """A stored method's scores joined with correctness (from the re-parsed answers)."""
    from metacog.stages.answers import reparse
    from metacog.stages.study import load_items

    sc = store.load_scores(ws, name)
    if sc is None:
        return None
    items = load_items(ws)
    ans = reparse(items, ws.read_parquet("answers.parquet"))
    cat = items.set_index("row")["category"]
    df = sc.merge(ans[["row", "correct"]], on="row", how="left")
    df["category"] = cat.reindex(df["row"]).to_numpy()
    return df


def variants(ws: Workspace, name: str, kinds=KINDS, failed: dict | None = None) -> dict[str, pd.DataFrame]:
    """``{"<name>": frame, "<name>+platt": frame, ...}`` with column ``score`` (eval and calibration rows).
    A calibrator that cannot be fitted is left out (its reason goes into ``failed``)."""
    df = scored_frame(ws, name)
    if df is None:
        return {}
    out = {name: df}
    for k in kinds:
        try:
            cal = posthoc(k, df)
        except ValueError as e:
            if failed is not None:
                failed[f"{name}+{k}"] = str(e)
            continue
        d = df.copy()
        d["score"] = cal
        out[f"{name}+{k}"] = d
    return out


def _metrics(df: pd.DataFrame, n_bins: int, n_boot: int, seed: int) -> dict:
    ev = df[df["split"] == EVAL]
    y = ev["correct"].to_numpy(bool)
    s = ev["score"].to_numpy(dtype=float)
    r = metrics.summarize_scores(s, y, n_bins=n_bins, n_boot=n_boot, seed=seed, nan_policy="omit")
    ok = ~np.isnan(s)
    return dict(n_eval=int(len(ev)), n_missing=r["n_missing"], accuracy=float(y.mean()) if len(y) else np.nan,
                auroc=r["auroc"], auroc_lo=r["auroc_ci"][0], auroc_hi=r["auroc_ci"][1], ece=r["ece"], brier=r["brier"],
                aurc=r["aurc"], ceiling_rate=float(np.mean(s[ok] >= 0.95)) if ok.any() else np.nan)


def _seconds(md: dict):
    """A method's compute time, plus shared work it accounts for (``info.extra_seconds``)."""
    s = md.get("seconds")
    extra = (md.get("info") or {}).get("extra_seconds")
    return None if s is None else float(s) + float(extra or 0.0)


def methods_table(ws: Workspace, names=None, posthoc_kinds=KINDS, n_bins: int = 10, n_boot: int = 1000,
                  seed: int = 0) -> pd.DataFrame:
    """One row per stored method and post-hoc variant (platt, isotonic, temperature, fitted on the
    calibration split) with eval-split metrics: AUROC with its 95% bootstrap CI (``n_boot``
    resamples, ``seed``), ECE (``n_bins`` equal-width bins), Brier, AURC, ceiling rate (share of
    scores >= 0.95), cost and seconds (columns in the module docstring). A variant that cannot be
    fitted gets a row with ``note``. Empty DataFrame when nothing is stored."""
    rows = []
    known = set(registry.names())
    stored = store.stored_methods(ws)
    order = [n for n in registry.names() if n in stored] + [n for n in stored if n not in known]
    if names is not None:
        order = [n for n in order if n in set(names)]
    for n in order:
        md = store.meta(ws, n) or {}
        info = md.get("info", {})
        failed: dict = {}
        for vname, df in variants(ws, n, posthoc_kinds, failed).items():
            m = _metrics(df, n_bins, n_boot, seed)
            rows.append(dict(method=vname, base=n, label=md.get("label", n), calibration=vname.split("+")[1] if "+" in vname else "none",
                             family=md.get("family", ""), **m, cost=md.get("cost", ""), seconds=_seconds(md),
                             forward_passes=str(info.get("forward_passes", "")), train_updates=info.get("train_updates"), note=""))
        for vname, why in failed.items():
            rows.append(dict(method=vname, base=n, label=md.get("label", n), calibration=vname.split("+")[1], family=md.get("family", ""),
                             cost=md.get("cost", ""), seconds=md.get("seconds"), note=f"not fitted: {why}"))
    for n in store.stale_methods(ws):  # kept on disk, never scored against today's answers
        if names is None or n in set(names):
            md = store.meta(ws, n) or {}
            rows.append(dict(method=n, base=n, label=md.get("label", n), calibration="none", family=md.get("family", ""),
                             cost=md.get("cost", ""), seconds=md.get("seconds"), note=stale_note(ws, n)))
    return pd.DataFrame(rows, columns=COLUMNS) if rows else pd.DataFrame()


def stale_note(ws: Workspace, name: str) -> str:
    """The table's note for a stale method (:func:`~metacog.methods.store.stale_methods`): how to
    recompute it, or why it cannot be (a two-pass baseline in a study run without ``--two-pass``)."""
    from metacog.methods.registry import get, names, unavailable

    why = unavailable(get(name), ws.settings()[1]) if name in names() else None
    if why is not None:
        return f"stale: computed on other answers than answers.parquet; {why}"
    return f"stale: computed on other answers than answers.parquet; recompute with `metacog methods --workspace {ws.root} --methods {name}`"


def eval_scores(ws: Workspace, names) -> dict[str, pd.DataFrame]:
    """Eval-split frames (score, correct) of methods and variants named like the table's ``method``."""
    out = {}
    for n in names:
        base = n.split("+")[0]
        kinds = [n.split("+")[1]] if "+" in n else []
        v = variants(ws, base, kinds)
        if n in v:
            d = v[n]
            out[n] = d[d["split"] == EVAL].reset_index(drop=True)
    return out
