"""The only code that touches disk: workspace layout, atomic writes, stage records, locks.

A workspace is one study: (model, dataset, prompt settings). Layout::

    <root>/workspace.json           model + study settings, created, metacog version
    <root>/items.parquet            dataset items with their split
    <root>/answers.parquet          answers, grades, verbal confidence, 0-100 readouts
    <root>/distributions.npz        exact 0-100 distributions per mode
    <root>/activations/             float16 memmaps per position + done mask + manifest
    <root>/probes/                  per (layer, position) metrics + out-of-fold predictions
    <root>/summary.json
    <root>/stages/<stage>.json      {key, finished, seconds, ...}: a stage is fresh iff its key matches
    <root>/runs/<run_id>/           fine-tuning runs (later stages)

Every write goes to a temporary file in the same directory and is renamed into place, so
a killed process leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .settings import ModelSettings, StudySettings, from_dict, to_dict

PACKAGE_CACHE = Path(__file__).resolve().parent.parent / "cache"


def cache_dir() -> Path:
    """Where models and workspaces live: ``$METACOG_CACHE`` (read at each call) or ./cache."""
    env = os.environ.get("METACOG_CACHE")
    return Path(env).expanduser().resolve() if env else PACKAGE_CACHE


class WorkspaceError(RuntimeError):
    """A workspace problem the user can act on (message says what to do)."""


class WorkspaceBusy(WorkspaceError):
    pass


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return _atomic(path, lambda t: Path(t).write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_write_parquet(path: Path, df) -> Path:
    return _atomic(path, lambda t: df.to_parquet(t, index=False))


def atomic_write_npz(path: Path, **arrays) -> Path:
    def w(t):
        with open(t, "wb") as f:
            np.savez(f, **arrays)

    return _atomic(path, w)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        f = float(o)
        return None if np.isnan(f) else f
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def read_json(path: Path, default: Any = None) -> Any:
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text(encoding="utf-8"))


class Workspace:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # ---- layout -------------------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def exists(self) -> bool:
        return self.path("workspace.json").exists()

    # ---- settings -----------------------------------------------------------------------
    def init(self, model: ModelSettings, study: StudySettings) -> "Workspace":
        """Create, or update the settings of, this workspace. Stages whose key no longer
        matches become stale (their files stay until recomputed)."""
        from . import __version__

        self.root.mkdir(parents=True, exist_ok=True)
        old = read_json(self.path("workspace.json"), {})
        atomic_write_json(
            self.path("workspace.json"),
            {
                "model": to_dict(model),
                "study": to_dict(study),
                "created": old.get("created", time.strftime("%Y-%m-%dT%H:%M:%S")),
                "metacog_version": __version__,
            },
        )
        return self

    def settings(self) -> tuple[ModelSettings, StudySettings]:
        d = read_json(self.path("workspace.json"))
        if d is None:
            raise WorkspaceError(f"{self.root} is not a metacog workspace (no workspace.json). Run `metacog study --workspace {self.root}` first.")
        return from_dict(ModelSettings, d["model"]), from_dict(StudySettings, d["study"])

    # ---- stage records ------------------------------------------------------------------
    def stage_record(self, stage: str) -> dict | None:
        return read_json(self.path("stages", f"{stage}.json"))

    def stage_fresh(self, stage: str, key: str) -> bool:
        rec = self.stage_record(stage)
        return bool(rec and rec.get("key") == key and rec.get("finished"))

    def mark_stage(self, stage: str, key: str, **info) -> None:
        atomic_write_json(
            self.path("stages", f"{stage}.json"),
            {"stage": stage, "key": key, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info},
        )

    # ---- I/O helpers ---------------------------------------------------------------------
    def write_json(self, name: str, obj) -> Path:
        return atomic_write_json(self.path(name), obj)

    def read_json(self, name: str, default=None):
        return read_json(self.path(name), default)

    def write_parquet(self, name: str, df) -> Path:
        return atomic_write_parquet(self.path(name), df)

    def read_parquet(self, name: str):
        import pandas as pd

        p = self.path(name)
        if not p.exists():
            raise WorkspaceError(f"{p} does not exist yet: run the stage that writes it first.")
        return pd.read_parquet(p)

    # ---- locking -------------------------------------------------------------------------
    def is_locked(self, name: str = "study") -> str | None:
        """Who holds the lock ``name`` (its pid line), or None. Read-only: a momentary shared
        probe that ``lock()`` tolerates."""
        lp = self.path(f".lock-{name}")
        if not lp.exists():
            return None
        with open(lp) as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return f.read().strip() or "another process"
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return None

    @contextlib.contextmanager
    def lock(self, name: str = "study", wait: bool = False) -> Iterator[None]:
        """Exclusive per-workspace lock: a second launch is refused with a message (or
        waits, if ``wait``) instead of interleaving writes. Released if the process dies."""
        self.root.mkdir(parents=True, exist_ok=True)
        lp = self.path(f".lock-{name}")
        f = open(lp, "a+")
        try:
            if wait:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            else:
                # retry briefly: a reader's momentary shared probe (is_locked) must not look like a run
                deadline = time.monotonic() + 1.0
                while True:
                    try:
                        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            f.seek(0)
                            holder = f.read().strip() or "another process"
                            raise WorkspaceBusy(
                                f"workspace {self.root} is busy: '{name}' is already running ({holder}). "
                                "Wait for it to finish or stop it."
                            ) from None
                        time.sleep(0.05)
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}")
            f.flush()
            yield
        finally:
            with contextlib.suppress(Exception):
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            f.close()


def list_workspaces(base: Path | None = None) -> list[Workspace]:
    base = Path(base or cache_dir() / "workspaces")
    if not base.exists():
        return []
    return sorted((Workspace(p) for p in base.iterdir() if (p / "workspace.json").exists()), key=lambda w: w.root.name)
