"""Sweep settings, expansion, planning and the record: :class:`SweepSettings` (one fine-tuning
settings object × seeds, workspaces, target kinds, learning rates), :func:`expand` into
:class:`RunSpec` s, :func:`plan_one` (skip / evaluate / resume / train), and
:class:`SweepRecord` (``<workspace>/sweeps/<sweep_id>/sweep.json``). See :mod:`metacog.sweeps`."""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from metacog.finetune.runs import ACTIVE, Run
from metacog.finetune.settings import TARGET_KINDS, FinetuneSettings, SettingsError
from metacog.core.settings import stable_hash
from metacog.core.workspace import Workspace, WorkspaceError, atomic_write_json, read_json

SWEEP_LOCK = "sweep"
FINETUNE_LOCK = "finetune"
EXECUTORS = ("local", "ray")
REACH_TIMEOUT_S = 3.0
HEADLINE_KEYS = ("accuracy_base", "accuracy_ft", "auroc_base", "auroc_ft", "ece_base", "ece_ft", "brier_base", "brier_ft",
                 "ceiling_base", "ceiling_ft", "ev_auroc_base", "ev_auroc_ft", "auroc_probe", "recovery", "n_eval")


class SweepError(WorkspaceError):
    """A sweep that cannot be expanded, started or executed (message says what to change)."""


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class SweepSettings:
    """What to replicate: ``base`` over ``seeds`` (× ``targets`` × ``lrs`` × extra ``workspaces``)."""

    base: FinetuneSettings = field(default_factory=FinetuneSettings)
    seeds: tuple[int, ...] = (42, 123, 456)
    targets: tuple[str, ...] = ()  # empty: base.targets only
    lrs: tuple[float, ...] = ()  # empty: base.lr only
    workspaces: tuple[str, ...] = ()  # other models' workspaces (the home workspace always comes first)
    evaluate: bool = True
    eval_limit: int | None = None  # evaluate on the first N eval-split items (None = all)
    threads: int = 1  # torch threads per run

    def __post_init__(self):
        object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "lrs", tuple(float(x) for x in self.lrs))
        object.__setattr__(self, "workspaces", tuple(str(Path(w).expanduser().resolve()) for w in self.workspaces))
        self.validate()

    def validate(self) -> None:
        """Check the settings (called on construction). Raises: SettingsError for no seed, a negative
        or non-integer seed, a value listed twice, an unknown target kind, a learning rate outside
        (0, 1), threads outside 1..256, an eval limit below 10 items, or more than 512 expanded
        runs."""
        if not self.seeds:
            raise SettingsError("a sweep needs at least one seed (--seeds 42,123,456)")
        for s in self.seeds:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise SettingsError(f"seeds must be non-negative integers, not {s!r}")
        for name, xs in (("seed", self.seeds), ("target kind", self.targets), ("learning rate", self.lrs),
                         ("workspace", self.workspaces)):
            dup = sorted({x for x in xs if list(xs).count(x) > 1}, key=str)
            if dup:
                raise SettingsError(f"{name} {dup[0]} is listed twice in the sweep")
        for t in self.targets:
            if t not in TARGET_KINDS:
                raise SettingsError(f"sweep targets must be among {', '.join(TARGET_KINDS)}, not {t!r}")
        for lr in self.lrs:
            self.base.replace(lr=lr)  # validates (0 < lr < 1)
        if not isinstance(self.threads, int) or not 1 <= self.threads <= 256:
            raise SettingsError(f"threads per run must be an integer from 1 to 256, not {self.threads!r}")
        if self.eval_limit is not None and (not isinstance(self.eval_limit, int) or self.eval_limit < 10):
            raise SettingsError(f"eval limit must be at least 10 items (or None for the whole eval split), not {self.eval_limit!r}")
        n = len(self.seeds) * max(1, len(self.targets)) * max(1, len(self.lrs)) * (1 + len(self.workspaces))
        if n > 512:
            raise SettingsError(f"this sweep expands to {n} runs; more than 512 is surely a typo")

    def to_dict(self) -> dict:
        """The settings as a JSON-able dict (the ``settings`` of sweep.json; inverse of :meth:`from_dict`)."""
        return {"base": self.base.to_dict(), "seeds": list(self.seeds), "targets": list(self.targets), "lrs": list(self.lrs),
                "workspaces": list(self.workspaces), "evaluate": self.evaluate, "eval_limit": self.eval_limit,
                "threads": self.threads}

    @classmethod
    def from_dict(cls, d: dict) -> "SweepSettings":
        """Settings from :meth:`to_dict` output (missing optional keys take their defaults). Raises:
        SettingsError as :meth:`validate`; KeyError without ``base`` or ``seeds``."""
        return cls(base=FinetuneSettings.from_dict(d["base"]), seeds=tuple(d["seeds"]), targets=tuple(d.get("targets", ())),
                   lrs=tuple(d.get("lrs", ())), workspaces=tuple(d.get("workspaces", ())), evaluate=bool(d.get("evaluate", True)),
                   eval_limit=d.get("eval_limit"), threads=int(d.get("threads", 1)))

    def key(self, home: str | Path) -> str:
        """A stable hash of the home workspace path and the settings: the same sweep launched again has
        the same key (and resumes)."""
        return stable_hash("sweep", str(Path(home).resolve()), self.to_dict())


@dataclass(frozen=True)
class RunSpec:
    """One expanded run: a workspace and the complete settings of its fine-tuning run."""

    workspace: str
    settings: FinetuneSettings

    @property
    def key(self) -> str:
        """The run's settings hash (``FinetuneSettings.key()``), the ``settings_key`` its run directory
        records."""
        return self.settings.key()

    def label(self, with_ws: bool = False) -> str:
        """A short label "targets · lr · seed" (prefixed by the workspace name when ``with_ws``)."""
        s = self.settings
        out = f"{s.targets} · lr {s.lr:g} · seed {s.seed}"
        return f"{Path(self.workspace).name} · {out}" if with_ws else out


