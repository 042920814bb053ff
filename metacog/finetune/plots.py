"""Plotly figure builders for fine-tuning runs: pure functions (data in, ``go.Figure`` out).

Same conventions as :mod:`metacog.viz.plots` (titles ``"<what>, <split> split, n=<n>, <model>"``,
labelled axes, numbers carried in the traces with a ``meta`` role so tests can read them):

- :func:`loss_curve` -- training loss per optimizer update (+ validation loss), one run or several;
- :func:`reliability_overlay` -- reliability diagrams before/after on one set of axes;
- :func:`histograms_before_after` -- 0-100 confidence histograms, base vs fine-tuned, stacked by correctness;
- :func:`retrained_probes_by_layer` -- probe AUROC by layer on base vs fine-tuned hidden states;
- :func:`shift_scatter` -- per-item confidence before vs after;
- :func:`run_auroc_bars` -- AUROC with CIs of the base model and each run (uses :func:`metacog.viz.plots.auroc_bars`).

Public entries: one figure builder per panel of the Fine-tune page (:func:`loss_curve`, ...).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from metacog.viz.layout import CORRECT_COLOR, PALETTE, WRONG_COLOR, fig_title
from metacog.viz.layout import layout as _layout
from metacog.viz.plots import auroc_bars, histogram_counts

BASE_COLOR = "#7f7f7f"


def loss_curve(logs: Mapping[str, pd.DataFrame], *, title: str = "Training loss", updates_per_epoch: int | None = None) -> go.Figure:
    """``logs``: run label -> log table (columns ``kind, update, loss, val_loss, epoch``)."""
    fig = go.Figure()
    for i, (name, log) in enumerate(logs.items()):
        color = PALETTE[i % len(PALETTE)]
        if log is None or log.empty:
            continue
        tr = log[log["kind"] == "train"] if "kind" in log else log
        if len(tr):
            fig.add_trace(go.Scatter(
                x=tr["update"].astype(int), y=tr["loss"].astype(float), mode="lines+markers" if len(tr) < 60 else "lines",
                name=f"{name}: train" if len(logs) > 1 else "train loss", line=dict(color=color, width=2), marker=dict(size=4),
                customdata=tr["epoch"].astype(float) if "epoch" in tr else None, meta={"role": "train", "run": name},
                hovertemplate="update %{x}<br>epoch %{customdata:.2f}<br>loss %{y:.4f}<extra></extra>"))
        va = log[log["kind"] == "val"] if "kind" in log else pd.DataFrame()
        if len(va):
            fig.add_trace(go.Scatter(
                x=va["update"].astype(int), y=va["val_loss"].astype(float), mode="lines+markers",
                name=f"{name}: validation" if len(logs) > 1 else "validation loss",
                line=dict(color=color, width=2, dash="dash"), marker=dict(size=8, symbol="diamond"),
                meta={"role": "val", "run": name}, hovertemplate="update %{x}<br>validation loss %{y:.4f}<extra></extra>"))
    if updates_per_epoch:
        xmax = max([int(l["update"].max()) for l in logs.values() if l is not None and len(l)] + [1])
        for e in range(updates_per_epoch, xmax + 1, updates_per_epoch):
            fig.add_vline(x=e, line=dict(color="#ccc", width=1, dash="dot"))
    fig.update_xaxes(title_text="optimizer update" + (f" (dotted: epoch ends, {updates_per_epoch} updates/epoch)" if updates_per_epoch else ""))
    fig.update_yaxes(title_text="cross-entropy per loss token")
    return _layout(fig, title, height=380)


def reliability_overlay(bins: Mapping[str, pd.DataFrame], *, split: str, n: int, model: str, label: str = "",
                        eces: Mapping[str, float] | None = None) -> go.Figure:
    """``bins``: curve label (e.g. "base", "fine-tuned") -> :func:`metacog.stats.metrics.reliability_bins`
    table; accuracy vs mean confidence per non-empty bin, marker size ~ items; diagonal = calibrated."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.06)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#888", dash="dot"), name="perfect calibration",
                             hoverinfo="skip"), row=1, col=1)
    k = len(bins)
    for i, (name, b) in enumerate(bins.items()):
        b = pd.DataFrame(b)
        if b.empty:
            continue
        color = BASE_COLOR if name == "base" else PALETTE[i % len(PALETTE)]
        ne = b[b["n"] > 0]
        e = (eces or {}).get(name)
        lab = name + (f" (ECE {e:.3f})" if e is not None and np.isfinite(e) else "")
        fig.add_trace(go.Scatter(
            x=ne["mean_conf"].astype(float), y=ne["accuracy"].astype(float), mode="lines+markers", name=lab,
            line=dict(color=color, width=2, dash="dash" if name == "base" else "solid"),
            marker=dict(size=7 + 14 * np.sqrt(ne["n"].to_numpy() / max(1, ne["n"].max()))), customdata=ne["n"].to_numpy(),
            meta={"role": "reliability", "curve": name},
            hovertemplate=f"{name}<br>mean conf %{{x:.3f}}<br>accuracy %{{y:.3f}}<br>n=%{{customdata}}<extra></extra>"), row=1, col=1)
        centers = ((b["lo"] + b["hi"]) / 2).to_numpy(dtype=float)
        w = (b["hi"] - b["lo"]).to_numpy(dtype=float)
        fig.add_trace(go.Bar(x=centers + (i - (k - 1) / 2) * w / max(k, 1) * 0.9, y=b["n"].astype(int), width=w / max(k, 1) * 0.85,
                             marker_color=color, name=f"{name}: items", showlegend=False, meta={"role": "counts", "curve": name},
                             hovertemplate=f"{name}: %{{y}} items<extra></extra>"), row=2, col=1)
    fig.update_xaxes(range=[0, 1], row=1, col=1)
    fig.update_xaxes(range=[0, 1], title_text="confidence / 100", row=2, col=1)
    fig.update_yaxes(range=[0, 1.02], title_text="accuracy", row=1, col=1)
    fig.update_yaxes(title_text="items", row=2, col=1)
    what = "Reliability before/after" + (f" ({label})" if label else "")
    return _layout(fig, fig_title(what, split=split, n=n, model=model), height=520)


