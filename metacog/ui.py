"""Shared Streamlit helpers for the pages: workspace picker, cached model loader, background
study runs with progress and Stop, cached artifact readers, figure/table display with downloads.

Pages stay thin: they read artifacts through the loaders here, call :mod:`metacog.plots`
builders and backend functions, and display the result. Nothing here computes science beyond
calling :mod:`metacog.metrics` on already computed scores.

Model loader injection
----------------------
The app loads models through :func:`get_lm` (``st.cache_resource``: once per process and
settings). What it calls is, in order: a loader installed with :func:`set_model_loader`
(in-process, e.g. a test that runs ``AppTest``), else ``$METACOG_MODEL_LOADER`` =
``"package.module:function"`` (for a ``streamlit run`` subprocess), else
:func:`metacog.models.load_model`. A loader takes a :class:`~metacog.settings.ModelSettings`
and returns a :class:`~metacog.models.LoadedModel`.

Long work
---------
:func:`start_study` runs :func:`metacog.study.run_study` in the background — in its own
process (:class:`metacog.jobs.ProcessJob`; it survives a closed tab and a server restart, and
the page's reruns do not compete with it for the interpreter), or a thread when the model
exists only in memory — one at a time (the CPU is the bottleneck); :func:`job_panel` shows it
with ``st.progress`` (a fragment refreshed every second) and a Stop button, so the stage stops
after its current batch and saves its work.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import time
import traceback
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import numpy as np
import pandas as pd
import streamlit as st

from . import metrics
from .jobs import Job, JobKind, ProcessJob, executor
from .settings import MODES, POSITIONS, ModelSettings, StudySettings, from_dict, to_dict
from .workspace import cache_dir  # $METACOG_CACHE, read at each call
from .workspace import Workspace, WorkspaceError

LOADER_ENV = "METACOG_MODEL_LOADER"
DEFAULT_STUDY = dict(model="default", dataset="world-facts", limit=200, seed=0)
MODE_KEYS = {"inline": "inline", "two-pass": "two_pass"}


def mode_keys(df: pd.DataFrame) -> dict[str, str]:
    """The elicitation modes a results table holds (two-pass only where the study computed it:
    ``StudySettings.two_pass``), as ``{mode: column suffix}``."""
    return {m: k for m, k in MODE_KEYS.items() if f"verbal_{k}" in df}


def two_pass_note(df: pd.DataFrame) -> str | None:
    """The sentence pages show where the study ran without the two-pass mode, else None."""
    from metacog.settings import TWO_PASS_OFF

    return None if "verbal_two_pass" in df else TWO_PASS_OFF[0].upper() + TWO_PASS_OFF[1:] + "."
SPLITS = ("eval", "calibration", "train", "all")
PLOTLY_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}
ITEM_PAGE = "Item_explorer"  # url path of pages/4_Item_explorer.py


# =========================================================================== paths


def workspaces_dir() -> Path:
    return cache_dir() / "workspaces"


def workspace_root_for(model: str, dataset: str, limit, seed: int) -> Path:
    """Same naming as ``metacog study`` without ``--workspace`` (:func:`metacog.cli.default_workspace`)."""
    from .cli import default_workspace

    return workspaces_dir() / default_workspace(model, dataset, limit, seed).name


def default_root() -> Path:
    return workspace_root_for(**DEFAULT_STUDY)


def default_settings() -> tuple[ModelSettings, StudySettings]:
    return ModelSettings(model=DEFAULT_STUDY["model"]), StudySettings(
        dataset=DEFAULT_STUDY["dataset"], limit=DEFAULT_STUDY["limit"], seed=DEFAULT_STUDY["seed"])


def list_workspaces() -> list[Workspace]:
    from .workspace import list_workspaces as _lw

    return _lw(workspaces_dir())


def probes_available() -> bool:
    """Whether this build has the probes stage (``metacog/probes.py``)."""
    return importlib.util.find_spec("metacog.probes") is not None


def default_stages() -> tuple[str, ...]:
    return ("answers", "activations", "probes") if probes_available() else ("answers", "activations")


# =========================================================================== model loader
_loader_override: Callable | None = None


def set_model_loader(fn: Callable[[ModelSettings], object] | None) -> None:
    """Install (or, with None, remove) the in-process model loader and forget cached models."""
    global _loader_override
    _loader_override = fn
    _load_cached.clear()


def model_loader() -> tuple[Callable, str]:
    """``(loader, loader_id)``: override, else ``$METACOG_MODEL_LOADER``, else load_model."""
    if _loader_override is not None:
        fn = _loader_override
        return fn, f"override:{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
    from .models import loader_from_env

    spec = os.environ.get(LOADER_ENV, "").strip()
    return loader_from_env(), (f"env:{spec}" if spec else "metacog.models.load_model")


@st.cache_resource(show_spinner=False, max_entries=2)
def _load_cached(settings_json: str, loader_id: str):
    fn, _ = model_loader()
    return fn(from_dict(ModelSettings, json.loads(settings_json)))


def get_lm(model: ModelSettings):
    """The loaded model for these settings, loaded once per process (``st.cache_resource``)."""
    _, lid = model_loader()
    with st.spinner(f"Loading model '{model.model}' (once per app process)…"):
        return _load_cached(json.dumps(to_dict(model), sort_keys=True), lid)


# =========================================================================== background jobs
class StudyJob(Job):
    """The study running in the background for one workspace (see :mod:`metacog.jobs`)."""

    def __init__(self, root: Path, model: ModelSettings, study: StudySettings, stages: tuple[str, ...], lm):
        from .study import run_study

        self.root, self.model, self.study, self.stages = Path(root), model, study, tuple(stages)
        super().__init__("study", str(root), lambda progress, should_stop: run_study(
            self.root, model, study, progress=progress, should_stop=should_stop, stages=self.stages, lm=lm),
            label=f"study on {Path(root).name}")

    @property
    def summary(self) -> dict | None:
        return self.result


class StudyProcessJob(ProcessJob):
    """The study running in its own process for one workspace (see :mod:`metacog.jobs`)."""

    def __init__(self, root: Path, model: ModelSettings, study: StudySettings, stages: tuple[str, ...]):
        self.model, self.study, self.stages = model, study, tuple(stages)
        super().__init__("study", root, {"model": to_dict(model), "study": to_dict(study), "stages": list(stages)},
                         label=f"study on {Path(root).name}")

    @property
    def summary(self) -> dict | None:
        return self.result


STUDIES = JobKind("study", "a study")


def in_process_models() -> bool:
    """True when jobs must run as threads of this process: ``$METACOG_JOBS=thread``, or a model
    loader that exists only in memory (tests inject a tiny model this way)."""
    return executor() == "thread" or _loader_override is not None


FIRST_LOOK_ITEMS = 24


def first_look_root(model: str, dataset: str, seed: int) -> Path:
    return workspace_root_for(model, dataset, FIRST_LOOK_ITEMS, seed)


def start_first_look(model: ModelSettings, study: StudySettings, stages: tuple[str, ...] | None = None):
    """The default study the way a demo wants it: a first look of FIRST_LOOK_ITEMS items (the
    first of the same seeded draw, so its items are the full study's first items) whose plots
    appear within about a minute on 2 cores, then the full study, in one background job. The
    app switches to the first look at once; the full study's workspace appears when it starts."""
    first = first_look_root(model.model, str(study.dataset), study.seed)
    full = workspace_root_for(model.model, str(study.dataset), study.limit, study.seed)
    small = StudySettings(**{**to_dict(study), "limit": FIRST_LOOK_ITEMS, "split_fractions": tuple(study.split_fractions)})
    stages = tuple(stages or default_stages())
    if in_process_models():
        lm = get_lm(model)
        from .study import run_study

        def both(progress, should_stop):
            s1 = run_study(first, model, small, progress=progress, should_stop=should_stop, stages=stages, lm=lm)
            run_study(full, model, study, progress=progress, should_stop=should_stop, stages=stages, lm=lm)
            return s1

        job = StudyJob(first, model, small, stages, lm)
        job.target = both
        return STUDIES.start(first, job)
    job = StudyProcessJob(first, model, small, stages)
    job.spec["then"] = [{"workspace": str(full), "study": to_dict(study)}]
    return STUDIES.start(first, job)


def estimate_text(model: ModelSettings, n_items: int, stages=None) -> str:
    """"about 3.2 min (measured on this machine …)" for a study of ``n_items``."""
    from .estimate import estimate_study

    return estimate_study(model, n_items, tuple(stages or default_stages()), base=workspaces_dir()).text()


def start_study(root: Path, model: ModelSettings, study: StudySettings, lm=None, stages: tuple[str, ...] | None = None):
    """Run (or resume) the study in ``root`` in the background — its own process by default
    (``lm`` is then not used: the process loads the model), else a thread; refuses a second run."""
    root = Path(root).resolve()
    stages = tuple(stages or default_stages())
    if in_process_models():
        return STUDIES.start(root, StudyJob(root, model, study, stages, lm if lm is not None else get_lm(model)))
    return STUDIES.start(root, StudyProcessJob(root, model, study, stages))


def start_methods(ws: Workspace, methods: list[str], settings, threads: int = 1) -> Job:
    """Compute the methods table in the background (:func:`metacog.methods.run.run_methods`):
    its own process by default, else a thread with the app's loaded model."""
    from .methods.run import run_methods

    kind = job_kind("methods", "a methods run")
    label = f"methods on {ws.root.name}"
    if in_process_models():
        m_, _ = ws.settings()
        lm = get_lm(m_)  # loaded once per process, in this (script) thread
        return kind.start(ws.root, Job("methods", str(ws.root), lambda progress, should_stop: run_methods(
            ws, list(methods), settings, lm=lm, progress=progress, should_stop=should_stop, threads=threads), label=label))
    return kind.start(ws.root, ProcessJob("methods", ws.root, {"methods": list(methods), "settings": to_dict(settings),
                                                                 "threads": threads}, label=label))


def start_seed_sweep(ws: Workspace, spec: dict) -> Job:
    """Launch a seed sweep (:func:`metacog.sweeps.run_job`) in the background: its own process
    by default, else a thread. ``spec``: see ``run_job``. Settings are checked before launch."""
    from .finetune.settings import FinetuneSettings
    from .sweeps import SweepSettings, run_job

    SweepSettings(base=FinetuneSettings.from_dict(spec.get("finetune") or {}), seeds=tuple(spec["seeds"]),
                  targets=tuple(spec.get("targets") or ()), eval_limit=spec.get("eval_limit"),
                  threads=int(spec.get("threads") or 1))  # raises on a bad setting, before any job starts
    kind = job_kind("sweep", "a seed sweep")
    label = f"seed sweep on {ws.root.name}"
    if in_process_models():
        return kind.start(ws.root, Job("sweep", str(ws.root), lambda progress, should_stop: run_job(
            ws, spec, progress, should_stop), label=label))
    return kind.start(ws.root, ProcessJob("sweep", ws.root, spec, label=label))


def start_steering(ws: Workspace, steer: dict, threads: int = 1) -> Job:
    """Launch a steering sweep (:func:`metacog.steering.run_job`) in the background: its own
    process by default, else a thread with the app's loaded model. ``steer``: a SteerSpec dict
    (checked before launch)."""
    from .steering import SteerSpec, run_steering

    spec = SteerSpec(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in steer.items()})  # raises on a bad setting
    kind = job_kind("steer", "a steering sweep")
    label = f"steering on {ws.root.name}"
    if in_process_models():
        m_, _ = ws.settings()
        lm = get_lm(m_)
        return kind.start(ws.root, Job("steer", str(ws.root), lambda progress, should_stop: run_steering(
            ws, lm, spec, progress, should_stop), label=label))
    return kind.start(ws.root, ProcessJob("steer", ws.root, {"steer": dict(steer), "threads": threads}, label=label))


