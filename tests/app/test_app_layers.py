"""The app layer's modules (metacog.app.*) and the shared figure look (metacog.viz.layout):
one definition of each rule, backend calls instead of statistics, the one job mechanism."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_ui_reexports_every_name_the_pages_use():
    from metacog.app import ui

    assert all(hasattr(ui, n) for n in ui.__all__)
    used = set()
    for p in sorted((ROOT / "pages").glob("*.py")) + [ROOT / "app.py"]:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ui":
                used.add(node.attr)
    assert used and used <= set(ui.__all__), sorted(used - set(ui.__all__))


def test_model_name_is_one_definition_with_its_fallbacks(tmp_path):
    from metacog import compare
    from metacog.app import ui
    from metacog.core.settings import ModelSettings, StudySettings, to_dict
    from metacog.core.workspace import Workspace, model_name

    assert ui.model_name is model_name and compare.model_name is model_name
    ws = Workspace(tmp_path / "w")
    assert model_name(ws) == "w"  # nothing written yet: the folder
    ws.root.mkdir()
    (ws.root / "workspace.json").write_text(json.dumps({"model": to_dict(ModelSettings(model="org/some-model")),
                                                       "study": to_dict(StudySettings())}))
    assert model_name(ws) == "org/some-model"  # the settings' model spec
    (ws.root / "summary.json").write_text(json.dumps({"model": {"spec": "from-summary"}}))
    assert model_name(ws) == "from-summary"
    (ws.root / "model.json").write_text(json.dumps({"name": "SmolLM2-135M-Instruct", "spec": "default"}))
    assert model_name(ws) == "SmolLM2-135M-Instruct"  # the loaded model's name wins


def test_reliability_drops_unparsed_items():
    from metacog.app import ui
    from metacog.stats import metrics

    c = np.array([0.1, np.nan, 0.9, 0.8, 0.35, np.nan])
    y = np.array([False, True, True, False, True, False])
    bins, e, n = ui.reliability(c, y, 5)
    ok = ~np.isnan(c)
    pd.testing.assert_frame_equal(bins, metrics.reliability_bins(c[ok], y[ok], 5))
    assert n == 4 and e == pytest.approx(metrics.ece(c[ok], y[ok], 5))
    # by hand: bins [0,.2) {0.1: wrong}, [.2,.4) {0.35: right}, [.8,1] {0.9 right, 0.8 wrong}
    assert e == pytest.approx((0.1 + 0.65 + 2 * abs(0.5 - 0.85)) / 4)
    bins, e, n = ui.reliability(np.full(3, np.nan), np.array([True, False, True]), 5)
    assert n == 0 and np.isnan(e) and int(bins["n"].sum()) == 0


def test_study_launcher_is_a_core_job(monkeypatch, tmp_path):
    """The app starts a study as a metacog.core.jobs.Job (threads) or ProcessJob (processes) — no
    job class of its own — and the job carries its spec (the panels read the stages from it)."""
    import metacog.stages.study as study_mod
    from metacog.app import ui
    from metacog.core.jobs import Job
    from metacog.core.settings import ModelSettings, StudySettings

    monkeypatch.setenv("METACOG_JOBS", "thread")
    monkeypatch.setattr(study_mod, "run_study", lambda root, model, study, **kw: {"n_items": 3, "stages": kw["stages"]})
    root = tmp_path / "ws"
    job = ui.start_study(root, ModelSettings(), StudySettings(limit=12), lm=object(), stages=("answers",))
    try:
        assert type(job) is Job and job.kind == "study"
        assert job.spec["stages"] == ["answers"] and job.spec["study"]["limit"] == 12
        job.join(30)
        assert job.status == "done" and job.result == {"n_items": 3, "stages": ("answers",)}
        assert ui.get_job(root) is job
    finally:
        ui.clear_job(root)


def test_patching_tests_table_regroups_the_stats_module_output():
    from metacog.app import patching_view as PV

    grads = {"confidence": {"rho": 0.5, "ci": [0.1, 0.8], "p": 0.03, "n_pairs": 8, "unit": "pair", "rho_of_means": 0.9}}
    contr = {"confidence": {"unit": "pair", "effect": {"diff": 0.2, "ci": [0.0, 0.4], "p": 0.05, "n": 8},
                            "gradient": {"diff": 0.3, "ci": [-0.1, 0.6], "p": 0.2, "n": 8}}}
    t = PV.tests_table(grads, contr)
    assert len(t) == 3
    assert t.iloc[0][["value", "CI lo", "CI hi", "p", "n_pairs", "descriptive ρ of layer means"]].tolist() == [0.5, 0.1, 0.8, 0.03, 8, 0.9]
    assert t.iloc[1]["statistic"] == "per-pair mean shift difference" and t.iloc[1]["value"] == 0.2
    assert t.iloc[2]["statistic"] == "per-pair ρ difference" and t.iloc[2]["CI lo"] == -0.1
    assert PV.CORRECTION == "holm"


def test_layout_is_public_and_shared():
    from metacog.viz import layout, plots

    assert layout.rgba("#1f77b4", 0.2) == "rgba(31,119,180,0.2)"
    with pytest.raises(ValueError):
        layout.rgba("#fff", 0.5)
    assert plots.PALETTE is layout.PALETTE and plots.fig_title is layout.fig_title
    fig = layout.layout(plots.go.Figure(), "T, eval split, n=3, m", height=300)
    assert fig.layout.title.text == "T, eval split, n=3, m" and fig.layout.height == 300
    assert layout.fig_title("X", split="all", n=3, model="m") == "X, all splits, n=3, m"