def histograms_before_after(values: Mapping[str, np.ndarray], correct: Mapping[str, np.ndarray], *, split: str, model: str,
                            label: str = "verbal confidence", bin_width: int = 5) -> go.Figure:
    """One panel per model (``values[name]`` 0-100, NaN = unparsed), bars stacked by that
    model's own correctness (``correct[name]``)."""
    names = list(values)
    n = len(np.asarray(next(iter(values.values()))).ravel()) if names else 0
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, shared_yaxes=True, horizontal_spacing=0.05)
    for ci, name in enumerate(names, start=1):
        v = np.asarray(values[name], dtype=float).ravel()
        y = np.asarray(correct[name]).astype(bool).ravel()
        edges, _, miss = histogram_counts(v, bin_width)
        centers = (edges[:-1] + edges[1:]) / 2
        for ok, nm, color in ((True, "correct", CORRECT_COLOR), (False, "incorrect", WRONG_COLOR)):
            _, cnt, _ = histogram_counts(v[y == ok], bin_width)
            fig.add_trace(go.Bar(x=centers, y=cnt, width=bin_width * 0.92, name=nm, marker_color=color, legendgroup=nm,
                                 showlegend=ci == 1, meta={"panel": name, "label": nm},
                                 hovertemplate="%{x}: %{y} " + nm + "<extra></extra>"), row=1, col=ci)
        used = v[~np.isnan(v)]
        note = (f"≥95: {np.mean(used >= 95):.0%}" if used.size else "no values") + (f" · unparsed: {miss}" if miss else "")
        fig.add_annotation(text=note, showarrow=False, xref="x domain" if ci == 1 else f"x{ci} domain",
                           yref="y domain" if ci == 1 else f"y{ci} domain", x=0.02, y=0.98, xanchor="left", yanchor="top",
                           font=dict(size=11), bgcolor="rgba(255,255,255,0.7)")
        fig.update_xaxes(title_text=f"{label} (0–100)", range=[0, 100], dtick=10, row=1, col=ci)
    fig.update_yaxes(title_text="items", row=1, col=1)
    fig.update_layout(barmode="stack", bargap=0.05)
    return _layout(fig, fig_title(f"{label[:1].upper() + label[1:]} before/after", split=split, n=n, model=model), height=380)