def get_job(root: Path) -> StudyJob | None:
    return STUDIES.get(root)


def running_job() -> StudyJob | None:
    return STUDIES.running()


def wait_job(root: Path, timeout: float = 120.0) -> StudyJob | None:
    """Block until the job of ``root`` ends (tests, scripts)."""
    job = get_job(root)
    return job.join(timeout) if job is not None else None


def clear_job(root: Path) -> None:
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


def _fmt_secs(s: float) -> str:
    s = int(s)
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def job_outcome(job: Job, done_text: str, what: str, resume_hint: str) -> None:
    """How a finished job ended: success text, stopped (work kept), or the error + traceback."""
    if job.status == "done":
        st.success(done_text)
    elif job.status == "stopped":
        st.warning(f"{what} stopped after {_fmt_secs(job.elapsed)} at '{job.message}' ({job.done}/{job.total}). "
                   f"Finished work is saved; {resume_hint}")
    elif job.status == "error":
        st.error(f"{what} failed: {job.error}")
        with st.expander("details (traceback)"):
            st.code(job.tb or job.error)


def job_progress(kind: JobKind, job: Job, where: str = "main", stop_help: str = "") -> None:
    """Live progress bar + Stop button of a running job (redraws every second; the page reruns
    when the job ends or its message changes, so finished artifacts appear)."""
    register_kind(kind)
    _live_progress(kind.kind, job.id, where, stop_help)


