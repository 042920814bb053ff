"""Pairwise ability of a model and the transfer table (single-question vs pairwise training).

Does training on single-question confidence teach the pairwise comparison ("which of these two
questions are you more likely to have answered correctly?"), and vice versa, and does a mix of
both teach both? Every number here is measured on items never trained on: the workspace's
eval split (in-domain) and the eval split of another workspace of the same base model
(out-of-domain, e.g. a world-facts-mc study or a study of a user's file).

Pairwise readout: the relative-confidence prompt of :func:`metacog.data.prompts.encode_pairwise`
(the one ``metacog methods``' relative method reads) with each item's own answer *of the model
evaluated*, and P("1") from :func:`metacog.readout.values.read_labels` (soft, normalised over "1"/"2").

* **Pairwise accuracy**: on pairs of one correct and one incorrect eval item (correctness of
  the model evaluated), the share where the model prefers the correct one (P(correct item) >
  0.5; exactly 0.5 counts one half). Pairs (:func:`correct_incorrect_pairs`): ``rounds``
  seeded rounds, each pairing a permutation of the correct items with a permutation of the
  incorrect items (``min(n_correct, n_incorrect)`` pairs per round), a repeated pair skipped;
  so **every item appears in at most ``rounds`` pairs** (default 2). The correct item is shown
  first in a seeded half (exactly ``m // 2`` of ``m``). CI: percentile bootstrap over pairs
  (:func:`metacog.stats.bootstrap_ci`): the pair is the unit; with each item in at most
  ``rounds`` pairs the dependence between pairs is bounded (the interval is somewhat narrow
  when ``rounds`` > 1; ``rounds=1`` makes the pairs item-disjoint).
* **Bradley–Terry AUROC**: a seeded schedule of ``matches × n / 2`` comparisons among all eval
  items (:func:`metacog.methods.ranking.schedule`, each item in about ``matches``), fitted by
  :func:`metacog.methods.ranking.bradley_terry` (order effect β absorbed, prior 0.1 as in the
  methods' default); score σ(θ); AUROC against correctness with the stratified item bootstrap
  CI (:func:`metacog.stats.metrics.auroc_ci`).
* **Single-question**: AUROC (stratified item bootstrap CI) and ECE (10 equal-width bins,
  percentile bootstrap over items: :func:`ece_ci`) of the run's own verbal readout.

Public entry: :func:`transfer_table` (after :func:`evaluate_ood`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from metacog.stats import metrics

from metacog.data import prompts
from metacog.stats import bootstrap_ci
from metacog.core.workspace import Workspace
from metacog.core.files import read_table

PAIR_ROUNDS = 2  # each item in at most this many accuracy pairs
BT_MATCHES = 4  # Bradley-Terry comparisons per item (about)
BT_PRIOR = 0.1  # as metacog.methods.settings' bt_prior default
N_BOOT = 1000
BASE_DIR = "transfer"  # <workspace>/transfer/: base model's pairwise results (cached), the saved table
METRICS = ("single_auroc", "single_ece", "pairwise_accuracy", "bt_auroc")
METRIC_LABELS = {"single_auroc": "single AUROC", "single_ece": "single ECE", "pairwise_accuracy": "pairwise accuracy",
                 "bt_auroc": "BT AUROC"}
PAIRWISE_VERSION = 1


# ------------------------------------------------------------------------------ pairs and scores
def correct_incorrect_pairs(y, rounds: int = PAIR_ROUNDS, seed: int = 0) -> np.ndarray:
    """``[m, 2]`` item indices (display order) of pairs of one correct and one incorrect item.

    Round r pairs a seeded permutation of the correct items with a seeded permutation of the
    incorrect items, position by position (``min(n_correct, n_incorrect)`` pairs); a pair
    already drawn is skipped. Every item appears in at most ``rounds`` pairs. The correct item
    is first in exactly ``m // 2`` pairs (a seeded choice). Empty when a class is empty.

    Raises:
        ValueError: ``rounds`` is not a positive integer."""
    y = np.asarray(y, dtype=bool)
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, not {rounds!r}")
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    if not len(pos) or not len(neg):
        return np.zeros((0, 2), dtype=int)
    rng = np.random.default_rng([int(seed), 11])
    k = min(len(pos), len(neg))
    seen, out = set(), []
    for _ in range(rounds):
        for a, b in zip(rng.permutation(pos)[:k], rng.permutation(neg)[:k]):
            if (int(a), int(b)) not in seen:
                seen.add((int(a), int(b)))
                out.append((int(a), int(b)))  # (correct, incorrect)
    ci = np.asarray(out, dtype=int)
    m = len(ci)
    first = np.zeros(m, dtype=bool)
    first[rng.permutation(m)[: m // 2]] = True
    return np.where(first[:, None], ci, ci[:, ::-1])


def read_pairwise(lm, questions, answers, pairs, batch_size: int = 16) -> np.ndarray:
    """P("1") of ``lm`` for each pair (display order), from the relative-confidence prompt
    with the items' answers (the methods' relative readout). Shape ``[len(pairs)]``."""
    from metacog.readout.values import read_labels

    if len(pairs) == 0:
        return np.zeros(0)
    q = [str(x) for x in questions]
    a = [str(x if x is not None else "") for x in answers]
    enc = [prompts.encode_pairwise(lm.tokenizer, lm.is_chat, q[i], a[i], q[j], a[j]).ids for i, j in pairs]
    return read_labels(lm, enc, prompts.PAIRWISE_LABELS, batch_size=batch_size)[:, 0]


def pairwise_accuracy(p_first, pairs, y, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Agreement of the model's choice with correctness on correct/incorrect pairs
    (module docstring): accuracy, its bootstrap CI over pairs, the soft version (mean
    P(correct item)), the share of "1" choices (position preference), pair and item counts."""
    p1 = np.asarray(p_first, dtype=float)
    pairs = np.asarray(pairs, dtype=int).reshape(-1, 2)
    y = np.asarray(y, dtype=bool)
    if not len(pairs):
        return {"accuracy": float("nan"), "accuracy_ci": [float("nan")] * 2, "n_pairs": 0}
    cf = y[pairs[:, 0]]  # the correct item is shown first
    p_correct = np.where(cf, p1, 1.0 - p1)
    hit = np.where(np.isclose(p_correct, 0.5, rtol=0, atol=1e-12), 0.5, (p_correct > 0.5).astype(float))
    counts = np.bincount(pairs.ravel(), minlength=y.size)
    return {"accuracy": float(hit.mean()), "accuracy_ci": list(bootstrap_ci(hit, n_boot=n_boot, seed=seed)),
            "soft_accuracy": float(p_correct.mean()), "chose_first": float((p1 > 0.5).mean()),
            "n_pairs": int(len(pairs)), "n_items": int((counts > 0).sum()), "max_appearances": int(counts.max()),
            "unit": "pair (percentile bootstrap over pairs)"}


