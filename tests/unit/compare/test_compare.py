"""Comparisons: the distances against scipy, mean ± sd and per-item agreement against direct
computations, the cross-model depth table, the self-contained HTML report (CLI included) and the
Compare page under AppTest, on a tiny random Llama with two evaluated seeds and a sweep record."""
from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from finetune_helpers import tiny_model_and_workspace

ROOT = Path(__file__).resolve().parents[3]
APP = str(ROOT / "app.py")
PAGE = "pages/8_Compare.py"
SEEDS = (1, 2)


# ------------------------------------------------------------------------------ distances
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_distances_match_scipy(seed):
    from scipy import stats

    from metacog.compare import ks_distance, pairwise_distances, wasserstein

    rng = np.random.default_rng(seed)
    a = rng.integers(0, 101, size=rng.integers(5, 60)).astype(float)  # ties, like verbal confidences
    b = np.clip(rng.normal(60 + 10 * seed, 20, size=rng.integers(5, 60)), 0, 100).round()
    a[: 3] = np.nan  # unparsed values are left out
    af = a[np.isfinite(a)]
    assert ks_distance(a, b) == pytest.approx(stats.ks_2samp(af, b).statistic, abs=1e-12)
    assert wasserstein(a, b) == pytest.approx(stats.wasserstein_distance(af, b), abs=1e-9)
    assert ks_distance(b, b) == 0.0 and wasserstein(b, b) == 0.0
    assert ks_distance(np.zeros(4), np.full(3, 100.0)) == 1.0 and wasserstein(np.zeros(4), np.full(3, 100.0)) == 100.0
    assert np.isnan(ks_distance([np.nan], b)) and np.isnan(wasserstein([], b))
    t = pairwise_distances({"x": a, "y": b, "z": b + 1})
    assert len(t) == 3 and t.iloc[2]["wasserstein"] == pytest.approx(1.0)
    assert t.iloc[0]["n_a"] == len(af)
    # the definitions, written out: D = sup |F_a - F_b| and W = integral of |F_a - F_b| over the pooled support
    bs = np.sort(b)
    x = np.sort(np.concatenate([af, bs]))
    fa = np.searchsorted(np.sort(af), x, side="right") / len(af)
    fb = np.searchsorted(bs, x, side="right") / len(bs)
    assert ks_distance(a, b) == pytest.approx(np.max(np.abs(fa - fb)), abs=1e-12)
    assert wasserstein(a, b) == pytest.approx(np.sum(np.abs(fa - fb)[:-1] * np.diff(x)), abs=1e-9)


