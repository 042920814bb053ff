"""Which workspace the app shows: workspace naming, the picker, ``?ws=`` confinement, uploads.

A workspace is named the way ``metacog study`` names it without ``--workspace``
(:func:`metacog.cli.default_workspace`) under ``$METACOG_CACHE/workspaces``. The choice lives in
Streamlit's session state (``ws_root``) and in the ``?ws=`` query parameter, so links keep it. A
link or a typed folder opens only inside :func:`allowed_roots` (:func:`confine`): a URL must not
open, for reading and writing, whatever path it names.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import streamlit as st

from metacog.core.jobs import JOBS_DIR
from metacog.core.settings import ModelSettings, StudySettings
from metacog.core.workspace import Workspace, atomic_write_bytes, cache_dir
from metacog.core.workspace import list_workspaces as _list_under

#: the study the app offers first (model spec, dataset, item limit, seed)
DEFAULT_STUDY = dict(model="default", dataset="world-facts", limit=200, seed=0)
#: items of the quick "first look" study run before the default study (its first items)
FIRST_LOOK_ITEMS = 24


# =========================================================================== naming
def workspaces_dir() -> Path:
    """``$METACOG_CACHE/workspaces`` (read at each call, so a test may point the cache elsewhere)."""
    return cache_dir() / "workspaces"


def workspace_root_for(model: str, dataset: str, limit, seed: int) -> Path:
    """The workspace folder of a study (model spec, dataset, item limit or None for all, seed):
    the same naming as ``metacog study`` without ``--workspace`` (:func:`metacog.cli.default_workspace`)."""
    from metacog.cli import default_workspace  # the CLI imports every stage: load it only when naming

    return workspaces_dir() / default_workspace(model, dataset, limit, seed).name


def default_root() -> Path:
    """The folder of the default study (:data:`DEFAULT_STUDY`)."""
    return workspace_root_for(**DEFAULT_STUDY)


def default_settings() -> tuple[ModelSettings, StudySettings]:
    """``(model settings, study settings)`` of the default study (:data:`DEFAULT_STUDY`)."""
    return ModelSettings(model=DEFAULT_STUDY["model"]), StudySettings(
        dataset=DEFAULT_STUDY["dataset"], limit=DEFAULT_STUDY["limit"], seed=DEFAULT_STUDY["seed"])


def first_look_root(model: str, dataset: str, seed: int) -> Path:
    """The folder of the first-look study (:data:`FIRST_LOOK_ITEMS` items) of a model × dataset × seed."""
    return workspace_root_for(model, dataset, FIRST_LOOK_ITEMS, seed)


def list_workspaces() -> list[Workspace]:
    """The workspaces (folders with a ``workspace.json``) under :func:`workspaces_dir`."""
    return _list_under(workspaces_dir())


def workspace_label(root: Path) -> str:
    """How the app names a workspace: its folder name under :func:`workspaces_dir`, else its full path
    (the value of ``?ws=``)."""
    return root.name if root.parent == workspaces_dir() else str(root)


# =========================================================================== confinement
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


# =========================================================================== the picker
def workspace_picker() -> Workspace:
    """Sidebar selector of workspaces under ``$METACOG_CACHE/workspaces`` (+ the default study if
    it has not been run, + any folder typed in). The choice lives in session state and in the
    ``?ws=`` query parameter (so links keep it); a ``?ws=`` outside :func:`allowed_roots` is
    refused with a message. Returns the chosen workspace (it may not exist yet)."""
    roots = [w.root for w in list_workspaces()]
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
            format_func=lambda r: workspace_label(r) + ("" if (r / "workspace.json").exists() else " (new)"),
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
    if st.query_params.get("ws") != workspace_label(ws.root) and (qp or ws.root != dflt):
        st.query_params["ws"] = workspace_label(ws.root)
    return ws


def _on_pick() -> None:
    st.session_state["ws_root"] = str(st.session_state["_ws_select"])
    st.query_params["ws"] = workspace_label(Path(st.session_state["ws_root"]))


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
    """The workspace chosen in this session (``ws_root``), else the default study's (it may not exist yet)."""
    _leave_legacy_pages_mode()
    root = st.session_state.get("ws_root")
    return Workspace(root) if root else Workspace(default_root())


def select_workspace(root: Path) -> None:
    """Make ``root`` the current workspace (after a run created it): session state and ``?ws=``."""
    st.session_state["ws_root"] = str(Path(root).resolve())
    extra = st.session_state.setdefault("_extra_ws", [])
    if str(Path(root).resolve()) not in extra:
        extra.append(str(Path(root).resolve()))
    st.session_state.pop("_ws_select", None)
    st.query_params["ws"] = workspace_label(Path(root).resolve())


def save_upload(name: str, data: bytes) -> Path:
    """Keep an uploaded dataset file under ``$METACOG_CACHE/datasets/`` (content-addressed:
    ``<stem>-<sha256[:10]><suffix>``, the name sanitised and cut to fit file-system limits);
    written atomically once. Returns its path."""
    digest = hashlib.sha256(data).hexdigest()[:10]
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name)
    stem, suffix = Path(safe).stem[:80], Path(safe).suffix[:16]  # file-system names end at 255 bytes
    p = cache_dir() / "datasets" / f"{stem}-{digest}{suffix}"
    if not p.exists():
        atomic_write_bytes(p, data)
    return p
