"""Cached readers of a workspace's artifacts for the pages, and the backend calls that score them.

Every reader is keyed by the workspace and the modification times of the files it reads
(:func:`stamp`), so a page rerun re-reads only what changed (``st.cache_data``). Nothing here
computes a metric itself: scores come from :mod:`metacog.stages.study` (the same functions that
write summary.json) and :mod:`metacog.stats.metrics`.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from metacog.app.launch import probes_available
from metacog.core.settings import MODES
from metacog.core.workspace import Workspace, WorkspaceError
from metacog.core.files import load_array
from metacog.core.workspace import model_name  # noqa: F401  (one definition; re-exported for the pages)
from metacog.stats import metrics

#: elicitation mode -> the suffix of its columns in the results table (``verbal_two_pass``)
MODE_KEYS = {"inline": "inline", "two-pass": "two_pass"}


def mode_keys(df: pd.DataFrame) -> dict[str, str]:
    """The elicitation modes a results table holds (two-pass only where the study computed it:
    ``StudySettings.two_pass``), as ``{mode: column suffix}``."""
    return {m: k for m, k in MODE_KEYS.items() if f"verbal_{k}" in df}


def two_pass_note(df: pd.DataFrame) -> str | None:
    """The sentence pages show where the study ran without the two-pass mode, else None."""
    from metacog.core.settings import TWO_PASS_OFF

    return None if "verbal_two_pass" in df else TWO_PASS_OFF[0].upper() + TWO_PASS_OFF[1:] + "."
#: the splits a page may show (``all``: every item)
SPLITS = ("eval", "calibration", "train", "all")


# =========================================================================== artifact state
def mtime(p: Path) -> float:
    """Modification time of ``p`` in seconds since the epoch; 0.0 when it does not exist."""
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def stamp(ws: Workspace, *names: str) -> tuple:
    """The modification times of ``names`` (paths relative to the workspace): a cache key that
    changes when any of them is rewritten."""
    return tuple(mtime(ws.path(n)) for n in names)


def has(ws: Workspace, stage: str) -> bool:
    """Whether the artifacts of ``stage`` (``workspace``, ``answers``, ``activations``, ``probes``) exist.

    Raises:
        ValueError: an unknown stage.
    """
    if stage == "workspace":
        return ws.exists
    if stage == "answers":
        return ws.path("answers.parquet").exists() and ws.path("items.parquet").exists()
    if stage == "activations":
        return bool((ws.read_json("activations/manifest.json") or {}).get("complete")) and ws.path("readout.parquet").exists()
    if stage == "probes":
        return ws.path("probes", "metrics.parquet").exists() and ws.path("probes", "oof.npy").exists()
    raise ValueError(stage)


def artifact_status(ws: Workspace) -> pd.DataFrame:
    """One row per stage: stage, status (done / partial / not run), details, finished, seconds."""
    rows = []

    def rec(stage):
        return ws.stage_record(stage) or {}

    r = rec("items")
    if ws.path("items.parquet").exists():
        sp = r.get("splits") or {}
        det = f"{r.get('n', '?')} items; " + ", ".join(f"{k} {v}" for k, v in sp.items() if k != "disjoint")
        rows.append(("items", "done", det, r.get("finished", ""), r.get("seconds")))
    else:
        rows.append(("items", "not run", "dataset items with their split", "", None))
    r = rec("answers")
    if ws.path("answers.parquet").exists():
        two = "verbal_two_pass" in _parquet_columns(ws.path("answers.parquet"))
        rows.append(("answers", "done", f"{r.get('n', '?')} items answered and graded; verbal confidence "
                     + ("inline + two-pass" if two else "inline (two-pass not computed: --two-pass)"),
                     r.get("finished", ""), r.get("seconds")))
    else:
        parts = list(ws.path("answers_parts").glob("*/part-*.parquet")) if ws.path("answers_parts").exists() else []
        rows.append(("answers", "partial" if parts else "not run",
                     f"{len(parts)} chunk(s) saved; a run resumes from them" if parts else "answer, grade, verbal confidence", "", None))
    man = ws.read_json("activations/manifest.json") or {}
    r = rec("activations")
    if man.get("complete"):
        rows.append(("activations", "done", f"{man.get('n_items')} items × {man.get('n_layers')} hidden states × d={man.get('d_model')}, "
                     f"positions {', '.join(man.get('positions', []))}; exact 0–100 readout", r.get("finished", ""), r.get("seconds")))
    elif man:
        done = ws.path("activations", "done.npy")
        k = int(load_array(done).sum()) if done.exists() else 0
        rows.append(("activations", "partial", f"{k}/{man.get('n_items')} items cached; a run resumes", "", None))
    else:
        rows.append(("activations", "not run", "hidden states at the named positions + 0–100 readout", "", None))
    r = rec("probes")
    if ws.path("probes", "metrics.parquet").exists():
        best = ws.read_json("probes/best.json") or {}
        det = f"best: layer {best.get('layer')} @ {best.get('position')}" if best else "fitted"
        rows.append(("probes", "done", det, r.get("finished", ""), r.get("seconds")))
    else:
        rows.append(("probes", "not run", "per-layer × position probes" + ("" if probes_available() else " (this build has no probes module yet)"), "", None))
    if ws.path("summary.json").exists():
        rows.append(("summary", "done", "summary.json", time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(mtime(ws.path("summary.json")))), None))
    else:
        rows.append(("summary", "not run", "written at the end of a study run", "", None))
    out = pd.DataFrame(rows, columns=["stage", "status", "details", "finished", "seconds"])
    out["seconds"] = [("" if v is None or v != v else f"{float(v):g}") for v in out["seconds"]]
    out["finished"] = out["finished"].fillna("").astype(str).str.replace("T", " ")
    return out


# =========================================================================== cached readers
@st.cache_data(show_spinner=False, max_entries=8)
def _results(root: str, stamp: tuple) -> pd.DataFrame:
    from metacog.stages.study import results_table

    return results_table(Workspace(root))


def results(ws: Workspace) -> pd.DataFrame:
    """items + answers + readout (+ best-probe p) in one per-item table
    (:func:`metacog.stages.study.results_table`), cached until the files change."""
    return _results(str(ws.root), stamp(ws, "items.parquet", "answers.parquet", "readout.parquet", "probes/oof.npy", "probes/best.json"))


@st.cache_data(show_spinner=False, max_entries=8)
def _summary(root: str, stamp: tuple) -> dict:
    from metacog.stages.study import summarize

    return summarize(Workspace(root))


def summary(ws: Workspace) -> dict | None:
    """summary.json when it is at least as new as its inputs; otherwise summarised from the
    artifacts present (cached), so a half-done workspace still shows its metrics; None without answers."""
    inputs = stamp(ws, "answers.parquet", "readout.parquet", "probes/metrics.parquet")
    s = ws.read_json("summary.json")
    if s is not None and mtime(ws.path("summary.json")) >= max(inputs):
        return s
    if not has(ws, "answers"):
        return None
    try:
        return _summary(str(ws.root), inputs)
    except Exception:
        return s


@st.cache_data(show_spinner=False, max_entries=8)
def _probe_metrics(root: str, stamp: tuple) -> pd.DataFrame:
    return Workspace(root).read_parquet("probes/metrics.parquet")


def probe_metrics(ws: Workspace) -> pd.DataFrame | None:
    """``probes/metrics.parquet`` (one row per layer × position: eval metrics with CIs, cv_auroc, C), or None."""
    if not ws.path("probes", "metrics.parquet").exists():
        return None
    return _probe_metrics(str(ws.root), stamp(ws, "probes/metrics.parquet"))


def oof(ws: Workspace) -> np.ndarray | None:
    """``probes/oof.npy`` [n_items, n_layers, n_positions] probe p(correct) (memory-mapped), or None."""
    p = ws.path("probes", "oof.npy")
    return load_array(p, mmap=True) if p.exists() else None


def probe_positions(ws: Workspace, oof_arr: np.ndarray | None = None) -> list[str]:
    """Position order of the last axis of oof.npy (:func:`metacog.stages.study.probe_positions`:
    the positions the probe stage recorded), checked against the array's shape.

    Raises:
        WorkspaceError: ``oof_arr`` has another number of positions (probes of an older build).
    """
    from metacog.stages.study import probe_positions as positions

    return positions(ws, oof_arr)


def _parquet_columns(path) -> list[str]:
    try:
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    except Exception:  # noqa: BLE001 - a status line must not fail on a damaged file
        return []


def item_distributions(ws: Workspace, row: int) -> dict[str, np.ndarray] | None:
    """The exact 0-100 distributions of one item per mode (each [101] probabilities), or None
    if not cached for it."""
    from metacog.stages.activations import cached_modes, load_distributions

    man = ws.read_json("activations/manifest.json") or {}
    if not man:
        return None
    done = ws.path("activations", "done.npy")
    if not done.exists() or not bool(load_array(done)[row]):
        return None
    try:
        modes = cached_modes(ws)
        return {m: np.asarray(load_distributions(ws, m)[row], dtype=float) for m in MODES if m in modes}
    except (OSError, KeyError, IndexError, ValueError):
        return None


def split_frame(df: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of ``df`` in ``split`` (``"all"``: every row)."""
    return df if split == "all" else df[df["split"] == split]


