"""Background jobs of the app: progress, cooperative stop, and (by default) their own process.

Every long piece of work the app starts (a study, a patching sweep, the methods table) is a
:class:`Job`: a function ``target(progress, should_stop)`` run in a daemon thread. The work
reports ``progress(done, total, message)`` and checks ``should_stop()`` between units (the
backend raises :class:`metacog.core.runtime.Stopped` there); finished units are already saved by
the backend, so a stopped job resumes when started again.

A :class:`JobKind` is the registry of one kind of job in this process: jobs are keyed by
workspace, and at most one job of a kind runs at a time (a second start is refused with a
message). No Streamlit here: the UI draws jobs (``metacog.app.ui.job_progress``), tests drive them
directly.

**Process jobs.** A long job inside the Streamlit server competes with the page's own reruns
for the interpreter (a study got 2–7% of a CPU with its page open). A :class:`ProcessJob` runs
the work as its own OS process (``python -m metacog.core.jobs run``, a new session, so it outlives
a closed tab and a restarted server); a light monitor thread in the app mirrors its progress
record ``<workspace>/.metacog-jobs/<kind>.json`` into the job's fields and turns Stop into a stop
file the process polls. :func:`attach` finds a job still running after a server restart. The
work itself is a *runner* ``fn(ws, spec, progress, should_stop) -> JSON-able result`` named in
:data:`RUNNERS`; ``$METACOG_JOBS=thread`` (or a model loaded in memory only, as in tests) runs
jobs as threads instead.

Public entry: :class:`JobKind` (start/get/find the jobs of one kind); :class:`ProcessJob` for process jobs.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable

from metacog.core.workspace import Workspace, WorkspaceError, atomic_write_json, open_append, read_json

Target = Callable[[Callable[..., None], Callable[[], bool]], Any]


class Job:
    """One piece of background work and what is known about it while it runs and after."""

    def __init__(self, kind: str, key: str, target: Target, label: str = ""):
        self.kind, self.key, self.target = kind, key, target
        self.label = label or kind
        self.id = uuid.uuid4().hex[:8]
        self.status = "running"  # running | done | stopped | error
        self.message, self.done, self.total = "starting", 0, 0
        self.started, self.ended = time.time(), None
        self.error, self.tb = "", ""
        self.result: Any = None
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    # ---------------------------------------------------------------- what the work calls
    def progress(self, done: int, total: int, message: str = "") -> None:
        """Record progress: ``done`` of ``total`` work units and an optional message
        (an empty message keeps the previous one). Called by the work; never raises."""
        self.done, self.total, self.message = int(done), int(total), message or self.message

    def should_stop(self) -> bool:
        """True once :meth:`request_stop` was called; the work polls it between units."""
        return self.stop_event.is_set()

    # ---------------------------------------------------------------- what the UI reads
    def request_stop(self) -> None:
        """Ask the work to stop at its next check (cooperative; returns at once, nothing is killed)."""
        self.stop_event.set()

    @property
    def running(self) -> bool:
        """True while the status is ``running``."""
        return self.status == "running"

    @property
    def fraction(self) -> float:
        """Progress as a fraction in [0, 1] (``done / total``; 0 while ``total`` is unknown)."""
        return min(1.0, self.done / self.total) if self.total else 0.0

    @property
    def elapsed(self) -> float:
        """Seconds since the job started (up to its end once it ended)."""
        return (self.ended or time.time()) - self.started

    def join(self, timeout: float | None = None) -> "Job":
        """Wait for the job's thread, at most ``timeout`` seconds (None: until it ends); returns ``self``."""
        if self.thread is not None:
            self.thread.join(timeout)
        return self

    # ---------------------------------------------------------------- the thread
    def _run(self) -> None:
        from metacog.core.runtime import Stopped

        try:
            self.result = self.target(self.progress, self.should_stop)
            self.status = "done"
        except Stopped as e:
            self.status, self.error = "stopped", str(e)
        except Exception as e:  # shown to the user, with the traceback folded away
            self.status = "error"
            self.error = str(e) if isinstance(e, ChildError) else f"{type(e).__name__}: {e}"
            self.tb = getattr(e, "tb", "") or traceback.format_exc()  # a process job's: the work's own
        finally:
            self.ended = time.time()

    def start(self) -> "Job":
        """Start ``target`` in a daemon thread named ``metacog-<kind>-<id>``; returns ``self``."""
        self.thread = threading.Thread(target=self._run, name=f"metacog-{self.kind}-{self.id}", daemon=True)
        self.thread.start()
        return self


