"""The workspace store: the only code that writes into a workspace (layout, guarded atomic
writes, lineage, stage records, locks).

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
a killed process leaves either the old file or the new one, never half of one. Writes never
follow a symbolic link (:func:`guard_write`); nothing in a workspace is ever unpickled (arrays
are ``.npy`` read with ``allow_pickle=False``, training state is safetensors + JSON:
:mod:`metacog.core.safestate`). Artifacts that later stages join carry their *lineage* (their key
and the keys of their inputs) inside the file (:func:`atomic_write_parquet`), and every reader
that joins them checks it (:func:`metacog.stages.study.verify_lineage`).

Public entry: :class:`Workspace` (plus the guarded atomic writers it uses).
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

from metacog.core.settings import ModelSettings, StudySettings, from_dict, to_dict

PACKAGE_CACHE = Path(__file__).resolve().parents[2] / "cache"  # the repository root's cache/ (this file is metacog/core/workspace.py)


def cache_dir() -> Path:
    """Where models and workspaces live: ``$METACOG_CACHE`` (read at each call) or ./cache."""
    env = os.environ.get("METACOG_CACHE")
    return Path(env).expanduser().resolve() if env else PACKAGE_CACHE


class WorkspaceError(RuntimeError):
    """A workspace problem the user can act on (message says what to do)."""


class WorkspaceBusy(WorkspaceError):
    """The lock a run needs is held by another process (a second launch on the same
    workspace); the message names the holder. Wait for it, or stop it."""


class LineageError(WorkspaceError):
    """Two artifacts that a reader joins were built from different inputs (their keys differ)."""


# ------------------------------------------------------------------------------ write guards
# Every write into a workspace goes through :func:`guard_write`: a write never follows a
# symbolic link (a planted ``activations/last_prompt.npy -> ~/victim`` must not overwrite the
# victim), and files get one mode (0644 less the umask), whichever function wrote them.
def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


FILE_MODE = 0o666 & ~_umask()


def _workspace_root_of(path: Path) -> Path | None:
    for d in path.parents:
        if (d / "workspace.json").is_file() and not (d / "workspace.json").is_symlink():
            return d
    return None


def guard_write(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Check that writing ``path`` cannot leave the workspace; return the path.

    ``root`` is the workspace root (found upwards from ``path`` by its ``workspace.json``
    when not given; with no workspace above, the file and its parent directory are checked).
    Raises :class:`WorkspaceError` when the file, or any directory between it and the root,
    is a symbolic link, or when ``path`` is not inside ``root``."""
    path = Path(os.path.abspath(path))
    root = Path(os.path.abspath(root)) if root is not None else _workspace_root_of(path)
    if root is None:
        chain = [path, path.parent]
    else:
        try:
            rel = path.relative_to(root)
        except ValueError:
            raise WorkspaceError(f"refusing to write {path}: it is outside the workspace {root}") from None
        chain, cur = [], root
        for part in rel.parts:
            if part in ("..",):
                raise WorkspaceError(f"refusing to write {path}: '..' leaves the workspace {root}")
            cur = cur / part
            chain.append(cur)
    for c in chain:
        if c.is_symlink():
            raise WorkspaceError(
                f"{c} is a symbolic link; metacog never writes through links (a link could point outside the "
                "workspace). Remove the link and rerun.")
    return path


def _os_error(path, e: OSError) -> WorkspaceError:
    what = e.strerror or type(e).__name__
    if isinstance(e, PermissionError):
        what += " (is the workspace read-only?)"
    return WorkspaceError(f"cannot write {path}: {what}")


