"""Plotly figures of a patching grid: pure functions of its tables (data in, ``go.Figure`` out).

- :func:`shift_heatmap` -- mean shift per layer × position group (one component);
- :func:`gradient_lines` -- the layer gradient: mean normalised shift by layer with bootstrap
  CI bands, confidence slot vs random positions (and any other group); the across-pairs
  gradient (mean per-pair ρ [CI over pairs], p, number of pairs) in the legend;
- :func:`cell_distribution` -- one cell's exact 0-100 distribution: target before, patched
  after, and the source, with their expected values;
- :func:`pair_shifts` -- per pair, the shift by layer at one position group (spaghetti).

Titles follow :func:`metacog.viz.plots.fig_title` (what, split, n, model); numbers are in the traces.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from metacog.viz.layout import PALETTE, fig_title
from metacog.viz.layout import layout as _layout
from metacog.viz.layout import rgba as _rgba

GROUP_COLORS = {"confidence": "#d62728", "random": "#7f7f7f", "last_prompt": "#1f77b4", "last_answer": "#2ca02c"}
VALUE_LABEL = {"normalised": "normalised shift (patched − target)/(source − target)", "shift": "shift of E[v] (patched − target, points)"}


def _color(group: str, i: int) -> str:
    return GROUP_COLORS.get(group, PALETTE[(i + 3) % len(PALETTE)])


def group_label(group: str) -> str:
    """A position group's display name (``confidence`` → ``confidence slot``, ``random`` →
    ``random positions (mean of K)``, the last prompt/answer token); other groups (``tokenI``) as they are."""
    return {"confidence": "confidence slot", "random": "random positions (mean of K)", "last_prompt": "last prompt token",
            "last_answer": "last answer token"}.get(group, group)


def shift_heatmap(stats: pd.DataFrame, *, component: str, model: str, n_pairs: int, value: str = "normalised",
                  what: str = "Patching shift by layer and position", split: str = "all") -> go.Figure:
    """``stats``: :func:`metacog.patching.stats.layer_stats` rows (component, group, layer, mean, n, ci_lo, ci_hi)."""
    d = stats[(stats["component"] == component) & (stats["value"] == value)]
    groups = list(dict.fromkeys(d.sort_values("group", key=lambda s: s.map(lambda g: (list(GROUP_COLORS).index(g)
                                                                                     if g in GROUP_COLORS else 9, g)))["group"]))
    layers = sorted(d["layer"].unique())
    z = np.full((len(groups), len(layers)), np.nan)
    text = np.empty((len(groups), len(layers)), dtype=object)
    for r in d.itertuples():
        i, j = groups.index(r.group), layers.index(r.layer)
        z[i, j] = r.mean
        text[i, j] = f"mean {r.mean:.3f} [{r.ci_lo:.3f}, {r.ci_hi:.3f}] · n={r.n}"
    vmax = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=[int(x) for x in layers], y=[group_label(g) for g in groups], colorscale="RdBu", zmid=0,
        zmin=-vmax, zmax=vmax, text=text, hovertemplate="layer %{x} · %{y}<br>%{text}<extra></extra>",
        colorbar=dict(title=dict(text="mean", side="right")), meta={"groups": groups, "component": component, "value": value},
    ))
    fig.update_xaxes(title_text=f"layer (hidden-state index; {component})", dtick=max(1, len(layers) // 15))
    fig.update_yaxes(title_text=None, autorange="reversed")
    title = fig_title(f"{what} ({VALUE_LABEL[value].split(' (')[0]}, {component})", split=split, n=n_pairs, model=model)
    return _layout(fig, title, height=200 + 46 * max(len(groups), 2))


def gradient_lines(stats: pd.DataFrame, gradients: Mapping[str, Mapping], *, component: str, model: str, n_pairs: int,
                   value: str = "normalised", groups: Sequence[str] | None = None, split: str = "all",
                   what: str = "Layer gradient of the patching effect") -> go.Figure:
    """Mean ``value`` by layer per group with its bootstrap CI band; ``gradients[group]`` is a
    :func:`metacog.patching.stats.gradient` dict (the across-pairs test of
    :func:`metacog.stats.layer_gradient`) whose mean per-pair ρ, CI over pairs, p and number
    of pairs go into the legend."""
    d = stats[(stats["component"] == component) & (stats["value"] == value)]
    gs = list(groups) if groups is not None else list(dict.fromkeys(d["group"]))
    fig = go.Figure()
    for i, g in enumerate(gs):
        s = d[d["group"] == g].sort_values("layer")
        if s.empty:
            continue
        color = _color(g, i)
        x = s["layer"].astype(int).to_numpy()
        lo, hi = s["ci_lo"].astype(float).to_numpy(), s["ci_hi"].astype(float).to_numpy()
        ok = ~(np.isnan(lo) | np.isnan(hi))
        if ok.any():
            fig.add_trace(go.Scatter(x=np.r_[x[ok], x[ok][::-1]], y=np.r_[hi[ok], lo[ok][::-1]], fill="toself",
                                     fillcolor=_rgba(color, 0.15), line=dict(width=0), hoverinfo="skip", showlegend=False,
                                     legendgroup=g, meta={"role": "ci", "group": g}))
        gr = gradients.get(g) or {}
        rho, ci, p = gr.get("rho"), gr.get("ci") or [None, None], gr.get("p")
        lab = group_label(g)
        if rho is not None:
            lab += (f": mean per-pair ρ = {rho:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci[0] is not None else "")
                    + (f", p = {p:.3g}" if p is not None else "") + f", {gr.get('n_pairs', 0)} pairs")
        fig.add_trace(go.Scatter(x=x, y=s["mean"].astype(float).to_numpy(), mode="lines+markers", name=lab,
                                 line=dict(color=color, width=2.5 if g == "confidence" else 1.8), legendgroup=g,
                                 customdata=np.stack([s["n"].to_numpy(), lo, hi, s["median"].to_numpy(), s["share_pos"].to_numpy()], 1),
                                 hovertemplate="layer %{x}: mean %{y:.3f} [%{customdata[1]:.3f}, %{customdata[2]:.3f}]<br>"
                                               "median %{customdata[3]:.3f} · share > 0 %{customdata[4]:.2f} · n=%{customdata[0]}<extra></extra>",
                                 meta={"role": "mean", "group": g, "rho": rho, "ci": list(ci), "p": p,
                                       "n_pairs": gr.get("n_pairs")}))
    fig.add_hline(y=0, line=dict(color="#888", dash="dot", width=1))
    if value == "normalised":
        fig.add_hline(y=1, line=dict(color="#bbb", dash="dot", width=1))
    fig.update_xaxes(title_text=f"layer (hidden-state index; {component})")
    fig.update_yaxes(title_text=VALUE_LABEL[value])
    fig = _layout(fig, fig_title(what, split=split, n=n_pairs, model=model), height=460)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.18, x=0.0, xanchor="left"), margin=dict(b=120))
    return fig


def cell_distribution(target: Sequence[float], patched: Sequence[float], source: Sequence[float] | None = None, *,
                      title: str, other: Mapping[str, float] | None = None) -> go.Figure:
    """P(v), v = 0..100, before (target) and after (patched) the patch, and the source's; the
    legend carries each expected value (renormalised over 0–100) and its 'other' mass."""
    from metacog.readout.values import expected_value

    fig = go.Figure()
    v = np.arange(101)
    series = [("source", source, "#2ca02c")] if source is not None else []  # drawn first: behind the others
    series += [("target (before)", target, "#1f77b4"), ("patched (after)", patched, "#d62728")]
    for name, p, color in series:
        p = np.asarray(p, dtype=float)
        ev = float(expected_value(p[None])[0])
        lab = f"{name}: E[v] = {ev:.1f}" + (f", other {other[name]:.2f}" if other and name in other else "")
        fig.add_trace(go.Bar(x=v, y=p, name=lab, marker_color=color, opacity=0.45 if name == "source" else 0.75,
                             meta={"series": name, "ev": ev}, hovertemplate="%{x}: %{y:.4f}<extra>" + name + "</extra>"))
        fig.add_vline(x=ev, line=dict(color=color, dash="dash", width=1.5))
    fig.update_layout(barmode="overlay", bargap=0.0)
    fig.update_xaxes(title_text="value v (0–100)", range=[-1, 101])
    fig.update_yaxes(title_text="P(v) (not renormalised)")
    fig = _layout(fig, title, height=400)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2, x=0.0, xanchor="left"), margin=dict(b=110))
    return fig


def pair_shifts(res: pd.DataFrame, *, component: str, group: str, model: str, value: str = "normalised",
                split: str = "all", max_pairs: int = 60) -> go.Figure:
    """One thin line per pair: ``value`` by layer at one position group (random: mean of K)."""
    from metacog.patching.stats import per_pair

    pp = per_pair(res, value)
    pp = pp[(pp["component"] == component) & (pp["group"] == group)]
    labels = res.drop_duplicates("pair").set_index("pair")
    fig = go.Figure()
    pairs = sorted(pp["pair"].unique())[:max_pairs]
    for i, pr in enumerate(pairs):
        s = pp[pp["pair"] == pr].sort_values("layer")
        name = f"{pr}: {labels.loc[pr, 'source']} → {labels.loc[pr, 'target']}" if pr in labels.index else str(pr)
        fig.add_trace(go.Scatter(x=s["layer"], y=s[value], mode="lines", name=name, line=dict(width=1, color=PALETTE[i % len(PALETTE)]),
                                 opacity=0.7, meta={"pair": int(pr)}))
    fig.add_hline(y=0, line=dict(color="#888", dash="dot", width=1))
    fig.update_xaxes(title_text=f"layer (hidden-state index; {component})")
    fig.update_yaxes(title_text=VALUE_LABEL[value])
    return _layout(fig, fig_title(f"Per-pair {value} shift at {group_label(group)}", split=split, n=len(pairs), model=model), height=420)
