"""The Patching page's reader: a saved sweep's tables, cached, and its statistics as the
page shows them — every number from :mod:`metacog.patching.stats` (the functions behind
``patching.json``: same resamples, same seed), only regrouped into display tables here.

A sweep is keyed by the workspace, its id and :func:`sweep_stamp` (names and modification times
of its result files), so a finished or resumed sweep is re-read on the next rerun.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from metacog import patching as P
from metacog.app.panels import job_outcome, job_progress
from metacog.core.jobs import Job
from metacog.core.workspace import Workspace
from metacog.patching import stats as PS
from metacog.patching.plots import group_label

#: the multiple-comparison correction of the per-layer p values (``p_holm``)
CORRECTION = PS.TESTS_DOC["correction"]
#: bootstrap resamples of the page's CIs (the same as patching.json's)
N_BOOT = PS.N_BOOT


# =========================================================================== sweep files
def sweep_stamp(ws: Workspace, sid: str) -> tuple:
    """``((file name, mtime), …)`` of a sweep's results, pairs and parts: a cache key that changes
    when the sweep writes."""
    d = P.grid_dir(ws, sid)
    files = [d / "results.parquet", d / "pairs.parquet"] + (sorted((d / "parts").glob("*.parquet")) if (d / "parts").exists() else [])
    return tuple((f.name, f.stat().st_mtime) for f in files if f.exists())


@st.cache_data(show_spinner=False, max_entries=16)
def _results(root: str, sid: str, stamp: tuple) -> pd.DataFrame:
    return P.load_results(Workspace(root), sid)


@st.cache_data(show_spinner=False, max_entries=16)
def _pairs(root: str, sid: str, stamp: tuple) -> pd.DataFrame:
    return P.load_pairs(Workspace(root), sid)


def sweep_results(ws: Workspace, sid: str) -> pd.DataFrame:
    """The sweep's tidy results (one row per pair × component × layer × position; :func:`metacog.patching.load_results`)."""
    return _results(str(ws.root), sid, sweep_stamp(ws, sid))


def sweep_pairs(ws: Workspace, sid: str) -> pd.DataFrame:
    """The sweep's pairs with their unpatched 0-100 distributions (:func:`metacog.patching.load_pairs`)."""
    return _pairs(str(ws.root), sid, sweep_stamp(ws, sid))


def runs_with_adapters(ws: Workspace) -> list[str]:
    """Fine-tuning runs of ``ws`` with a finished adapter (``runs/<id>/adapter/adapter_config.json``), newest first."""
    d = ws.path("runs")
    if not d.exists():
        return []
    return sorted((p.name for p in d.iterdir() if (p / "adapter" / "adapter_config.json").exists()), reverse=True)


def token_label(t: str) -> str:
    """A BPE token made readable: ␣ for a leading space, ⏎ newline, ⇥ tab, ∅ for an empty token."""
    return t.replace("Ġ", "␣").replace("Ċ", "⏎").replace("ĉ", "⇥") or "∅"


# =========================================================================== statistics (patching.stats)
@st.cache_data(show_spinner=False, max_entries=32)
def _layer_stats(root: str, sid: str, stamp: tuple, value: str, seed: int) -> pd.DataFrame:
    return PS.layer_stats(_results(root, sid, stamp), value, n_boot=N_BOOT, seed=seed)


@st.cache_data(show_spinner=False, max_entries=32)
def _gradients(root: str, sid: str, stamp: tuple, value: str, component: str, seed: int) -> dict:
    res = _results(root, sid, stamp)
    return {g: PS.gradient(res, component, g, value, n_boot=N_BOOT, seed=seed) for g in PS.groups_of(res[res["component"] == component])}


@st.cache_data(show_spinner=False, max_entries=32)
def _contrasts(root: str, sid: str, stamp: tuple, value: str, component: str, seed: int) -> dict:
    res = _results(root, sid, stamp)
    gs = PS.groups_of(res[res["component"] == component])
    if "random" not in gs:
        return {}
    return {g: PS.contrast(res, component, g, "random", value, n_boot=N_BOOT, seed=seed) for g in gs if g != "random"}


def layer_stats(ws: Workspace, sid: str, value: str, seed: int) -> pd.DataFrame:
    """Per (component, group, layer) statistics of ``value`` (``normalised`` or ``shift``):
    :func:`metacog.patching.stats.layer_stats` (mean, CI, sign test, sign-flip p, Holm p)."""
    return _layer_stats(str(ws.root), sid, sweep_stamp(ws, sid), value, seed)


