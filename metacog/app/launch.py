"""Background jobs the app starts, all on :mod:`metacog.core.jobs` (the one job mechanism).

Each launcher builds the job's JSON ``spec`` (what the runner named in
:data:`metacog.core.jobs.RUNNERS` needs) and starts it under its :class:`~metacog.core.jobs.JobKind`
(one job of a kind at a time): as a :class:`~metacog.core.jobs.ProcessJob` — its own OS process,
which survives a closed tab and a server restart, and whose work does not compete with the
page's reruns for the interpreter — or, when the model exists only in memory
(:func:`metacog.app.loader.in_process_models`), as a thread :class:`~metacog.core.jobs.Job` that
calls the same backend function with the app's loaded model. Either way ``job.spec`` holds the
spec and ``job.result`` what the runner returned (for a study: its summary dict). Settings are
checked before a job starts, so a bad one raises here, not in the background.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

from metacog.app.loader import get_lm, in_process_models
from metacog.app import state  # state.FIRST_LOOK_ITEMS read at each call (a test may change it)
from metacog.app.state import first_look_root, workspace_root_for, workspaces_dir
from metacog.core.jobs import Job, JobKind, ProcessJob, Target
from metacog.core.settings import ModelSettings, StudySettings, to_dict
from metacog.core.workspace import Workspace

#: the study jobs of this process (one at a time: the CPU is the bottleneck)
STUDIES = JobKind("study", "a study")
_KINDS: dict[str, JobKind] = {}


# =========================================================================== kinds
def register_kind(kind: JobKind) -> JobKind:
    """Make a kind of job known to the progress fragments and the sidebar (idempotent); returns
    the registered kind (the first one registered under its name)."""
    return _KINDS.setdefault(kind.kind, kind)


def job_kind(kind: str, what: str) -> JobKind:
    """The process-wide registry of one kind of background job (created on first use; pages
    re-execute on every rerun, so they fetch it here rather than create it). ``what`` names it
    in messages ("a methods run")."""
    return _KINDS.get(kind) or register_kind(JobKind(kind, what))


def known_kinds() -> list[JobKind]:
    """Every registered kind of job (studies first), e.g. for the sidebar's running jobs."""
    return list(_KINDS.values())


register_kind(STUDIES)


def _launch(kind: JobKind, root: Path, spec: dict, thread_target: Callable[[], Target], label: str) -> Job:
    """Start ``spec`` under ``kind`` for the workspace ``root``: a process job by default, else a
    thread running ``thread_target()`` (built here, in the script thread, so a model loads once)."""
    if in_process_models():
        job = Job(kind.kind, str(root), thread_target(), label=label)
        job.spec = spec  # as a ProcessJob's: what was asked for, read by the panels
    else:
        job = ProcessJob(kind.kind, root, spec, label=label)
    return kind.start(root, job)


# =========================================================================== studies
def probes_available() -> bool:
    """Whether this build has the probes stage (``metacog/stages/probes.py``)."""
    return importlib.util.find_spec("metacog.stages.probes") is not None


def default_stages() -> tuple[str, ...]:
    """The stages a study runs by default: answers, activations and (when available) probes."""
    return ("answers", "activations", "probes") if probes_available() else ("answers", "activations")


def estimate_text(model: ModelSettings, n_items: int, stages=None) -> str:
    """"about 3.2 min (measured on this machine …)" for a study of ``n_items`` items
    (:func:`metacog.stages.estimate.estimate_study`, from past runs under the workspaces folder)."""
    from metacog.stages.estimate import estimate_study

    return estimate_study(model, n_items, tuple(stages or default_stages()), base=workspaces_dir()).text()


def start_study(root: Path, model: ModelSettings, study: StudySettings, lm=None, stages: tuple[str, ...] | None = None) -> Job:
    """Run (or resume) the study in ``root`` in the background (:func:`metacog.stages.study.run_study`):
    its own process by default (``lm`` is then not used: the process loads the model), else a
    thread with ``lm`` or the app's loaded model.

    Raises:
        WorkspaceError: a study is already running in this app.
    """
    root = Path(root).resolve()
    stages = tuple(stages or default_stages())
    spec = {"model": to_dict(model), "study": to_dict(study), "stages": list(stages)}

    def thread_target():
        from metacog.stages.study import run_study

        m = lm if lm is not None else get_lm(model)
        return lambda progress, should_stop: run_study(root, model, study, progress=progress, should_stop=should_stop,
                                                       stages=stages, lm=m)

    return _launch(STUDIES, root, spec, thread_target, f"study on {root.name}")


