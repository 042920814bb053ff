"""Page sections shared by the pages: the header (with the small-sample warnings), the
noise-floor caption, "run the study first", and a background job's live progress, Stop button
and outcome.

A running job is drawn by a fragment redrawn every 2 s (``st.fragment(run_every=2.0)``): a
progress bar with the job's message and a Stop button (the work stops after its current unit and
keeps what it finished); the page reruns when the job ends or its message changes, so finished
artifacts appear.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from metacog.app.launch import (STUDIES, busy_elsewhere, get_job, known_kinds, probes_available, register_kind,
                                running_job, start_study)
from metacog.app.readers import has, model_name, results, summary
from metacog.app.state import default_settings, workspace_label
from metacog.core.jobs import Job, JobKind
from metacog.core.settings import ModelSettings, StudySettings
from metacog.core.workspace import Workspace, WorkspaceError
from metacog.stats import metrics


# =========================================================================== header and captions
def header(title: str, ws: Workspace, help_text: str | None = None) -> None:
    """The page title, one caption naming workspace, model, dataset, limit and seed, the page's
    help text, and (once answers exist) the small-sample warnings of :func:`sample_warnings`."""
    st.title(title)
    bits = [f"workspace **{workspace_label(ws.root)}**"]
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


def noise_floor_caption(ws: Workspace) -> None:
    """One caption with the run's measured E[v] noise floor (points; what batch composition alone
    can move an item's E[v] at this dtype, ``activations/manifest.json``), to read effects against."""
    man = ws.read_json("activations/manifest.json") or {}
    nf, dt = man.get("ev_noise_floor"), man.get("model_dtype")
    if nf == 0:
        st.caption(f"Numeric noise floor of this study ({dt}, {man.get('model_attention')} attention): none; an item's numbers "
                   "are bit-identical whatever else is in its batch or run (docs/SCIENCE.md, *Batch invariance*).")
    elif nf is not None:
        st.caption(f"Numeric noise floor of this study ({dt}): batch composition alone moves an item's E[v] by at most "
                   f"{nf:g} points (docs/SCIENCE.md, *Batch invariance*); smaller effects are not distinguishable from it.")
    elif dt:
        st.caption(f"Numeric noise floor of this study ({dt}): not measured for this dtype (docs/SCIENCE.md, *Batch invariance*).")


def sample_warnings(ws: Workspace, summ: dict | None = None) -> list[str]:
    """Show the summary's plain-language warnings (small or one-class eval split, split sizes
    unlike the fractions asked for, best probe vs its selection null) as one warning box; a
    summary written before warnings existed gets them from the eval items
    (:func:`metacog.stats.metrics.sample_warnings`). Returns them."""
    summ = summ if summ is not None else (summary(ws) or {})
    w = summ.get("warnings")
    if w is None and has(ws, "answers"):
        df = results(ws)
        w = metrics.sample_warnings(df.loc[df["split"] == "eval", "correct"].to_numpy(bool), "the eval split")
    if w:
        st.warning("**Read these numbers with care.**\n\n" + "\n".join(f"- {x[0].upper()}{x[1:]}" for x in w))
    return list(w or [])


def require(ws: Workspace, stage: str, what: str = "") -> bool:
    """True if ``stage``'s artifacts exist; else a clear message (run the study first, with the
    button, or the running job's progress) and False: the page then stops.

    Raises:
        KeyError: an unknown stage.
    """
    if has(ws, stage):
        return True
    need = {"workspace": "this workspace has not been run yet", "answers": "no answers yet",
            "activations": "no hidden-state cache / 0–100 readout yet", "probes": "no probes yet"}[stage]
    st.info(f"**Run the study first** — {need}{(': ' + what) if what else ''}. "
            f"Workspace: `{ws.root}`")
    if stage == "probes" and not probes_available():
        st.warning("This build of metacog has no probes stage yet (metacog/stages/probes.py); the probes appear once it exists and the study runs it.")
    job = job_panel(ws, where=f"require-{stage}")
    if job is None or not job.running:
        run_button(ws, key=f"run-require-{stage}")
    return False