def gradients(ws: Workspace, sid: str, value: str, component: str, seed: int) -> dict:
    """Position group -> the across-pairs layer gradient of one component
    (:func:`metacog.patching.stats.gradient`: mean per-pair Spearman ρ, sign-flip p, bootstrap CI)."""
    return _gradients(str(ws.root), sid, sweep_stamp(ws, sid), value, component, seed)


def contrasts(ws: Workspace, sid: str, value: str, component: str, seed: int) -> dict:
    """Position group -> its within-pair contrast with the random positions
    (:func:`metacog.patching.stats.contrast`); empty without random positions."""
    return _contrasts(str(ws.root), sid, sweep_stamp(ws, sid), value, component, seed)


def groups_of(res: pd.DataFrame) -> list[str]:
    """The position groups of a results table, named positions first (:func:`metacog.patching.stats.groups_of`)."""
    return PS.groups_of(res)


def overview(res: pd.DataFrame) -> dict:
    """Counts of a sweep's results: ``n_pairs``, ``n_small`` (pairs below the denominator
    threshold), ``answer_unchanged`` (share of cells whose greedy answer did not change),
    ``n_random_draws`` and ``random_classes`` (token class -> draws of the random positions)."""
    rnd = res[res["position_kind"] == "random"].drop_duplicates(["pair", "position"])
    cls = rnd["position_class"].value_counts() if "position_class" in rnd else pd.Series(dtype=int)
    return {"n_pairs": int(res["pair"].nunique()), "n_small": int(res[res["small_denominator"]]["pair"].nunique()),
            "answer_unchanged": float(res["answer_unchanged"].mean()), "n_random_draws": int(len(rnd)),
            "random_classes": {str(k): int(v) for k, v in cls.items()}}


def tests_table(grads: dict, contr: dict) -> pd.DataFrame:
    """The across-pairs tests as one table (unit: pair): a row per layer gradient (mean per-pair ρ
    with CI, p, n_pairs and the descriptive ρ of the layer means) and two per contrast with the
    random positions (mean shift difference and ρ difference)."""
    rows = []
    for g, gr in grads.items():
        rows.append({"test": f"layer gradient @ {group_label(g)}", "statistic": "mean per-pair ρ", "value": gr["rho"],
                     "CI lo": gr["ci"][0], "CI hi": gr["ci"][1], "p": gr["p"], "n_pairs": gr["n_pairs"], "unit": gr["unit"],
                     "descriptive ρ of layer means": gr["rho_of_means"]})
    for g, cn in contr.items():
        for what, lab in (("effect", "mean shift difference"), ("gradient", "ρ difference")):
            e = cn[what]
            rows.append({"test": f"{group_label(g)} − random positions", "statistic": f"per-pair {lab}", "value": e["diff"],
                         "CI lo": e["ci"][0], "CI hi": e["ci"][1], "p": e["p"], "n_pairs": e["n"], "unit": cn["unit"],
                         "descriptive ρ of layer means": None})
    return pd.DataFrame(rows)


def pair_table(res: pd.DataFrame, component: str, value: str) -> pd.DataFrame:
    """One row per pair: source, target, their ids, correctness and E[v], the denominator, and the
    mean ``value`` over the layers (and random draws) of each position group of ``component``."""
    sub = res[res["component"] == component]
    agg = sub.assign(group=PS.position_group(sub))
    wide = agg.groupby(["pair", "group"])[value].mean().unstack("group")
    wide.columns = [f"mean {value} @ {g}" for g in wide.columns]
    return res.drop_duplicates("pair").set_index("pair")[
        ["source", "target", "source_id", "target_id", "source_correct", "target_correct", "ev_source", "ev_target", "denom",
         "small_denominator"]].join(wide).reset_index()


# =========================================================================== the running sweep
def sweep_job_panel(ws: Workspace) -> Job | None:
    """Progress + Stop of the patching sweep running on ``ws``, or how it ended; the job, or None."""
    job = P.get_grid_job(ws)
    if job is None:
        return None
    if job.running:
        job_progress(P.GRID_JOBS, job, "patching", "stop after the current (pair, position); finished rows are kept")
        st.caption("Finished (pair, position) units are saved as they complete; the results below update when the sweep "
                   "ends or stops.")
    else:
        sid = getattr(job, "grid_id", None) or getattr(job, "spec", {}).get("grid_id", "")
        job_outcome(job, f"Sweep {sid} finished in {int(job.elapsed)} s.", f"Sweep {sid}",
                    "its finished rows are shown; running the same sweep again resumes it.")
    return job