def bt_auroc(p_first, pairs, y, prior: float = BT_PRIOR, n_boot: int = N_BOOT, seed: int = 0) -> tuple[dict, np.ndarray]:
    """Bradley–Terry scores σ(θ) from the comparisons (:func:`metacog.methods.ranking.bradley_terry`,
    order effect included) and their AUROC against ``y`` with the stratified item bootstrap CI.
    Returns (summary dict, scores ``[len(y)]``)."""
    from metacog.methods import ranking

    y = np.asarray(y, dtype=bool)
    th, beta = ranking.bradley_terry(y.size, np.asarray(pairs, int), np.asarray(p_first, float), prior=prior,
                                     return_order=True)
    sc = ranking.to_score(th)
    ok = y.any() and (~y).any()
    return {"bt_auroc": metrics.auroc(sc, y) if ok else float("nan"),
            "bt_auroc_ci": list(metrics.auroc_ci(sc, y, n_boot=n_boot, seed=seed)) if ok else [float("nan")] * 2,
            "order_effect": float(beta), "n_comparisons": int(len(pairs)), "n": int(y.size),
            "unit": "item (stratified bootstrap)"}, sc


def ece_ci(conf01, labels, n_bins: int = 10, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of :func:`metacog.stats.metrics.ece` over items (pairs (conf, y)
    resampled together; :func:`scipy.stats.bootstrap`, ``paired=True``). NaN conf dropped;
    (nan, nan) with fewer than 2 items. Binned ECE is biased upward at small n (STATISTICS.md),
    so for a well-calibrated readout the interval can lie above the point estimate."""
    from scipy import stats as st

    c = np.asarray(conf01, dtype=float)
    y = np.asarray(labels, dtype=bool)
    ok = ~np.isnan(c)
    c, y = c[ok], y[ok]
    if c.size < 2:
        return float("nan"), float("nan")
    res = st.bootstrap((c, y), lambda a, b: metrics.ece(a, b, n_bins), paired=True, vectorized=False,
                       n_resamples=int(n_boot), confidence_level=level, method="percentile",
                       rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def pairwise_block(lm, questions, answers, correct, seed: int = 0, rounds: int = PAIR_ROUNDS,
                   matches: int = BT_MATCHES, batch_size: int = 16) -> dict:
    """The pairwise ability of ``lm`` on items (its own answers and their correctness):
    pairwise accuracy on correct/incorrect pairs and the Bradley–Terry AUROC (module docstring)."""
    from metacog.methods import ranking

    y = np.asarray(correct, dtype=bool)
    n = y.size
    t0 = time.time()
    acc_pairs = correct_incorrect_pairs(y, rounds, seed)
    p_acc = read_pairwise(lm, questions, answers, acc_pairs, batch_size)
    out = {"version": PAIRWISE_VERSION, **pairwise_accuracy(p_acc, acc_pairs, y, seed=seed),
           "rule": f"correct/incorrect pairs, {rounds} seeded rounds, each item in at most {rounds} pairs, correct item "
                   f"first in a seeded half; BT on {matches} comparisons per item (ranking.schedule)"}
    if n >= 2:
        bt_pairs = ranking.schedule(n, max(1, matches * n // 2), seed)
        p_bt = read_pairwise(lm, questions, answers, bt_pairs, batch_size)
        bt, _ = bt_auroc(p_bt, bt_pairs, y, seed=seed)
        out.update(bt)
    out["seconds"] = round(time.time() - t0, 2)
    return out


def base_pairwise(ws: Workspace, lm, items: pd.DataFrame, seed: int, batch_size: int = 16) -> dict:
    """The base model's pairwise block on eval ``items`` (``base_row`` = the workspace's rows),
    with the workspace's own answers; cached in ``transfer/base_pairwise-<key>.json``."""
    from metacog.core.settings import stable_hash

    ans = ws.read_parquet("answers.parquet").set_index("row").loc[items["base_row"].to_numpy()]
    key = stable_hash("base-pairwise", PAIRWISE_VERSION, items["id"].tolist(), ans["answer"].astype(str).tolist(),
                      (ws.read_json("model.json") or {}).get("weights_hash"), seed, PAIR_ROUNDS, BT_MATCHES)
    rel = f"{BASE_DIR}/base_pairwise-{key}.json"
    old = ws.read_json(rel)
    if old:
        return old
    blk = pairwise_block(lm, items["question"].tolist(), ans["answer"].tolist(), ans["correct"].to_numpy(bool), seed=seed,
                         batch_size=batch_size)
    ws.write_json(rel, blk)
    return blk


