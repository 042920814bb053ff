"""Plotly figure builders: pure functions of stage results (data in, ``go.Figure`` out).

Every figure is titled ``"<what>, <split> split, n=<n>, <model>"`` (see :func:`fig_title`), has
labelled axes, and carries the numbers it shows in its traces, so tests can read them back.
No Streamlit here: pages call these and display the result.

Builders
--------
- :func:`confidence_histogram` -- saturation histogram of 0-100 confidences, one panel per mode,
  bars stacked by correctness (the last bin, [95, 100], is the "ceiling" of the validity screen);
- :func:`readout_grid` -- the same histograms for several readouts (verbal, E[v], argmax) x modes;
- :func:`auroc_bars` -- AUROC with bootstrap CIs of several scores, with reference lines;
- :func:`probe_metric_by_layer` -- probe AUROC (or ECE/Brier/CV AUROC) by layer, one curve per
  position, CI bands for AUROC, reference lines (verbal AUROC, question-type prior, chance);
- :func:`add_selection_null` -- the probe selection null as a band on the CV AUROC by layer;
- :func:`reliability_diagram` -- accuracy vs mean confidence per bin, plus bin counts;
- :func:`distribution_bars` -- one item's exact 0-100 distribution per mode with markers;
- :func:`probe_p_by_layer` -- one item's probe p(correct) by layer, one curve per position.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

# palette, template, title and layout: metacog.viz.layout (re-exported here for older imports)
from metacog.viz.layout import CORRECT_COLOR, PALETTE, REF_COLORS, TEMPLATE, WRONG_COLOR, fig_title, layout, rgba  # noqa: F401


# --------------------------------------------------------------------------------- helpers
def histogram_counts(values, bin_width: int = 5) -> tuple[np.ndarray, np.ndarray, int]:
    """Counts of 0-100 values in bins ``[0, w), [w, 2w), ..., [100 - w, 100]`` (last closed).

    ``values``: points on 0-100 (any shape, flattened). Returns ``(edges [100/w + 1], counts
    [100/w], n_missing)``; NaN values are not binned but counted as missing.

    Raises:
        ValueError: ``bin_width`` does not divide 100, or a value lies outside [0, 100].
    """
    if 100 % bin_width:
        raise ValueError("bin_width must divide 100")
    v = np.asarray(values, dtype=float).ravel()
    miss = np.isnan(v)
    v = v[~miss]
    if v.size and (v.min() < 0 or v.max() > 100):
        raise ValueError("values must lie in [0, 100]")
    k = 100 // bin_width
    edges = np.arange(k + 1, dtype=float) * bin_width
    idx = np.minimum(np.floor(v / bin_width), k - 1).astype(int)
    return edges, np.bincount(idx, minlength=k).astype(int), int(miss.sum())


def _bin_labels(edges: np.ndarray) -> list[str]:
    out = []
    for i in range(len(edges) - 1):
        lo, hi = int(edges[i]), int(edges[i + 1])
        out.append(f"{lo}–{hi}" if i == len(edges) - 2 else f"{lo}–{hi - 1}")
    return out


def _hist_grid(panels: Mapping[str, Mapping[str, Sequence[float]]], correct, bin_width: int, title: str,
               y_title: str = "items", height: int | None = None) -> go.Figure:
    rows = list(panels)
    cols = list(dict.fromkeys(c for r in rows for c in panels[r]))
    y = np.asarray(correct).astype(bool).ravel()
    subtitles = [f"{c} · {r}" if len(rows) > 1 or r else c for r in rows for c in cols]
    fig = make_subplots(rows=len(rows), cols=len(cols), subplot_titles=subtitles, shared_yaxes=True,
                        vertical_spacing=0.16 if len(rows) > 1 else 0.1, horizontal_spacing=0.05)
    for ri, r in enumerate(rows, start=1):
        for ci, c in enumerate(cols, start=1):
            vals = panels[r].get(c)
            if vals is None:
                continue
            v = np.asarray(vals, dtype=float).ravel()
            if v.size != y.size:
                raise ValueError(f"panel {r}/{c}: {v.size} values for {y.size} labels")
            edges, _, n_miss = histogram_counts(v, bin_width)
            labels = _bin_labels(edges)
            centers = (edges[:-1] + edges[1:]) / 2
            for ok, name, color in ((True, "correct", CORRECT_COLOR), (False, "incorrect", WRONG_COLOR)):
                _, cnt, _ = histogram_counts(v[y == ok], bin_width)
                fig.add_trace(
                    go.Bar(x=centers, y=cnt, width=bin_width * 0.92, name=name, marker_color=color, legendgroup=name,
                           showlegend=(ri == 1 and ci == 1), meta={"panel": [r, c], "label": name}, customdata=labels,
                           hovertemplate="%{customdata}: %{y} " + name + "<extra></extra>"),
                    row=ri, col=ci,
                )
            used = v[~np.isnan(v)]
            ceiling = float(np.mean(used >= 95)) if used.size else float("nan")
            note = f"≥95: {ceiling:.0%}" if used.size else "no values"
            if n_miss:
                note += f" · unparsed: {n_miss}"
            fig.add_annotation(text=note, showarrow=False, xref="x domain" if (ri, ci) == (1, 1) else f"x{(ri - 1) * len(cols) + ci} domain",
                               yref="y domain" if (ri, ci) == (1, 1) else f"y{(ri - 1) * len(cols) + ci} domain",
                               x=0.02, y=0.98, xanchor="left", yanchor="top", font=dict(size=11), bgcolor="rgba(255,255,255,0.7)")
            fig.update_xaxes(title_text="confidence (0–100)" if ri == len(rows) else None, range=[0, 100], tick0=0,
                             dtick=20 if len(cols) > 2 else 10, row=ri, col=ci)
        fig.update_yaxes(title_text=y_title, row=ri, col=1)
    fig.update_layout(barmode="stack", bargap=0.05)
    return layout(fig, title, height=height or (300 + 230 * (len(rows) - 1) + 60))


# --------------------------------------------------------------------------------- answers
def confidence_histogram(values: Mapping[str, Sequence[float]], correct, *, split: str, model: str,
                         bin_width: int = 5, what: str = "Verbal confidence") -> go.Figure:
    """Saturation histogram: one panel per mode (``values`` maps mode -> [n_items] 0-100
    confidences, NaN = unparsed), bars stacked by ``correct`` ([n_items] bool), bins of
    ``bin_width`` points; n = number of items (parsed or not).

    Raises:
        ValueError: a mode's values and ``correct`` differ in length, or a value lies outside [0, 100].
    """
    n = len(np.asarray(correct).ravel())
    return _hist_grid({"": dict(values)}, correct, bin_width, fig_title(what, split=split, n=n, model=model))


def readout_grid(readouts: Mapping[str, Mapping[str, Sequence[float]]], correct, *, split: str, model: str,
                 bin_width: int = 5, what: str = "Verbal vs 0–100 distribution readouts") -> go.Figure:
    """Histograms side by side: ``readouts[mode][readout]`` -> [n_items] 0-100 values (rows = modes,
    columns = readouts such as "verbal", "E[v]", "argmax"), stacked by ``correct`` ([n_items] bool).

    Raises:
        ValueError: a panel's values and ``correct`` differ in length, or a value lies outside [0, 100].
    """
    n = len(np.asarray(correct).ravel())
    return _hist_grid(readouts, correct, bin_width, fig_title(what, split=split, n=n, model=model))


def auroc_bars(table: pd.DataFrame, *, split: str, n: int, model: str,
               references: Mapping[str, float] | None = None, what: str = "AUROC by readout") -> go.Figure:
    """Horizontal bars of ``table`` rows (columns ``name, auroc``, optional ``lo, hi``: AUROC and its
    95% CI, probabilities in [0, 1]), error bars = CI. ``references`` (name -> AUROC) adds vertical
    lines (e.g. question-type prior); 0.5 (chance) is always drawn. ``n``: items scored (title)."""
    t = table.reset_index(drop=True)
    a = t["auroc"].astype(float).to_numpy()
    lo = t["lo"].astype(float).to_numpy() if "lo" in t else np.full(len(t), np.nan)
    hi = t["hi"].astype(float).to_numpy() if "hi" in t else np.full(len(t), np.nan)
    fig = go.Figure(
        go.Bar(
            y=t["name"].astype(str).tolist(), x=a, orientation="h", marker_color=PALETTE[0], name="AUROC",
            error_x=dict(type="data", symmetric=False, array=np.nan_to_num(hi - a), arrayminus=np.nan_to_num(a - lo),
                         color="#333", thickness=1.2, width=4),
            customdata=np.stack([lo, hi], axis=1) if len(t) else None,
            hovertemplate="%{y}: %{x:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}]<extra></extra>",
        )
    )
    refs = [("chance", 0.5, "#888", "dot")] + [
        (name, float(val), REF_COLORS[i % len(REF_COLORS)], "dash")
        for i, (name, val) in enumerate((references or {}).items()) if val is not None and np.isfinite(val)
    ]
    for k, (name, val, color, dash) in enumerate(refs):
        fig.add_vline(x=val, line=dict(color=color, dash=dash, width=1.5))
        fig.add_annotation(x=val, y=1.0, xref="x", yref="paper", yanchor="bottom", yshift=2 + 16 * k, showarrow=False,
                           text=name if name == "chance" else f"{name} {val:.3f}", font=dict(size=11, color=color),
                           xanchor="right" if val > 0.75 else "left")
    fig.update_xaxes(title_text="AUROC (confidence vs correctness; bars: 95% bootstrap CI)", range=[0, 1.02])
    labels = [f"{nm}  ({'n/a' if np.isnan(x) else f'{x:.3f}'})" for nm, x in zip(t["name"].astype(str), a)]
    fig.update_yaxes(title_text=None, autorange="reversed", tickmode="array", tickvals=t["name"].astype(str).tolist(), ticktext=labels)
    fig = layout(fig, fig_title(what, split=split, n=n, model=model), height=160 + 38 * max(len(t), 2), showlegend=False)
    fig.update_layout(margin=dict(t=90 + 16 * len(refs)))
    return fig


# --------------------------------------------------------------------------------- probes
def probe_metric_by_layer(metrics: pd.DataFrame, *, split: str, n: int, model: str, metric: str = "auroc",
                          references: Mapping[str, float] | None = None, best: Mapping | None = None,
                          positions: Sequence[str] | None = None, bands: bool = True) -> go.Figure:
    """One curve per position of ``metrics[metric]`` by layer (columns ``layer, position, metric``);
    for ``auroc`` a CI band from ``auroc_lo``/``auroc_hi`` and a chance line. ``references``
    (name -> value) are horizontal dashed lines; ``best`` (``layer``, ``position``) is starred;
    ``positions`` picks and orders the curves; ``bands=False`` leaves the CI bands out."""
    names = {"auroc": "AUROC", "cv_auroc": "train-split CV AUROC", "ece": "ECE", "brier": "Brier score"}
    label = names.get(metric, metric)
    pos = list(positions) if positions is not None else list(dict.fromkeys(metrics["position"]))
    fig = go.Figure()
    for i, p in enumerate(pos):
        d = metrics[metrics["position"] == p].sort_values("layer")
        if d.empty:
            continue
        color = PALETTE[i % len(PALETTE)]
        x = d["layer"].astype(int).to_numpy()
        if bands and metric == "auroc" and {"auroc_lo", "auroc_hi"} <= set(d.columns):
            lo, hi = d["auroc_lo"].astype(float).to_numpy(), d["auroc_hi"].astype(float).to_numpy()
            ok = ~(np.isnan(lo) | np.isnan(hi))
            if ok.any():
                fig.add_trace(go.Scatter(
                    x=np.r_[x[ok], x[ok][::-1]], y=np.r_[hi[ok], lo[ok][::-1]], fill="toself", fillcolor=rgba(color, 0.15),
                    line=dict(width=0), hoverinfo="skip", showlegend=False, legendgroup=p, name=f"{p} 95% CI",
                    meta={"role": "ci", "position": p},
                ))
        fig.add_trace(go.Scatter(x=x, y=d[metric].astype(float).to_numpy(), mode="lines+markers", name=p,
                                 line=dict(color=color, width=2), marker=dict(size=5), legendgroup=p,
                                 meta={"role": "curve", "position": p},
                                 hovertemplate=f"{p}<br>layer %{{x}}<br>{label} %{{y:.3f}}<extra></extra>"))
    if best and metric in metrics and best.get("position") in pos:
        row = metrics[(metrics["layer"] == int(best["layer"])) & (metrics["position"] == best["position"])]
        if len(row):
            fig.add_trace(go.Scatter(x=[int(best["layer"])], y=[float(row[metric].iloc[0])], mode="markers", name="best (train CV)",
                                     marker=dict(symbol="star", size=15, color="gold", line=dict(color="black", width=1)),
                                     meta={"role": "best"}))
    x0, x1 = int(metrics["layer"].min()), int(metrics["layer"].max())
    if metric == "auroc":
        fig.add_trace(go.Scatter(x=[x0, x1], y=[0.5, 0.5], mode="lines", name="chance (0.5)", line=dict(color="#888", dash="dot"),
                                 hoverinfo="skip", meta={"role": "reference", "value": 0.5}))
    for i, (name, val) in enumerate((references or {}).items()):
        if val is None or not np.isfinite(val):
            continue
        fig.add_trace(go.Scatter(x=[x0, x1], y=[float(val)] * 2, mode="lines", name=f"{name} ({val:.3f})",
                                 line=dict(color=REF_COLORS[i % len(REF_COLORS)], dash="dash", width=2),
                                 meta={"role": "reference", "value": float(val)},
                                 hovertemplate=f"{name}: {val:.3f}<extra></extra>"))
    fig.update_xaxes(title_text="layer (hidden state h; 0 = embeddings)", dtick=2 if metrics["layer"].max() > 12 else 1)
    fig.update_yaxes(title_text=label, range=[0, 1.02] if metric in ("auroc", "cv_auroc") else None)
    what = f"Probe {label} by layer"
    return layout(fig, fig_title(what, split=split, n=n, model=model), height=480)


def add_selection_null(fig: go.Figure, sn: Mapping, x0: int, x1: int) -> go.Figure:
    """Draw a probe selection null (``best.json``'s ``selection_null``: ``mean``, ``p95`` of the best
    train CV AUROC over all layer × position cells on shuffled labels, ``n_cells``) on a
    :func:`probe_metric_by_layer` figure of ``cv_auroc``: a grey mean–p95 band and a dashed p95
    line from layer ``x0`` to ``x1``. Returns ``fig`` (changed in place)."""
    fig.add_trace(go.Scatter(x=[x0, x1, x1, x0], y=[sn["p95"], sn["p95"], sn["mean"], sn["mean"]], fill="toself",
                             fillcolor="rgba(120,120,120,0.18)", line=dict(width=0), hoverinfo="skip",
                             name=f"selection null: best of {sn['n_cells']} on shuffled labels (mean–p95)",
                             meta={"role": "selection_null", "mean": sn["mean"], "p95": sn["p95"]}))
    fig.add_trace(go.Scatter(x=[x0, x1], y=[sn["p95"]] * 2, mode="lines", line=dict(color="#555", dash="dash"),
                             name=f"selection null p95 ({sn['p95']:.3f})", meta={"role": "selection_null_p95", "value": sn["p95"]}))
    return fig


def reliability_diagram(bins: pd.DataFrame, *, split: str, n: int, model: str, label: str = "",
                        ece: float | None = None) -> go.Figure:
    """Accuracy vs mean confidence per bin (``bins`` = :func:`metacog.stats.metrics.reliability_bins`
    output: ``bin, lo, hi, n, mean_conf, accuracy``, confidences as probabilities in [0, 1]),
    diagonal = perfect calibration; below, the item count per bin. ``ece`` (if given) is added
    to the title; ``n``: items binned."""
    b = bins.reset_index(drop=True)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.06)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#888", dash="dot"), name="perfect calibration",
                             hoverinfo="skip"), row=1, col=1)
    ne = b[b["n"] > 0]
    centers = ((b["lo"] + b["hi"]) / 2).to_numpy(dtype=float)
    # gaps between bin centre accuracy and confidence
    fig.add_trace(go.Bar(x=centers, y=b["accuracy"].astype(float).fillna(0).to_numpy(), width=(b["hi"] - b["lo"]).to_numpy(dtype=float) * 0.9,
                         marker_color=rgba(PALETTE[0], 0.25), name="accuracy per bin", meta={"role": "accuracy_bars"},
                         hovertemplate="bin [%{customdata[0]:.2f}, %{customdata[1]:.2f}]<br>accuracy %{y:.3f}<extra></extra>",
                         customdata=b[["lo", "hi"]].to_numpy(dtype=float)), row=1, col=1)
    fig.add_trace(go.Scatter(x=ne["mean_conf"].astype(float).to_numpy(), y=ne["accuracy"].astype(float).to_numpy(),
                             mode="lines+markers", name="accuracy vs mean confidence", line=dict(color=PALETTE[0]),
                             marker=dict(size=8 + 14 * np.sqrt(ne["n"].to_numpy() / max(1, ne["n"].max()))),
                             customdata=ne["n"].to_numpy(), meta={"role": "reliability"},
                             hovertemplate="mean conf %{x:.3f}<br>accuracy %{y:.3f}<br>n=%{customdata}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=centers, y=b["n"].astype(int).to_numpy(), width=(b["hi"] - b["lo"]).to_numpy(dtype=float) * 0.9,
                         marker_color="#999", name="items per bin", meta={"role": "counts"}, showlegend=False,
                         hovertemplate="bin centre %{x:.2f}: %{y} items<extra></extra>"), row=2, col=1)
    fig.update_xaxes(range=[0, 1], row=1, col=1)
    fig.update_xaxes(range=[0, 1], title_text="confidence (probe p or verbal / 100)", row=2, col=1)
    fig.update_yaxes(range=[0, 1.02], title_text="accuracy", row=1, col=1)
    fig.update_yaxes(title_text="items", row=2, col=1)
    what = "Reliability diagram" + (f" ({label})" if label else "")
    title = fig_title(what, split=split, n=n, model=model)
    if ece is not None and np.isfinite(ece):
        title += f" · ECE {ece:.3f}"
    return layout(fig, title, height=520)


# --------------------------------------------------------------------------------- one item
def distribution_bars(dists: Mapping[str, Sequence[float]], *, item: str, split: str, model: str,
                      markers: Mapping[str, Mapping[str, float]] | None = None) -> go.Figure:
    """One item's exact 0-100 confidence distribution per mode: ``dists[mode]`` is the 102-vector
    (P(0..100), then the mass on anything else). ``markers[mode]`` (name -> value) draws
    vertical lines (verbal confidence, E[v], argmax; points on 0-100).

    Raises:
        ValueError: a distribution does not have 102 entries.
    """
    modes = list(dists)
    fig = make_subplots(rows=len(modes), cols=1, shared_xaxes=True, vertical_spacing=0.14,
                        subplot_titles=[_dist_subtitle(m, dists[m]) for m in modes])
    for i, m in enumerate(modes, start=1):
        v = np.asarray(dists[m], dtype=float).ravel()
        if v.size != 102:
            raise ValueError(f"distribution for {m} must have 102 entries (P(0..100), other), not {v.size}")
        fig.add_trace(go.Bar(x=np.arange(101), y=v[:101], name=f"P(v) {m}", marker_color=PALETTE[i - 1], meta={"mode": m},
                             hovertemplate="P(%{x}) = %{y:.4f}<extra></extra>", showlegend=False), row=i, col=1)
        for j, (name, val) in enumerate(((markers or {}).get(m) or {}).items()):
            if val is None or not np.isfinite(val):
                continue
            color = REF_COLORS[j % len(REF_COLORS)]
            fig.add_vline(x=float(val), line=dict(color=color, dash="dash", width=1.5), row=i, col=1)
            fig.add_annotation(x=float(val), y=1.0 - 0.16 * j, xref=f"x{'' if i == 1 else i}", yref=f"y{'' if i == 1 else i} domain",
                               text=f"{name} " + f"{val:.1f}".rstrip("0").rstrip("."), showarrow=False, xanchor="left" if val < 80 else "right",
                               xshift=3 if val < 80 else -3, font=dict(size=11, color=color), bgcolor="rgba(255,255,255,0.8)")
        fig.update_yaxes(title_text="probability", row=i, col=1)
    fig.update_xaxes(range=[-1, 101], title_text="confidence value v (0–100)", row=len(modes), col=1)
    title = fig_title(f"0–100 confidence distribution, item {item}", split=split, n=1, model=model)
    return layout(fig, title, height=230 + 200 * len(modes), bargap=0.1)


def _dist_subtitle(mode: str, v) -> str:
    v = np.asarray(v, dtype=float).ravel()
    return f"{mode}: mass on 0–100 = {v[:101].sum():.3f}, other = {v[101]:.3f}" if v.size == 102 else mode


def probe_p_by_layer(p, positions: Sequence[str], *, item: str, split: str, model: str,
                     best: Mapping | None = None, correct: bool | None = None) -> go.Figure:
    """One item's probe p(correct) ``p`` [n_layers, n_positions] (probabilities) by layer, one
    curve per position (``positions`` names the columns); ``best`` (``layer``, ``position``) is
    starred; ``correct`` adds how the item was answered to the title.

    Raises:
        ValueError: ``p`` is not [n_layers, len(positions)].
    """
    a = np.asarray(p, dtype=float)
    if a.ndim != 2 or a.shape[1] != len(positions):
        raise ValueError(f"p must be [n_layers, {len(positions)}], not {a.shape}")
    fig = go.Figure()
    x = np.arange(a.shape[0])
    for j, pos in enumerate(positions):
        fig.add_trace(go.Scatter(x=x, y=a[:, j], mode="lines+markers", name=pos, line=dict(color=PALETTE[j % len(PALETTE)]),
                                 marker=dict(size=5), meta={"position": pos},
                                 hovertemplate=f"{pos}<br>layer %{{x}}<br>p(correct) %{{y:.3f}}<extra></extra>"))
    if best and best.get("position") in positions:
        j = list(positions).index(best["position"])
        L = int(best["layer"])
        fig.add_trace(go.Scatter(x=[L], y=[a[L, j]], mode="markers", name="best probe",
                                 marker=dict(symbol="star", size=15, color="gold", line=dict(color="black", width=1))))
    fig.add_hline(y=0.5, line=dict(color="#888", dash="dot"))
    fig.update_xaxes(title_text="layer (hidden state h; 0 = embeddings)", dtick=2 if a.shape[0] > 12 else 1)
    fig.update_yaxes(title_text="probe p(correct)", range=[-0.02, 1.02])
    grade = "" if correct is None else (" — answered correctly" if correct else " — answered incorrectly")
    title = fig_title(f"Probe p(correct) by layer, item {item}{grade}", split=split, n=1, model=model)
    return layout(fig, title, height=420)


def lens_by_layer(lenses: Mapping[str, pd.DataFrame], *, item: str, model: str, split: str = "") -> go.Figure:
    """Logit lens of the exact 0–100 readout (:func:`metacog.stages.playground.lens_readout`): per model
    (``lenses[label]`` with columns ``layer, ev, argmax, mass``), E[v] (solid) and the argmax
    (dotted) in points by layer, and below, the mass on the integers 0–100 (probability)."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1, row_heights=[0.68, 0.32],
                        subplot_titles=["E[v] and argmax of the 0–100 distribution read from layer h (points)",
                                        "mass on 0–100 at layer h (the rest is text or other numbers)"])
    for i, (label, df) in enumerate(lenses.items()):
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=df["layer"], y=df["ev"], mode="lines+markers", name=f"{label}: E[v]",
                                 line=dict(color=color), marker=dict(size=5), meta={"model": label, "read": "ev"},
                                 hovertemplate=f"{label}<br>layer %{{x}}<br>E[v] %{{y:.1f}}<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=df["layer"], y=df["argmax"], mode="lines+markers", name=f"{label}: argmax",
                                 line=dict(color=color, dash="dot"), marker=dict(size=5, symbol="x"),
                                 meta={"model": label, "read": "argmax"},
                                 hovertemplate=f"{label}<br>layer %{{x}}<br>argmax %{{y}}<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=df["layer"], y=df["mass"], mode="lines", name=f"{label}: mass", showlegend=False,
                                 line=dict(color=color), meta={"model": label, "read": "mass"},
                                 hovertemplate=f"{label}<br>layer %{{x}}<br>mass %{{y:.3g}}<extra></extra>"), row=2, col=1)
    fig.update_yaxes(title_text="points", range=[-2, 102], row=1, col=1)
    fig.update_yaxes(title_text="probability", type="log", row=2, col=1)
    n_l = max((len(df) for df in lenses.values()), default=0)
    fig.update_xaxes(dtick=1 if n_l <= 13 else 2)
    fig.update_xaxes(title_text="layer (hidden state h; 0 = embeddings)", row=2, col=1)
    title = fig_title(f"Logit lens at the confidence slot, item {item}", split=split or "all", n=1, model=model)
    return layout(fig, title, height=560)