_KINDS: dict[str, JobKind] = {}


def register_kind(kind: JobKind) -> JobKind:
    """Make a kind of job known to the progress fragments and the sidebar (idempotent)."""
    return _KINDS.setdefault(kind.kind, kind)


def job_kind(kind: str, what: str) -> JobKind:
    """The process-wide registry of one kind of background job (created on first use; pages
    re-execute on every rerun, so they fetch it here rather than create it)."""
    return _KINDS.get(kind) or register_kind(JobKind(kind, what))


register_kind(STUDIES)


def job_panel(ws: Workspace, where: str = "main") -> StudyJob | None:
    """Progress + Stop for a study running in this process on ``ws``; its outcome when it ended.
    Also says when another process is running a study on it."""
    job = get_job(ws.root)
    if job is None:
        other = busy_elsewhere(ws)
        if other:
            st.info(f"A study is running on this workspace in another process ({other}). "
                    "Finished stages appear here when it writes them.")
            if st.button("Refresh", key=f"refresh-{where}"):
                st.rerun()
        return None
    if job.running:
        job_progress(STUDIES, job, where, "stop after the current batch; finished work is kept and a re-run resumes")
    else:
        s = job.summary or {}
        acc = s.get("accuracy")
        job_outcome(job, f"Study finished in {_fmt_secs(job.elapsed)}: {s.get('n_items', '?')} items"
                    + (f", accuracy {acc:.1%}" if isinstance(acc, float) else "") + f" (stages: {', '.join(job.stages)}).",
                    "The study", "Run study again resumes from it.")
        if job.status == "done":
            what_next(where)
    return job


NEXT_PAGES = (
    ("pages/2_Answers_and_confidence.py", "Answers & confidence: what the model says, and the exact 0–100 distribution"),
    ("pages/3_Probes.py", "Probes: what its hidden states know, layer by layer"),
    ("pages/10_Playground.py", "Playground: ask your own question"),
    ("pages/5_Fine-tune.py", "Fine-tune: teach it to say what the probe knows"),
)


def what_next(where: str = "main") -> None:
    """Links to the pages that show a finished study (and where to go from there)."""
    st.markdown("**What next**")
    for path, label in NEXT_PAGES:
        try:
            st.page_link(path, label=label)
        except Exception:  # outside app.py's navigation (a page run alone): plain text
            st.markdown(f"- {label}")