# ------------------------------------------------------------------------------ out-of-domain evaluation
def ood_dir(run, ood_ws: Workspace) -> Path:
    """Where run ``run``'s out-of-domain evaluation on workspace ``ood_ws`` lives:
    ``runs/<id>/ood/<ood workspace directory name>``."""
    return Path(run.path) / "ood" / Path(ood_ws.root).name


def evaluate_ood(ws: Workspace, run_id: str, ood_ws: Workspace, *, lm=None, limit: int | None = None,
                 threads: int | None = None, progress=None) -> dict:
    """Evaluate run ``run_id`` of ``ws`` on the eval split of another workspace ``ood_ws``
    (same base model: refused otherwise); output in ``runs/<run>/ood/<ood workspace name>/``
    (eval.json with the pairwise block, per_item.parquet). Nothing of ``ood_ws`` was trained on.

    Raises:
        RunError: the run has no final adapter, ``ood_ws`` is the run's own workspace, or another base model's workspace."""
    from metacog.finetune.evaluate import evaluate_adapter
    from metacog.finetune.runs import RunError, get_run

    run = get_run(ws, run_id)
    if not run.has_adapter():
        raise RunError(f"run {run_id} has no final adapter; finish it first")
    if Path(ood_ws.root).resolve() == Path(ws.root).resolve():
        raise RunError("the out-of-domain workspace is the run's own workspace; give another one")
    fmt = run.settings()["finetune"]["format"]
    return evaluate_adapter(ood_ws, run.adapter_dir, ood_dir(run, ood_ws), lm=lm, owned=False, limit=limit,
                            threads=threads, probes=False, primary_format=fmt, progress=progress, run_id=run_id)


