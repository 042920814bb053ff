"""Sweeps: one fine-tuning settings object replicated over seeds (and optionally over models =
workspaces, target kinds and learning rates), launched, resumed and evaluated as one action.

    from metacog.sweeps import SweepSettings, run_sweep
    rec = run_sweep("cache/workspaces/W", SweepSettings(FinetuneSettings(epochs=3), seeds=(42, 123, 456)))

* **Expansion** (:func:`expand`): the cross product workspace × targets × lr × seed of
  ``FinetuneSettings.replace(...)``; each run is identified by its settings hash
  (``FinetuneSettings.key()``, the ``settings_key`` every run directory records).
* **Skip / resume** (:func:`plan`): per expanded run, the workspace's runs with the same hash
  decide what is left: ``skip`` (trained and evaluated), ``evaluate`` (trained only),
  ``resume`` (interrupted / cancelled / failed: the fine-tune runner continues from its newest
  checkpoint) or ``train`` (a new run, created by the coordinator before any work).
* **Executors**: ``local`` (default) is a pool of worker *processes* with
  ``workers × threads ≤ cores``; ``ray`` submits the same task function as Ray tasks
  (``num_cpus = threads``) to a local ``ray.init()`` or a cluster (``address=HOST:PORT``,
  checked with a short socket timeout first; the workspace must be on a shared filesystem).
  Both call :func:`run_task`, so the artifacts are the same.
* **Record**: ``<workspace>/sweeps/<sweep_id>/sweep.json`` (settings, expanded runs, action and
  status per run, timings, history of launches), written atomically after every change.
* **Locks**: the coordinator holds the workspace's ``sweep`` lock (a second sweep is refused)
  and its ``finetune`` lock (a run launched from the Fine-tune page queues behind the sweep);
  its workers take a per-run lock, since the coordinator budgets their cores.
* **Faults**: a worker that dies (killed, out of memory) marks its run ``interrupted``; the
  others go on; the sweep ends ``incomplete``, and the same command again finishes only what
  is missing.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from metacog.finetune.runs import ACTIVE, Run
from metacog.finetune.settings import TARGET_KINDS, FinetuneSettings, SettingsError
from metacog.core.settings import stable_hash
from metacog.core.workspace import Workspace, WorkspaceBusy, WorkspaceError, atomic_write_json, open_append, read_json

SWEEP_LOCK = "sweep"
FINETUNE_LOCK = "finetune"
EXECUTORS = ("local", "ray")
REACH_TIMEOUT_S = 3.0
HEADLINE_KEYS = ("accuracy_base", "accuracy_ft", "auroc_base", "auroc_ft", "ece_base", "ece_ft", "brier_base", "brier_ft",
                 "ceiling_base", "ceiling_ft", "ev_auroc_base", "ev_auroc_ft", "auroc_probe", "recovery", "n_eval")


class SweepError(WorkspaceError):
    """A sweep that cannot be expanded, started or executed (message says what to change)."""


def available_cores() -> int:
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
        return {"base": self.base.to_dict(), "seeds": list(self.seeds), "targets": list(self.targets), "lrs": list(self.lrs),
                "workspaces": list(self.workspaces), "evaluate": self.evaluate, "eval_limit": self.eval_limit,
                "threads": self.threads}

    @classmethod
    def from_dict(cls, d: dict) -> "SweepSettings":
        return cls(base=FinetuneSettings.from_dict(d["base"]), seeds=tuple(d["seeds"]), targets=tuple(d.get("targets", ())),
                   lrs=tuple(d.get("lrs", ())), workspaces=tuple(d.get("workspaces", ())), evaluate=bool(d.get("evaluate", True)),
                   eval_limit=d.get("eval_limit"), threads=int(d.get("threads", 1)))

    def key(self, home: str | Path) -> str:
        return stable_hash("sweep", str(Path(home).resolve()), self.to_dict())


@dataclass(frozen=True)
class RunSpec:
    """One expanded run: a workspace and the complete settings of its fine-tuning run."""

    workspace: str
    settings: FinetuneSettings

    @property
    def key(self) -> str:
        return self.settings.key()

    def label(self, with_ws: bool = False) -> str:
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
        return self.file.exists()

    def save(self) -> None:
        with self._lock:
            self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            atomic_write_json(self.file, self.data)

    def entry(self, i: int) -> dict:
        return self.data["runs"][i]

    def update(self, i: int, **kw) -> None:
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
    r = read_json(sweeps_dir(ws) / sweep_id / "sweep.json")
    if r is None:
        known = [s["id"] for s in list_sweeps(ws)]
        raise SweepError(f"no sweep {sweep_id!r} in {ws.root}" + (f"; sweeps here: {', '.join(known)}" if known else ""))
    return r


# ------------------------------------------------------------------------------ the task (both executors)
def run_task(task: dict) -> dict:
    """Train/resume and/or evaluate one run in this process; the function both executors call.

    ``task``: workspace, run, action (train | resume | evaluate), evaluate, eval_limit, threads.
    Returns a JSON-able result (never raises for a failed run: the failure is the result)."""
    import torch

    from metacog.finetune.runner import evaluate as evaluate_run, execute

    t0 = time.time()
    threads = int(task.get("threads") or 1)
    torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ws = Workspace(task["workspace"])
    run = Run(ws, task["run"])
    lock = f"finetune-run-{task['run']}"
    err = None
    resumed_from = None
    if task["action"] == "resume":
        from metacog.finetune.backends.common import latest_checkpoint

        ck = latest_checkpoint(run.path)
        resumed_from = int(ck[0]) if ck else 0
        print(f"resuming {run.id} from its checkpoint at update {resumed_from}" if ck else
              f"re-starting {run.id} (no checkpoint was saved)", file=sys.stderr, flush=True)
    try:
        if task["action"] in ("train", "resume"):
            run.clear_cancel()
            execute(ws, run.id, threads=threads, evaluate_after=bool(task.get("evaluate")), eval_limit=task.get("eval_limit"),
                    lock_name=lock)
        elif task["action"] == "evaluate":
            evaluate_run(ws, run.id, threads=threads, limit=task.get("eval_limit"), lock_name=lock)
    except Exception as e:  # the run's status.json already says failed; report it, the sweep goes on
        err = f"{type(e).__name__}: {e}"
    st = run.status()
    ev = run.eval_result() or {}
    status = st.get("status", "failed")
    if err or (task.get("evaluate") and st.get("eval_status") not in (None, "done")):
        status = "failed" if status != "cancelled" else status
    if task.get("evaluate") and status == "done" and not ev:
        status = "failed"
        err = err or f"evaluation {st.get('eval_status')}: {st.get('eval_error')}"
    return {"run": run.id, "status": status, "error": err or st.get("error") or st.get("eval_error"),
            "seconds": round(time.time() - t0, 1), "train_seconds": st.get("train_seconds"),
            "eval_seconds": st.get("eval_seconds"), "updates_run": st.get("updates_run"), "resumed_from": resumed_from,
            "headline": {k: (ev.get("headline") or {}).get(k) for k in HEADLINE_KEYS} if ev else None,
            "host": socket.gethostname(), "pid": os.getpid()}


# ------------------------------------------------------------------------------ executors
class LocalExecutor:
    """A pool of worker processes (``python -m metacog.sweeps worker``), ``workers`` at a time."""

    name = "local"

    def __init__(self, workers: int, threads: int, log_dir: Path, poll_s: float = 0.5):
        self.workers, self.threads, self.log_dir, self.poll_s = workers, threads, Path(log_dir), poll_s

    def _env(self) -> dict:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["TOKENIZERS_PARALLELISM"] = "false"
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[k] = str(self.threads)
        return env

    def run(self, tasks: list[tuple[int, dict]], on_start, on_done, should_stop=None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        pending = list(tasks)
        running: dict[int, tuple[subprocess.Popen, Path, float]] = {}
        try:
            while pending or running:
                if should_stop and should_stop():
                    raise KeyboardInterrupt
                while pending and len(running) < self.workers:
                    i, task = pending.pop(0)
                    res = self.log_dir / f"{task['run']}.result.json"
                    with contextlib.suppress(FileNotFoundError):
                        res.unlink()
                    log = open_append(self.log_dir / f"{task['run']}.log", binary=True)
                    try:
                        p = subprocess.Popen([sys.executable, "-m", "metacog.sweeps", "worker", "--task", json.dumps(task),
                                              "--result", str(res)], stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, env=self._env(), start_new_session=True)
                    finally:
                        log.close()
                    running[i] = (p, res, time.time())
                    on_start(i, {"pid": p.pid, "host": socket.gethostname()})
                for i in list(running):
                    p, res, t0 = running[i]
                    rc = p.poll()
                    if rc is None:
                        continue
                    del running[i]
                    out = read_json(res) if res.exists() else None
                    if out is None:
                        how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
                        out = {"status": "interrupted", "seconds": round(time.time() - t0, 1),
                               "error": f"worker process {p.pid} died ({how}) before it finished; "
                                        "re-launch the sweep to resume it from its last checkpoint"}
                    on_done(i, out)
                if running:
                    time.sleep(self.poll_s)
        except BaseException:
            for p, _, _ in running.values():  # ask them to checkpoint and stop
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
            for p, _, _ in running.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=60)
            raise


def check_ray_address(address: str, timeout: float = REACH_TIMEOUT_S) -> tuple[str, int]:
    """``HOST:PORT`` of a Ray head that answers a TCP connection within ``timeout`` seconds,
    else a SweepError saying what to do (ray.init itself would hang for a long time)."""
    a = address.strip()
    for pre in ("ray://", "http://", "https://"):
        if a.startswith(pre):
            a = a[len(pre):]
    host, _, port = a.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SweepError(f"--address must be HOST:PORT of a Ray head node (e.g. 10.0.0.5:6379), not {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        why = "timed out" if isinstance(e, socket.timeout) else (e.strerror or str(e))
        raise SweepError(
            f"the Ray cluster at {host}:{port} does not answer ({why}, {timeout:g} s timeout). Start its head with "
            f"`ray start --head --port {port}` on {host}, check the address and the firewall, or leave out --address "
            "to run Ray on this machine.") from None
    return host, int(port)


def _ray_task(task: dict) -> dict:
    return run_task(task)


class RayExecutor:
    """The same tasks as Ray tasks (``num_cpus = threads``); a local ``ray.init()`` when no address."""

    name = "ray"

    def __init__(self, workers: int, threads: int, address: str | None = None, num_cpus: int | None = None):
        self.workers, self.threads, self.address, self.num_cpus = workers, threads, address, num_cpus

    def run(self, tasks, on_start, on_done, should_stop=None) -> None:
        try:
            import ray
        except ImportError:
            raise SweepError("the ray executor needs Ray: pip install 'metacog[ray]' (or pip install 'ray>=2.9')") from None
        started_here = False
        if not ray.is_initialized():
            if self.address and self.address != "auto":
                check_ray_address(self.address)
            kw = dict(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
            if self.address:
                ray.init(address=self.address, **kw)
            else:
                ray.init(num_cpus=self.num_cpus or self.workers * self.threads, **kw)
            started_here = True
        try:
            remote = ray.remote(num_cpus=self.threads, max_retries=0)(_ray_task)
            pending = list(tasks)
            inflight: dict = {}
            while pending or inflight:
                if should_stop and should_stop():
                    raise KeyboardInterrupt
                while pending and len(inflight) < self.workers:
                    i, task = pending.pop(0)
                    ref = remote.remote(task)
                    inflight[ref] = (i, time.time())
                    on_start(i, {"pid": None, "host": "ray"})
                done, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
                for ref in done:
                    i, t0 = inflight.pop(ref)
                    try:
                        out = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        out = {"status": "interrupted", "seconds": round(time.time() - t0, 1),
                               "error": f"Ray worker failed ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
                                        "re-launch the sweep to resume it from its last checkpoint"}
                    on_done(i, out)
        except BaseException:
            for ref in list(locals().get("inflight", {})):
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            raise
        finally:
            if started_here:
                ray.shutdown()


# ------------------------------------------------------------------------------ coordinator
def worker_budget(executor: str, workers: int | None, threads: int, n_tasks: int, cores: int | None = None) -> int:
    """Workers to run at once: ``workers × threads ≤ cores`` on this machine (local executor and
    a local Ray); a Ray cluster (address given) may have more cores than this machine."""
    cores = cores or available_cores()
    if threads > cores and executor == "local":
        raise SweepError(f"{threads} threads per run is more than the {cores} cores here; use --threads {cores} or fewer")
    most = max(1, cores // threads)
    if workers is None:
        return max(1, min(most, n_tasks))
    if not isinstance(workers, int) or workers < 1:
        raise SweepError(f"workers must be a positive integer, not {workers!r}")
    if executor == "local" and workers > most:
        raise SweepError(f"{workers} workers × {threads} threads = {workers * threads} > {cores} cores: the runs would fight "
                         f"over cores. Use --workers {most} (or fewer threads per run).")
    return max(1, min(workers, n_tasks))


@contextlib.contextmanager
def _hold_locks(roots: list[str]):
    with contextlib.ExitStack() as stack:
        for r in roots:
            ws = Workspace(r)
            try:
                stack.enter_context(ws.writer(SWEEP_LOCK))
            except WorkspaceBusy:
                raise SweepError(f"another sweep is running on {ws.root} ({ws.is_locked(SWEEP_LOCK) or 'another process'}); "
                                 "wait for it to finish (or stop it) and launch again: completed runs are skipped") from None
            try:
                stack.enter_context(ws.writer(FINETUNE_LOCK))
            except WorkspaceBusy:
                raise SweepError(f"a fine-tuning run is in progress on {ws.root} ({ws.is_locked(FINETUNE_LOCK) or 'another process'}); "
                                 "wait for it (or cancel it) and launch the sweep again") from None
        yield


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[sweep {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_sweep(home: str | Path, sweep: SweepSettings, *, executor: str = "local", address: str | None = None,
              workers: int | None = None, name: str | None = None, dry_run: bool = False, quiet: bool = False,
              progress=None, should_stop=None) -> dict:
    """Expand, plan (skip what is complete), execute and record a sweep; returns the record.

    ``progress(done, total, msg)`` after every finished run; ``should_stop()`` is polled (the
    workers are asked to checkpoint and stop)."""
    ws = Workspace(home)
    if executor not in EXECUTORS:
        raise SweepError(f"executor must be one of {', '.join(EXECUTORS)}, not {executor!r}")
    specs = expand(ws.root, sweep)
    roots = list(dict.fromkeys(s.workspace for s in specs))
    for r in roots:
        if not Workspace(r).exists:
            raise SweepError(f"{r} is not a metacog workspace: run `metacog study --workspace {r}` first")
        if not Workspace(r).path("probes", "oof.npy").exists() and any(s.settings.targets in ("probe", "shuffled") for s in specs):
            raise SweepError(f"{r} has no probes yet: run `metacog study --workspace {r}` (probe targets need them)")
    if executor == "ray" and address and address != "auto":
        check_ray_address(address)  # before any lock or record: fails within seconds
    nw_max = worker_budget(executor, workers, sweep.threads, len(specs))  # before anything is created
    sid = name or f"sweep-{sweep.key(ws.root)}"
    with _hold_locks(roots):
        rec = SweepRecord(ws, sid)
        old = {(e["workspace"], e["key"]): e for e in rec.data.get("runs", [])}
        entries, tasks = [], []
        for i, spec in enumerate(specs):
            action, run, why = plan_one(spec, sweep)
            if action == "train" and not dry_run:
                from metacog.finetune.runner import create_run

                run = create_run(Workspace(spec.workspace), spec.settings, name=f"{sid[:24]}-{spec.settings.targets}-s{spec.settings.seed}",
                                 threads=sweep.threads)
            prev = old.get((spec.workspace, spec.key), {})
            e = {"i": i, "workspace": spec.workspace, "key": spec.key, "label": spec.label(len(roots) > 1),
                 "seed": spec.settings.seed, "targets": spec.settings.targets, "lr": spec.settings.lr,
                 "run": run.id if run else None, "action": action, "why": why,
                 "status": {"skip": "done", "busy": "busy"}.get(action, "pending"),
                 "error": None, "pid": None, "host": None, "seconds": None,
                 "headline": prev.get("headline") if action == "skip" else None}
            if action == "skip":
                ev = run.eval_result() or {}
                e["headline"] = {k: (ev.get("headline") or {}).get(k) for k in HEADLINE_KEYS} if ev else prev.get("headline")
            entries.append(e)
            if action in ("train", "resume", "evaluate"):
                tasks.append((i, {"workspace": spec.workspace, "run": e["run"], "action": action, "evaluate": sweep.evaluate,
                                  "eval_limit": sweep.eval_limit, "threads": sweep.threads}))
        nw = max(1, min(nw_max, len(tasks)))
        launch = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "executor": executor, "address": address, "workers": nw,
                  "threads": sweep.threads, "cores": available_cores(), "tasks": len(tasks),
                  "skipped": sum(e["action"] == "skip" for e in entries), "pid": os.getpid(), "host": socket.gethostname()}
        rec.data.update({"id": sid, "workspace": str(ws.root), "key": sweep.key(ws.root), "settings": sweep.to_dict(),
                         "created": rec.data.get("created", time.strftime("%Y-%m-%dT%H:%M:%S")), "runs": entries,
                         "status": "planned" if dry_run else "running", "executor": executor, "address": address,
                         "workers": nw, "threads": sweep.threads,
                         "history": rec.data.get("history", []) + ([] if dry_run else [launch])})
        if not dry_run:  # a dry run shows the plan and writes nothing
            rec.save()
        counts = {a: sum(e["action"] == a for e in entries) for a in ("train", "resume", "evaluate", "skip", "busy")}
        _log(f"{sid}: {len(specs)} runs ({', '.join(f'{v} {k}' for k, v in counts.items() if v)}); "
             f"executor {executor}{' @ ' + address if address else ''}, {nw} worker(s) × {sweep.threads} thread(s)", quiet)
        if dry_run:
            return json.loads(json.dumps(rec.data, default=str))
        t_all = time.time()
        total, finished = len(tasks), [0]

        def on_start(i, info):
            rec.update(i, status="running", started=time.time(), **info)
            _log(f"start {entries[i]['label']}: {entries[i]['action']} {entries[i]['run']}"
                 + (f" (pid {info['pid']})" if info.get("pid") else ""), quiet)

        def on_done(i, out):
            finished[0] += 1
            keep = {k: out.get(k) for k in ("status", "error", "seconds", "train_seconds", "eval_seconds", "updates_run",
                                           "resumed_from", "headline", "host") if k in out}
            if out.get("pid"):
                keep["pid"] = out["pid"]
            rec.update(i, ended=time.time(), **keep)
            h = out.get("headline") or {}
            extra = f" AUROC {h.get('auroc_ft'):.3f} ECE {h.get('ece_ft'):.3f}" if h.get("auroc_ft") is not None and h.get("ece_ft") is not None else ""
            _log(f"{out['status']} {entries[i]['label']} in {out.get('seconds')} s{extra}"
                 + (f": {out['error']}" if out.get("error") and out["status"] != "done" else ""), quiet)
            if progress:
                progress(finished[0], total, f"{entries[i]['label']}: {out['status']}")

        if executor == "local":
            ex = LocalExecutor(nw, sweep.threads, rec.dir / "logs")
        else:
            ex = RayExecutor(nw, sweep.threads, address, num_cpus=None if address else min(available_cores(), nw * sweep.threads))
        try:
            ex.run(tasks, on_start, on_done, should_stop=should_stop)
        except KeyboardInterrupt:
            for e in rec.data["runs"]:
                if e["status"] in ("pending", "running"):
                    e["status"] = "interrupted"
            rec.data["status"] = "incomplete"
            rec.data["seconds"] = round(time.time() - t_all, 1)
            rec.save()
            raise
        except BaseException as e:
            rec.data["status"] = "failed"
            rec.data["error"] = f"{type(e).__name__}: {e}"
            rec.save()
            raise
        ok = all(e["status"] == "done" for e in rec.data["runs"])
        rec.data["status"] = "done" if ok else "incomplete"
        rec.data["seconds"] = round(time.time() - t_all, 1)
        rec.data["history"][-1].update(ended=time.strftime("%Y-%m-%dT%H:%M:%S"), seconds=rec.data["seconds"])
        rec.save()
        bad = [e for e in rec.data["runs"] if e["status"] != "done"]
        if bad:
            _log(f"{len(bad)} run(s) did not finish ({', '.join(e['label'] + ': ' + e['status'] for e in bad)}); "
                 "launch the same sweep again to finish only what is missing", quiet)
        return rec.data


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


# ------------------------------------------------------------------------------ worker entry
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m metacog.sweeps", description="a sweep's worker process (started by the local executor)")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--task", required=True, help="the task as JSON")
    w.add_argument("--result", required=True, help="where to write the result JSON")
    a = p.parse_args(argv)
    task = json.loads(a.task)

    def on_term(signum, frame):  # checkpoint and stop, like the fine-tune runner
        with contextlib.suppress(Exception):
            Run(Workspace(task["workspace"]), task["run"]).request_cancel()

    signal.signal(signal.SIGTERM, on_term)
    print(f"[{time.strftime('%H:%M:%S')}] sweep worker pid {os.getpid()}: {task['action']} {task['run']}", file=sys.stderr, flush=True)
    out = run_task(task)
    atomic_write_json(Path(a.result), out)
    print(f"[{time.strftime('%H:%M:%S')}] {out['status']} in {out['seconds']} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def run_job(ws: Workspace, spec: dict, progress, should_stop) -> dict:
    """A seed sweep as an app job in its own process (:mod:`metacog.core.jobs`): ``spec`` holds
    ``finetune`` (FinetuneSettings dict), ``seeds``, ``targets``, ``eval_limit``, ``threads``
    and ``workers``; local executor. Returns the sweep record."""
    base = FinetuneSettings.from_dict(spec.get("finetune") or {})
    sw = SweepSettings(base=base, seeds=tuple(int(x) for x in spec["seeds"]), targets=tuple(spec.get("targets") or ()),
                       eval_limit=spec.get("eval_limit"), threads=int(spec.get("threads") or 1))
    return run_sweep(ws.root, sw, executor="local", workers=int(spec.get("workers") or 1), quiet=True,
                     progress=progress, should_stop=should_stop)