def start_first_look(model: ModelSettings, study: StudySettings, stages: tuple[str, ...] | None = None) -> Job:
    """The default study the way a demo wants it: a first look of FIRST_LOOK_ITEMS items (the
    first of the same seeded draw, so its items are the full study's first items) whose plots
    appear within about a minute on 2 cores, then the full study, in one background job. The
    app switches to the first look at once; the full study's workspace appears when it starts.
    The job's result is the first look's summary.

    Raises:
        WorkspaceError: a study is already running in this app.
    """
    first = first_look_root(model.model, str(study.dataset), study.seed)
    full = workspace_root_for(model.model, str(study.dataset), study.limit, study.seed)
    small = StudySettings(**{**to_dict(study), "limit": state.FIRST_LOOK_ITEMS, "split_fractions": tuple(study.split_fractions)})
    stages = tuple(stages or default_stages())
    spec = {"model": to_dict(model), "study": to_dict(small), "stages": list(stages),
            "then": [{"workspace": str(full), "study": to_dict(study)}]}

    def thread_target():
        from metacog.stages.study import run_study

        lm = get_lm(model)

        def both(progress, should_stop):
            s1 = run_study(first, model, small, progress=progress, should_stop=should_stop, stages=stages, lm=lm)
            run_study(full, model, study, progress=progress, should_stop=should_stop, stages=stages, lm=lm)
            return s1

        return both

    return _launch(STUDIES, first, spec, thread_target, f"study on {first.name}")


def get_job(root: Path) -> Job | None:
    """The study job of ``root`` known to this process (or still running in its own process), else None."""
    return STUDIES.get(root)


def running_job() -> Job | None:
    """The study job running in this app, else None."""
    return STUDIES.running()


def wait_job(root: Path, timeout: float = 120.0) -> Job | None:
    """Block until the study job of ``root`` ends or ``timeout`` seconds pass (tests, scripts);
    the job, or None when there is none."""
    job = get_job(root)
    return job.join(timeout) if job is not None else None


def clear_job(root: Path) -> None:
    """Forget the finished study job of ``root`` (a running one is kept)."""
    STUDIES.clear(root)


def busy_elsewhere(ws: Workspace) -> str | None:
    """If another process holds this workspace's study lock, who (else None). Read-only check."""
    job = get_job(ws.root)
    if job is not None and job.running:
        return None
    try:
        return ws.is_locked("study")
    except OSError:
        return None


# =========================================================================== other stages
def start_methods(ws: Workspace, methods: list[str], settings, threads: int = 1) -> Job:
    """Compute the methods table in the background (:func:`metacog.methods.run.run_methods`):
    its own process by default, else a thread with the app's loaded model. ``threads``: CPU
    threads of the process.

    Raises:
        WorkspaceError: a methods run is already running in this app.
    """
    spec = {"methods": list(methods), "settings": to_dict(settings), "threads": threads}

    def thread_target():
        from metacog.methods.run import run_methods

        lm = get_lm(ws.settings()[0])  # loaded once per process, in this (script) thread
        return lambda progress, should_stop: run_methods(ws, list(methods), settings, lm=lm, progress=progress,
                                                         should_stop=should_stop, threads=threads)

    return _launch(job_kind("methods", "a methods run"), ws.root, spec, thread_target, f"methods on {ws.root.name}")


def start_seed_sweep(ws: Workspace, spec: dict) -> Job:
    """Launch a seed sweep (:func:`metacog.sweeps.run_job`) in the background: its own process
    by default, else a thread. ``spec``: see ``run_job``.

    Raises:
        ValueError: a bad setting (checked before any job starts).
        WorkspaceError: a seed sweep is already running in this app.
    """
    from metacog.finetune.settings import FinetuneSettings
    from metacog.sweeps import SweepSettings, run_job

    SweepSettings(base=FinetuneSettings.from_dict(spec.get("finetune") or {}), seeds=tuple(spec["seeds"]),
                  targets=tuple(spec.get("targets") or ()), eval_limit=spec.get("eval_limit"),
                  threads=int(spec.get("threads") or 1))  # raises on a bad setting, before any job starts
    return _launch(job_kind("sweep", "a seed sweep"), ws.root, spec,
                   lambda: (lambda progress, should_stop: run_job(ws, spec, progress, should_stop)),
                   f"seed sweep on {ws.root.name}")


def start_steering(ws: Workspace, steer: dict, threads: int = 1) -> Job:
    """Launch a steering sweep (:func:`metacog.steering.run_steering`) in the background: its own
    process by default, else a thread with the app's loaded model. ``steer``: a SteerSpec dict.

    Raises:
        ValueError, TypeError: a bad setting (the SteerSpec is built before launch).
        WorkspaceError: a steering sweep is already running in this app.
    """
    from metacog.steering import SteerSpec, run_steering

    spec = SteerSpec(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in steer.items()})  # raises on a bad setting

    def thread_target():
        lm = get_lm(ws.settings()[0])
        return lambda progress, should_stop: run_steering(ws, lm, spec, progress, should_stop)

    return _launch(job_kind("steer", "a steering sweep"), ws.root, {"steer": dict(steer), "threads": threads},
                   thread_target, f"steering on {ws.root.name}")


def start_patching(ws: Workspace, plan, plan_args: dict) -> Job:
    """Launch a planned patching sweep (:mod:`metacog.patching`) in the background: its own
    process by default (which loads the model and plans the same sweep from ``plan_args``, the
    arguments of :func:`metacog.patching.plan_grid`, under the same sweep id), else a thread
    running ``plan`` with the app's loaded model. Returns the job (``patching`` kind).

    Raises:
        WorkspaceError: a patching sweep is already running in this app.
    """
    from metacog import patching as P  # torch-backed: loaded when a sweep starts, not with every page

    if in_process_models():
        return P.start_grid_job(ws, plan)
    return P.start_grid_process(ws, plan_args, grid_id=P.grid_id_for(plan))