@st.fragment(run_every=2.0)
def _live_progress(kind: str, job_id: str, where: str, stop_help: str = "") -> None:
    job = _KINDS[kind].find(job_id)
    if job is None:
        return
    if not job.running:
        st.rerun()  # the whole page redraws with the new artifacts
    seen_key = f"_job_msg_{job.id}_{where}"
    seen = st.session_state.get(seen_key)
    st.session_state[seen_key] = job.message
    if seen is not None and seen != job.message:
        st.rerun()  # a stage finished: redraw the page so its artifacts show
    label = f"{job.message}: {job.done}/{job.total}" if job.total else job.message
    st.progress(job.fraction, text=f"Running {job.label} — {label} · {_fmt_secs(job.elapsed)}")
    if job.stop_event.is_set():
        st.caption("Stopping after the current unit of work…")
    elif st.button("Stop", key=f"stop-{job.id}-{where}", help=stop_help or "stop after the current unit; finished work is kept"):
        job.request_stop()
        st.caption("Stopping after the current unit of work…")


def run_button(ws: Workspace, label: str = "Run study", key: str = "run", model: ModelSettings | None = None,
               study: StudySettings | None = None, stages: tuple[str, ...] | None = None, primary: bool = True) -> bool:
    """A button that starts the study on ``ws`` (its saved settings, or the given ones, or the
    defaults); disabled while a study runs. Returns True when it started one (then reruns)."""
    if model is None or study is None:
        m0, s0 = ws.settings() if ws.exists else default_settings()
        model, study = model or m0, study or s0
    busy = running_job()
    disabled = busy is not None or busy_elsewhere(ws) is not None
    if st.button(label, key=key, type="primary" if primary else "secondary", disabled=disabled,
                 help="runs the remaining stages in the background; finished stages are not recomputed"):
        try:
            start_study(ws.root, model, study, None, stages)
        except Exception as e:
            st.error(f"Could not start the study: {type(e).__name__}: {e}")
            return False
        st.rerun()
    return False


# =========================================================================== workspace picker
def _label(root: Path) -> str:
    name = root.name
    return name if root.parent == workspaces_dir() else str(root)


def allowed_roots() -> list[Path]:
    """Directories the app may open workspaces under: ``$METACOG_CACHE/workspaces`` plus any
    listed in ``$METACOG_WORKSPACE_DIRS`` (``os.pathsep``-separated). A ``?ws=`` link or a typed
    folder outside them is refused: a link must not open (for reading and writing) whatever
    path it names."""
    roots = [workspaces_dir().resolve()]
    for p in os.environ.get("METACOG_WORKSPACE_DIRS", "").split(os.pathsep):
        if p.strip():
            roots.append(Path(p.strip()).expanduser().resolve())
    return roots


def confine(path: str | os.PathLike) -> Path | None:
    """``path`` resolved (relative paths under the cache's workspaces), or None when it is not
    inside one of :func:`allowed_roots` (``..`` and links are resolved first)."""
    p = Path(path)
    cand = (p if p.is_absolute() else workspaces_dir() / p).resolve()
    for r in allowed_roots():
        if cand == r or r in cand.parents:
            return cand
    return None


def workspace_picker() -> Workspace:
    """Sidebar selector of workspaces under ``$METACOG_CACHE/workspaces`` (+ the default study if
    it has not been run, + any folder typed in). The choice lives in session state and in the
    ``?ws=`` query parameter (so links keep it)."""
    roots = [w.root for w in list_workspaces()]
    from .jobs import JOBS_DIR

    wsd = workspaces_dir()
    if wsd.is_dir():  # a workspace whose study was just launched: listed before its workspace.json exists
        roots += [p.resolve() for p in sorted(wsd.iterdir()) if p.is_dir() and not p.is_symlink()
                  and (p / JOBS_DIR / "study.json").is_file() and p.resolve() not in roots]
    extra = [Path(p) for p in st.session_state.get("_extra_ws", [])]
    dflt = default_root()
    options = list(dict.fromkeys(roots + [r for r in extra if r not in roots]))
    if dflt not in options:
        options.append(dflt)
    qp = st.query_params.get("ws")
    cur = st.session_state.get("ws_root")
    cand = confine(qp) if qp else None
    if qp and cand is None:
        st.sidebar.error(f"?ws={qp[:80]} is outside the workspace folders this app may open "
                         f"({', '.join(str(r) for r in allowed_roots())}; add more with METACOG_WORKSPACE_DIRS)")
        qp = None
    if qp:
        if cand.exists() and cand not in options:
            options.append(cand)
        # a link (or a new ?ws= in the address bar) wins over the session's last choice
        if cand in options and (cur is None or st.session_state.get("_ws_qp") != qp):
            if cur != str(cand):
                st.session_state.pop("_ws_select", None)
            cur = str(cand)
    st.session_state["_ws_qp"] = qp
    if cur is None or Path(cur) not in options:
        if dflt in roots or not roots:
            cur = str(dflt)
        else:  # the most recently used workspace
            cur = str(max(roots, key=lambda r: (r / "workspace.json").stat().st_mtime))
    st.session_state["ws_root"] = cur
    with st.sidebar:
        st.selectbox(
            "Workspace", options, index=options.index(Path(cur)), key="_ws_select",
            format_func=lambda r: _label(r) + ("" if (r / "workspace.json").exists() else " (new)"),
            on_change=_on_pick, help="one study = model × dataset × settings, under $METACOG_CACHE/workspaces",
        )
        with st.expander("Open a workspace folder"):
            p = st.text_input("folder", key="_ws_path", placeholder="/path/to/workspace", label_visibility="collapsed")
            if p and st.button("Open", key="_ws_open"):
                where = confine(p)
                w = Workspace(where or p)
                if where is None:
                    st.error(f"{w.root} is outside the workspace folders this app may open "
                             f"({', '.join(str(r) for r in allowed_roots())}); add its parent to METACOG_WORKSPACE_DIRS "
                             "before starting the app")
                elif w.exists:
                    st.session_state.setdefault("_extra_ws", []).append(str(w.root))
                    st.session_state["ws_root"] = str(w.root)
                    st.session_state.pop("_ws_select", None)
                    st.rerun()
                else:
                    st.error(f"{w.root} has no workspace.json")
    ws = Workspace(st.session_state["ws_root"])
    if st.query_params.get("ws") != _label(ws.root) and (qp or ws.root != dflt):
        st.query_params["ws"] = _label(ws.root)
    return ws


