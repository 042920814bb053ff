"""The probing study end to end: items → answers → activations → probes → summary.json.

``summary.json`` holds:
- ``model`` (describe() of the loaded model), ``dataset``, ``n_items``, ``accuracy`` (all items),
  ``accuracy_by_split``;
- ``splits``: counts per split, ``disjoint: true`` and ``group_disjoint: true`` (no fact in two
  splits), ``n_groups`` (checked by code, not assumed);
- ``verbal``: per elicitation mode (``inline``, ``two-pass``), on the **eval** split:
  ``auroc, ece, brier, aurc`` each with ``<metric>_ci`` (bootstrap, ``ci_rule``), ``ece_null``
  (mean and p95 ECE of a perfectly calibrated predictor at these confidences, ``ece_null_rule``),
  ``ceiling_rate, validity{L,trin,r,verdict}, n, n_missing``;
- ``distribution``: per mode, the same metrics for the expected value of the exact 0–100
  distribution (``ev``) and for its argmax (``argmax``), plus ``mean_other`` mass;
- ``probes``: ``entries`` (one per layer × position: the same metrics with CIs and ece_null,
  cv_auroc, C), ``best`` (chosen by nested train-split CV, reported on eval, with
  ``selection_null``: the permutation null of choosing the best of all cells);
- ``type_prior``: the question-type baseline's eval AUROC (with CI); ``within_type``: within-type
  AUROC (with CI) of the best probe and of each verbal readout;
- ``warnings``: plain sentences when the eval split is small (< 50 items or < 10 of a class), has
  one class, the split sizes are unlike the fractions asked for, or the best probe does not beat
  its selection null;
- ``ece_rule``: the binning used (equal-width, edges, last bin closed).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics
from .activations import activations_key, load_states, run_activations
from .answers import answers_key, items_fingerprint, run_answers
from .data import assign_splits, check_splits, load_dataset, split_fraction_warnings
from .runtime import ProgressFn, StopFn
from .settings import MODES, POSITIONS, ModelSettings, StudySettings, stable_hash
from .workspace import Workspace, WorkspaceError

MODE_KEYS = {"inline": "inline", "two-pass": "two_pass"}


def prepare_items(study: StudySettings) -> pd.DataFrame:
    """Load the dataset, assign seeded splits (stratified by category), check disjointness."""
    items = load_dataset(study.dataset, limit=study.limit, seed=study.seed).reset_index(drop=True)
    strata = items["category"] if items["category"].astype(str).str.len().gt(0).any() else None
    groups = items["group"] if "group" in items.columns else None  # one fact per group (readers/generator)
    items["split"] = assign_splits(items["id"], seed=study.seed, fractions=study.split_fractions, strata=strata,
                                   groups=groups).to_numpy()
    items["row"] = np.arange(len(items))
    check_splits(items)
    return items


def stage_items(ws: Workspace, study: StudySettings) -> pd.DataFrame:
    items = prepare_items(study)
    key = stable_hash("items", items_fingerprint(items), items["split"].tolist())
    if not ws.stage_fresh("items", key):
        ws.write_parquet("items.parquet", items)
        ws.mark_stage("items", key, n=len(items), splits=check_splits(items))
    return items


def load_items(ws: Workspace) -> pd.DataFrame:
    items = ws.read_parquet("items.parquet")
    for col in ("answers", "choices"):
        if col in items:
            items[col] = items[col].map(lambda v: list(v) if v is not None and not isinstance(v, str) else v)
    return items


def probes_key(act_key: str, study: StudySettings, items: pd.DataFrame | None = None) -> str:
    """Cache key of the probe stage: probe code version, activations, folds, seed, bins and -- given
    ``items`` -- which items are in which split and group (a new split or grouping refits)."""
    from . import probes

    parts = ["probes", getattr(probes, "PROBES_VERSION", 1), act_key, study.probe_folds, study.seed, study.ece_bins]
    if items is not None:
        parts.append(stable_hash(items["split"].astype(str).tolist(),
                                 items["group"].astype(str).tolist() if "group" in items.columns else None))
    return stable_hash(*parts)


def run_probes_stage(ws: Workspace, items: pd.DataFrame, answers: pd.DataFrame, act_key: str, study: StudySettings,
                     threads: int | None = None, progress: ProgressFn | None = None) -> pd.DataFrame:
    from . import probes

    key = probes_key(act_key, study, items)
    if ws.stage_fresh("probes", key):
        return ws.read_parquet("probes/metrics.parquet")
    t0 = time.time()
    states = load_states(ws)
    y = answers.set_index("row").loc[items["row"], "correct"].to_numpy().astype(bool)
    if progress:
        progress(0, 1, "fitting probes")
    res = probes.fit_probes(
        {p: states[p] for p in POSITIONS}, y, items["split"].to_numpy(), folds=study.probe_folds, seed=study.seed,
        n_bins=study.ece_bins, threads=threads, progress=progress,
        groups=items["group"].to_numpy() if "group" in items.columns else None,
    )
    ws.write_parquet("probes/metrics.parquet", res.metrics)
    ws.path("probes").mkdir(exist_ok=True)
    np.save(ws.path("probes", "oof.tmp.npy"), res.oof.astype(np.float32))
    ws.path("probes", "oof.tmp.npy").replace(ws.path("probes", "oof.npy"))
    ws.write_json("probes/best.json", res.best)
    ws.mark_stage("probes", key, seconds=round(time.time() - t0, 2))
    if progress:
        progress(1, 1, "fitting probes")
    return res.metrics


def run_study(
    workspace: str | Path,
    model: ModelSettings | None = None,
    study: StudySettings | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    stages: tuple[str, ...] = ("answers", "activations", "probes"),
    lm=None,
) -> dict:
    """Run (or resume) the study in ``workspace``; returns the summary dict."""
    from .models import load_model

    ws = Workspace(workspace)
    if model is None or study is None:
        if ws.exists:
            m0, s0 = ws.settings()
            model, study = model or m0, study or s0
        else:
            model, study = model or ModelSettings(), study or StudySettings()
    with ws.lock("study"):
        ws.init(model, study)
        t0 = time.time()
        items = stage_items(ws, study)
        lm = lm or load_model(model)
        ws.write_json("model.json", lm.describe())
        ans = run_answers(ws, lm, items, study, progress, should_stop)
        akey = answers_key(lm, items, study)
        if "activations" in stages or "probes" in stages:
            run_activations(ws, lm, items, ans, akey, study.batch_size, progress, should_stop, style=study.prompt_style)
        if "probes" in stages:
            run_probes_stage(ws, items, ans, activations_key(akey), study, threads=model.threads, progress=progress)
        summary = summarize(ws)
        summary["seconds"] = round(time.time() - t0, 1)
        ws.write_json("summary.json", summary)
        return summary


# ----------------------------------------------------------------------------------------
# summary
# ----------------------------------------------------------------------------------------
def _score_block(conf01, y, bins: int, seed: int) -> dict:
    """Every metric of one [0, 1] score on the eval items, each with its bootstrap CI
    (``<metric>_ci``) and ``ece_null`` beside the ECE (metrics.summarize_scores)."""
    s = metrics.summarize_scores(conf01, y, n_bins=bins, seed=seed, nan_policy="omit")
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items()}


def results_table(ws: Workspace) -> pd.DataFrame:
    """items + answers + readout (+ best-probe p) in one per-item table."""
    items = load_items(ws)
    df = items.merge(ws.read_parquet("answers.parquet").drop(columns=["id", "split", "category"], errors="ignore"), on="row")
    if ws.path("readout.parquet").exists():
        df = df.merge(ws.read_parquet("readout.parquet"), on="row", how="left")
    best = ws.read_json("probes/best.json")
    if best and ws.path("probes", "oof.npy").exists():
        oof = np.load(ws.path("probes", "oof.npy"), mmap_mode="r")
        pi = list(POSITIONS).index(best["position"])
        df["probe_p"] = np.asarray(oof[df["row"].to_numpy(), int(best["layer"]), pi], dtype=float)
    return df


def summarize(ws: Workspace) -> dict:
    model_s, study = ws.settings()
    df = results_table(ws)
    bins, seed = study.ece_bins, study.seed
    ev = df[df["split"] == "eval"]
    tr = df[df["split"] == "train"]
    y = ev["correct"].to_numpy().astype(bool)
    out: dict = {
        "model": ws.read_json("model.json", {"spec": model_s.model}),
        "dataset": study.dataset,
        "n_items": int(len(df)),
        "accuracy": float(df["correct"].mean()),
        "accuracy_by_split": {k: float(g["correct"].mean()) for k, g in df.groupby("split")},
        "splits": check_splits(df[[c for c in ("id", "split", "group") if c in df.columns]]),
        "eval_split": "eval",
        "n_eval": int(len(ev)),
        "ece_rule": metrics.ECE_BINS_DOC if hasattr(metrics, "ECE_BINS_DOC") else f"{bins} equal-width bins",
        "ece_bins": bins,
        "ci_rule": metrics.BOOTSTRAP_DOC,
        "ece_null_rule": metrics.ECE_NULL_DOC,
    }
    # plain-language warnings: small or one-class eval split, split sizes unlike the fractions asked for
    warnings = split_fraction_warnings(out["splits"], study.split_fractions)
    warnings += metrics.sample_warnings(y, "the eval split")
    out["verbal"] = {}
    out["distribution"] = {}
    for mode in MODES:
        k = MODE_KEYS[mode]
        v = ev[f"verbal_{k}"].to_numpy(dtype=float)
        blk = _score_block(v / 100.0, y, bins, seed)
        vs = metrics.validity_screen(v, y)
        blk.update(ceiling_rate=vs["L"], validity=vs, parse_rate=float(np.mean(~np.isnan(v))) if len(v) else float("nan"))
        out["verbal"][mode] = blk
        if f"ev_{k}" in ev:
            d = {}
            for read in ("ev", "argmax"):
                c = ev[f"{read}_{k}"].to_numpy(dtype=float)
                b = _score_block(c / 100.0, y, bins, seed)
                b["ceiling_rate"] = float(np.nanmean(c >= 95)) if len(c) else float("nan")
                b["validity"] = metrics.validity_screen(c, y)
                d[read] = b
            d["auroc"], d["auroc_ci"] = d["ev"]["auroc"], d["ev"]["auroc_ci"]  # shortcut: E[v]'s
            d["mean_other"] = float(ev[f"other_{k}"].mean())
            out["distribution"][mode] = d
    # question-type prior and within-type AUROC
    cats_ok = df["category"].astype(str).str.len().gt(0).any()
    if cats_ok:
        prior = metrics.type_prior(tr["category"], tr["correct"], ev["category"])
        out["type_prior"] = {"auroc": metrics.auroc(prior, y), "auroc_ci": list(metrics.auroc_ci(prior, y, seed=seed)),
                             "n_eval": int(len(ev)), "n_types": int(df["category"].nunique())}
        wt = {}
        for mode in MODES:
            k = MODE_KEYS[mode]
            wt[f"verbal_{k}"] = _within(ev[f"verbal_{k}"], y, ev["category"], seed)
            if f"ev_{k}" in ev:
                wt[f"ev_{k}"] = _within(ev[f"ev_{k}"], y, ev["category"], seed)
        if "probe_p" in ev:
            wt["probe_best"] = _within(ev["probe_p"], y, ev["category"], seed)
        out["within_type"] = wt
    # probes
    if ws.path("probes", "metrics.parquet").exists():
        pm = ws.read_parquet("probes/metrics.parquet")
        entries = [_probe_entry(r) for r in pm.to_dict("records")]
        best = ws.read_json("probes/best.json")
        if best:
            best = {**best, **{k: v for k, v in _probe_entry(best).items() if k not in ("layer", "position")}}
            sn = best.get("selection_null")
            if sn and sn.get("p") is not None and sn["p"] > 0.05:
                warnings.append(
                    f"the best probe (layer {best['layer']} @ {best['position']}) does not beat chance selection: with the "
                    f"labels shuffled, the best of all layer x position probes scored at least as high in "
                    f"{round(sn['p'] * (sn['n_perm'] + 1)) - 1} of {sn['n_perm']} shuffles (p = {sn['p']:.2f}); its train CV "
                    "AUROC may be the luck of picking the maximum.")
        from .probes import SELECTION_NULL_DOC

        out["probes"] = {"entries": entries, "best": best, "n_train": int(len(tr)), "n_eval": int(len(ev)),
                         "selection_null_rule": SELECTION_NULL_DOC}
    out["warnings"] = warnings
    return out


def _probe_entry(r: dict) -> dict:
    """One probe's summary.json entry from a metrics.parquet row (or best.json): every eval metric
    with ``<metric>_ci`` beside it, and ``ece_null`` beside the ECE (absent columns -> None)."""
    e = {"layer": int(r["layer"]), "position": r["position"], "cv_auroc": _f(r.get("cv_auroc")), "C": _f(r.get("C"))}
    for k in ("auroc", "ece", "brier", "aurc"):
        e[k] = _f(r.get(k))
        e[f"{k}_ci"] = [_f(r.get(f"{k}_lo")), _f(r.get(f"{k}_hi"))]
    e["ece_null"] = {"mean": _f(r.get("ece_null_mean")), "p95": _f(r.get("ece_null_p95"))}
    return e


def _within(scores, y, cats, seed: int = 0) -> dict:
    r = metrics.within_type_auroc(np.asarray(scores, dtype=float), y, np.asarray(cats), nan_policy="omit",
                                  n_boot=1000, seed=seed)
    return {"auroc": r["auroc"], "auroc_ci": list(r["auroc_ci"]), "n_types_used": r["n_types_used"],
            "n_items_used": r["n_items_used"]}


def _f(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(x) else x


def open_workspace(path: str | Path) -> Workspace:
    ws = Workspace(path)
    if not ws.exists:
        raise WorkspaceError(f"{ws.root} is not a metacog workspace")
    return ws
