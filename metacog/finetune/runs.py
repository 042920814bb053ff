"""Run directories and the run registry (files only; no model, no torch).

A run lives in ``<workspace>/runs/<run_id>/``::

    settings.json     FinetuneSettings, model settings, plan (updates/epochs), targets description
    targets.jsonl     the exact target rows (item id, row, split = train, role train/val, value, text)
    status.json       status, pid, heartbeat, updates_run / updates_planned, epochs_run, last loss
    log.jsonl         one line per optimizer update (loss, lr, tokens, seconds) and per validation
    checkpoints/      step-NNNNNN/ (adapter + optimizer + scheduler + RNG + step), newest kept
    adapter/          the final adapter in PEFT format (PeftModel.from_pretrained loads it)
    eval/             the evaluation sub-workspace (the adapter's answers + hidden states, eval split)
    eval.json         base vs fine-tuned metrics on the eval split;  per_item.parquet beside it
    runner.log        stdout/stderr of the background process
    cancel.request    present when a cancel was asked for

Status values: ``queued`` (waiting for the workspace's fine-tune lock), ``running``,
``done``, ``failed``, ``cancelled``; the registry shows ``interrupted`` for a run whose
status says running but whose process is gone (it resumes from its last checkpoint).

Public entry: :func:`get_run` / :func:`list_runs` (:class:`Run` is one run's files).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from pathlib import Path

import pandas as pd

from metacog.core.workspace import Workspace, WorkspaceError, atomic_write_json, atomic_write_text, open_append, read_json

STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
ACTIVE = ("queued", "running")
_STATUS_LOCK = threading.Lock()


class RunError(WorkspaceError):
    """A run that cannot be found, started, resumed or evaluated (message says why)."""


def runs_dir(ws: Workspace) -> Path:
    """The directory ``<workspace>/runs`` holding one directory per run."""
    return ws.path("runs")


def new_run_id(targets: str, fmt: str, seed: int, name: str | None = None) -> str:
    """A new run id ``YYYYmmdd-HHMMSS-<name>`` (name default ``<targets>-<fmt>-s<seed>``; characters
    other than word characters, ``.`` and ``-`` become ``_``; at most 60 of them)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = name or f"{targets}-{fmt}-s{seed}"
    base = re.sub(r"[^\w.-]+", "_", base).strip("_")[:60] or "run"
    return f"{stamp}-{base}"


def run_label(run_id: str, targets: str | None = None) -> str:
    """A legend label that keeps what tells runs apart: ``"probe · 20:57:27 probe-inline-s42"``
    (the run id's time of day and name, without its date; never cut)."""
    m = re.match(r"^(\d{8})-(\d{2})(\d{2})(\d{2})-(.*)$", run_id)
    short = f"{m.group(2)}:{m.group(3)}:{m.group(4)} {m.group(5)}" if m else run_id
    return f"{targets} · {short}" if targets else short