# ------------------------------------------------------------------------------ the table
def row_label(ft: dict) -> str:
    """The table's row name of a run: its task (``single``, ``pairwise``, ``multitask``) for
    probe targets; ``shuffled`` for shuffled targets (the task in parentheses unless multitask,
    the issue's control); other targets in parentheses."""
    task, tg = ft.get("task", "single"), ft.get("targets")
    if tg == "probe":
        return task
    if tg == "shuffled":
        return "shuffled" if task == "multitask" else f"shuffled ({task})"
    return f"{task} ({tg})"


def _single_metrics(per: pd.DataFrame, readout: str, side: str, bins: int, seed: int) -> dict:
    col, ycol = f"{readout}_{side}", f"correct_{side}"
    if col not in per or ycol not in per:
        return {}
    v = per[col].to_numpy(float) / 100.0
    y = per[ycol].to_numpy(bool)
    ok = ~np.isnan(v)
    v, y = v[ok], y[ok]
    both = y.any() and (~y).any()
    return {"single_auroc": (metrics.auroc(v, y) if both else np.nan,
                             *(metrics.auroc_ci(v, y, n_boot=N_BOOT, seed=seed) if both else (np.nan, np.nan)), int(v.size)),
            "single_ece": (metrics.ece(v, y, bins) if v.size else np.nan, *ece_ci(v, y, bins, seed=seed), int(v.size))}


def _pair_metrics(blk: dict | None) -> dict:
    if not blk:
        return {}
    return {"pairwise_accuracy": (blk.get("accuracy", np.nan), *(blk.get("accuracy_ci") or [np.nan, np.nan]), blk.get("n_pairs")),
            "bt_auroc": (blk.get("bt_auroc", np.nan), *(blk.get("bt_auroc_ci") or [np.nan, np.nan]), blk.get("n"))}


def _eval_sources(run) -> list[tuple[str, str, Path]]:
    """(domain, domain name, evaluation directory) of a run: its eval split, then each OOD evaluation."""
    out = []
    if run.file("eval.json").exists():
        out.append(("in-domain", Path(run.ws.root).name, Path(run.path)))
    d = Path(run.path) / "ood"
    if d.exists():
        for p in sorted(d.iterdir()):
            if (p / "eval.json").exists():
                out.append(("out-of-domain", p.name, p))
    return out


def transfer_table(ws: Workspace, runs: list[str] | None = None) -> pd.DataFrame:
    """The transfer table in long form, built from evaluated runs (no model is loaded).

    One row per (training row, domain, metric) with ``value, lo, hi, n``: training rows are
    ``none`` (the base model, from the first run's evaluation: the same items and readout)
    and each run (:func:`row_label`), with its updates and epochs; domains are the
    workspace's eval split (``in-domain``) and every out-of-domain evaluation of the run
    (:func:`evaluate_ood`); metrics :data:`METRICS` (CIs: module docstring). ``runs``: run ids
    (default: every run with an evaluation, oldest first). Metrics a run's evaluation lacks
    (an evaluation made before pairwise evaluation existed) are NaN."""
    from metacog.finetune.runs import get_run, list_runs

    if runs is None:
        reg = list_runs(ws)
        runs = list(reg.loc[reg["evaluated"].astype(bool), "run"])[::-1] if len(reg) else []
    _, study = ws.settings()
    bins, seed = study.ece_bins, study.seed
    recs = []
    base_done: set[str] = set()
    for rid in runs:
        run = get_run(ws, rid)
        s = run.settings()
        ft = s.get("finetune", {})
        st = run.status()
        plan = s.get("plan", {})
        label = row_label(ft)
        for domain, dname, d in _eval_sources(run):
            ev = json.loads((d / "eval.json").read_text())
            per_p = d / "per_item.parquet"
            per = read_table(per_p) if per_p.exists() else pd.DataFrame()
            readout = (ev.get("headline") or {}).get("readout") or "verbal_inline"
            pw = ev.get("pairwise") or {}
            sides = [("ft", label, rid)]
            if (domain, dname) not in base_done:
                sides.insert(0, ("base", "none", None))
                base_done.add((domain, dname))
            for side, lab, r in sides:
                m = {**_single_metrics(per, readout, side, bins, seed), **_pair_metrics(pw.get(side))}
                for met in METRICS:
                    val, lo, hi, n = m.get(met, (np.nan, np.nan, np.nan, None))
                    recs.append({"row": lab, "run": r, "task": ft.get("task", "single") if r else None,
                                 "targets": ft.get("targets") if r else None, "domain": domain, "domain_name": dname,
                                 "metric": met, "value": _fl(val), "lo": _fl(lo), "hi": _fl(hi),
                                 "n": None if n is None else int(n), "readout": readout,
                                 "updates": st.get("updates_run") if r else None,
                                 "epochs": st.get("epochs_run") if r else None,
                                 "n_train_examples": plan.get("n_train") if r else None})
    cols = ["row", "run", "task", "targets", "domain", "domain_name", "metric", "value", "lo", "hi", "n", "readout",
            "updates", "epochs", "n_train_examples"]
    return pd.DataFrame(recs, columns=cols)