def expand(home: str | Path, sweep: SweepSettings) -> list[RunSpec]:
    """The runs of a sweep, in the order workspace, targets, lr, seed (seeds vary fastest)."""
    home = str(Path(home).expanduser().resolve())
    wss = [home] + [w for w in sweep.workspaces if w != home]
    out = []
    for w in wss:
        for t in sweep.targets or (sweep.base.targets,):
            for lr in sweep.lrs or (sweep.base.lr,):
                for seed in sweep.seeds:
                    out.append(RunSpec(w, sweep.base.replace(targets=t, lr=lr, seed=int(seed))))
    return out


# ------------------------------------------------------------------------------ plan
def runs_with_key(ws: Workspace, key: str) -> list[Run]:
    """This workspace's runs whose settings hash is ``key`` (newest first)."""
    d = ws.path("runs")
    out = []
    if d.exists():
        for p in sorted(d.iterdir(), reverse=True):
            s = read_json(p / "settings.json") if (p / "settings.json").exists() else None
            if s and s.get("settings_key") == key:
                out.append(Run(ws, p.name))
    return out


def _evaluated(run: Run, eval_limit: int | None) -> bool:
    ev = run.eval_result()
    return bool(ev) and (ev.get("items") or {}).get("limit") == eval_limit


def plan_one(spec: RunSpec, sweep: SweepSettings) -> tuple[str, Run | None, str]:
    """(action, existing run or None, why) for one expanded run."""
    ws = Workspace(spec.workspace)
    found = runs_with_key(ws, spec.key)
    for r in found:  # complete first
        if r.live_status() == "done" and r.has_adapter() and (not sweep.evaluate or _evaluated(r, sweep.eval_limit)):
            return "skip", r, "already complete (same settings hash)"
    for r in found:
        if r.live_status() == "done" and r.has_adapter():
            return "evaluate", r, "trained, not evaluated" + (f" on {sweep.eval_limit} items" if sweep.eval_limit else "")
    for r in found:
        st = r.live_status()
        if st in ACTIVE:
            return "busy", r, f"{st} in another process (pid {r.status().get('pid')})"
        return "resume", r, f"{st}: continues from its newest checkpoint"
    return "train", None, "new run"


# ------------------------------------------------------------------------------ record
def sweeps_dir(ws: Workspace) -> Path:
    """The directory of a workspace's sweep records: ``<workspace>/sweeps``."""
    return ws.path("sweeps")


class SweepRecord:
    """``sweeps/<id>/sweep.json``; every change is written atomically (thread-safe)."""

    def __init__(self, ws: Workspace, sweep_id: str):
        if not sweep_id or "/" in sweep_id or sweep_id.startswith("."):
            raise SweepError(f"bad sweep id {sweep_id!r}")
        self.ws, self.id = ws, sweep_id
        self.dir = sweeps_dir(ws) / sweep_id
        self.file = self.dir / "sweep.json"
        self._lock = threading.Lock()
        self.data = read_json(self.file, None) or {}

    @property
    def exists(self) -> bool:
        """Whether sweep.json has been written."""
        return self.file.exists()

    def save(self) -> None:
        """Write sweep.json atomically, stamping ``updated`` (local time, ISO 8601 to the second)."""
        with self._lock:
            self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            atomic_write_json(self.file, self.data)

    def entry(self, i: int) -> dict:
        """The record of expanded run ``i`` (a live dict of ``data["runs"]``)."""
        return self.data["runs"][i]

    def update(self, i: int, **kw) -> None:
        """Update expanded run ``i``'s record with ``kw`` and save (thread-safe)."""
        with self._lock:
            self.data["runs"][i].update(kw)
        self.save()


def list_sweeps(ws: Workspace) -> list[dict]:
    """Every sweep record of a workspace (newest first)."""
    d = sweeps_dir(ws)
    out = []
    if d.exists():
        for p in d.iterdir():
            with contextlib.suppress(json.JSONDecodeError, OSError):
                r = read_json(p / "sweep.json")
                if r:
                    out.append(r)
    return sorted(out, key=lambda r: r.get("created", ""), reverse=True)


def load_sweep(ws: Workspace, sweep_id: str) -> dict:
    """The record (sweep.json content) of sweep ``sweep_id`` in ``ws``. Raises: SweepError naming the
    sweeps that exist when there is none by that id."""
    r = read_json(sweeps_dir(ws) / sweep_id / "sweep.json")
    if r is None:
        known = [s["id"] for s in list_sweeps(ws)]
        raise SweepError(f"no sweep {sweep_id!r} in {ws.root}" + (f"; sweeps here: {', '.join(known)}" if known else ""))
    return r


def sweep_table(rec: dict):
    """The record's runs as a table (one row per expanded run)."""
    import pandas as pd

    rows = []
    for e in rec.get("runs", []):
        h = e.get("headline") or {}
        rows.append({"run": e.get("run"), "workspace": Path(e["workspace"]).name, "targets": e["targets"], "lr": e["lr"],
                     "seed": e["seed"], "action": e["action"], "status": e["status"], "seconds": e.get("seconds"),
                     "auroc_base": h.get("auroc_base"), "auroc_ft": h.get("auroc_ft"), "ece_base": h.get("ece_base"),
                     "ece_ft": h.get("ece_ft"), "accuracy_ft": h.get("accuracy_ft"), "error": e.get("error")})
    return pd.DataFrame(rows)