def test_seed_summary_and_item_agreement_against_direct_computation():
    from metacog.compare import RunData, item_agreement, seed_summary

    rng = np.random.default_rng(0)
    ids = [f"q{i}" for i in range(12)]
    runs = []
    for s in (42, 123, 456):
        v = np.clip(50 + 30 * np.sin(np.arange(12)) + (rng.normal(0, 25, 12) if s != 42 else 0) * (np.arange(12) >= 6), 0, 100)
        per = pd.DataFrame({"id": ids, "question": ids, "category": "c", "correct_ft": np.arange(12) % 2 == 0,
                            "correct_base": np.arange(12) % 2 == 0, "verbal_inline_ft": v, "verbal_inline_base": 50.0})
        ev = {"headline": {"n_eval": 12, "readout": "verbal_inline"}, "accuracy": {"ft": 0.5},
              "readouts": {"verbal_inline": {"ft": {"auroc": 0.6 + s / 10000, "ece": 0.1 + s / 100000}, "base": {"auroc": 0.5}}}}
        runs.append(RunData("/w", f"run-{s}", {"finetune": {"seed": s, "targets": "probe", "format": "inline", "lr": 2e-4, "epochs": 3},
                                               "plan": {"n_train": 30}}, ev, per, "tiny"))
    other = RunData("/w", "ctl", {"finetune": {"seed": 42, "targets": "shuffled", "format": "inline", "lr": 2e-4, "epochs": 3},
                                  "plan": {"n_train": 30}}, runs[0].eval, runs[0].per_item, "tiny")
    from metacog.compare import run_metrics

    per = run_metrics(runs + [other], "verbal_inline")
    summ = seed_summary(per)
    assert len(summ) == 2  # the control is its own configuration
    row = summ[summ["targets"] == "probe"].iloc[0]
    x = np.array([0.6 + s / 10000 for s in (42, 123, 456)])
    assert row["n seeds"] == 3 and row["auroc_mean"] == pytest.approx(x.mean()) and row["auroc_sd"] == pytest.approx(x.std(ddof=1))
    assert row["auroc"] == f"{x.mean():.3f} ± {x.std(ddof=1):.3f}" and "123: 0.612" in row["auroc per seed"]
    assert summ[summ["targets"] == "shuffled"].iloc[0]["auroc"] == "0.604 (1 seed: no sd)"  # said, not implied
    ag = item_agreement(runs, "verbal_inline", stable_sd=5.0)
    V = np.stack([r.per_item["verbal_inline_ft"].to_numpy() for r in runs], 1)
    sd = V.std(1, ddof=1)
    got = ag.set_index("id").loc[ids]
    assert np.allclose(got["sd"], sd) and np.allclose(got["mean"], V.mean(1))
    assert list(got["agreement"]) == ["stable" if s <= 5 else "seed-sensitive" for s in sd]
    assert set(got.index[:6]) <= set(got.index[got["agreement"] == "stable"])  # the first six items do not move
    assert ag["sd"].is_monotonic_decreasing


# ------------------------------------------------------------------------------ real artifacts
@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from metacog.finetune import FinetuneSettings, create_run, execute, run_evaluation
    from metacog.sweeps import SweepSettings, run_sweep

    cache = tmp_path_factory.mktemp("cmp-cache")
    ws, lm = tiny_model_and_workspace(cache, "cmp")
    base = FinetuneSettings(epochs=1, batch_size=4, grad_accum=2, lr=1e-3)
    for s in SEEDS:  # trained here; the sweep below finds them complete by their settings hash
        run = create_run(ws, base.replace(seed=s), threads=1)
        execute(ws, run.id, lm=lm)
        run_evaluation(ws, run.id, lm=lm)
    rec = run_sweep(ws.root, SweepSettings(base=base, seeds=SEEDS), quiet=True)
    assert [e["action"] for e in rec["runs"]] == ["skip", "skip"]
    from metacog.stages.study import summarize

    ws.write_json("summary.json", summarize(ws))
    shutil.copytree(ws.root, cache / "workspaces" / "cmp-other", ignore=shutil.ignore_patterns("runs", "sweeps"))
    return cache


def test_depth_table_and_models(cache):
    from metacog.compare import models_table, probe_depth_table

    roots = [cache / "workspaces" / "cmp", cache / "workspaces" / "cmp-other"]
    t = models_table(roots)
    assert list(t["workspace"]) == ["cmp", "cmp-other"] and (t["layers"] == 3).all()
    d = probe_depth_table(roots)
    assert d["depth"].between(0, 1).all() and d["depth"].max() == 1.0
    assert (d["depth"] == d["layer"] / d["n_layers"]).all()
    mp = pd.read_parquet(roots[0] / "probes" / "metrics.parquet")
    assert len(d) == 2 * len(mp)


def _figure_in(doc: str, title: str) -> bool:
    return any(t in doc for t in (title, json.dumps(title)[1:-1], html.escape(title)))