def _fl(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def wide(df: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The table as shown: one row per training row (+ its updates/epochs), one column per
    (domain, metric) with ``value [lo, hi]``."""
    if df.empty:
        return pd.DataFrame()

    def cell(r):
        if not np.isfinite(r["value"]):
            return "–"
        ci = f" [{r['lo']:.{digits}f}, {r['hi']:.{digits}f}]" if np.isfinite(r["lo"]) and np.isfinite(r["hi"]) else ""
        return f"{r['value']:.{digits}f}{ci}"

    d = df.assign(cell=df.apply(cell, axis=1), col=df["domain"] + " · " + df["domain_name"] + " · " + df["metric"].map(METRIC_LABELS))
    d["key"] = d["row"] + d["run"].fillna("").map(lambda r: f" · {r}" if r else "")
    order = list(dict.fromkeys(d["key"]))
    w = d.pivot_table(index="key", columns="col", values="cell", aggfunc="first").reindex(order)
    w = w[list(dict.fromkeys(d["col"]))]
    meta = d.drop_duplicates("key").set_index("key")[["updates", "epochs"]]
    w.insert(0, "epochs", meta["epochs"])
    w.insert(0, "updates", pd.to_numeric(meta["updates"], errors="coerce").astype("Int64"))
    w.index.name = "training"
    return w


def to_markdown(df: pd.DataFrame, digits: int = 3) -> str:
    """A markdown rendering of :func:`wide` (for the CLI, the report and notes)."""
    w = wide(df, digits)
    if w.empty:
        return "(no evaluated runs)"
    cols = ["training"] + list(w.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for k, r in w.iterrows():
        lines.append("| " + " | ".join([str(k)] + ["" if pd.isna(v) else str(v) for v in r.to_list()]) + " |")
    return "\n".join(lines)


def save_table(ws: Workspace, df: pd.DataFrame) -> Path:
    """Write ``transfer/table.parquet`` (long form) and ``transfer/table.md`` through the workspace."""
    ws.write_parquet(f"{BASE_DIR}/table.parquet", df)
    from metacog.core.workspace import atomic_write_text

    atomic_write_text(ws.path(BASE_DIR, "table.md"), to_markdown(df) + "\n")
    ws.write_json(f"{BASE_DIR}/table.json", {"built": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": sorted(set(df["row"])),
                                             "domains": sorted(set(df["domain"] + " · " + df["domain_name"]))})
    return ws.path(BASE_DIR, "table.parquet")


def load_table(ws: Workspace) -> pd.DataFrame | None:
    """The saved transfer table (``transfer/table.parquet``, long form) or None before :func:`save_table`."""
    p = ws.path(BASE_DIR, "table.parquet")
    return read_table(p) if p.exists() else None


__all__ = ["correct_incorrect_pairs", "read_pairwise", "pairwise_accuracy", "bt_auroc", "ece_ci", "pairwise_block",
           "base_pairwise", "evaluate_ood", "transfer_table", "wide", "to_markdown", "save_table", "load_table", "row_label"]