def _atomic(path: Path, write) -> Path:
    path = guard_write(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        guard_write(path)  # mkdir may have created nothing new, but re-check the chain
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as e:
        raise _os_error(path, e) from None
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)  # replaces a link itself, never its target
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, WorkspaceError):
            raise _os_error(path, e) from None
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (temporary file + rename, never through a link).

    Raises:
        WorkspaceError: a link on the way, or an ``OSError`` (read-only, disk full), naming the path."""
    return _atomic(path, lambda t: Path(t).write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (as :func:`atomic_write_text`; same errors)."""
    return _atomic(path, lambda t: Path(t).write_bytes(data))


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf) replaced by None and numpy scalars and
    arrays turned into Python values, so the JSON written is standard (RFC 8259) JSON."""
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, str) else k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if np.isfinite(f) else None
    return obj


def atomic_write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as standard JSON (indent 2; NaN/±inf become null via :func:`json_safe`;
    numpy scalars and arrays, ``Path`` become JSON values) atomically.

    Raises:
        WorkspaceError: as :func:`atomic_write_text`.
        TypeError: a value that is not JSON-serialisable."""
    return atomic_write_text(
        path, json.dumps(json_safe(obj), indent=2, sort_keys=False, default=_json_default, allow_nan=False) + "\n")


LINEAGE_KEY = b"metacog.lineage"


def atomic_write_parquet(path: Path, df, lineage: dict | None = None) -> Path:
    """Write ``df`` as parquet; ``lineage`` (JSON: the key of this artifact and of the inputs it
    was built from) is stored in the file's schema metadata, so it cannot get separated from
    the data it describes (read it back with :func:`metacog.core.files.parquet_lineage`)."""
    if lineage is None:
        return _atomic(path, lambda t: df.to_parquet(t, index=False))

    def w(t):
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[LINEAGE_KEY] = json.dumps(json_safe(lineage), sort_keys=True).encode()
        pq.write_table(table.replace_schema_metadata(meta), t)

    return _atomic(path, w)


def atomic_write_npz(path: Path, **arrays) -> Path:
    """Write ``arrays`` (name → array) as an uncompressed ``.npz`` atomically (as
    :func:`atomic_write_text`; same errors)."""
    def w(t):
        with open(t, "wb") as f:
            np.savez(f, **arrays)

    return _atomic(path, w)


def atomic_save_npy(path: Path, arr) -> Path:
    """``np.save`` through the atomic, link-refusing write."""

    def w(t):
        with open(t, "wb") as f:
            np.save(f, np.asarray(arr), allow_pickle=False)

    return _atomic(path, w)


def open_memmap(path: Path, mode: str, dtype=None, shape=None):
    """``np.lib.format.open_memmap`` for workspace files: never through a link, no pickles.

    Raises:
        WorkspaceError: a link on the path, or an ``OSError`` (missing, read-only, disk full), naming the path."""
    guard_write(path)
    try:
        if mode == "w+":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        return np.lib.format.open_memmap(path, mode=mode)
    except OSError as e:
        raise _os_error(path, e) from None