def test_report_is_self_contained_and_has_every_figure(cache, tmp_path, capsys):
    from metacog.cli import main
    from metacog.compare.report import write_report

    ws = cache / "workspaces" / "cmp"
    out, rep = write_report(tmp_path / "r.html", ws, models=[str(cache / "workspaces" / "cmp-other")])
    doc = out.read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", doc, re.I)  # no CDN, works offline
    assert not re.search(r"<link[^>]*href\s*=\s*[\"']?https?://", doc, re.I)
    assert doc.count("Plotly.newPlot(") == len(rep.figures) >= 10
    assert len(re.findall(r"\* plotly\.js v\d", doc)) == 1  # plotly.js inlined exactly once
    for t in rep.figure_titles:
        assert _figure_in(doc, t), t
    titles = " | ".join(rep.figure_titles)
    for want in ("AUROC across seeds", "ECE across seeds", "Confidence distribution per run", "Reliability per run",
                 "Per-item agreement", "Probe AUROC by relative depth", "Probe", "Verbal confidence"):
        assert want in titles, (want, titles)
    for want in ("workspace settings", "splits (disjoint by item id: True)", "Kolmogorov", "Sweep sweep-", "mean ± sd"):
        assert want in html.unescape(doc), want
    # the CLI writes the same report; a bad output name is refused
    assert main(["report", "--workspace", str(ws), "--out", str(tmp_path / "cli.html")]) == 0
    assert "figures" in capsys.readouterr().out and (tmp_path / "cli.html").stat().st_size > 1_000_000
    assert main(["report", "--workspace", str(ws), "--out", str(tmp_path / "x.pdf")]) == 2
    assert "HTML file" in capsys.readouterr().err
    assert main(["report", "--workspace", str(ws), "--runs", "nope", "--out", str(tmp_path / "y.html")]) == 2
    assert "no run 'nope'" in capsys.readouterr().err


def test_compare_page(cache, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("METACOG_CACHE", str(cache))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["ws"] = "cmp"
    at.run()
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error], [e.value for e in at.error]
    assert at.title[0].value == "Compare"
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    for want in ("AUROC across seeds", "ECE across seeds", "Confidence distribution per run", "Reliability per run",
                 "Per-item agreement across 2 runs", "Probe AUROC by relative depth"):
        assert any(want in t for t in titles), (want, titles)
    assert all("eval split" in t for t in titles)
    tables = [d.value for d in at.dataframe]
    summ = [t for t in tables if "n seeds" in t.columns][0]
    assert summ["n seeds"].iloc[0] == 2 and "±" in summ["ECE" if "ECE" in summ else "ece"].iloc[0]
    agree = [t for t in tables if "agreement" in t.columns][0]
    assert agree["open"].str.contains(r"\?item=").all() and set(agree["agreement"]) <= {"stable", "seed-sensitive", "unparsed", "n/a"}
    assert any("ks" in t.columns and "wasserstein" in t.columns for t in tables)
    sweep = [t for t in tables if "action" in t.columns][0]  # the sweep record: both runs found complete
    assert list(sweep["action"]) == ["skip", "skip"] and list(sweep["status"]) == ["done", "done"]
    at.radio(key="cmp-shape-cmp").set_value("violins").run()
    assert any("violins" in json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart"))
    at.button(key="cmp-report-cmp").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("figures, plotly.js inlined once" in c.value for c in at.caption)


@pytest.mark.browser
def test_report_renders_offline_in_a_browser(cache, tmp_path):
    """Chromium opens the report from a file with every network request refused: each figure draws."""
    import importlib.util
    import os

    chromium = os.environ.get("METACOG_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists() or importlib.util.find_spec("playwright") is None:
        pytest.skip(f"needs Chromium at {chromium} and the playwright package (CI installs both)")
    from playwright.sync_api import sync_playwright

    from metacog.compare.report import write_report

    out, rep = write_report(tmp_path / "r.html", cache / "workspaces" / "cmp")
    asked = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = b.new_page()
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else
                   (asked.append(route.request.url), route.abort()))
        page.goto(out.as_uri())
        page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {len(rep.figures)}",
                               timeout=60_000)
        drawn = page.evaluate("document.querySelectorAll('.js-plotly-plot').length")
        b.close()
    assert drawn == len(rep.figures) and asked == []
