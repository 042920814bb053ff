"""End to end on the embedded model (SmolLM2-135M-Instruct): a study on a few dozen items, a
2-seed sweep of a couple of LoRA updates each through the local process pool (the workers load the
model themselves), a relaunch that skips both, and the HTML report. Marked e2e (a few minutes)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.e2e


def test_real_sweep_and_report(tmp_path, real_study):
    from metacog.compare import item_agreement, load_run, run_metrics, seed_summary
    from metacog.finetune import FinetuneSettings
    from metacog.compare.report import write_report
    from metacog.stages.study import load_items
    from metacog.sweeps import SweepSettings, run_sweep

    torch.set_num_threads(1)
    from conftest import copy_workspace

    root = tmp_path / "smol"
    ws = copy_workspace(real_study, root)
    s = SweepSettings(base=FinetuneSettings(epochs=None, max_updates=2, batch_size=4, grad_accum=1), seeds=(42, 123), threads=1)
    rec = run_sweep(root, s, workers=1, quiet=True)
    assert rec["status"] == "done", rec["runs"]
    items = load_items(ws)
    n_eval = int((items["split"] == "eval").sum())
    runs = [load_run(ws, e["run"]) for e in rec["runs"]]
    for d in runs:
        assert d.eval["headline"]["n_eval"] == n_eval and d.eval["split"] == "eval"
        assert d.eval["model"]["name"] == "SmolLM2-135M-Instruct"
    per = run_metrics(runs, "ev_inline")
    summ = seed_summary(per)
    assert summ["n seeds"].iloc[0] == 2 and np.isfinite(summ["accuracy_mean"].iloc[0])
    ag = item_agreement(runs, "ev_inline")
    assert len(ag) == n_eval
    rec2 = run_sweep(root, s, workers=1, quiet=True)
    assert [e["action"] for e in rec2["runs"]] == ["skip", "skip"]
    out, rep = write_report(tmp_path / "report.html", ws)
    assert out.read_text().count("Plotly.newPlot(") == len(rep.figures) >= 9
    assert json.loads(ws.path("sweeps", rec["id"], "sweep.json").read_text())["status"] == "done"