def open_append(path: Path, binary: bool = False):
    """Open a workspace log for appending (created with the store's mode; never through a
    link). Returns a file object; raises :class:`WorkspaceError`."""
    path = guard_write(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
    except OSError as e:
        raise _os_error(path, e) from None
    return os.fdopen(fd, "ab" if binary else "a", **({} if binary else {"encoding": "utf-8"}))


def remove_tree(path: Path) -> None:
    """Delete a directory of the workspace (a link is removed, never followed)."""
    import shutil

    path = Path(path)
    if path.is_symlink():
        path.unlink()
        return
    guard_write(path)
    shutil.rmtree(path, ignore_errors=True)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        f = float(o)
        return None if not np.isfinite(f) else f
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def read_json(path: Path, default: Any = None) -> Any:
    """Parse a JSON file (``default`` if it does not exist). A file that is not valid JSON
    raises :class:`WorkspaceError` naming the file and the problem."""
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:
        raise WorkspaceError(f"{path} is not valid JSON ({str(e)[:120]}); repair or delete it") from None
    except OSError as e:
        raise WorkspaceError(f"cannot read {path}: {e.strerror or e}") from None


class Workspace:
    """One study's directory (model × dataset × settings) and the only way metacog writes to it.

    Every write goes through the module's guarded atomic writers (no symbolic links followed,
    one file mode, ``OSError`` turned into one :class:`WorkspaceError` line naming the path).
    Locks: ``lock("study")`` is the workspace lock, held exclusively by the stages that write
    the shared artifacts (items, answers, activations, probes); every other writer (fine-tuning,
    patching, methods, sweeps) holds it shared through :meth:`writer`, so no reader of those
    artifacts runs while they are rewritten."""

    WORKSPACE_LOCK = "study"
    #: files metacog itself may leave in a directory before it holds workspace.json
    OWN_FILES = (".lock-", "workspace.json", ".metacog-jobs")

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # ---- layout -------------------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        """The path ``<root>/<parts...>`` (nothing is created or checked)."""
        return self.root.joinpath(*parts)

    @property
    def exists(self) -> bool:
        """True when the root holds a ``workspace.json`` (the workspace was initialised)."""
        return self.path("workspace.json").is_file()

    # ---- checks before any write ---------------------------------------------------------
    def check_usable(self, create: bool = True) -> "Workspace":
        """Refuse, with one line naming the path, a root that metacog must not write into:
        a file; a path under a file; a read-only directory; a non-empty directory that is not
        a metacog workspace (a user's folder is never adopted); a workspace holding symbolic
        links. Writes nothing. Raises :class:`WorkspaceError`."""
        r = self.root
        if r.exists() and not r.is_dir():
            raise WorkspaceError(f"{r} is a file, not a workspace directory: choose a directory path")
        if not r.exists():
            for p in r.parents:
                if p.exists():
                    if not p.is_dir():
                        raise WorkspaceError(f"cannot create workspace {r}: {p} is a file, not a directory")
                    if create and not os.access(p, os.W_OK | os.X_OK):
                        raise WorkspaceError(f"cannot create workspace {r}: {p} is not writable")
                    break
            return self
        if create and not os.access(r, os.W_OK | os.X_OK):
            raise WorkspaceError(f"workspace {r} is read-only: metacog cannot write its results there "
                                 "(make it writable or copy it: `cp -a` then `--workspace COPY`)")
        if not self.exists:
            foreign = sorted(p.name for p in r.iterdir() if not p.name.startswith(self.OWN_FILES))
            if foreign:
                raise WorkspaceError(
                    f"{r} is not empty and is not a metacog workspace (it has {', '.join(foreign[:3])}"
                    f"{' …' if len(foreign) > 3 else ''} and no workspace.json): metacog adopts only an empty "
                    "directory or one it made; choose a new directory")
        self.check_links()
        return self

    def check_links(self) -> None:
        """Refuse a workspace that contains a symbolic link anywhere (WorkspaceError naming it).

        Raises:
            WorkspaceError: a symbolic link inside the workspace (named, with its target)."""
        if not self.root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            for n in dirnames + filenames:
                p = Path(dirpath) / n
                if p.is_symlink():
                    raise WorkspaceError(
                        f"{p} is a symbolic link (to {os.readlink(p)}); a workspace must not contain links, since a "
                        "write through one could land outside it. Remove the link and rerun.")

    # ---- settings -----------------------------------------------------------------------
    def init(self, model: ModelSettings, study: StudySettings) -> "Workspace":
        """Create, or update the settings of, this workspace. Stages whose key no longer
        matches become stale (their files stay until recomputed). Raises
        :class:`WorkspaceError` where :meth:`check_usable` does."""
        from metacog import __version__

        self.check_usable()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _os_error(self.root, e) from None
        old = read_json(self.path("workspace.json"), {})
        old = old if isinstance(old, dict) else {}
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
        """The workspace's (model, study) settings. A model ``dtype`` of ``auto`` reads as the
        dtype the study recorded in ``model.json`` once it ran: what ``auto`` resolves to changes
        between machines and versions (float32, or bfloat16 with ragged attention), and every
        later load for this workspace (a resumed study, patching, steering, fine-tuning,
        evaluation, the app) must compute in the precision its results were made in.

        Raises :class:`WorkspaceError` naming ``workspace.json`` when it is missing, not JSON,
        or has missing keys or wrong types."""
        f = self.path("workspace.json")
        d = read_json(f)
        if d is None:
            raise WorkspaceError(f"{self.root} is not a metacog workspace (no workspace.json). Run `metacog study --workspace {self.root}` first.")
        try:
            if not isinstance(d, dict) or not isinstance(d.get("model"), dict) or not isinstance(d.get("study"), dict):
                raise ValueError("it needs the objects 'model' and 'study'")
            model, study = from_dict(ModelSettings, d["model"]), from_dict(StudySettings, d["study"])
        except (TypeError, ValueError, KeyError) as e:
            raise WorkspaceError(f"{f} is invalid: {e}. Repair it, or delete it and rerun `metacog study`.") from None
        rec = self.read_json("model.json") if model.dtype == "auto" else None
        if isinstance(rec, dict) and rec.get("dtype") in ("float32", "bfloat16", "float16"):
            model = from_dict(ModelSettings, {**to_dict(model), "dtype": rec["dtype"]})
        return model, study

    # ---- stage records ------------------------------------------------------------------
    def stage_record(self, stage: str) -> dict | None:
        """The record ``stages/<stage>.json`` (``{stage, key, finished, seconds, ...}``) or None.

        Raises:
            WorkspaceError: the record is not valid JSON."""
        rec = read_json(self.path("stages", f"{stage}.json"))
        return rec if isinstance(rec, dict) else None

    def stage_key(self, stage: str) -> str | None:
        """The key ``stage`` last finished with (:meth:`stage_record`), or None before it ran."""
        return (self.stage_record(stage) or {}).get("key")

    def answers_changed(self, key: str | None, when: str | None) -> bool:
        """Whether the study's answers changed since an artifact read them: its recorded ``key`` is not
        today's, or (none recorded) today's answers are newer than its local-time ``when``; False if unknown."""
        rec = self.stage_record("answers") or {}
        if key and rec.get("key"):
            return key != rec["key"]
        return bool(when and rec.get("finished") and str(rec["finished"]) > str(when))

    def stage_fresh(self, stage: str, key: str) -> bool:
        """True when ``stage`` finished with exactly this ``key`` (the hash of its inputs and
        settings), i.e. its artifacts need not be recomputed."""
        rec = self.stage_record(stage)
        return bool(rec and rec.get("key") == key and rec.get("finished"))

    def mark_stage(self, stage: str, key: str, **info) -> None:
        """Record that ``stage`` finished with ``key`` now; ``info`` (JSON-able, e.g. ``seconds``)
        is stored beside it. Raises :class:`WorkspaceError` as :func:`atomic_write_json`."""
        atomic_write_json(
            self.path("stages", f"{stage}.json"),
            {"stage": stage, "key": key, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info},
        )

    # ---- I/O helpers ---------------------------------------------------------------------
    def write_json(self, name: str, obj) -> Path:
        """Write ``obj`` as JSON to ``<root>/<name>`` atomically.

        Raises:
            WorkspaceError: ``name`` leaves the workspace or crosses a link, or the write fails."""
        return atomic_write_json(guard_write(self.path(name), self.root), obj)

    def read_json(self, name: str, default=None):
        """Parse ``<root>/<name>`` (``default`` if absent).

        Raises:
            WorkspaceError: the file is not valid JSON or cannot be read."""
        return read_json(self.path(name), default)

    def write_text(self, name: str, text: str) -> Path:
        """Write ``text`` to ``<root>/<name>`` atomically (errors as :meth:`write_json`)."""
        return atomic_write_text(guard_write(self.path(name), self.root), text)

    def write_parquet(self, name: str, df, lineage: dict | None = None) -> Path:
        """Atomic parquet write; ``lineage`` = {"key": this artifact's key, "<input>": its key…}."""
        return atomic_write_parquet(guard_write(self.path(name), self.root), df, lineage)

    def lineage(self, name: str) -> dict | None:
        """The lineage stored with a parquet artifact (None when it has none or is absent)."""
        p = self.path(name)
        from metacog.core.files import parquet_lineage

        return parquet_lineage(p) if p.exists() else None

    def read_parquet(self, name: str):
        """Read ``<root>/<name>`` as a pandas DataFrame (lineage is not checked here:
        :func:`metacog.stages.study.verify_lineage` does that for joins).

        Raises:
            WorkspaceError: the file does not exist yet (the message says to run its stage)."""
        import pandas as pd

        p = self.path(name)
        if not p.exists():
            raise WorkspaceError(f"{p} does not exist yet: run the stage that writes it first.")
        from metacog.core.files import read_table

        return read_table(p)

    # ---- locking -------------------------------------------------------------------------
    def _open_lock(self, name: str) -> int:
        lp = self.path(f".lock-{name}")
        try:
            return os.open(lp, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
        except OSError as e:
            if lp.is_symlink():
                raise WorkspaceError(f"{lp} is a symbolic link; metacog never writes through links. Remove it and rerun.") from None
            raise _os_error(lp, e) from None

    def is_locked(self, name: str = "study") -> str | None:
        """Who holds the lock ``name`` exclusively (its pid line), or None. Read-only: a
        momentary shared probe that ``lock()`` tolerates."""
        lp = self.path(f".lock-{name}")
        if not lp.exists() or lp.is_symlink():
            return None
        try:
            fd = os.open(lp, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        with os.fdopen(fd) as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return f.read().strip() or "another process"
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return None

    def holders(self) -> list[str]:
        """Names of the locks (``.lock-<name>``) some live process holds now."""
        out = []
        for p in sorted(self.root.glob(".lock-*")) if self.root.is_dir() else []:
            n = p.name[len(".lock-"):]
            if self.is_locked(n):
                out.append(n)
        return out

    @contextlib.contextmanager
    def lock(self, name: str = "study", wait: bool = False, shared: bool = False) -> Iterator[None]:
        """Per-workspace lock: a second launch is refused with a message (or waits, if
        ``wait``) instead of interleaving writes. Released if the process dies. ``shared``
        locks coexist with each other but not with the exclusive one. The lock file is opened
        without following links. Raises :class:`WorkspaceBusy`."""
        self.check_usable()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _os_error(self.root, e) from None
        fd = self._open_lock(name)
        f = os.fdopen(fd, "r+")
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            if wait:
                fcntl.flock(f.fileno(), mode)
            else:
                # retry briefly: a reader's momentary shared probe (is_locked) must not look like a run
                deadline = time.monotonic() + 1.0
                while True:
                    try:
                        fcntl.flock(f.fileno(), mode | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            f.seek(0)
                            holder = f.read().strip()
                            if shared or holder:
                                what = f"'{name}' is already running ({holder or 'another process'})"
                            else:
                                others = [h for h in self.holders() if h != name]
                                what = ("other jobs are using it (" + ", ".join(others) + ")") if others else \
                                    "another job is using it"
                            raise WorkspaceBusy(
                                f"workspace {self.root} is busy: {what}. Wait for it to finish or stop it."
                            ) from None
                        time.sleep(0.05)
            if not shared:
                f.seek(0)
                f.truncate()
                f.write(f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}")
                f.flush()
            yield
        finally:
            with contextlib.suppress(Exception):
                if not shared:
                    f.seek(0)
                    f.truncate()
                    f.flush()
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            f.close()

    @contextlib.contextmanager
    def writer(self, name: str, wait: bool = False) -> Iterator[None]:
        """The lock every writer other than the study takes: the workspace lock shared (so the
        study cannot rewrite items/answers/probes underneath it, and it cannot start while the
        study runs), then its own exclusive lock ``name`` (one job of each kind at a time)."""
        with self.lock(self.WORKSPACE_LOCK, wait=wait, shared=True), self.lock(name, wait=wait):
            yield


def list_workspaces(base: Path | None = None) -> list[Workspace]:
    """The workspaces directly under ``base`` (default ``<cache_dir()>/workspaces``), sorted by
    directory name; links and directories without ``workspace.json`` are skipped. [] if ``base`` is absent."""
    base = Path(base or cache_dir() / "workspaces")
    if not base.exists():
        return []
    return sorted((Workspace(p) for p in base.iterdir()
                   if not p.is_symlink() and (p / "workspace.json").is_file()), key=lambda w: w.root.name)


def model_name(ws: Workspace) -> str:
    """The name a workspace's model is shown under (figure titles, page headers, reports):
    ``model.json``'s ``name`` or ``spec`` (written once the study loaded the model), else
    summary.json's model, else the model spec in workspace.json, else the folder name.

    Raises:
        WorkspaceError: ``model.json`` or ``summary.json`` exists but is not valid JSON.
    """
    for m in (ws.read_json("model.json"), (ws.read_json("summary.json") or {}).get("model")):
        if isinstance(m, dict) and (m.get("name") or m.get("spec")):
            return str(m.get("name") or m.get("spec"))
    try:
        return ws.settings()[0].model
    except WorkspaceError:
        return ws.root.name
