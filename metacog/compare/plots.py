"""Plotly figures of the Compare page and the HTML report: pure functions of tables made by
:mod:`metacog.compare` (labelled axes; titles state what, the split, n and the model)."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from metacog.viz.layout import PALETTE, fig_title
from metacog.viz.layout import layout as _layout
from metacog.viz.plots import histogram_counts

METRIC_LABELS = {"auroc": "AUROC", "ece": "ECE", "brier": "Brier", "accuracy": "accuracy", "ceiling_rate": "ceiling rate (≥95)",
                 "recovery": "recovery"}


def _color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def seed_strip(per_run: pd.DataFrame, metric: str, *, n: int, model: str, readout: str) -> go.Figure:
    """Each seed's value (dots, labelled) and mean ± sd (bar) per configuration, one row per
    configuration (long configuration names read horizontally)."""
    fig = go.Figure()
    label = METRIC_LABELS.get(metric, metric)
    cfgs = list(dict.fromkeys(per_run["configuration"]))
    for k, (cfg, g) in enumerate(per_run.groupby("configuration", sort=False)):
        v = pd.to_numeric(g[metric], errors="coerce").to_numpy(float)
        ok = np.isfinite(v)
        fig.add_trace(go.Scatter(y=[cfg] * int(ok.sum()), x=v[ok], mode="markers+text", text=[f"s{s}" for s in g["seed"][ok]],
                                 textposition="top center", marker=dict(size=10, color=_color(k)), name=f"{cfg} (seeds)",
                                 hovertemplate="seed %{text}: %{x:.3f}<extra></extra>", meta={"role": "seeds"}))
        if ok.sum():
            m = float(v[ok].mean())
            sd = float(v[ok].std(ddof=1)) if ok.sum() > 1 else 0.0
            fig.add_trace(go.Scatter(y=[cfg], x=[m], mode="markers", marker=dict(symbol="line-ns-open", size=26, color="#333"),
                                     error_x=dict(type="data", array=[sd], color="#333", thickness=1.5, width=10),
                                     name=f"{cfg}: mean ± sd", showlegend=False, meta={"role": "mean_sd"},
                                     hovertemplate=f"mean %{{x:.3f}} ± {sd:.3f}<extra></extra>"))
    fig.update_xaxes(title_text=f"{label} of {readout} (fine-tuned)")
    fig.update_yaxes(title_text="", automargin=True, categoryorder="array", categoryarray=cfgs[::-1])
    return _layout(fig, fig_title(f"{label} across seeds (mean ± sd, each seed)", split="eval", n=n, model=model),
                   height=170 + 80 * len(cfgs), showlegend=False)


def confidence_shapes(values: Mapping[str, np.ndarray], *, n: int, model: str, readout: str, bin_width: int = 5) -> go.Figure:
    """Overlaid histograms (share of parsed items per ``bin_width``-point bin, as step lines) of
    each run's confidence on the eval split: the shape of the distribution per seed."""
    fig = go.Figure()
    for k, (name, v) in enumerate(values.items()):
        edges, counts, miss = histogram_counts(np.asarray(v, float), bin_width)
        tot = max(1, int(counts.sum()))
        share = counts / tot
        x = np.repeat(edges, 2)[1:-1]
        y = np.repeat(share, 2)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"{name} (parsed {tot}, missing {miss})",
                                 line=dict(color="#555" if name == "base" else _color(k), width=2.5 if name == "base" else 2,
                                           dash="dot" if name == "base" else "solid"),
                                 meta={"role": "shape", "run": name}, hovertemplate="%{x:.0f}: %{y:.1%}<extra>" + name + "</extra>"))
    fig.update_xaxes(title_text=f"{readout} (0–100)", range=[0, 100])
    fig.update_yaxes(title_text="share of parsed items", tickformat=".0%")
    return _layout(fig, fig_title(f"Confidence distribution per run ({readout}, {bin_width}-point bins)", split="eval", n=n,
                                  model=model), height=440)


def confidence_violins(values: Mapping[str, np.ndarray], *, n: int, model: str, readout: str) -> go.Figure:
    """One violin (with the points) per run."""
    fig = go.Figure()
    for k, (name, v) in enumerate(values.items()):
        v = np.asarray(v, float)
        v = v[np.isfinite(v)]
        fig.add_trace(go.Violin(y=v, name=name, box_visible=True, meanline_visible=True, points="all", jitter=0.3,
                                line_color="#555" if name == "base" else _color(k), meta={"role": "violin", "run": name}))
    fig.update_yaxes(title_text=f"{readout} (0–100)", range=[-2, 102])
    return _layout(fig, fig_title(f"Confidence distribution per run, violins ({readout})", split="eval", n=n, model=model),
                   height=460, showlegend=False)


