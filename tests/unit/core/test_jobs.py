"""Background jobs (metacog.core.jobs): progress, cooperative stop, errors kept with their
traceback, one running job per kind."""
from __future__ import annotations

import threading

import pytest

from metacog.core.jobs import Job, JobKind
from metacog.core.runtime import Stopped, check_stop
from metacog.core.workspace import WorkspaceError


def _loop(gate: threading.Event, n: int = 1000):
    def target(progress, should_stop):
        for i in range(n):
            gate.wait(5)
            check_stop(should_stop)
            progress(i + 1, n, "counting")
        return "finished"

    return target


def test_job_runs_reports_progress_and_returns(tmp_path):
    gate = threading.Event()
    gate.set()
    job = Job("t", str(tmp_path), _loop(gate, 5)).start().join(10)
    assert job.status == "done" and job.result == "finished"
    assert (job.done, job.total, job.message, job.fraction) == (5, 5, "counting", 1.0)
    assert job.ended is not None and job.elapsed >= 0


def test_stop_is_cooperative_and_keeps_progress(tmp_path):
    gate = threading.Event()
    job = Job("t", str(tmp_path), _loop(gate)).start()
    assert job.running
    job.request_stop()
    gate.set()
    job.join(10)
    assert job.status == "stopped" and job.done == 0 and job.result is None


def test_error_keeps_message_and_traceback(tmp_path):
    def boom(progress, should_stop):
        raise ValueError("bad setting")

    job = Job("t", str(tmp_path), boom).start().join(10)
    assert job.status == "error" and job.error == "ValueError: bad setting"
    assert "raise ValueError" in job.tb


def test_one_running_job_per_kind(tmp_path):
    kind = JobKind("t", "a test job")
    gate = threading.Event()
    a = kind.start(tmp_path / "a", Job("t", "a", _loop(gate)))
    with pytest.raises(WorkspaceError, match="a test job is already running"):
        kind.start(tmp_path / "b", Job("t", "b", _loop(gate)))
    assert kind.running() is a and kind.get(tmp_path / "a") is a and kind.find(a.id) is a
    kind.clear(tmp_path / "a")  # a running job is not cleared
    assert kind.get(tmp_path / "a") is a
    a.request_stop()
    gate.set()
    a.join(10)
    b = kind.start(tmp_path / "b", Job("t", "b", _loop(gate, 2))).join(10)
    assert b.status == "done" and kind.running() is None
    kind.clear(tmp_path / "a")
    assert kind.get(tmp_path / "a") is None