def _on_pick() -> None:
    st.session_state["ws_root"] = str(st.session_state["_ws_select"])
    st.query_params["ws"] = _label(Path(st.session_state["ws_root"]))


def _leave_legacy_pages_mode() -> None:
    """Streamlit serves a request that arrives before ``app.py`` has ever called
    ``st.navigation`` in this server process (e.g. a deep link to a page as the first request)
    in its older multipage mode: it runs the page file from ``pages/`` alone, without
    ``app.py``'s sidebar, workspace picker and ``?ws=``. Switch the process to ``app.py``'s
    navigation once and rerun, so the link opens as it would later."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover - other Streamlit layouts
        return
    if getattr(PagesManager, "uses_pages_directory", False) and "ws_root" not in st.session_state:
        PagesManager.uses_pages_directory = False
        st.rerun()


def current_workspace() -> Workspace:
    _leave_legacy_pages_mode()
    root = st.session_state.get("ws_root")
    return Workspace(root) if root else Workspace(default_root())


def select_workspace(root: Path) -> None:
    """Make ``root`` the current workspace (after a run created it)."""
    st.session_state["ws_root"] = str(Path(root).resolve())
    extra = st.session_state.setdefault("_extra_ws", [])
    if str(Path(root).resolve()) not in extra:
        extra.append(str(Path(root).resolve()))
    st.session_state.pop("_ws_select", None)
    st.query_params["ws"] = _label(Path(root).resolve())


def sidebar_status() -> None:
    """Compact line in the sidebar for each job (study, sweep, methods…) running in this process."""
    for kind in list(_KINDS.values()):
        job = kind.running()
        if job is not None:
            with st.sidebar:
                _sidebar_progress(kind.kind, job.id)


@st.fragment(run_every=2.0)
def _sidebar_progress(kind: str, job_id: str) -> None:
    job = _KINDS[kind].find(job_id)
    if job is None or not job.running:
        return
    st.progress(job.fraction, text=f"{job.label}: {job.message}")


# =========================================================================== artifact state
def model_name(ws: Workspace) -> str:
    m = ws.read_json("model.json") or {}
    if m.get("name"):
        return str(m["name"])
    try:
        return ws.settings()[0].model
    except WorkspaceError:
        return "?"


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def stamp(ws: Workspace, *names: str) -> tuple:
    return tuple(_mtime(ws.path(n)) for n in names)


def artifact_status(ws: Workspace) -> pd.DataFrame:
    """One row per stage: stage, status (done / partial / not run), details, finished, seconds."""
    rows = []

    def rec(stage):
        return ws.stage_record(stage) or {}

    r = rec("items")
    if ws.path("items.parquet").exists():
        sp = r.get("splits") or {}
        det = f"{r.get('n', '?')} items; " + ", ".join(f"{k} {v}" for k, v in sp.items() if k != "disjoint")
        rows.append(("items", "done", det, r.get("finished", ""), r.get("seconds")))
    else:
        rows.append(("items", "not run", "dataset items with their split", "", None))
    r = rec("answers")
    if ws.path("answers.parquet").exists():
        two = "verbal_two_pass" in _parquet_columns(ws.path("answers.parquet"))
        rows.append(("answers", "done", f"{r.get('n', '?')} items answered and graded; verbal confidence "
                     + ("inline + two-pass" if two else "inline (two-pass not computed: --two-pass)"),
                     r.get("finished", ""), r.get("seconds")))
    else:
        parts = list(ws.path("answers_parts").glob("*/part-*.parquet")) if ws.path("answers_parts").exists() else []
        rows.append(("answers", "partial" if parts else "not run",
                     f"{len(parts)} chunk(s) saved; a run resumes from them" if parts else "answer, grade, verbal confidence", "", None))
    man = ws.read_json("activations/manifest.json") or {}
    r = rec("activations")
    if man.get("complete"):
        rows.append(("activations", "done", f"{man.get('n_items')} items × {man.get('n_layers')} hidden states × d={man.get('d_model')}, "
                     f"positions {', '.join(man.get('positions', []))}; exact 0–100 readout", r.get("finished", ""), r.get("seconds")))
    elif man:
        done = ws.path("activations", "done.npy")
        k = int(np.load(done).sum()) if done.exists() else 0
        rows.append(("activations", "partial", f"{k}/{man.get('n_items')} items cached; a run resumes", "", None))
    else:
        rows.append(("activations", "not run", "hidden states at the named positions + 0–100 readout", "", None))
    r = rec("probes")
    if ws.path("probes", "metrics.parquet").exists():
        best = ws.read_json("probes/best.json") or {}
        det = f"best: layer {best.get('layer')} @ {best.get('position')}" if best else "fitted"
        rows.append(("probes", "done", det, r.get("finished", ""), r.get("seconds")))
    else:
        rows.append(("probes", "not run", "per-layer × position probes" + ("" if probes_available() else " (this build has no probes module yet)"), "", None))
    if ws.path("summary.json").exists():
        rows.append(("summary", "done", "summary.json", time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(_mtime(ws.path("summary.json")))), None))
    else:
        rows.append(("summary", "not run", "written at the end of a study run", "", None))
    out = pd.DataFrame(rows, columns=["stage", "status", "details", "finished", "seconds"])
    out["seconds"] = [("" if v is None or v != v else f"{float(v):g}") for v in out["seconds"]]
    out["finished"] = out["finished"].fillna("").astype(str).str.replace("T", " ")
    return out


def has(ws: Workspace, stage: str) -> bool:
    if stage == "workspace":
        return ws.exists
    if stage == "answers":
        return ws.path("answers.parquet").exists() and ws.path("items.parquet").exists()
    if stage == "activations":
        return bool((ws.read_json("activations/manifest.json") or {}).get("complete")) and ws.path("readout.parquet").exists()
    if stage == "probes":
        return ws.path("probes", "metrics.parquet").exists() and ws.path("probes", "oof.npy").exists()
    raise ValueError(stage)


def require(ws: Workspace, stage: str, what: str = "") -> bool:
    """True if ``stage``'s artifacts exist; else a clear message (run the study first, with the
    button, or the running job's progress) and False: the page then stops."""
    if has(ws, stage):
        return True
    need = {"workspace": "this workspace has not been run yet", "answers": "no answers yet",
            "activations": "no hidden-state cache / 0–100 readout yet", "probes": "no probes yet"}[stage]
    st.info(f"**Run the study first** — {need}{(': ' + what) if what else ''}. "
            f"Workspace: `{ws.root}`")
    if stage == "probes" and not probes_available():
        st.warning("This build of metacog has no probes stage yet (metacog/probes.py); the probes appear once it exists and the study runs it.")
    job = job_panel(ws, where=f"require-{stage}")
    if job is None or not job.running:
        run_button(ws, key=f"run-require-{stage}")
    return False


