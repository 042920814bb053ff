"""The look every metacog figure shares: palette, template, title convention and layout.

Plot modules across the package (:mod:`metacog.viz.plots`, ``compare.plots``, ``finetune.plots``,
``methods.plots``, ``patching.plots``, ``steering.plots``) import these, so a figure from any
stage reads the same: title ``"<what>, <split> split, n=<n>, <model>"`` at the top left, the
``plotly_white`` template, the legend to the right of the plot.
"""
from __future__ import annotations

import plotly.graph_objects as go

#: bars/markers of correctly answered items
CORRECT_COLOR = "#2a9d8f"
#: bars/markers of incorrectly answered items
WRONG_COLOR = "#e76f51"
#: one colour per series (positions, runs, modes), in order
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
#: reference lines (verbal AUROC, question-type prior, probe target, …), in order
REF_COLORS = ["#d62728", "#9467bd", "#17becf", "#8c564b", "#e377c2"]
#: the plotly template of every figure
TEMPLATE = "plotly_white"


def fig_title(what: str, *, split: str, n: int, model: str) -> str:
    """``"Verbal confidence, eval split, n=40, SmolLM2-135M-Instruct"``; ``split`` None, ``""`` or
    ``"all"`` reads "all splits"; ``n`` is the number of items (or pairs) the figure shows."""
    split_txt = "all splits" if split in (None, "", "all") else f"{split} split"
    return f"{what}, {split_txt}, n={int(n)}, {model}"


def layout(fig: go.Figure, title: str, height: int = 440, **kw) -> go.Figure:
    """Apply the shared layout to ``fig`` in place and return it: ``title`` at the top left,
    :data:`TEMPLATE`, ``height`` in pixels, margins, a vertical legend right of the plot; ``kw``
    goes to ``fig.update_layout`` (e.g. ``barmode``, ``xaxis``)."""
    fig.update_layout(
        title=dict(text=title, x=0.0, xanchor="left", font=dict(size=15)),
        template=TEMPLATE,
        height=height,
        margin=dict(l=70, r=30, t=80, b=70),
        legend=dict(orientation="v", yanchor="top", y=1.0, xanchor="left", x=1.01, font=dict(size=11)),
        **kw,
    )
    return fig


def rgba(hex_color: str, alpha: float) -> str:
    """``"#1f77b4"``, 0.2 -> ``"rgba(31,119,180,0.2)"`` (a palette colour made translucent for CI bands).

    Raises:
        ValueError: ``hex_color`` is not ``#rrggbb``.
    """
    h = hex_color.lstrip("#")
    if len(h) != 6:
        raise ValueError(f"expected a colour #rrggbb, got {hex_color!r}")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"