class JobKind:
    """The jobs of one kind in this process, keyed by workspace; one runs at a time."""

    def __init__(self, kind: str, what: str):
        self.kind, self.what = kind, what  # what: how a message names it ("a study", "a patching sweep")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(root) -> str:
        return str(Path(root).resolve())

    def start(self, root, job: Job) -> Job:
        """Start ``job`` for the workspace ``root``; refuses while another job of this kind runs.

        Raises:
            WorkspaceError: another job of this kind is running in this process."""
        with self._lock:
            busy = self.running()
            if busy is not None:
                raise WorkspaceError(f"{self.what} is already running in this app ({Path(busy.key).name}); "
                                     "wait for it or stop it first")
            self._jobs[self._key(root)] = job
            return job.start()

    def get(self, root) -> Job | None:
        """The job of ``root`` known to this process, or one still running in its own process
        (started before this app process, e.g. before a server restart), re-attached."""
        job = self._jobs.get(self._key(root))
        if job is None and self.kind in runners():
            with self._lock:
                job = self._jobs.get(self._key(root))
                if job is None:
                    job = attach(self.kind, root)
                    if job is not None:
                        self._jobs[self._key(root)] = job.start()
        return job

    def find(self, job_id: str) -> Job | None:
        """The job with id ``job_id`` among this kind's jobs in this process, or None."""
        return next((j for j in list(self._jobs.values()) if j.id == job_id), None)

    def running(self) -> Job | None:
        """The job of this kind that is running now (at most one), or None."""
        return next((j for j in list(self._jobs.values()) if j.running), None)

    def clear(self, root) -> None:
        """Forget the finished job of workspace ``root`` (a running job is kept)."""
        with self._lock:
            job = self._jobs.get(self._key(root))
            if job is not None and not job.running:
                del self._jobs[self._key(root)]


# ====================================================================================== processes
#: kind → "module:function" of the runner that does the work in the job's process
RUNNERS = {
    "study": "metacog.stages.study:run_job",
    "methods": "metacog.methods.run:run_job",
    "sweep": "metacog.sweeps:run_job",
    "patching": "metacog.patching:run_job",
    "steer": "metacog.steering:run_job",
}
#: more kinds from ``$METACOG_JOB_RUNNERS`` ("kind=package.module:function,…"), e.g. a lab's own jobs
ENV_RUNNERS = "METACOG_JOB_RUNNERS"
JOBS_DIR = ".metacog-jobs"


def runners() -> dict[str, str]:
    """:data:`RUNNERS` plus those named in ``$METACOG_JOB_RUNNERS``."""
    out = dict(RUNNERS)
    for part in os.environ.get(ENV_RUNNERS, "").split(","):
        k, _, v = part.strip().partition("=")
        if k and ":" in v:
            out[k.strip()] = v.strip()
    return out
RECORD_EVERY_S = 0.5


def executor() -> str:
    """``process`` (default) or ``thread``, from ``$METACOG_JOBS``."""
    v = os.environ.get("METACOG_JOBS", "process").strip().lower()
    return v if v in ("process", "thread") else "process"


def record_path(root, kind: str) -> Path:
    """The progress record ``<root>/.metacog-jobs/<kind>.json`` of the job of ``kind`` on workspace ``root``."""
    return Path(root) / JOBS_DIR / f"{kind}.json"