# =========================================================================== cached readers
@st.cache_data(show_spinner=False, max_entries=8)
def _results(root: str, stamp: tuple) -> pd.DataFrame:
    from .study import results_table

    return results_table(Workspace(root))


def results(ws: Workspace) -> pd.DataFrame:
    """items + answers + readout (+ best-probe p), cached until the files change."""
    return _results(str(ws.root), stamp(ws, "items.parquet", "answers.parquet", "readout.parquet", "probes/oof.npy", "probes/best.json"))


@st.cache_data(show_spinner=False, max_entries=8)
def _summary(root: str, stamp: tuple) -> dict:
    from .study import summarize

    return summarize(Workspace(root))


def summary(ws: Workspace) -> dict | None:
    """summary.json when it is at least as new as its inputs; otherwise summarised from the
    artifacts present (cached), so a half-done workspace still shows its metrics."""
    inputs = stamp(ws, "answers.parquet", "readout.parquet", "probes/metrics.parquet")
    s = ws.read_json("summary.json")
    if s is not None and _mtime(ws.path("summary.json")) >= max(inputs):
        return s
    if not has(ws, "answers"):
        return None
    try:
        return _summary(str(ws.root), inputs)
    except Exception:
        return s


def noise_floor_caption(ws: Workspace) -> None:
    """One caption with the run's measured E[v] noise floor (points; what batch composition alone
    can move an item's E[v] at this dtype, ``activations/manifest.json``), to read effects against."""
    man = ws.read_json("activations/manifest.json") or {}
    nf, dt = man.get("ev_noise_floor"), man.get("model_dtype")
    if nf is not None:
        st.caption(f"Numeric noise floor of this study ({dt}): batch composition alone moves an item's E[v] by at most "
                   f"{nf:g} points (docs/SCIENCE.md, *Batch invariance*); smaller effects are not distinguishable from it.")
    elif dt:
        st.caption(f"Numeric noise floor of this study ({dt}): not measured for this dtype (docs/SCIENCE.md, *Batch invariance*).")


def sample_warnings(ws: Workspace, summ: dict | None = None) -> list[str]:
    """Show the summary's plain-language warnings (small or one-class eval split, split sizes
    unlike the fractions asked for, best probe vs its selection null) as one warning box; a
    summary written before warnings existed gets them from the eval items. Returns them."""
    summ = summ if summ is not None else (summary(ws) or {})
    w = summ.get("warnings")
    if w is None and has(ws, "answers"):
        df = results(ws)
        w = metrics.sample_warnings(df.loc[df["split"] == "eval", "correct"].to_numpy(bool), "the eval split")
    if w:
        st.warning("**Read these numbers with care.**\n\n" + "\n".join(f"- {x[0].upper()}{x[1:]}" for x in w))
    return list(w or [])


@st.cache_data(show_spinner=False, max_entries=8)
def _probe_metrics(root: str, stamp: tuple) -> pd.DataFrame:
    return Workspace(root).read_parquet("probes/metrics.parquet")


def probe_metrics(ws: Workspace) -> pd.DataFrame | None:
    if not ws.path("probes", "metrics.parquet").exists():
        return None
    return _probe_metrics(str(ws.root), stamp(ws, "probes/metrics.parquet"))


