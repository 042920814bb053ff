"""The Patching page under streamlit.testing.v1.AppTest on a tiny workspace (tiny random Llama
injected as the app's model): set up, run a sweep in the background, see the gradient lines,
heatmap, one cell's distribution and the per-pair table; a token click adds a position;
model → model from a run's adapter; a workspace without a sweep shows a message."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from metacog import patching as P

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
PAGE = "pages/7_Patching.py"


@pytest.fixture(scope="module")
def cache(tmp_path_factory, tiny_lm):
    from metacog.core.settings import ModelSettings, StudySettings
    from metacog.stages.study import run_study

    c = tmp_path_factory.mktemp("pt-cache")
    study = StudySettings(dataset="world-facts", limit=12, max_new_tokens=6, confidence_max_new_tokens=4, batch_size=8)
    run_study(c / "workspaces" / "pt", ModelSettings(threads=1), study, lm=tiny_lm, stages=("answers", "activations"))
    return c


@pytest.fixture
def env(cache, monkeypatch, tiny_lm):
    from metacog.app import ui

    monkeypatch.setenv("METACOG_CACHE", str(cache))
    ui.set_model_loader(lambda settings: tiny_lm)
    yield cache
    ui.set_model_loader(None)


def _open(ws="pt"):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["ws"] = ws
    at.run()
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, at.exception
    return at


def _wait(cache):
    from metacog.core.workspace import Workspace

    job = P.get_grid_job(Workspace(cache / "workspaces" / "pt"))
    assert job is not None
    job.thread.join(300)
    assert job.status == "done", (job.status, job.error, job.tb)
    return job


def _btn(at, key):
    return next(b for b in at.button if b.key == key)


def test_page_runs_a_sweep_and_shows_it(env):
    at = _open()
    assert any("No sweep" in i.value for i in at.info)
    sel = next(s for s in at.selectbox if s.key == "pt-by")
    assert sel.value == "ev"  # no probes in this workspace: E[v] ranks the items
    next(n for n in at.number_input if n.key == "pt-npairs").set_value(2)
    next(n for n in at.number_input if n.key == "pt-k").set_value(2)
    at.run()
    assert not at.exception, at.exception
    pills = at.get("button_group")
    assert pills, "the clickable prompt tokens"
    _btn(at, "pt-run-btn").click()
    at.run()
    job = _wait(env)
    at.run()
    assert not at.exception, at.exception
    charts = at.get("plotly_chart")
    assert len(charts) >= 3  # gradient lines, heatmap, one cell's distribution
    spec = json.loads(charts[0].proto.spec)
    names = [t.get("name", "") for t in spec["data"]]
    assert any(n.startswith("confidence slot") for n in names) and any(n.startswith("random positions") for n in names)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["pairs"] == "2"
    # the across-pairs tests: the same numbers as patching.json (same resamples and seed)
    saved = json.loads(P.grid_dir(job.ws, job.grid_id).joinpath("patching.json").read_text())
    g = saved["gradients"]["resid/confidence"]["normalised"]
    assert metrics["ρ confidence slot"] == ("n/a" if g["rho"] is None else f"{g['rho']:.2f}")
    tests = next(df.value for df in at.dataframe if "n_pairs" in df.value.columns)
    row = tests[tests["test"] == "layer gradient @ confidence slot"].iloc[0]
    assert row["n_pairs"] == g["n_pairs"] and row["unit"] == "pair"
    for col, want in (("p", g["p"]), ("CI lo", g["ci"][0]), ("CI hi", g["ci"][1])):
        assert (pd.isna(row[col]) and want is None) or row[col] == pytest.approx(want, abs=1e-4)
    c = saved["contrasts"]["resid/confidence-random"]["normalised"]["effect"]
    crow = tests[tests["statistic"] == "per-pair mean shift difference"].iloc[0]
    assert (pd.isna(crow["value"]) and c["diff"] is None) or crow["value"] == pytest.approx(c["diff"], abs=1e-4)
    assert any("Holm" in (cap.value or "") or "holm" in (cap.value or "") for cap in at.caption)
    assert any("Random positions drawn from: **item**" in cap.value for cap in at.caption)
    assert any(df.value.shape[0] == 2 for df in at.dataframe)  # the per-pair table
    assert P.grid_dir(job.ws, job.grid_id).joinpath("patching.json").exists()


def test_token_click_adds_a_position(env):
    at = _open()
    next(n for n in at.number_input if n.key == "pt-npairs").set_value(1)
    next(n for n in at.number_input if n.key == "pt-k").set_value(0)
    at.run()
    pills = at.get("button_group")[0]
    pills.select(5).run()  # click token 5 of the target prompt
    assert not at.exception, at.exception
    assert any("2 positions" in c.value for c in at.caption)  # confidence + token 5
    _btn(at, "pt-run-btn").click()
    at.run()
    job = _wait(env)
    res = P.load_results(job.ws, job.grid_id)
    assert set(res["position"]) == {"confidence", "token5"}


def test_model_to_model_from_a_run(env, tiny_lm):
    from metacog.core.workspace import Workspace
    from finetune_helpers import make_adapter

    ws = Workspace(env / "workspaces" / "pt")
    make_adapter(tiny_lm, ws.path("runs", "r9", "adapter"), meta={"base_weights_hash": tiny_lm.weights_hash})
    at = _open()
    next(r for r in at.radio if r.key == "pt-kind").set_value("model → model")
    at.run()
    assert not at.exception, at.exception
    next(s for s in at.selectbox if s.key == "pt-msplit").set_value("all")
    next(n for n in at.number_input if n.key == "pt-mn").set_value(1)
    at.run()
    _btn(at, "pt-run-btn").click()
    at.run()
    job = _wait(env)
    res = P.load_results(job.ws, job.grid_id)
    assert res["kind"].iloc[0] == "model" and res["direction"].iloc[0] == "run:r9→base"
    at.run()
    assert not at.exception, at.exception


def test_workspace_without_activations_says_so(env, tmp_path):
    from metacog.core.settings import ModelSettings, StudySettings
    from metacog.core.workspace import Workspace

    Workspace(env / "workspaces" / "empty").init(ModelSettings(threads=1), StudySettings(dataset="world-facts", limit=12))
    at = _open("empty")
    assert any("Run the study first" in i.value for i in at.info)
