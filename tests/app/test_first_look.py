"""Plots within a minute: the default study starts with a first look (a small study) and goes
on with the full one in the same job; the time estimate before a launch uses this machine's
measured stages (metacog.stages.estimate), and says when it is only a prior."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_estimate_prior_then_measured(tmp_path):
    from metacog.stages.estimate import PRIOR_S_PER_ITEM, estimate_study
    from metacog.core.settings import ModelSettings, StudySettings
    from metacog.core.workspace import Workspace

    m = ModelSettings(threads=2, dtype="float32")
    e = estimate_study(m, 100, base=tmp_path)
    assert "prior" in e.basis
    assert e.per_stage["answers"] == pytest.approx(100 * PRIOR_S_PER_ITEM["answers"])
    # two finished workspaces with this model: 0.2 and 0.4 s/item answers at 1 thread -> 0.1, 0.2 at 2 threads
    for name, sec in (("a", 20.0), ("b", 40.0)):
        ws = Workspace(tmp_path / name)
        ws.init(ModelSettings(threads=1, dtype="float32"), StudySettings())
        ws.mark_stage("answers", "k", seconds=sec, n=100)
        ws.mark_stage("activations", "k", seconds=sec * 2, n=100)
    other = Workspace(tmp_path / "c")  # another model: not used
    other.init(ModelSettings(model="gemma3-270m", threads=1, dtype="float32"), StudySettings())
    other.mark_stage("answers", "k", seconds=999.0, n=1)
    e = estimate_study(m, 100, base=tmp_path)
    assert "measured" in e.basis and "2 finished runs" in e.basis
    assert e.per_stage["answers"] == pytest.approx(100 * 0.15)
    assert e.per_stage["activations"] == pytest.approx(100 * 0.3)
    assert "min" in e.text() or " s " in e.text() + " "


def test_default_study_first_look_then_full(tmp_path, monkeypatch, tiny_lm):
    """Fresh cache: 'Run the default study' switches to the first look at once; it finishes
    first (its summary exists while the full study runs), then the full study."""
    from streamlit.testing.v1 import AppTest

    from metacog.app import ui

    monkeypatch.setenv("METACOG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("metacog.app.state.DEFAULT_STUDY", dict(model="default", dataset="world-facts", limit=40, seed=0))
    monkeypatch.setattr("metacog.app.state.FIRST_LOOK_ITEMS", 12)
    ui.set_model_loader(lambda settings: tiny_lm)
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        md = " ".join(m.value for m in at.markdown)
        assert "first look" in md and "about" in md and "prior" in md  # an estimate before any launch
        at.button(key="run-default").click().run()
        assert not at.exception, [e.value for e in at.exception]
        first = ui.first_look_root("default", "world-facts", 0)
        full = ui.workspace_root_for("default", "world-facts", 40, 0)
        assert Path(at.session_state["ws_root"]) == first  # switched to the first look at once
        job = ui.wait_job(first, timeout=300)
        assert job.status == "done", (job.error, job.tb)
        assert (first / "summary.json").exists() and (full / "summary.json").exists()
        assert (first / "summary.json").stat().st_mtime < (full / "summary.json").stat().st_mtime
        assert job.result["n_items"] == 12
        at.run()  # the finished study says where to go next, with links
        assert not at.exception, [e.value for e in at.exception]
        assert any("What next" in m.value for m in at.markdown)
        links = at.get("page_link")
        assert len(links) >= 3 and any("Playground" in str(getattr(x, "proto", x)) for x in links)
        ui.clear_job(first)
    finally:
        ui.set_model_loader(None)


def test_just_launched_workspace_is_listed(tmp_path, monkeypatch):
    """A workspace whose study was launched (job record written) but whose workspace.json does
    not exist yet is in the picker, so the app does not fall back to the default."""
    from streamlit.testing.v1 import AppTest

    from metacog.core.jobs import JOBS_DIR
    from metacog.core.workspace import atomic_write_json

    cache = tmp_path / "cache"
    w = cache / "workspaces" / "launched"
    atomic_write_json(w / JOBS_DIR / "study.json", {"id": "x", "status": "starting"})
    monkeypatch.setenv("METACOG_CACHE", str(cache))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["ws"] = "launched"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert Path(at.session_state["ws_root"]).name == "launched"