def _stop_path(root, kind: str, job_id: str) -> Path:
    return Path(root) / JOBS_DIR / f"{kind}-{job_id}.stop"


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    try:  # a zombie (ended, not yet reaped by its parent) is not running
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


class ChildError(RuntimeError):
    """The job's process ended with an error; ``tb`` is its traceback."""

    def __init__(self, message: str, tb: str = ""):
        super().__init__(message)
        self.tb = tb


class ProcessJob(Job):
    """A job whose work runs in its own process; this object (in the app) mirrors it.

    ``spec`` (JSON) is everything the runner needs; the record file holds status, progress,
    the result and, on failure, the error and its traceback. ``attach_record`` re-attaches to
    a process that is already running (after a server restart) instead of starting one."""

    def __init__(self, kind: str, root, spec: dict, label: str = "", attach_record: dict | None = None):
        self.root = Path(root).resolve()
        self.spec = spec
        self.pid: int | None = None
        self._attach = attach_record
        super().__init__(kind, str(self.root), self._monitor, label=label)
        if attach_record:
            self.id = attach_record["id"]
            self.started = attach_record.get("started") or self.started
            self.pid = attach_record.get("pid")

    # ---------------------------------------------------------------- app side
    def _spawn(self) -> None:
        ws = Workspace(self.root)
        ws.check_usable()
        rec = {"id": self.id, "kind": self.kind, "spec": self.spec, "status": "starting", "pid": None,
               "done": 0, "total": 0, "message": "starting a process", "started": self.started, "label": self.label}
        atomic_write_json(record_path(self.root, self.kind), rec)
        log = open_append(Path(self.root) / JOBS_DIR / f"{self.kind}.log", binary=True)
        try:
            p = subprocess.Popen([sys.executable, "-m", "metacog.core.jobs", "run", "--workspace", str(self.root),
                                  "--kind", self.kind, "--id", self.id], stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True, env=os.environ.copy())
        finally:
            log.close()
        self._proc = p
        self.pid = p.pid

    def _monitor(self, progress, should_stop):
        from metacog.core.runtime import Stopped

        if self._attach is None:
            self._spawn()
        proc = getattr(self, "_proc", None)
        stop_written = False
        rec: dict = {}
        while True:
            if should_stop() and not stop_written:
                atomic_write_json(_stop_path(self.root, self.kind, self.id), {"requested": time.time()})
                stop_written = True
            r = read_json(record_path(self.root, self.kind), {}) or {}
            if r.get("id") == self.id:
                rec = r
                if rec.get("total") is not None:
                    progress(rec.get("done") or 0, rec.get("total") or 0, rec.get("message") or "")
            ended = proc.poll() is not None if proc is not None else not _alive(self.pid)
            if rec.get("status") in ("done", "stopped", "error"):
                break
            if ended:
                time.sleep(0.2)  # the last record write may land just after the exit
                r = read_json(record_path(self.root, self.kind), {}) or {}
                rec = r if r.get("id") == self.id else rec
                if rec.get("status") not in ("done", "stopped", "error"):
                    log = Path(self.root) / JOBS_DIR / f"{self.kind}.log"
                    raise ChildError(f"the job's process (pid {self.pid}) ended without a result (killed?); see {log}")
                break
            time.sleep(0.25)
        if proc is not None:
            proc.wait()
        if rec["status"] == "stopped":
            raise Stopped(rec.get("error") or "stopped")
        if rec["status"] == "error":
            raise ChildError(rec.get("error") or "failed", rec.get("tb") or "")
        return rec.get("result")

    def request_stop(self) -> None:
        """Ask the job's process to stop: set the stop flag and write the stop file it polls
        at once (a read-only workspace is ignored here; the monitor retries)."""
        super().request_stop()
        try:  # also at once, in case the monitor thread is not polling (e.g. attached late)
            atomic_write_json(_stop_path(self.root, self.kind, self.id), {"requested": time.time()})
        except WorkspaceError:
            pass


