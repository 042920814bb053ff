"""metacog.viz.plots: every builder returns a Figure titled with n, split and model, and the numbers
in its traces are the inputs (counts, AUROC values, probabilities)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from metacog.stats import metrics

from metacog.viz import plots

MODEL = "TinyModel-1"


def _title(fig: go.Figure) -> str:
    return fig.layout.title.text


def _check_title(fig, n, split):
    t = _title(fig)
    assert f"n={n}" in t, t
    assert (f"{split} split" if split != "all" else "all splits") in t, t
    assert MODEL in t, t


def _bars(fig, label=None, panel=None):
    out = []
    for tr in fig.data:
        if tr.type != "bar":
            continue
        meta = tr.meta or {}
        if label is not None and meta.get("label") != label:
            continue
        if panel is not None and list(meta.get("panel", [])) != list(panel):
            continue
        out.append(tr)
    return out


def test_fig_title_format():
    assert plots.fig_title("Verbal confidence", split="eval", n=40, model="SmolLM2-135M-Instruct") == \
        "Verbal confidence, eval split, n=40, SmolLM2-135M-Instruct"
    assert "all splits" in plots.fig_title("x", split="all", n=3, model="m")


def test_histogram_counts_bins_and_missing():
    edges, counts, miss = plots.histogram_counts([0, 4.9, 5, 94.9, 95, 100, np.nan], bin_width=5)
    assert edges[0] == 0 and edges[-1] == 100 and len(counts) == 20
    assert counts[0] == 2 and counts[1] == 1 and counts[18] == 1 and counts[19] == 2  # 100 is in the last, closed bin
    assert counts.sum() == 6 and miss == 1
    with pytest.raises(ValueError):
        plots.histogram_counts([101])


def test_confidence_histogram_counts_equal_inputs():
    rng = np.random.default_rng(0)
    n = 40
    y = rng.random(n) < 0.4
    inline = rng.choice([100, 99, 50, 0, np.nan], size=n)
    two = rng.uniform(0, 100, size=n)
    fig = plots.confidence_histogram({"inline": inline, "two-pass": two}, y, split="eval", model=MODEL)
    assert isinstance(fig, go.Figure)
    _check_title(fig, n, "eval")
    assert "Verbal confidence" in _title(fig)
    for mode, vals in (("inline", inline), ("two-pass", two)):
        for ok, label in ((True, "correct"), (False, "incorrect")):
            (tr,) = _bars(fig, label, ["", mode])
            _, expect, _ = plots.histogram_counts(vals[y == ok])
            assert list(tr.y) == expect.tolist()
        total = sum(np.asarray(t.y) for t in _bars(fig, panel=["", mode]))
        assert total.sum() == np.sum(~np.isnan(vals))
    assert fig.layout.barmode == "stack"
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text


def test_confidence_histogram_all_unparsed_still_draws():
    fig = plots.confidence_histogram({"inline": [np.nan] * 5}, [False] * 5, split="train", model=MODEL)
    _check_title(fig, 5, "train")
    assert all(sum(t.y) == 0 for t in _bars(fig))
    assert any("unparsed: 5" in a.text for a in fig.layout.annotations)


def test_readout_grid_panels():
    rng = np.random.default_rng(1)
    n = 30
    y = rng.random(n) < 0.5
    grid = {m: {"verbal": rng.uniform(0, 100, n), "E[v]": rng.uniform(0, 100, n), "argmax": rng.integers(0, 101, n).astype(float)}
            for m in ("inline", "two-pass")}
    fig = plots.readout_grid(grid, y, split="calibration", model=MODEL)
    _check_title(fig, n, "calibration")
    for m in grid:
        for r, vals in grid[m].items():
            (tr,) = _bars(fig, "correct", [m, r])
            assert list(tr.y) == plots.histogram_counts(vals[y])[1].tolist()
    assert len(_bars(fig)) == 2 * 3 * 2


def test_auroc_bars_values_and_references():
    t = pd.DataFrame({"name": ["verbal inline", "E[v] inline"], "auroc": [0.55, 0.7], "lo": [0.4, 0.6], "hi": [0.7, 0.8]})
    fig = plots.auroc_bars(t, split="eval", n=40, model=MODEL, references={"question-type prior": 0.62})
    _check_title(fig, 40, "eval")
    bar = fig.data[0]
    assert list(bar.x) == [0.55, 0.7] and list(bar.y) == ["verbal inline", "E[v] inline"]
    assert np.allclose(bar.error_x.array, [0.15, 0.1]) and np.allclose(bar.error_x.arrayminus, [0.15, 0.1])
    xs = sorted(s.x0 for s in fig.layout.shapes)
    assert xs == [0.5, 0.62]


def _probe_metrics(n_layers=5, positions=("last_prompt", "confidence")):
    rows = []
    for j, p in enumerate(positions):
        for L in range(n_layers):
            a = 0.5 + 0.05 * L + 0.01 * j
            rows.append(dict(layer=L, position=p, C=1.0, cv_auroc=a - 0.02, auroc=a, auroc_lo=a - 0.1, auroc_hi=a + 0.1,
                             ece=0.1 + 0.01 * L, brier=0.2, n_train=60, n_eval=20))
    return pd.DataFrame(rows)


def test_probe_auroc_by_layer_curves_bands_refs():
    pm = _probe_metrics()
    fig = plots.probe_metric_by_layer(pm, split="eval", n=20, model=MODEL, references={"verbal inline": 0.52, "question-type prior": 0.6},
                                      best={"layer": 3, "position": "confidence"})
    _check_title(fig, 20, "eval")
    curves = {t.meta["position"]: t for t in fig.data if (t.meta or {}).get("role") == "curve"}
    assert set(curves) == {"last_prompt", "confidence"}
    for p, tr in curves.items():
        d = pm[pm["position"] == p].sort_values("layer")
        assert list(tr.x) == d["layer"].tolist()
        assert np.allclose(tr.y, d["auroc"])
    bands = [t for t in fig.data if (t.meta or {}).get("role") == "ci"]
    assert len(bands) == 2
    d = pm[pm["position"] == "last_prompt"].sort_values("layer")
    band = next(b for b in bands if b.meta["position"] == "last_prompt")
    assert np.allclose(band.y, np.r_[d["auroc_hi"], d["auroc_lo"][::-1]])
    (star,) = [t for t in fig.data if (t.meta or {}).get("role") == "best"]
    assert list(star.x) == [3] and np.isclose(star.y[0], 0.5 + 0.15 + 0.01)
    refs = {t.name: t for t in fig.data if (t.meta or {}).get("role") == "reference"}
    assert sorted(t.meta["value"] for t in refs.values()) == [0.5, 0.52, 0.6]  # chance + the two references
    assert "verbal inline (0.520)" in refs and set(refs["verbal inline (0.520)"].y) == {0.52}
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text == "AUROC"


def test_probe_metric_by_layer_ece_no_bands():
    pm = _probe_metrics()
    fig = plots.probe_metric_by_layer(pm, split="eval", n=20, model=MODEL, metric="ece")
    _check_title(fig, 20, "eval")
    assert "ECE" in _title(fig)
    assert not [t for t in fig.data if (t.meta or {}).get("role") == "ci"]
    curves = [t for t in fig.data if (t.meta or {}).get("role") == "curve"]
    assert np.allclose(curves[0].y, pm[pm["position"] == "last_prompt"]["ece"])


def test_reliability_diagram_matches_bins():
    rng = np.random.default_rng(2)
    p = rng.uniform(0, 1, 50)
    y = rng.random(50) < p
    bins = metrics.reliability_bins(p, y, 10)
    fig = plots.reliability_diagram(bins, split="eval", n=50, model=MODEL, label="probe layer 3 @ confidence", ece=metrics.ece(p, y))
    _check_title(fig, 50, "eval")
    assert "ECE" in _title(fig)
    rel = next(t for t in fig.data if (t.meta or {}).get("role") == "reliability")
    ne = bins[bins["n"] > 0]
    assert np.allclose(rel.x, ne["mean_conf"]) and np.allclose(rel.y, ne["accuracy"])
    cnt = next(t for t in fig.data if (t.meta or {}).get("role") == "counts")
    assert list(cnt.y) == bins["n"].tolist() and sum(cnt.y) == 50


def test_distribution_bars_values():
    rng = np.random.default_rng(3)
    v = rng.dirichlet(np.ones(102))
    w = rng.dirichlet(np.ones(102))
    fig = plots.distribution_bars({"inline": v, "two-pass": w}, item="wf-1", split="eval", model=MODEL,
                                  markers={"inline": {"verbal": 90.0, "E[v]": 50.2, "argmax": np.nan}})
    _check_title(fig, 1, "eval")
    assert "wf-1" in _title(fig)
    bars = {t.meta["mode"]: t for t in fig.data if t.type == "bar"}
    assert np.allclose(bars["inline"].y, v[:101]) and list(bars["inline"].x) == list(range(101))
    assert np.allclose(bars["two-pass"].y, w[:101])
    assert sorted(s.x0 for s in fig.layout.shapes) == [50.2, 90.0]  # NaN markers are skipped
    assert any(f"other = {v[101]:.3f}" in a.text for a in fig.layout.annotations)
    with pytest.raises(ValueError):
        plots.distribution_bars({"inline": v[:101]}, item="x", split="eval", model=MODEL)


def test_probe_p_by_layer_values():
    p = np.linspace(0, 1, 4 * 3).reshape(4, 3)
    pos = ["last_prompt", "last_answer", "confidence"]
    fig = plots.probe_p_by_layer(p, pos, item="t1", split="train", model=MODEL, best={"layer": 2, "position": "confidence"}, correct=True)
    _check_title(fig, 1, "train")
    curves = [t for t in fig.data if (t.meta or {}).get("position")]
    assert [t.name for t in curves] == pos
    for j, t in enumerate(curves):
        assert np.allclose(t.y, p[:, j]) and list(t.x) == [0, 1, 2, 3]
    star = fig.data[-1]
    assert list(star.x) == [2] and np.isclose(star.y[0], p[2, 2])
    with pytest.raises(ValueError):
        plots.probe_p_by_layer(p, pos[:2], item="t1", split="train", model=MODEL)


def test_figures_serialise_to_html_and_json():
    fig = plots.probe_metric_by_layer(_probe_metrics(), split="eval", n=20, model=MODEL)
    html = fig.to_html(include_plotlyjs=False)
    assert "n=20" in html
    assert fig.to_json()


def test_probe_metric_by_layer_positions_subset_without_bands():
    pm = _probe_metrics()
    fig = plots.probe_metric_by_layer(pm, split="eval", n=20, model=MODEL, positions=["confidence"], bands=False)
    curves = [t for t in fig.data if (t.meta or {}).get("role") == "curve"]
    assert [t.name for t in curves] == ["confidence"]
    assert not [t for t in fig.data if (t.meta or {}).get("role") == "ci"]
