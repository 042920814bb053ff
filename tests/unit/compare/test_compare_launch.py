"""Seed sweeps launched from the Compare page (not only the CLI), and honest single-seed rows."""
from __future__ import annotations

from pathlib import Path

import torch

from finetune_helpers import build_workspace, load_tiny, save_tiny_model

ROOT = Path(__file__).resolve().parents[3]


def test_compare_page_launches_a_seed_sweep(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from metacog import compare as C
    from metacog.app import ui

    torch.set_num_threads(1)
    lm = load_tiny(save_tiny_model(tmp_path / "tiny"))
    cache = tmp_path / "cache"
    ws = build_workspace(cache / "workspaces" / "cmp", lm, n=40)
    monkeypatch.setenv("METACOG_CACHE", str(cache))
    ui.set_model_loader(lambda settings: lm)  # app jobs as threads (the sweep's workers are processes)
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.query_params["ws"] = "cmp"
        at.run()
        at.switch_page("pages/8_Compare.py").run()
        assert not at.exception, [e.value for e in at.exception]
        at.text_input(key="cmp-sw-seeds-cmp").set_value("5")
        at.multiselect(key="cmp-sw-tg-cmp").set_value(["probe"])
        at.number_input(key="cmp-sw-ep-cmp").set_value(1)
        at.number_input(key="cmp-sw-el-cmp").set_value(10)
        at.button(key="cmp-sw-go-cmp").click().run()
        assert not at.exception, [e.value for e in at.exception]
        job = ui.job_kind("sweep", "a seed sweep").get(ws.root)
        assert job is not None
        job.join(600)
        assert job.status == "done", (job.error, job.tb)
        done = C.evaluated_runs(ws)
        assert len(done) == 1
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert any("One run picked" in c.value for c in at.caption)
        summ = C.seed_summary(C.run_metrics([C.load_run(str(ws.root), done[0])], "verbal_inline"))
        assert summ["auroc"].iloc[0] == "n/a" or "(1 seed: no sd)" in summ["auroc"].iloc[0]
    finally:
        ui.set_model_loader(None)