class Run:
    """One fine-tuning run: the directory ``<workspace>/runs/<id>/`` (layout in the module docstring)
    and typed access to its files. Constructing one reads nothing (see :func:`get_run`).

    Raises:
        RunError: an empty id, or one with ``/`` or a leading ``.`` (it would leave ``runs/``)."""
    def __init__(self, ws: Workspace, run_id: str):
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise RunError(f"bad run id {run_id!r}")
        self.ws = ws
        self.id = run_id
        self.path = ws.path("runs", run_id)

    def __repr__(self) -> str:
        return f"Run({self.id!r})"

    def file(self, *parts: str) -> Path:
        """The path ``runs/<id>/<parts...>`` (not checked)."""
        return self.path.joinpath(*parts)

    @property
    def exists(self) -> bool:
        """True when the run has its ``settings.json`` (it was created)."""
        return self.file("settings.json").exists()

    # ------------------------------------------------------------------ settings
    def notes(self) -> dict:
        """The user's ``tags`` (list of str) and ``note`` (str) for this run (``notes.json``)."""
        d = read_json(self.file("notes.json"), {})
        return d if isinstance(d, dict) else {}

    def annotate(self, tags: list[str] | None = None, note: str | None = None) -> dict:
        """Set this run's tags and/or note; returns the notes. Raises ``ValueError`` for
        non-string tags or a note over 10,000 characters."""
        d = self.notes()
        if tags is not None:
            if any(not isinstance(t, str) for t in tags):
                raise ValueError("tags must be strings")
            d["tags"] = sorted({t.strip() for t in tags if t.strip()})
        if note is not None:
            if len(note) > 10_000:
                raise ValueError("a note is at most 10,000 characters")
            d["note"] = note
        atomic_write_json(self.file("notes.json"), d)
        return d

    def settings(self) -> dict:
        """``settings.json`` as a dict (``finetune``, ``model``, ``plan``, ``targets``, ...).

        Raises:
            RunError: the run has no ``settings.json``.
            WorkspaceError: the file is not valid JSON."""
        d = read_json(self.file("settings.json"))
        if d is None:
            raise RunError(f"no run {self.id!r} in {self.ws.root} (runs/{self.id}/settings.json missing)")
        return d

    def finetune_settings(self):
        """The run's :class:`~metacog.finetune.settings.FinetuneSettings` (from ``settings.json``).

        Raises:
            RunError: as :meth:`settings`.
        SettingsError: stored settings that are no longer valid."""
        from metacog.finetune.settings import FinetuneSettings

        d = self.settings()["finetune"]
        if "amp" not in d:  # made before mixed precision existed: it trained without (and resumes so)
            d = {**d, "amp": "off"}
        return FinetuneSettings.from_dict(d)

    def update_settings(self, **kw) -> None:
        """Merge ``kw`` into ``settings.json`` (top-level keys) and write it atomically."""
        d = self.settings()
        d.update(kw)
        atomic_write_json(self.file("settings.json"), d)

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        """``status.json`` as a dict ({} before the first write): status, pid, updates_run, last_loss, ..."""
        return read_json(self.file("status.json"), {}) or {}

    def set_status(self, **kw) -> dict:
        """Merge ``kw`` into ``status.json`` (stamping ``updated``, Unix seconds) under a lock shared by
        this process's threads and write it atomically; returns the new status."""
        with _STATUS_LOCK:
            st = self.status()
            st.update(kw)
            st["updated"] = time.time()
            atomic_write_json(self.file("status.json"), st)
            return st

    def live_status(self) -> str:
        """status.json's status, with ``interrupted`` for a dead running/queued process."""
        st = self.status()
        s = st.get("status", "queued" if self.exists else "missing")
        if s in ACTIVE and not pid_alive(st.get("pid"), st.get("pid_start")):
            return "interrupted"
        return s

    # ------------------------------------------------------------------ log
    def append_log(self, rec: dict) -> None:
        """Append one JSON line (an update's or a validation's record) to ``log.jsonl``."""
        with open_append(self.file("log.jsonl")) as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()

    def read_log(self) -> pd.DataFrame:
        """The log as a table (a line cut by a kill is ignored)."""
        p = self.file("log.jsonl")
        recs = []
        if p.exists():
            for line in p.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    recs.append(json.loads(line))
        return pd.DataFrame.from_records(recs)

    def truncate_log(self, max_update: int) -> None:
        """Keep the log lines of updates <= ``max_update`` (resume from a checkpoint)."""
        from metacog.core.workspace import atomic_write_text

        p = self.file("log.jsonl")
        if not p.exists():
            return
        keep = []
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if int(r.get("update", 0)) <= max_update:
                keep.append(line)
        atomic_write_text(p, "".join(x + "\n" for x in keep))

    # ------------------------------------------------------------------ cancel
    def request_cancel(self) -> None:
        """Ask the run to stop: write ``cancel.request``, which the trainer polls between updates."""
        atomic_write_text(self.file("cancel.request"), time.strftime("%Y-%m-%dT%H:%M:%S"))

    def cancel_requested(self) -> bool:
        """True while a cancel request is pending."""
        return self.file("cancel.request").exists()

    def clear_cancel(self) -> None:
        """Remove a pending cancel request (before a resume)."""
        with contextlib.suppress(FileNotFoundError):
            self.file("cancel.request").unlink()

    # ------------------------------------------------------------------ artifacts
    @property
    def adapter_dir(self) -> Path:
        """Where the final adapter lives, ``runs/<id>/adapter`` (PEFT format)."""
        return self.file("adapter")

    def has_adapter(self) -> bool:
        """True when the final adapter was written (its ``adapter_config.json`` exists)."""
        return (self.adapter_dir / "adapter_config.json").exists()

    def eval_result(self) -> dict | None:
        """The run's ``eval.json`` (base vs fine-tuned on the eval split) as a dict, or None before evaluation."""
        return read_json(self.file("eval.json"))


def _eval_note(ws: Workspace, ev: dict, run_id: str) -> str:
    from metacog.finetune.evaluate import eval_stale

    return "stale: " + why if (why := eval_stale(ws, ev, run_id)) else ""


def get_run(ws: Workspace, run_id: str) -> Run:
    """The existing run ``run_id`` of ``ws``.

    Raises:
        RunError: no such run (the message lists the newest runs of the workspace)."""
    r = Run(ws, run_id)
    if not r.exists:
        known = [p.name for p in sorted(runs_dir(ws).glob("*")) if (p / "settings.json").exists()] if runs_dir(ws).exists() else []
        hint = f"; runs here: {', '.join(known[-5:])}" if known else "; this workspace has no runs yet"
        raise RunError(f"no run {run_id!r} in {ws.root}{hint}")
    return r


