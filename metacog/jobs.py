"""Background jobs of the app process: one thread per job, progress, cooperative stop.

Every long piece of work the app starts (a study, a patching sweep, the methods table) is a
:class:`Job`: a function ``target(progress, should_stop)`` run in a daemon thread. The work
reports ``progress(done, total, message)`` and checks ``should_stop()`` between units (the
backend raises :class:`metacog.runtime.Stopped` there); finished units are already saved by
the backend, so a stopped job resumes when started again.

A :class:`JobKind` is the registry of one kind of job in this process: jobs are keyed by
workspace, and at most one job of a kind runs at a time (a second start is refused with a
message). No Streamlit here: the UI draws jobs (``metacog.ui.job_progress``), tests drive them
directly.
"""
from __future__ import annotations

import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable

from .workspace import WorkspaceError

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
        self.done, self.total, self.message = int(done), int(total), message or self.message

    def should_stop(self) -> bool:
        return self.stop_event.is_set()

    # ---------------------------------------------------------------- what the UI reads
    def request_stop(self) -> None:
        self.stop_event.set()

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    @property
    def elapsed(self) -> float:
        return (self.ended or time.time()) - self.started

    def join(self, timeout: float | None = None) -> "Job":
        if self.thread is not None:
            self.thread.join(timeout)
        return self

    # ---------------------------------------------------------------- the thread
    def _run(self) -> None:
        from .runtime import Stopped

        try:
            self.result = self.target(self.progress, self.should_stop)
            self.status = "done"
        except Stopped as e:
            self.status, self.error = "stopped", str(e)
        except Exception as e:  # shown to the user, with the traceback folded away
            self.status, self.error, self.tb = "error", f"{type(e).__name__}: {e}", traceback.format_exc()
        finally:
            self.ended = time.time()

    def start(self) -> "Job":
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
        """Start ``job`` for the workspace ``root``; refuses while another job of this kind runs."""
        with self._lock:
            busy = self.running()
            if busy is not None:
                raise WorkspaceError(f"{self.what} is already running in this app ({Path(busy.key).name}); "
                                     "wait for it or stop it first")
            self._jobs[self._key(root)] = job
            return job.start()

    def get(self, root) -> Job | None:
        return self._jobs.get(self._key(root))

    def find(self, job_id: str) -> Job | None:
        return next((j for j in list(self._jobs.values()) if j.id == job_id), None)

    def running(self) -> Job | None:
        return next((j for j in list(self._jobs.values()) if j.running), None)

    def clear(self, root) -> None:
        with self._lock:
            job = self._jobs.get(self._key(root))
            if job is not None and not job.running:
                del self._jobs[self._key(root)]