# =========================================================================== scores (backend calls)
def readouts(df: pd.DataFrame, best: dict | None = None) -> dict[str, tuple[str, np.ndarray]]:
    """Named 0-100 confidence readouts present in a results table: name -> (mode, [n_rows] values
    in points; the best probe's p as 100·p)."""
    out = {}
    for mode, k in mode_keys(df).items():
        out[f"verbal {mode}"] = (mode, df[f"verbal_{k}"].to_numpy(dtype=float))
        if f"ev_{k}" in df:
            out[f"E[v] {mode}"] = (mode, df[f"ev_{k}"].to_numpy(dtype=float))
            out[f"argmax {mode}"] = (mode, df[f"argmax_{k}"].to_numpy(dtype=float))
    if "probe_p" in df and best:
        out[f"probe L{best.get('layer')} @ {best.get('position')}"] = ("probe", 100.0 * df["probe_p"].to_numpy(dtype=float))
    return out


def readout_metrics(df: pd.DataFrame, n_bins: int = 10, seed: int = 0, best: dict | None = None) -> pd.DataFrame:
    """One row per readout on the rows of ``df``, scored by :func:`metacog.stages.study.score_readout`
    (the function behind summary.json, so on the eval split these are its numbers): n, n_missing,
    AUROC + 95% bootstrap CI, ECE, Brier, AURC on confidence/100 (unparsed dropped) and the
    validity screen (L, TRIN, r, verdict, reasons) on the 0-100 values."""
    from metacog.stages.study import score_readout

    y = df["correct"].to_numpy().astype(bool)
    rows = []
    for name, (mode, v) in readouts(df, best).items():
        s = score_readout(v, y, n_bins, seed)
        vs = s["validity"]
        rows.append(dict(readout=name, mode=mode, n=s["n"], n_missing=s["n_missing"], auroc=s["auroc"],
                         auroc_lo=s["auroc_ci"][0], auroc_hi=s["auroc_ci"][1], ece=s["ece"], brier=s["brier"],
                         aurc=s["aurc"], L=vs["L"], TRIN=vs["trin"], r=vs["r"], verdict=vs["verdict"],
                         reasons="; ".join(vs["reasons"])))
    return pd.DataFrame(rows)


def type_prior_auroc(df: pd.DataFrame, split: str) -> float | None:
    """The question-type baseline's AUROC on ``split`` (:func:`metacog.stages.study.type_prior_block`:
    category accuracy on the train split); None for train/all (in-sample), without categories,
    or with no items on either side."""
    from metacog.stages.study import type_prior_block

    if split in ("train", "all") or not df["category"].astype(str).str.len().gt(0).any():
        return None  # in-sample on train items
    if not len(split_frame(df, split)) or not (df["split"] == "train").any():
        return None
    a = type_prior_block(df, split)["auroc"]
    return None if np.isnan(a) else float(a)


def reliability(conf01, correct, n_bins: int = 10) -> tuple[pd.DataFrame, float, int]:
    """``(bins, ECE, n used)`` of a [0, 1] confidence (NaN entries dropped):
    :func:`metacog.stats.metrics.reliability` (bins per ``metrics.ECE_BINS_DOC``)."""
    return metrics.reliability(conf01, correct, n_bins)
