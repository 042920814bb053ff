"""App jobs in their own process (metacog.core.jobs.ProcessJob): the work runs in another PID, its
progress, result, Stop, errors (with the work's own traceback) and a killed process reach the
app; a job started before a server restart is re-attached; the real study runs this way."""
from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from metacog.core.jobs import JobKind, ProcessJob, attach, record_path
from metacog.core.workspace import read_json

RUNNER = textwrap.dedent('''
    import os, time
    from metacog.core.runtime import check_stop

    def count(ws, spec, progress, should_stop):
        n = int(spec["n"])
        for i in range(n):
            check_stop(should_stop)
            time.sleep(float(spec.get("sleep", 0.01)))
            progress(i + 1, n, "counting")
        if spec.get("fail"):
            raise ValueError("bad input in the job")
        return {"pid": os.getpid(), "n": n}
''')


@pytest.fixture
def kind(tmp_path, monkeypatch):
    d = tmp_path / "mod"
    d.mkdir()
    (d / "jobs_test_runner.py").write_text(RUNNER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(d), str(Path(__file__).resolve().parents[3]),
                                                      os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("METACOG_JOB_RUNNERS", "count=jobs_test_runner:count")
    sys.path.insert(0, str(d))
    yield JobKind("count", "a counting job")
    sys.path.remove(str(d))


def _wait(pred, timeout=60):
    t0 = time.time()
    while not pred():
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.05)


def test_process_job_runs_elsewhere_and_reports(tmp_path, kind):
    root = tmp_path / "ws"
    job = kind.start(root, ProcessJob("count", root, {"n": 5}, label="count")).join(60)
    assert job.status == "done", (job.error, job.tb)
    assert job.result["n"] == 5 and job.result["pid"] != os.getpid()
    assert (job.done, job.total, job.message) == (5, 5, "counting")
    assert read_json(record_path(root, "count"))["status"] == "done"


def test_process_job_stop_keeps_progress(tmp_path, kind):
    root = tmp_path / "ws"
    job = kind.start(root, ProcessJob("count", root, {"n": 10_000, "sleep": 0.01}))
    _wait(lambda: job.done >= 3)
    job.request_stop()
    job.join(60)
    assert job.status == "stopped" and 3 <= job.done < 10_000


def test_process_job_error_carries_the_work_traceback(tmp_path, kind):
    root = tmp_path / "ws"
    job = kind.start(root, ProcessJob("count", root, {"n": 2, "fail": True})).join(60)
    assert job.status == "error" and job.error == "ValueError: bad input in the job"
    assert 'raise ValueError("bad input in the job")' in job.tb  # the child's frame, not the monitor's


def test_killed_process_is_an_error_not_a_hang(tmp_path, kind):
    root = tmp_path / "ws"
    job = kind.start(root, ProcessJob("count", root, {"n": 10_000, "sleep": 0.01}))
    _wait(lambda: job.done >= 2)
    os.kill(job.pid, signal.SIGKILL)
    job.join(60)
    assert job.status == "error" and "ended without a result" in job.error


def test_job_survives_an_app_restart_and_can_be_stopped(tmp_path, kind):
    root = tmp_path / "ws"
    job = kind.start(root, ProcessJob("count", root, {"n": 10_000, "sleep": 0.01}))
    _wait(lambda: job.done >= 2)
    # a fresh app process knows nothing of it: the registry re-attaches from the record
    fresh = JobKind("count", "a counting job")
    again = fresh.get(root)
    assert again is not None and again.id == job.id and again.running and again is not job
    _wait(lambda: again.done > 2)
    again.request_stop()
    again.join(60)
    job.join(60)
    assert again.status == "stopped" and job.status == "stopped"
    assert attach("count", root) is None  # nothing left running


def test_app_study_runs_in_its_own_process(tmp_path, monkeypatch):
    """ui.start_study without an in-memory model: the study is a process job on a tiny model
    saved to disk, and its summary comes back to the app."""
    import json

    from finetune_helpers import save_tiny_model

    from metacog.app import ui
    from metacog.core.settings import ModelSettings, StudySettings

    model_dir = save_tiny_model(tmp_path / "tiny")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} plus one?", "answers": [str(i + 1)],
                                        "category": f"c{i % 2}"}) + "\n" for i in range(20)))
    monkeypatch.setenv("METACOG_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("METACOG_JOBS", raising=False)
    ui.set_model_loader(None)
    root = tmp_path / "cache" / "workspaces" / "p"
    job = ui.start_study(root, ModelSettings(model=str(model_dir), dtype="float32", threads=1),
                         StudySettings(dataset=str(data), max_new_tokens=4, batch_size=8, probe_folds=3), None,
                         ("answers", "activations"))
    assert isinstance(job, ProcessJob) and job.kind == "study"  # the one job mechanism (metacog.core.jobs)
    job.join(300)
    assert job.status == "done", (job.error, job.tb)
    assert job.result["n_items"] == 20 and job.pid != os.getpid()
    assert (root / "summary.json").exists()
    ui.clear_job(root)


def test_patching_sweep_as_a_process_job_matches_in_process(tmp_path, monkeypatch):
    """The Patching page's sweep in its own process plans the same sweep (same id) as the page
    and gives the same results as running it in this process."""
    import dataclasses

    import pandas as pd
    import torch

    from finetune_helpers import build_workspace, load_tiny, save_tiny_model

    from metacog import patching as P

    torch.set_num_threads(1)
    lm = load_tiny(save_tiny_model(tmp_path / "tiny"))
    ws = build_workspace(tmp_path / "w", lm, n=24)
    monkeypatch.delenv("METACOG_JOBS", raising=False)
    spec = P.PatchSpec(layers=(1, 2), positions=("confidence", "random:1"), seed=3)
    args = dict(source="high", target="low", spec=dataclasses.asdict(spec), n_pairs=2, by="ev", split="all",
                source_correct="any", target_correct="any", pool=None)
    plan = P.plan_grid(ws, lm, "high", "low", spec, n_pairs=2, by="ev", split="all")
    job = P.start_grid_process(ws, args)
    job.join(300)
    assert job.status == "done", (job.error, job.tb)
    assert job.pid != os.getpid()
    sid = P.grid_id_for(plan)
    got = P.load_results(ws, sid)
    assert len(got) > 0
    # the same plan in this process: identical rows (the sweep is resumable, so clear it first)
    import shutil

    shutil.rmtree(P.grid_dir(ws, sid))
    P.run_grid(ws, plan)
    again = P.load_results(ws, sid)
    cols = [c for c in got.columns if c not in ("seconds",) and got[c].dtype != object]
    pd.testing.assert_frame_equal(got[cols].reset_index(drop=True), again[cols].reset_index(drop=True), check_exact=False,
                                  rtol=1e-6, atol=1e-7)
    P.GRID_JOBS.clear(ws.root)