def oof(ws: Workspace) -> np.ndarray | None:
    """``probes/oof.npy`` [n_items, n_layers, n_positions] (memory-mapped)."""
    p = ws.path("probes", "oof.npy")
    return np.load(p, mmap_mode="r") if p.exists() else None


def probe_positions(ws: Workspace, oof_arr: np.ndarray | None = None) -> list[str]:
    """Position order of the last axis of oof.npy: ``settings.POSITIONS`` (the artifact contract),
    checked against the array's shape."""
    pos = list(POSITIONS)
    if oof_arr is not None and oof_arr.shape[-1] != len(pos):
        raise WorkspaceError(f"probes/oof.npy has {oof_arr.shape[-1]} positions, expected {len(pos)} ({', '.join(pos)}): re-run the probes stage")
    return pos


def _parquet_columns(path) -> list[str]:
    try:
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    except Exception:  # noqa: BLE001 - a status line must not fail on a damaged file
        return []


def item_distributions(ws: Workspace, row: int) -> dict[str, np.ndarray] | None:
    """The exact 0-100 distributions of one item per mode, or None if not cached for it."""
    from .activations import load_distributions

    man = ws.read_json("activations/manifest.json") or {}
    if not man:
        return None
    done = ws.path("activations", "done.npy")
    if not done.exists() or not bool(np.load(done)[row]):
        return None
    try:
        return {m: np.asarray(load_distributions(ws, m)[row], dtype=float) for m in MODES
                if m == "inline" or ws.path("activations", f"values_{MODE_KEYS[m]}.npy").exists()}
    except (OSError, KeyError, IndexError, ValueError):
        return None


def split_frame(df: pd.DataFrame, split: str) -> pd.DataFrame:
    return df if split == "all" else df[df["split"] == split]


# =========================================================================== readout metrics
def readouts(df: pd.DataFrame, best: dict | None = None) -> dict[str, tuple[str, np.ndarray]]:
    """Named 0-100 confidence readouts present in a results table: name -> (mode, values)."""
    out = {}
    for mode, k in mode_keys(df).items():
        out[f"verbal {mode}"] = (mode, df[f"verbal_{k}"].to_numpy(dtype=float))
        if f"ev_{k}" in df:
            out[f"E[v] {mode}"] = (mode, df[f"ev_{k}"].to_numpy(dtype=float))
            out[f"argmax {mode}"] = (mode, df[f"argmax_{k}"].to_numpy(dtype=float))
    if "probe_p" in df and best:
        out[f"probe L{best.get('layer')} @ {best.get('position')}"] = ("probe", 100.0 * df["probe_p"].to_numpy(dtype=float))
    return out


def readout_metrics(df: pd.DataFrame, n_bins: int = 10, seed: int = 0, best: dict | None = None) -> pd.DataFrame:
    """Per readout on the rows of ``df``: the same numbers as summary.json's (for the eval split):
    AUROC + bootstrap CI, ECE, Brier, AURC on confidence/100 (unparsed dropped), and the
    validity screen (L, TRIN, r, verdict) on the 0-100 values."""
    y = df["correct"].to_numpy().astype(bool)
    rows = []
    for name, (mode, v) in readouts(df, best).items():
        s = metrics.summarize_scores(v / 100.0, y, n_bins=n_bins, seed=seed, nan_policy="omit")
        vs = metrics.validity_screen(v, y)
        rows.append(dict(readout=name, mode=mode, n=s["n"], n_missing=s["n_missing"], auroc=s["auroc"],
                         auroc_lo=s["auroc_ci"][0], auroc_hi=s["auroc_ci"][1], ece=s["ece"], brier=s["brier"],
                         aurc=s["aurc"], L=vs["L"], TRIN=vs["trin"], r=vs["r"], verdict=vs["verdict"],
                         reasons="; ".join(vs["reasons"])))
    return pd.DataFrame(rows)


def type_prior_auroc(df: pd.DataFrame, split: str) -> float | None:
    """The question-type baseline's AUROC on ``split`` (category accuracy on the train split)."""
    if split in ("train", "all") or not df["category"].astype(str).str.len().gt(0).any():
        return None  # in-sample on train items
    tr = df[df["split"] == "train"]
    ev = split_frame(df, split)
    if not len(ev) or not len(tr):
        return None
    prior = metrics.type_prior(tr["category"], tr["correct"], ev["category"])
    a = metrics.auroc(prior, ev["correct"].to_numpy().astype(bool))
    return None if np.isnan(a) else float(a)


# =========================================================================== display
def show_figure(fig, key: str, filename: str | None = None) -> None:
    """The figure (plotly toolbar: PNG download) plus a button that downloads it as a
    self-contained HTML file (generated on click)."""
    name = filename or key
    cfg = {**PLOTLY_CONFIG, "toImageButtonOptions": {**PLOTLY_CONFIG["toImageButtonOptions"], "filename": name}}
    st.plotly_chart(fig, key=f"fig-{key}", config=cfg, theme=None)
    st.download_button("Download figure (HTML)", data=lambda: fig.to_html(include_plotlyjs=True, full_html=True),
                       file_name=f"{name}.html", mime="text/html", key=f"dl-{key}", on_click="ignore", icon=":material/download:")