def reliability_grid(curves: Mapping[str, tuple[pd.DataFrame, float, int]], *, n: int, model: str, readout: str) -> go.Figure:
    """Reliability diagrams side by side (``curves[name] = (bins, ECE, n parsed)``, bins from
    metacog.stats.metrics.reliability_bins); marker size ∝ items in the bin."""
    names = list(curves)
    k = max(1, len(names))
    cols = min(k, 4)
    rows = int(np.ceil(k / cols))
    titles = [f"{nm}<br>ECE {e:.3f}, n={m}" if e == e else f"{nm}<br>no parsed values" for nm, (_, e, m) in curves.items()]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_yaxes=True, horizontal_spacing=0.04,
                        vertical_spacing=0.18)
    for i, nm in enumerate(names):
        b, e, m = curves[nm]
        r, c = i // cols + 1, i % cols + 1
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#999", dash="dot"), showlegend=False,
                                 hoverinfo="skip"), row=r, col=c)
        ne = b[b["n"] > 0]
        if len(ne):
            fig.add_trace(go.Scatter(x=ne["mean_conf"].astype(float), y=ne["accuracy"].astype(float), mode="lines+markers",
                                     marker=dict(size=6 + 14 * np.sqrt(ne["n"].to_numpy() / max(1, ne["n"].max())),
                                                 color="#555" if nm == "base" else _color(i)),
                                     line=dict(color="#555" if nm == "base" else _color(i)), name=nm, showlegend=False,
                                     customdata=ne["n"].to_numpy(), meta={"role": "reliability", "run": nm},
                                     hovertemplate="conf %{x:.2f} acc %{y:.2f} n=%{customdata}<extra></extra>"), row=r, col=c)
        fig.update_xaxes(range=[0, 1], title_text="mean confidence", row=r, col=c)
    fig.update_yaxes(range=[0, 1.02], title_text="accuracy", row=1, col=1)
    fig.update_annotations(font_size=11)
    return _layout(fig, fig_title(f"Reliability per run ({readout})", split="eval", n=n, model=model),
                   height=330 * rows + 90, showlegend=False)


def agreement_scatter(agree: pd.DataFrame, *, n_runs: int, model: str, readout: str, stable_sd: float) -> go.Figure:
    """Per item: mean confidence across seeds vs its sd; stable (sd ≤ threshold) vs seed-sensitive."""
    fig = go.Figure()
    colors = {"stable": PALETTE[2], "seed-sensitive": PALETTE[1]}
    for lab, g in agree.groupby("agreement"):
        if lab not in colors:
            continue
        fig.add_trace(go.Scatter(x=g["mean"], y=g["sd"], mode="markers", name=f"{lab} ({len(g)})",
                                 marker=dict(color=colors[lab], size=8, opacity=0.8), text=g["id"].astype(str),
                                 customdata=np.stack([g.get("question", g["id"]).astype(str), g["range"].astype(float)], 1),
                                 hovertemplate="%{text}: %{customdata[0]}<br>mean %{x:.1f}, sd %{y:.1f}, range %{customdata[1]:.0f}<extra></extra>",
                                 meta={"role": "agreement", "label": lab}))
    fig.add_hline(y=stable_sd, line=dict(color="#888", dash="dash"))
    fig.update_xaxes(title_text=f"mean {readout} across runs", range=[-2, 102])
    fig.update_yaxes(title_text="sd across runs (points)")
    return _layout(fig, fig_title(f"Per-item agreement across {n_runs} runs (threshold sd {stable_sd:g})", split="eval",
                                  n=len(agree), model=model), height=430)


def auroc_by_depth(depth: pd.DataFrame, *, position: str | None = None, n_by_model: Mapping[str, int] | None = None) -> go.Figure:
    """Probe AUROC (eval split) against relative depth ``layer / n_layers`` per model, so models of
    different depth line up. ``position``: one named position, or None = the best position per layer."""
    fig = go.Figure()
    for k, (m, g) in enumerate(depth.groupby("model", sort=False)):
        if position:
            g = g[g["position"] == position]
        else:
            g = g.loc[g.groupby("layer")["auroc"].idxmax()] if len(g) else g
        g = g.sort_values("depth")
        if g.empty:
            continue
        L = int(g["n_layers"].iloc[0])
        fig.add_trace(go.Scatter(x=g["depth"], y=g["auroc"], mode="lines+markers", name=f"{m} ({L} layers)",
                                 line=dict(color=_color(k)), customdata=np.stack([g["layer"], g["position"].astype(str)], 1),
                                 hovertemplate="layer %{customdata[0]} @ %{customdata[1]}<br>depth %{x:.2f}: AUROC %{y:.3f}<extra></extra>",
                                 meta={"role": "depth", "model": m}))
    fig.add_hline(y=0.5, line=dict(color="#888", dash="dot"))
    fig.update_xaxes(title_text="relative depth (hidden-state index / number of layers; 0 = embeddings)", range=[-0.02, 1.02])
    fig.update_yaxes(title_text="probe AUROC (eval split)")
    ns = ", ".join(f"{m} n={v}" for m, v in (n_by_model or {}).items())
    models = ", ".join(depth["model"].astype(str).unique()) if len(depth) else "no model"
    title = f"Probe AUROC by relative depth{' @ ' + position if position else ' (best position per layer)'}, eval split"
    title += f", {ns or models}"
    return _layout(fig, title, height=440)