def attach(kind: str, root) -> ProcessJob | None:
    """The job of ``kind`` still running in its own process on ``root`` (after the app
    restarted), mirrored again; None if there is none."""
    rec = read_json(record_path(root, kind), None) if Path(root).is_dir() else None
    if not isinstance(rec, dict) or rec.get("status") not in ("starting", "running") or not _alive(rec.get("pid")):
        return None
    return ProcessJob(kind, root, rec.get("spec") or {}, label=rec.get("label") or kind, attach_record=rec)


# ====================================================================================== child side
class _Reporter:
    """Progress and stop for the runner, in the job's process: the record is rewritten at most
    every RECORD_EVERY_S (and whenever the message changes); Stop is the stop file or SIGTERM."""

    def __init__(self, root: Path, kind: str, job_id: str, base: dict):
        self.root, self.kind, self.id = root, kind, job_id
        self.rec = dict(base)
        self.last = 0.0
        self.sigterm = False
        signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, *_):
        self.sigterm = True

    def write(self, **kw) -> None:
        self.rec.update(kw)
        atomic_write_json(record_path(self.root, self.kind), self.rec)
        self.last = time.monotonic()

    def progress(self, done: int, total: int, message: str = "") -> None:
        changed = (message or self.rec.get("message")) != self.rec.get("message")
        self.rec.update(done=int(done), total=int(total), message=message or self.rec.get("message"))
        if changed or time.monotonic() - self.last >= RECORD_EVERY_S or (total and done >= total):
            self.write()

    def should_stop(self) -> bool:
        return self.sigterm or _stop_path(self.root, self.kind, self.id).exists()


def run_child(root: str, kind: str, job_id: str) -> int:
    """Entry of a job's process: run ``RUNNERS[kind]`` on the spec of the record ``job_id``.
    Raises nothing: the runner's error (an unknown kind included) is recorded with its traceback
    (status ``error``) and gives exit status 1; 0 when done or stopped, 2 when there is no record."""
    from metacog.core.runtime import Stopped

    root_p = Path(root).resolve()
    rec = read_json(record_path(root_p, kind), None)
    if not isinstance(rec, dict) or rec.get("id") != job_id:
        print(f"metacog.core.jobs: no record of job {job_id} in {record_path(root_p, kind)}", file=sys.stderr)
        return 2
    rep = _Reporter(root_p, kind, job_id, rec)
    rep.write(status="running", pid=os.getpid(), message="loading")
    try:
        if kind not in runners():
            raise ValueError(f"no runner for job kind {kind!r} (known: {', '.join(sorted(runners()))})")
        mod, fn = runners()[kind].split(":")
        runner = getattr(importlib.import_module(mod), fn)
        result = runner(Workspace(root_p), rec.get("spec") or {}, rep.progress, rep.should_stop)
        rep.write(status="done", result=result, ended=time.time())
        return 0
    except Stopped as e:
        rep.write(status="stopped", error=str(e), ended=time.time())
        return 0
    except BaseException as e:  # recorded for the app; the log has it too
        rep.write(status="error", error=f"{type(e).__name__}: {e}", tb=traceback.format_exc(), ended=time.time())
        traceback.print_exc()
        return 1
    finally:
        import contextlib

        with contextlib.suppress(OSError):
            _stop_path(root_p, kind, job_id).unlink()


def main(argv=None) -> int:
    """``python -m metacog.core.jobs run --workspace W --kind K --id I``: run one job in this
    process (:func:`run_child`); returns its exit status (0 done or stopped, 1 error, 2 no record)."""
    p = argparse.ArgumentParser(prog="python -m metacog.core.jobs", description="run one app job in its own process")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--workspace", required=True)
    r.add_argument("--kind", required=True)
    r.add_argument("--id", required=True)
    a = p.parse_args(argv)
    return run_child(a.workspace, a.kind, a.id)


if __name__ == "__main__":
    sys.exit(main())