def retrained_probes_by_layer(df: pd.DataFrame, *, position: str, n: int, model: str,
                              references: Mapping[str, float] | None = None) -> go.Figure:
    """AUROC by layer of probes cross-fitted on the eval items' states: base vs fine-tuned."""
    d = df[df["position"] == position].sort_values("layer")
    fig = go.Figure()
    for col, name, color, dash in (("auroc_base", "base model states", BASE_COLOR, "dash"),
                                   ("auroc_ft", "fine-tuned model states", PALETTE[0], "solid")):
        fig.add_trace(go.Scatter(x=d["layer"].astype(int), y=d[col].astype(float), mode="lines+markers", name=name,
                                 line=dict(color=color, dash=dash, width=2), meta={"role": col},
                                 hovertemplate=f"{name}<br>layer %{{x}}<br>AUROC %{{y:.3f}}<extra></extra>"))
    if len(d):
        x0, x1 = int(d["layer"].min()), int(d["layer"].max())
        fig.add_trace(go.Scatter(x=[x0, x1], y=[0.5, 0.5], mode="lines", name="chance", line=dict(color="#aaa", dash="dot"),
                                 hoverinfo="skip", meta={"role": "reference"}))
        for i, (nm, v) in enumerate((references or {}).items()):
            if v is not None and np.isfinite(v):
                fig.add_trace(go.Scatter(x=[x0, x1], y=[v, v], mode="lines", name=f"{nm} ({v:.3f})",
                                         line=dict(color=PALETTE[(i + 2) % len(PALETTE)], dash="dashdot"), meta={"role": "reference"}))
    fig.update_xaxes(title_text="layer (hidden state h)")
    fig.update_yaxes(title_text="cross-fitted probe AUROC", range=[0, 1.02])
    return _layout(fig, fig_title(f"Re-trained probes by layer at {position}", split="eval", n=n, model=model), height=420)


def shift_scatter(before, after, correct_after, *, split: str, model: str, label: str = "verbal confidence",
                  ids=None) -> go.Figure:
    """Per item: confidence before (x) vs after (y), coloured by the fine-tuned answer's correctness."""
    b = np.asarray(before, dtype=float)
    a = np.asarray(after, dtype=float)
    y = np.asarray(correct_after).astype(bool)
    idv = np.asarray(ids, dtype=object) if ids is not None else np.array([f"item {i}" for i in range(len(b))], dtype=object)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 100], y=[0, 100], mode="lines", line=dict(color="#aaa", dash="dot"), name="unchanged",
                             hoverinfo="skip"))
    for ok, nm, color in ((True, "correct after", CORRECT_COLOR), (False, "incorrect after", WRONG_COLOR)):
        m = (y == ok) & ~np.isnan(a) & ~np.isnan(b)
        # identical (before, after) pairs are one marker sized by their count (saturated confidences tie a lot)
        g = pd.DataFrame({"b": b[m], "a": a[m], "id": idv[m]}).groupby(["b", "a"], sort=False)["id"]
        agg = g.agg(["count", lambda s: ", ".join(map(str, list(s)[:6])) + (" …" if len(s) > 6 else "")]).reset_index()
        agg.columns = ["b", "a", "count", "ids"]
        fig.add_trace(go.Scatter(x=agg["b"], y=agg["a"], mode="markers", name=nm,
                                 marker=dict(color=color, size=6 + 5 * np.sqrt(agg["count"] - 1), opacity=0.7,
                                             line=dict(color="white", width=1)),
                                 customdata=np.stack([agg["count"], agg["ids"]], axis=1), meta={"role": "items", "label": nm},
                                 hovertemplate="%{customdata[0]} item(s): %{customdata[1]}<br>before %{x:.0f} → after %{y:.0f}"
                                               "<extra></extra>"))
    fig.update_xaxes(title_text=f"{label}, base model", range=[-2, 102])
    fig.update_yaxes(title_text=f"{label}, fine-tuned", range=[-2, 102])
    return _layout(fig, fig_title(f"Per-item {label}: before vs after", split=split, n=len(b), model=model), height=460)


def run_auroc_bars(rows: list[dict], *, n: int, model: str, references: Mapping[str, float] | None = None,
                   what: str = "Verbal AUROC, base vs fine-tuned runs") -> go.Figure:
    """``rows``: ``name, auroc, lo, hi`` per bar (the base model first)."""
    return auroc_bars(pd.DataFrame(rows, columns=["name", "auroc", "lo", "hi"]), split="eval", n=n, model=model,
                      references=references, what=what)