def show_table(df: pd.DataFrame, key: str, filename: str | None = None, column_config: dict | None = None,
               height: int | str = "auto", caption: str | None = None) -> None:
    """A dataframe plus a CSV download of exactly its rows and columns."""
    st.dataframe(df, key=f"tbl-{key}", column_config=column_config, height=height, hide_index=True)
    cols = st.columns([1, 3])
    cols[0].download_button("Download CSV", data=_csv(df), file_name=f"{filename or key}.csv", mime="text/csv",
                            key=f"dlcsv-{key}", on_click="ignore", icon=":material/download:")
    if caption:
        cols[1].caption(caption)


def _csv(df: pd.DataFrame) -> bytes:
    d = df.copy()
    for c in d.columns:
        if d[c].dtype == object:
            d[c] = d[c].map(lambda v: "|".join(map(str, v)) if isinstance(v, (list, tuple, np.ndarray)) else v)
    return d.to_csv(index=False).encode("utf-8")


def item_url(item_id: str, ws: Workspace | None = None) -> str:
    """Relative link to the item explorer for one item (``?item=<id>``, plus ``&ws=``)."""
    q = f"{ITEM_PAGE}?item={quote(str(item_id), safe='')}"
    if ws is not None:
        q += f"&ws={quote(_label(ws.root), safe='')}"
    return q


def with_links(df: pd.DataFrame, ws: Workspace, id_col: str = "id") -> pd.DataFrame:
    out = df.copy()
    out.insert(0, "open", [item_url(i, ws) for i in out[id_col]])
    return out


LINK_COLUMN = {"open": st.column_config.LinkColumn("open", display_text="explore ↗", help="open in the item explorer", width="small")}


def definitions(*names: str) -> None:
    """An expander with the definitions used on a page (texts from metacog.metrics)."""
    texts = {
        "ece": ("ECE bins", getattr(metrics, "ECE_BINS_DOC", "ECE with equal-width bins") + " "
                + getattr(metrics, "ECE_NULL_DOC", "")),
        "validity": ("Validity screen", getattr(metrics, "VALIDITY_DOC", "")),
        "auroc": ("AUROC", "AUROC = P(score of a correct item > score of an incorrect one) + ½ P(tie) (Mann–Whitney U / n₊n₋). "
                  + getattr(metrics, "BOOTSTRAP_DOC", "95% CI = percentile interval of a stratified bootstrap (1,000 resamples).")),
        "readouts": ("Readouts", "verbal = the number the model writes (inline: after its answer; two-pass: asked in a second prompt "
                     "that shows question and answer). E[v] = expected value of the exact distribution over the 101 numbers 0–100 "
                     "(renormalised); argmax = its most probable number; other = probability mass on anything that is not an integer 0–100."),
        "probes": ("Probes", "One standardised logistic-regression probe per (layer, position) predicts correctness from the residual "
                   "stream. p for train items is cross-fitted with nested CV (the model that predicts a fold has its C chosen "
                   "without that fold); calibration/eval items get the probe fitted on train. Metrics are on the eval split; the "
                   "best probe is chosen by train-split (nested) CV AUROC, never by eval. Selection null: the best of all probes "
                   "is compared with the best of the same selection on shuffled labels (see docs/SCIENCE.md)."),
        "type_prior": ("Question-type prior", "Baseline that scores each item by its category's accuracy on the train split "
                       "(Laplace-smoothed): what a confidence gets for free by recognising the question type."),
    }
    with st.expander("Definitions"):
        for n in names:
            t, d = texts[n]
            st.markdown(f"**{t}.** {d}")


@contextlib.contextmanager
def guard(what: str = "this page"):
    """Show problems as messages, never as a bare traceback (Streamlit's own control flow passes)."""
    from .data import DataError

    try:
        yield
    except (WorkspaceError, DataError, FileNotFoundError, KeyError, ValueError) as e:
        st.error(f"Could not show {what}: {e}")
        with st.expander("details"):
            st.code(traceback.format_exc())
    except Exception as e:
        st.error(f"Something went wrong while drawing {what}: {type(e).__name__}: {e}")
        with st.expander("details (traceback)"):
            st.code(traceback.format_exc())


def header(title: str, ws: Workspace, help_text: str | None = None) -> None:
    st.title(title)
    bits = [f"workspace **{_label(ws.root)}**"]
    if ws.exists:
        try:
            m, s = ws.settings()
            bits += [f"model **{model_name(ws)}**", f"dataset **{Path(str(s.dataset)).name}**",
                     f"limit {s.limit or 'all'}", f"seed {s.seed}"]
        except WorkspaceError:
            pass
    st.caption(" · ".join(bits))
    if help_text:
        st.markdown(help_text)
    if ws.exists and has(ws, "answers"):  # every page says when its numbers rest on a small sample
        try:
            sample_warnings(ws)
        except Exception:  # a page's own guard reports a broken workspace; the header stays drawable
            pass


def save_upload(name: str, data: bytes) -> Path:
    """Keep an uploaded dataset file under ``$METACOG_CACHE/datasets/`` (content-addressed)."""
    from .workspace import _atomic

    digest = hashlib.sha256(data).hexdigest()[:10]
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name)
    stem, suffix = Path(safe).stem[:80], Path(safe).suffix[:16]  # file-system names end at 255 bytes
    p = cache_dir() / "datasets" / f"{stem}-{digest}{suffix}"
    if not p.exists():
        _atomic(p, lambda t: Path(t).write_bytes(data))
    return p
