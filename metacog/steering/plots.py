"""Plotly figures of a steering sweep: pure functions of ``steering.json`` / ``results.parquet``.

- :func:`dose_response` — per layer (one panel each), the mean per-item shift of E[v] against α
  with 95% bootstrap CIs over items, every direction with the random control beside it;
- :func:`item_shifts` — per item, the shift at one (layer, α) of a direction against the
  random control's (the paired comparison the tests are made of), correct vs incorrect items.
"""
from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from metacog.viz.layout import fig_title
from metacog.viz.layout import layout as _layout

COLORS = {"probe": "#d62728", "mean-diff": "#1f77b4", "probe-minus-type": "#2ca02c", "random": "#7f7f7f"}


def dose_response(summary: dict, *, model: str, value: str = "ev", subset: str = "all") -> go.Figure:
    """``summary``: steering.json. ``subset``: all | correct | incorrect items."""
    cells = pd.DataFrame(summary["cells"])
    layers = sorted(cells["layer"].unique())
    ncol = min(3, len(layers))
    nrow = math.ceil(len(layers) / ncol)
    slopes = {(s["direction"], s["layer"]): s for s in summary.get("slopes", [])}
    fig = make_subplots(rows=nrow, cols=ncol, shared_yaxes=True, subplot_titles=[f"h = {h}" for h in layers],
                        horizontal_spacing=0.04, vertical_spacing=0.12)
    for i, h in enumerate(layers):
        r, c = i // ncol + 1, i % ncol + 1
        for k in [d for d in COLORS if d in set(cells["direction"])]:
            d = cells[(cells["layer"] == h) & (cells["direction"] == k)].sort_values("alpha")
            if subset == "all":
                m = d["mean"]
                lo = d["ci"].map(lambda x: x[0])
                hi = d["ci"].map(lambda x: x[1])
            else:
                m = d[subset].map(lambda x: x["mean"])
                lo = d[subset].map(lambda x: x["ci"][0])
                hi = d[subset].map(lambda x: x["ci"][1])
            lo, hi = lo.astype(float).fillna(m), hi.astype(float).fillna(m)
            s = slopes.get((k, h))
            extra = f" (slope−random {s['slope_diff']:.2f}, p_holm {s['p_holm']:.3g})" if s and s.get("p_holm") is not None else ""
            fig.add_trace(go.Scatter(x=d["alpha"], y=m, mode="lines+markers", name=k, legendgroup=k, showlegend=(i == 0),
                                     line=dict(color=COLORS[k], dash="dot" if k == "random" else "solid"),
                                     error_y=dict(type="data", symmetric=False, array=(hi - m).clip(lower=0),
                                                  arrayminus=(m - lo).clip(lower=0), thickness=1),
                                     hovertemplate=f"{k} h={h}{extra}<br>α %{{x}}: %{{y:.2f}}<extra></extra>"),
                          row=r, col=c)
        fig.update_xaxes(title_text="α (σ_d)", row=r, col=c)
    fig.update_yaxes(title_text=f"shift of {'E[v]' if value == 'ev' else value} (points)", col=1)
    n = int(summary.get("n_items") or 0)
    sub = "" if subset == "all" else f", {subset} items"
    title = fig_title(f"Steering dose-response at the {summary['spec']['where']} (mean per-item shift, 95% CI over items{sub})",
                      split=summary["spec"].get("split", "eval"), n=n, model=model)
    return _layout(fig, title, height=260 + 230 * nrow)


def item_shifts(res: pd.DataFrame, *, direction: str, layer: int, alpha: float, model: str) -> go.Figure:
    """Per item at (layer, α): shift along ``direction`` (y) vs along random (x); y = x line."""
    d = res[(res["layer"] == layer) & (res["alpha"] == alpha)]
    a = d[d["direction"] == direction].set_index("row")
    b = d[d["direction"] == "random"].set_index("row").reindex(a.index)
    fig = go.Figure()
    for ok, name, col in ((True, "correct", "#2ca02c"), (False, "incorrect", "#d62728")):
        m = a["correct"] == ok
        fig.add_trace(go.Scatter(x=b.loc[m, "d_ev"], y=a.loc[m, "d_ev"], mode="markers", name=name, marker=dict(color=col, size=7),
                                 text=a.loc[m, "id"], hovertemplate="%{text}<br>random %{x:.2f} · " + direction + " %{y:.2f}<extra></extra>"))
    lim = float(pd.concat([a["d_ev"], b["d_ev"]]).abs().max() or 1.0)
    fig.add_trace(go.Scatter(x=[-lim, lim], y=[-lim, lim], mode="lines", line=dict(color="#999", dash="dash"), name="y = x"))
    fig.update_xaxes(title_text="shift of E[v] along random (points)")
    fig.update_yaxes(title_text=f"shift of E[v] along {direction} (points)")
    title = fig_title(f"Per-item shifts at h={layer}, α={alpha:g}: {direction} vs random", split="all", n=len(a), model=model)
    return _layout(fig, title, height=460)