# ------------------------------------------------------------------------------ processes
def proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (field 22 of ``/proc/<pid>/stat``),
    as a string; None where it cannot be read (the process is gone, or no ``/proc``). With the pid
    it identifies a process across pid reuse (:func:`pid_alive`)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks
    except (OSError, IndexError):
        return None


def pid_alive(pid, start: str | None = None) -> bool:
    """True when process ``pid`` is running and not a zombie; with ``start`` (its
    :func:`proc_start`), also False when the pid now belongs to another process."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if start is not None:
        now = proc_start(int(pid))
        if now is not None and now != start:
            return False  # the pid was reused by another process
    with contextlib.suppress(OSError):  # a zombie (exited, not yet reaped) is not alive
        if Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def this_process() -> dict:
    """``{"pid": ..., "pid_start": ...}`` of this process, to record in ``status.json``."""
    return {"pid": os.getpid(), "pid_start": proc_start(os.getpid())}


# ------------------------------------------------------------------------------ registry
def list_runs(ws: Workspace) -> pd.DataFrame:
    """One row per run (newest first): status, settings, progress and headline metrics."""
    rows = []
    d = runs_dir(ws)
    if d.exists():
        for p in sorted(d.iterdir(), reverse=True):
            if not (p / "settings.json").exists():
                continue
            r = Run(ws, p.name)
            try:
                s = r.settings()
            except (json.JSONDecodeError, RunError):
                continue
            ft = s.get("finetune", {})
            st = r.status()
            plan = s.get("plan", {})
            ev = r.eval_result() or {}
            h = ev.get("headline", {})
            probe = (s.get("targets") or {}).get("probe") or {}
            rows.append(
                {
                    "run": r.id,
                    "status": r.live_status(),
                    "phase": st.get("phase", ""),
                    "targets": ft.get("targets"),
                    "task": ft.get("task", "single"),
                    "format": ft.get("format"),
                    "backend": ft.get("backend"),
                    "probe": f"L{probe['layer']} @ {probe['position']}" if probe else "",
                    "seed": ft.get("seed"),
                    "n_train": plan.get("n_train"),
                    "epochs_planned": plan.get("epochs_planned"),
                    "updates_planned": plan.get("updates_planned"),
                    "updates_run": st.get("updates_run", 0),
                    "epochs_run": st.get("epochs_run", 0.0),
                    "last_loss": st.get("last_loss"),
                    "val_loss": st.get("val_loss"),
                    "train_seconds": st.get("train_seconds"),
                    "evaluated": bool(ev),
                    "eval_note": _eval_note(ws, ev, r.id),
                    "acc_base": h.get("accuracy_base"),
                    "acc_ft": h.get("accuracy_ft"),
                    "auroc_base": h.get("auroc_base"),
                    "auroc_ft": h.get("auroc_ft"),
                    "ece_base": h.get("ece_base"),
                    "ece_ft": h.get("ece_ft"),
                    "ceiling_ft": h.get("ceiling_ft"),
                    "created": s.get("created", ""),
                    "message": st.get("message", ""),
                    "rank": ft.get("rank"), "alpha": ft.get("alpha"), "lr": ft.get("lr"),
                    "tags": ", ".join(r.notes().get("tags", [])), "note": r.notes().get("note", ""),
                    "key": _settings_key(ft),
                }
            )
    cols = ["run", "status", "phase", "targets", "task", "format", "backend", "probe", "seed", "n_train", "epochs_planned",
            "updates_planned", "updates_run", "epochs_run", "last_loss", "val_loss", "train_seconds", "evaluated", "eval_note",
            "acc_base", "acc_ft", "auroc_base", "auroc_ft", "ece_base", "ece_ft", "ceiling_ft", "created", "message",
            "rank", "alpha", "lr", "tags", "note", "key"]
    return pd.DataFrame(rows, columns=cols)


def _settings_key(ft: dict) -> str:
    from metacog.finetune.settings import FinetuneSettings

    try:
        return FinetuneSettings.from_dict(ft).key()
    except Exception:  # a run written by another version: never equal to a new launch
        return ""


def delete_run(ws: Workspace, run_id: str) -> None:
    """Delete a run's directory (settings, targets, log, checkpoints, adapter, evaluation).
    Raises :class:`RunError` for an unknown run or one whose process is still alive."""
    run = get_run(ws, run_id)
    st = run.live_status()
    if st in ACTIVE:
        raise RunError(f"run {run_id} is {st}: cancel it before deleting it")
    from metacog.core.workspace import remove_tree

    remove_tree(run.path)


def active_run(ws: Workspace) -> Run | None:
    """A run of this workspace whose process is alive and queued/running, if any."""
    df = list_runs(ws)
    act = df[df["status"].isin(ACTIVE)]
    return Run(ws, act.iloc[0]["run"]) if len(act) else None