# =========================================================================== jobs
def fmt_secs(s: float) -> str:
    """``"3 min 07 s"`` (or ``"42 s"``) for a duration in seconds."""
    s = int(s)
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def job_outcome(job: Job, done_text: str, what: str, resume_hint: str) -> None:
    """How a finished job ended: success text, stopped (work kept), or the error + traceback."""
    if job.status == "done":
        st.success(done_text)
    elif job.status == "stopped":
        st.warning(f"{what} stopped after {fmt_secs(job.elapsed)} at '{job.message}' ({job.done}/{job.total}). "
                   f"Finished work is saved; {resume_hint}")
    elif job.status == "error":
        st.error(f"{what} failed: {job.error}")
        with st.expander("details (traceback)"):
            st.code(job.tb or job.error)


def job_progress(kind: JobKind, job: Job, where: str = "main", stop_help: str = "") -> None:
    """Live progress bar + Stop button of a running job (redraws every 2 s; the page reruns
    when the job ends or its message changes, so finished artifacts appear). ``where``: a
    key suffix unique on the page."""
    register_kind(kind)
    _live_progress(kind.kind, job.id, where, stop_help)


def job_panel(ws: Workspace, where: str = "main") -> Job | None:
    """Progress + Stop for a study running in this process on ``ws``; its outcome when it ended
    (with links to what next). Also says when another process is running a study on it.
    Returns the study job of ``ws`` (None when there is none in this app)."""
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
        s = job.result or {}
        acc = s.get("accuracy")
        stages = (getattr(job, "spec", None) or {}).get("stages") or ()
        job_outcome(job, f"Study finished in {fmt_secs(job.elapsed)}: {s.get('n_items', '?')} items"
                    + (f", accuracy {acc:.1%}" if isinstance(acc, float) else "") + f" (stages: {', '.join(stages)}).",
                    "The study", "Run study again resumes from it.")
        if job.status == "done":
            what_next(where)
    return job


#: (page file, link text) of the pages that show a finished study
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


def _find(kind: str, job_id: str) -> Job | None:
    k = next((x for x in known_kinds() if x.kind == kind), None)
    return k.find(job_id) if k is not None else None


@st.fragment(run_every=2.0)
def _live_progress(kind: str, job_id: str, where: str, stop_help: str = "") -> None:
    job = _find(kind, job_id)
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
    st.progress(job.fraction, text=f"Running {job.label} — {label} · {fmt_secs(job.elapsed)}")
    if job.stop_event.is_set():
        st.caption("Stopping after the current unit of work…")
    elif st.button("Stop", key=f"stop-{job.id}-{where}", help=stop_help or "stop after the current unit; finished work is kept"):
        job.request_stop()
        st.caption("Stopping after the current unit of work…")


def run_button(ws: Workspace, label: str = "Run study", key: str = "run", model: ModelSettings | None = None,
               study: StudySettings | None = None, stages: tuple[str, ...] | None = None, primary: bool = True) -> bool:
    """A button that starts the study on ``ws`` (its saved settings, or the given ones, or the
    defaults); disabled while a study runs. A failed start is shown as an error. Returns False
    (a successful start reruns the page)."""
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


def sidebar_status() -> None:
    """Compact line in the sidebar for each job (study, sweep, methods…) running in this process."""
    for kind in known_kinds():
        job = kind.running()
        if job is not None:
            with st.sidebar:
                _sidebar_progress(kind.kind, job.id)


@st.fragment(run_every=2.0)
def _sidebar_progress(kind: str, job_id: str) -> None:
    job = _find(kind, job_id)
    if job is None or not job.running:
        return
    st.progress(job.fraction, text=f"{job.label}: {job.message}")
