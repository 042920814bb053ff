"""Figures of the methods comparison (pure: data in, plotly figure out; titles per
:func:`metacog.viz.plots.fig_title`): AUROC bars with CIs, reliability diagrams side by side,
risk–coverage curves.

Public entries: :func:`method_auroc_bars`, :func:`reliability_grid`, :func:`risk_coverage_curves`."""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from metacog.stats import metrics
from metacog.viz.layout import PALETTE, fig_title
from metacog.viz.layout import layout as _layout
from metacog.viz.plots import auroc_bars


def method_auroc_bars(table: pd.DataFrame, *, n: int, model: str) -> go.Figure:
    """AUROC by method on the eval split: one bar per row of the methods table with its 95% CI
    (columns method, auroc, auroc_lo, auroc_hi); ``n`` eval items and ``model`` go into the title."""
    t = table.rename(columns={"method": "name", "auroc_lo": "lo", "auroc_hi": "hi"})
    return auroc_bars(t[["name", "auroc", "lo", "hi"]], split="eval", n=n, model=model, what="AUROC by method")


def reliability_grid(frames: Mapping[str, pd.DataFrame], *, n: int, model: str, n_bins: int = 10, cols: int = 3) -> go.Figure:
    """One reliability panel per method (accuracy vs mean confidence per equal-width bin, the
    bins of :func:`metacog.stats.metrics.reliability_bins`), diagonal = perfect calibration."""
    names = list(frames)
    cols = max(1, min(cols, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    titles = []
    for nm in names:
        d = frames[nm].dropna(subset=["score"])
        e = metrics.ece(d["score"].to_numpy(float), d["correct"].to_numpy(bool), n_bins) if len(d) else float("nan")
        titles.append(f"{nm} · ECE {e:.3f}")
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.07, vertical_spacing=0.12)
    for i, nm in enumerate(names):
        r, c = i // cols + 1, i % cols + 1
        d = frames[nm].dropna(subset=["score"])
        b = metrics.reliability_bins(d["score"].to_numpy(float), d["correct"].to_numpy(bool), n_bins)
        ne = b[b["n"] > 0]
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#888", dash="dot"), showlegend=False,
                                 hoverinfo="skip"), row=r, col=c)
        fig.add_trace(go.Scatter(x=ne["mean_conf"].to_numpy(float), y=ne["accuracy"].to_numpy(float), mode="lines+markers",
                                 name=nm, showlegend=False, line=dict(color=PALETTE[i % len(PALETTE)]),
                                 marker=dict(size=6 + 12 * np.sqrt(ne["n"].to_numpy() / max(1, ne["n"].max()))),
                                 customdata=ne["n"].to_numpy(), meta={"role": "reliability", "method": nm},
                                 hovertemplate=f"{nm}<br>mean conf %{{x:.3f}}<br>accuracy %{{y:.3f}}<br>n=%{{customdata}}<extra></extra>"),
                      row=r, col=c)
        fig.update_xaxes(range=[0, 1], title_text="confidence" if r == rows else None, row=r, col=c)
        fig.update_yaxes(range=[0, 1.02], title_text="accuracy" if c == 1 else None, row=r, col=c)
    fig = _layout(fig, fig_title("Reliability by method", split="eval", n=n, model=model), height=120 + 300 * rows)
    return fig


def risk_coverage_curves(frames: Mapping[str, pd.DataFrame], *, n: int, model: str) -> go.Figure:
    """Selective prediction: risk (error rate among the answered) vs coverage, answering the
    most confident first (ties averaged, :func:`metacog.stats.metrics.risk_coverage`); AURC in the legend."""
    fig = go.Figure()
    base = None
    for i, (nm, d) in enumerate(frames.items()):
        d = d.dropna(subset=["score"])
        if not len(d):
            continue
        y = d["correct"].to_numpy(bool)
        rc = metrics.risk_coverage(d["score"].to_numpy(float), y, ties="average")
        a = metrics.aurc(d["score"].to_numpy(float), y)
        base = 1 - y.mean()
        fig.add_trace(go.Scatter(x=rc["coverage"], y=rc["risk"], mode="lines", name=f"{nm} (AURC {a:.3f})",
                                 line=dict(color=PALETTE[i % len(PALETTE)]), meta={"role": "risk_coverage", "method": nm},
                                 hovertemplate=f"{nm}<br>coverage %{{x:.2f}}<br>risk %{{y:.3f}}<extra></extra>"))
    if base is not None:
        fig.add_hline(y=base, line=dict(color="#888", dash="dot"), annotation_text=f"answer everything: risk {base:.3f}")
    fig.update_xaxes(title_text="coverage (share of items answered, most confident first)", range=[0, 1.01])
    fig.update_yaxes(title_text="risk (error rate among answered items)", range=[0, 1.02])
    return _layout(fig, fig_title("Selective prediction (risk–coverage)", split="eval", n=n, model=model), height=480)
